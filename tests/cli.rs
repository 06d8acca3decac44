//! The binary as a user meets it: starts without LD_LIBRARY_PATH (libtorch found through the
//! embedded rpath), `--help` lists the subcommands, and `doctor` can load libtorch_cuda.

use std::process::Command;

fn jerex() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_jerex"));
    cmd.env_remove("LD_LIBRARY_PATH");
    cmd
}

#[test]
fn help_lists_subcommands() {
    let out = jerex().arg("--help").output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    for sub in ["doctor", "run", "bench", "train", "eval", "tune"] {
        assert!(text.contains(sub), "--help does not mention {sub}:\n{text}");
    }
}

#[test]
fn doctor_reports_libtorch_and_loads_torch_cuda() {
    // Forcing the load proves libtorch_cuda.so is found and loads even without a GPU; on a GPU
    // machine the same call is what makes CUDA visible.
    let out = jerex()
        .arg("doctor")
        .env("JEREX_LOAD_CUDA", "always")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("libtorch: 2.11.0"), "{text}");
    assert!(text.contains("cuda: loaded"), "{text}");
    assert!(text.contains("threads:"), "{text}");
}
