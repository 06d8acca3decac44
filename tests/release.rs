//! The release archive as a user gets it: `scripts/package.sh` packs the binary, the archive is
//! unpacked into a fresh directory, and the unpacked `jerex` runs `doctor` and the demo job with
//! the build tree out of sight: in a private mount namespace, empty file systems lie over the
//! checkout, its Python environment and the build's libtorch, and the environment is emptied.
//! Where mount namespaces are not allowed it runs with the emptied environment only, and says
//! so; either way the binary must name no build-tree path. Where podman is installed, the CPU
//! Dockerfile's image is built from the archive and runs the demo job too.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use jerex::testing::repo_root;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The RUNPATH of an ELF file, as `readelf` shows it (empty when it has none).
fn runpath(elf: &Path) -> String {
    let out = Command::new("readelf").arg("-d").arg(elf).output().unwrap();
    assert!(out.status.success(), "readelf {}: {out:?}", elf.display());
    text(&out.stdout)
        .lines()
        .find_map(|l| {
            let rest = l.split_once("Library runpath: [")?.1;
            Some(rest.strip_suffix(']')?.to_string())
        })
        .unwrap_or_default()
}

/// The printable strings of `bytes` that contain one of `needles`, except those that also
/// contain one of `allowed`.
fn strings_naming(bytes: &[u8], needles: &[String], allowed: &[String]) -> Vec<String> {
    let printable = |b: u8| b.is_ascii_graphic() || b == b' ';
    let mut found = Vec::new();
    for needle in needles {
        let n = needle.as_bytes();
        let mut i = 0;
        while let Some(at) = bytes[i..].windows(n.len()).position(|w| w == n) {
            let at = i + at;
            let start = bytes[..at]
                .iter()
                .rposition(|&b| !printable(b))
                .map_or(0, |p| p + 1);
            let end = bytes[at..]
                .iter()
                .position(|&b| !printable(b))
                .map_or(bytes.len(), |p| at + p);
            let s = text(&bytes[start..end]);
            if !allowed.iter().any(|a| s.contains(a.as_str())) && !found.contains(&s) {
                found.push(s);
            }
            i = end.max(at + 1);
        }
    }
    found
}

/// Runs commands with an empty environment, in a private mount namespace whose `hide`
/// directories are covered by empty read-only file systems when the system allows it.
struct Sandbox {
    hide: Vec<PathBuf>,
    namespace: bool,
    cwd: PathBuf,
}

const MOUNT_AND_EXEC: &str = r#"n=$1; shift
while [ "$n" -gt 0 ]; do
  mount -t tmpfs -o ro,size=4k jerex-hidden "$1" || exit 97
  shift; n=$((n - 1))
done
exec "$@""#;

impl Sandbox {
    fn new(hide: Vec<PathBuf>, cwd: PathBuf) -> Sandbox {
        let namespace = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "true"])
            .output()
            .is_ok_and(|o| o.status.success());
        Sandbox {
            hide,
            namespace,
            cwd,
        }
    }

    fn run(&self, program: &Path, args: &[&OsStr], envs: &[(&str, &str)]) -> Output {
        let mut cmd = if self.namespace {
            let mut c = Command::new("unshare");
            c.args(["--mount", "--propagation", "private", "--", "/bin/sh", "-c"])
                .arg(MOUNT_AND_EXEC)
                .arg("sh")
                .arg(self.hide.len().to_string())
                .args(&self.hide)
                .arg(program);
            c
        } else {
            Command::new(program)
        };
        cmd.args(args)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .envs(envs.iter().copied())
            .current_dir(&self.cwd);
        let out = cmd.output().unwrap();
        assert_ne!(out.status.code(), Some(97), "mount failed: {out:?}");
        out
    }
}

/// `scripts/package.sh` on the test build's binary, uncompressed, into `out`: the archive's path.
fn package(out: &Path) -> PathBuf {
    let packaged = Command::new(repo_root().join("scripts/package.sh"))
        .arg("--binary")
        .arg(env!("CARGO_BIN_EXE_jerex"))
        .args(["--format", "tar", "--out"])
        .arg(out)
        .output()
        .unwrap();
    assert!(packaged.status.success(), "{}", text(&packaged.stderr));
    PathBuf::from(text(&packaged.stdout).trim())
}

#[test]
fn the_release_archive_runs_outside_the_build_tree() {
    let built = Path::new(env!("CARGO_BIN_EXE_jerex"));
    let checkout = repo_root().canonicalize().unwrap();
    let venv = checkout.join(".venv").canonicalize().ok();
    // The build's libtorch, as build.rs embeds it.
    let libtorch = runpath(built);
    assert!(
        Path::new(&libtorch).join("libtorch_cpu.so").is_file(),
        "the build's RUNPATH is libtorch's directory: {libtorch:?}"
    );
    let libtorch_real = Path::new(&libtorch).canonicalize().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let tmp = tmp.path().canonicalize().unwrap();
    assert!(
        !tmp.starts_with(&checkout),
        "the temporary directory {} must lie outside the checkout it hides",
        tmp.display()
    );

    let archive = package(&tmp.join("dist"));
    let unpacked = tmp.join("unpacked");
    std::fs::create_dir(&unpacked).unwrap();
    let untar = Command::new("tar")
        .arg("-xf")
        .arg(&archive)
        .arg("-C")
        .arg(&unpacked)
        .output()
        .unwrap();
    assert!(untar.status.success(), "{untar:?}");
    let tops: Vec<PathBuf> = std::fs::read_dir(&unpacked)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let [root] = &tops[..] else {
        panic!("one top directory in the archive, got {tops:?}")
    };
    let name = root.file_name().unwrap().to_string_lossy();
    assert!(
        name.starts_with(&format!("jerex-{}-", env!("CARGO_PKG_VERSION"))),
        "{name}"
    );
    for file in [
        "README.md",
        "bin/jerex",
        "lib/libtorch_cpu.so",
        "lib/libc10.so",
        "share/jerex/models/default/config.json",
        "share/jerex/models/default/model.safetensors",
        "share/jerex/models/default/tokenizer.json",
        "share/jerex/jobs/demo.toml",
        "share/jerex/data/sample/sample.parquet",
    ] {
        assert!(root.join(file).is_file(), "{file} missing from the archive");
    }
    let exe = root.join("bin/jerex");
    assert_eq!(runpath(&exe), "$ORIGIN/../lib");

    // No path into the build tree, except in libtorch's own assertion messages, which name its
    // header files (text compiled in from the headers tch's wrapper includes; never opened).
    let mut needles: Vec<String> = vec![
        repo_root().display().to_string(),
        checkout.display().to_string(),
        libtorch.clone(),
        libtorch_real.display().to_string(),
    ];
    needles.extend(venv.iter().map(|v| v.display().to_string()));
    let headers: Vec<String> = [Path::new(&libtorch), &libtorch_real]
        .iter()
        .map(|lib| format!("{}/", lib.parent().unwrap().join("include").display()))
        .collect();
    let named = strings_naming(&std::fs::read(&exe).unwrap(), &needles, &headers);
    assert!(
        named.is_empty(),
        "bin/jerex names the build tree: {named:#?}"
    );
    let built_named = strings_naming(&std::fs::read(built).unwrap(), &needles, &headers);
    assert!(
        built_named.contains(&libtorch),
        "the same check finds the build's RUNPATH in the binary it packed"
    );

    // Out of sight: the checkout, its Python environment and the build's libtorch (each only
    // when not inside one already covered).
    let mut hide: Vec<PathBuf> = Vec::new();
    for dir in [Some(checkout.clone()), venv, Some(libtorch_real)]
        .into_iter()
        .flatten()
    {
        if !hide.iter().any(|h| dir.starts_with(h)) {
            hide.push(dir);
        }
    }
    let sandbox = Sandbox::new(hide, tmp.clone());
    if sandbox.namespace {
        // The build's own binary cannot even start there: its libtorch is hidden.
        let copy = tmp.join("jerex-from-the-build");
        std::fs::copy(built, &copy).unwrap();
        let out = sandbox.run(&copy, &[OsStr::new("doctor")], &[]);
        assert!(
            !out.status.success() && text(&out.stderr).contains("libtorch_cpu.so"),
            "the build tree is not hidden: {out:?}"
        );
    } else {
        eprintln!(
            "note: `unshare --mount` is not permitted here (needs root or user namespaces): the \
             archive runs with an empty environment but the build tree stays visible; the check \
             above that bin/jerex names no build-tree path stands in for hiding it"
        );
    }

    let root = root.canonicalize().unwrap();
    let out = sandbox.run(&exe, &[OsStr::new("doctor")], &[]);
    assert!(out.status.success(), "{out:?}");
    let doctor = text(&out.stdout);
    let lib = root.join("lib");
    let libtorch_line = doctor.lines().find(|l| l.starts_with("libtorch: 2.11.0"));
    assert_eq!(
        libtorch_line
            .and_then(|l| l.split_once(" ("))
            .map(|(_, dir)| dir),
        Some(format!("{})", lib.display()).as_str()),
        "libtorch from the archive's lib/:\n{doctor}"
    );
    let model = root.join("share/jerex/models/default");
    assert!(
        doctor.contains(&format!("default model: {} (found)", model.display())),
        "{doctor}"
    );
    // Forced, the CUDA loader looks beside the archive's libtorch first and reports where.
    let out = sandbox.run(
        &exe,
        &[OsStr::new("doctor")],
        &[("JEREX_LOAD_CUDA", "always")],
    );
    assert!(out.status.success(), "{out:?}");
    let doctor = text(&out.stdout);
    let beside = lib.join("libtorch_cuda.so");
    assert!(
        doctor.contains(&format!(
            "looked for {}, then libtorch_cuda.so",
            beside.display()
        )),
        "{doctor}"
    );

    let kb = tmp.join("kb");
    let job = root.join("share/jerex/jobs/demo.toml");
    let out = sandbox.run(
        &exe,
        &[
            OsStr::new("run"),
            job.as_os_str(),
            OsStr::new("--output"),
            kb.as_os_str(),
        ],
        &[],
    );
    assert!(out.status.success(), "{out:?}");
    let summary = text(&out.stdout);
    assert!(
        summary.starts_with("20 documents (20 ok, 0 rejected, 0 failed)"),
        "{summary}"
    );
    assert!(kb.join("_SUCCESS").is_file(), "{summary}");
}

fn podman(args: &[&OsStr], conf: &Path) -> Output {
    let out = Command::new("podman")
        .args(args)
        .env("CONTAINERS_CONF", conf)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "podman {args:?}: {}",
        text(&out.stderr)
    );
    out
}

/// The CPU Dockerfile builds an image from the archive on a Debian base made from Debian
/// packages (`scripts/base-image.sh`: no registry needed), and the demo job runs in it.
#[test]
fn the_dockerfile_image_runs_the_demo_job() {
    if Command::new("podman").arg("--version").output().is_err() {
        eprintln!(
            "skipping: podman is not installed (apt-get install podman runc debootstrap to build \
             and run the Dockerfile's image here)"
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let tmp = tmp.path();
    let base = Command::new(repo_root().join("scripts/base-image.sh"))
        .output()
        .unwrap();
    assert!(base.status.success(), "{}", text(&base.stderr));
    let base = text(&base.stdout).trim().to_string();
    // The build context: the archive under dist/, as the Dockerfile expects it.
    let context = tmp.join("context");
    let archive = package(&context.join("dist"));
    for file in ["Dockerfile", ".dockerignore"] {
        std::fs::copy(repo_root().join(file), context.join(file)).unwrap();
    }
    // Containers inherit podman's resource limits instead of raising them (that needs
    // CAP_SYS_RESOURCE, which container hosts often withhold).
    let conf = tmp.join("containers.conf");
    std::fs::write(&conf, "[containers]\ndefault_ulimits = []\n").unwrap();
    let image = format!("localhost/jerex-release-test:{}", std::process::id());
    let arg = |s: String| std::ffi::OsString::from(s);
    // chroot isolation for RUN steps: no OCI runtime or cgroup set-up needed to build. Without
    // layers, the unpack stage leaves no image behind.
    podman(
        &[
            OsStr::new("build"),
            OsStr::new("--layers=false"),
            OsStr::new("--isolation"),
            OsStr::new("chroot"),
            OsStr::new("--build-arg"),
            &arg(format!("BASE={base}")),
            OsStr::new("--build-arg"),
            &arg(format!(
                "ARCHIVE=dist/{}",
                archive.file_name().unwrap().to_string_lossy()
            )),
            OsStr::new("-t"),
            OsStr::new(&image),
            context.as_os_str(),
        ],
        &conf,
    );
    let kb = tmp.join("kb");
    std::fs::create_dir(&kb).unwrap();
    let mut run: Vec<std::ffi::OsString> = vec!["run".into(), "--rm".into()];
    // crun refuses hosts that mount cgroups v1 and v2 side by side; runc, when there, does not.
    if Command::new("runc").arg("--version").output().is_ok() {
        run.extend(["--runtime".into(), "runc".into()]);
    }
    run.extend([
        "-v".into(),
        arg(format!("{}:/out", kb.display())),
        image.clone().into(),
        "run".into(),
        "/opt/jerex/share/jerex/jobs/demo.toml".into(),
        "--output".into(),
        "/out/demo".into(),
    ]);
    let args: Vec<&OsStr> = run.iter().map(|a| a.as_os_str()).collect();
    let out = Command::new("podman")
        .args(&args)
        .env("CONTAINERS_CONF", &conf)
        .output()
        .unwrap();
    podman(&[OsStr::new("rmi"), OsStr::new(&image)], &conf);
    assert!(out.status.success(), "{out:?}");
    let summary = text(&out.stdout);
    assert!(
        summary.starts_with("20 documents (20 ok, 0 rejected, 0 failed)"),
        "{summary}"
    );
    assert!(kb.join("demo/_SUCCESS").is_file(), "{summary}");
}
