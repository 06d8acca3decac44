//! Inputs and outputs on an object store: the real binary against S3 and Azure Blob emulators
//! (moto and Azurite, see `servers`), started here on 127.0.0.1 and stopped after. The store
//! operations the commit protocol rests on (conditional writes, multipart uploads) work on each;
//! a run from the store to the store writes the tables of the same job run locally; a run killed
//! with SIGKILL inside a unit and run again, two shards into one prefix and nightly increments
//! end the same way; a missing bucket, refused credentials and an unreachable store exit with the
//! codes a job engine acts on.

use std::io::Write;
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

#[path = "object_store/servers.rs"]
mod servers;
use servers::{Provider, Server, BUCKET};

const FILES: usize = 4;
const DOCS_PER_FILE: usize = 30;
/// Columns that differ between runs of one job (`seconds`) and between locations
/// (`source_file`, which names the input path).
const IGNORED: &[&str] = &["seconds", "source_file"];

/// One test at a time: each runs several processes (server, jerex) that contend for the cores
/// when the tests run side by side, and a timed kill needs a run that progresses steadily.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The corpus uploaded to a fresh server's bucket, the tests run one at a time; `None` (skip)
/// where the encoder or server is missing outside CI.
fn uploaded(provider: Provider) -> Option<(std::sync::MutexGuard<'static, ()>, Fixture, Server)> {
    let serial = serial();
    let (Some(fx), Some(server)) = (fixture(), Server::start(provider, &[])) else {
        return None;
    };
    server.create_bucket(BUCKET);
    fx.upload(&server);
    Some((serial, fx, server))
}

/// A job over `FILES` Parquet files of short documents and a tiny model, with its corpus both
/// in `dir/corpus` and (after [`Fixture::upload`]) in `<scheme>://kbase/corpus`.
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
    fn upload(&self, server: &Server) {
        for f in 0..FILES {
            let name = format!("corpus/part{f}.parquet");
            let bytes = std::fs::read(self.dir.path().join(&name)).unwrap();
            store::put(&server.remote(&server.url(&name)), bytes).unwrap();
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

    fn command(&self, job: &Path, server: &Server, extra: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_jerex"));
        c.arg("run")
            .arg(job)
            .arg("--no-progress")
            .args(extra)
            .envs(server.env())
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
    fn remote_rows(&self, server: &Server, url: &str, name: &str) -> Vec<Vec<String>> {
        let local = self.dir.path().join(name);
        server.download(url, &local);
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
/// part of a table no unit wrote rows to), nothing left of unfinished attempts, and `_SUCCESS`
/// lists exactly them.
fn check_only_committed_parts(out: &Path) {
    let success: jerex::engine::manifest::Success =
        serde_json::from_slice(&std::fs::read(out.join("_SUCCESS")).unwrap()).unwrap();
    let mut all: Vec<String> = Vec::new();
    for t in TABLES {
        for entry in std::fs::read_dir(out.join(t)).unwrap() {
            all.push(entry.unwrap().file_name().to_string_lossy().into_owned());
        }
        all.sort();
        assert_eq!(
            all, success.parts[t],
            "{t}: _SUCCESS lists the table's parts"
        );
        all.clear();
    }
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

/// A run from the store to the store writes the tables of the same job run locally, and a
/// second run finds every unit finished.
fn run_writes_the_tables_of_a_local_run_and_resumes(provider: Provider) {
    let Some((_serial, fx, server)) = uploaded(provider) else {
        return;
    };
    let expected = fx.local_rows();
    assert!(
        expected.iter().all(|t| !t.is_empty()),
        "every table has rows"
    );
    let (input, out) = (server.url("corpus/*.parquet"), server.url("out"));

    let job = if provider == Provider::S3 {
        // The endpoint from the job's [storage] section here, from $AWS_ENDPOINT_URL elsewhere.
        let storage = format!("[storage]\nendpoint = \"{}\"\n", server.endpoint);
        fx.job("store.toml", &input, &out, &storage)
    } else {
        fx.job("store.toml", &input, &out, "")
    };
    let o = fx
        .command(&job, &server, &[])
        .env_remove("AWS_ENDPOINT_URL")
        .output()
        .unwrap();
    let stdout = ok(&o);
    assert!(stdout.contains(&format!("{out}/_SUCCESS")), "{stdout}");
    assert_eq!(fx.remote_rows(&server, &out, "store-out"), expected);
    // Parts carry the unit and the attempt; the documents name their input objects.
    let parts = server.names(&format!("{out}/relations"));
    assert!(parts.iter().all(|p| p.split('-').count() == 4), "{parts:?}");
    let docs = std::fs::read_dir(fx.dir.path().join("store-out/documents")).unwrap();
    let first = docs.map(|e| e.unwrap().path()).next().unwrap();
    let bytes = std::fs::read(first).unwrap();
    let corpus = server.url("corpus/");
    assert!(
        bytes.windows(corpus.len()).any(|w| w == corpus.as_bytes()),
        "documents.source_file names the object"
    );
    assert!(
        server.names(&format!("{out}/_leases")).is_empty(),
        "the lease is released"
    );

    // Run again: every unit is already finished.
    let stdout = ok(&fx.command(&job, &server, &[]).output().unwrap());
    assert!(stdout.contains("resumed: 8 of 8 units"), "{stdout}");
    // A folder (prefix) as input, the same corpus: the same rows in another prefix.
    let out = server.url("out-dir");
    let job = fx.job("store-dir.toml", &server.url("corpus"), &out, "");
    ok(&fx.command(&job, &server, &[]).output().unwrap());
    assert_eq!(fx.remote_rows(&server, &out, "store-dir-out"), expected);
}

#[test]
fn an_s3_run_writes_the_tables_of_a_local_run_and_resumes() {
    run_writes_the_tables_of_a_local_run_and_resumes(Provider::S3);
}

#[test]
fn an_azure_blob_run_writes_the_tables_of_a_local_run_and_resumes() {
    run_writes_the_tables_of_a_local_run_and_resumes(Provider::Azure);
}

/// A run killed with SIGKILL in the middle of a unit leaves parts no record names; the run
/// after it deletes them and ends with exactly the rows of an uninterrupted run.
fn killed_run_resumes_to_exactly_the_rows_of_an_uninterrupted_run(provider: Provider) {
    let Some((_serial, fx, server)) = uploaded(provider) else {
        return;
    };
    let expected = fx.local_rows();
    let out = server.url("killed");
    // A part per row: a unit spends most of its time uploading parts before its record, so
    // the kill lands inside a unit.
    let job = fx.job("killed.toml", &server.url("corpus"), &out, "");
    let toml = std::fs::read_to_string(&job).unwrap();
    std::fs::write(
        &job,
        toml.replace("rows_per_part = 16", "rows_per_part = 1"),
    )
    .unwrap();
    let mut child = fx
        .command(&job, &server, &[])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let leftovers = loop {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before the kill"
        );
        let committed = server.names(&format!("{out}/_manifest/units")).len();
        if committed >= 1 && !uncommitted_parts(&server, &out).is_empty() {
            child.kill().unwrap();
            child.wait().unwrap();
            break uncommitted_parts(&server, &out);
        }
        assert!(start.elapsed() < Duration::from_secs(300), "run hangs");
        // Each look is a listing request: not so often that the server slows the run down.
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        !leftovers.is_empty(),
        "the kill landed between two units: no leftovers to clean"
    );
    assert!(!server.names(&out).iter().any(|n| n == "_SUCCESS"));
    // The lease of the killed process (same host, process gone) is taken over.
    let stdout = ok(&fx.command(&job, &server, &[]).output().unwrap());
    assert!(stdout.contains("resumed: "), "{stdout}");
    let rows = fx.remote_rows(&server, &out, "killed-out");
    assert_eq!(rows, expected);
    let remaining: Vec<&String> = leftovers
        .iter()
        .filter(|p| {
            let part = server.remote(&format!("{out}/{p}"));
            store::get(&part).unwrap().is_some()
        })
        .collect();
    assert!(remaining.is_empty(), "leftovers not deleted: {remaining:?}");
}

/// Parts in the output's tables that no unit record names: what an unfinished unit left.
fn uncommitted_parts(server: &Server, out: &str) -> Vec<String> {
    let mut named = std::collections::HashSet::new();
    let records = store::list_all(&server.remote(&format!("{out}/_manifest/units"))).unwrap();
    for meta in records {
        let url = format!("{}/{}", server.url("").trim_end_matches('/'), meta.location);
        let Some(got) = store::get(&server.remote(&url)).unwrap() else {
            continue;
        };
        let record: UnitRecord = serde_json::from_slice(&got.bytes).unwrap();
        for (t, parts) in &record.parts {
            named.extend(parts.iter().map(|p| format!("{t}/{}", p.file)));
        }
    }
    let mut found = Vec::new();
    for t in TABLES {
        for name in server.names(&format!("{out}/{t}")) {
            let part = format!("{t}/{name}");
            if !named.contains(&part) {
                found.push(part);
            }
        }
    }
    found
}

#[test]
fn a_killed_s3_run_resumes_to_exactly_the_rows_of_an_uninterrupted_run() {
    killed_run_resumes_to_exactly_the_rows_of_an_uninterrupted_run(Provider::S3);
}

#[test]
fn a_killed_azure_blob_run_resumes_to_exactly_the_rows_of_an_uninterrupted_run() {
    killed_run_resumes_to_exactly_the_rows_of_an_uninterrupted_run(Provider::Azure);
}

/// Two shards write one prefix; a nightly increment runs twice, the second time on nothing.
fn shards_and_increments(provider: Provider) {
    let Some((_serial, fx, server)) = uploaded(provider) else {
        return;
    };
    let expected = fx.local_rows();
    let job = fx.job("s3.toml", &server.url("corpus"), &server.url("sharded"), "");
    let shards: Vec<Child> = (0..2)
        .map(|i| {
            fx.command(
                &job,
                &server,
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
        fx.remote_rows(&server, &server.url("sharded"), "sharded-out"),
        expected
    );
    assert_eq!(
        server.names(&server.url("sharded/_manifest/shards")),
        ["0-of-2.json", "1-of-2.json"]
    );

    // Nightly increments: the first run processes everything, the second nothing.
    let job = fx.job(
        "nightly.toml",
        &server.url("corpus"),
        &server.url("nightly"),
        "[incremental]\nenabled = true\n",
    );
    let first = ok(&fx.command(&job, &server, &[]).output().unwrap());
    assert!(first.contains("120 new, 0 changed"), "{first}");
    let second = ok(&fx.command(&job, &server, &[]).output().unwrap());
    assert!(
        second.contains("0 new, 0 changed, 0 model_changed, 120 unchanged"),
        "{second}"
    );
    assert_eq!(
        server.names(&server.url("nightly/_state")),
        ["documents.parquet"]
    );
    let runs = store::list_all(&server.remote(&server.url("nightly/runs"))).unwrap();
    let successes = runs
        .iter()
        .filter(|m| m.location.as_ref().ends_with("/_SUCCESS"))
        .count();
    assert_eq!(successes, 2);
}

#[test]
fn two_shards_write_one_prefix_and_an_incremental_job_runs_on_s3() {
    shards_and_increments(Provider::S3);
}

#[test]
fn two_shards_write_one_prefix_and_an_incremental_job_runs_on_azure_blob() {
    shards_and_increments(Provider::Azure);
}

/// Runs the job and returns its exit code and stderr.
fn failing(c: &mut Command) -> (i32, String) {
    let o = c.output().unwrap();
    let code = o.status.code().unwrap_or(-1);
    (code, String::from_utf8_lossy(&o.stderr).into_owned())
}

#[test]
fn a_missing_bucket_refused_credentials_and_an_unreachable_store_are_reported() {
    let Some((_serial, fx, server)) = uploaded(Provider::S3) else {
        return;
    };

    // A missing output bucket: a configuration error naming the URL, before any work.
    let job = fx.job(
        "nobucket.toml",
        "s3://kbase/corpus",
        "s3://no-such-bucket/out",
        "",
    );
    let (code, stderr) = failing(&mut fx.command(&job, &server, &[]));
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
    let (code, stderr) = failing(&mut fx.command(&job, &server, &[]));
    assert_eq!(code, 78, "{stderr}");
    assert!(stderr.contains("s3://no-such-bucket/corpus"), "{stderr}");

    // Credentials the store refuses (a server that knows no access key).
    let strict = Server::start(Provider::S3, &[("INITIAL_NO_AUTH_ACTION_COUNT", "0")]).unwrap();
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
    let (code, stderr) = failing(
        fx.command(&job, &server, &[])
            .env_remove("AWS_ENDPOINT_URL"),
    );
    assert_eq!(code, 75, "{stderr}");
    assert!(stderr.contains("s3://kbase/out"), "{stderr}");

    // Nothing of the failed runs reached the bucket that exists.
    assert!(
        server.names("s3://kbase").is_empty(),
        "{:?}",
        server.names("s3://kbase")
    );
}

/// The store operations jerex builds its commit protocol on, against one provider's emulator:
/// whole-object reads and writes, create-if-absent, replace-if-unchanged, listing, copy,
/// delete, and an upload large enough to go up in several parts.
fn store_operations(provider: Provider) {
    let Some(server) = Server::start(provider, &[]) else {
        return;
    };
    server.create_bucket(BUCKET);
    let at = |path: &str| server.remote(&server.url(path));

    let a = at("dir/a.json");
    assert!(store::get(&a).unwrap().is_none());
    store::put(&a, b"one".to_vec()).unwrap();
    let first = store::get(&a).unwrap().unwrap();
    assert_eq!(&first.bytes[..], b"one");

    // Create-if-absent: once only.
    let lease = at("dir/lease.json");
    assert!(store::create(&lease, b"mine".to_vec()).unwrap());
    assert!(!store::create(&lease, b"theirs".to_vec()).unwrap());
    assert_eq!(&store::get(&lease).unwrap().unwrap().bytes[..], b"mine");

    // Replace-if-unchanged: the version read wins once; a stale one loses.
    let read = store::get(&lease).unwrap().unwrap();
    let renewed = store::replace(&lease, b"renewed".to_vec(), &read.version).unwrap();
    assert!(renewed.is_some());
    assert_eq!(
        store::replace(&lease, b"stale".to_vec(), &read.version).unwrap(),
        None
    );
    assert_eq!(&store::get(&lease).unwrap().unwrap().bytes[..], b"renewed");

    // An upload of more than one part goes up as a multipart upload and reads back whole;
    // one dropped before it finishes leaves nothing.
    let big: Vec<u8> = (0..store::write::PART_BYTES * 2 + 12_345)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    let part = at("dir/tables/part-0.parquet");
    let mut upload = store::write::Upload::new(&part);
    for chunk in big.chunks(1 << 20) {
        upload.write_all(chunk).unwrap();
    }
    upload.finish().unwrap();
    assert!(store::get(&part).unwrap().unwrap().bytes == big);
    let dropped = at("dir/tables/part-1.parquet");
    let mut upload = store::write::Upload::new(&dropped);
    upload.write_all(&big).unwrap();
    drop(upload);
    assert!(store::get(&dropped).unwrap().is_none());

    // Listing: the files directly below a prefix, and everything below it.
    assert_eq!(
        store::list_names(&at("dir")).unwrap(),
        ["a.json", "lease.json"]
    );
    assert_eq!(store::list_all(&at("dir")).unwrap().len(), 3);
    store::copy(&a, &at("dir/b.json")).unwrap();
    assert_eq!(
        &store::get(&at("dir/b.json")).unwrap().unwrap().bytes[..],
        b"one"
    );

    assert!(store::delete(&a).unwrap());
    assert!(!store::delete(&a).unwrap());
    store::delete_all(&at("dir")).unwrap();
    assert!(store::list_all(&at("dir")).unwrap().is_empty());
}

#[test]
fn store_operations_on_s3() {
    store_operations(Provider::S3);
}

#[test]
fn store_operations_on_azure_blob() {
    store_operations(Provider::Azure);
}

#[test]
fn a_missing_container_and_a_refused_key_are_reported_on_azure_blob() {
    let Some((_serial, fx, server)) = uploaded(Provider::Azure) else {
        return;
    };
    let missing = "az://no-such-container/out";
    let job = fx.job("nocontainer.toml", &server.url("corpus"), missing, "");
    let (code, stderr) = failing(&mut fx.command(&job, &server, &[]));
    assert_eq!(code, 78, "{stderr}");
    assert!(
        stderr.contains(missing) && stderr.contains("does not exist"),
        "{stderr}"
    );

    // A key the account does not have: every request is refused.
    let out = server.url("out");
    let job = fx.job("badkey.toml", "corpus", &out, "");
    let wrong_key = "d3Jvbmcta2V5LW9mLXRoZS1yaWdodC1sZW5ndGgtZm9yLWF6dXJl";
    let (code, stderr) = failing(
        fx.command(&job, &server, &[])
            .env("AZURE_STORAGE_ACCOUNT_KEY", wrong_key),
    );
    assert_eq!(code, 78, "{stderr}");
    assert!(
        stderr.contains(&out) && stderr.contains("access denied"),
        "{stderr}"
    );
    assert!(server.names(&out).is_empty());
}

/// A writer whose lease was taken over (stalled, then back) finds out at its commit, which
/// fails and deletes the parts it had uploaded into the tables: the new holder's `_SUCCESS`
/// lists exactly the committed parts either way.
#[test]
fn a_writer_whose_lease_was_taken_over_takes_back_its_parts_at_commit() {
    use jerex::engine::lease::Lease;
    use jerex::engine::manifest::{now, Manifest, PartRecord};
    use jerex::engine::plan::Shard;
    use jerex::engine::Unit;
    use jerex::output::writer::{Compression, OutputFormat};

    let _serial = serial();
    let Some(server) = Server::start(Provider::S3, &[]) else {
        return;
    };
    server.create_bucket(BUCKET);
    // This test alone opens `s3://` locations through jerex's own configuration.
    store::configure(&store::StorageConfig {
        endpoint: Some(server.endpoint.clone()),
        options: [
            ("aws_access_key_id", "test"),
            ("aws_secret_access_key", "test"),
            ("aws_region", "us-east-1"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .into(),
        ..Default::default()
    });
    let out = PathBuf::from(server.url("zombie"));
    let shard = Shard { index: 0, count: 1 };
    let lease = Lease::acquire(&out, shard, false).unwrap();
    let manifest = Manifest::create(&out).unwrap();
    let unit = Unit::file(Path::new("corpus/part0.parquet"));
    let parts = manifest
        .stage(&unit, OutputFormat::Parquet, Compression::Zstd)
        .unwrap();
    let schema = jerex::schema::table("documents").arrow_schema();
    let written = parts
        .write(
            "documents",
            &parts.stem(&unit.hash, 0),
            &arrow::array::RecordBatch::new_empty(schema),
        )
        .unwrap();
    let file = written.file_name().unwrap().to_string_lossy().into_owned();
    let uploaded = server.names(&server.url("zombie/documents"));
    assert_eq!(uploaded, std::slice::from_ref(&file));

    // Another machine found the lease stale and took it over.
    let lease_object = server.remote(&server.url("zombie/_leases/0-of-1.json"));
    let mut holder: serde_json::Value =
        serde_json::from_slice(&store::get(&lease_object).unwrap().unwrap().bytes).unwrap();
    holder["token"] = "the-new-holder".into();
    store::put(&lease_object, serde_json::to_vec(&holder).unwrap()).unwrap();

    let record = UnitRecord {
        hash: unit.hash.clone(),
        source_file: unit.path.clone(),
        row_groups: None,
        rows: None,
        parts: TABLES
            .iter()
            .map(|t| (t.to_string(), Vec::new()))
            .chain([("documents".to_string(), vec![PartRecord { file, rows: 0 }])])
            .collect(),
        documents: Default::default(),
        finished: now(),
    };
    let lost = manifest.commit(&record).unwrap_err().to_string();
    assert!(lost.contains("taken over"), "{lost}");
    assert!(server.names(&server.url("zombie/documents")).is_empty());
    assert!(server
        .names(&server.url("zombie/_manifest/units"))
        .is_empty());
    drop(lease);
    // The lease is the new holder's: the old one leaves it in place.
    assert_eq!(server.names(&server.url("zombie/_leases")), ["0-of-1.json"]);
}
