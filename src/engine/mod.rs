//! The corpus engine: `jerex run JOB.toml` (Parquet documents in, knowledge-base tables out) and
//! `jerex bench` (the same pipeline measured, as one JSON object).
//!
//! [`pipeline`] wires the stages; [`bucket`] packs documents into batches under a word-piece
//! budget; [`worker`] runs one model replica per device behind the small [`Backend`] trait;
//! [`job`] reads and validates job files; [`fake`] is a deterministic backend for tests.

pub mod bench;
pub mod bucket;
pub mod fake;
pub mod job;
pub mod pipeline;
pub mod sample;
pub mod worker;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

pub use bench::{bench, BenchArgs, BenchResult};
pub use job::{Job, JobOverrides};
pub use pipeline::{execute, ModelInfo, PipelineConfig, Report, Unit};
pub use worker::{Backend, BackendFactory, ModelFactory};

use crate::error::{Error, Result};

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
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Never show a progress bar (it is shown only on a terminal anyway).
    #[arg(long)]
    pub no_progress: bool,
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
    pub config: PipelineConfig,
}

/// Loads the job, generates sample inputs that are missing, loads the model's CPU side, and
/// builds the pipeline configuration (`progress` decides whether a bar may be shown).
pub fn prepare_job(path: &Path, overrides: &JobOverrides, progress: bool) -> Result<Prepared> {
    let job = Job::load_with(path, overrides)?;
    for spec in &job.input.paths {
        let p = Path::new(spec);
        if p.extension().is_some_and(|e| e == "parquet") {
            sample::ensure_generated(p)?;
        }
    }
    let devices = crate::device::parse_devices(&job.devices)?;
    crate::device::check_available(&devices)?;
    let model_dir = job.model_dir();
    if !model_dir.join(crate::model::folder::CONFIG_FILE).is_file() {
        return Err(Error::Config(format!(
            "model.dir: {} is not a model folder (no config.json); train one with `jerex \
             train`, or point model.dir, --model or JEREX_MODEL at one",
            model_dir.display()
        )));
    }
    let model = ModelInfo::load(&model_dir)?;
    let thresholds = job.thresholds.apply(model.config.thresholds);
    let threads = job.cpu_threads();
    let factory = ModelFactory {
        dir: model_dir,
        thresholds,
        precision: job.model.precision,
        threads,
    };
    let units = job.input_files()?.iter().map(|p| Unit::file(p)).collect();
    let config = PipelineConfig {
        units,
        columns: job.input.columns(),
        devices,
        batch: job.batch,
        threads,
        output: Some(pipeline::OutputSettings {
            dir: job.output.dir.clone(),
            format: job.output.format,
            compression: job.writer.compression,
            rows_per_part: job.writer.rows_per_part,
        }),
        mode: worker::Mode::Predict,
        keep_batches: false,
        progress,
    };
    Ok(Prepared {
        job,
        model,
        factory,
        config,
    })
}

/// `jerex run`: runs the job and prints a short human-readable summary on stdout. Documents that
/// were rejected or failed are in the `documents` table and do not fail the run; input files
/// that could not be read do.
pub fn run(args: &RunArgs) -> Result<Report> {
    let progress =
        !args.no_progress && args.log_format == LogFormat::Text && std::io::stderr().is_terminal();
    // With a bar on screen only warnings interrupt it.
    init_logging(args.log_format, if progress { "warn" } else { "info" });
    let p = prepare_job(&args.job, &args.overrides, progress)?;
    tracing::info!(
        job = %args.job.display(),
        units = p.config.units.len(),
        devices = %p.job.devices,
        model = %p.model.model_id,
        "starting"
    );
    let report = execute(&p.config, &p.model, &p.factory)?;
    tracing::info!(
        documents = report.documents,
        ok = report.ok,
        rejected = report.rejected,
        failed = report.failed,
        seconds = report.seconds,
        "finished"
    );
    print!("{}", summary(&report, &p.job.output.dir));
    if !report.unit_errors.is_empty() {
        return Err(Error::Format {
            path: args.job.clone(),
            message: format!(
                "{} input unit(s) could not be read completely: {}",
                report.unit_errors.len(),
                report.unit_errors.join("; ")
            ),
        });
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
    let devices: Vec<String> = report
        .devices
        .iter()
        .map(|d| match &d.error {
            Some(e) => format!("{}: failed ({e})", d.device),
            None => format!("{}: {} batches, {} docs", d.device, d.batches, d.documents),
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
