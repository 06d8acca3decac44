//! A PyTorch checkpoint file (`torch.save`'s zip format, as PyTorch Lightning writes
//! `model.ckpt`): the pickled object tree, read with the restricted [`pickle`](super::pickle)
//! reader, and the `state_dict` tensors rebuilt from their storage records in the archive.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use tch::{Kind, Tensor};

use super::pickle::{self, Global, Value};
use crate::error::{Error, Result};

/// The globals a reference checkpoint may name: containers, tensor storages and rebuilders, the
/// reference's type classes (in `hyper_parameters`) and the Lightning callback class that keys
/// `callbacks`. Nothing else is accepted.
pub const ALLOWED_GLOBALS: &[Global] = &[
    ("collections", "OrderedDict"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch", "FloatStorage"),
    ("torch", "DoubleStorage"),
    ("torch", "HalfStorage"),
    ("torch", "BFloat16Storage"),
    ("torch", "LongStorage"),
    ("torch", "IntStorage"),
    ("torch", "ShortStorage"),
    ("torch", "CharStorage"),
    ("torch", "ByteStorage"),
    ("torch", "BoolStorage"),
    ("jerex.entities", "EntityType"),
    ("jerex.entities", "RelationType"),
    (
        "pytorch_lightning.callbacks.model_checkpoint",
        "ModelCheckpoint",
    ),
];

/// A checkpoint's object tree and its `state_dict` tensors (CPU, contiguous, in file order).
pub struct Checkpoint {
    pub path: PathBuf,
    pub root: Value,
    pub state_dict: Vec<(String, Tensor)>,
}

impl Checkpoint {
    pub fn open(path: &Path) -> Result<Checkpoint> {
        let bad = |message: String| Error::Format {
            path: path.to_path_buf(),
            message,
        };
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let mut archive = zip::ZipArchive::new(file).map_err(|e| {
            bad(format!(
                "not a zip-format PyTorch checkpoint ({e}); PyTorch saves this format since 1.6"
            ))
        })?;
        let pickle_name = archive
            .file_names()
            .find(|n| n.ends_with("/data.pkl") || *n == "data.pkl")
            .map(str::to_string)
            .ok_or_else(|| bad("the archive has no data.pkl".into()))?;
        let prefix = pickle_name.trim_end_matches("data.pkl").to_string();
        if let Ok(order) = read_entry(&mut archive, &format!("{prefix}byteorder")) {
            if order != b"little" {
                return Err(bad(
                    "tensors are stored big-endian; only little-endian is supported".into(),
                ));
            }
        }
        let bytes = read_entry(&mut archive, &pickle_name).map_err(&bad)?;
        let root = pickle::read(&bytes, ALLOWED_GLOBALS)
            .map_err(|e| bad(format!("{pickle_name}: {e}")))?;
        let entries = root
            .get("state_dict")
            .and_then(Value::as_dict)
            .ok_or_else(|| bad("no state_dict in the checkpoint".into()))?;
        let mut state_dict = Vec::with_capacity(entries.len());
        for (key, value) in entries {
            let name = key
                .as_str()
                .ok_or_else(|| bad("a state_dict key is not a string".into()))?;
            let tensor = rebuild(&mut archive, &prefix, value)
                .map_err(|m| bad(format!("state_dict tensor '{name}': {m}")))?;
            state_dict.push((name.to_string(), tensor));
        }
        Ok(Checkpoint {
            path: path.to_path_buf(),
            root,
            state_dict,
        })
    }
}

fn read_entry(archive: &mut zip::ZipArchive<File>, name: &str) -> Result<Vec<u8>, String> {
    let mut entry = archive.by_name(name).map_err(|e| format!("{name}: {e}"))?;
    let mut out = Vec::with_capacity(entry.size() as usize);
    entry
        .read_to_end(&mut out)
        .map_err(|e| format!("{name}: {e}"))?;
    Ok(out)
}

/// `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)` done by hand: the
/// storage's bytes from `data/<key>`, viewed with the recorded offset, size and stride.
fn rebuild(
    archive: &mut zip::ZipArchive<File>,
    prefix: &str,
    value: &Value,
) -> Result<Tensor, String> {
    let Value::Object { class, args, .. } = value else {
        return Err("not a tensor".into());
    };
    if class == "torch._utils._rebuild_parameter" {
        return rebuild(archive, prefix, args.first().ok_or("empty parameter")?);
    }
    if class != "torch._utils._rebuild_tensor_v2" || args.len() < 4 {
        return Err(format!("not a tensor (built by {class})"));
    }
    let ints = |v: &Value| -> Result<Vec<i64>, String> {
        v.as_seq()
            .ok_or("size or stride is not a tuple")?
            .iter()
            .map(|x| {
                x.as_int()
                    .ok_or_else(|| "size or stride is not an integer".to_string())
            })
            .collect()
    };
    let (offset, size, stride) = (
        args[1].as_int().ok_or("storage offset is not an integer")?,
        ints(&args[2])?,
        ints(&args[3])?,
    );
    let Value::Persistent(pid) = &args[0] else {
        return Err("no storage record".into());
    };
    let record = pid.as_seq().ok_or("storage record is not a tuple")?;
    let (storage, key, numel) = match record {
        [tag, Value::Global(storage), key, _location, numel] if tag.as_str() == Some("storage") => {
            (
                storage,
                key.as_str().ok_or("storage key")?,
                numel.as_int().ok_or("numel")?,
            )
        }
        _ => return Err(format!("unexpected storage record {record:?}")),
    };
    let (kind, width) = storage_kind(storage).ok_or_else(|| format!("unsupported {storage}"))?;
    let bytes = read_entry(archive, &format!("{prefix}data/{key}"))?;
    if numel < 0 || bytes.len() as i64 != numel * width {
        return Err(format!(
            "storage {key} has {} bytes, not {numel} elements of {width}",
            bytes.len()
        ));
    }
    // The last element the view reads must lie inside the storage.
    let reach = size
        .iter()
        .zip(&stride)
        .map(|(&n, &s)| if n == 0 { 0 } else { (n - 1) * s })
        .sum::<i64>();
    let empty = size.contains(&0);
    if size.len() != stride.len()
        || size.iter().chain(&stride).any(|&x| x < 0)
        || (!empty && (offset < 0 || offset + reach >= numel))
    {
        return Err(format!(
            "size {size:?}, stride {stride:?} and offset {offset} do not fit a storage of {numel}"
        ));
    }
    let flat = Tensor::from_data_size(&bytes, &[numel], kind);
    Ok(if empty {
        Tensor::zeros(size.as_slice(), (kind, tch::Device::Cpu))
    } else {
        flat.as_strided(size.as_slice(), stride.as_slice(), offset)
            .contiguous()
    })
}

fn storage_kind(class: &str) -> Option<(Kind, i64)> {
    Some(match class.strip_prefix("torch.")? {
        "FloatStorage" => (Kind::Float, 4),
        "DoubleStorage" => (Kind::Double, 8),
        "HalfStorage" => (Kind::Half, 2),
        "BFloat16Storage" => (Kind::BFloat16, 2),
        "LongStorage" => (Kind::Int64, 8),
        "IntStorage" => (Kind::Int, 4),
        "ShortStorage" => (Kind::Int16, 2),
        "CharStorage" => (Kind::Int8, 1),
        "ByteStorage" => (Kind::Uint8, 1),
        "BoolStorage" => (Kind::Bool, 1),
        _ => return None,
    })
}
