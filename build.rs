//! Embeds the libtorch location as the RUNPATH, so the binary, tests and benches run in the build
//! tree without LD_LIBRARY_PATH (`scripts/package.sh` rewrites it to `$ORIGIN/../lib` for the
//! release archive). torch-sys publishes the directory it linked against as DEP_TCH_LIBTORCH_LIB
//! (`links = "tch"`). libtorch_cuda.so is not linked (the linker drops it under --as-needed, and
//! loading it on a CPU machine costs start-up time and memory): `device::init_cuda` dlopens it
//! from beside the libtorch it finds at run time.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
        // PyTorch's version.py sits next to lib/; it names the exact build (e.g. 2.11.0+cu130).
        let version_py = std::path::Path::new(&lib).join("../version.py");
        println!("cargo:rerun-if-changed={}", version_py.display());
        if let Some(v) = std::fs::read_to_string(&version_py).ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("__version__ = "))
                .map(|v| v.trim_matches(|c| c == '\'' || c == '"').to_string())
        }) {
            println!("cargo:rustc-env=JEREX_LIBTORCH_VERSION={v}");
        }
    }
}
