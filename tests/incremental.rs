//! Nightly increments (`[incremental] enabled = true`) with the real binary and tiny random
//! models: a first run processes everything, a second one nothing; edited, deleted and added
//! documents are exactly what the next run processes and reports; another model reprocesses
//! all; a run killed mid-way is resumed, not duplicated.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use jerex::engine::incremental::RunSuccess;
use jerex::testing::{
    numbered_types, part_files, read_batches, require_tokenizer, strings, success, write_texts,
    JobFile, TinyModel,
};

/// A tiny random model folder; another seed gives other weights, hence another model id.
fn tiny_model(dir: &Path, name: &str, seed: i64, tok: &Path) -> PathBuf {
    TinyModel::with_tokenizer(tok)
        .entity_types(numbered_types("E", 3))
        .relation_types(numbered_types("R", 2))
        .thresholds(0.5, 0.9, 0.5)
        .seed(seed)
        .save(dir, name)
}

const PEOPLE: [&str; 5] = [
    "Alma Reyes",
    "Tomas Ekberg",
    "Noor Haddad",
    "Ivo Brandt",
    "Kenji Oda",
];
const PLACES: [&str; 5] = [
    "Port Elling",
    "Varnholt",
    "Lake Ashby",
    "Corvin Bay",
    "Hollow Reach",
];

fn text(i: usize) -> String {
    let (p, l) = (PEOPLE[i % 5], PLACES[(i / 5) % 5]);
    format!("{p} was born in {l}. {p} later moved to {}.", PLACES[i % 5])
}

struct Fixture {
    dir: tempfile::TempDir,
    job: PathBuf,
    out: PathBuf,
}

fn fixture() -> Option<(Fixture, PathBuf, PathBuf)> {
    let tok = require_tokenizer()?;
    let dir = tempfile::tempdir().unwrap();
    let model_a = tiny_model(dir.path(), "model-a", 1, &tok);
    let model_b = tiny_model(dir.path(), "model-b", 2, &tok);
    let job = JobFile::new(&["corpus"], "kb", &model_a)
        .set("threads", 1)
        .set("batch.max_docs", 2)
        .set("batch.lookahead", 4)
        .set("incremental.enabled", true)
        .write(&dir.path().join("nightly.toml"));
    let out = dir.path().join("kb");
    Some((Fixture { dir, job, out }, model_a, model_b))
}

impl Fixture {
    fn corpus(&self, file: &str) -> PathBuf {
        self.dir.path().join("corpus").join(file)
    }

    fn command(&self, extra: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_jerex"));
        c.arg("run")
            .arg(&self.job)
            .arg("--no-progress")
            .args(extra)
            .env("RUST_LOG", "warn");
        c
    }

    /// Runs the job; returns its stdout and the folder of the run it made.
    fn run(&self, extra: &[&str]) -> (String, PathBuf) {
        let o = self.command(extra).output().unwrap();
        let stdout = success(&o);
        let last = self.runs().pop().expect("a run folder");
        (stdout, self.out.join("runs").join(last))
    }

    fn runs(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.out.join("runs"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// Starts the job and kills it (SIGKILL) as soon as it records its run as current; returns
    /// that run's id, or `None` when it finished first.
    fn start_and_kill(&self, extra: &[&str]) -> Option<String> {
        let mut child = self
            .command(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while !self.current().exists() {
            if child.try_wait().unwrap().is_some() {
                eprintln!("the run finished before it could be killed: no resume exercised");
                return None;
            }
            assert!(start.elapsed() < Duration::from_secs(120), "run hangs");
            std::thread::sleep(Duration::from_millis(1));
        }
        let bytes = std::fs::read(self.current()).unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        Some(v["run_id"].as_str().unwrap().to_string())
    }

    fn current(&self) -> PathBuf {
        self.out.join("_state/current.json")
    }

    /// `_state/documents.parquet`: doc id → (content hash, model id, run id).
    fn state(&self) -> BTreeMap<String, [String; 3]> {
        let path = self.out.join("_state/documents.parquet");
        let rows = rows(&[path], &["doc_id", "content_hash", "model_id", "run_id"]);
        rows.into_iter()
            .map(|r| {
                let [id, h, m, run] = r.map(Option::unwrap);
                (id, [h, m, run])
            })
            .collect()
    }
}

/// Columns `cols` of every row of the Parquet `files`, as strings.
fn rows<const N: usize>(files: &[PathBuf], cols: &[&str; N]) -> Vec<[Option<String>; N]> {
    let mut out = Vec::new();
    for batch in files.iter().flat_map(|p| read_batches(p)) {
        let mut columns = cols.map(|c| strings(&batch, c).into_iter());
        for _ in 0..batch.num_rows() {
            out.push(columns.each_mut().map(|c| c.next().unwrap()));
        }
    }
    out
}

/// The part files of a table folder, which must exist.
fn parts(dir: &Path) -> Vec<PathBuf> {
    assert!(dir.is_dir(), "{}", dir.display());
    part_files(dir)
}

/// A run's `changes` table: doc id → [change, content hash, previous hash, previous model,
/// previous run].
fn changes(run: &Path) -> BTreeMap<String, [Option<String>; 5]> {
    let cols = [
        "doc_id",
        "change",
        "content_hash",
        "previous_content_hash",
        "previous_model_id",
        "previous_run_id",
    ];
    rows(&parts(&run.join("changes")), &cols)
        .into_iter()
        .map(|[id, rest @ ..]| (id.unwrap(), rest))
        .collect()
}

/// A run's `documents` table: doc id → [status, content hash, model id]; a duplicated id fails.
fn documents(run: &Path) -> BTreeMap<String, [Option<String>; 3]> {
    let cols = ["doc_id", "status", "content_hash", "model_id"];
    let mut out = BTreeMap::new();
    for [id, rest @ ..] in rows(&parts(&run.join("documents")), &cols) {
        let id = id.unwrap();
        assert!(out.insert(id.clone(), rest).is_none(), "{id} twice");
    }
    out
}

fn run_success(run: &Path) -> RunSuccess {
    serde_json::from_slice(&std::fs::read(run.join("_SUCCESS")).unwrap()).unwrap()
}

fn change_kinds(run: &Path) -> BTreeMap<String, String> {
    changes(run)
        .into_iter()
        .map(|(id, c)| (id, c[0].clone().unwrap()))
        .collect()
}

fn name(run: &Path) -> String {
    run.file_name().unwrap().to_string_lossy().into_owned()
}

#[test]
fn nightly_runs_process_only_new_changed_and_remodelled_documents() {
    let Some((f, model_a, model_b)) = fixture() else {
        return;
    };
    let a_docs: Vec<(String, String)> = (0..5).map(|i| (format!("a{i}"), text(i))).collect();
    let b_docs: Vec<(String, String)> = (0..5).map(|i| (format!("b{i}"), text(i + 7))).collect();
    write_texts(&f.corpus("a.parquet"), &a_docs);
    write_texts(&f.corpus("b.parquet"), &b_docs);
    let all: Vec<String> = a_docs.iter().chain(&b_docs).map(|d| d.0.clone()).collect();

    // 1. Everything is new and processed.
    let (stdout, r1) = f.run(&[]);
    assert!(
        stdout.contains("10 new, 0 changed, 0 model_changed, 0 unchanged (skipped), 0 deleted"),
        "{stdout}"
    );
    let kinds = change_kinds(&r1);
    assert_eq!(kinds.keys().cloned().collect::<Vec<_>>(), all);
    assert!(kinds.values().all(|k| k == "new"), "{kinds:?}");
    let docs1 = documents(&r1);
    assert_eq!(docs1.len(), 10);
    assert!(docs1.values().all(|d| d[0].as_deref() == Some("ok")));
    let s1 = run_success(&r1);
    assert_eq!(
        (s1.run_id.as_str(), s1.changes.new),
        (name(&r1).as_str(), 10)
    );
    assert_eq!(s1.success.documents.ok, 10);
    let state1 = f.state();
    assert_eq!(state1.keys().cloned().collect::<Vec<_>>(), all);
    for (id, [hash, model, run]) in &state1 {
        assert_eq!(Some(hash), docs1[id][1].as_ref());
        assert_eq!(Some(model), docs1[id][2].as_ref());
        assert_eq!(run, &name(&r1));
    }
    let model_a_id = docs1["a0"][2].clone().unwrap();
    assert!(!f.current().exists(), "a finished run is not left current");

    // 2. Same input: nothing is processed, nothing reported.
    let (stdout, r2) = f.run(&[]);
    assert_ne!(r1, r2);
    assert!(stdout.contains("0 new, 0 changed, 0 model_changed, 10 unchanged"));
    assert!(changes(&r2).is_empty());
    assert!(documents(&r2).is_empty());
    let s2 = run_success(&r2);
    assert_eq!(s2.changes.unchanged, 10);
    assert_eq!(s2.success.documents.ok + s2.success.documents.rejected, 0);
    assert_eq!(f.state(), state1);

    // 3. a1 edited, a2 deleted, a5 added: exactly those are processed and reported.
    let mut edited = a_docs.clone();
    edited[1].1.push_str(" The harbour closed in winter.");
    edited.remove(2);
    edited.push(("a5".into(), text(21)));
    write_texts(&f.corpus("a.parquet"), &edited);
    let (stdout, r3) = f.run(&[]);
    assert!(
        stdout.contains("1 new, 1 changed, 0 model_changed, 8 unchanged (skipped), 1 deleted"),
        "{stdout}"
    );
    let c3 = changes(&r3);
    let kinds: Vec<(&str, &str)> = c3
        .iter()
        .map(|(id, c)| (id.as_str(), c[0].as_deref().unwrap()))
        .collect();
    assert_eq!(kinds, [("a1", "changed"), ("a2", "deleted"), ("a5", "new")]);
    let docs3 = documents(&r3);
    assert_eq!(docs3.keys().collect::<Vec<_>>(), ["a1", "a5"]);
    let r1_name = Some(name(&r1));
    // The changed document: its old facts are in run 1, its new hash is this run's.
    assert_eq!(c3["a1"][1], docs3["a1"][1]);
    assert_eq!(c3["a1"][2].as_ref(), Some(&state1["a1"][0]));
    assert_ne!(c3["a1"][1], c3["a1"][2]);
    assert_eq!(c3["a1"][4], r1_name);
    assert_eq!(c3["a2"][1], None);
    assert_eq!(c3["a2"][2].as_ref(), Some(&state1["a2"][0]));
    assert_eq!(c3["a2"][4], r1_name);
    assert_eq!((c3["a5"][2].as_ref(), c3["a5"][4].as_ref()), (None, None));
    let state3 = f.state();
    assert_eq!(state3.len(), 10);
    assert!(!state3.contains_key("a2"));
    for (id, [_, _, run]) in &state3 {
        let expected = if ["a1", "a5"].contains(&id.as_str()) {
            name(&r3)
        } else {
            name(&r1)
        };
        assert_eq!(run, &expected, "{id}");
    }

    // 4. Another model: every document is reprocessed as model_changed.
    let b = model_b.to_string_lossy().into_owned();
    let (stdout, r4) = f.run(&["--model", &b]);
    assert!(
        stdout.contains("0 new, 0 changed, 10 model_changed"),
        "{stdout}"
    );
    let c4 = changes(&r4);
    assert_eq!(c4.len(), 10);
    for (id, [change, hash, previous, previous_model, _]) in &c4 {
        assert_eq!(change.as_deref(), Some("model_changed"), "{id}");
        assert_eq!(hash, previous, "{id}: same content");
        assert_eq!(previous_model.as_ref(), Some(&model_a_id), "{id}");
    }
    let docs4 = documents(&r4);
    assert_eq!(docs4.len(), 10);
    let model_b_id = docs4["a0"][2].clone().unwrap();
    assert_ne!(model_b_id, model_a_id);
    let state4 = f.state();
    assert!(state4
        .values()
        .all(|[_, m, run]| m == &model_b_id && run == &name(&r4)));

    // 5. Back to model A, killed as soon as the run is under way: the rerun resumes that run
    //    (same folder, no second run) and ends as an uninterrupted run would.
    let a = model_a.to_string_lossy().into_owned();
    let unfinished = f.start_and_kill(&["--model", &a]);
    let (_, r5) = f.run(&["--model", &a]);
    if let Some(id) = unfinished {
        assert_eq!(name(&r5), id, "the killed run was resumed");
    }
    assert_eq!(f.runs().len(), 5);
    let c5 = change_kinds(&r5);
    assert_eq!(c5.len(), 10);
    assert!(c5.values().all(|k| k == "model_changed"), "{c5:?}");
    assert_eq!(documents(&r5).len(), 10);
    let state5 = f.state();
    assert!(state5
        .values()
        .all(|[_, m, run]| m == &model_a_id && run == &name(&r5)));
    assert!(!f.current().exists());

    // 6. A killed run discarded with --overwrite: exactly one new, complete run replaces it.
    let unfinished = f.start_and_kill(&["--model", &b]);
    let (_, r6) = f.run(&["--model", &b, "--overwrite"]);
    assert_eq!(f.runs().len(), 6, "{:?}", f.runs());
    if let Some(id) = unfinished {
        assert!(id == name(&r6) || !f.out.join("runs").join(id).exists());
    }
    assert_eq!(changes(&r6).len(), 10);
    assert_eq!(documents(&r6).len(), 10);
    assert!(f.state().values().all(|[_, m, _]| m == &model_b_id));
}
