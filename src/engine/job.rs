//! Job files: one TOML file describes a corpus run (inputs, outputs, model, devices, batching,
//! thresholds, writer settings). Every field can be overridden on the command line.
//!
//! Unknown fields are errors (`deny_unknown_fields`) and every impossible value is reported with
//! the dotted name of its field, so a typo never silently falls back to a default. Relative paths
//! resolve against the job file's folder, so a job runs the same from any working directory.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::corpus::parquet::InputColumns;
use crate::error::{Error, Result};
use crate::model::segment::LongDocumentOverrides;
use crate::model::{ThresholdFlags, Thresholds};
pub use crate::output::writer::{Compression, OutputFormat};
use crate::paths::normalize;
pub use crate::pipeline::bucket::BatchConfig;

/// A whole job file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Job {
    /// Devices to run on: `cpu`, `cuda:0,cuda:1`, `cuda:all`.
    #[serde(default = "default_devices")]
    pub devices: String,
    /// CPU threads for tokenization, decoding and CPU inference; 0 = every available core.
    #[serde(default)]
    pub threads: usize,
    /// Model replicas on the CPU device, each with its own device thread and `threads /
    /// cpu_replicas` intra-op threads; 0 = two when there are at least two threads.
    #[serde(default)]
    pub cpu_replicas: usize,
    pub input: InputConfig,
    pub output: OutputConfig,
    #[serde(default)]
    pub model: ModelSection,
    #[serde(default)]
    pub batch: BatchConfig,
    #[serde(default)]
    pub thresholds: ThresholdOverrides,
    #[serde(default)]
    pub writer: WriterConfig,
    /// Fail the run at the first rejected document or unreadable input file, instead of
    /// recording rejections in the `documents` table and going on.
    #[serde(default)]
    pub strict: bool,
    #[serde(default)]
    pub incremental: IncrementalConfig,
    /// Documents longer than `whole_pieces` word pieces are predicted as overlapping segments
    /// whose predictions are merged (see [`crate::model::segment`]); set fields replace the
    /// model's `heads.long_documents` limits for this job.
    #[serde(default)]
    pub long_documents: LongDocumentOverrides,
    /// How object stores are reached when `input.paths` or `output.dir` are URLs (`s3://`,
    /// `gs://`, `az://`): an S3-compatible endpoint and provider options (see [`crate::store`]).
    #[serde(default)]
    pub storage: crate::store::StorageConfig,
}

/// Nightly increments (see [`super::incremental`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncrementalConfig {
    /// Process only documents that are new or changed since the job's last run, or whose
    /// results came from another model; each run writes its own `OUT/runs/<run id>/` with a
    /// `changes` table, and `OUT/_state/` remembers what the knowledge base holds.
    #[serde(default)]
    pub enabled: bool,
}

fn default_devices() -> String {
    "cpu".into()
}

/// Where the documents come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputConfig {
    /// Parquet files, directories (every `*.parquet` below them) or glob patterns.
    pub paths: Vec<String>,
    #[serde(default = "default_id_column")]
    pub id_column: String,
    /// Column of raw text (segmented into sentences and words by jerex); `""` = not used.
    #[serde(default = "default_text_column")]
    pub text_column: String,
    /// Column of pre-tokenized documents (a list of sentences, each a list of words), used for
    /// rows whose text is null or when the file has no text column; `""` = not used.
    #[serde(default = "default_sentences_column")]
    pub sentences_column: String,
    /// Rows per work unit, about: files are split into ranges of whole row groups of about this
    /// many rows, the pieces that runs resume and shards share out.
    #[serde(default = "default_unit_rows")]
    pub unit_rows: usize,
    /// Documents with more words (after segmentation) are rejected.
    #[serde(default = "default_max_words")]
    pub max_words: usize,
    /// Documents with more characters are rejected.
    #[serde(default = "default_max_chars")]
    pub max_chars: usize,
}

fn default_max_words() -> usize {
    crate::pipeline::checks::DEFAULT_MAX_WORDS
}

fn default_max_chars() -> usize {
    crate::pipeline::checks::DEFAULT_MAX_CHARS
}

fn default_unit_rows() -> usize {
    5_000
}

fn default_id_column() -> String {
    "id".into()
}

fn default_text_column() -> String {
    "text".into()
}

fn default_sentences_column() -> String {
    "sentences".into()
}

impl InputConfig {
    /// The reader's column configuration.
    pub fn columns(&self) -> InputColumns {
        let used = |c: &String| (!c.is_empty()).then(|| c.clone());
        InputColumns {
            id: self.id_column.clone(),
            text: used(&self.text_column),
            sentences: used(&self.sentences_column),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputConfig {
    /// Directory receiving `mentions/`, `entities/`, `relations/` and `documents/`.
    pub dir: PathBuf,
    #[serde(default)]
    pub format: OutputFormat,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// Model folder (`config.json`, `model.safetensors`, `tokenizer.json`); default
    /// `paths::default_model_dir()`.
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// Encoder precision on CUDA devices (`fp32`, `bf16`, `fp16`); CPU always runs fp32.
    #[serde(default)]
    pub precision: crate::device::Precision,
}

/// Thresholds that replace the model's tuned ones (`config.json`) for this job.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdOverrides {
    pub mention: Option<f32>,
    pub coref: Option<f32>,
    pub relation: Option<f32>,
}

impl ThresholdOverrides {
    pub fn apply(&self, base: Thresholds) -> Thresholds {
        Thresholds {
            mention: self.mention.unwrap_or(base.mention),
            coref: self.coref.unwrap_or(base.coref),
            relation: self.relation.unwrap_or(base.relation),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WriterConfig {
    /// Rows per part file (a unit's rows are split into several parts above this). Rows wait
    /// in memory until their part is written, so this also bounds the writer's memory.
    pub rows_per_part: usize,
    pub compression: Compression,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            rows_per_part: 10_000,
            compression: Compression::Zstd,
        }
    }
}

/// Command-line overrides: each flag replaces one job field. Relative paths given here resolve
/// against the working directory (they were typed there), unlike those in the job file.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct JobOverrides {
    /// Input Parquet files, directories or globs (replaces `input.paths`).
    #[arg(long = "input", value_name = "PATH")]
    pub input: Vec<String>,
    /// `input.id_column`.
    #[arg(long)]
    pub id_column: Option<String>,
    /// `input.text_column` ("" = not used).
    #[arg(long)]
    pub text_column: Option<String>,
    /// `input.sentences_column` ("" = not used).
    #[arg(long)]
    pub sentences_column: Option<String>,
    /// `output.dir`.
    #[arg(long, short = 'o', value_name = "DIR")]
    pub output: Option<PathBuf>,
    /// `output.format`.
    #[arg(long, value_enum)]
    pub format: Option<OutputFormat>,
    /// `model.dir`.
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// `model.precision` (fp32, bf16, fp16).
    #[arg(long)]
    pub precision: Option<crate::device::Precision>,
    /// `devices`: cpu, cuda:0,cuda:1 or cuda:all.
    #[arg(long)]
    pub devices: Option<String>,
    /// `threads` (0 = every core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// `cpu_replicas` (0 = two when there are at least two threads).
    #[arg(long)]
    pub cpu_replicas: Option<usize>,
    /// `batch.max_word_pieces`.
    #[arg(long)]
    pub max_word_pieces: Option<usize>,
    /// `batch.max_docs`.
    #[arg(long)]
    pub max_docs: Option<usize>,
    /// `batch.lookahead`.
    #[arg(long)]
    pub lookahead: Option<usize>,
    /// `batch.max_spans`.
    #[arg(long)]
    pub max_spans: Option<usize>,
    /// `batch.max_pairs`.
    #[arg(long)]
    pub max_pairs: Option<usize>,
    /// `thresholds.mention`, `thresholds.coref`, `thresholds.relation`.
    #[command(flatten)]
    pub thresholds: ThresholdFlags,
    /// `writer.rows_per_part`.
    #[arg(long)]
    pub rows_per_part: Option<usize>,
    /// `input.unit_rows`.
    #[arg(long)]
    pub unit_rows: Option<usize>,
    /// `input.max_words`.
    #[arg(long)]
    pub max_words: Option<usize>,
    /// `input.max_chars`.
    #[arg(long)]
    pub max_chars: Option<usize>,
    /// `strict`: fail at the first rejected document or unreadable input file.
    #[arg(long)]
    pub strict: bool,
    /// `writer.compression`.
    #[arg(long, value_enum)]
    pub compression: Option<Compression>,
    /// `long_documents.*`.
    #[command(flatten)]
    pub long_documents: LongDocumentOverrides,
}

impl Job {
    /// Reads, resolves (paths against the file's folder) and validates a job file.
    pub fn load(path: &Path) -> Result<Job> {
        Job::load_with(path, &JobOverrides::default())
    }

    /// Parses job TOML without resolving paths or validating.
    pub fn parse(text: &str) -> std::result::Result<Job, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_string())
    }

    /// Reads a job file and applies command-line overrides, then validates the result; errors
    /// name the job file and the offending field. Object stores are opened with the job's
    /// `[storage]` from here on.
    pub fn load_with(path: &Path, overrides: &JobOverrides) -> Result<Job> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let fmt_err = |message| Error::Format {
            path: path.to_path_buf(),
            message,
        };
        let mut job = Job::parse(&text).map_err(fmt_err)?;
        job.resolve_relative_to(path.parent().unwrap_or(Path::new(".")));
        overrides.apply(&mut job);
        job.resolve_urls().map_err(fmt_err)?;
        job.validate().map_err(fmt_err)?;
        // Inputs and outputs on object stores are opened with the job's `[storage]`.
        crate::store::configure(&job.storage);
        Ok(job)
    }

    fn resolve_relative_to(&mut self, base: &Path) {
        let join = |p: &Path| {
            // URLs (`s3://`, `file://`) are resolved by `resolve_urls`.
            if p.is_absolute() || p.to_str().is_some_and(|s| s.contains("://")) {
                p.to_path_buf()
            } else {
                normalize(&base.join(p))
            }
        };
        for p in &mut self.input.paths {
            *p = join(Path::new(p.as_str())).to_string_lossy().into_owned();
        }
        self.output.dir = join(&self.output.dir);
        if let Some(dir) = &self.model.dir {
            self.model.dir = Some(join(dir));
        }
    }

    /// `file://` URLs become local paths; object store URLs stay; another scheme is an error.
    fn resolve_urls(&mut self) -> std::result::Result<(), String> {
        use crate::store::resolve;
        for p in &mut self.input.paths {
            if let Some(path) = resolve(p).map_err(|e| format!("input.paths: {e}"))? {
                *p = path.to_string_lossy().into_owned();
            }
        }
        let dir = self.output.dir.to_string_lossy().into_owned();
        if let Some(path) = resolve(&dir).map_err(|e| format!("output.dir: {e}"))? {
            self.output.dir = path;
        }
        Ok(())
    }

    /// Checks every value; the message names the field (`batch.max_docs: ...`).
    pub fn validate(&self) -> std::result::Result<(), String> {
        crate::device::parse_devices(&self.devices).map_err(|e| format!("devices: {e}"))?;
        if self.input.paths.is_empty() {
            return Err("input.paths: at least one file, directory or glob is needed".into());
        }
        if self.input.id_column.is_empty() {
            return Err("input.id_column: must not be empty".into());
        }
        if self.input.text_column.is_empty() && self.input.sentences_column.is_empty() {
            return Err(
                "input.text_column, input.sentences_column: at least one content column is needed"
                    .into(),
            );
        }
        let b = &self.batch;
        for (name, value) in [
            ("batch.max_word_pieces", b.max_word_pieces),
            ("batch.max_docs", b.max_docs),
            ("batch.lookahead", b.lookahead),
            ("batch.max_spans", b.max_spans),
            ("batch.max_pairs", b.max_pairs),
            ("writer.rows_per_part", self.writer.rows_per_part),
            ("input.unit_rows", self.input.unit_rows),
            ("input.max_words", self.input.max_words),
            ("input.max_chars", self.input.max_chars),
        ] {
            if value == 0 {
                return Err(format!("{name}: must be at least 1"));
            }
        }
        if self.cpu_replicas > self.cpu_threads() {
            return Err(format!(
                "cpu_replicas: {} is more than the {} threads; each replica needs one",
                self.cpu_replicas,
                self.cpu_threads()
            ));
        }
        let cores = available_cores();
        if self.threads > cores {
            return Err(format!(
                "threads: {} is more than the {cores} cores this process may use (0 uses them \
                 all); more threads than cores only contend for them",
                self.threads
            ));
        }
        if b.lookahead < b.max_docs {
            return Err(format!(
                "batch.lookahead: {} is smaller than batch.max_docs ({}); the look-ahead window \
                 must hold at least one full batch",
                b.lookahead, b.max_docs
            ));
        }
        for (name, value) in [
            ("thresholds.mention", self.thresholds.mention),
            ("thresholds.coref", self.thresholds.coref),
            ("thresholds.relation", self.thresholds.relation),
        ] {
            if let Some(v) = value {
                if !(v > 0.0 && v <= 1.0) {
                    return Err(format!("{name}: {v} is not a probability in (0, 1]"));
                }
            }
        }
        if self.output.format == OutputFormat::Arrow
            && self.writer.compression == Compression::Snappy
        {
            return Err(
                "writer.compression: Arrow IPC files support zstd, lz4 or none, not snappy".into(),
            );
        }
        Ok(())
    }

    /// What the run checks documents against (see [`crate::pipeline::checks`]).
    pub fn input_checks(&self) -> crate::pipeline::checks::InputChecks {
        crate::pipeline::checks::InputChecks {
            max_words: self.input.max_words,
            max_chars: self.input.max_chars,
            strict: self.strict,
        }
    }

    /// The model folder: the job's, else the shipped default.
    pub fn model_dir(&self) -> Result<PathBuf> {
        match &self.model.dir {
            Some(dir) => Ok(dir.clone()),
            None => crate::paths::default_model_dir(),
        }
    }

    /// Threads to use for CPU work (the `threads` field, 0 meaning every available core).
    pub fn cpu_threads(&self) -> usize {
        if self.threads > 0 {
            self.threads
        } else {
            available_cores()
        }
    }

    /// Model replicas on the CPU device (the `cpu_replicas` field, 0 meaning two when there are
    /// at least two threads). Two single-thread replicas on two cores beat one two-thread
    /// replica: each fills the other's serial moments (host code, small operators) where one
    /// replica's second thread would wait.
    pub fn cpu_replicas(&self) -> usize {
        match self.cpu_replicas {
            0 => self.cpu_threads().min(2),
            n => n,
        }
    }

    /// Expands `input.paths` into a sorted list of Parquet files, each file once however many
    /// paths name it. Directories contribute every `*.parquet` below them; a path or pattern
    /// matching nothing is an error.
    pub fn input_files(&self) -> Result<Vec<PathBuf>> {
        let mut files = Vec::new();
        for spec in &self.input.paths {
            let path = Path::new(spec);
            let before = files.len();
            if crate::store::is_url(path) {
                files.extend(crate::store::read::expand_remote(spec)?);
            } else if path.is_dir() {
                collect_parquet(path, &mut files)?;
            } else if path.is_file() {
                files.push(path.to_path_buf());
            } else {
                let entries = glob::glob(spec).map_err(|e| {
                    Error::Config(format!("input.paths: '{spec}' is not a valid glob: {e}"))
                })?;
                for entry in entries {
                    let p = entry.map_err(|e| {
                        Error::io(e.path().to_path_buf(), std::io::Error::other(e.to_string()))
                    })?;
                    if p.is_dir() {
                        collect_parquet(&p, &mut files)?;
                    } else {
                        files.push(p);
                    }
                }
            }
            if files.len() == before {
                return Err(Error::Config(format!(
                    "input.paths: '{spec}' matches no Parquet file"
                )));
            }
        }
        // One file under two spellings (`./in/x.parquet` and `in/x.parquet`, a symbolic or a
        // hard link) is one input: read twice, its rows would be rejected as duplicates.
        files.sort();
        files.dedup();
        let mut seen = HashSet::new();
        files.retain(|f| match std::fs::metadata(f) {
            Ok(m) => seen.insert((m.dev(), m.ino())),
            // Planning reports it by name.
            Err(_) => true,
        });
        Ok(files)
    }
}

/// Cores this process may use (its CPU affinity and quota).
fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn collect_parquet(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .map(|e| e.map(|e| e.path()).map_err(|e| Error::io(dir, e)))
        .collect::<Result<_>>()?;
    entries.sort();
    for p in entries {
        let hidden = p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.') || n.starts_with('_'));
        if hidden {
            continue;
        }
        if p.is_dir() {
            collect_parquet(&p, out)?;
        } else if p.extension().is_some_and(|e| e == "parquet") {
            out.push(p);
        }
    }
    Ok(())
}

impl JobOverrides {
    pub fn apply(&self, job: &mut Job) {
        if !self.input.is_empty() {
            job.input.paths = self.input.clone();
        }
        if let Some(v) = &self.id_column {
            job.input.id_column = v.clone();
        }
        if let Some(v) = &self.text_column {
            job.input.text_column = v.clone();
        }
        if let Some(v) = &self.sentences_column {
            job.input.sentences_column = v.clone();
        }
        if let Some(v) = &self.output {
            job.output.dir = v.clone();
        }
        if let Some(v) = self.format {
            job.output.format = v;
        }
        if let Some(v) = &self.model {
            job.model.dir = Some(v.clone());
        }
        if let Some(v) = self.precision {
            job.model.precision = v;
        }
        if let Some(v) = &self.devices {
            job.devices = v.clone();
        }
        if let Some(v) = self.threads {
            job.threads = v;
        }
        if let Some(v) = self.cpu_replicas {
            job.cpu_replicas = v;
        }
        let b = &mut job.batch;
        for (target, value) in [
            (&mut b.max_word_pieces, self.max_word_pieces),
            (&mut b.max_docs, self.max_docs),
            (&mut b.lookahead, self.lookahead),
            (&mut b.max_spans, self.max_spans),
            (&mut b.max_pairs, self.max_pairs),
            (&mut job.writer.rows_per_part, self.rows_per_part),
            (&mut job.input.unit_rows, self.unit_rows),
            (&mut job.input.max_words, self.max_words),
            (&mut job.input.max_chars, self.max_chars),
        ] {
            if let Some(v) = value {
                *target = v;
            }
        }
        let t = &mut job.thresholds;
        for (target, value) in [
            (&mut t.mention, self.thresholds.mention_threshold),
            (&mut t.coref, self.thresholds.coref_threshold),
            (&mut t.relation, self.thresholds.relation_threshold),
        ] {
            if value.is_some() {
                *target = value;
            }
        }
        if let Some(v) = self.compression {
            job.writer.compression = v;
        }
        let long = &mut job.long_documents;
        for (target, value) in [
            (&mut long.whole_pieces, self.long_documents.whole_pieces),
            (&mut long.segment_pieces, self.long_documents.segment_pieces),
            (&mut long.overlap_pieces, self.long_documents.overlap_pieces),
        ] {
            if value.is_some() {
                *target = value;
            }
        }
        // A flag can switch strict mode on; off is the default, so there is nothing to override.
        job.strict |= self.strict;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [input]
        paths = ["docs/*.parquet"]
        [output]
        dir = "out"
    "#;

    #[test]
    fn minimal_job_gets_defaults() {
        let job = Job::parse(MINIMAL).unwrap();
        assert_eq!(job.devices, "cpu");
        assert_eq!(job.output.format, OutputFormat::Parquet);
        assert_eq!(job.batch, BatchConfig::default());
        assert_eq!(job.input.columns(), InputColumns::default());
        assert_eq!(
            job.input_checks(),
            crate::pipeline::checks::InputChecks::default()
        );
        job.validate().unwrap();
    }

    #[test]
    fn input_limits_and_strict_come_from_the_file_and_flags() {
        let text = MINIMAL.replace("[output]", "max_words = 9\n[output]");
        let mut job = Job::parse(&format!("strict = true\n{text}")).unwrap();
        let checks = job.input_checks();
        assert!(checks.strict && checks.max_words == 9);
        let flags = JobOverrides {
            max_chars: Some(0),
            ..Default::default()
        };
        flags.apply(&mut job);
        assert!(job.validate().unwrap_err().starts_with("input.max_chars"));
        let mut job = Job::parse(MINIMAL).unwrap();
        let flags = JobOverrides {
            strict: true,
            max_words: Some(3),
            ..Default::default()
        };
        flags.apply(&mut job);
        assert!(job.input_checks().strict && job.input_checks().max_words == 3);
    }

    #[test]
    fn cpu_replicas_default_to_two_when_there_are_two_threads() {
        let replicas = |head: &str| {
            Job::parse(&format!("{head}\n{MINIMAL}"))
                .unwrap()
                .cpu_replicas()
        };
        assert_eq!(replicas("threads = 1"), 1);
        assert_eq!(replicas("threads = 2"), 2);
        assert_eq!(replicas("threads = 16"), 2);
        assert_eq!(replicas("threads = 16\ncpu_replicas = 4"), 4);
        let mut job = Job::parse(MINIMAL).unwrap();
        JobOverrides {
            cpu_replicas: Some(1),
            ..Default::default()
        }
        .apply(&mut job);
        assert_eq!(job.cpu_replicas(), 1);
    }

    #[test]
    fn unknown_fields_are_named() {
        let err = Job::parse(&format!("{MINIMAL}\n[batch]\nmax_tokens = 5\n")).unwrap_err();
        assert!(err.contains("max_tokens"), "{err}");
        let err = Job::parse(&format!("colour = 1\n{MINIMAL}")).unwrap_err();
        assert!(err.contains("colour"), "{err}");
    }

    #[test]
    fn impossible_values_name_the_field() {
        let cases = [
            ("[batch]\nmax_docs = 0", "batch.max_docs"),
            ("[batch]\nlookahead = 4\nmax_docs = 8", "batch.lookahead"),
            ("[thresholds]\nmention = 1.5", "thresholds.mention"),
            ("[writer]\nrows_per_part = 0", "writer.rows_per_part"),
        ];
        for (extra, field) in cases {
            let job = Job::parse(&format!("{MINIMAL}\n{extra}\n")).unwrap();
            let err = job.validate().unwrap_err();
            assert!(err.starts_with(field), "{extra}: {err}");
        }
        let mut job = Job::parse(MINIMAL).unwrap();
        job.input.text_column.clear();
        job.input.sentences_column.clear();
        assert!(job.validate().unwrap_err().starts_with("input.text_column"));
        let mut job = Job::parse(MINIMAL).unwrap();
        job.devices = "tpu:0".into();
        assert!(job.validate().unwrap_err().starts_with("devices"));
        let job = Job::parse(&format!("threads = 2\ncpu_replicas = 3\n{MINIMAL}")).unwrap();
        assert!(job.validate().unwrap_err().starts_with("cpu_replicas"));
        // Thousands of threads exhaust memory and the thread limit long before any work.
        let job = Job::parse(&format!("threads = 10000\n{MINIMAL}")).unwrap();
        let err = job.validate().unwrap_err();
        assert!(err.starts_with("threads: 10000 is more than"), "{err}");
        let err = Job::parse(&format!("{MINIMAL}\n[output2]\n")).unwrap_err();
        assert!(err.contains("output2"), "{err}");
    }

    #[test]
    fn paths_resolve_against_the_job_folder_and_flags_override() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("docs")).unwrap();
        std::fs::write(dir.path().join("docs/a.parquet"), b"").unwrap();
        std::fs::write(dir.path().join("docs/b.parquet"), b"").unwrap();
        let job_path = dir.path().join("job.toml");
        std::fs::write(&job_path, MINIMAL).unwrap();
        let job = Job::load(&job_path).unwrap();
        assert_eq!(job.output.dir, dir.path().join("out"));
        assert_eq!(
            normalize(Path::new("jobs/../out/./demo")),
            Path::new("out/demo")
        );
        assert_eq!(normalize(Path::new("../data")), Path::new("../data"));
        assert_eq!(normalize(Path::new("a/..")), Path::new("."));
        let files = job.input_files().unwrap();
        assert_eq!(
            files,
            vec![
                dir.path().join("docs/a.parquet"),
                dir.path().join("docs/b.parquet")
            ]
        );

        // One file under several spellings is one input.
        let docs = dir.path().join("docs");
        std::os::unix::fs::symlink(docs.join("a.parquet"), dir.path().join("link.parquet"))
            .unwrap();
        std::fs::hard_link(docs.join("b.parquet"), dir.path().join("hard.parquet")).unwrap();
        let spellings = JobOverrides {
            input: [
                "docs/./a.parquet",
                "docs/a.parquet",
                "docs/../docs/a.parquet",
                "link.parquet",
                "hard.parquet",
                "docs",
            ]
            .iter()
            .map(|p| dir.path().join(p).to_string_lossy().into_owned())
            .collect(),
            ..Default::default()
        };
        let job = Job::load_with(&job_path, &spellings).unwrap();
        assert_eq!(job.input_files().unwrap().len(), 2);

        let overrides = JobOverrides {
            input: vec![dir.path().join("docs").to_string_lossy().into_owned()],
            max_docs: Some(3),
            thresholds: ThresholdFlags {
                relation_threshold: Some(0.5),
                ..Default::default()
            },
            devices: Some("cpu".into()),
            ..Default::default()
        };
        let job = Job::load_with(&job_path, &overrides).unwrap();
        assert_eq!(job.batch.max_docs, 3);
        assert_eq!(job.thresholds.relation, Some(0.5));
        assert_eq!(job.input_files().unwrap().len(), 2);
        let t = job.thresholds.apply(Thresholds::default());
        assert_eq!(t.relation, 0.5);
        assert_eq!(t.mention, Thresholds::default().mention);

        let bad = JobOverrides {
            max_word_pieces: Some(0),
            ..Default::default()
        };
        let err = Job::load_with(&job_path, &bad).unwrap_err().to_string();
        assert!(err.contains("batch.max_word_pieces"), "{err}");

        let missing = JobOverrides {
            input: vec![dir
                .path()
                .join("nothing/*.parquet")
                .to_string_lossy()
                .into()],
            ..Default::default()
        };
        let job = Job::load_with(&job_path, &missing).unwrap();
        assert!(job
            .input_files()
            .unwrap_err()
            .to_string()
            .contains("matches no"));
    }
}
