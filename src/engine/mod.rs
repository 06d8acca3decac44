//! The corpus engine: `jerex run JOB.toml` (Parquet documents in, knowledge-base tables out) and
//! `jerex bench` (the same pipeline measured, as one JSON object).
//!
//! [`pipeline`] wires the stages; [`bucket`] packs documents into batches under a word-piece
//! budget; [`worker`] runs one model replica per device behind the small [`Backend`] trait;
//! [`job`] reads and validates job files; [`plan`] splits the inputs into work units and shares
//! them out over shards (machines); [`lease`] keeps a second writer of a shard away;
//! [`incremental`] runs only what changed since a job's last run; [`long`] carries long
//! documents through as segments. (The fake backend for tests is in the test kit,
//! `crate::testing::fake`.)

pub mod incremental;
pub mod job;
pub mod lease;
pub mod manifest;
pub mod plan;

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use crate::corpus::Unit;
pub use crate::model::ModelInfo;
pub use crate::pipeline::worker::{Backend, BackendFactory, ModelFactory};
pub use crate::pipeline::{execute, PipelineConfig, Report};
pub use job::{Job, JobOverrides};
pub use plan::{Plan, Shard, ShardArgs};

use crate::error::{Error, Result};
use crate::pipeline::{self, checks};

/// How logs are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (and a progress bar on a terminal).
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// `jerex run`: process a corpus job.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// The job file (TOML; see jobs/demo.toml).
    pub job: PathBuf,
    #[command(flatten)]
    pub overrides: JobOverrides,
    #[command(flatten)]
    pub shard: ShardArgs,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Never show a progress bar (it is shown only on a terminal anyway).
    #[arg(long)]
    pub no_progress: bool,
    /// Redo every unit, even those the output directory records as finished for this same job.
    /// By default a run resumes: finished units (OUT/_manifest/units) are skipped and the
    /// leftovers of unfinished ones are deleted before they are redone. Output of a different
    /// model or job configuration is refused either way.
    #[arg(long, conflicts_with = "overwrite")]
    pub no_resume: bool,
    /// Delete the output directory's tables, manifest and _SUCCESS first, whatever job wrote
    /// them (needed after changing the model, thresholds, columns, format or inputs). For a
    /// sharded job, clear the directory once before starting the shards instead. For an
    /// incremental job (also with --no-resume): discard its unfinished run and start a new one
    /// against the same state.
    #[arg(long)]
    pub overwrite: bool,
}

impl RunArgs {
    fn existing(&self) -> manifest::Existing {
        match (self.overwrite, self.no_resume) {
            (true, _) => manifest::Existing::Overwrite,
            (false, true) => manifest::Existing::Redo,
            (false, false) => manifest::Existing::Resume,
        }
    }
}

/// Sets up `tracing` on stderr (level from `RUST_LOG`, else `default_level`). Does nothing when
/// a subscriber is already installed (tests, or a caller that set its own).
pub fn init_logging(format: LogFormat, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Everything a job resolves to before the pipeline starts.
pub struct Prepared {
    pub job: Job,
    pub model: ModelInfo,
    pub factory: ModelFactory,
    /// Only this shard's units of the plan (all of them for an unsharded run).
    pub config: PipelineConfig,
    /// Every unit of the job, whichever shard runs it.
    pub plan: Plan,
    pub shard: Shard,
    /// This process's lease on the output directory, held until it is dropped.
    pub lease: lease::Lease,
}

/// Loads the job, takes the lease of `shard` on its output directory (`exclusive`: for a run
/// that rewrites the whole directory), loads the model's CPU side, and builds the pipeline configuration for `shard`'s units (`progress`
/// decides whether a bar may be shown).
pub fn prepare_job(
    path: &Path,
    overrides: &JobOverrides,
    shard: Shard,
    exclusive: bool,
    progress: bool,
) -> Result<Prepared> {
    let job = Job::load_with(path, overrides)?;
    // Before anything slow: an unusable output directory must not cost a model load or a run.
    checks::check_output_dir(&job.output.dir)?;
    checks::check_output_outside_inputs(&job.output.dir, &job.input.paths)?;
    let lease = lease::Lease::acquire(&job.output.dir, shard, exclusive)?;
    let devices = crate::device::parse_devices(&job.devices)?;
    crate::device::check_available(&devices)?;
    let replicas = job.cpu_replicas();
    let devices = crate::device::with_cpu_replicas(devices, replicas);
    let model_dir = job.model_dir()?;
    if !model_dir.join(crate::model::folder::CONFIG_FILE).is_file() {
        return Err(Error::Config(format!(
            "model.dir: {} is not a model folder (no config.json); train one with `jerex \
             train`, or point model.dir, --model or JEREX_MODEL at one",
            model_dir.display()
        )));
    }
    let mut model = ModelInfo::load(&model_dir)?;
    // The job's limits become the model's (the fingerprint hashes the configuration as used).
    let long = &mut model.config.heads.long_documents;
    *long = job.long_documents.apply(*long);
    long.check()
        .map_err(|e| Error::Config(format!("long_documents.{e}")))?;
    let thresholds = job.thresholds.apply(model.config.thresholds);
    let threads = job.cpu_threads();
    let factory = ModelFactory {
        dir: model_dir,
        thresholds,
        precision: job.model.precision,
        threads: (threads / replicas).max(1),
    };
    let plan = Plan::for_job(&job, path)?;
    let planned: Vec<Unit> = plan.units.iter().map(|u| u.unit.clone()).collect();
    let first_seen = checks::FirstSeen::scan(&planned, &job.input.columns(), threads)?;
    let config = PipelineConfig {
        units: plan.shard(shard),
        columns: job.input.columns(),
        devices,
        batch: job.batch,
        threads,
        output: Some(pipeline::OutputSettings {
            dir: job.output.dir.clone(),
            open: crate::engine::manifest::open_sink,
            format: job.output.format,
            compression: job.writer.compression,
            rows_per_part: job.writer.rows_per_part,
        }),
        progress,
        checks: job.input_checks(),
        first_seen: Some(Arc::new(first_seen)),
    };
    Ok(Prepared {
        job,
        model,
        factory,
        config,
        plan,
        shard,
        lease,
    })
}

/// `jerex run`: runs the job and prints a short human-readable summary on stdout. Documents that
/// were rejected or failed are in the `documents` table and do not fail the run (unless the job
/// is strict); input files that could not be read do, with [`Error::Units`], after the others
/// are processed.
pub fn run(args: &RunArgs) -> Result<Report> {
    let progress =
        !args.no_progress && args.log_format == LogFormat::Text && std::io::stderr().is_terminal();
    // With a bar on screen only warnings interrupt it.
    init_logging(args.log_format, if progress { "warn" } else { "info" });
    let shard = args.shard.resolve()?;
    let exclusive = args.existing() == manifest::Existing::Overwrite;
    let mut p = prepare_job(&args.job, &args.overrides, shard, exclusive, progress)?;
    // An incremental run writes into its own folder below the output directory.
    let increment = match p.job.incremental.enabled {
        true => Some(incremental::Increment::begin(&mut p, args.existing())?),
        false => None,
    };
    // The whole plan. A sharded run does only its share of it (`mine`), but records and checks
    // the whole plan so that every shard agrees and the last one can write _SUCCESS.
    let planned: Vec<Unit> = p.plan.units.iter().map(|u| u.unit.clone()).collect();
    let mine = p.config.units.clone();
    let out = p.job.output.dir.clone();
    let fingerprint = manifest::JobFingerprint::new(
        &p.job,
        &p.factory.dir,
        &p.model,
        p.factory.thresholds,
        &p.plan.units,
    )?;
    let m = manifest::Manifest::open(&out, &fingerprint, args.existing())?;
    p.config.units = m.todo(&mine, args.existing())?;
    let skipped = mine.len() - p.config.units.len();
    if let Some(inc) = &increment {
        p.config.units = inc.commit_idle(&m, std::mem::take(&mut p.config.units))?;
    }
    tracing::info!(
        job = %args.job.display(),
        units = p.config.units.len(),
        already_finished = skipped,
        shard = p.shard.index,
        shards = p.shard.count,
        devices = %p.job.devices,
        model = %p.model.model_id,
        "starting"
    );
    // Loading replicas for nothing would be slow with a real model.
    let mut report = if p.config.units.is_empty() {
        Report::default()
    } else {
        let none = HashMap::new();
        let unchanged = increment.as_ref().map_or(&none, |i| i.unchanged());
        pipeline::execute_skipping(&p.config, &p.model, &p.factory, unchanged)?
    };
    let parts = crate::output::PartWriter::new(
        &out,
        &crate::schema::TABLES,
        p.job.output.format,
        p.job.writer.compression,
    )?;
    let success = m.finish(&planned, &mine, p.shard, &p.model.model_id, &parts)?;
    if let (Some(inc), Some(s)) = (&increment, &success) {
        inc.finish(s)?;
    }
    tracing::info!(
        documents = report.documents,
        ok = report.ok,
        rejected = report.rejected,
        failed = report.failed,
        seconds = report.seconds,
        "finished"
    );
    print!("{}", summary(&report, &p.job.output.dir));
    if let Some(inc) = &increment {
        println!("{}", inc.summary());
    }
    if skipped > 0 {
        println!(
            "resumed: {skipped} of {} units were already finished in {}",
            mine.len(),
            out.display()
        );
    }
    if let Some(t) = success {
        let rows = |table: &str| t.rows.get(table).copied().unwrap_or(0);
        println!(
            "{}/{}: {} units, {} documents ({} ok, {} rejected, {} failed), {} mentions, {} \
             entities, {} relations",
            out.display(),
            manifest::SUCCESS_FILE,
            t.units,
            t.documents.ok + t.documents.rejected + t.documents.failed,
            t.documents.ok,
            t.documents.rejected,
            t.documents.failed,
            rows(crate::schema::MENTIONS),
            rows(crate::schema::ENTITIES),
            rows(crate::schema::RELATIONS),
        );
    }
    if !report.unit_errors.is_empty() {
        return Err(Error::Units(std::mem::take(&mut report.unit_errors)));
    }
    Ok(report)
}

/// The end-of-run summary: counts, speed, where the tables are, and a few example triples with
/// their evidence.
pub fn summary(report: &Report, out: &Path) -> String {
    let mut s = format!(
        "{} documents ({} ok, {} rejected, {} failed) in {:.1} s ({:.1} docs/s, {} words)\n",
        report.documents,
        report.ok,
        report.rejected,
        report.failed,
        report.seconds,
        report.documents as f64 / report.seconds.max(1e-9),
        report.words,
    );
    s.push_str(&format!(
        "{} mentions, {} entities, {} relations -> {}\n",
        report.mentions,
        report.entities,
        report.relations,
        out.display()
    ));
    // Replicas of one device (the CPU runs two by default) are told apart by their number.
    let replicated = |name: &str| report.devices.iter().filter(|d| d.device == name).count() > 1;
    let devices: Vec<String> = report
        .devices
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let name = if replicated(&d.device) {
                format!("{} replica {i}", d.device)
            } else {
                d.device.clone()
            };
            match &d.error {
                Some(e) => format!("{name}: failed ({e})"),
                None => format!("{name}: {} batches, {} docs", d.batches, d.documents),
            }
        })
        .collect();
    s.push_str(&format!("devices: {}\n", devices.join("; ")));
    if !report.examples.is_empty() {
        s.push_str("examples:\n");
        for r in &report.examples {
            s.push_str(&format!(
                "  {} --[{}]--> {}  ({:.2}, {})\n    \"{}\"\n",
                r.head_name, r.relation_name, r.tail_name, r.score, r.doc_id, r.evidence_text
            ));
        }
    }
    s
}
