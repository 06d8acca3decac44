//! Devices: parsing `cpu`, `cuda:N`, `cuda:all` lists, making CUDA visible, and the precision
//! each device runs the encoder in.

use std::ffi::{CStr, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use tch::Device;

use crate::error::{Error, Result};

/// The directory the running libtorch (`libtorch_cpu.so`) was loaded from: the torch install
/// of a build tree, or `lib/` of the release archive.
pub fn libtorch_dir() -> Option<PathBuf> {
    unsafe extern "C" fn visit(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        found: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: the loader passes a valid entry whose name is a C string (empty for the
        // executable); `found` is the `Option<PathBuf>` below, alive for the whole iteration.
        unsafe {
            let name = (*info).dlpi_name;
            if name.is_null() {
                return 0;
            }
            let path = Path::new(OsStr::from_bytes(CStr::from_ptr(name).to_bytes()));
            if path.file_name() != Some(OsStr::new("libtorch_cpu.so")) {
                return 0;
            }
            let dir = path
                .parent()
                .map(|d| d.canonicalize().unwrap_or(d.to_path_buf()));
            *found.cast::<Option<PathBuf>>() = dir;
            1
        }
    }
    let mut found: Option<PathBuf> = None;
    // SAFETY: `visit` only reads the entries and writes `found`.
    unsafe { libc::dl_iterate_phdr(Some(visit), (&raw mut found).cast()) };
    found
}

/// Where `libtorch_cuda.so` is looked for: `$JEREX_LIBTORCH_LIB` alone when set, else beside
/// the running libtorch (the CUDA build's libraries sit together), then the system's library
/// search path (`LD_LIBRARY_PATH`, ld.so.cache), given by the bare name.
pub fn torch_cuda_candidates() -> Vec<PathBuf> {
    const NAME: &str = "libtorch_cuda.so";
    if let Some(dir) = std::env::var_os("JEREX_LIBTORCH_LIB").filter(|d| !d.is_empty()) {
        return vec![PathBuf::from(dir).join(NAME)];
    }
    let mut out: Vec<PathBuf> = libtorch_dir().map(|d| d.join(NAME)).into_iter().collect();
    out.push(PathBuf::from(NAME));
    out
}

/// Loads `libtorch_cuda.so` when a CUDA driver is present. tch's build links it with
/// `--as-needed`, which drops it because no symbol is referenced directly, and then CUDA is
/// invisible. On a machine without a driver (no `libcuda.so.1`) nothing is loaded: that is not an
/// error, CUDA is simply unavailable. `JEREX_LOAD_CUDA=always` loads it regardless (to check the
/// loading itself on a CPU machine), `never` skips it. The first of [`torch_cuda_candidates`]
/// that exists is loaded (a bare name: whatever the system finds). Returns a short description.
pub fn init_cuda() -> &'static str {
    static STATE: OnceLock<String> = OnceLock::new();
    STATE.get_or_init(|| {
        let mode = std::env::var("JEREX_LOAD_CUDA").unwrap_or_default();
        if mode == "never" {
            return "not loaded (JEREX_LOAD_CUDA=never)".to_string();
        }
        let candidates = torch_cuda_candidates();
        let looked = candidates
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", then ");
        // SAFETY: loading shared libraries runs their initialisers; both are the vendor's own
        // libraries, and libtorch_cuda only registers CUDA hooks with the already-loaded libtorch.
        unsafe {
            if mode != "always" && libloading::Library::new("libcuda.so.1").is_err() {
                return "no CUDA driver (libcuda.so.1 not found)".to_string();
            }
            let Some(path) = candidates
                .iter()
                .find(|p| p.parent() == Some(Path::new("")) || p.is_file())
            else {
                return format!("libtorch_cuda.so not found (looked for {looked})");
            };
            match libloading::os::unix::Library::open(
                Some(path),
                libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_GLOBAL,
            ) {
                Ok(lib) => {
                    // Kept loaded for the life of the process.
                    std::mem::forget(lib);
                    format!("loaded {}", path.display())
                }
                Err(e) => format!("libtorch_cuda.so not loaded (looked for {looked}): {e}"),
            }
        }
    })
}

/// Floating-point precision of the encoder on a device. Heads always run in fp32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    Fp32,
    Bf16,
    Fp16,
}

impl std::str::FromStr for Precision {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "fp32" | "f32" | "float32" => Ok(Precision::Fp32),
            "bf16" | "bfloat16" => Ok(Precision::Bf16),
            "fp16" | "f16" | "float16" | "half" => Ok(Precision::Fp16),
            other => Err(Error::Config(format!(
                "unknown precision '{other}' (expected fp32, bf16 or fp16)"
            ))),
        }
    }
}

impl Precision {
    /// The precision actually used on `device`: reduced precision only on CUDA (autocast on CPU
    /// is slower than fp32 on the machines this targets).
    pub fn effective(self, device: Device) -> Precision {
        if device.is_cuda() {
            self
        } else {
            Precision::Fp32
        }
    }

    pub fn autocast_kind(self) -> Option<tch::Kind> {
        match self {
            Precision::Fp32 => None,
            Precision::Bf16 => Some(tch::Kind::BFloat16),
            Precision::Fp16 => Some(tch::Kind::Half),
        }
    }
}

/// Parses a device list: `cpu`, `cuda`, `cuda:N`, `cuda:all`, comma-separated
/// (`cuda:0,cuda:1`). `cuda:all` expands to every visible GPU. Duplicates are an error.
pub fn parse_devices(spec: &str) -> Result<Vec<Device>> {
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let lower = part.to_ascii_lowercase();
        let devices = match lower.as_str() {
            "cpu" => vec![Device::Cpu],
            "cuda" | "gpu" => vec![Device::Cuda(0)],
            "cuda:all" | "gpu:all" => {
                init_cuda();
                let n = tch::Cuda::device_count() as usize;
                if n == 0 {
                    return Err(Error::Config(format!(
                        "devices '{spec}': cuda:all asked for but no CUDA device is visible"
                    )));
                }
                (0..n).map(Device::Cuda).collect()
            }
            other => {
                let idx = other
                    .strip_prefix("cuda:")
                    .or_else(|| other.strip_prefix("gpu:"))
                    .and_then(|n| n.parse::<usize>().ok())
                    .ok_or_else(|| {
                        Error::Config(format!(
                            "devices '{spec}': '{part}' is not cpu, cuda:N or cuda:all"
                        ))
                    })?;
                vec![Device::Cuda(idx)]
            }
        };
        for d in devices {
            if out.contains(&d) {
                return Err(Error::Config(format!(
                    "devices '{spec}': {} listed twice",
                    device_name(d)
                )));
            }
            out.push(d);
        }
    }
    if out.is_empty() {
        return Err(Error::Config("devices: empty device list".into()));
    }
    Ok(out)
}

/// The device list with the CPU entry (if any) repeated `replicas` times: one device thread
/// and model replica each.
pub fn with_cpu_replicas(devices: Vec<Device>, replicas: usize) -> Vec<Device> {
    devices
        .into_iter()
        .flat_map(|d| match d {
            Device::Cpu => vec![d; replicas.max(1)],
            _ => vec![d],
        })
        .collect()
}

/// Checks that every CUDA device in the list exists.
pub fn check_available(devices: &[Device]) -> Result<()> {
    let cuda: Vec<usize> = devices
        .iter()
        .filter_map(|d| match d {
            Device::Cuda(i) => Some(*i),
            _ => None,
        })
        .collect();
    if cuda.is_empty() {
        return Ok(());
    }
    init_cuda();
    let n = tch::Cuda::device_count() as usize;
    if let Some(bad) = cuda.iter().find(|&&i| i >= n) {
        return Err(Error::Config(format!(
            "devices: cuda:{bad} requested but {n} CUDA device(s) are visible ({})",
            init_cuda()
        )));
    }
    Ok(())
}

pub fn device_name(d: Device) -> String {
    match d {
        Device::Cpu => "cpu".into(),
        Device::Cuda(i) => format!("cuda:{i}"),
        other => format!("{other:?}").to_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_lists() {
        assert_eq!(parse_devices("cpu").unwrap(), vec![Device::Cpu]);
        assert_eq!(
            parse_devices("cuda:0, cuda:1").unwrap(),
            vec![Device::Cuda(0), Device::Cuda(1)]
        );
        assert_eq!(parse_devices("cuda").unwrap(), vec![Device::Cuda(0)]);
        assert!(parse_devices("cuda:0,cuda:0").is_err());
        assert!(parse_devices("tpu").is_err());
        assert!(parse_devices("").is_err());
        assert!(parse_devices("cuda:x").is_err());
    }

    #[test]
    fn cpu_replicas_repeat_only_the_cpu() {
        let (cpu, gpu) = (Device::Cpu, Device::Cuda(0));
        assert_eq!(with_cpu_replicas(vec![cpu], 2), vec![cpu, cpu]);
        assert_eq!(
            with_cpu_replicas(vec![gpu, cpu], 3),
            vec![gpu, cpu, cpu, cpu]
        );
        assert_eq!(with_cpu_replicas(vec![gpu], 2), vec![gpu]);
        assert_eq!(with_cpu_replicas(vec![cpu], 0), vec![cpu]);
    }

    #[test]
    fn reduced_precision_only_on_cuda() {
        assert_eq!(Precision::Bf16.effective(Device::Cpu), Precision::Fp32);
        assert_eq!(Precision::Bf16.effective(Device::Cuda(0)), Precision::Bf16);
        assert_eq!("fp16".parse::<Precision>().unwrap(), Precision::Fp16);
        assert!("int8".parse::<Precision>().is_err());
    }
}
