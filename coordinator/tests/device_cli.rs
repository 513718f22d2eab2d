//! `--device` on the real `bitnet-cluster` binary: `cuda` on a build without the `cuda` feature
//! is one clear error line naming the feature (and, on a build with it but no GPU, one line
//! naming what is missing), for `generate`, `up`, `up --tp` and `worker`; an unknown device is
//! refused by the argument parser with the list of known ones. No GPU is needed; every case
//! fails before any model is loaded or process started.

use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bitnet-cluster"))
        .args(args)
        .output()
        .expect("binary runs")
}

/// Asserts a failed run whose stderr is exactly one `error:` line containing `needle`.
fn assert_one_error_line(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected a failure: {stderr}");
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one error line, got: {stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    assert!(
        lines[0].contains(needle),
        "{stderr} should mention {needle}"
    );
}

/// `--device cuda` with these arguments fails cleanly: the missing feature, or (a build with
/// it on a machine without a GPU) the missing library or device. A GPU machine may succeed.
fn assert_cuda_refused(args: &[&str]) {
    let out = run(args);
    if cfg!(feature = "cuda") {
        if !out.status.success() {
            assert_one_error_line(&out, "--device cuda: ");
        }
    } else {
        assert_one_error_line(
            &out,
            "this build has no CUDA support: rebuild with --features cuda",
        );
    }
}

#[test]
fn generate_on_cuda_without_the_feature_is_one_clear_error() {
    assert_cuda_refused(&[
        "generate",
        "--device",
        "cuda",
        "--prompt-ids",
        "1,2,3",
        "--max-new-tokens",
        "1",
    ]);
}

#[cfg(not(feature = "cuda"))]
#[test]
fn up_and_worker_on_cuda_without_the_feature_are_one_clear_error() {
    // Port 1 would need root to bind: the device check must come first.
    let feature = "rebuild with --features cuda";
    assert_one_error_line(&run(&["up", "--device", "cuda", "--port", "1"]), feature);
    assert_one_error_line(
        &run(&["up", "--device", "cuda", "--tp", "2", "--port", "1"]),
        feature,
    );
    assert_one_error_line(&run(&["worker", "--device", "cuda"]), feature);
}

#[test]
fn an_unknown_device_is_refused_with_the_known_ones() {
    for args in [
        &["generate", "--device", "bogus", "--prompt-ids", "1"][..],
        &["up", "--device", "bogus"][..],
        &["worker", "--device", "bogus"][..],
    ] {
        let out = run(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("'bogus'"), "{stderr}");
        assert!(
            stderr.contains("cpu") && stderr.contains("cuda"),
            "{stderr}"
        );
    }
}

#[test]
fn device_and_server_conflict() {
    let out = run(&[
        "generate",
        "--server",
        "127.0.0.1:1",
        "--device",
        "cuda",
        "--prompt-ids",
        "1",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--device"), "{stderr}");
}
