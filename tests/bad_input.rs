//! Bad input end to end: a corpus mixing good and bad rows, strict mode, a truncated file, a
//! wrong column type (in one file or in all), an unusable output directory and bad flags,
//! through the real `jerex run` binary (exit codes, messages, the `documents` table) with a tiny
//! random model, and through the library with the fake backend (typed errors).

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BinaryArray, Int64Array, StringArray, UInt64Array};
use arrow::record_batch::RecordBatch;
use jerex::engine::{execute, PipelineConfig, Unit};
use jerex::error::ErrorClass;
use jerex::pipeline::checks::InputChecks;
use jerex::testing::{
    exit_code, part_files, pipeline_config, read_batches, require_tokenizer, stderr, types,
    FakeFactory, JobFile, TinyModel,
};
use jerex::Error;
use parquet::arrow::ArrowWriter;

/// `input.max_words` of the test jobs: the long document below has 80.
const MAX_WORDS: usize = 40;

fn write_parquet(path: &Path, columns: Vec<(&str, ArrayRef)>) {
    let batch = RecordBatch::try_from_iter(columns).unwrap();
    let mut w = ArrowWriter::try_new(File::create(path).unwrap(), batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

fn binary(values: &[Option<&[u8]>]) -> ArrayRef {
    Arc::new(BinaryArray::from(values.to_vec()))
}

fn strings(values: &[Option<&str>]) -> ArrayRef {
    Arc::new(StringArray::from(values.to_vec()))
}

/// The input files of the tests, all in one folder.
struct Corpus {
    dir: PathBuf,
}

impl Corpus {
    fn new(dir: &Path) -> Corpus {
        let c = Corpus {
            dir: dir.to_path_buf(),
        };
        let long = "The long report goes on and on. ".repeat(10);
        // id and text as binary columns, so bytes that are not UTF-8 can be stored.
        write_parquet(
            &c.path("mixed"),
            vec![
                (
                    "id",
                    binary(&[
                        Some(b"good-1"),
                        None,
                        Some(b"null-text"),
                        Some(b"empty-text"),
                        Some(b"good-2"),
                        Some(b"good-1"),
                        Some(b"long"),
                        Some(b"bad-utf8"),
                        Some(b"\xffid"),
                        Some(b"good-3"),
                    ]),
                ),
                (
                    "text",
                    binary(&[
                        Some(b"Ada Quill met Bram Oster in Velmora."),
                        Some(b"A row without an id."),
                        None,
                        Some(b"  \n "),
                        Some(b"Cato Rell works for Nimbus Freight."),
                        Some(b"A second document under the first id."),
                        Some(long.as_bytes()),
                        Some(b"Caf\xe9 au lait in Velmora."),
                        Some(b"Valid text under an invalid id."),
                        Some(b"Dara Fenn founded Orbit Mills in Kestrel."),
                    ]),
                ),
            ],
        );
        write_parquet(
            &c.path("second"),
            vec![
                ("id", strings(&[Some("good-2"), Some("good-4")])),
                (
                    "text",
                    strings(&[
                        Some("The same id again in another file."),
                        Some("Ezra Pike sailed from Velmora to Kestrel."),
                    ]),
                ),
            ],
        );
        write_parquet(
            &c.path("good"),
            vec![
                ("id", strings(&[Some("g-1"), Some("g-2")])),
                (
                    "text",
                    strings(&[
                        Some("Mira Holt leads Quarry Labs."),
                        Some("Quarry Labs is based in Kestrel."),
                    ]),
                ),
            ],
        );
        write_parquet(
            &c.path("wrong-type"),
            vec![
                ("id", strings(&[Some("w-1")])),
                ("text", Arc::new(Int64Array::from(vec![42])) as ArrayRef),
            ],
        );
        let whole = std::fs::read(c.path("good")).unwrap();
        std::fs::write(c.path("truncated"), &whole[..whole.len() / 2]).unwrap();
        c
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.parquet"))
    }
}

/// A tiny randomly initialised model with three entity and two relation types; untrained
/// scores sit near 0.5, so high thresholds keep few predictions and the runs short.
fn tiny(tok: &Path) -> TinyModel {
    TinyModel::with_tokenizer(tok)
        .entity_types(types(&["PER", "ORG", "LOC"]))
        .relation_types(types(&["R1", "R2"]))
        .thresholds(0.9, 0.9, 0.9)
        .seed(3)
}

/// Writes a job over `inputs` and runs `jerex run` on it with `flags`.
fn run_job(dir: &Path, model: &Path, inputs: &[PathBuf], out: &Path, flags: &[&str]) -> Output {
    job_command(dir, model, inputs, out, flags)
        .output()
        .unwrap()
}

/// The `jerex run` command of [`run_job`], not started.
fn job_command(
    dir: &Path,
    model: &Path,
    inputs: &[PathBuf],
    out: &Path,
    flags: &[&str],
) -> Command {
    let job = dir.join(format!(
        "job-{}.toml",
        out.file_name().unwrap().to_string_lossy()
    ));
    JobFile::new(inputs, out, model)
        .set("threads", 1)
        .set("input.max_words", MAX_WORDS as i64)
        .write(&job);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_jerex"));
    cmd.arg("run").arg(&job).args(["--no-progress"]).args(flags);
    cmd
}

/// Runs `cmd` with `dir` mounted read-only, in a private mount namespace (`unshare -m`), so the
/// directory is unwritable even for root, who ignores permission bits.
fn with_read_only(dir: &Path, cmd: &Command) -> Output {
    let script =
        "mount --bind \"$1\" \"$1\" && mount -o remount,ro,bind \"$1\" && shift && exec \"$@\"";
    let output = Command::new("unshare")
        .args(["-m", "sh", "-c", script, "sh"])
        .arg(dir)
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .output();
    match output {
        Ok(out) if !String::from_utf8_lossy(&out.stderr).contains("mount:") => out,
        other => panic!(
            "cannot mount {} read-only with unshare -m: {other:?}",
            dir.display()
        ),
    }
}

/// One `documents` row: id, status, reason.
type DocRow = (Option<String>, String, Option<String>);

/// The `documents` table keyed by (input file name, row).
fn documents(out: &Path) -> BTreeMap<(String, u64), DocRow> {
    let mut rows = BTreeMap::new();
    for path in part_files(&out.join("documents")) {
        for b in read_batches(&path) {
            let col = |n: &str| b.column_by_name(n).unwrap().clone();
            let (ids, status, reason, file) = (
                col("doc_id"),
                col("status"),
                col("reason"),
                col("source_file"),
            );
            let s = |a: &ArrayRef, i: usize| {
                let a = a.as_any().downcast_ref::<StringArray>().unwrap();
                a.is_valid(i).then(|| a.value(i).to_string())
            };
            let row = col("source_row");
            let row = row.as_any().downcast_ref::<UInt64Array>().unwrap();
            for i in 0..b.num_rows() {
                let file = s(&file, i).unwrap();
                let file = Path::new(&file).file_stem().unwrap().to_string_lossy();
                rows.insert(
                    (file.into_owned(), row.value(i)),
                    (s(&ids, i), s(&status, i).unwrap(), s(&reason, i)),
                );
            }
        }
    }
    rows
}

fn rejected(id: Option<&str>, reason: &str) -> DocRow {
    (
        id.map(str::to_string),
        "rejected".into(),
        Some(reason.into()),
    )
}

fn ok(id: &str) -> DocRow {
    (Some(id.to_string()), "ok".into(), None)
}

#[test]
fn the_real_binary_reports_each_bad_input_case() {
    let Some(tok) = require_tokenizer() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let corpus = Corpus::new(dir.path());
    let model = tiny(&tok).save(dir.path(), "tiny-model");
    let job = |inputs: &[&str], out: &str, flags: &[&str]| {
        let inputs: Vec<PathBuf> = inputs.iter().map(|n| corpus.path(n)).collect();
        let out = dir.path().join(out);
        (run_job(dir.path(), &model, &inputs, &out, flags), out)
    };

    // Every good row processed, every bad row in the documents table with its reason: exit 3.
    let (run, out) = job(&["mixed", "second"], "out-mixed", &[]);
    assert_eq!(exit_code(&run), 3, "{}", stderr(&run));
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        stdout.contains("12 documents (4 ok, 8 rejected, 0 failed)"),
        "{stdout}"
    );
    let first = |row: u64| format!("first seen in {} row {row}", corpus.path("mixed").display());
    let expected: BTreeMap<(String, u64), DocRow> = [
        (("mixed", 0), ok("good-1")),
        (("mixed", 1), rejected(None, "null id")),
        (("mixed", 2), rejected(Some("null-text"), "null text")),
        (
            ("mixed", 3),
            rejected(Some("empty-text"), "text is empty or has no words"),
        ),
        (("mixed", 4), ok("good-2")),
        (
            ("mixed", 5),
            rejected(
                Some("good-1"),
                &format!("duplicate id \"good-1\": {}", first(0)),
            ),
        ),
        (
            ("mixed", 6),
            rejected(
                Some("long"),
                &format!("too long: 80 words (input.max_words = {MAX_WORDS})"),
            ),
        ),
        (
            ("mixed", 7),
            rejected(Some("bad-utf8"), "text is not valid UTF-8 (byte 3)"),
        ),
        (
            ("mixed", 8),
            rejected(None, "id is not valid UTF-8 (byte 0)"),
        ),
        (("mixed", 9), ok("good-3")),
        (
            ("second", 0),
            rejected(
                Some("good-2"),
                &format!("duplicate id \"good-2\": {}", first(4)),
            ),
        ),
        (("second", 1), ok("good-4")),
    ]
    .into_iter()
    .map(|((f, r), d)| ((f.to_string(), r), d))
    .collect();
    assert_eq!(documents(&out), expected);

    // Only good rows: plain success.
    let (run, out) = job(&["good"], "out-good", &[]);
    assert_eq!(exit_code(&run), 0, "{}", stderr(&run));
    assert_eq!(documents(&out).len(), 2);

    // Strict mode stops at the first rejected row, names it, and commits nothing after it.
    let (run, out) = job(&["mixed", "second"], "out-strict", &["--strict"]);
    assert_eq!(exit_code(&run), 65, "{}", stderr(&run));
    let err = stderr(&run);
    let want = format!(
        "{}: row 1: document rejected in strict mode: null id",
        corpus.path("mixed").display()
    );
    assert!(err.contains(&want), "{err}");
    assert!(documents(&out).is_empty(), "{:?}", documents(&out));
    assert!(!out.join("_SUCCESS").exists());

    // A truncated file fails the run (bad data) but the other file is still processed.
    let (run, out) = job(&["truncated", "good"], "out-truncated", &[]);
    assert_eq!(exit_code(&run), 65, "{}", stderr(&run));
    assert!(stderr(&run).contains(&corpus.path("truncated").display().to_string()));
    let docs = documents(&out);
    assert_eq!(docs.len(), 2, "{docs:?}");
    assert!(docs.keys().all(|(f, _)| f == "good"), "{docs:?}");

    // A file whose text column has an unusable type is that file's bad data, named with its
    // column and the expected type; the other file is still processed.
    let (run, out) = job(&["wrong-type", "good"], "out-type", &[]);
    assert_eq!(exit_code(&run), 65, "{}", stderr(&run));
    let err = stderr(&run);
    let want = format!(
        "{}: column \"text\" has type Int64, expected a string or binary (UTF-8)",
        corpus.path("wrong-type").display()
    );
    assert!(err.contains(&want), "{err}");
    assert_eq!(documents(&out).len(), 2);
    // Columns that fit no input file are the job's mistake, found before any work.
    let (run, out) = job(&["wrong-type"], "out-type-only", &[]);
    assert_eq!(exit_code(&run), 78, "{}", stderr(&run));
    let err = stderr(&run);
    assert!(
        err.contains("fit none of the 1 readable input files"),
        "{err}"
    );
    assert!(err.contains(&want), "{err}");
    assert!(!out.join("_manifest").exists());
}

#[test]
fn configuration_problems_exit_78_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = Corpus::new(dir.path());
    // The model folder does not exist: the output directory is checked first, before the model
    // would be loaded.
    let model = dir.path().join("no-model");
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let inputs = [corpus.path("good")];
    for out in [file.clone(), file.join("out")] {
        let run = run_job(dir.path(), &model, &inputs, &out, &[]);
        assert_eq!(exit_code(&run), 78, "{}", stderr(&run));
        let err = stderr(&run);
        assert!(err.contains("output directory is not usable"), "{err}");
        assert!(err.contains(&out.display().to_string()), "{err}");
    }
    // A directory without write permission. Root ignores permission bits (as in CI), so there
    // the directory is mounted read-only instead.
    let locked = dir.path().join("locked");
    std::fs::create_dir(&locked).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o555)).unwrap();
    let locked_job = job_command(dir.path(), &model, &inputs, &locked, &[]);
    let run = if File::create(locked.join("probe")).is_ok() {
        std::fs::remove_file(locked.join("probe")).unwrap();
        with_read_only(&locked, &locked_job)
    } else {
        let mut cmd = locked_job;
        cmd.output().unwrap()
    };
    assert_eq!(exit_code(&run), 78, "{}", stderr(&run));
    assert!(
        stderr(&run).contains("output directory is not usable"),
        "{}",
        stderr(&run)
    );
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o755)).unwrap();

    // Bad flags and bad values.
    let out = dir.path().join("out");
    let run = run_job(dir.path(), &model, &inputs, &out, &["--max-words", "0"]);
    assert_eq!(exit_code(&run), 78, "{}", stderr(&run));
    assert!(stderr(&run).contains("input.max_words"), "{}", stderr(&run));
    let run = run_job(dir.path(), &model, &inputs, &out, &["--no-such-flag"]);
    assert_eq!(exit_code(&run), 78, "{}", stderr(&run));
    // The model folder is missing: also configuration.
    let run = run_job(dir.path(), &model, &inputs, &out, &[]);
    assert_eq!(exit_code(&run), 78, "{}", stderr(&run));
    assert!(stderr(&run).contains("model.dir"), "{}", stderr(&run));

    let help = Command::new(env!("CARGO_BIN_EXE_jerex"))
        .args(["run", "--help"])
        .output()
        .unwrap();
    assert_eq!(exit_code(&help), 0);
    let text = String::from_utf8_lossy(&help.stdout);
    for line in [
        "Exit codes:",
        "  3   ",
        "  65  ",
        "  75  ",
        "  78  ",
        "--strict",
    ] {
        assert!(text.contains(line), "{line:?} missing from:\n{text}");
    }
}

fn pipeline(units: &[PathBuf], out: &Path, strict: bool) -> PipelineConfig {
    let units: Vec<Unit> = units.iter().map(|p| Unit::file(p)).collect();
    let mut cfg = PipelineConfig {
        checks: InputChecks {
            max_words: MAX_WORDS,
            strict,
            ..Default::default()
        },
        ..pipeline_config(&units, out)
    };
    cfg.output.as_mut().unwrap().rows_per_part = 1000;
    cfg
}

#[test]
fn the_library_returns_typed_errors() {
    let Some(tok) = require_tokenizer() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let corpus = Corpus::new(dir.path());
    // The fake backend's CPU side: the pretrained encoder's tokenizer.
    let model = tiny(&tok).fake_info();
    let factory = FakeFactory::new(&model.config);
    let units = [
        corpus.path("mixed"),
        corpus.path("truncated"),
        corpus.path("wrong-type"),
    ];

    // Without strict mode the unreadable units are reported, each with its own class.
    let out = dir.path().join("lenient");
    let report = execute(&pipeline(&units, &out, false), &model, &factory).unwrap();
    assert_eq!((report.ok, report.rejected), (3, 7));
    let classes: Vec<ErrorClass> = report.unit_errors.iter().map(Error::class).collect();
    assert_eq!(classes, [ErrorClass::Data, ErrorClass::Data]);
    assert!(matches!(&report.unit_errors[1], Error::Columns { .. }));
    assert_eq!(Error::Units(report.unit_errors).class(), ErrorClass::Data);

    // Strict mode: the first rejected row, as a typed error naming file and row.
    let out = dir.path().join("strict");
    let e = execute(&pipeline(&units, &out, true), &model, &factory).unwrap_err();
    assert!(
        matches!(&e, Error::BadRow { path, row: 1, .. } if path == &corpus.path("mixed")),
        "{e:?}"
    );
    assert_eq!(e.class(), ErrorClass::Data);

    // Strict mode on a file that cannot be read: that file's own error.
    let out = dir.path().join("strict-truncated");
    let only = [corpus.path("good"), corpus.path("truncated")];
    let e = execute(&pipeline(&only, &out, true), &model, &factory).unwrap_err();
    assert!(matches!(&e, Error::Parquet { .. }), "{e:?}");
    assert!(e.to_string().contains("truncated.parquet"), "{e}");
}
