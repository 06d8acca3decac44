//! `jerex bench`: the pipeline measured end to end, then the same batches through the encoder
//! alone, printed as one JSON object.
//!
//! The encoder-only figure is the ceiling the pipeline is judged against: the same documents in
//! the same batches on the same devices, with reading, tokenization, heads, decoding and writing
//! removed. Model loading is excluded from both. Each encoder-only pass runs between two
//! pipeline runs and is compared with their mean: the shared machine's speed drifts over
//! minutes (whole runs 10% apart), and bracketing cancels a steady drift.
//!
//! The measuring lives here, in backends that wrap the model's: the pipeline's own backend only
//! predicts.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, unbounded};
use serde::Serialize;

use crate::pipeline::StageSeconds;
use tch::Device;

use crate::engine::{execute, init_logging, prepare_job, JobOverrides, LogFormat};
use crate::error::{Error, Result};
use crate::model::{DocPrediction, GoldInput, LoadedModel, PreparedDoc};
use crate::pipeline::worker::{device_loop, Backend, BackendFactory, Batch, ModelFactory};

/// `jerex bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// The benchmark job (default: jobs/throughput-bench.toml of the build tree the binary runs
    /// from, target/<profile>/jerex).
    pub job: Option<PathBuf>,
    /// DocRED-format JSON converted to the job's input Parquet when that file is missing
    /// (default: ../shared/data/redocred/dev_revised.json beside the build tree).
    #[arg(long)]
    pub docred: Option<PathBuf>,
    /// Encoder-only passes, each between two pipeline runs (so N + 1 pipeline runs); figures
    /// are medians, the ratio the median of each pass's ratio to the mean of its two runs.
    /// Without encoder-only passes, N pipeline runs.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub repeat: u32,
    /// The DocRED corpus repeated N times under new ids (written once as
    /// `<input stem>.x<N>.parquet`): peak memory against corpus length.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub copies: u32,
    /// Skip the encoder-only passes (their fields print as null). The pipeline then keeps no
    /// batches for them, so `peak_rss_bytes` is the pipeline's alone at any corpus length.
    #[arg(long)]
    pub no_encoder_pass: bool,
    /// Long documents: the DocRED documents joined into documents of at most each of these many
    /// words (comma-separated, e.g. 1000,5000,20000,50000; the same text at every size) and, for
    /// comparison, as they are; every run in a fresh process, without encoder-only passes, and
    /// `--repeat` rounds of all sizes. Prints words/s and peak RSS per size as one JSON object,
    /// and a table on stderr.
    #[arg(long, value_delimiter = ',', conflicts_with = "copies")]
    pub long: Vec<usize>,
    /// One size of `--long`, in this process (what `--long` runs for each size).
    #[arg(long, hide = true, conflicts_with = "copies")]
    pub long_size: Option<usize>,
    #[command(flatten)]
    pub overrides: JobOverrides,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// The benchmark's JSON object.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BenchResult {
    pub documents: usize,
    pub words: usize,
    /// Real word pieces in the encoder rows (special tokens included).
    pub word_pieces: usize,
    pub seconds: f64,
    pub docs_per_s: f64,
    pub words_per_s: f64,
    pub encoder_only_seconds: Option<f64>,
    pub encoder_only_docs_per_s: Option<f64>,
    /// docs_per_s / encoder_only_docs_per_s.
    pub end_to_end_vs_encoder: Option<f64>,
    /// Each encoder-only pass's ratio to the pipeline runs either side of it, in order (one
    /// per `--repeat`).
    pub end_to_end_vs_encoder_runs: Vec<f64>,
    /// Every pipeline run's and encoder-only pass's seconds, in the order they ran
    /// (alternating, pipeline first).
    pub pipeline_seconds_runs: Vec<f64>,
    pub encoder_only_seconds_runs: Vec<f64>,
    /// Real / padded word pieces over all batches.
    pub padding_efficiency: f64,
    pub batches: usize,
    pub peak_rss_bytes: u64,
    pub devices: Vec<String>,
    pub threads: usize,
    pub stage_seconds: BenchStages,
    pub startup_seconds: f64,
}

/// The pipeline's busy seconds per stage, and the part of the device stage in the encoder
/// (`device - encoder` is the heads).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BenchStages {
    #[serde(flatten)]
    pub stages: StageSeconds,
    pub encoder: f64,
}

/// What the benchmark's backends share: the batches the pipeline formed (when they are to be
/// replayed through the encoder alone) and the seconds spent in the encoder.
#[derive(Default)]
struct Measured {
    record: bool,
    batches: Mutex<Vec<Vec<PreparedDoc>>>,
    encoder_nanos: AtomicU64,
}

/// How a benchmark replica runs a batch.
#[derive(Clone, Copy)]
enum Pass {
    /// Every head, timing the encoder and recording the batch (a batch split in halves after a
    /// failure is recorded as its halves too, which only lengthens the encoder-only pass).
    Pipeline,
    /// The encoder alone; the predictions are empty.
    EncoderOnly,
}

/// Replicas of the job's model that measure as they run.
struct MeasuringFactory<'a> {
    model: &'a ModelFactory,
    pass: Pass,
    measured: Arc<Measured>,
}

impl BackendFactory for MeasuringFactory<'_> {
    fn create(&self, device: Device) -> Result<Box<dyn Backend>> {
        Ok(Box::new(MeasuringBackend {
            loaded: self.model.load(device)?,
            thresholds: self.model.thresholds,
            device,
            pass: self.pass,
            measured: Arc::clone(&self.measured),
        }))
    }
}

struct MeasuringBackend {
    loaded: LoadedModel,
    thresholds: crate::model::Thresholds,
    device: Device,
    pass: Pass,
    measured: Arc<Measured>,
}

impl Backend for MeasuringBackend {
    fn predict(&mut self, batch: &[PreparedDoc]) -> Result<Vec<DocPrediction>> {
        let model = &self.loaded.model;
        let start = Instant::now();
        let encoded = model.encode_batch(batch);
        // CUDA runs asynchronously: wait, so the time measured is the encoder's work.
        if let Device::Cuda(i) = self.device {
            tch::Cuda::synchronize(i as i64);
        }
        let nanos = start.elapsed().as_nanos() as u64;
        self.measured
            .encoder_nanos
            .fetch_add(nanos, Ordering::Relaxed);
        match self.pass {
            Pass::EncoderOnly => Ok(vec![DocPrediction::default(); batch.len()]),
            Pass::Pipeline => {
                if self.measured.record {
                    self.measured.batches.lock().unwrap().push(batch.to_vec());
                }
                model.predict_encoded(&encoded, &self.thresholds, GoldInput::None)
            }
        }
    }
}

/// Runs the benchmark and prints its JSON object on stdout.
pub fn bench(args: &BenchArgs) -> Result<BenchResult> {
    init_logging(args.log_format, "warn");
    let job_file = match &args.job {
        Some(file) => file.clone(),
        None => crate::paths::default_bench_job()?,
    };
    let job = crate::engine::Job::load_with(&job_file, &args.overrides)?;
    let docred = args
        .docred
        .clone()
        .or_else(crate::paths::default_bench_docred);
    let copies = args.copies as usize;
    let mut overrides = args.overrides.clone();
    if copies > 1 || args.long_size.is_some() {
        overrides.input.clear();
    }
    for spec in &job.input.paths {
        let mut p = PathBuf::from(spec);
        let stem = p.file_stem().unwrap_or_default().to_string_lossy();
        let variant = match args.long_size {
            Some(words) => Some(format!("{stem}.long{words}.parquet")),
            None if copies > 1 => Some(format!("{stem}.x{copies}.parquet")),
            None => None,
        };
        if let Some(name) = variant {
            p = p.with_file_name(name);
            overrides.input.push(p.to_string_lossy().into_owned());
        }
        if p.extension().is_none_or(|e| e != "parquet") {
            continue;
        }
        match &docred {
            Some(json) if !super::sample::needs_docred_conversion(json, &p, copies) => {}
            Some(json) if json.is_file() => match args.long_size {
                Some(words) => super::sample::docred_joined_to_parquet(json, &p, words)?,
                None => super::sample::docred_to_parquet(json, &p, copies)?,
            },
            Some(json) => {
                return Err(Error::Config(format!(
                    "bench input {} is missing and {} (its source) is not there",
                    p.display(),
                    json.display()
                )))
            }
            None if p.exists() => {}
            None => {
                return Err(Error::Config(format!(
                    "bench input {} is missing: pass --docred FILE to make it",
                    p.display()
                )))
            }
        }
    }
    // Generating a many-copies input holds the whole corpus; the peak is the pipeline's. The
    // generator's freed memory stays resident until released, and would be the new baseline.
    crate::alloc::release_freed();
    crate::alloc::reset_peak();
    // Each pass rewrites every unit: no other process may write there meanwhile.
    let p = prepare_job(
        &job_file,
        &overrides,
        crate::engine::Shard::ALL,
        true,
        false,
    )?;
    let no_encoder_pass = args.no_encoder_pass || args.long_size.is_some();
    let passes = args.repeat as usize;
    let pipeline_runs = if no_encoder_pass { passes } else { passes + 1 };
    let (mut runs, mut encoder) = (Vec::new(), Vec::new());
    // Peak memory of the first pipeline run alone: later runs and the encoder-only passes only
    // add to the process's high-water mark.
    let mut peak = 0;
    for i in 0..pipeline_runs {
        let replay = !no_encoder_pass && i < passes;
        let measured = Arc::new(Measured {
            record: replay,
            ..Measured::default()
        });
        let factory = MeasuringFactory {
            model: &p.factory,
            pass: Pass::Pipeline,
            measured: Arc::clone(&measured),
        };
        let report = execute(&p.config, &p.model, &factory)?;
        if peak == 0 {
            peak = crate::alloc::peak_rss_bytes().unwrap_or(0);
        }
        if replay {
            let batches = std::mem::take(&mut *measured.batches.lock().unwrap());
            let encoder_factory = MeasuringFactory {
                model: &p.factory,
                pass: Pass::EncoderOnly,
                measured: Arc::default(),
            };
            encoder.push(encoder_only(&encoder_factory, &p.config.devices, batches)?);
        }
        let in_encoder = Duration::from_nanos(measured.encoder_nanos.load(Ordering::Relaxed));
        runs.push((report, in_encoder.as_secs_f64()));
    }
    // Same documents both ways, so the speed ratio is a ratio of seconds.
    let ratios: Vec<f64> = encoder
        .iter()
        .enumerate()
        .map(|(i, e)| e / ((runs[i].0.seconds + runs[i + 1].0.seconds) / 2.0).max(1e-9))
        .collect();
    let encoder_seconds = (!encoder.is_empty()).then(|| median(encoder.iter().copied()));
    let pipeline_seconds: Vec<f64> = runs.iter().map(|r| r.0.seconds).collect();
    // The run whose end-to-end speed is the median supplies the per-run details.
    runs.sort_by(|a, b| a.0.seconds.total_cmp(&b.0.seconds));
    let (report, in_encoder) = runs.swap_remove(runs.len() / 2);
    let docs_per_s = report.documents as f64 / report.seconds.max(1e-9);
    let encoder_docs_per_s = encoder_seconds.map(|e| report.documents as f64 / e.max(1e-9));
    let result = BenchResult {
        documents: report.documents,
        words: report.words,
        word_pieces: report.word_pieces,
        seconds: report.seconds,
        docs_per_s,
        words_per_s: report.words as f64 / report.seconds.max(1e-9),
        encoder_only_seconds: encoder_seconds,
        encoder_only_docs_per_s: encoder_docs_per_s,
        end_to_end_vs_encoder: encoder_seconds.map(|_| median(ratios.iter().copied())),
        end_to_end_vs_encoder_runs: ratios,
        pipeline_seconds_runs: pipeline_seconds,
        encoder_only_seconds_runs: encoder,
        padding_efficiency: report.word_pieces as f64 / report.padded_word_pieces.max(1) as f64,
        batches: report.batches,
        peak_rss_bytes: peak,
        devices: report.devices.iter().map(|d| d.device.clone()).collect(),
        threads: p.config.threads,
        stage_seconds: BenchStages {
            stages: report.stages,
            encoder: in_encoder,
        },
        startup_seconds: report.startup_seconds,
    };
    println!(
        "{}",
        serde_json::to_string(&result).expect("bench result serializes")
    );
    Ok(result)
}

/// The median (the upper one of an even count).
fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Seconds to run `batches` through the encoder alone, one thread per device as in the
/// pipeline (the slowest device's busy time; loading excluded). A replica that fails to load
/// fails the pass: the others would take its batches and skew the figure.
fn encoder_only(
    factory: &dyn BackendFactory,
    devices: &[Device],
    batches: Vec<Vec<PreparedDoc>>,
) -> Result<f64> {
    let (tx, rx) = bounded::<Batch<()>>(batches.len().max(1));
    for docs in batches {
        let meta = vec![(); docs.len()];
        tx.send(Batch { docs, meta })
            .map_err(|_| Error::Config("bench: batch queue closed".into()))?;
    }
    drop(tx);
    let (done_tx, done_rx) = unbounded();
    let start = Instant::now();
    let loaded: Vec<Result<()>> = std::thread::scope(|s| {
        let handles: Vec<_> = devices
            .iter()
            .enumerate()
            .map(|(i, &device)| {
                let (rx, done_tx) = (rx.clone(), done_tx.clone());
                s.spawn(move || device_loop(i, device, factory, rx, done_tx, None))
            })
            .collect();
        handles
            .into_iter()
            .zip(devices)
            .map(|(h, &device)| {
                h.join().unwrap_or_else(|_| {
                    Err(Error::Device {
                        device: crate::device::device_name(device),
                        message: "the encoder-only pass panicked".into(),
                    })
                })
            })
            .collect()
    });
    loaded.into_iter().collect::<Result<Vec<()>>>()?;
    drop(done_tx);
    let wall = start.elapsed().as_secs_f64();
    // Per device, the time spent encoding (loading excluded); devices run in parallel.
    let mut per_device = vec![0.0f64; devices.len()];
    let mut failed = 0;
    for done in done_rx {
        per_device[done.device] += done.seconds;
        failed += done
            .outcomes
            .iter()
            .filter(|o| matches!(o, crate::pipeline::worker::Outcome::Failed(_)))
            .count();
    }
    if failed > 0 {
        tracing::warn!(failed, "documents failed in the encoder-only pass");
    }
    Ok(per_device.iter().copied().fold(0.0, f64::max).min(wall))
}

/// One size of `jerex bench --long`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LongSize {
    /// Words per document at most; `None` for the DocRED documents as they are.
    pub max_words: Option<usize>,
    pub documents: usize,
    pub words: usize,
    pub words_per_document: f64,
    /// The median over the rounds.
    pub seconds: f64,
    /// `words / seconds`.
    pub words_per_s: f64,
    /// The median over the rounds of this size's words/s over that of the documents as they
    /// are in the same round.
    pub vs_docred: f64,
    /// The highest peak resident set over the rounds, each run in its own process.
    pub peak_rss_bytes: u64,
    /// Every round's seconds and peak, in order.
    pub seconds_runs: Vec<f64>,
    pub peak_rss_bytes_runs: Vec<u64>,
    pub batches: usize,
}

/// What `jerex bench --long` prints.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LongBench {
    pub sizes: Vec<LongSize>,
    pub rounds: usize,
    pub devices: Vec<String>,
    pub threads: usize,
}

/// One run of one size in a child process: the child's JSON result.
fn long_run(
    exe: &std::path::Path,
    base: &[std::ffi::OsString],
    size: Option<usize>,
) -> Result<serde_json::Value> {
    let mut cmd = std::process::Command::new(exe);
    cmd.args(base).arg("--no-encoder-pass");
    if let Some(words) = size {
        cmd.arg("--long-size").arg(words.to_string());
    }
    let what = size.map_or("as they are".to_string(), |w| format!("at most {w} words"));
    eprintln!("bench --long: documents {what} ...");
    let output = cmd
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| Error::Config(format!("bench --long: cannot start {}: {e}", exe.display())))?;
    if !output.status.success() {
        return Err(Error::Config(format!(
            "bench --long: the run of documents {what} failed ({})",
            output.status
        )));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("");
    serde_json::from_str(line).map_err(|e| {
        Error::Config(format!(
            "bench --long: unreadable result for documents {what}: {e}"
        ))
    })
}

/// `jerex bench --long SIZES`: the DocRED documents as they are, then joined into documents of
/// at most each size, every run in a fresh process (so every peak is its own). `--repeat N`
/// makes N rounds of all sizes, so a shared machine's drift hits every size alike; speeds are
/// compared within a round. Prints one JSON object on stdout and a table on stderr.
pub fn bench_long(args: &BenchArgs) -> Result<LongBench> {
    let exe = std::env::current_exe()
        .map_err(|e| Error::Config(format!("bench --long: cannot find this program: {e}")))?;
    // This invocation's arguments (the subcommand first), less --long, --repeat (rounds are
    // made here) and the flag every run gets anyway.
    let mut base = Vec::new();
    let mut skip_value = false;
    for a in std::env::args_os().skip(1) {
        let s = a.to_string_lossy();
        if std::mem::take(&mut skip_value) {
            continue;
        }
        if s == "--long" || s == "--repeat" {
            skip_value = true;
        } else if !(s.starts_with("--long=")
            || s.starts_with("--repeat=")
            || s == "--no-encoder-pass")
        {
            base.push(a);
        }
    }
    let sizes: Vec<Option<usize>> = std::iter::once(None)
        .chain(args.long.iter().copied().map(Some))
        .collect();
    let rounds = args.repeat as usize;
    // runs[size][round]
    let mut runs: Vec<Vec<serde_json::Value>> = vec![Vec::new(); sizes.len()];
    for _ in 0..rounds {
        for (i, &size) in sizes.iter().enumerate() {
            runs[i].push(long_run(&exe, &base, size)?);
        }
    }
    let num = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap_or(0.0);
    let speed = |v: &serde_json::Value| num(v, "words") / num(v, "seconds").max(1e-9);
    let out: Vec<LongSize> = sizes
        .iter()
        .zip(&runs)
        .map(|(&size, r)| {
            let seconds_runs: Vec<f64> = r.iter().map(|v| num(v, "seconds")).collect();
            let seconds = median(seconds_runs.iter().copied());
            let (documents, words) = (
                num(&r[0], "documents") as usize,
                num(&r[0], "words") as usize,
            );
            let peaks: Vec<u64> = r.iter().map(|v| num(v, "peak_rss_bytes") as u64).collect();
            LongSize {
                max_words: size,
                documents,
                words,
                words_per_document: words as f64 / documents.max(1) as f64,
                seconds,
                words_per_s: words as f64 / seconds.max(1e-9),
                vs_docred: median(
                    r.iter()
                        .zip(&runs[0])
                        .map(|(v, d)| speed(v) / speed(d).max(1e-9)),
                ),
                peak_rss_bytes: peaks.iter().copied().max().unwrap_or(0),
                seconds_runs,
                peak_rss_bytes_runs: peaks,
                batches: num(&r[0], "batches") as usize,
            }
        })
        .collect();
    let first = &runs[0][0];
    let result = LongBench {
        sizes: out,
        rounds,
        devices: serde_json::from_value(first["devices"].clone()).unwrap_or_default(),
        threads: num(first, "threads") as usize,
    };
    eprint!("{}", long_table(&result));
    println!(
        "{}",
        serde_json::to_string(&result).expect("bench result serializes")
    );
    Ok(result)
}

/// The human-readable table of `bench --long`.
pub fn long_table(b: &LongBench) -> String {
    let mut s = format!(
        "{:>12} {:>6} {:>10} {:>9} {:>10} {:>9} {:>10}\n",
        "max words", "docs", "words/doc", "seconds", "words/s", "vs as-is", "peak RSS"
    );
    for x in &b.sizes {
        let size = x.max_words.map_or("as is".to_string(), |w| w.to_string());
        s.push_str(&format!(
            "{:>12} {:>6} {:>10.0} {:>9.1} {:>10.0} {:>9.2} {:>6.0} MiB\n",
            size,
            x.documents,
            x.words_per_document,
            x.seconds,
            x.words_per_s,
            x.vs_docred,
            x.peak_rss_bytes as f64 / (1u64 << 20) as f64
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Thresholds;
    use crate::testing::{Failures, FakeFactory};

    fn factory(dead: Vec<Device>) -> FakeFactory {
        FakeFactory {
            entity_types: 2,
            relation_types: 2,
            thresholds: Thresholds::default(),
            failures: Failures {
                dead_devices: dead,
                ..Failures::default()
            },
            delay: std::time::Duration::ZERO,
        }
    }

    #[test]
    fn encoder_only_fails_when_a_replica_cannot_load() {
        let devices = [Device::Cpu, Device::Cuda(0)];
        assert!(encoder_only(&factory(vec![]), &devices, Vec::new()).is_ok());
        let e = encoder_only(&factory(vec![Device::Cuda(0)]), &devices, Vec::new()).unwrap_err();
        assert!(e.to_string().contains("fake device failure"), "{e}");
    }
}
