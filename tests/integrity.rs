//! Run integrity under hostile use, with the real binary and a tiny random model: one file under
//! two spellings, duplicate ids across shards and resumes, two writers of one output, an input
//! rewritten at the same size, broken model folders, an empty input, and an output directory
//! inside the input.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray};
use jerex::model::folder;
use jerex::schema;
use jerex::schema::TABLES;
use jerex::testing::{
    exit_code, part_files, read_batches, require_tokenizer, stderr, stdout, success, write_texts,
    JobFile, TinyModel,
};

fn text(i: usize, word: &str) -> String {
    const PEOPLE: [&str; 4] = ["Alma Reyes", "Tomas Ekberg", "Noor Haddad", "Ivo Brandt"];
    const PLACES: [&str; 3] = ["Port Elling", "Varnholt", "Lake Ashby"];
    format!(
        "{} was born in {} in {}. The {word} report names {}.",
        PEOPLE[i % 4],
        PLACES[i % 3],
        1900 + i,
        PEOPLE[(i + 1) % 4]
    )
}

/// Writes documents with these ids (and texts from [`text`] with `word`) as an input file.
fn write_input(path: &Path, ids: &[String], word: &str) {
    let docs: Vec<(&String, String)> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id, text(i, word)))
        .collect();
    write_texts(path, &docs);
}

fn ids(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{prefix}{i}")).collect()
}

struct Fixture {
    dir: tempfile::TempDir,
    model: PathBuf,
}

fn fixture() -> Option<Fixture> {
    let tok = require_tokenizer()?;
    let dir = tempfile::tempdir().unwrap();
    // Thresholds that keep a few mentions, so every table gets rows.
    let model = TinyModel::sparse(&tok).save(dir.path(), "tiny-model");
    Some(Fixture { dir, model })
}

impl Fixture {
    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Writes `job.toml` reading `inputs` (relative to the fixture) into `out`, with `model`.
    fn job(&self, name: &str, inputs: &[&str], out: &str, model: &Path) -> PathBuf {
        JobFile::new(inputs, out, model)
            .set("threads", 1)
            .set("batch.max_docs", 1)
            .set("batch.lookahead", 4)
            .write(&self.path(name))
    }

    /// `jerex run JOB ARGS`, from the fixture's folder.
    fn command(&self, job: &Path, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_jerex"));
        c.arg("run")
            .arg(job)
            .arg("--no-progress")
            .args(args)
            .current_dir(self.dir.path())
            .env("RUST_LOG", "warn");
        for v in [
            "JEREX_SHARD_COUNT",
            "JOB_COMPLETION_INDEX",
            "SLURM_ARRAY_TASK_ID",
        ] {
            c.env_remove(v);
        }
        c
    }

    fn run(&self, job: &Path, args: &[&str]) -> Output {
        self.command(job, args).output().unwrap()
    }
}

/// The `documents` table: (file name, row) → (id, status, reason).
type Documents = BTreeMap<(String, u64), (Option<String>, String, Option<String>)>;

fn documents(out: &Path) -> Documents {
    let mut rows = Documents::new();
    for path in part_files(&out.join("documents")) {
        for b in read_batches(&path) {
            let s = |name: &str, i: usize| {
                let a = b.column_by_name(name).unwrap().as_string::<i32>();
                a.is_valid(i).then(|| a.value(i).to_string())
            };
            let row = b.column_by_name("source_row").unwrap();
            let row = row.as_primitive::<arrow::datatypes::UInt64Type>();
            for i in 0..b.num_rows() {
                let file = s("source_file", i).unwrap();
                let file = Path::new(&file).file_name().unwrap().to_string_lossy();
                let key = (file.into_owned(), row.value(i));
                let value = (s("doc_id", i), s("status", i).unwrap(), s("reason", i));
                assert!(rows.insert(key.clone(), value).is_none(), "{key:?} twice");
            }
        }
    }
    rows
}

/// Rows per table, read from the part files.
fn row_counts(out: &Path) -> Vec<usize> {
    TABLES
        .iter()
        .map(|t| {
            part_files(&out.join(t))
                .iter()
                .flat_map(|p| read_batches(p))
                .map(|b| b.num_rows())
                .sum()
        })
        .collect()
}

fn ok_ids(docs: &Documents) -> Vec<String> {
    let mut v: Vec<String> = docs
        .values()
        .filter(|(_, status, _)| status == "ok")
        .map(|(id, _, _)| id.clone().unwrap())
        .collect();
    v.sort();
    v
}

#[test]
fn one_file_under_two_spellings_is_read_once() {
    let Some(fx) = fixture() else { return };
    write_input(&fx.path("in/x.parquet"), &ids("d", 0..300), "plain");
    let job = fx.job("job.toml", &["in"], "out", &fx.model);
    let run = fx.run(
        &job,
        &[
            "--input",
            "./in/x.parquet",
            "--input",
            "in/x.parquet",
            "--unit-rows",
            "128",
        ],
    );
    let text = success(&run);
    assert!(
        text.starts_with("300 documents (300 ok, 0 rejected"),
        "{text}"
    );
    assert!(text.contains("_SUCCESS: 3 units, 300 documents"), "{text}");
    let docs = documents(&fx.path("out"));
    assert_eq!(ok_ids(&docs).len(), 300);
    assert_eq!(docs.len(), 300);
}

#[test]
fn duplicate_ids_are_decided_by_the_plan_whatever_each_run_processes() {
    let Some(fx) = fixture() else { return };
    // Ten ids are in both files: the copies in a.parquet (first in plan order) are kept.
    let a: Vec<String> = ids("a", 0..40).into_iter().chain(ids("s", 0..10)).collect();
    let b: Vec<String> = ids("s", 0..10).into_iter().chain(ids("b", 0..40)).collect();
    write_input(&fx.path("in/a.parquet"), &a, "first");
    write_input(&fx.path("in/b.parquet"), &b, "second");
    let job = fx.job("job.toml", &["in"], "single", &fx.model);
    let single_run = fx.run(&job, &["-o", "single"]);
    assert_eq!(exit_code(&single_run), 3, "{}", stderr(&single_run));
    let single = documents(&fx.path("single"));
    let expected_ok: Vec<String> = {
        let mut v: Vec<String> = ids("a", 0..40)
            .into_iter()
            .chain(ids("s", 0..10))
            .chain(ids("b", 0..40))
            .collect();
        v.sort();
        v
    };
    assert_eq!(ok_ids(&single), expected_ok);
    let (_, status, reason) = &single[&("b.parquet".to_string(), 0)];
    assert_eq!(status, "rejected");
    let reason = reason.as_deref().unwrap();
    assert!(
        reason.starts_with("duplicate id \"s0\": first seen in")
            && reason.ends_with("a.parquet row 40"),
        "{reason}"
    );

    // Each shard alone, then the other; and one shard followed by the whole job (a resume).
    let shard =
        |out: &str, i: &str| fx.run(&job, &["-o", out, "--shard-count", "2", "--shard-index", i]);
    for (out, order) in [("shards", ["0", "1"]), ("shards-reversed", ["1", "0"])] {
        for i in order {
            let r = shard(out, i);
            assert!(matches!(exit_code(&r), 0 | 3), "{}", stderr(&r));
        }
        assert_eq!(documents(&fx.path(out)), single, "{out}");
        assert_eq!(
            row_counts(&fx.path(out)),
            row_counts(&fx.path("single")),
            "{out}"
        );
    }
    for first in ["0", "1"] {
        let out = format!("resumed-after-{first}");
        let r = shard(&out, first);
        assert!(matches!(exit_code(&r), 0 | 3), "{}", stderr(&r));
        let r = fx.run(&job, &["-o", &out]);
        assert!(
            stdout(&r).contains("resumed: 1 of 2 units"),
            "{}",
            stdout(&r)
        );
        assert_eq!(documents(&fx.path(&out)), single, "{out}");
    }
}

/// Waits until `path` exists (true), or `child` ends first (false).
fn wait_for(path: &Path, child: &mut Child) -> bool {
    let start = Instant::now();
    while !path.exists() {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        assert!(start.elapsed() < Duration::from_secs(120), "run hangs");
        std::thread::sleep(Duration::from_millis(2));
    }
    true
}

#[test]
fn a_second_writer_of_one_shard_is_refused_and_shards_run_side_by_side() {
    let Some(fx) = fixture() else { return };
    // Long enough for the second runs below to start while the first is at work.
    for f in 0..4 {
        let name = format!("in/part{f}.parquet");
        write_input(&fx.path(&name), &ids(&format!("f{f}-"), 0..200), "plain");
    }
    let job = fx.job("job.toml", &["in"], "out", &fx.model);
    let out = fx.path("out");
    let mut first = fx
        .command(&job, &[])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lease = out.join("_leases/0-of-1.json");
    assert!(
        wait_for(&lease, &mut first),
        "the first run took no lease on its output"
    );
    // The same job again while the first runs; and a shard of the same job (its units overlap
    // the whole job's).
    for args in [&[][..], &["--shard-count", "2", "--shard-index", "1"]] {
        let second = fx.run(&job, args);
        assert_eq!(exit_code(&second), 75, "{args:?}: {}", stderr(&second));
        let err = stderr(&second);
        assert!(err.contains("another run writes this output"), "{err}");
        assert!(err.contains(&format!("process {}", first.id())), "{err}");
    }
    let first = first.wait_with_output().unwrap();
    let text = success(&first);
    assert!(text.contains("_SUCCESS: 4 units, 800 documents"), "{text}");
    assert_eq!(documents(&out).len(), 800);
    assert!(!lease.exists(), "the lease is released at the end");

    // Shards of one job write side by side.
    let spawn = |i: &str| {
        fx.command(
            &job,
            &["-o", "sharded", "--shard-count", "2", "--shard-index", i],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
    };
    let (a, b) = (spawn("0"), spawn("1"));
    for child in [a, b] {
        success(&child.wait_with_output().unwrap());
    }
    assert_eq!(documents(&fx.path("sharded")), documents(&out));
    assert!(fx.path("sharded/_SUCCESS").is_file());
}

#[test]
fn an_input_rewritten_at_the_same_size_is_not_resumed() {
    let Some(fx) = fixture() else { return };
    let input = fx.path("in/x.parquet");
    write_input(&input, &ids("d", 0..40), "alpha");
    let job = fx.job("job.toml", &["in"], "out", &fx.model);
    success(&fx.run(&job, &[]));
    let before = documents(&fx.path("out"));
    let size = std::fs::metadata(&input).unwrap().len();
    // Other words of the same length: the same size on disk.
    write_input(&input, &ids("d", 0..40), "omega");
    assert_eq!(std::fs::metadata(&input).unwrap().len(), size);
    let again = fx.run(&job, &[]);
    assert_eq!(exit_code(&again), 78, "{}", stdout(&again));
    let err = stderr(&again);
    assert!(
        err.contains("input units differ") && err.contains("x.parquet"),
        "{err}"
    );
    assert_eq!(
        documents(&fx.path("out")),
        before,
        "a refused run changes nothing"
    );
    // Overwriting redoes it from the new text.
    success(&fx.run(&job, &["--overwrite"]));
}

/// Copies the tiny model folder to `name`, changed by `edit`.
fn broken_model(fx: &Fixture, name: &str, edit: impl FnOnce(&Path)) -> PathBuf {
    let dir = fx.path(name);
    std::fs::create_dir_all(&dir).unwrap();
    for f in std::fs::read_dir(&fx.model).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, dir.join(f.file_name().unwrap())).unwrap();
    }
    edit(&dir);
    dir
}

/// Rewrites a model folder's weights through `edit`.
fn edit_weights(dir: &Path, edit: impl FnOnce(&mut Vec<(String, tch::Tensor)>)) {
    let file = dir.join(folder::WEIGHTS_FILE);
    let mut tensors = tch::Tensor::read_safetensors(&file).unwrap();
    edit(&mut tensors);
    tch::Tensor::write_safetensors(&tensors, &file).unwrap();
}

const CLASSIFIER: &str = "mention_localization.mention_classifier.weight";

#[test]
fn broken_model_folders_are_configuration_errors() {
    let Some(fx) = fixture() else { return };
    write_input(&fx.path("in/x.parquet"), &ids("d", 0..5), "plain");
    let weights = folder::WEIGHTS_FILE;
    let cases: Vec<(&str, PathBuf, &str)> = vec![
        (
            "truncated",
            broken_model(&fx, "truncated", |d| {
                let bytes = std::fs::read(d.join(weights)).unwrap();
                std::fs::write(d.join(weights), &bytes[..bytes.len() / 2]).unwrap();
            }),
            "not a readable safetensors file",
        ),
        (
            "missing",
            broken_model(&fx, "missing", |d| {
                std::fs::remove_file(d.join(weights)).unwrap();
            }),
            "model.safetensors",
        ),
        (
            "wrong shape",
            broken_model(&fx, "wrong-shape", |d| {
                edit_weights(d, |t| {
                    let (_, w) = t.iter_mut().find(|(n, _)| n == CLASSIFIER).unwrap();
                    *w = tch::Tensor::zeros([3, 3], (tch::Kind::Float, tch::Device::Cpu));
                })
            }),
            "shape mismatch",
        ),
        (
            "missing tensor",
            broken_model(&fx, "missing-tensor", |d| {
                edit_weights(d, |t| t.retain(|(n, _)| n != CLASSIFIER))
            }),
            "missing (1)",
        ),
        (
            "type count",
            broken_model(&fx, "type-count", |d| {
                let path = d.join(folder::CONFIG_FILE);
                let mut config: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
                let types = config["entity_types"].as_array_mut().unwrap();
                types.push(serde_json::json!({"key": "E9", "name": "extra"}));
                std::fs::write(&path, serde_json::to_vec(&config).unwrap()).unwrap();
            }),
            "shape mismatch",
        ),
        (
            "NaN weights",
            broken_model(&fx, "nan", |d| {
                edit_weights(d, |t| {
                    let (_, w) = t.iter_mut().find(|(n, _)| n == CLASSIFIER).unwrap();
                    *w = w.full_like(f64::NAN);
                })
            }),
            "NaN or infinite values (1): mention_localization",
        ),
    ];
    for (label, model, message) in cases {
        let job = fx.job("job.toml", &["in"], &format!("out-{label}"), &model);
        let run = fx.run(&job, &[]);
        let err = stderr(&run);
        assert_eq!(exit_code(&run), 78, "{label}: {err}");
        assert!(err.contains(message), "{label}: {err}");
    }
}

#[test]
fn every_table_exists_after_a_run_of_an_empty_input() {
    let Some(fx) = fixture() else { return };
    write_input(&fx.path("in/empty.parquet"), &[], "plain");
    let job = fx.job("job.toml", &["in"], "out", &fx.model);
    let text = success(&fx.run(&job, &[]));
    assert!(text.contains("_SUCCESS: 1 units, 0 documents"), "{text}");
    let out = fx.path("out");
    for t in TABLES {
        let files = part_files(&out.join(t));
        assert_eq!(files.len(), 1, "{t}: {files:?}");
        let f = std::fs::File::open(&files[0]).unwrap();
        let reader =
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f).unwrap();
        assert_eq!(reader.schema(), &schema::table(t).arrow_schema(), "{t}");
        assert_eq!(reader.metadata().file_metadata().num_rows(), 0, "{t}");
    }
    let marker: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("_SUCCESS")).unwrap()).unwrap();
    let listed = &marker["parts"]["relations"];
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{marker}");
    assert!(out
        .join("relations")
        .join(listed[0].as_str().unwrap())
        .is_file());
    // The same job over a file with rows replaces the empty parts by real ones.
    write_input(&fx.path("in/some.parquet"), &ids("d", 0..20), "plain");
    success(&fx.run(&job, &["--overwrite"]));
    assert!(part_files(&out.join("documents"))
        .iter()
        .all(|p| !p.to_string_lossy().contains("part-empty")));
}

#[test]
fn an_output_directory_inside_the_input_is_refused() {
    let Some(fx) = fixture() else { return };
    write_input(&fx.path("corpus/x.parquet"), &ids("d", 0..5), "plain");
    let job = fx.job("job.toml", &["corpus"], "corpus/kb", &fx.model);
    let run = fx.run(&job, &[]);
    assert_eq!(exit_code(&run), 78, "{}", stderr(&run));
    assert!(stderr(&run).contains("output.dir"), "{}", stderr(&run));
    assert!(
        !fx.path("corpus/kb/documents").exists(),
        "nothing is written"
    );
}
