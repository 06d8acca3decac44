//! The checkout the crate was compiled from and the data beside it: fixed at compile time, for
//! tests, benchmarks and examples, which run from the repository (the binary finds what ships
//! with it through [`crate::paths`]).
//!
//! The `require_*` helpers return what a test needs when it is there. When it is missing they
//! panic under CI (`CI=true`: a silent skip there would hide a broken set-up) and otherwise
//! print why and return `None`, so the test can skip.

use std::path::{Path, PathBuf};

use crate::model::folder;
use crate::paths::{encoder_in_venv, env_path};

/// The repository the crate was compiled from (holds `models/`, `.venv/`, `jobs/`, `data/`).
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `../shared` next to the repository: the data sets and fixtures tests and training read.
pub fn shared_dir() -> PathBuf {
    repo_root().join("../shared")
}

/// `../shared/data`.
pub fn shared_data_dir() -> PathBuf {
    shared_dir().join("data")
}

/// True when running under CI (`CI=true`), where missing shared data must fail loudly.
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// `../shared/data/REL` when it exists (see the [module](self) for when it does not).
pub fn require_shared(rel: &str) -> Option<PathBuf> {
    require(shared_data_dir().join(rel))
}

/// Like [`require_shared`] for `../shared/fixtures/REL`.
pub fn require_fixture(rel: &str) -> Option<PathBuf> {
    require(shared_dir().join("fixtures").join(rel))
}

fn require(path: PathBuf) -> Option<PathBuf> {
    if path.exists() {
        return Some(path);
    }
    if under_ci() {
        panic!("{} is missing: CI must have ../shared", path.display());
    }
    eprintln!("skipping: {} not found", path.display());
    None
}

/// Like [`require_shared`] for the pretrained encoder folder: `$JEREX_ENCODER`, else the
/// package in the repository's `.venv`.
pub fn require_encoder() -> Option<PathBuf> {
    match env_path("JEREX_ENCODER").or_else(|| encoder_in_venv(&repo_root().join(".venv"))) {
        Some(dir) => Some(dir),
        None if under_ci() => {
            panic!("the pretrained encoder is missing: run scripts/bootstrap.sh (CI must have it)")
        }
        None => {
            eprintln!("skipping: pretrained encoder not found (run scripts/bootstrap.sh)");
            None
        }
    }
}

/// The pretrained encoder's `tokenizer.json` (see [`require_encoder`]).
pub fn require_tokenizer() -> Option<PathBuf> {
    require_encoder().map(|d| d.join(folder::TOKENIZER_FILE))
}

/// `.venv/bin/python` when it can import `modules` (e.g. `"pyarrow, duckdb"`); CI must have them
/// (scripts/requirements.txt), so there a missing one fails the test instead of skipping it.
pub fn python_with(modules: &str) -> Option<PathBuf> {
    let python = repo_root().join(".venv/bin/python");
    let ok = std::process::Command::new(&python)
        .args(["-c", &format!("import {modules}")])
        .status()
        .is_ok_and(|s| s.success());
    match (ok, under_ci()) {
        (true, _) => Some(python),
        (false, true) => panic!("CI needs {modules} in .venv (scripts/requirements.txt)"),
        (false, false) => {
            eprintln!("skipping: .venv/bin/python cannot import {modules}");
            None
        }
    }
}
