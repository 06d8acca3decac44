//! Moving weights between safetensors files and a VarStore. Every load checks the whole file
//! against the VarStore first and copies only when all names and shapes match and every value
//! is finite, so a failed load leaves the model untouched and the error lists every problem at
//! once.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use safetensors::{Dtype, SafeTensors};
use tch::{nn, Device, Kind, Tensor};

use crate::error::{Error, Result};

/// Names listed per kind of problem before "… and N more".
const LISTED: usize = 20;

/// Fills every variable whose name starts with `vs_prefix` (e.g. `"bert."`) from a HuggingFace
/// BERT checkpoint. Checkpoint keys may carry a leading `bert.` (task models) or not (bare
/// `BertModel`). The pooler, the pre-training heads (`cls.*`) and `position_ids` buffers are
/// skipped; any other key the VarStore does not have is reported, as are missing variables and
/// shape mismatches. Values are converted to each variable's dtype and device.
pub fn load_pretrained(vs: &mut nn::VarStore, file: &Path, vs_prefix: &str) -> Result<()> {
    let bytes = read(file)?;
    let st = parse(file, &bytes)?;
    let targets: BTreeMap<String, Tensor> = vs
        .variables()
        .into_iter()
        .filter_map(|(name, t)| name.strip_prefix(vs_prefix).map(|rel| (rel.to_string(), t)))
        .collect();
    let mut sources = HashMap::new();
    let mut ambiguous = Vec::new();
    for name in st.names() {
        let key = name.strip_prefix("bert.").unwrap_or(name);
        if is_unused_by_encoder(key) {
            continue;
        }
        if sources.insert(key.to_string(), name.to_string()).is_some() {
            ambiguous.push(key.to_string());
        }
    }
    if !ambiguous.is_empty() {
        ambiguous.sort();
        return Err(weights_error(
            file,
            vec![list(
                "keys present both with and without 'bert.'",
                &ambiguous,
            )],
        ));
    }
    copy_checked(file, &st, &targets, &sources)
}

/// Keys of a BERT checkpoint the encoder has no variable for, by design: the pooler (jerex pools
/// spans itself), the masked-LM / next-sentence heads, and the constant `position_ids` buffer.
fn is_unused_by_encoder(key: &str) -> bool {
    key.starts_with("pooler.") || key.starts_with("cls.") || key.ends_with("position_ids")
}

/// Fills every variable of the VarStore from `file`, strictly: the file must hold exactly the
/// VarStore's variables, by name and shape (a whole jerex model folder's `model.safetensors`).
pub fn load_all(vs: &mut nn::VarStore, file: &Path) -> Result<()> {
    let bytes = read(file)?;
    let st = parse(file, &bytes)?;
    let targets: BTreeMap<String, Tensor> = vs.variables().into_iter().collect();
    let sources = st
        .names()
        .into_iter()
        .map(|n| (n.to_string(), n.to_string()))
        .collect();
    copy_checked(file, &st, &targets, &sources)
}

/// Writes every variable of the VarStore to `file` (safetensors), floating-point ones stored as
/// `dtype` (e.g. `Kind::Half` halves a shipped model's size; loading converts back). The file
/// is written next to its destination and renamed into place, so readers never see half a file.
pub fn save_all(vs: &nn::VarStore, file: &Path, dtype: Kind) -> Result<()> {
    let vars: BTreeMap<String, Tensor> = vs.variables().into_iter().collect();
    let tensors: Vec<(String, Tensor)> = vars
        .into_iter()
        .map(|(name, t)| {
            let t = t.detach().to_device(Device::Cpu);
            let t = if t.is_floating_point() {
                t.to_kind(dtype)
            } else {
                t
            };
            (name, t.contiguous())
        })
        .collect();
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".jerex-weights")
        .suffix(".safetensors.tmp")
        .tempfile_in(dir)
        .map_err(|e| Error::io(dir, e))?;
    Tensor::write_safetensors(&tensors, tmp.path()).map_err(|e| Error::Weights {
        path: file.to_path_buf(),
        message: e.to_string(),
    })?;
    tmp.persist(file).map_err(|e| Error::io(file, e.error))?;
    Ok(())
}

fn read(file: &Path) -> Result<Vec<u8>> {
    std::fs::read(file).map_err(|e| Error::io(file, e))
}

fn parse<'a>(file: &Path, bytes: &'a [u8]) -> Result<SafeTensors<'a>> {
    SafeTensors::deserialize(bytes).map_err(|e| Error::Weights {
        path: file.to_path_buf(),
        message: format!("not a readable safetensors file: {e}"),
    })
}

/// Checks that each target variable has a source tensor of its shape and that no source is left
/// over, then copies. `sources` maps a target name to its key in `st`.
fn copy_checked(
    file: &Path,
    st: &SafeTensors<'_>,
    targets: &BTreeMap<String, Tensor>,
    sources: &HashMap<String, String>,
) -> Result<()> {
    let mut missing = Vec::new();
    let mut mismatched = Vec::new();
    let mut pairs = Vec::new();
    for (name, var) in targets {
        let Some(key) = sources.get(name) else {
            missing.push(name.clone());
            continue;
        };
        let view = st.tensor(key).map_err(|e| Error::Weights {
            path: file.to_path_buf(),
            message: format!("{key}: {e}"),
        })?;
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        if shape != var.size() {
            mismatched.push(format!("{key} (file {shape:?}, model {:?})", var.size()));
            continue;
        }
        pairs.push((var, key, view));
    }
    let used: HashSet<&String> = targets.keys().filter_map(|n| sources.get(n)).collect();
    let mut unexpected: Vec<String> = sources
        .values()
        .filter(|k| !used.contains(k))
        .cloned()
        .collect();
    unexpected.sort();

    let mut problems = Vec::new();
    if !missing.is_empty() {
        problems.push(list("missing", &missing));
    }
    if !mismatched.is_empty() {
        problems.push(list("shape mismatch", &mismatched));
    }
    if !unexpected.is_empty() {
        problems.push(list("unexpected", &unexpected));
    }
    if !problems.is_empty() {
        return Err(weights_error(file, problems));
    }

    tch::no_grad(|| -> Result<()> {
        let mut sources = Vec::with_capacity(pairs.len());
        let mut non_finite = Vec::new();
        for (var, key, view) in pairs {
            let kind = kind_of(view.dtype()).ok_or_else(|| Error::Weights {
                path: file.to_path_buf(),
                message: format!("{key}: unsupported dtype {:?}", view.dtype()),
            })?;
            let src = Tensor::f_from_data_size(view.data(), &var.size(), kind)?;
            // NaN or infinite weights turn every score into NaN: the model would run and find
            // nothing, with no error anywhere.
            if src.is_floating_point() && !bool::try_from(src.f_isfinite()?.f_all()?)? {
                non_finite.push(key.clone());
            }
            sources.push((var, src));
        }
        if !non_finite.is_empty() {
            non_finite.sort();
            return Err(weights_error(
                file,
                vec![list("NaN or infinite values", &non_finite)],
            ));
        }
        for (var, src) in sources {
            var.shallow_clone().f_copy_(&src)?;
        }
        Ok(())
    })
}

fn kind_of(dtype: Dtype) -> Option<Kind> {
    Some(match dtype {
        Dtype::F32 => Kind::Float,
        Dtype::F16 => Kind::Half,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::F64 => Kind::Double,
        Dtype::I64 => Kind::Int64,
        Dtype::I32 => Kind::Int,
        Dtype::I16 => Kind::Int16,
        Dtype::I8 => Kind::Int8,
        Dtype::U8 => Kind::Uint8,
        Dtype::BOOL => Kind::Bool,
        _ => return None,
    })
}

fn list(what: &str, names: &[String]) -> String {
    let shown = names[..names.len().min(LISTED)].join(", ");
    let more = names.len().saturating_sub(LISTED);
    if more > 0 {
        format!("{what} ({}): {shown}, … and {more} more", names.len())
    } else {
        format!("{what} ({}): {shown}", names.len())
    }
}

fn weights_error(file: &Path, problems: Vec<String>) -> Error {
    Error::Weights {
        path: file.to_path_buf(),
        message: problems.join("; "),
    }
}
