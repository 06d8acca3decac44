//! Inputs and outputs on an object store: the real binary against a real S3-compatible server
//! (moto, from `.venv`, started here on 127.0.0.1 at a free port and stopped after). A run from
//! `s3://` to `s3://` writes the tables of the same job run locally; a run killed with SIGKILL
//! and run again, two shards into one prefix and nightly increments end the same way; a missing
//! bucket, refused credentials and an unreachable store exit with the codes a job engine acts on.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use jerex::corpus::Document;
use jerex::engine::manifest::UnitRecord;
use jerex::model::folder;
use jerex::schema::TABLES;
use jerex::store;
use jerex::testing::{self as kit, table_rows, TinyModel};
use jerex::tools::sample;

const FILES: usize = 4;
const DOCS_PER_FILE: usize = 30;
const BUCKET: &str = "kbase";
/// Columns that differ between runs of one job (`seconds`) and between locations
/// (`source_file`, which names the input path).
const IGNORED: &[&str] = &["seconds", "source_file"];

/// A moto S3 server on a free local port, stopped when dropped.
struct Moto {
    child: Child,
    endpoint: String,
}

impl Moto {
    /// Starts moto (`env`: extra variables, e.g. to refuse every credential); `None` (skip)
    /// when `.venv` has no moto outside CI.
    fn start(env: &[(&str, &str)]) -> Option<Moto> {
        let bin = kit::repo_root().join(".venv/bin/moto_server");
        if !bin.is_file() {
            assert!(
                !kit::under_ci(),
                "CI needs moto[server] in .venv (scripts/requirements.txt)"
            );
            eprintln!("skipping: no {}", bin.display());
            return None;
        }
        // One start at a time: a port picked free must not be taken by another test's server
        // before this one binds it.
        static STARTING: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one = STARTING.lock().unwrap_or_else(|e| e.into_inner());
        let port = free_port();
        let child = Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let moto = Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let start = Instant::now();
        let mut moto = moto;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "moto did not start"
            );
            assert!(moto.child.try_wait().unwrap().is_none(), "moto exited");
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(moto)
    }

    /// Creates a bucket (moto takes an unsigned request).
    fn create_bucket(&self, name: &str) {
        let addr = self.endpoint.trim_start_matches("http://");
        let mut s = TcpStream::connect(addr).unwrap();
        write!(
            s,
            "PUT /{name} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }

    /// The credentials and endpoint a run gets from its environment.
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
        ]
    }

    /// `s3://BUCKET/...` on this server, for the test's own reads and writes (not through
    /// [`store::configure`], which is process-wide while these tests run side by side).
    fn remote(&self, url: &str) -> store::Remote {
        let key = url
            .strip_prefix(&format!("s3://{BUCKET}"))
            .unwrap_or_else(|| panic!("{url} is not in s3://{BUCKET}"));
        let s3 = object_store::aws::AmazonS3Builder::new()
            .with_endpoint(&self.endpoint)
            .with_allow_http(true)
            .with_bucket_name(BUCKET)
            .with_access_key_id("test")
            .with_secret_access_key("test")
            .with_region("us-east-1")
            .build()
            .unwrap();
        store::Remote {
            store: std::sync::Arc::new(s3),
            key: object_store::path::Path::from(key.trim_matches('/')),
            url: url.to_string(),
            root: format!("s3://{BUCKET}"),
        }
    }

    /// Copies every object below `url` into `dir` (the same relative names).
    fn download(&self, url: &str, dir: &Path) {
        let r = self.remote(url);
        for meta in store::list_all(&r).unwrap() {
            let key = meta.location.as_ref();
            let rel = key
                .strip_prefix(r.key.as_ref())
                .unwrap()
                .trim_start_matches('/');
            let target = dir.join(rel);
            std::fs::create_dir_all(target.parent().unwrap()).unwrap();
            let object = self.remote(&format!("{}/{key}", r.root));
            let bytes = store::get(&object).unwrap().unwrap().bytes;
            std::fs::write(target, bytes).unwrap();
        }
    }

    /// The names of the objects directly below `url`.
    fn names(&self, url: &str) -> Vec<String> {
        store::list_names(&self.remote(url)).unwrap()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One test at a time: each runs several processes (moto, jerex) that contend for the cores
/// when the tests run side by side, and a timed kill needs a run that progresses steadily.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The corpus uploaded to a fresh moto's bucket, the tests run one at a time; `None` (skip)
/// where the encoder or moto is missing outside CI.
fn uploaded() -> Option<(std::sync::MutexGuard<'static, ()>, Fixture, Moto)> {
    let serial = serial();
    let (Some(fx), Some(moto)) = (fixture(), Moto::start(&[])) else {
        return None;
    };
    moto.create_bucket(BUCKET);
    fx.upload(&moto);
    Some((serial, fx, moto))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A job over `FILES` Parquet files of short documents and a tiny model, with its corpus both
/// in `dir/corpus` and (after [`Fixture::upload`]) in `s3://kbase/corpus`.
struct Fixture {
    dir: tempfile::TempDir,
    model: PathBuf,
}

fn fixture() -> Option<Fixture> {
    let tokenizer_json = kit::require_encoder()?.join(folder::TOKENIZER_FILE);
    let dir = tempfile::tempdir().unwrap();
    let model = TinyModel::sparse(&tokenizer_json).save(dir.path(), "tiny-model");
    let places = ["Port Elling", "Varnholt", "Lake Ashby", "Corvin Bay"];
    let people = ["Alma Reyes", "Tomas Ekberg", "Noor Haddad", "Ivo Brandt"];
    for f in 0..FILES {
        let docs: Vec<Document> = (0..DOCS_PER_FILE)
            .map(|i| {
                let (p, l) = (people[(i + f) % 4], places[(i * 3 + f) % 4]);
                Document {
                    id: format!("f{f}-d{i}"),
                    text: Some(format!(
                        "{p} was born in {l} in {}. {p} later moved to {} with {}.",
                        1900 + i,
                        places[(i + 1) % 4],
                        people[(i + 2) % 4]
                    )),
                    ..Default::default()
                }
            })
            .collect();
        let path = dir.path().join(format!("corpus/part{f}.parquet"));
        sample::write_input_parquet(&path, &docs).unwrap();
    }
    Some(Fixture { dir, model })
}

impl Fixture {
    fn upload(&self, moto: &Moto) {
        for f in 0..FILES {
            let name = format!("corpus/part{f}.parquet");
            let bytes = std::fs::read(self.dir.path().join(&name)).unwrap();
            store::put(&moto.remote(&format!("s3://{BUCKET}/{name}")), bytes).unwrap();
        }
    }

    /// Writes a job file `name` reading `input` into `output`, with `extra` TOML appended.
    fn job(&self, name: &str, input: &str, output: &str, extra: &str) -> PathBuf {
        let job = self.dir.path().join(name);
        let toml = format!(
            "devices = \"cpu\"\nthreads = 1\n\
             [input]\npaths = [\"{input}\"]\nunit_rows = 15\n\
             [output]\ndir = \"{output}\"\n\
             [model]\ndir = \"{}\"\n\
             [batch]\nmax_docs = 1\nlookahead = 4\n\
             [writer]\nrows_per_part = 16\n{extra}",
            self.model.display()
        );
        std::fs::write(&job, toml).unwrap();
        job
    }

    fn command(&self, job: &Path, moto: &Moto, extra: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_jerex"));
        c.arg("run")
            .arg(job)
            .arg("--no-progress")
            .args(extra)
            .envs(moto.env())
            .env("RUST_LOG", "warn");
        c
    }

    /// The rows of the local run of the job (the reference).
    fn local_rows(&self) -> Vec<Vec<String>> {
        let job = self.job("local.toml", "corpus", "local-out", "");
        let o = Command::new(env!("CARGO_BIN_EXE_jerex"))
            .arg("run")
            .arg(&job)
            .arg("--no-progress")
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        ok(&o);
        table_rows(&self.dir.path().join("local-out"), IGNORED)
    }

    /// The rows of an output prefix, downloaded.
    fn remote_rows(&self, moto: &Moto, url: &str, name: &str) -> Vec<Vec<String>> {
        let local = self.dir.path().join(name);
        moto.download(url, &local);
        assert!(local.join("_SUCCESS").is_file(), "{url}: no _SUCCESS");
        check_only_committed_parts(&local);
        table_rows(&local, IGNORED)
    }
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A finished output's tables hold exactly the parts its unit records name (and the empty
/// part of a table no unit wrote rows to), nothing left of unfinished attempts.
fn check_only_committed_parts(out: &Path) {
    let mut named: Vec<String> = Vec::new();
    for entry in std::fs::read_dir(out.join("_manifest/units")).unwrap() {
        let record: UnitRecord =
            serde_json::from_slice(&std::fs::read(entry.unwrap().path()).unwrap()).unwrap();
        for (t, parts) in &record.parts {
            named.extend(parts.iter().map(|p| format!("{t}/{}", p.file)));
        }
    }
    let mut found = Vec::new();
    for t in TABLES {
        for entry in std::fs::read_dir(out.join(t)).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            if !name.starts_with("part-empty-") {
                found.push(format!("{t}/{name}"));
            }
        }
    }
    named.sort();
    found.sort();
    assert_eq!(found, named);
    assert!(
        !out.join("_staging").exists(),
        "no staging on an object store"
    );
}

#[test]
fn an_s3_run_writes_the_tables_of_a_local_run_and_resumes() {
    let Some((_serial, fx, moto)) = uploaded() else {
        return;
    };
    let expected = fx.local_rows();
    assert!(
        expected.iter().all(|t| !t.is_empty()),
        "every table has rows"
    );

    // The endpoint from the job's [storage] section here, from $AWS_ENDPOINT_URL elsewhere.
    let storage = format!("[storage]\nendpoint = \"{}\"\n", moto.endpoint);
    let job = fx.job(
        "s3.toml",
        "s3://kbase/corpus/*.parquet",
        "s3://kbase/out",
        &storage,
    );
    let o = fx
        .command(&job, &moto, &[])
        .env_remove("AWS_ENDPOINT_URL")
        .output()
        .unwrap();
    let stdout = ok(&o);
    assert!(stdout.contains("s3://kbase/out/_SUCCESS"), "{stdout}");
    assert_eq!(fx.remote_rows(&moto, "s3://kbase/out", "s3-out"), expected);
    // Parts carry the unit and the attempt; the documents name their input objects.
    let parts = moto.names("s3://kbase/out/relations");
    assert!(parts.iter().all(|p| p.split('-').count() == 4), "{parts:?}");
    let docs = std::fs::read_dir(fx.dir.path().join("s3-out/documents")).unwrap();
    let first = docs.map(|e| e.unwrap().path()).next().unwrap();
    let bytes = std::fs::read(first).unwrap();
    assert!(
        bytes.windows(18).any(|w| w == b"s3://kbase/corpus/"),
        "documents.source_file names the object"
    );
    assert!(
        moto.names("s3://kbase/out/_leases").is_empty(),
        "the lease is released"
    );

    // Run again: every unit is already finished.
    let stdout = ok(&fx.command(&job, &moto, &[]).output().unwrap());
    assert!(stdout.contains("resumed: 8 of 8 units"), "{stdout}");
    // A folder (prefix) as input, the same corpus: the same rows in another prefix.
    let job = fx.job("s3-dir.toml", "s3://kbase/corpus", "s3://kbase/out-dir", "");
    ok(&fx.command(&job, &moto, &[]).output().unwrap());
    assert_eq!(
        fx.remote_rows(&moto, "s3://kbase/out-dir", "s3-dir-out"),
        expected
    );
}

#[test]
fn a_killed_s3_run_resumes_to_exactly_the_rows_of_an_uninterrupted_run() {
    let Some((_serial, fx, moto)) = uploaded() else {
        return;
    };
    let expected = fx.local_rows();
    let job = fx.job("s3.toml", "s3://kbase/corpus", "s3://kbase/killed", "");
    // Killed once some units are committed and before all are: parts of the unit in progress
    // are left in the tables, under this attempt's names.
    let mut child = fx
        .command(&job, &moto, &[])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let killed = loop {
        if child.try_wait().unwrap().is_some() {
            break false;
        }
        let committed = moto.names("s3://kbase/killed/_manifest/units").len();
        if committed >= 2 {
            child.kill().unwrap();
            child.wait().unwrap();
            break true;
        }
        assert!(start.elapsed() < Duration::from_secs(300), "run hangs");
        // Each look is a listing request: not so often that the server slows the run down.
        std::thread::sleep(Duration::from_millis(250));
    };
    assert!(killed, "the run ended before the kill");
    assert!(moto
        .names("s3://kbase/killed")
        .iter()
        .all(|n| n != "_SUCCESS"));
    // The lease of the killed process (same host, process gone) is taken over.
    let stdout = ok(&fx.command(&job, &moto, &[]).output().unwrap());
    assert!(stdout.contains("resumed: "), "{stdout}");
    assert_eq!(
        fx.remote_rows(&moto, "s3://kbase/killed", "killed-out"),
        expected
    );
}

#[test]
fn two_shards_write_one_prefix_and_an_incremental_job_runs_on_s3() {
    let Some((_serial, fx, moto)) = uploaded() else {
        return;
    };
    let expected = fx.local_rows();
    let job = fx.job("s3.toml", "s3://kbase/corpus", "s3://kbase/sharded", "");
    let shards: Vec<Child> = (0..2)
        .map(|i| {
            fx.command(
                &job,
                &moto,
                &["--shard-count", "2", "--shard-index", &i.to_string()],
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
        })
        .collect();
    for s in shards {
        ok(&s.wait_with_output().unwrap());
    }
    assert_eq!(
        fx.remote_rows(&moto, "s3://kbase/sharded", "sharded-out"),
        expected
    );
    assert_eq!(
        moto.names("s3://kbase/sharded/_manifest/shards"),
        ["0-of-2.json", "1-of-2.json"]
    );

    // Nightly increments: the first run processes everything, the second nothing.
    let job = fx.job(
        "nightly.toml",
        "s3://kbase/corpus",
        "s3://kbase/nightly",
        "[incremental]\nenabled = true\n",
    );
    let first = ok(&fx.command(&job, &moto, &[]).output().unwrap());
    assert!(first.contains("120 new, 0 changed"), "{first}");
    let second = ok(&fx.command(&job, &moto, &[]).output().unwrap());
    assert!(
        second.contains("0 new, 0 changed, 0 model_changed, 120 unchanged"),
        "{second}"
    );
    assert_eq!(
        moto.names("s3://kbase/nightly/_state"),
        ["documents.parquet"]
    );
    let runs = store::list_all(&moto.remote("s3://kbase/nightly/runs")).unwrap();
    let successes = runs
        .iter()
        .filter(|m| m.location.as_ref().ends_with("/_SUCCESS"))
        .count();
    assert_eq!(successes, 2);
}

/// Runs the job and returns its exit code and stderr.
fn failing(c: &mut Command) -> (i32, String) {
    let o = c.output().unwrap();
    let code = o.status.code().unwrap_or(-1);
    (code, String::from_utf8_lossy(&o.stderr).into_owned())
}

#[test]
fn a_missing_bucket_refused_credentials_and_an_unreachable_store_are_reported() {
    let Some((_serial, fx, moto)) = uploaded() else {
        return;
    };

    // A missing output bucket: a configuration error naming the URL, before any work.
    let job = fx.job(
        "nobucket.toml",
        "s3://kbase/corpus",
        "s3://no-such-bucket/out",
        "",
    );
    let (code, stderr) = failing(&mut fx.command(&job, &moto, &[]));
    assert_eq!(code, 78, "{stderr}");
    assert!(
        stderr.contains("s3://no-such-bucket/out") && stderr.contains("bucket does not exist"),
        "{stderr}"
    );
    // A missing input bucket.
    let job = fx.job(
        "noinput.toml",
        "s3://no-such-bucket/corpus",
        "s3://kbase/x",
        "",
    );
    let (code, stderr) = failing(&mut fx.command(&job, &moto, &[]));
    assert_eq!(code, 78, "{stderr}");
    assert!(stderr.contains("s3://no-such-bucket/corpus"), "{stderr}");

    // Credentials the store refuses (a server that knows no access key).
    let strict = Moto::start(&[("INITIAL_NO_AUTH_ACTION_COUNT", "0")]).unwrap();
    let job = fx.job("denied.toml", "corpus", "s3://kbase/out", "");
    let (code, stderr) = failing(&mut fx.command(&job, &strict, &[]));
    assert_eq!(code, 78, "{stderr}");
    assert!(
        stderr.contains("s3://kbase/out") && stderr.contains("access denied"),
        "{stderr}"
    );

    // An unreachable store: retryable.
    // Port 1: only root may listen there, and nothing does.
    let closed = "http://127.0.0.1:1";
    let storage = format!("[storage]\nendpoint = \"{closed}\"\nretries = 0\n");
    let job = fx.job("unreachable.toml", "corpus", "s3://kbase/out", &storage);
    let (code, stderr) = failing(fx.command(&job, &moto, &[]).env_remove("AWS_ENDPOINT_URL"));
    assert_eq!(code, 75, "{stderr}");
    assert!(stderr.contains("s3://kbase/out"), "{stderr}");

    // Nothing of the failed runs reached the bucket that exists.
    assert!(
        moto.names("s3://kbase").is_empty(),
        "{:?}",
        moto.names("s3://kbase")
    );
}
