//! The resumable state of a training run (`OUTPUT/checkpoint/`) and the folder swap that
//! leaves a complete checkpoint on disk at every moment.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::train::history::{EpochRecord, F1s};

/// Folder of the resumable state inside the output folder.
pub(super) const CHECKPOINT_DIR: &str = "checkpoint";
pub(super) const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub(super) const STATE_FILE: &str = "state.json";

/// The resumable state (`checkpoint/state.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct TrainState {
    /// Hash of the training data and settings: a resume must match it.
    pub(super) fingerprint: String,
    /// Completed epochs.
    pub(super) epoch: usize,
    /// Batches of epoch `epoch` already trained (after a budget stop).
    pub(super) batch_in_epoch: usize,
    pub(super) steps: u64,
    pub(super) train_seconds: f64,
    pub(super) wall_seconds: f64,
    pub(super) train_docs: u64,
    /// 1-based epoch of the saved best model, and its validation F1s.
    pub(super) best: Option<(usize, Option<F1s>)>,
    pub(super) history: Vec<EpochRecord>,
}

/// `DIR.old`: where [`replace_dir`] keeps the previous folder while the new one moves in.
fn old_dir(dir: &Path) -> PathBuf {
    let mut name = dir.as_os_str().to_owned();
    name.push(".old");
    PathBuf::from(name)
}

/// Moves the complete folder `from` to `to`, replacing what was there. The previous folder is
/// first renamed aside and deleted only once the new one is in place, so a crash at any moment
/// leaves `to`, or `from` complete beside `to.old` ([`recover_dir`] puts one back).
pub(super) fn replace_dir(from: &Path, to: &Path) -> Result<()> {
    let old = old_dir(to);
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))?;
    }
    if to.exists() {
        std::fs::rename(to, &old).map_err(|e| Error::io(to, e))?;
    }
    std::fs::rename(from, to).map_err(|e| Error::io(to, e))?;
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))?;
    }
    Ok(())
}

/// Undoes an interrupted [`replace_dir`] into `to`: when `to` is missing, the complete new
/// folder `from` (it holds `complete_marker`, written last) or else the previous one moves in.
pub(super) fn recover_dir(from: &Path, to: &Path, complete_marker: &str) -> Result<()> {
    if to.exists() {
        return Ok(());
    }
    let old = old_dir(to);
    let source = if from.join(complete_marker).is_file() {
        from.to_path_buf()
    } else if old.is_dir() {
        old
    } else {
        return Ok(());
    };
    std::fs::rename(&source, to).map_err(|e| Error::io(to, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, file: &str, text: &str) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join(file), text).unwrap();
    }

    fn read(dir: &Path, file: &str) -> String {
        std::fs::read_to_string(dir.join(file)).unwrap()
    }

    #[test]
    fn replacing_a_checkpoint_leaves_one_at_every_moment() {
        let root = tempfile::tempdir().unwrap();
        let (ckpt, fresh) = (
            root.path().join("checkpoint"),
            root.path().join("checkpoint.new"),
        );
        write(&ckpt, STATE_FILE, "1");
        write(&fresh, STATE_FILE, "2");
        replace_dir(&fresh, &ckpt).unwrap();
        assert_eq!(read(&ckpt, STATE_FILE), "2");
        assert!(!fresh.exists() && !old_dir(&ckpt).exists());

        // Killed after the old checkpoint moved aside: the complete new one moves in.
        std::fs::rename(&ckpt, old_dir(&ckpt)).unwrap();
        write(&fresh, STATE_FILE, "3");
        recover_dir(&fresh, &ckpt, STATE_FILE).unwrap();
        assert_eq!(read(&ckpt, STATE_FILE), "3");

        // Killed while the new one was written (no state file yet): the old one comes back.
        std::fs::remove_dir_all(old_dir(&ckpt)).ok();
        std::fs::rename(&ckpt, old_dir(&ckpt)).unwrap();
        write(&fresh, "model.safetensors", "partial");
        recover_dir(&fresh, &ckpt, STATE_FILE).unwrap();
        assert_eq!(read(&ckpt, STATE_FILE), "3");
        // Nothing to do when the checkpoint is there.
        recover_dir(&fresh, &ckpt, STATE_FILE).unwrap();
        assert_eq!(read(&ckpt, STATE_FILE), "3");
    }
}
