//! The run manifest: what makes a run's output atomic per unit, resumable after `kill -9`, and
//! shareable by the shards of one job.
//!
//! ```text
//! OUT/_manifest/job.json              fingerprint of everything that decides the rows
//! OUT/_manifest/units/<unit>.json     one per finished unit: its parts and counts
//! OUT/_manifest/shards/<i>-of-<n>.json one per finished shard
//! OUT/_staging/<unit>/<table>/        parts of a unit in progress (never read by users)
//! OUT/_leases/<i>-of-<n>.json         the process writing shard i of n (see [`super::lease`])
//! OUT/_SUCCESS                        written once every planned unit is finished
//! ```
//!
//! A unit's parts are written to its staging folder; when the unit is complete they are renamed
//! into the table folders and only then is its record written (temp → fsync → rename). So a
//! record proves its parts are in place, and a unit without a record has at most leftovers named
//! `part-<unit>-*`, which [`Manifest::discard`] deletes before the unit is redone. Readers skip
//! names starting with `_` or `.`, so `_manifest`, `_staging` and `_SUCCESS` never show up as data.
//! A later run may add fields to the records (they are read leniently); a unit's `documents`
//! parts already hold every document's id, content hash and model id. A finished job has at
//! least one part in every table (an empty one where no unit wrote rows), so readers that list
//! `TABLE/*.parquet` always find the table and its schema.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::job::{Compression, Job, OutputFormat};
use super::plan::{PlannedUnit, Shard};
use crate::corpus::Unit;
use crate::durable::{sync_dir, to_json};
use crate::error::{Error, Result};
use crate::model::ModelInfo;
use crate::model::Thresholds;
use crate::output::PartWriter;
pub use crate::pipeline::{now, DocCounts, PartRecord, UnitRecord, UnitSink};
use crate::schema::TABLES;
use crate::store;

pub const MANIFEST_DIR: &str = "_manifest";
pub const STAGING_DIR: &str = "_staging";
pub const SUCCESS_FILE: &str = "_SUCCESS";
const JOB_FILE: &str = "job.json";
/// The stem of the empty part a finished job leaves in a table no unit wrote rows to.
const EMPTY_PART: &str = "part-empty-00000";
const UNITS_DIR: &str = "units";
const SHARDS_DIR: &str = "shards";

/// What `jerex run` does with an output directory that already holds output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Existing {
    /// Same job: skip finished units. Another job: refuse.
    #[default]
    Resume,
    /// Same job: redo every unit of this run. Another job: refuse.
    Redo,
    /// Delete the tables and the manifest first, whatever job wrote them.
    Overwrite,
}

/// Everything that decides the content of the output rows. Two runs with equal fingerprints
/// write the same rows, so one may finish what the other started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobFingerprint {
    pub jerex_version: String,
    pub model_id: String,
    /// blake3 of the model's configuration (types, heads, windows) as loaded.
    pub model_config: String,
    /// The thresholds in effect (the model's, with the job's overrides).
    pub thresholds: Thresholds,
    pub id_column: String,
    pub text_column: Option<String>,
    pub sentences_column: Option<String>,
    /// Size limits decide which documents are rejected (0 in manifests written before them).
    #[serde(default)]
    pub max_words: usize,
    #[serde(default)]
    pub max_chars: usize,
    pub format: OutputFormat,
    /// The whole plan (every shard's units), so shards and resumed runs agree on the units.
    pub units: Vec<UnitFingerprint>,
}

/// A unit as planned. The file's identity (size, modification time, footer hash) catches an
/// input replaced between a kill and a resume, also by one of the same size. The path is only
/// for messages: shards may mount the inputs elsewhere, and the hash already names the file as
/// every machine does (see [`super::plan`]). Manifests written before the identity had only the
/// size: they compare as another job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UnitFingerprint {
    pub hash: String,
    pub path: PathBuf,
    pub row_groups: Option<Range<usize>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<Range<usize>>,
    pub file_bytes: u64,
    #[serde(default)]
    pub file_modified_ns: u64,
    #[serde(default)]
    pub file_footer: String,
}

impl UnitFingerprint {
    fn key(&self) -> impl PartialEq + '_ {
        (
            &self.hash,
            &self.row_groups,
            &self.rows,
            self.file_bytes,
            self.file_modified_ns,
            &self.file_footer,
        )
    }
}

impl PartialEq for UnitFingerprint {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl JobFingerprint {
    pub fn new(
        job: &Job,
        model_dir: &Path,
        model: &ModelInfo,
        thresholds: Thresholds,
        planned: &[PlannedUnit],
    ) -> Result<Self> {
        let config = serde_json::to_vec(&model.config).map_err(|e| Error::Json {
            path: model_dir.join(crate::model::folder::CONFIG_FILE),
            source: e,
        })?;
        let units = planned
            .iter()
            .map(|PlannedUnit { unit, file, .. }| UnitFingerprint {
                hash: unit.hash.clone(),
                path: unit.path.clone(),
                row_groups: unit.row_groups.clone(),
                rows: unit.rows.clone(),
                file_bytes: file.bytes,
                file_modified_ns: file.modified_ns,
                file_footer: file.footer.clone(),
            })
            .collect();
        let columns = job.input.columns();
        Ok(JobFingerprint {
            jerex_version: env!("CARGO_PKG_VERSION").into(),
            model_id: model.model_id.clone(),
            model_config: blake3::hash(&config).to_hex()[..16].to_string(),
            thresholds,
            id_column: columns.id,
            text_column: columns.text,
            sentences_column: columns.sentences,
            max_words: job.input.max_words,
            max_chars: job.input.max_chars,
            format: job.output.format,
            units,
        })
    }

    /// What differs from `other` (the recorded job), one phrase per field; empty when equal.
    pub fn differences(&self, recorded: &JobFingerprint) -> Vec<String> {
        let (new, old) = (json_fields(self), json_fields(recorded));
        let mut out = Vec::new();
        for (key, value) in &new {
            if key == "units" || old.get(key) == Some(value) {
                continue;
            }
            let was = old.get(key).map_or("nothing".into(), |v| v.to_string());
            out.push(format!("{key} is {value} here but {was} in the output"));
        }
        if self.units != recorded.units {
            let describe = |units: &[UnitFingerprint], others: &[UnitFingerprint]| -> Vec<String> {
                units
                    .iter()
                    .filter(|u| !others.contains(u))
                    .map(|u| u.path.display().to_string())
                    .collect()
            };
            let added = describe(&self.units, &recorded.units);
            let gone = describe(&recorded.units, &self.units);
            out.push(format!(
                "the input units differ (new or changed here: [{}]; only in the output: [{}])",
                added.join(", "),
                gone.join(", ")
            ));
        }
        out
    }
}

fn json_fields(f: &JobFingerprint) -> serde_json::Map<String, serde_json::Value> {
    match serde_json::to_value(f) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => unreachable!("a fingerprint serializes to a JSON object"),
    }
}

/// `_SUCCESS`: the totals of a finished job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Success {
    pub units: usize,
    pub documents: DocCounts,
    /// Rows per table.
    pub rows: BTreeMap<String, usize>,
    /// The part files of each table (names in `OUT/TABLE/`): exactly the finished job's. A
    /// reader that lists the table instead may also see a part that a writer whose lease was
    /// taken over uploaded after this was written (see docs/deploy.md).
    pub parts: BTreeMap<String, Vec<String>>,
    pub model_id: String,
    pub jerex_version: String,
    pub finished: String,
}

/// `_manifest/shards/<i>-of-<n>.json`: a shard that did all of its units.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardRecord {
    pub index: usize,
    pub count: usize,
    pub units: usize,
    pub finished: String,
}

/// The manifest of one output directory: the commit protocol of its units. Two back ends share
/// it, chosen by where the output lives:
///
/// - a file system: a unit's parts are written to `_staging/<unit>/` and renamed into the
///   tables when the unit is complete;
/// - an object store (no rename): a unit's parts are written straight into the tables under
///   names unique to the unit and this process's attempt (`part-<unit>-<attempt>-NNNNN`).
///
/// Either way the unit's record is written last and is the commit; a unit without a record
/// leaves at most parts named `part-<unit>-*`, which a resume deletes before redoing it, and
/// [`Manifest::finish`] deletes whatever part no record names before it writes `_SUCCESS`.
#[derive(Debug, Clone)]
pub struct Manifest {
    out: PathBuf,
    /// Set on an object store: parts are written in place under names carrying it.
    attempt: Option<String>,
}

impl Manifest {
    fn new(out: &Path) -> Manifest {
        let attempt = crate::store::is_url(out).then(|| {
            let seed = format!("{}:{}:{}", std::process::id(), now(), rand::random::<u64>());
            blake3::hash(seed.as_bytes()).to_hex()[..8].to_string()
        });
        Manifest {
            out: out.to_path_buf(),
            attempt,
        }
    }

    /// Creates the table and manifest folders below `out` (no fingerprint check: the pipeline
    /// uses this; `jerex run` goes through [`Manifest::open`]).
    pub fn create(out: &Path) -> Result<Manifest> {
        let m = Manifest::new(out);
        let dirs = TABLES
            .iter()
            .map(|t| out.join(t))
            .chain([m.dir().join(UNITS_DIR), out.join(STAGING_DIR)]);
        for dir in dirs {
            store::create_dir_all(&dir)?;
        }
        Ok(m)
    }

    /// Opens `out` for the job with `fingerprint`: records the fingerprint in a fresh directory,
    /// checks it against the recorded one otherwise (see [`Existing`]).
    pub fn open(out: &Path, fingerprint: &JobFingerprint, existing: Existing) -> Result<Manifest> {
        let m = Manifest::new(out);
        if existing == Existing::Overwrite {
            m.clear()?;
        }
        let job_file = m.dir().join(JOB_FILE);
        if !store::is_file(&job_file)? {
            if let Some(part) = m.any_part()? {
                return Err(Error::OtherJob {
                    path: out.to_path_buf(),
                    differences: format!(
                        "it holds tables but no {MANIFEST_DIR}/{JOB_FILE} (e.g. {})",
                        part.display()
                    ),
                });
            }
        }
        let m = Manifest::create(out)?;
        // Shards may start together: the first to create the file wins, the others compare.
        if !store::create_new(&job_file, to_json(fingerprint, &job_file)?)? {
            let recorded: JobFingerprint = store::read_json(&job_file)?
                .ok_or_else(|| Error::io(&job_file, std::io::ErrorKind::NotFound.into()))?;
            let diff = fingerprint.differences(&recorded);
            if !diff.is_empty() {
                return Err(Error::OtherJob {
                    path: out.to_path_buf(),
                    differences: diff.join("; "),
                });
            }
        }
        Ok(m)
    }

    pub fn out(&self) -> &Path {
        &self.out
    }

    fn dir(&self) -> PathBuf {
        self.out.join(MANIFEST_DIR)
    }

    fn record_path(&self, hash: &str) -> PathBuf {
        self.dir().join(UNITS_DIR).join(format!("{hash}.json"))
    }

    fn staging(&self, hash: &str) -> PathBuf {
        self.out.join(STAGING_DIR).join(hash)
    }

    /// File names in each table.
    fn table_files(&self) -> Result<HashMap<&'static str, HashSet<String>>> {
        TABLES
            .iter()
            .map(|&t| {
                Ok((
                    t,
                    store::list_files(&self.out.join(t))?.into_iter().collect(),
                ))
            })
            .collect()
    }

    /// Finished units by hash: records whose parts are all in place (a record whose parts were
    /// deleted by hand counts as unfinished, so its unit is redone).
    pub fn finished(&self) -> Result<HashMap<String, UnitRecord>> {
        let dir = self.dir().join(UNITS_DIR);
        let mut out = HashMap::new();
        // Records first: a record seen had its parts in place before it was written, so the
        // tables listed after it show them, also while other shards commit.
        let names = store::list_files(&dir)?;
        let mut records = Vec::new();
        for name in names {
            if name.starts_with('.') || !name.ends_with(".json") {
                continue;
            }
            if let Some(record) = store::read_json::<UnitRecord>(&dir.join(&name))? {
                records.push(record);
            }
        }
        let tables = self.table_files()?;
        for record in records {
            let missing = record.parts.iter().find_map(|(table, parts)| {
                let present = tables.get(table.as_str());
                parts
                    .iter()
                    .find(|p| present.is_none_or(|files| !files.contains(&p.file)))
                    .map(|p| self.out.join(table).join(&p.file))
            });
            match missing {
                Some(p) => tracing::warn!(
                    unit = %record.source_file.display(),
                    "{} is missing: the unit will be redone",
                    p.display()
                ),
                None => {
                    out.insert(record.hash.clone(), record);
                }
            }
        }
        Ok(out)
    }

    /// The units of `mine` still to do (with [`Existing::Resume`], those without a finished
    /// record; otherwise all), cleared of every trace of an earlier attempt.
    pub fn todo(&self, mine: &[Unit], existing: Existing) -> Result<Vec<Unit>> {
        let finished = match existing {
            Existing::Resume => self.finished()?,
            Existing::Redo | Existing::Overwrite => HashMap::new(),
        };
        let todo: Vec<Unit> = mine
            .iter()
            .filter(|u| !finished.contains_key(&u.hash))
            .cloned()
            .collect();
        self.discard(&todo)?;
        // A kill between a record and the removal of its staging folder leaves the folder.
        if self.attempt.is_none() {
            for u in mine {
                store::remove_dir(&self.staging(&u.hash))?;
            }
        }
        Ok(todo)
    }

    /// Removes every trace of `units` (record, parts in the tables, staging), so they can be
    /// done again from scratch without duplicating a row.
    pub fn discard(&self, units: &[Unit]) -> Result<()> {
        let records = self.dir().join(UNITS_DIR);
        let recorded: HashSet<String> = store::list_files(&records)?.into_iter().collect();
        for u in units {
            if recorded.contains(&format!("{}.json", u.hash)) {
                store::remove_file(&self.record_path(&u.hash))?;
            }
            if self.attempt.is_none() {
                store::remove_dir(&self.staging(&u.hash))?;
            }
        }
        store::sync_dir(&records)?;
        let hashes: HashSet<&str> = units.iter().map(|u| u.hash.as_str()).collect();
        for t in TABLES {
            let dir = self.out.join(t);
            self.remove_parts(&dir, |name| {
                unit_of(name).is_some_and(|h| hashes.contains(h))
            })?;
            store::sync_dir(&dir)?;
        }
        Ok(())
    }

    /// A writer of `unit`'s part files: into a fresh staging folder, or (object store) into
    /// the tables under names of this attempt.
    pub fn stage(
        &self,
        unit: &Unit,
        format: OutputFormat,
        compression: Compression,
    ) -> Result<PartWriter> {
        // Staging folders are per unit: a run whose lease was taken over must not touch them.
        super::lease::verify(&self.out)?;
        if let Some(attempt) = &self.attempt {
            return Ok(
                PartWriter::new(&self.out, &TABLES, format, compression)?.with_attempt(attempt)
            );
        }
        let dir = self.staging(&unit.hash);
        store::remove_dir(&dir)?;
        PartWriter::new(&dir, &TABLES, format, compression)
    }

    /// Commits a complete unit: moves its staged parts into the tables (file system) and
    /// records it. Its old record goes first and the new one comes last, so at every instant
    /// either the record matches the tables or there is no record (and a resume redoes the
    /// unit).
    pub fn commit(&self, record: &UnitRecord) -> Result<()> {
        // A run whose lease was taken over leaves the tables to the new holder, and on an
        // object store takes back the parts it wrote there.
        if let Err(lost) = super::lease::verify(&self.out) {
            if self.attempt.is_some() {
                self.remove_written(record.parts.iter().map(|(t, p)| (t.as_str(), p)))?;
            }
            return Err(lost);
        }
        let path = self.record_path(&record.hash);
        if store::remove_file(&path)? {
            store::sync_dir(&self.dir().join(UNITS_DIR))?;
        }
        store::remove_file(&self.out.join(SUCCESS_FILE))?;
        if self.attempt.is_none() {
            self.move_staged(record)?;
        }
        store::write_json(&path, record)?;
        match self.attempt {
            None => store::remove_dir(&self.staging(&record.hash)),
            Some(_) => Ok(()),
        }
    }

    /// Renames a unit's staged parts into the tables, after deleting the parts of an earlier
    /// run of the unit (possibly more of them than this time).
    fn move_staged(&self, record: &UnitRecord) -> Result<()> {
        let staging = self.staging(&record.hash);
        for t in TABLES {
            let dir = self.out.join(t);
            self.remove_parts(&dir, |name| unit_of(name) == Some(record.hash.as_str()))?;
            for part in record.parts.get(t).into_iter().flatten() {
                let (from, to) = (staging.join(t).join(&part.file), dir.join(&part.file));
                std::fs::rename(&from, &to).map_err(|e| Error::io(&from, e))?;
            }
            sync_dir(&dir)?;
        }
        Ok(())
    }

    /// Drops a unit that could not be completed: its staged parts never reach the tables; on
    /// an object store the parts it wrote (`written`, per table in [`TABLES`] order) are
    /// deleted.
    pub fn abandon(&self, unit: &Unit, written: &[Vec<PartRecord>; 4]) -> Result<()> {
        if self.attempt.is_none() {
            return store::remove_dir(&self.staging(&unit.hash));
        }
        self.remove_written(TABLES.iter().copied().zip(written))
    }

    /// Deletes parts this attempt wrote into the tables (object store), by table.
    fn remove_written<'a>(
        &self,
        written: impl IntoIterator<Item = (&'a str, &'a Vec<PartRecord>)>,
    ) -> Result<()> {
        for (t, parts) in written {
            for p in parts {
                store::remove_file(&self.out.join(t).join(&p.file))?;
            }
        }
        Ok(())
    }

    /// After this process did its units (`mine`): records its shard of a sharded job when all of
    /// them are finished, and writes `_SUCCESS` when every planned unit is (whichever shard gets
    /// here last), after an empty part (with `parts`) in each table no unit wrote rows to and
    /// after deleting every part no record names. Returns the totals when the job is complete.
    pub fn finish(
        &self,
        planned: &[Unit],
        mine: &[Unit],
        shard: Shard,
        model_id: &str,
        parts: &PartWriter,
    ) -> Result<Option<Success>> {
        let finished = self.finished()?;
        let done = |units: &[Unit]| units.iter().all(|u| finished.contains_key(&u.hash));
        if shard.count > 1 && done(mine) {
            let Shard { index, count } = shard;
            let dir = self.dir().join(SHARDS_DIR);
            store::create_dir_all(&dir)?;
            let record = ShardRecord {
                index,
                count,
                units: mine.len(),
                finished: now(),
            };
            store::write_json(&dir.join(format!("{index}-of-{count}.json")), &record)?;
        }
        if !done(planned) {
            return Ok(None);
        }
        let mut success = Success {
            units: planned.len(),
            documents: DocCounts::default(),
            rows: TABLES.iter().map(|t| (t.to_string(), 0)).collect(),
            parts: TABLES.iter().map(|t| (t.to_string(), Vec::new())).collect(),
            model_id: model_id.into(),
            jerex_version: env!("CARGO_PKG_VERSION").into(),
            finished: now(),
        };
        for unit in planned {
            let record = &finished[&unit.hash];
            success.documents.add(&record.documents);
            for t in TABLES {
                *success.rows.get_mut(t).expect("every table") += record.rows(t);
                let files = record.parts.get(t).into_iter().flatten();
                (success.parts.get_mut(t).expect("every table"))
                    .extend(files.map(|p| p.file.clone()));
            }
        }
        for t in TABLES {
            let files = success.parts.get_mut(t).expect("every table");
            let empty = parts.part_path(t, EMPTY_PART);
            if !files.is_empty() {
                // Left by an earlier run of the job in which no unit wrote rows here.
                store::remove_file(&empty)?;
            } else {
                let schema = crate::schema::table(t).arrow_schema();
                parts.write(t, EMPTY_PART, &arrow::array::RecordBatch::new_empty(schema))?;
                files.push(file_name(&empty));
            }
            files.sort();
        }
        if self.attempt.is_some() {
            self.sweep(&success.parts)?;
        }
        store::write_json(&self.out.join(SUCCESS_FILE), &success)?;
        Ok(Some(success))
    }

    /// Deletes every part in the tables that `_SUCCESS` does not list (parts of attempts that
    /// never committed, e.g. of a process killed mid-unit whose unit another shard or a later
    /// run redid), so a reader of the finished job sees exactly its rows.
    fn sweep(&self, parts: &BTreeMap<String, Vec<String>>) -> Result<()> {
        for t in TABLES {
            let keep: HashSet<&str> = parts[t].iter().map(String::as_str).collect();
            self.remove_parts(&self.out.join(t), |name| !keep.contains(name))?;
        }
        Ok(())
    }

    /// Deletes the tables, the manifest, staging and `_SUCCESS` (nothing else in `out`).
    fn clear(&self) -> Result<()> {
        for t in TABLES {
            store::remove_dir(&self.out.join(t))?;
        }
        store::remove_dir(&self.dir())?;
        store::remove_dir(&self.out.join(STAGING_DIR))?;
        store::remove_file(&self.out.join(SUCCESS_FILE))?;
        Ok(())
    }

    /// Some part file in the table folders, if any.
    fn any_part(&self) -> Result<Option<PathBuf>> {
        for t in TABLES {
            let dir = self.out.join(t);
            if let Some(name) = store::list_files(&dir)?
                .into_iter()
                .find(|n| n.starts_with("part-"))
            {
                return Ok(Some(dir.join(name)));
            }
        }
        Ok(None)
    }

    /// Deletes the part files (and hidden temporary parts) in `dir` whose names `matches`.
    fn remove_parts(&self, dir: &Path, matches: impl Fn(&str) -> bool) -> Result<()> {
        for name in store::list_files(dir)? {
            let part = name.strip_prefix('.').unwrap_or(&name).starts_with("part-");
            if part && matches(&name) {
                store::remove_file(&dir.join(&name))?;
            }
        }
        Ok(())
    }
}

/// The unit a part file (or the hidden temporary file of one) belongs to: the hash after
/// `part-` (16 hex digits; `part-empty-*` belongs to no unit).
fn unit_of(name: &str) -> Option<&str> {
    let name = name.strip_prefix('.').unwrap_or(name);
    let rest = name.strip_prefix("part-")?;
    let (hash, _) = rest.split_once('-')?;
    (hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit())).then_some(hash)
}

impl UnitSink for Manifest {
    fn stage(
        &self,
        unit: &Unit,
        format: OutputFormat,
        compression: Compression,
    ) -> Result<PartWriter> {
        Manifest::stage(self, unit, format, compression)
    }

    fn commit(&self, record: &UnitRecord) -> Result<()> {
        Manifest::commit(self, record)
    }

    fn abandon(&self, unit: &Unit, written: &[Vec<PartRecord>; 4]) -> Result<()> {
        Manifest::abandon(self, unit, written)
    }
}

/// Opens `out` for a pipeline run's units (what
/// [`OutputSettings::open`](crate::pipeline::OutputSettings::open) is set to).
pub fn open_sink(out: &Path) -> Result<Box<dyn UnitSink>> {
    Ok(Box::new(Manifest::create(out)?))
}

/// Whether `name` is a part of unit `hash`, or the hidden temporary file of one.
#[cfg(test)]
fn part_of(name: &str, hash: &str) -> bool {
    unit_of(name) == Some(hash)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::durable::read_json;

    #[test]
    fn parts_are_matched_by_their_exact_unit() {
        let abc = "0123456789abcdef";
        assert!(part_of(&format!("part-{abc}-00001.parquet"), abc));
        assert!(part_of(&format!(".part-{abc}-00001.parquet.77.tmp"), abc));
        // An object store's part names carry the attempt after the unit.
        assert!(part_of(&format!("part-{abc}-a1b2c3d4-00001.parquet"), abc));
        assert!(!part_of(&format!("part-{abc}0-00001.parquet"), abc));
        assert!(!part_of(&format!("xpart-{abc}-00001.parquet"), abc));
        assert_eq!(unit_of("part-empty-00000.parquet"), None);
    }

    fn fingerprint(dir: &Path) -> JobFingerprint {
        let input = dir.join("a.parquet");
        std::fs::write(&input, b"1234").unwrap();
        JobFingerprint {
            jerex_version: "1".into(),
            model_id: "m@1".into(),
            model_config: "c".into(),
            thresholds: Thresholds::default(),
            id_column: "id".into(),
            text_column: Some("text".into()),
            sentences_column: None,
            max_words: 100,
            max_chars: 1000,
            format: OutputFormat::Parquet,
            units: vec![UnitFingerprint {
                hash: "h".into(),
                path: input,
                row_groups: None,
                rows: None,
                file_bytes: 4,
                file_modified_ns: 7,
                file_footer: "f".into(),
            }],
        }
    }

    #[test]
    fn another_jobs_output_is_refused_unless_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let f = fingerprint(dir.path());
        Manifest::open(&out, &f, Existing::Resume).unwrap();
        // The same job opens again.
        Manifest::open(&out, &f, Existing::Resume).unwrap();
        std::fs::write(out.join("relations/part-h-00000.parquet"), b"x").unwrap();

        // Other size limits reject other documents: another job.
        let mut limits = f.clone();
        limits.max_words = 99;
        let err = Manifest::open(&out, &limits, Existing::Resume).unwrap_err();
        assert!(err.to_string().contains("max_words"), "{err}");

        // An input rewritten at the same size (its footer differs): another job.
        let mut rewritten = f.clone();
        rewritten.units[0].file_footer = "g".into();
        let err = Manifest::open(&out, &rewritten, Existing::Resume).unwrap_err();
        assert!(err.to_string().contains("input units differ"), "{err}");

        let mut other = f.clone();
        other.model_id = "m@2".into();
        other.units[0].file_bytes = 5;
        let err = Manifest::open(&out, &other, Existing::Redo)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("model_id is \"m@2\" here but \"m@1\""),
            "{err}"
        );
        assert!(err.contains("input units differ"), "{err}");
        assert!(err.contains("--overwrite"), "{err}");

        Manifest::open(&out, &other, Existing::Overwrite).unwrap();
        assert!(!out.join("relations/part-h-00000.parquet").exists());
        let recorded: JobFingerprint = read_json(&out.join("_manifest/job.json")).unwrap();
        assert_eq!(recorded, other);

        // Tables without a manifest (an older jerex) are not silently mixed with.
        let bare = dir.path().join("bare");
        std::fs::create_dir_all(bare.join("mentions")).unwrap();
        std::fs::write(bare.join("mentions/part-x-00000.parquet"), b"x").unwrap();
        let err = Manifest::open(&bare, &f, Existing::Resume).unwrap_err();
        assert!(err.to_string().contains("no _manifest/job.json"), "{err}");
    }
}
