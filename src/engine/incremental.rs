//! Nightly increments: a job with `[incremental] enabled = true` processes only the documents
//! that are new or changed since its last run (by id and content hash) or whose results came
//! from another model, and reports those that changed or disappeared, so a knowledge base can
//! retract their old facts.
//!
//! ```text
//! OUT/_state/documents.parquet     the state: per document, the content hash, model and run of
//!                                  the facts the knowledge base holds (schemas/state.json)
//! OUT/_state/current.json          the run in progress (absent between runs)
//! OUT/runs/<run>/                  one run: mentions, entities, relations and documents of the
//!                                  documents it processed, with its own _manifest and _SUCCESS
//! OUT/runs/<run>/changes/          new | changed | model_changed | deleted (schemas/changes.json)
//! OUT/runs/<run>/_incremental/     baseline.parquet (the state it compares with) and run.json
//! ```
//!
//! A run first reads every input row's id and content hash (no tokenization) and compares them
//! with the state; units whose documents are all unchanged are recorded as finished without
//! being read again, the pipeline drops unchanged documents before tokenization. The state is
//! replaced (temp, fsync, rename) only after the run's `_SUCCESS`, and `current.json` makes the
//! next invocation resume an unfinished run instead of starting another. A resumed run compares
//! against its saved baseline, so it filters exactly as when it started.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::job::{Compression, OutputFormat};
use super::manifest::{self, DocCounts, Existing, Manifest, Success, UnitRecord};
use super::Prepared;
use crate::corpus::parquet::InputColumns;
use crate::corpus::Unit;
use crate::error::{Error, Result};
use crate::output::{record_batch, PartWriter, Status, TableRow};
use crate::schema;
use crate::store::{self, Location};

pub const STATE_DIR: &str = "_state";
/// `OUT/_state/<STATE_STEM>.parquet`.
const STATE_STEM: &str = "documents";
const CURRENT_FILE: &str = "current.json";
const RUN_DIR: &str = "_incremental";
const BASELINE_STEM: &str = "baseline";
const RUN_FILE: &str = "run.json";

/// Why a document is in the `changes` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Change {
    New,
    Changed,
    ModelChanged,
    Deleted,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::New => "new",
            Change::Changed => "changed",
            Change::ModelChanged => "model_changed",
            Change::Deleted => "deleted",
        }
    }
}

/// One row of the state index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateRow {
    pub doc_id: String,
    pub content_hash: String,
    pub model_id: String,
    pub run_id: String,
}

/// One row of the `changes` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeRow {
    pub doc_id: String,
    pub change: Change,
    pub content_hash: Option<String>,
    pub previous_content_hash: Option<String>,
    pub previous_model_id: Option<String>,
    pub previous_run_id: Option<String>,
}

fn strings<R>(rows: &[R], f: impl Fn(&R) -> Option<&str>) -> ArrayRef {
    Arc::new(rows.iter().map(f).collect::<StringArray>())
}

impl TableRow for StateRow {
    const TABLE: &'static str = schema::STATE;
    fn column(rows: &[Self], name: &str) -> Option<ArrayRef> {
        Some(match name {
            "doc_id" => strings(rows, |r| Some(&r.doc_id)),
            "content_hash" => strings(rows, |r| Some(&r.content_hash)),
            "model_id" => strings(rows, |r| Some(&r.model_id)),
            "run_id" => strings(rows, |r| Some(&r.run_id)),
            _ => return None,
        })
    }
}

impl TableRow for ChangeRow {
    const TABLE: &'static str = schema::CHANGES;
    fn column(rows: &[Self], name: &str) -> Option<ArrayRef> {
        Some(match name {
            "doc_id" => strings(rows, |r| Some(&r.doc_id)),
            "change" => strings(rows, |r| Some(r.change.as_str())),
            "content_hash" => strings(rows, |r| r.content_hash.as_deref()),
            "previous_content_hash" => strings(rows, |r| r.previous_content_hash.as_deref()),
            "previous_model_id" => strings(rows, |r| r.previous_model_id.as_deref()),
            "previous_run_id" => strings(rows, |r| r.previous_run_id.as_deref()),
            _ => return None,
        })
    }
}

/// Documents of a run by what happened to them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeCounts {
    pub new: usize,
    pub changed: usize,
    pub model_changed: usize,
    /// Skipped: same content and model as in the state.
    pub unchanged: usize,
    pub deleted: usize,
}

/// `_SUCCESS` of an incremental run: the manifest's totals and what changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSuccess {
    #[serde(flatten)]
    pub success: Success,
    pub run_id: String,
    pub changes: ChangeCounts,
}

/// `_incremental/run.json`: written once the run's comparison is fixed (its changes table and
/// baseline are in place), so a resume can check it reaches the same comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct RunRecord {
    run_id: String,
    model_id: String,
    started: String,
    changes: ChangeCounts,
    /// blake3 of the change rows: a resume that computes others has other inputs.
    changes_digest: String,
}

/// `_state/current.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Current {
    run_id: String,
}

/// One input row as scanned: its id and content hash when readable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scanned {
    pub id: Option<String>,
    pub hash: Option<String>,
}

/// The input compared with the baseline state.
#[derive(Debug, Default, PartialEq)]
pub struct Comparison {
    /// Sorted by document id.
    pub changes: Vec<ChangeRow>,
    /// Id → content hash of the documents to skip.
    pub unchanged: HashMap<String, String>,
    /// Units (by hash) with nothing to process: every row is an unchanged document.
    pub idle_units: HashSet<String>,
    pub counts: ChangeCounts,
}

/// Compares the scanned rows of each unit (`(unit hash, rows)`, in input order) with the
/// baseline. The first row of an id counts, as in the pipeline, which rejects later copies; a
/// unit holding a row the pipeline must record (a rejection, a change) is not idle.
pub fn compare(
    baseline: &HashMap<String, StateRow>,
    units: &[(String, Vec<Scanned>)],
    model_id: &str,
) -> Comparison {
    let mut out = Comparison::default();
    let mut seen = HashSet::new();
    for (unit, rows) in units {
        let mut idle = true;
        for row in rows {
            let Some(id) = &row.id else {
                idle = false;
                continue;
            };
            if !seen.insert(id.as_str()) {
                idle = false;
                continue;
            }
            let prev = baseline.get(id);
            let change = match (prev, &row.hash) {
                (Some(p), Some(h)) if &p.content_hash == h && p.model_id == model_id => {
                    out.unchanged.insert(id.clone(), h.clone());
                    out.counts.unchanged += 1;
                    continue;
                }
                (Some(p), Some(h)) if &p.content_hash == h => Change::ModelChanged,
                (Some(_), _) => Change::Changed,
                (None, _) => Change::New,
            };
            idle = false;
            out.changes
                .push(change_row(id, change, row.hash.clone(), prev));
        }
        if idle {
            out.idle_units.insert(unit.clone());
        }
    }
    let mut deleted: Vec<&StateRow> = baseline
        .values()
        .filter(|r| !seen.contains(r.doc_id.as_str()))
        .collect();
    deleted.sort_by(|a, b| a.doc_id.cmp(&b.doc_id));
    for r in deleted {
        out.changes
            .push(change_row(&r.doc_id, Change::Deleted, None, Some(r)));
    }
    for c in &out.changes {
        match c.change {
            Change::New => out.counts.new += 1,
            Change::Changed => out.counts.changed += 1,
            Change::ModelChanged => out.counts.model_changed += 1,
            Change::Deleted => out.counts.deleted += 1,
        }
    }
    out.changes.sort_by(|a, b| a.doc_id.cmp(&b.doc_id));
    out
}

fn change_row(
    id: &str,
    change: Change,
    hash: Option<String>,
    prev: Option<&StateRow>,
) -> ChangeRow {
    ChangeRow {
        doc_id: id.to_string(),
        change,
        content_hash: hash,
        previous_content_hash: prev.map(|p| p.content_hash.clone()),
        previous_model_id: prev.map(|p| p.model_id.clone()),
        previous_run_id: prev.map(|p| p.run_id.clone()),
    }
}

fn digest(changes: &[ChangeRow]) -> String {
    let mut h = blake3::Hasher::new();
    for c in changes {
        for field in [
            Some(c.doc_id.as_str()),
            Some(c.change.as_str()),
            c.content_hash.as_deref(),
            c.previous_content_hash.as_deref(),
            c.previous_model_id.as_deref(),
            c.previous_run_id.as_deref(),
        ] {
            h.update(field.unwrap_or("\u{1}").as_bytes());
            h.update(b"\0");
        }
    }
    h.finalize().to_hex()[..16].to_string()
}

/// Ids and content hashes of every row of `units` (read in parallel, one unit per task). Any
/// unreadable unit fails the scan: without all ids, absent documents cannot be told from
/// unread ones, and reporting them deleted would retract facts that still hold.
pub fn scan(
    units: &[Unit],
    columns: &InputColumns,
    threads: usize,
) -> Result<Vec<(String, Vec<Scanned>)>> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .build()
        .map_err(|e| Error::Config(format!("threads: {e}")))?;
    let results: Vec<Result<Vec<Scanned>>> = pool.install(|| {
        units
            .par_iter()
            .map(|u| {
                u.open(columns)?
                    .map(|r| {
                        r.map(|row| Scanned {
                            id: row.id,
                            hash: row.doc.ok().map(|d| d.content_hash()),
                        })
                    })
                    .collect()
            })
            .collect()
    });
    let mut scans = Vec::with_capacity(units.len());
    let mut errors = Vec::new();
    for (u, r) in units.iter().zip(results) {
        match r {
            Ok(rows) => scans.push((u.hash.clone(), rows)),
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return Err(Error::Units(errors));
    }
    Ok(scans)
}

/// Reads a state file (`schemas/state.json`) into a map by document id.
pub fn read_state(path: &Path) -> Result<HashMap<String, StateRow>> {
    let mut out = HashMap::new();
    for batch in read_part(path)? {
        let [ids, hashes, models, runs] = ["doc_id", "content_hash", "model_id", "run_id"]
            .map(|c| string_column(&batch, c, path));
        let (ids, hashes, models, runs) = (ids?, hashes?, models?, runs?);
        for i in 0..batch.num_rows() {
            let row = StateRow {
                doc_id: ids.value(i).to_string(),
                content_hash: hashes.value(i).to_string(),
                model_id: models.value(i).to_string(),
                run_id: runs.value(i).to_string(),
            };
            out.insert(row.doc_id.clone(), row);
        }
    }
    Ok(out)
}

fn string_column(batch: &RecordBatch, name: &str, path: &Path) -> Result<StringArray> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_string_opt::<i32>())
        .cloned()
        .ok_or_else(|| Error::Format {
            path: path.to_path_buf(),
            message: format!("no utf8 column {name:?}"),
        })
}

/// The record batches of one part file (Parquet or Arrow IPC, by extension).
fn read_part(path: &Path) -> Result<Vec<RecordBatch>> {
    let bytes = store::read_bytes(path)?
        .ok_or_else(|| Error::io(path, std::io::ErrorKind::NotFound.into()))?;
    if path.extension().is_some_and(|e| e == "arrow") {
        let reader = arrow::ipc::reader::FileReader::try_new(std::io::Cursor::new(bytes), None)?;
        return Ok(reader.collect::<std::result::Result<_, _>>()?);
    }
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(bytes, 8192)
        .map_err(|e| Error::parquet(path, e))?;
    Ok(reader.collect::<std::result::Result<_, _>>()?)
}

/// Id, content hash and model of every `ok` row of a finished run's `documents` table (the
/// parts its `_SUCCESS` lists).
fn processed(run_dir: &Path, success: &Success) -> Result<Vec<(String, String, String)>> {
    let dir = run_dir.join(schema::DOCUMENTS);
    let mut out = Vec::new();
    for name in &success.parts[schema::DOCUMENTS] {
        let path = dir.join(name);
        for batch in read_part(&path)? {
            let [ids, status, hashes, models] = ["doc_id", "status", "content_hash", "model_id"]
                .map(|c| string_column(&batch, c, &path));
            let (ids, status, hashes, models) = (ids?, status?, hashes?, models?);
            for i in 0..batch.num_rows() {
                if status.value(i) == Status::Ok.as_str() && !ids.is_null(i) && !hashes.is_null(i) {
                    let row = (ids.value(i), hashes.value(i), models.value(i));
                    out.push((row.0.into(), row.1.into(), row.2.into()));
                }
            }
        }
    }
    Ok(out)
}

/// An incremental run in progress: where it writes and what it skips.
pub struct Increment {
    pub run_id: String,
    pub run_dir: PathBuf,
    out: PathBuf,
    baseline: HashMap<String, StateRow>,
    comparison: Comparison,
}

impl Increment {
    /// Starts the job's next incremental run, or resumes the unfinished one (with
    /// [`Existing::Resume`]; otherwise the unfinished run is deleted and a new one started).
    /// Points the job's output at the run's folder, so the rest of `jerex run` writes there.
    pub fn begin(p: &mut Prepared, existing: Existing) -> Result<Increment> {
        if p.shard.count > 1 {
            return Err(Error::Config(
                "incremental.enabled: an incremental run reads the whole input on one machine \
                 (it reports deleted documents); run it without --shard-count"
                    .into(),
            ));
        }
        // First, so that unreadable input leaves no trace of a run.
        let planned: Vec<Unit> = p.plan.units.iter().map(|u| u.unit.clone()).collect();
        let scans = scan(&planned, &p.config.columns, p.config.threads)?;
        let out = p.job.output.dir.clone();
        let (state_dir, runs) = (out.join(STATE_DIR), out.join(schema::RUNS_DIR));
        for dir in [&state_dir, &runs] {
            store::create_dir_all(dir)?;
        }
        let current_path = state_dir.join(CURRENT_FILE);
        let mut current: Option<Current> = store::read_json(&current_path)?;
        if let (Some(c), false) = (&current, existing == Existing::Resume) {
            tracing::warn!(run = %c.run_id, "discarding the unfinished incremental run");
            store::remove_dir(&runs.join(&c.run_id))?;
            store::remove_file(&current_path)?;
            current = None;
        }
        let run_id = match current {
            Some(c) => {
                tracing::info!(run = %c.run_id, "resuming the unfinished incremental run");
                c.run_id
            }
            None => {
                let run_id = new_run_id(&runs)?;
                // Recorded first: from here on a rerun comes back to this run.
                store::write_json(
                    &current_path,
                    &Current {
                        run_id: run_id.clone(),
                    },
                )?;
                run_id
            }
        };
        let run_dir = runs.join(&run_id);
        let record_path = run_dir.join(RUN_DIR).join(RUN_FILE);
        let model_id = &p.model.model_id;
        let record: Option<RunRecord> = store::read_json(&record_path)?;
        let (baseline, comparison) = if let Some(record) = record {
            let saved = run_dir
                .join(RUN_DIR)
                .join(format!("{BASELINE_STEM}.parquet"));
            let baseline = match store::is_file(&saved)? {
                true => read_state(&saved)?,
                false => HashMap::new(),
            };
            let comparison = compare(&baseline, &scans, model_id);
            if record.model_id != *model_id || record.changes_digest != digest(&comparison.changes)
            {
                return Err(Error::OtherJob {
                    path: run_dir,
                    differences: format!(
                        "the input documents or the model changed since incremental run {run_id} \
                         started (run with --overwrite to discard it and start a new run)"
                    ),
                });
            }
            (baseline, comparison)
        } else {
            let output = p.job.output.clone();
            let (format, compression) = (output.format, p.job.writer.compression);
            Self::prepare(
                &out,
                &run_dir,
                &run_id,
                model_id,
                &scans,
                (format, compression, p.job.writer.rows_per_part),
            )?
        };
        p.job.output.dir = run_dir.clone();
        if let Some(o) = &mut p.config.output {
            o.dir = run_dir.clone();
        }
        Ok(Increment {
            run_id,
            run_dir,
            out,
            baseline,
            comparison,
        })
    }

    /// Fixes a new run's comparison: saves the baseline, writes the changes table and, last,
    /// `run.json` (leftovers of a run killed before that are cleared first).
    fn prepare(
        out: &Path,
        run_dir: &Path,
        run_id: &str,
        model_id: &str,
        scans: &[(String, Vec<Scanned>)],
        (format, compression, rows_per_part): (OutputFormat, Compression, usize),
    ) -> Result<(HashMap<String, StateRow>, Comparison)> {
        let inc_dir = run_dir.join(RUN_DIR);
        store::remove_dir(&inc_dir)?;
        store::remove_dir(&run_dir.join(schema::CHANGES))?;
        store::create_dir_all(&inc_dir)?;
        let state = state_path(out);
        let baseline = match store::is_file(&state)? {
            true => {
                let saved = inc_dir.join(format!("{BASELINE_STEM}.parquet"));
                snapshot(&state, &saved)?;
                read_state(&saved)?
            }
            false => HashMap::new(),
        };
        let comparison = compare(&baseline, scans, model_id);
        let w = PartWriter::new(run_dir, &[schema::CHANGES], format, compression)?;
        // A run without changes still has the table (one empty part), like every other table.
        let no_changes: [&[ChangeRow]; 1] = [&[]];
        let chunks: Vec<&[ChangeRow]> = match comparison.changes.is_empty() {
            true => no_changes.to_vec(),
            false => comparison.changes.chunks(rows_per_part).collect(),
        };
        for (i, chunk) in chunks.into_iter().enumerate() {
            w.write(
                schema::CHANGES,
                &format!("part-{i:05}"),
                &record_batch(chunk)?,
            )?;
        }
        let record = RunRecord {
            run_id: run_id.to_string(),
            model_id: model_id.to_string(),
            started: manifest::now(),
            changes: comparison.counts,
            changes_digest: digest(&comparison.changes),
        };
        store::write_json(&inc_dir.join(RUN_FILE), &record)?;
        Ok((baseline, comparison))
    }

    /// Documents to skip: id → content hash.
    pub fn unchanged(&self) -> &HashMap<String, String> {
        &self.comparison.unchanged
    }

    pub fn counts(&self) -> ChangeCounts {
        self.comparison.counts
    }

    /// Records the units of `todo` whose documents are all unchanged as finished (with no
    /// rows), so they are not read again; returns the others.
    pub fn commit_idle(&self, m: &Manifest, todo: Vec<Unit>) -> Result<Vec<Unit>> {
        let (idle, busy): (Vec<Unit>, Vec<Unit>) = todo
            .into_iter()
            .partition(|u| self.comparison.idle_units.contains(&u.hash));
        for u in idle {
            m.commit(&UnitRecord {
                hash: u.hash.clone(),
                source_file: u.path.clone(),
                row_groups: u.row_groups.clone(),
                rows: u.rows.clone(),
                parts: schema::TABLES
                    .iter()
                    .map(|t| (t.to_string(), Vec::new()))
                    .collect(),
                documents: DocCounts::default(),
                finished: manifest::now(),
            })?;
        }
        Ok(busy)
    }

    /// After the run's `_SUCCESS`: adds the change counts to it, then replaces the state (the
    /// baseline without the changed and deleted documents, plus those processed `ok`) and
    /// clears `current.json`. Documents that were rejected or failed stay out of the state, so
    /// the next run tries them again.
    pub fn finish(&self, success: &Success) -> Result<()> {
        let done = RunSuccess {
            success: success.clone(),
            run_id: self.run_id.clone(),
            changes: self.comparison.counts,
        };
        store::write_json(&self.run_dir.join(manifest::SUCCESS_FILE), &done)?;
        let mut state = self.baseline.clone();
        for c in &self.comparison.changes {
            state.remove(&c.doc_id);
        }
        for (doc_id, content_hash, model_id) in processed(&self.run_dir, success)? {
            let row = StateRow {
                doc_id: doc_id.clone(),
                content_hash,
                model_id,
                run_id: self.run_id.clone(),
            };
            state.insert(doc_id, row);
        }
        let rows: Vec<StateRow> = state.into_values().collect();
        PartWriter::new(
            &self.out,
            &[STATE_DIR],
            OutputFormat::Parquet,
            Compression::Zstd,
        )?
        .write(STATE_DIR, STATE_STEM, &record_batch(&rows)?)?;
        let state_dir = self.out.join(STATE_DIR);
        store::remove_file(&state_dir.join(CURRENT_FILE))?;
        store::sync_dir(&state_dir)
    }

    /// One line for the end-of-run summary.
    pub fn summary(&self) -> String {
        let c = self.comparison.counts;
        format!(
            "incremental run {}: {} new, {} changed, {} model_changed, {} unchanged (skipped), \
             {} deleted -> {}",
            self.run_id,
            c.new,
            c.changed,
            c.model_changed,
            c.unchanged,
            c.deleted,
            self.run_dir.join(schema::CHANGES).display()
        )
    }
}

/// `OUT/_state/documents.parquet`.
pub fn state_path(out: &Path) -> PathBuf {
    out.join(STATE_DIR).join(format!("{STATE_STEM}.parquet"))
}

/// A run id from the UTC time (runs sort by start), made unique among `runs`.
fn new_run_id(runs: &Path) -> Result<String> {
    let base = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
    let mut id = base.clone();
    let mut n = 1;
    while store::exists(&runs.join(&id))? {
        n += 1;
        id = format!("{base}-{n}");
    }
    Ok(id)
}

/// Saves the state file `state` as `saved`: a hard link is a free snapshot (the state is
/// replaced by rename, never rewritten in place), else a copy (also within an object store).
fn snapshot(state: &Path, saved: &Path) -> Result<()> {
    if let (Some(from), Some(to)) = (Location::remote(state)?, Location::remote(saved)?) {
        return store::copy(&from, &to);
    }
    if std::fs::hard_link(state, saved).is_err() {
        std::fs::copy(state, saved).map_err(|e| Error::io(saved, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(id: &str, hash: &str, model: &str) -> (String, StateRow) {
        let row = StateRow {
            doc_id: id.into(),
            content_hash: hash.into(),
            model_id: model.into(),
            run_id: "r1".into(),
        };
        (id.into(), row)
    }

    fn row(id: Option<&str>, hash: Option<&str>) -> Scanned {
        Scanned {
            id: id.map(Into::into),
            hash: hash.map(Into::into),
        }
    }

    #[test]
    fn documents_are_classified_against_the_baseline() {
        let baseline: HashMap<String, StateRow> = [
            state("same", "h1", "m"),
            state("edited", "h2", "m"),
            state("other-model", "h3", "old"),
            state("gone", "h4", "m"),
            state("now-unreadable", "h5", "m"),
        ]
        .into_iter()
        .collect();
        let units = vec![
            ("u1".to_string(), vec![row(Some("same"), Some("h1"))]),
            (
                "u2".to_string(),
                vec![
                    row(Some("edited"), Some("h2x")),
                    row(Some("other-model"), Some("h3")),
                    row(Some("fresh"), Some("h6")),
                    row(Some("now-unreadable"), None),
                ],
            ),
            // A later copy of an unchanged id: the pipeline rejects it, so its unit has work.
            ("u3".to_string(), vec![row(Some("same"), Some("h9"))]),
            ("u4".to_string(), vec![row(None, None)]),
            ("u5".to_string(), vec![]),
        ];
        let c = compare(&baseline, &units, "m");
        let got: Vec<(&str, &str)> = c
            .changes
            .iter()
            .map(|r| (r.doc_id.as_str(), r.change.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("edited", "changed"),
                ("fresh", "new"),
                ("gone", "deleted"),
                ("now-unreadable", "changed"),
                ("other-model", "model_changed"),
            ]
        );
        let edited = &c.changes[0];
        assert_eq!(edited.content_hash.as_deref(), Some("h2x"));
        assert_eq!(edited.previous_content_hash.as_deref(), Some("h2"));
        assert_eq!(edited.previous_run_id.as_deref(), Some("r1"));
        assert_eq!(c.changes[1].previous_run_id, None);
        assert_eq!(c.changes[2].content_hash, None);
        assert_eq!(c.changes[4].previous_model_id.as_deref(), Some("old"));
        assert_eq!(c.unchanged, [("same".into(), "h1".into())].into());
        let idle: HashSet<String> = ["u1", "u5"].map(String::from).into();
        assert_eq!(c.idle_units, idle);
        let expected = ChangeCounts {
            new: 1,
            changed: 2,
            model_changed: 1,
            unchanged: 1,
            deleted: 1,
        };
        assert_eq!(c.counts, expected);
        // The digest follows the rows, so a resume with other inputs is caught.
        let mut other = c.changes.clone();
        other[1].content_hash = Some("h7".into());
        assert_ne!(digest(&c.changes), digest(&other));
    }

    #[test]
    fn the_state_round_trips_through_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let rows: Vec<StateRow> = [state("b", "h2", "m"), state("a", "h1", "m")]
            .into_iter()
            .map(|(_, r)| r)
            .collect();
        PartWriter::new(
            dir.path(),
            &[STATE_DIR],
            OutputFormat::Parquet,
            Compression::Zstd,
        )
        .unwrap()
        .write(STATE_DIR, STATE_STEM, &record_batch(&rows).unwrap())
        .unwrap();
        let back = read_state(&state_path(dir.path())).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back["a"], rows[1]);
        assert_eq!(back["b"], rows[0]);
    }

    #[test]
    fn the_job_section_parses_and_rejects_unknown_fields() {
        let base = "[input]\npaths = [\"x\"]\n[output]\ndir = \"o\"\n";
        let job = super::super::Job::parse(base).unwrap();
        assert!(!job.incremental.enabled);
        let job = super::super::Job::parse(&format!("{base}[incremental]\nenabled = true\n"));
        assert!(job.unwrap().incremental.enabled);
        let err = super::super::Job::parse(&format!("{base}[incremental]\nstate = 1\n"));
        assert!(err.unwrap_err().contains("state"));
    }
}
