//! The binary as a user meets it: starts without LD_LIBRARY_PATH (libtorch found through the
//! embedded rpath), `--help` lists the subcommands, `doctor` can load libtorch_cuda, and a bad
//! flag value is a configuration error.

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

#[test]
fn tune_refuses_an_unknown_target_as_bad_configuration() {
    let out = jerex()
        .args(["tune", "--data", "none.json", "--target", "precision=0.6"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("recall-at-precision=P"), "{text}");
}
