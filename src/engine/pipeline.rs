//! The corpus pipeline: stages connected by bounded channels, so every stage works at once and
//! memory stays bounded by the channel capacities and the look-ahead window.
//!
//! ```text
//! reader ─▶ prepare (rayon: tokenize, candidates) ─▶ bucketer (sort window, pack) ─▶
//!     device workers (one replica each) ─▶ decode (rayon: table rows) ─▶ writer (parts per unit)
//! ```
//!
//! Work is organised in units (an input file, or a row-group range of one). Every table's rows of
//! a unit go to part files named `part-<unit hash>-<n>`, written to the unit's staging folder when
//! `rows_per_part` rows have gathered and when the unit's last document is done; then the
//! [`Manifest`] moves them into the tables and records the unit, so the tables never hold part of
//! a unit.

use std::borrow::Cow;
use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, unbounded, Receiver};
use rayon::prelude::*;
use serde::Serialize;
use tch::Device;

use super::bucket::{Bucketer, Cost};
use super::checks::{Abort, FirstSeen, InputChecks, Screen};
use super::job::{BatchConfig, Compression, OutputFormat};
use super::long::{self, LongDoc, SegmentOf};
use super::manifest::{self, DocCounts, Manifest, PartRecord, UnitRecord};
use super::worker::{device_loop, Backend, BackendFactory, Batch, Done, Mode, Outcome};
use crate::alloc::ReleaseFollower;
use crate::corpus::parquet::{self, InputColumns, RowResult};
use crate::corpus::Document;
use crate::device::device_name;
use crate::encoder::plan_windows;
use crate::error::{Error, ErrorClass, Result};
use crate::model::{folder, ModelConfig, PreparedDoc};
use crate::output::{
    doc_rows, DocRows, DocumentRow, EntityRow, MentionRow, PartWriter, PendingRows, RelationRow,
    Status, TableRow,
};
use crate::schema;
use crate::tokenize::WordPieceTokenizer;

/// Input rows per message from the reader: enough to amortise channel traffic and give the
/// rayon pool a parallel chunk.
const READ_CHUNK: usize = 64;

/// Words per message from the reader, at most (a longer document goes alone): what the stages
/// between the reader and the bucketer hold grows with words, and long documents would
/// otherwise fill a chunk of rows with hundreds of MB of segments. DocRED-sized rows fill
/// READ_CHUNK first.
const READ_CHUNK_WORDS: usize = 50_000;

/// Mentions per word assumed when estimating a document's mention pairs before prediction
/// (DocRED-like text has about one mention every eight words).
const WORDS_PER_MENTION: usize = 8;

/// How many top-scoring relations the summary keeps as examples.
const EXAMPLES: usize = 5;

/// The output tables, in the order of [`Report::parts`].
pub const TABLES: [&str; 4] = [
    schema::MENTIONS,
    schema::ENTITIES,
    schema::RELATIONS,
    schema::DOCUMENTS,
];

/// A piece of work: an input file, a row-group range of one, or a row range inside one large
/// row group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unit {
    pub path: PathBuf,
    pub row_groups: Option<Range<usize>>,
    /// Rows of `row_groups` (counted from its first row) when a row group larger than a unit is
    /// split.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows: Option<Range<usize>>,
    /// Stable id of the unit (from its path and range): names its part files.
    pub hash: String,
}

impl Unit {
    pub fn file(path: &Path) -> Unit {
        Unit::new(path, None)
    }

    /// A unit whose id hashes `path` as given.
    pub fn new(path: &Path, row_groups: Option<Range<usize>>) -> Unit {
        Unit::keyed(path, &path.to_string_lossy(), row_groups, None)
    }

    /// A unit whose id hashes `key` (the path as every machine names it, see
    /// [`super::plan`]) instead of the local path.
    pub fn keyed(
        path: &Path,
        key: &str,
        row_groups: Option<Range<usize>>,
        rows: Option<Range<usize>>,
    ) -> Unit {
        let mut key = key.to_string();
        if let Some(r) = &row_groups {
            key.push_str(&format!("#{}..{}", r.start, r.end));
        }
        if let Some(r) = &rows {
            key.push_str(&format!("@{}..{}", r.start, r.end));
        }
        let hash = blake3::hash(key.as_bytes()).to_hex()[..16].to_string();
        Unit {
            path: path.to_path_buf(),
            row_groups,
            rows,
            hash,
        }
    }

    /// Rows of the unit, from the file's footer.
    pub fn rows(&self) -> Result<usize> {
        if let Some(rows) = &self.rows {
            return Ok(rows.len());
        }
        let groups = parquet::row_group_rows(&self.path)?;
        let range = self.row_groups.clone().unwrap_or(0..groups.len());
        Ok(groups.get(range).map_or(0, |g| g.iter().sum()))
    }

    fn groups(&self) -> Result<Range<usize>> {
        match &self.row_groups {
            Some(r) => Ok(r.clone()),
            None => Ok(0..parquet::row_group_count(&self.path)?),
        }
    }

    pub(crate) fn open(&self, columns: &InputColumns) -> Result<parquet::DocReader> {
        parquet::open_part(&self.path, columns, self.groups()?, self.rows.clone())
    }

    /// The unit's rows' ids (see [`parquet::open_ids`]).
    pub(crate) fn open_ids(&self, columns: &InputColumns) -> Result<parquet::IdReader> {
        parquet::open_ids(&self.path, columns, self.groups()?, self.rows.clone())
    }
}

/// The CPU side of a model: what preparing documents and building tables need.
pub struct ModelInfo {
    pub config: ModelConfig,
    pub tokenizer: WordPieceTokenizer,
    /// Identifies the model in the `documents` table: folder name and a hash of its weights.
    pub model_id: String,
}

impl ModelInfo {
    /// Loads `config.json` and `tokenizer.json` of a model folder. The id hashes
    /// `model.safetensors` when present (a folder without weights can only drive a test backend).
    pub fn load(dir: &Path) -> Result<ModelInfo> {
        let config = ModelConfig::load(&dir.join(folder::CONFIG_FILE))?;
        let tokenizer = WordPieceTokenizer::from_file(&dir.join(folder::TOKENIZER_FILE))?;
        let name = dir
            .canonicalize()
            .ok()
            .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "model".into());
        let weights = dir.join(folder::WEIGHTS_FILE);
        let model_id = if weights.is_file() {
            let file = std::fs::File::open(&weights).map_err(|e| Error::io(&weights, e))?;
            let mut hasher = blake3::Hasher::new();
            hasher
                .update_reader(std::io::BufReader::with_capacity(1 << 20, file))
                .map_err(|e| Error::io(&weights, e))?;
            format!("{name}@{}", &hasher.finalize().to_hex()[..12])
        } else {
            format!("{name}@no-weights")
        };
        Ok(ModelInfo {
            config,
            tokenizer,
            model_id,
        })
    }

    /// Tokenizes a document and enumerates its candidate spans.
    pub fn prepare(&self, doc: Document) -> PreparedDoc {
        PreparedDoc::new(doc, &self.tokenizer, self.config.heads.max_span_words)
    }

    /// The batch cost of a prepared document: its encoder windows and heads' sizes.
    pub fn cost(&self, doc: &PreparedDoc) -> Cost {
        let windows = plan_windows(doc.tokens.ids.len(), &self.config.window);
        let lens = windows.iter().map(|w| w.end - w.start + 2);
        let mentions = doc.doc.word_count().div_ceil(WORDS_PER_MENTION);
        Cost {
            row_len: lens.clone().max().unwrap_or(0),
            rows: windows.len(),
            word_pieces: lens.sum(),
            spans: doc.candidate_count(),
            pairs: mentions * mentions.saturating_sub(1),
        }
    }
}

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
    pub mode: Mode,
    /// Keep every batch's prepared documents in the report (to replay them, e.g. encoder-only).
    pub keep_batches: bool,
    pub progress: bool,
    /// Size limits, duplicate ids and strict mode.
    pub checks: InputChecks,
    /// Where the repeated ids of the whole job first occur (see [`FirstSeen`]); `None` reads
    /// them from `units`, for a run that is the whole job.
    pub first_seen: Option<Arc<FirstSeen>>,
}

#[derive(Debug, Clone)]
pub struct OutputSettings {
    pub dir: PathBuf,
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
    /// The part of `device` spent in the encoder; `device - encoder` is the heads.
    pub encoder: f64,
    pub decode: f64,
    pub write: f64,
}

#[derive(Default)]
struct StageClock {
    read: AtomicU64,
    prepare: AtomicU64,
    bucket: AtomicU64,
    device: AtomicU64,
    encoder: AtomicU64,
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
            encoder: s(&self.encoder),
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
    /// Part files written per table, in [`TABLES`] order.
    pub parts: [usize; 4],
    /// Input units that could not be read to the end (file-level errors).
    pub unit_errors: Vec<Error>,
    /// The best-scoring relations (for the human-readable summary).
    pub examples: Vec<RelationRow>,
    /// Every batch's documents, when `keep_batches` was set.
    pub batches_kept: Vec<Vec<PreparedDoc>>,
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
    // must not stop the other units.
    // Read only for a bar: on an object store every footer costs a request.
    let total_rows: usize = match cfg.progress {
        true => cfg.units.iter().map(|u| u.rows().unwrap_or(0)).sum(),
        false => 0,
    };
    let progress = progress_bar(cfg.progress, total_rows);
    let manifest = match &cfg.output {
        Some(o) => Some(Manifest::create(&o.dir)?),
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

    let n_dev = cfg.devices.len();
    // A unit's error travels with its rows only in strict mode (see the reader).
    let (read_tx, read_rx) = bounded::<(usize, Result<Vec<RowResult>>)>(4);
    let (prep_tx, prep_rx) = bounded::<Vec<(PreparedDoc, Meta)>>(4);
    let (batch_tx, batch_rx) = bounded::<Batch<Meta>>(2 * n_dev);
    let (done_tx, done_rx) = bounded::<Done<Meta>>(2 * n_dev);
    let (write_tx, write_rx) = unbounded::<WriterMsg>();
    let first_ready: Mutex<Option<Instant>> = Mutex::new(None);
    let started = Instant::now();
    let device_reports: Mutex<Vec<DeviceReport>> = Mutex::new(
        cfg.devices
            .iter()
            .map(|&d| DeviceReport {
                device: device_name(d),
                ..Default::default()
            })
            .collect(),
    );
    let device_errors: Mutex<Vec<Error>> = Mutex::new(Vec::new());
    let padded = AtomicU64::new(0);
    let real = AtomicU64::new(0);
    let batches_kept = Mutex::new(Vec::new());
    let abort = Abort::default();

    let result = std::thread::scope(|s| -> Result<Report> {
        // Reader: units in order, rows in chunks.
        let reader_write_tx = write_tx.clone();
        let (clock, abort) = (&clock, &abort);
        s.spawn(move || {
            let mut memory = ReleaseFollower::default();
            for (u, unit) in cfg.units.iter().enumerate() {
                let mut rows = 0;
                let mut error = None;
                let mut t = Instant::now();
                match unit.open(&cfg.columns) {
                    Err(e) => error = Some(e),
                    Ok(reader) => {
                        let mut chunk = Vec::with_capacity(READ_CHUNK);
                        let mut words = 0;
                        for r in reader {
                            match r {
                                Ok(row) => {
                                    rows += 1;
                                    words += row.doc.as_ref().map_or(0, Document::word_count);
                                    chunk.push(row);
                                    if chunk.len() == READ_CHUNK || words >= READ_CHUNK_WORDS {
                                        words = 0;
                                        memory.follow();
                                        StageClock::add(&clock.read, t);
                                        let rows = std::mem::take(&mut chunk);
                                        if read_tx.send((u, Ok(rows))).is_err() {
                                            return;
                                        }
                                        t = Instant::now();
                                    }
                                }
                                Err(e) => error = Some(e),
                            }
                        }
                        StageClock::add(&clock.read, t);
                        if !chunk.is_empty() && read_tx.send((u, Ok(chunk))).is_err() {
                            return;
                        }
                    }
                }
                if let Some(e) = &error {
                    tracing::error!(unit = %unit.path.display(), "input unit failed: {e}");
                }
                let error = match error {
                    Some(e) if cfg.checks.strict => {
                        // Through the prepare stage, behind the unit's rows: the run stops at
                        // the first problem in input order, whichever stage finds it.
                        let _ = read_tx.send((u, Err(e)));
                        return;
                    }
                    other => other,
                };
                let msg = WriterMsg::UnitEnd {
                    unit: u,
                    rows,
                    error,
                };
                if reader_write_tx.send(msg).is_err() {
                    return;
                }
            }
        });

        // Prepare: tokenization and candidates on the rayon pool; rejected rows go straight to
        // the writer.
        let prep_write_tx = write_tx.clone();
        let pool = &pool;
        s.spawn(move || {
            let screen = Screen::new(cfg.checks, first_seen, &cfg.units);
            let mut memory = ReleaseFollower::default();
            for (unit, rows) in read_rx {
                memory.follow();
                let rows = match rows {
                    Ok(rows) => rows,
                    Err(e) => {
                        abort.raise(e);
                        return;
                    }
                };
                let t = Instant::now();
                let source = cfg.units[unit].path.to_string_lossy().into_owned();
                let mut docs = Vec::with_capacity(rows.len());
                let mut rejected = Vec::new();
                for r in rows {
                    let r = screen.check(unit, r);
                    match r.doc {
                        Ok(doc) => docs.push((r.row as u64, doc)),
                        Err(reason) if cfg.checks.strict => {
                            let id =
                                r.id.map_or("document".into(), |id| format!("document {id:?}"));
                            abort.raise(Error::BadRow {
                                path: cfg.units[unit].path.clone(),
                                row: r.row,
                                message: format!("{id} rejected in strict mode: {reason}"),
                            });
                            return;
                        }
                        Err(reason) => rejected.push(DocResult {
                            unit,
                            document: DocumentRow {
                                doc_id: r.id,
                                status: Status::Rejected,
                                reason: Some(reason),
                                source_file: source.clone(),
                                source_row: r.row as u64,
                                content_hash: None,
                                words: 0,
                                word_pieces: 0,
                                segments: 0,
                                mentions: 0,
                                entities: 0,
                                relations: 0,
                                seconds: 0.0,
                                model_id: model.model_id.clone(),
                            },
                            rows: DocRows::default(),
                        }),
                    }
                }
                let offered = docs.len();
                // A long document goes on as its segments (see `long`).
                let long_documents = &model.config.heads.long_documents;
                let good: Vec<Vec<(PreparedDoc, Meta)>> = pool.install(|| {
                    docs.into_par_iter()
                        .filter_map(|(row, doc)| {
                            let content_hash = doc.content_hash();
                            if unchanged.get(&doc.id) == Some(&content_hash) {
                                return None;
                            }
                            let items = long::split(model.prepare(doc), long_documents);
                            let items = items.into_iter().map(|(prepared, segment)| {
                                let meta = Meta {
                                    unit,
                                    row,
                                    content_hash: content_hash.clone(),
                                    cost: model.cost(&prepared),
                                    segment,
                                };
                                (prepared, meta)
                            });
                            Some(items.collect())
                        })
                        .collect()
                });
                let skipped = WriterMsg::Skipped {
                    unit,
                    docs: offered - good.len(),
                };
                if offered > good.len() && prep_write_tx.send(skipped).is_err() {
                    return;
                }
                let good: Vec<(PreparedDoc, Meta)> = good.into_iter().flatten().collect();
                StageClock::add(&clock.prepare, t);
                if !rejected.is_empty() && prep_write_tx.send(WriterMsg::Docs(rejected)).is_err() {
                    return;
                }
                if !good.is_empty() && prep_tx.send(good).is_err() {
                    return;
                }
            }
        });

        // Bucketer: look-ahead window, sorted and packed under the budget.
        let padded = &padded;
        let real = &real;
        s.spawn(move || {
            let mut bucketer = Bucketer::new(cfg.batch, |item: &(PreparedDoc, Meta)| item.1.cost);
            let send = |batches: Vec<Vec<(PreparedDoc, Meta)>>| {
                for b in batches {
                    let (r, p) = super::bucket::padding(b.iter().map(|(_, m)| m.cost));
                    real.fetch_add(r as u64, Ordering::Relaxed);
                    padded.fetch_add(p as u64, Ordering::Relaxed);
                    let (docs, meta) = b.into_iter().unzip();
                    if batch_tx.send(Batch { docs, meta }).is_err() {
                        return false;
                    }
                }
                true
            };
            let mut memory = ReleaseFollower::default();
            for items in prep_rx {
                memory.follow();
                for item in items {
                    let t = Instant::now();
                    let batches = bucketer.push(item);
                    StageClock::add(&clock.bucket, t);
                    if !send(batches) {
                        return;
                    }
                }
            }
            // After a strict-mode stop the documents still waiting are not worth computing.
            if abort.raised() {
                return;
            }
            let t = Instant::now();
            let batches = bucketer.flush();
            StageClock::add(&clock.bucket, t);
            send(batches);
        });

        // Device workers.
        for (i, &device) in cfg.devices.iter().enumerate() {
            let batch_rx = batch_rx.clone();
            let done_tx = done_tx.clone();
            let (first_ready, device_reports) = (&first_ready, &device_reports);
            let device_errors = &device_errors;
            s.spawn(move || {
                let ready = ReadyFactory {
                    inner: factory,
                    first_ready,
                };
                if let Err(e) =
                    device_loop(i, device, &ready, cfg.mode, batch_rx, done_tx, Some(pool))
                {
                    tracing::error!("{e}");
                    device_reports.lock().unwrap()[i].error = Some(e.to_string());
                    device_errors.lock().unwrap().push(e);
                }
            });
        }
        drop(batch_rx);
        drop(done_tx);

        // Decoder: table rows on the rayon pool, overlapped with the devices' next batches.
        let decode_write_tx = write_tx;
        let (device_reports, batches_kept) = (&device_reports, &batches_kept);
        s.spawn(move || {
            let mut memory = ReleaseFollower::default();
            for done in done_rx {
                memory.follow();
                let t = Instant::now();
                {
                    let mut reports = device_reports.lock().unwrap();
                    let r = &mut reports[done.device];
                    r.batches += 1;
                    r.documents += done.batch.docs.len();
                    r.seconds += done.seconds;
                    r.retries += done.retries;
                }
                let nanos = |s: f64| (s * 1e9) as u64;
                clock
                    .device
                    .fetch_add(nanos(done.seconds), Ordering::Relaxed);
                clock
                    .encoder
                    .fetch_add(nanos(done.encoder_seconds), Ordering::Relaxed);
                let results = decode(&done, cfg, model, pool);
                StageClock::add(&clock.decode, t);
                if cfg.keep_batches {
                    batches_kept.lock().unwrap().push(done.batch.docs);
                }
                if decode_write_tx.send(WriterMsg::Docs(results)).is_err() {
                    return;
                }
            }
        });

        // Writer (this thread).
        write_stage(cfg, manifest.as_ref(), write_rx, clock, &progress)
    });
    progress.finish_and_clear();
    if let Some(e) = abort.into_error() {
        return Err(e);
    }
    let devices = device_reports.into_inner().unwrap();
    // With no device left the other stages stop early; that is the error to report.
    if devices.iter().all(|d| d.error.is_some()) {
        // A model folder that cannot be loaded (missing, truncated or mismatched weights) fails
        // every device alike: the job must be fixed, and a retry would fail the same way.
        let mut causes = device_errors.into_inner().unwrap();
        if let Some(i) = causes.iter().position(|e| e.class() == ErrorClass::Config) {
            return Err(causes.swap_remove(i));
        }
        let errors: Vec<String> = devices.iter().filter_map(|d| d.error.clone()).collect();
        return Err(Error::Device {
            device: "all".into(),
            message: format!("no device could run the model: {}", errors.join("; ")),
        });
    }
    let mut report = result?;
    let end = Instant::now();
    let ready = first_ready.into_inner().unwrap().unwrap_or(end);
    report.startup_seconds = ready.duration_since(started).as_secs_f64();
    report.seconds = end.duration_since(ready).as_secs_f64();
    report.stages = clock.seconds();
    report.devices = devices;
    report.word_pieces = real.load(Ordering::Relaxed) as usize;
    report.padded_word_pieces = padded.load(Ordering::Relaxed) as usize;
    report.batches = report.devices.iter().map(|d| d.batches).sum();
    report.batches_kept = batches_kept.into_inner().unwrap();
    Ok(report)
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

/// A document of a processed batch ready for its rows: a whole one, or a long one whose last
/// segment the batch held.
struct Ready<'a> {
    meta: &'a Meta,
    whole: Option<&'a PreparedDoc>,
    long: Option<Arc<LongDoc>>,
    outcome: Cow<'a, Outcome>,
    seconds: f64,
}

impl Ready<'_> {
    fn prepared(&self) -> &PreparedDoc {
        match (&self.whole, &self.long) {
            (Some(p), _) => p,
            (None, Some(l)) => l.prepared(),
            (None, None) => unreachable!("a ready document is whole or long"),
        }
    }
}

/// Table rows of every document of a processed batch that is complete. A document's seconds
/// are its share of the batch's device time by word pieces, summed over the batches of its
/// segments for a long document (whose rows come with its last segment).
fn decode(
    done: &Done<Meta>,
    cfg: &PipelineConfig,
    model: &ModelInfo,
    pool: &rayon::ThreadPool,
) -> Vec<DocResult> {
    let total_pieces: usize = done.batch.meta.iter().map(|m| m.cost.word_pieces).sum();
    let share = |m: &Meta| done.seconds * m.cost.word_pieces as f64 / total_pieces.max(1) as f64;
    let mut ready = Vec::with_capacity(done.batch.docs.len());
    for ((prepared, meta), outcome) in done
        .batch
        .docs
        .iter()
        .zip(&done.batch.meta)
        .zip(&done.outcomes)
    {
        match &meta.segment {
            None => ready.push(Ready {
                meta,
                whole: Some(prepared),
                long: None,
                outcome: Cow::Borrowed(outcome),
                seconds: share(meta),
            }),
            Some(s) => {
                if let Some((outcome, seconds)) = s.doc.finish(s.index, outcome, share(meta)) {
                    tracing::info!(
                        doc = %s.doc.prepared().doc.id,
                        words = s.doc.prepared().doc.word_count(),
                        segments = s.doc.segment_count(),
                        seconds,
                        "long document done"
                    );
                    ready.push(Ready {
                        meta,
                        whole: None,
                        long: Some(Arc::clone(&s.doc)),
                        outcome: Cow::Owned(outcome),
                        seconds,
                    });
                }
            }
        }
    }
    pool.install(|| {
        ready
            .par_iter()
            .map(|r| {
                let (prepared, meta) = (r.prepared(), r.meta);
                let doc = &prepared.doc;
                let (status, reason, rows) = match r.outcome.as_ref() {
                    Outcome::Predicted(pred) => match doc_rows(doc, pred, &model.config) {
                        Ok(rows) => (Status::Ok, None, rows),
                        Err(e) => (Status::Failed, Some(e.to_string()), DocRows::default()),
                    },
                    Outcome::Encoded => (Status::Ok, None, DocRows::default()),
                    Outcome::Failed(e) => (Status::Failed, Some(e.clone()), DocRows::default()),
                };
                DocResult {
                    unit: meta.unit,
                    document: DocumentRow {
                        doc_id: Some(doc.id.clone()),
                        status,
                        reason,
                        source_file: cfg.units[meta.unit].path.to_string_lossy().into_owned(),
                        source_row: meta.row,
                        content_hash: Some(meta.content_hash.clone()),
                        words: doc.word_count() as u32,
                        word_pieces: prepared.tokens.ids.len() as u32,
                        segments: r.long.as_ref().map_or(1, |l| l.segment_count()) as u32,
                        mentions: rows.mentions.len() as u32,
                        entities: rows.entities.len() as u32,
                        relations: rows.relations.len() as u32,
                        seconds: r.seconds,
                        model_id: model.model_id.clone(),
                    },
                    rows,
                }
            })
            .collect()
    })
}

/// Rows of one unit waiting to be written.
#[derive(Default)]
struct UnitBuffer {
    expected: Option<usize>,
    /// The unit was not read to the end or a part failed: it must not be recorded as finished.
    broken: bool,
    seen: usize,
    mentions: PendingRows<MentionRow>,
    entities: PendingRows<EntityRow>,
    relations: PendingRows<RelationRow>,
    documents: PendingRows<DocumentRow>,
    counts: DocCounts,
    /// Writes the unit's parts into its staging folder (opened at the first part).
    stage: Option<PartWriter>,
    /// Parts written per table, in [`TABLES`] order.
    parts: [Vec<PartRecord>; 4],
}

impl UnitBuffer {
    fn record(self, unit: &Unit) -> UnitRecord {
        UnitRecord {
            hash: unit.hash.clone(),
            source_file: unit.path.clone(),
            row_groups: unit.row_groups.clone(),
            rows: unit.rows.clone(),
            parts: TABLES
                .iter()
                .zip(self.parts)
                .map(|(t, p)| (t.to_string(), p))
                .collect(),
            documents: self.counts,
            finished: manifest::now(),
        }
    }
}

fn write_stage(
    cfg: &PipelineConfig,
    manifest: Option<&Manifest>,
    rx: Receiver<WriterMsg>,
    clock: &StageClock,
    progress: &indicatif::ProgressBar,
) -> Result<Report> {
    let mut units: HashMap<usize, UnitBuffer> = HashMap::new();
    let mut report = Report::default();
    let mut first_error: Option<Error> = None;
    // One message's rows per unit, gathered before they join the unit's pending batches.
    let mut gathered: HashMap<usize, (DocRows, Vec<DocumentRow>)> = HashMap::new();
    let mut memory = ReleaseFollower::default();
    let mut slowest = 0.0f64;
    for msg in rx {
        memory.follow();
        let t = Instant::now();
        let mut touched = Vec::new();
        match msg {
            WriterMsg::UnitEnd { unit, rows, error } => {
                let buf = units.entry(unit).or_default();
                if let Some(e) = error {
                    // The error names the unit's file already.
                    report.unit_errors.push(e);
                    buf.broken = true;
                }
                buf.expected = Some(rows);
                touched.push(unit);
            }
            WriterMsg::Skipped { unit, docs } => {
                units.entry(unit).or_default().seen += docs;
                progress.inc(docs as u64);
                touched.push(unit);
            }
            WriterMsg::Docs(docs) => {
                for d in docs {
                    count(&mut report, &d);
                    progress.inc(1);
                    show_if_slowest(progress, &mut slowest, &d.document);
                    if !touched.contains(&d.unit) {
                        touched.push(d.unit);
                    }
                    let buf = units.entry(d.unit).or_default();
                    buf.seen += 1;
                    match d.document.status {
                        Status::Ok => buf.counts.ok += 1,
                        Status::Rejected => buf.counts.rejected += 1,
                        Status::Failed => buf.counts.failed += 1,
                    }
                    let (rows, documents) = gathered.entry(d.unit).or_default();
                    rows.mentions.extend(d.rows.mentions);
                    rows.entities.extend(d.rows.entities);
                    rows.relations.extend(d.rows.relations);
                    documents.push(d.document);
                }
                for (unit, (rows, documents)) in gathered.drain() {
                    let buf = units.get_mut(&unit).expect("unit buffer exists");
                    let pushed = buf
                        .mentions
                        .push(rows.mentions)
                        .and_then(|()| buf.entities.push(rows.entities))
                        .and_then(|()| buf.relations.push(rows.relations))
                        .and_then(|()| buf.documents.push(documents));
                    if let Err(e) = pushed {
                        tracing::error!("buffering unit {}: {e}", cfg.units[unit].path.display());
                        buf.broken = true;
                        first_error.get_or_insert(e);
                    }
                }
            }
        }
        for unit in touched {
            let buf = units.get_mut(&unit).expect("unit buffer exists");
            let complete = buf.expected == Some(buf.seen);
            if let (Some(m), Some(o), false) = (manifest, &cfg.output, buf.broken) {
                if let Err(e) = flush_unit(m, o, &cfg.units[unit], buf, complete) {
                    tracing::error!("writing unit {}: {e}", cfg.units[unit].path.display());
                    buf.broken = true;
                    first_error.get_or_insert(e);
                }
            }
            if complete {
                let done = units.remove(&unit).expect("unit buffer exists");
                let u = &cfg.units[unit];
                let (seen, parts) = (done.seen, done.parts.each_ref().map(Vec::len));
                let committed = match manifest {
                    Some(m) if done.broken => m.abandon(u, &done.parts).map(|()| false),
                    Some(m) => m.commit(&done.record(u)).map(|()| true),
                    None => Ok(false),
                };
                match committed {
                    Ok(true) => {
                        for (n, total) in parts.iter().zip(&mut report.parts) {
                            *total += n;
                        }
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::error!("committing unit {}: {e}", u.path.display());
                        first_error.get_or_insert(e);
                    }
                }
                tracing::info!(unit = %u.path.display(), documents = seen, "unit done");
            }
        }
        StageClock::add(&clock.write, t);
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    if !units.is_empty() {
        let open: Vec<String> = units
            .keys()
            .map(|&u| cfg.units[u].path.display().to_string())
            .collect();
        return Err(Error::Config(format!(
            "the pipeline stopped before finishing units: {}",
            open.join(", ")
        )));
    }
    Ok(report)
}

fn count(report: &mut Report, d: &DocResult) {
    report.documents += 1;
    match d.document.status {
        Status::Ok => report.ok += 1,
        Status::Rejected => report.rejected += 1,
        Status::Failed => report.failed += 1,
    }
    report.words += d.document.words as usize;
    report.mentions += d.rows.mentions.len();
    report.entities += d.rows.entities.len();
    report.relations += d.rows.relations.len();
    for r in &d.rows.relations {
        let pos = report.examples.partition_point(|e| e.score >= r.score);
        if pos < EXAMPLES {
            report.examples.insert(pos, r.clone());
            report.examples.truncate(EXAMPLES);
        }
    }
}

/// Writes the full parts of a unit's buffers, and everything left when the unit is complete,
/// into the unit's staging folder (a fresh one at the first part, so leftovers of a killed run
/// of the unit never mix in).
fn flush_unit(
    m: &Manifest,
    o: &OutputSettings,
    unit: &Unit,
    buf: &mut UnitBuffer,
    complete: bool,
) -> Result<()> {
    let pending = [
        buf.mentions.len(),
        buf.entities.len(),
        buf.relations.len(),
        buf.documents.len(),
    ];
    let due = |n: usize| n >= o.rows_per_part || (complete && n > 0);
    if !pending.iter().any(|&n| due(n)) {
        return Ok(());
    }
    if buf.stage.is_none() {
        buf.stage = Some(m.stage(unit, o.format, o.compression)?);
    }
    let w = buf.stage.as_ref().expect("staging opened above");
    let [mentions, entities, relations, documents] = &mut buf.parts;
    let n = o.rows_per_part;
    write_table(w, unit, &mut buf.mentions, mentions, n, complete)?;
    write_table(w, unit, &mut buf.entities, entities, n, complete)?;
    write_table(w, unit, &mut buf.relations, relations, n, complete)?;
    write_table(w, unit, &mut buf.documents, documents, n, complete)?;
    Ok(())
}

fn write_table<R: TableRow>(
    w: &PartWriter,
    unit: &Unit,
    rows: &mut PendingRows<R>,
    parts: &mut Vec<PartRecord>,
    rows_per_part: usize,
    complete: bool,
) -> Result<()> {
    while rows.len() >= rows_per_part || (complete && !rows.is_empty()) {
        let batch = rows.take(rows_per_part)?;
        let stem = w.stem(&unit.hash, parts.len());
        let path = w.write(R::TABLE, &stem, &batch)?;
        let file = path.file_name().expect("a part file name");
        parts.push(PartRecord {
            file: file.to_string_lossy().into_owned(),
            rows: batch.num_rows(),
        });
    }
    Ok(())
}

/// Names the slowest document so far next to the progress bar, with its time and length.
fn show_if_slowest(progress: &indicatif::ProgressBar, slowest: &mut f64, d: &DocumentRow) {
    if d.seconds > *slowest {
        *slowest = d.seconds;
        progress.set_message(format!(
            "slowest: {} {:.1} s ({} words)",
            d.doc_id.as_deref().unwrap_or("?"),
            d.seconds,
            d.words
        ));
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
