//! Bad input in corpus runs: the checks that turn a readable row into a rejection (duplicate
//! ids, documents over the size limits), strict mode's early stop, and the output directory
//! checks made before any work starts.
//!
//! The reader ([`crate::corpus::parquet`]) already rejects rows it cannot turn into a document
//! (null or empty id or text, bytes that are not UTF-8); [`Screen`] adds what needs the whole
//! job's view ([`FirstSeen`]) or the job's limits.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use rayon::prelude::*;

use crate::corpus::parquet::{InputColumns, RowResult};
use crate::corpus::Document;
use crate::corpus::Unit;
use crate::error::{Error, ErrorClass, Result};
use crate::paths::normalize;

/// Default `input.max_words`: far above news or Wikipedia articles (DocRED documents have a
/// few hundred words), below book length, where the pairwise heads' cost makes one document
/// hold up its batch for minutes.
pub const DEFAULT_MAX_WORDS: usize = 50_000;

/// Default `input.max_chars`: checked before segmentation cost is paid twice over, about ten
/// characters per word at the word limit.
pub const DEFAULT_MAX_CHARS: usize = 500_000;

/// What a run does with input that is not fit to process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputChecks {
    /// Documents with more words (after segmentation) are rejected.
    pub max_words: usize,
    /// Documents with more characters (of the text, or of the words when pre-tokenized) are
    /// rejected.
    pub max_chars: usize,
    /// Fail the run at the first rejected document or unreadable input unit.
    pub strict: bool,
}

impl Default for InputChecks {
    fn default() -> Self {
        InputChecks {
            max_words: DEFAULT_MAX_WORDS,
            max_chars: DEFAULT_MAX_CHARS,
            strict: false,
        }
    }
}

impl InputChecks {
    /// Why `doc` is too large to process, if it is.
    fn size_problem(&self, doc: &Document) -> Option<String> {
        let chars = match &doc.text {
            Some(text) => text.chars().count(),
            None => doc.words().map(|w| w.text.chars().count()).sum(),
        };
        if chars > self.max_chars {
            return Some(format!(
                "too long: {chars} characters (input.max_chars = {})",
                self.max_chars
            ));
        }
        let words = doc.word_count();
        (words > self.max_words).then(|| {
            format!(
                "too long: {words} words (input.max_words = {})",
                self.max_words
            )
        })
    }
}

/// Where each id that occurs more than once among a job's units first occurs, in plan order
/// (units in order, rows ascending). It is read from the id column of every unit before any
/// work, so every shard and every resumed run keeps the same copy of an id and rejects the
/// others, whichever units it processes itself.
#[derive(Debug, Default)]
pub struct FirstSeen {
    /// Index of each unit (by hash) in the scanned units.
    units: HashMap<String, usize>,
    paths: Vec<PathBuf>,
    /// The first (unit, row) of each repeated id, keyed by 128 bits of the id's blake3 hash
    /// rather than the id itself (16 bytes instead of a string and its allocation, which adds up
    /// on archives of millions of rows; two ids collide with probability about n²/2¹²⁹).
    first: HashMap<u128, (usize, usize)>,
}

/// Units whose ids are read in parallel at once: bounds the ids held before they are merged.
const SCAN_CHUNK: usize = 64;

impl FirstSeen {
    /// Reads the ids of `units` (in parallel on `threads` threads). A unit that cannot be read
    /// to the end contributes the ids before the error, as the run itself reads them (the run
    /// reports the error); an I/O error fails the scan, since another attempt may read more.
    pub fn scan(units: &[Unit], columns: &InputColumns, threads: usize) -> Result<FirstSeen> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .build()
            .map_err(|e| Error::Config(format!("threads: {e}")))?;
        let mut seen = FirstSeen {
            units: units
                .iter()
                .enumerate()
                .map(|(i, u)| (u.hash.clone(), i))
                .collect(),
            paths: units.iter().map(|u| u.path.clone()).collect(),
            first: HashMap::new(),
        };
        let mut repeated = HashSet::new();
        for (c, chunk) in units.chunks(SCAN_CHUNK).enumerate() {
            let ids: Vec<Result<Vec<(usize, u128)>>> =
                pool.install(|| chunk.par_iter().map(|u| unit_ids(u, columns)).collect());
            for (i, ids) in ids.into_iter().enumerate() {
                let unit = c * SCAN_CHUNK + i;
                for (row, key) in ids? {
                    match seen.first.entry(key) {
                        Entry::Occupied(_) => {
                            repeated.insert(key);
                        }
                        Entry::Vacant(v) => {
                            v.insert((unit, row));
                        }
                    }
                }
            }
        }
        seen.first.retain(|k, _| repeated.contains(k));
        Ok(seen)
    }

    /// Where `id` first occurs, unless that is row `row` of the unit `hash` itself (or the unit
    /// was not scanned).
    fn earlier(&self, hash: &str, row: usize, id: &str) -> Option<(&Path, usize)> {
        let &(unit, first_row) = self.first.get(&id_key(id))?;
        let here = *self.units.get(hash)?;
        ((unit, first_row) != (here, row)).then(|| (self.paths[unit].as_path(), first_row))
    }
}

/// Row numbers and id keys of a unit's readable ids.
fn unit_ids(unit: &Unit, columns: &InputColumns) -> Result<Vec<(usize, u128)>> {
    let mut out = Vec::new();
    let reader = match unit.open_ids(columns) {
        Ok(r) => r,
        Err(e) if e.class() == ErrorClass::Retryable => return Err(e),
        Err(_) => return Ok(out),
    };
    for r in reader {
        match r {
            Ok((row, Some(id))) => out.push((row, id_key(&id))),
            Ok((_, None)) => {}
            Err(e) if e.class() == ErrorClass::Retryable => return Err(e),
            Err(_) => break,
        }
    }
    Ok(out)
}

/// Screens a run's rows.
pub(crate) struct Screen<'a> {
    checks: InputChecks,
    first: &'a FirstSeen,
    /// The run's units' hashes, by the index rows come with.
    units: Vec<String>,
}

impl<'a> Screen<'a> {
    pub(crate) fn new(checks: InputChecks, first: &'a FirstSeen, units: &[Unit]) -> Screen<'a> {
        Screen {
            checks,
            first,
            units: units.iter().map(|u| u.hash.clone()).collect(),
        }
    }

    /// The row, its document replaced by a rejection when its id first occurs elsewhere in the
    /// job or it is over the size limits. Every readable id counts, also of rejected rows, so an
    /// id names at most one document and a later copy says where the first is.
    pub(crate) fn check(&self, unit: usize, mut r: RowResult) -> RowResult {
        if let Some(id) = &r.id {
            if let Some((path, row)) = self.first.earlier(&self.units[unit], r.row, id) {
                r.doc = Err(format!(
                    "duplicate id {id:?}: first seen in {} row {row}",
                    path.display()
                ));
                return r;
            }
        }
        if let Some(problem) = r
            .doc
            .as_ref()
            .ok()
            .and_then(|d| self.checks.size_problem(d))
        {
            r.doc = Err(problem);
        }
        r
    }
}

fn id_key(id: &str) -> u128 {
    let hash = blake3::hash(id.as_bytes());
    let (first, _) = hash.as_bytes().split_first_chunk::<16>().expect("32 bytes");
    u128::from_le_bytes(*first)
}

/// The first error that stops a run early (a rejection in strict mode, a failed write). Stages
/// poll [`Abort::raised`] to stop feeding work instead of draining the whole corpus.
#[derive(Default)]
pub(crate) struct Abort {
    raised: AtomicBool,
    error: Mutex<Option<Error>>,
}

impl Abort {
    /// Records `e` unless an earlier error was raised (the first one is the cause).
    pub(crate) fn raise(&self, e: Error) {
        self.error.lock().unwrap().get_or_insert(e);
        self.raised.store(true, Ordering::SeqCst);
    }

    pub(crate) fn raised(&self) -> bool {
        self.raised.load(Ordering::SeqCst)
    }

    pub(crate) fn into_error(self) -> Option<Error> {
        self.error.into_inner().unwrap()
    }
}

/// Checks before any work starts that `dir` can take the output: it is created when missing,
/// must be listable and must accept a new file (a hidden probe, removed again). Errors keep
/// their I/O kind, so a read-only or misplaced directory is a configuration error and a full
/// disk a retryable one.
pub fn check_output_dir(dir: &Path) -> Result<()> {
    if crate::store::is_url(dir) {
        return check_output_prefix(dir);
    }
    let fail = |e: std::io::Error| {
        let message = format!("output directory is not usable: {e}");
        Error::io(dir, std::io::Error::new(e.kind(), message))
    };
    std::fs::create_dir_all(dir).map_err(fail)?;
    std::fs::read_dir(dir).map_err(fail)?;
    tempfile::Builder::new()
        .prefix(".jerex-probe")
        .tempfile_in(dir)
        .map_err(fail)?;
    Ok(())
}

/// An object store output: the bucket must exist, be listable and take a new object (a
/// hidden probe, deleted again) with the credentials in effect.
fn check_output_prefix(dir: &Path) -> Result<()> {
    crate::store::probe(dir)?;
    let probe = dir.join(format!(".jerex-probe-{}", std::process::id()));
    let Some(r) = crate::store::Location::remote(&probe)? else {
        unreachable!("below an object store URL")
    };
    crate::store::put(&r, Vec::new())?;
    crate::store::delete(&r)?;
    Ok(())
}

/// Whether the object store input `spec` (an object, a prefix or a glob) would read the
/// output `out` (another object store URL) back; `tables` are part files relative to it.
fn reads_back_remote(spec: &str, out: &Path, tables: &[String]) -> bool {
    let out = out.to_string_lossy();
    let out = out.trim_end_matches('/');
    if spec.contains(['*', '?', '[']) {
        let options = glob::MatchOptions {
            require_literal_separator: true,
            ..Default::default()
        };
        return glob::Pattern::new(spec).is_ok_and(|p| {
            tables
                .iter()
                .any(|t| p.matches_with(&format!("{out}/{t}"), options))
        });
    }
    let spec = spec.trim_end_matches('/');
    out == spec
        || out.strip_prefix(spec).is_some_and(|rest| {
            rest.starts_with('/')
                && !rest
                    .split('/')
                    .any(|s| s.starts_with('.') || s.starts_with('_'))
        })
}

/// Refuses an output directory that the job's inputs would read back as input next time:
/// inside an input directory (every visible `*.parquet` below it is input), or where an input
/// glob matches its tables' part files.
pub fn check_output_outside_inputs(out: &Path, inputs: &[String]) -> Result<()> {
    let absolute =
        |p: &Path| std::path::absolute(p).map_or_else(|_| p.to_path_buf(), |a| normalize(&a));
    let out_abs = absolute(out);
    let out_real = out.canonicalize().ok();
    // Directory walks skip names starting with `.` or `_` (see `Job::input_files`).
    let visible_below = |dir: &Path, path: &Path| {
        path.strip_prefix(dir).is_ok_and(|rel| {
            rel.components().all(|c| {
                let name = c.as_os_str().to_string_lossy();
                !name.starts_with('.') && !name.starts_with('_')
            })
        })
    };
    let literal_separators = glob::MatchOptions {
        require_literal_separator: true,
        ..Default::default()
    };
    let tables = [
        out_abs
            .join(crate::schema::DOCUMENTS)
            .join("part-0.parquet"),
        out_abs
            .join(crate::schema::RUNS_DIR)
            .join("run")
            .join(crate::schema::DOCUMENTS)
            .join("part-0.parquet"),
    ];
    let relative_tables = [
        format!("{}/part-0.parquet", crate::schema::DOCUMENTS),
        format!(
            "{}/run/{}/part-0.parquet",
            crate::schema::RUNS_DIR,
            crate::schema::DOCUMENTS
        ),
    ];
    for spec in inputs {
        let path = Path::new(spec);
        let (remote_in, remote_out) = (crate::store::is_url(path), crate::store::is_url(out));
        let read_back = if remote_in || remote_out {
            remote_in && remote_out && reads_back_remote(spec, out, &relative_tables)
        } else if path.is_dir() {
            let real = path.canonicalize().ok();
            visible_below(&absolute(path), &out_abs)
                || matches!((&real, &out_real), (Some(d), Some(o)) if visible_below(d, o))
        } else if path.is_file() {
            false
        } else {
            // Not a valid pattern: listing the inputs reports it.
            glob::Pattern::new(&absolute(path).to_string_lossy()).is_ok_and(|pattern| {
                tables
                    .iter()
                    .any(|t| pattern.matches_path_with(t, literal_separators))
            })
        };
        if read_back {
            return Err(Error::Config(format!(
                "output.dir: {} is where the input '{spec}' would read its tables back as input \
                 next time; choose an output directory outside the inputs",
                out.display()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corpus::text;

    fn row(row: usize, id: Option<&str>, text: &str) -> RowResult {
        RowResult {
            row,
            id: id.map(str::to_string),
            doc: match id {
                Some(id) => Ok(text::segment(id, text)),
                None => Err("null id".into()),
            },
        }
    }

    /// Writes documents `(id, text)` as an input file (a document without text has no content,
    /// which the reader rejects).
    fn input(path: &Path, docs: &[(&str, Option<&str>)]) -> Unit {
        let docs: Vec<Document> = docs
            .iter()
            .map(|(id, text)| Document {
                id: id.to_string(),
                text: text.map(str::to_string),
                ..Default::default()
            })
            .collect();
        crate::tools::sample::write_input_parquet(path, &docs).unwrap();
        Unit::file(path)
    }

    #[test]
    fn the_first_copy_of_an_id_in_plan_order_wins_in_every_run() {
        let dir = tempfile::tempdir().unwrap();
        let a = input(
            &dir.path().join("a.parquet"),
            &[("w", Some("Zero.")), ("x", Some("One.")), ("z", None)],
        );
        let b = input(
            &dir.path().join("b.parquet"),
            &[
                ("x", Some("Other.")),
                ("z", Some("Fine.")),
                ("y", Some("Two.")),
            ],
        );
        let first = FirstSeen::scan(&[a.clone(), b.clone()], &Default::default(), 2).unwrap();
        // Only repeated ids are kept.
        assert_eq!(first.first.len(), 2);
        let a_path = a.path.display().to_string();
        // A run of `b` alone (another shard, or a resumed run) knows about the copies in `a`.
        let screen = Screen::new(InputChecks::default(), &first, std::slice::from_ref(&b));
        let again = screen.check(0, row(0, Some("x"), "Other."));
        assert_eq!(
            again.doc.unwrap_err(),
            format!("duplicate id \"x\": first seen in {a_path} row 1")
        );
        assert_eq!(again.id.as_deref(), Some("x"));
        // A rejected first occurrence (no text) still claims the id.
        let e = screen.check(0, row(1, Some("z"), "Fine.")).doc.unwrap_err();
        assert!(e.contains(&format!("{a_path} row 2")), "{e}");
        assert!(screen.check(0, row(2, Some("y"), "Two.")).doc.is_ok());
        // The first copies themselves pass.
        let screen = Screen::new(InputChecks::default(), &first, std::slice::from_ref(&a));
        assert!(screen.check(0, row(1, Some("x"), "One.")).doc.is_ok());
        assert!(screen.check(0, row(0, Some("w"), "Zero.")).doc.is_ok());
        // Repeats inside one unit: the lower row wins.
        let c = input(
            &dir.path().join("c.parquet"),
            &[("v", Some("A.")), ("v", Some("B."))],
        );
        let first = FirstSeen::scan(std::slice::from_ref(&c), &Default::default(), 1).unwrap();
        let screen = Screen::new(InputChecks::default(), &first, std::slice::from_ref(&c));
        assert!(screen.check(0, row(0, Some("v"), "A.")).doc.is_ok());
        assert!(screen.check(0, row(1, Some("v"), "B.")).doc.is_err());
    }

    #[test]
    fn documents_over_the_limits_are_rejected() {
        let checks = InputChecks {
            max_words: 4,
            max_chars: 20,
            strict: false,
        };
        let none = FirstSeen::default();
        let screen = Screen::new(checks, &none, &[Unit::file(Path::new("a.parquet"))]);
        // "Ann saw Bo ." is four words and 11 characters: at both limits, accepted.
        assert!(screen
            .check(0, row(0, Some("a"), "Ann saw Bo."))
            .doc
            .is_ok());
        let e = screen.check(0, row(1, Some("b"), "Ann saw Bo run.")).doc;
        assert_eq!(e.unwrap_err(), "too long: 5 words (input.max_words = 4)");
        let e = screen
            .check(0, row(2, Some("c"), "Annabelle, Bonifacio."))
            .doc;
        assert_eq!(
            e.unwrap_err(),
            "too long: 21 characters (input.max_chars = 20)"
        );
        let mut doc = text::segment("d", "Annabelle Bonifacio Cornelius");
        doc.text = None;
        let pretokenized = RowResult {
            row: 3,
            id: Some("d".into()),
            doc: Ok(doc),
        };
        let e = screen.check(0, pretokenized).doc.unwrap_err();
        assert!(e.contains("27 characters"), "{e}");
    }

    #[test]
    fn the_first_raised_error_is_kept() {
        let abort = Abort::default();
        assert!(!abort.raised());
        abort.raise(Error::Config("first".into()));
        abort.raise(Error::Config("second".into()));
        assert!(abort.raised());
        assert_eq!(
            abort.into_error().unwrap().to_string(),
            "configuration: first"
        );
    }

    #[test]
    fn unusable_output_directories_are_configuration_errors() {
        let dir = tempfile::tempdir().unwrap();
        let fresh = dir.path().join("new/out");
        check_output_dir(&fresh).unwrap();
        assert!(fresh.is_dir());
        assert_eq!(std::fs::read_dir(&fresh).unwrap().count(), 0, "probe left");
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        for bad in [file.clone(), file.join("out")] {
            let e = check_output_dir(&bad).unwrap_err();
            assert_eq!(e.class(), ErrorClass::Config, "{e}");
            let msg = e.to_string();
            assert!(msg.contains("output directory is not usable"), "{msg}");
            assert!(msg.contains(&bad.display().to_string()), "{msg}");
        }
    }

    #[test]
    fn an_output_directory_the_inputs_would_read_back_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let corpus = dir.path().join("corpus");
        std::fs::create_dir_all(corpus.join("2024")).unwrap();
        let spec = |p: &Path| p.to_string_lossy().into_owned();
        let check = |out: &Path, input: &str| check_output_outside_inputs(out, &[input.into()]);
        let e = check(&corpus.join("kb"), &spec(&corpus)).unwrap_err();
        assert_eq!(e.class(), ErrorClass::Config, "{e}");
        assert!(e.to_string().contains("output.dir"), "{e}");
        check(&corpus.join("2024/kb"), &spec(&corpus)).unwrap_err();
        // Spelled another way, or through a symbolic link to the corpus.
        std::os::unix::fs::symlink(&corpus, dir.path().join("link")).unwrap();
        std::fs::create_dir_all(dir.path().join("link/kb")).unwrap();
        check(&dir.path().join("link/kb"), &spec(&corpus)).unwrap_err();
        check(&corpus.join("./x/../kb"), &spec(&corpus)).unwrap_err();
        // Globs that would match the tables' part files.
        let all = spec(&corpus.join("**/*.parquet"));
        check(&corpus.join("kb"), &all).unwrap_err();
        check(
            &corpus.join("2024/kb"),
            &spec(&corpus.join("2024/*/*/*.parquet")),
        )
        .unwrap_err();
        // Not read back: beside the corpus, under a hidden name, or out of a glob's reach.
        check(&dir.path().join("kb"), &spec(&corpus)).unwrap();
        check(&corpus.join("_kb"), &spec(&corpus)).unwrap();
        check(&corpus.join("kb"), &spec(&corpus.join("*.parquet"))).unwrap();
        check(&dir.path().join("kb"), &all).unwrap();
    }
}
