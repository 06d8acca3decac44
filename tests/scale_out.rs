//! Scale-out as users meet it: `jerex plan`, shard settings from the environment of a job engine,
//! the Kubernetes and Slurm files in `jobs/` (parsed, checked against each other and against the
//! Dockerfiles' release image, and their wrappers run with a stand-in `jerex`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use jerex::corpus::Document;
use jerex::engine::Job;
use jerex::testing::{python_with, repo_root, sample_corpus, text, under_ci, write_texts};
use jerex::tools::sample;
use serde_json::Value;

/// Variables through which a job engine picks the shard: cleared so that a test run inside a
/// Kubernetes pod or a Slurm allocation still tests what it means to.
const SHARD_VARS: [&str; 6] = [
    "JEREX_SHARD_COUNT",
    "JOB_COMPLETION_INDEX",
    "SLURM_ARRAY_TASK_ID",
    "SLURM_ARRAY_TASK_MIN",
    "SLURM_ARRAY_TASK_STEP",
    "SLURM_ARRAY_TASK_COUNT",
];

fn jerex() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_jerex"));
    for v in SHARD_VARS {
        cmd.env_remove(v);
    }
    cmd
}

/// A job over two files (260 and 30 rows; row groups of 128) with units of about 128 rows.
fn small_job(dir: &Path) -> PathBuf {
    let docs = |prefix: &str, n: usize| -> Vec<(String, String)> {
        (0..n)
            .map(|i| {
                (
                    format!("{prefix}{i}"),
                    format!("Item {i} of {prefix} is short."),
                )
            })
            .collect()
    };
    std::fs::create_dir_all(dir.join("data")).unwrap();
    write_texts(&dir.join("data/a.parquet"), &docs("a", 260));
    write_texts(&dir.join("data/b.parquet"), &docs("b", 30));
    let job = dir.join("job.toml");
    std::fs::write(
        &job,
        "[input]\npaths = [\"data/*.parquet\"]\nunit_rows = 128\n[output]\ndir = \"out\"\n",
    )
    .unwrap();
    job
}

fn plan_json(cmd: &mut Command) -> Value {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn unit_ids(shard: &Value) -> Vec<String> {
    shard["units"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["hash"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn plan_prints_a_disjoint_complete_partition() {
    let dir = tempfile::tempdir().unwrap();
    let job = small_job(dir.path());
    let all = plan_json(
        jerex()
            .arg("plan")
            .arg(&job)
            .args(["--shard-count", "2", "--json"]),
    );
    assert_eq!(all["shard_count"], 2);
    // a: groups 0..1, 1..2, 2..3 (128, 128, 4 rows); b: the whole file.
    assert_eq!(all["total"]["units"], 4);
    assert_eq!(all["total"]["rows"], 290);
    let shards = all["shards"].as_array().unwrap();
    assert_eq!(shards.len(), 2);
    let mut seen = BTreeSet::new();
    let mut rows = 0;
    for s in shards {
        for id in unit_ids(s) {
            assert!(seen.insert(id), "a unit in two shards");
        }
        rows += s["totals"]["rows"].as_u64().unwrap();
    }
    assert_eq!((seen.len(), rows), (4, 290));

    // One shard alone lists the same units as in the whole partition.
    let one = plan_json(jerex().arg("plan").arg(&job).args([
        "--shard-count",
        "2",
        "--shard-index",
        "1",
        "--json",
    ]));
    assert_eq!(one["shards"].as_array().unwrap().len(), 1);
    assert_eq!(unit_ids(&one["shards"][0]), unit_ids(&shards[1]));

    // The count can come from the environment, as in a Kubernetes pod; flags override the job.
    let env = plan_json(
        jerex()
            .arg("plan")
            .arg(&job)
            .args(["--json", "--unit-rows", "1000"])
            .env("JEREX_SHARD_COUNT", "3"),
    );
    assert_eq!(env["shard_count"], 3);
    assert_eq!(env["total"]["units"], 2, "one unit per file at 1000 rows");

    let table = jerex().arg("plan").arg(&job).output().unwrap();
    assert!(table.status.success());
    let table = text(&table.stdout);
    assert!(
        table.starts_with("shard") && table.contains("total"),
        "{table}"
    );
}

fn assert_config_error(out: &Output, names: &str) {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "bad configuration: {err}");
    assert!(err.contains(names), "{err}");
}

#[test]
fn impossible_shards_are_configuration_errors() {
    let dir = tempfile::tempdir().unwrap();
    let job = small_job(dir.path());
    // An index without a count would have every pod run the same units.
    let out = jerex()
        .arg("run")
        .arg(&job)
        .env("JOB_COMPLETION_INDEX", "1")
        .output()
        .unwrap();
    assert_config_error(&out, "JOB_COMPLETION_INDEX");
    let out = jerex()
        .arg("run")
        .arg(&job)
        .env("SLURM_ARRAY_TASK_ID", "8")
        .env("SLURM_ARRAY_TASK_COUNT", "8")
        .output()
        .unwrap();
    assert_config_error(&out, "SLURM_ARRAY_TASK_ID");
    let out = jerex()
        .arg("plan")
        .arg(&job)
        .args(["--shard-count", "2", "--shard-index", "2"])
        .output()
        .unwrap();
    assert_config_error(&out, "--shard-index");
    assert!(
        !dir.path().join("out").exists(),
        "nothing is written before the shard is known"
    );
}

#[test]
fn reprocess_job_is_valid_and_plans_an_archive() {
    let file = repo_root().join("jobs/reprocess-archive.toml");
    let job = Job::load(&file).unwrap();
    assert!(job.input.paths[0].contains('*'), "a glob over the archive");
    let dir = tempfile::tempdir().unwrap();
    small_job(dir.path());
    let archive = dir.path().join("data").to_string_lossy().into_owned();
    let plan = plan_json(jerex().arg("plan").arg(&file).args([
        "--input",
        &archive,
        "--shard-count",
        "8",
        "--json",
    ]));
    let shards = plan["shards"].as_array().unwrap();
    assert_eq!(shards.len(), 8);
    let busy = shards.iter().filter(|s| s["totals"]["units"] != 0).count();
    assert_eq!(busy, 2, "two files of fewer than 5,000 rows: two units");
}

/// A stand-in `jerex` (and `scontrol`, `apptainer`) on PATH: logs its arguments and shard
/// variables to `calls`, exits with `$FAKE_EXIT`.
fn fake_bin(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for name in ["jerex", "scontrol", "apptainer"] {
        let script = format!(
            "#!/bin/sh\necho \"{name} $* index=${{JOB_COMPLETION_INDEX:-}} \
             count=${{JEREX_SHARD_COUNT:-}}\" >> \"$CALLS\"\nexit ${{FAKE_EXIT:-0}}\n"
        );
        let path = bin.join(name);
        std::fs::write(&path, script).unwrap();
        let mut perms = std::fs::metadata(&path).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        std::fs::set_permissions(&path, perms).unwrap();
    }
    bin
}

/// Runs `program args` with the fake `jerex` first on PATH; returns the exit code and the calls.
fn with_fake(program: &str, args: &[&str], envs: &[(&str, &str)]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let bin = fake_bin(dir.path());
    let calls = dir.path().join("calls");
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(repo_root())
        .env("PATH", path)
        .env("CALLS", &calls)
        .env_remove("SLURM_JOB_ID")
        .env_remove("SLURM_RESTART_COUNT");
    for v in SHARD_VARS {
        cmd.env_remove(v);
    }
    cmd.envs(envs.iter().copied());
    let status = cmd.status().unwrap();
    (
        status.code().unwrap(),
        std::fs::read_to_string(&calls).unwrap_or_default(),
    )
}

/// The Kubernetes manifest as JSON (PyYAML reads it, as kubectl would).
fn k8s_manifest() -> Option<Value> {
    let out = Command::new(python_with("yaml")?)
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
        ])
        .arg(repo_root().join("jobs/k8s-reprocess.yaml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    Some(serde_json::from_slice(&out.stdout).unwrap())
}

#[test]
fn kubernetes_indexed_job_matches_the_job_and_maps_exit_codes() {
    let Some(m) = k8s_manifest() else { return };
    assert_eq!(
        (&m["apiVersion"], &m["kind"]),
        (&"batch/v1".into(), &"Job".into())
    );
    let spec = &m["spec"];
    assert_eq!(spec["completionMode"], "Indexed");
    assert!(spec["backoffLimitPerIndex"].as_u64().unwrap() >= 1);
    let pod = &spec["template"]["spec"];
    assert_eq!(
        pod["restartPolicy"], "Never",
        "required by podFailurePolicy"
    );
    let container = &pod["containers"][0];
    let env = |name: &str| {
        container["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .map(|e| e["value"].as_str().unwrap().to_string())
    };
    let count = spec["completions"].as_u64().unwrap();
    assert_eq!(env("JEREX_SHARD_COUNT"), Some(count.to_string()));
    assert_eq!(
        container["image"],
        format!("jerex:{}", env!("CARGO_PKG_VERSION")),
        "the image the Dockerfile builds from this release's archive"
    );
    assert_eq!(spec["parallelism"].as_u64(), Some(count));
    assert!(container["resources"]["limits"]["memory"].is_string());

    // Exit codes: configuration fails the job, bad input fails the index, 75 is retried.
    let rules = spec["podFailurePolicy"]["rules"].as_array().unwrap();
    let action = |code: u64| {
        rules
            .iter()
            .find(|r| {
                r["onExitCodes"]["values"]
                    .as_array()
                    .is_some_and(|v| v.contains(&code.into()))
            })
            .map(|r| r["action"].as_str().unwrap().to_string())
    };
    assert_eq!(action(78).as_deref(), Some("FailJob"));
    assert_eq!(action(65).as_deref(), Some("FailIndex"));
    assert_eq!(action(75).as_deref(), Some("Count"));
    for r in rules.iter().filter(|r| r["onExitCodes"].is_object()) {
        assert_eq!(r["onExitCodes"]["containerName"], container["name"]);
    }

    // The output directory and the job file are on the pod's volumes, the output on a claim.
    let toml = Job::load(&repo_root().join("jobs/reprocess-archive.toml")).unwrap();
    let mount_of = |path: &Path| {
        container["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| path.starts_with(v["mountPath"].as_str().unwrap()))
            .map(|v| v["name"].as_str().unwrap().to_string())
    };
    let out_volume = mount_of(&toml.output.dir).expect("output dir on a mounted volume");
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == out_volume.as_str())
        .unwrap();
    assert!(volume["persistentVolumeClaim"].is_object(), "{volume}");

    // The container's script: runs the job file where it is mounted, 3 counts as success.
    let command: Vec<&str> = container["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(command, ["/bin/sh", "-c"]);
    let script = container["args"][0].as_str().unwrap();
    let job_arg = script.split_whitespace().nth(2).unwrap();
    assert!(
        mount_of(Path::new(job_arg)).is_some(),
        "{job_arg} is mounted"
    );
    for (code, expected) in [("0", 0), ("3", 0), ("65", 65), ("75", 75), ("78", 78)] {
        let (got, calls) = with_fake(
            command[0],
            &[command[1], script],
            &[
                ("FAKE_EXIT", code),
                ("JOB_COMPLETION_INDEX", "5"),
                ("JEREX_SHARD_COUNT", "8"),
            ],
        );
        assert_eq!(got, expected, "jerex exit {code}");
        assert!(
            calls.starts_with(&format!("jerex run {job_arg} "))
                && calls.contains("index=5 count=8"),
            "{calls}"
        );
    }
}

#[test]
fn slurm_array_script_parses_and_maps_exit_codes() {
    let script = repo_root().join("jobs/slurm-reprocess.sh");
    let source = std::fs::read_to_string(&script).unwrap();
    assert!(source.contains("#SBATCH --array=0-"), "an array job");
    let check = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", text(&check.stderr));

    let script = script.to_string_lossy().into_owned();
    let (code, calls) = with_fake("bash", &[&script], &[("FAKE_EXIT", "3")]);
    assert_eq!(code, 0, "3 (rejected documents) is a success");
    assert!(
        calls.starts_with("jerex run jobs/reprocess-archive.toml"),
        "{calls}"
    );
    let (code, calls) = with_fake(
        "bash",
        &[&script],
        &[("FAKE_EXIT", "78"), ("ARCHIVE", "/a"), ("KB", "/kb")],
    );
    assert_eq!(code, 78);
    assert!(calls.contains("--input /a --output /kb"), "{calls}");
    // Without jerex installed: the container image through Apptainer.
    let (code, calls) = with_fake(
        "bash",
        &[&script],
        &[("FAKE_EXIT", "0"), ("JEREX_IMAGE", "/shared/jerex.sif")],
    );
    assert_eq!(code, 0);
    assert!(
        calls.starts_with("apptainer exec /shared/jerex.sif jerex run jobs/reprocess-archive.toml"),
        "{calls}"
    );
    // Retryable: requeued while under the limit, then left failed.
    let (code, calls) = with_fake(
        "bash",
        &[&script],
        &[("FAKE_EXIT", "75"), ("SLURM_JOB_ID", "41")],
    );
    assert_eq!(code, 75);
    assert!(calls.contains("scontrol requeue 41"), "{calls}");
    let (_, calls) = with_fake(
        "bash",
        &[&script],
        &[
            ("FAKE_EXIT", "75"),
            ("SLURM_JOB_ID", "41"),
            ("SLURM_RESTART_COUNT", "3"),
        ],
    );
    assert!(!calls.contains("scontrol"), "{calls}");
}

/// The Dockerfiles install the archive `scripts/package.sh` writes for this version, and the
/// build context lets exactly that in.
#[test]
fn dockerfiles_install_this_releases_archive() {
    let archive = format!(
        "dist/jerex-{}-{}-linux.tar.gz",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::ARCH
    );
    for file in ["Dockerfile", "Dockerfile.cuda"] {
        let source = std::fs::read_to_string(repo_root().join(file)).unwrap();
        assert!(
            source.contains(&format!("ARG ARCHIVE={archive}\n")),
            "{file} does not install {archive}"
        );
        assert!(source.contains("ENTRYPOINT [\"jerex\"]"), "{file}");
    }
    let cuda = std::fs::read_to_string(repo_root().join("Dockerfile.cuda")).unwrap();
    assert!(
        cuda.contains("ENV JEREX_LIBTORCH_LIB=") && cuda.contains("torch==2.11.0"),
        "the CUDA image points jerex at the CUDA libraries of the same torch"
    );
    let ignore = std::fs::read_to_string(repo_root().join(".dockerignore")).unwrap();
    assert!(ignore.lines().any(|l| l == "*") && ignore.contains("!dist/*.tar.gz"));
}

/// Every table's rows of two output directories, read by pyarrow as users would, compared as
/// sorted multisets (without the timing column); prints each table's row count.
const SAME_ROWS: &str = r#"
import json, sys
import pyarrow.dataset as ds
counts = {}
for table in ["mentions", "entities", "relations", "documents"]:
    rows = []
    for out in sys.argv[1:3]:
        t = ds.dataset(f"{out}/{table}", format="parquet").to_table()
        t = t.drop_columns([c for c in ["seconds"] if c in t.column_names])
        rows.append(sorted(json.dumps(r, sort_keys=True) for r in t.to_pylist()))
    assert rows[0] == rows[1], f"{table}: {len(rows[0])} vs {len(rows[1])} rows, or different rows"
    counts[table] = len(rows[0])
print(json.dumps(counts))
"#;

/// The binary end to end with the shipped model: three shards, picking their index from the
/// Kubernetes and the Slurm environment, write into one directory exactly the rows of one run.
#[test]
fn sharded_runs_of_the_binary_write_exactly_one_runs_rows() {
    let model = repo_root().join("models/default");
    if !model.join("config.json").is_file() {
        assert!(!under_ci(), "CI needs the shipped model");
        eprintln!("skipping: no model at {}", model.display());
        return;
    }
    let Some(python) = python_with("pyarrow.dataset") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let docs = sample_corpus();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    for part in ["a", "b", "c"] {
        let renamed: Vec<Document> = docs[..5]
            .iter()
            .map(|d| Document {
                id: format!("{part}-{}", d.id),
                ..d.clone()
            })
            .collect();
        sample::write_input_parquet(&dir.path().join(format!("data/{part}.parquet")), &renamed)
            .unwrap();
    }
    let job = dir.path().join("job.toml");
    // One document per batch: every shard then computes bit for bit what the single run does,
    // so the comparison below tests sharding, not floating-point batching effects.
    std::fs::write(
        &job,
        "threads = 2\n[input]\npaths = [\"data\"]\n[output]\ndir = \"single\"\n\
         [batch]\nmax_docs = 1\nlookahead = 1\n",
    )
    .unwrap();
    let run = |envs: &[(&str, &str)], out: &str| {
        let o = jerex()
            .arg("run")
            .arg(&job)
            .args(["--output", out])
            .envs(envs.iter().copied())
            .output()
            .unwrap();
        assert!(o.status.success(), "{envs:?}: {}", text(&o.stderr));
        text(&o.stdout)
    };
    let out = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    let single = run(&[], &out("single"));
    assert!(single.starts_with("15 documents"), "{single}");
    let shards = [
        vec![("JOB_COMPLETION_INDEX", "0"), ("JEREX_SHARD_COUNT", "3")],
        vec![("JOB_COMPLETION_INDEX", "1"), ("JEREX_SHARD_COUNT", "3")],
        vec![
            ("SLURM_ARRAY_TASK_ID", "3"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_COUNT", "3"),
        ],
    ];
    for envs in &shards {
        let summary = run(envs, &out("sharded"));
        assert!(
            summary.starts_with("5 documents"),
            "one file each: {summary}"
        );
    }
    let compared = Command::new(python)
        .args(["-c", SAME_ROWS, &out("single"), &out("sharded")])
        .output()
        .unwrap();
    assert!(compared.status.success(), "{}", text(&compared.stderr));
    let counts: Value = serde_json::from_slice(&compared.stdout).unwrap();
    assert_eq!(counts["documents"], 15);
    assert!(counts["mentions"].as_u64().unwrap() > 15, "{counts}");
}
