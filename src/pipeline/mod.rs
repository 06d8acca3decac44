//! The corpus pipeline: stages connected by bounded channels, so every stage works at once and
//! memory stays bounded by the channel capacities and the look-ahead window.
//!
//! ```text
//! read ─▶ prepare (rayon: tokenize, candidates) ─▶ batch (sort window, pack) ─▶
//!     device workers (one replica each) ─▶ decode (rayon: table rows) ─▶ write (parts per unit)
//! ```
//!
//! One file per stage; this one wires them. Work is organised in [`Unit`]s (an input file, or a
//! row-group range of one). Every table's rows of a unit go to part files named after the unit,
//! written when `rows_per_part` rows have gathered and when the unit's last document is done;
//! then the output's [`UnitSink`] (the run's manifest) commits the unit, so the tables
//! never hold part of a unit.

mod batch;
pub mod bucket;
pub mod checks;
mod decode;
pub mod long;
mod prepare;
mod read;
mod sink;
pub mod worker;
mod write;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, unbounded};
use serde::Serialize;
use tch::Device;

use crate::corpus::parquet::InputColumns;
use crate::corpus::Unit;
use crate::device::device_name;
use crate::error::{Error, ErrorClass, Result};
use crate::model::ModelInfo;
use crate::output::writer::{Compression, OutputFormat};
use crate::output::{DocRows, DocumentRow, RelationRow};
use bucket::BatchConfig;
use bucket::Cost;
use checks::{Abort, FirstSeen, InputChecks};
use long::SegmentOf;
pub use sink::{now, DocCounts, PartRecord, UnitRecord, UnitSink};
use worker::{device_loop, Backend, BackendFactory, Batch, Done};

/// Everything a pipeline run needs besides the model.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub units: Vec<Unit>,
    pub columns: InputColumns,
    pub devices: Vec<Device>,
    pub batch: BatchConfig,
    pub threads: usize,
    /// `None`: decode but write nothing (benchmarks of the compute path).
    pub output: Option<OutputSettings>,
    pub progress: bool,
    /// Size limits, duplicate ids and strict mode.
    pub checks: InputChecks,
    /// Where the repeated ids of the whole job first occur (see [`FirstSeen`]); `None` reads
    /// them from `units`, for a run that is the whole job.
    pub first_seen: Option<Arc<FirstSeen>>,
}

/// Where and how a run writes its tables.
#[derive(Debug, Clone)]
pub struct OutputSettings {
    pub dir: PathBuf,
    /// Opens `dir` for the run's units: the commit protocol of the output (see
    /// [`crate::engine::manifest::open_sink`]).
    pub open: fn(&std::path::Path) -> Result<Box<dyn UnitSink>>,
    pub format: OutputFormat,
    pub compression: Compression,
    pub rows_per_part: usize,
}

/// Busy seconds of each stage (summed over the threads of a stage).
#[derive(Debug, Default, Serialize, Clone, PartialEq)]
pub struct StageSeconds {
    pub read: f64,
    pub prepare: f64,
    pub bucket: f64,
    pub device: f64,
    pub decode: f64,
    pub write: f64,
}

#[derive(Default)]
struct StageClock {
    read: AtomicU64,
    prepare: AtomicU64,
    bucket: AtomicU64,
    device: AtomicU64,
    decode: AtomicU64,
    write: AtomicU64,
}

impl StageClock {
    fn add(counter: &AtomicU64, since: Instant) {
        counter.fetch_add(since.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }

    fn seconds(&self) -> StageSeconds {
        let s = |c: &AtomicU64| Duration::from_nanos(c.load(Ordering::Relaxed)).as_secs_f64();
        StageSeconds {
            read: s(&self.read),
            prepare: s(&self.prepare),
            bucket: s(&self.bucket),
            device: s(&self.device),
            decode: s(&self.decode),
            write: s(&self.write),
        }
    }
}

/// Work done by one device.
#[derive(Debug, Default, Serialize, Clone, PartialEq)]
pub struct DeviceReport {
    pub device: String,
    pub batches: usize,
    pub documents: usize,
    pub seconds: f64,
    pub retries: usize,
    /// Why the device stopped, when it failed to load its replica.
    pub error: Option<String>,
}

/// What a run did.
#[derive(Debug, Default)]
pub struct Report {
    pub documents: usize,
    pub ok: usize,
    pub rejected: usize,
    pub failed: usize,
    pub words: usize,
    /// Real word pieces in encoder rows (special tokens included) and the padded total.
    pub word_pieces: usize,
    pub padded_word_pieces: usize,
    pub mentions: usize,
    pub entities: usize,
    pub relations: usize,
    pub batches: usize,
    /// Wall-clock seconds from the first ready model replica to the end.
    pub seconds: f64,
    /// Seconds until the first model replica was ready.
    pub startup_seconds: f64,
    pub stages: StageSeconds,
    pub devices: Vec<DeviceReport>,
    /// Part files written per table, in [`TABLES`](crate::schema::TABLES) order.
    pub parts: [usize; 4],
    /// Input units that could not be read to the end (file-level errors).
    pub unit_errors: Vec<Error>,
    /// The best-scoring relations (for the human-readable summary).
    pub examples: Vec<RelationRow>,
}

/// What the engine carries along with each prepared document.
#[derive(Debug, Clone)]
pub struct Meta {
    unit: usize,
    row: u64,
    content_hash: String,
    cost: Cost,
    /// Set when the item is a segment of a long document.
    segment: Option<SegmentOf>,
}

/// One document's finished output (rows of all tables).
struct DocResult {
    unit: usize,
    document: DocumentRow,
    rows: DocRows,
}

enum WriterMsg {
    Docs(Vec<DocResult>),
    /// Documents of a unit skipped as unchanged (they produce no rows but complete the unit).
    Skipped {
        unit: usize,
        docs: usize,
    },
    /// The reader finished a unit with this many rows (or stopped early with an error).
    UnitEnd {
        unit: usize,
        rows: usize,
        error: Option<Error>,
    },
}

/// Runs the pipeline over `cfg.units` with one replica per device from `factory`.
pub fn execute(
    cfg: &PipelineConfig,
    model: &ModelInfo,
    factory: &dyn BackendFactory,
) -> Result<Report> {
    execute_skipping(cfg, model, factory, &HashMap::new())
}

/// [`execute`], skipping the documents whose id maps to their content hash in `unchanged` (an
/// incremental run's documents whose facts are already in the knowledge base): they are dropped
/// before tokenization and write no rows.
pub fn execute_skipping(
    cfg: &PipelineConfig,
    model: &ModelInfo,
    factory: &dyn BackendFactory,
    unchanged: &HashMap<String, String>,
) -> Result<Report> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(cfg.threads.max(1))
        .thread_name(|i| format!("jerex-cpu-{i}"))
        .build()
        .map_err(|e| Error::Config(format!("threads: {e}")))?;
    let clock = StageClock::default();
    // Only for the progress bar: a unreadable footer is reported when the unit is read, and
    // must not stop the other units. On an object store every footer costs a request.
    let total_rows: usize = match cfg.progress {
        true => cfg.units.iter().map(|u| u.rows().unwrap_or(0)).sum(),
        false => 0,
    };
    let progress = progress_bar(cfg.progress, total_rows);
    let manifest = match &cfg.output {
        Some(o) => Some((o.open)(&o.dir)?),
        None => None,
    };
    let scanned;
    let first_seen = match &cfg.first_seen {
        Some(f) => f.as_ref(),
        None => {
            scanned = FirstSeen::scan(&cfg.units, &cfg.columns, cfg.threads)?;
            &scanned
        }
    };
    let abort = Abort::default();
    let stage = Stage {
        cfg,
        model,
        clock: &clock,
        abort: &abort,
        pool: &pool,
    };
    let devices = Devices::new(&cfg.devices);
    let padding = batch::Padding::default();

    let n_dev = cfg.devices.len();
    let (read_tx, read_rx) = bounded(4);
    let (prep_tx, prep_rx) = bounded(4);
    let (batch_tx, batch_rx) = bounded::<Batch<Meta>>(2 * n_dev);
    let (done_tx, done_rx) = bounded::<Done<Meta>>(2 * n_dev);
    let (write_tx, write_rx) = unbounded();
    let started = Instant::now();
    let result = std::thread::scope(|s| -> Result<Report> {
        let (stage, devices, padding) = (&stage, &devices, &padding);
        let tx = write_tx.clone();
        s.spawn(move || read::run(stage, read_tx, tx));
        let tx = write_tx.clone();
        s.spawn(move || prepare::run(stage, first_seen, unchanged, read_rx, prep_tx, tx));
        s.spawn(move || batch::run(stage, padding, prep_rx, batch_tx));
        for (i, &device) in cfg.devices.iter().enumerate() {
            let (batch_rx, done_tx) = (batch_rx.clone(), done_tx.clone());
            s.spawn(move || devices.run(i, device, factory, batch_rx, done_tx, stage.pool));
        }
        drop(batch_rx);
        drop(done_tx);
        s.spawn(move || decode::run(stage, &devices.reports, done_rx, write_tx));
        write::run(stage, manifest.as_deref(), write_rx, &progress)
    });
    progress.finish_and_clear();
    if let Some(e) = abort.into_error() {
        return Err(e);
    }
    let first_ready = devices.first_ready.into_inner().unwrap();
    let device_reports = Devices::outcome(devices.reports, devices.errors)?;
    let mut report = result?;
    let end = Instant::now();
    let ready = first_ready.unwrap_or(end);
    report.startup_seconds = ready.duration_since(started).as_secs_f64();
    report.seconds = end.duration_since(ready).as_secs_f64();
    report.stages = clock.seconds();
    report.devices = device_reports;
    report.word_pieces = padding.real.load(Ordering::Relaxed) as usize;
    report.padded_word_pieces = padding.padded.load(Ordering::Relaxed) as usize;
    report.batches = report.devices.iter().map(|d| d.batches).sum();
    Ok(report)
}

/// What every stage reads.
struct Stage<'a> {
    cfg: &'a PipelineConfig,
    model: &'a ModelInfo,
    clock: &'a StageClock,
    /// A strict-mode stop, raised by whichever stage finds the first problem.
    abort: &'a Abort,
    /// The CPU stages' threads (prepare and decode).
    pool: &'a rayon::ThreadPool,
}

/// The device stage's shared state: each device's report and load error, and when the first
/// replica became ready (the run's clock starts there, so throughput figures exclude loading).
struct Devices {
    reports: Mutex<Vec<DeviceReport>>,
    errors: Mutex<Vec<Error>>,
    first_ready: Mutex<Option<Instant>>,
}

impl Devices {
    fn new(devices: &[Device]) -> Devices {
        let reports = devices
            .iter()
            .map(|&d| DeviceReport {
                device: device_name(d),
                ..Default::default()
            })
            .collect();
        Devices {
            reports: Mutex::new(reports),
            errors: Mutex::new(Vec::new()),
            first_ready: Mutex::new(None),
        }
    }

    /// One device's worker: its replica runs batches until the channel closes. A replica that
    /// cannot load is recorded; the other devices take its share.
    fn run(
        &self,
        index: usize,
        device: Device,
        factory: &dyn BackendFactory,
        batch_rx: crossbeam_channel::Receiver<Batch<Meta>>,
        done_tx: crossbeam_channel::Sender<Done<Meta>>,
        pool: &rayon::ThreadPool,
    ) {
        let ready = ReadyFactory {
            inner: factory,
            first_ready: &self.first_ready,
        };
        if let Err(e) = device_loop(index, device, &ready, batch_rx, done_tx, Some(pool)) {
            tracing::error!("{e}");
            self.reports.lock().unwrap()[index].error = Some(e.to_string());
            self.errors.lock().unwrap().push(e);
        }
    }

    /// The devices' reports, or the error to report when no device could run the model (the
    /// other stages then stop early).
    fn outcome(
        reports: Mutex<Vec<DeviceReport>>,
        errors: Mutex<Vec<Error>>,
    ) -> Result<Vec<DeviceReport>> {
        let devices = reports.into_inner().unwrap();
        if !devices.iter().all(|d| d.error.is_some()) {
            return Ok(devices);
        }
        // A model folder that cannot be loaded (missing, truncated or mismatched weights) fails
        // every device alike: the job must be fixed, and a retry would fail the same way.
        let mut causes = errors.into_inner().unwrap();
        if let Some(i) = causes.iter().position(|e| e.class() == ErrorClass::Config) {
            return Err(causes.swap_remove(i));
        }
        let errors: Vec<String> = devices.iter().filter_map(|d| d.error.clone()).collect();
        Err(Error::Device {
            device: "all".into(),
            message: format!("no device could run the model: {}", errors.join("; ")),
        })
    }
}

/// Wraps a factory to record when the first replica became ready (the run's clock starts
/// there, so throughput figures exclude model loading).
struct ReadyFactory<'a> {
    inner: &'a dyn BackendFactory,
    first_ready: &'a Mutex<Option<Instant>>,
}

impl BackendFactory for ReadyFactory<'_> {
    fn create(&self, device: Device) -> Result<Box<dyn Backend>> {
        let backend = self.inner.create(device)?;
        self.first_ready
            .lock()
            .unwrap()
            .get_or_insert_with(Instant::now);
        Ok(backend)
    }
}

fn progress_bar(enabled: bool, total: usize) -> indicatif::ProgressBar {
    if !enabled {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} documents  {per_sec}  ETA {eta}  {msg}",
        )
        .expect("static template"),
    );
    bar
}
