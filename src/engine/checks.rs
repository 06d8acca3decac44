//! Bad input in corpus runs: the checks that turn a readable row into a rejection (duplicate
//! ids, documents over the size limits), strict mode's early stop, and the output directory
//! check made before any work starts.
//!
//! The reader ([`crate::corpus::parquet`]) already rejects rows it cannot turn into a document
//! (null or empty id or text, bytes that are not UTF-8); [`Screen`] adds what needs the whole
//! run's view or the job's limits.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use crate::corpus::parquet::RowResult;
use crate::corpus::Document;
use crate::error::{Error, Result};

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

/// Screens a run's rows in reading order.
pub(crate) struct Screen {
    checks: InputChecks,
    units: Vec<PathBuf>,
    /// Where each id was first seen: unit index and row, keyed by 128 bits of the id's blake3
    /// hash rather than the id itself (16 bytes instead of a string and its allocation, which
    /// adds up on archives of millions of rows; two ids collide with probability about n²/2¹²⁹).
    seen: HashMap<u128, (usize, usize)>,
}

impl Screen {
    /// `units` are the run's input paths, indexed like the units rows come from.
    pub(crate) fn new(checks: InputChecks, units: Vec<PathBuf>) -> Screen {
        Screen {
            checks,
            units,
            seen: HashMap::new(),
        }
    }

    /// The row, its document replaced by a rejection when its id was seen before in the run or
    /// it is over the size limits. Every readable id is remembered, also of rejected rows, so
    /// an id names at most one document of the run and a later copy says where the first is.
    pub(crate) fn check(&mut self, unit: usize, mut r: RowResult) -> RowResult {
        if let Some(id) = &r.id {
            let key = id_key(id);
            if let Some(&(u, row)) = self.seen.get(&key) {
                r.doc = Err(format!(
                    "duplicate id {id:?}: first seen in {} row {row}",
                    self.units[u].display()
                ));
                return r;
            }
            self.seen.insert(key, (unit, r.row));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corpus::text;
    use crate::error::ErrorClass;

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

    #[test]
    fn later_copies_of_an_id_are_rejected_naming_the_first() {
        let units = vec![PathBuf::from("a.parquet"), PathBuf::from("b.parquet")];
        let mut screen = Screen::new(InputChecks::default(), units);
        assert!(screen.check(0, row(3, Some("x"), "One.")).doc.is_ok());
        assert!(screen.check(0, row(4, None, "")).doc.is_err());
        assert!(screen.check(0, row(5, Some("y"), "Two.")).doc.is_ok());
        let again = screen.check(1, row(0, Some("x"), "Other."));
        assert_eq!(
            again.doc.unwrap_err(),
            "duplicate id \"x\": first seen in a.parquet row 3"
        );
        assert_eq!(again.id.as_deref(), Some("x"));
        // A rejected first occurrence still claims the id.
        let bad = RowResult {
            row: 1,
            id: Some("z".into()),
            doc: Err("null text".into()),
        };
        assert!(screen.check(1, bad).doc.is_err());
        let e = screen.check(1, row(2, Some("z"), "Fine.")).doc.unwrap_err();
        assert!(e.contains("b.parquet row 1"), "{e}");
    }

    #[test]
    fn documents_over_the_limits_are_rejected() {
        let checks = InputChecks {
            max_words: 4,
            max_chars: 20,
            strict: false,
        };
        let mut screen = Screen::new(checks, vec![PathBuf::from("a.parquet")]);
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
}
