//! `bitnet-cluster ckpt compress / verify` as a user runs them, with real processes: a
//! `kill -9` at chosen points (the test hook makes the binary block there) leaves no output or
//! the previous complete one; a full disk gives one clear error and leaves nothing behind;
//! `verify` (and `--verify` on load) catches a flipped byte and a corrupt packed code; a
//! malicious pickle is refused; options that cannot work are refused before writing.

use bitnet_checkpoints::test_hook::{BLOCKED_MARKER, ENV};
use bitnet_checkpoints::Manifest;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_bitnet-cluster"))
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("binary runs")
}

fn run_ok(args: &[&str]) -> Output {
    let out = run(args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn compress_args<'a>(input: &'a str, output: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["ckpt", "compress", "--input", input, "--output", output];
    v.extend_from_slice(extra);
    v
}

/// Entries of `dir`, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Starts a compression that blocks at `point`, waits for its marker, then SIGKILLs it.
fn kill_at(point: &str, args: &[&str]) {
    let mut child = bin()
        .args(args)
        .env(ENV, format!("block-at:{point}"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary starts");
    let mut seen = String::new();
    let reader = BufReader::new(child.stderr.take().unwrap());
    for line in reader.lines() {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line == format!("{BLOCKED_MARKER} {point}") {
            child.kill().expect("SIGKILL");
            child.wait().unwrap();
            return;
        }
    }
    let status = child.wait().unwrap();
    panic!("never reached {point} ({status}): {seen}");
}

#[test]
fn kill_9_at_any_point_leaves_no_output_or_the_previous_complete_one() {
    let tmp = tempfile::tempdir().unwrap();
    let src = fixture("bitnet-bf16/model");
    let src = src.to_str().unwrap();
    let dest = tmp.path().join("out");
    let d = dest.to_str().unwrap();
    let tp2 = compress_args(src, d, &["--tp", "2"]);

    for point in ["tensor:1", "tensor:9", "before-commit"] {
        kill_at(point, &compress_args(src, d, &[]));
        assert!(!dest.exists(), "killed at {point}: no output may appear");
    }
    // A complete output, then killed replacements of it.
    run_ok(&compress_args(src, d, &[]));
    let previous = std::fs::read(dest.join("manifest.json")).unwrap();
    for point in ["tensor:3", "tensor:40", "before-commit"] {
        kill_at(point, &tp2);
        assert_eq!(
            std::fs::read(dest.join("manifest.json")).unwrap(),
            previous,
            "killed at {point}: the previous output stays"
        );
        run_ok(&["ckpt", "verify", d]);
    }
    kill_at("after-swap", &tp2);
    let out = run_ok(&["ckpt", "verify", d]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("tensor-parallel, 2 ranks"),
        "killed after the swap: the new output is complete"
    );
    assert!(
        entries(tmp.path()).len() > 1,
        "stale partial directories are left"
    );
    run_ok(&compress_args(src, d, &[]));
    assert_eq!(entries(tmp.path()), ["out"], "the next run removes them");
    run_ok(&["ckpt", "verify", d]);
}

#[test]
fn disk_full_is_one_clear_error_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let src = fixture("1bitllm/model");
    let before = Manifest::build(&src).unwrap();
    let dest = tmp.path().join("out");
    let d = dest.to_str().unwrap();
    let args = compress_args(src.to_str().unwrap(), d, &["--json"]);
    let out = run_ok(&args);
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let total = summary["output_bytes"].as_u64().unwrap();
    std::fs::remove_dir_all(&dest).unwrap();
    for limit in [10, total / 2, total - 100] {
        let out = bin()
            .args(&args)
            .env(ENV, format!("enospc-after:{limit}"))
            .output()
            .unwrap();
        assert!(!out.status.success(), "limit {limit}: must fail");
        let err = stderr(&out);
        let last = err.lines().last().unwrap_or_default();
        assert!(
            last.starts_with("error: ") && last.contains("No space left on device"),
            "limit {limit}: {err}"
        );
        assert!(
            entries(tmp.path()).is_empty(),
            "limit {limit}: nothing left behind"
        );
    }
    assert_eq!(
        Manifest::build(&src).unwrap(),
        before,
        "the input is untouched"
    );
}

/// Byte offset in the file of tensor `name`'s data.
fn tensor_offset(file: &Path, name: &str) -> usize {
    let bytes = std::fs::read(file).unwrap();
    let (n, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    8 + n + meta.info(name).unwrap().data_offsets.0
}

#[test]
fn verify_catches_a_flipped_byte_and_a_corrupt_packed_code() {
    let tmp = tempfile::tempdir().unwrap();
    let src = fixture("bitnet-packed/model");
    let dest = tmp.path().join("out");
    let d = dest.to_str().unwrap();
    run_ok(&compress_args(src.to_str().unwrap(), d, &[]));
    let out = run_ok(&["ckpt", "verify", d]);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ok: "));

    let file = dest.join("model.safetensors");
    let at = tensor_offset(&file, "model.layers.1.mlp.up_proj.weight") + 7;
    let original = std::fs::read(&file).unwrap();
    let mut bytes = original.clone();
    bytes[at] ^= 0x01;
    std::fs::write(&file, &bytes).unwrap();
    for args in [
        vec!["ckpt", "verify", d],
        vec!["generate", "--verify", "--model", d, "--prompt-ids", "1,2"],
    ] {
        let out = run(&args);
        assert!(!out.status.success(), "{args:?}");
        let err = stderr(&out);
        assert!(
            err.contains("model.safetensors: SHA-256") && err.contains("corrupt"),
            "{args:?}: {err}"
        );
    }
    // Consistent hashes but a code 3 (as a buggy writer would leave): the load check finds it.
    bytes[at] = 0xff;
    std::fs::write(&file, &bytes).unwrap();
    Manifest::build(&dest).unwrap().write(&dest).unwrap();
    let err = stderr(&run(&["ckpt", "verify", d]));
    assert!(
        err.contains("up_proj.weight") && err.contains("packed code 3"),
        "{err}"
    );
    std::fs::write(&file, &original).unwrap();
    Manifest::build(&dest).unwrap().write(&dest).unwrap();
    run_ok(&["ckpt", "verify", d]);
    run_ok(&[
        "generate",
        "--verify",
        "--model",
        d,
        "--prompt-ids",
        "1,2",
        "--max-new-tokens",
        "2",
    ]);
}

#[test]
fn a_malicious_pickle_is_refused_and_a_onebit_pickle_is_imported() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad");
    std::fs::create_dir(&bad).unwrap();
    let pickles = fixture("onebit-pickle");
    std::fs::copy(pickles.join("model/config.json"), bad.join("config.json")).unwrap();
    std::fs::copy(pickles.join("malicious.bin"), bad.join("pytorch_model.bin")).unwrap();
    let out_dir = tmp.path().join("out");
    let o = out_dir.to_str().unwrap();
    let out = run(&compress_args(bad.to_str().unwrap(), o, &[]));
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(
        err.contains("pytorch_model.bin: refused: data.pkl: global ")
            && err.contains(".system is not allowed")
            && err.contains("nothing is executed"),
        "{err}"
    );
    assert!(!out_dir.exists());
    let src = pickles.join("model");
    let out = run_ok(&compress_args(
        src.to_str().unwrap(),
        o,
        &["--lm-head", "keep"],
    ));
    assert!(String::from_utf8_lossy(&out.stdout).contains("wrote"));
    let dump = |model: &str, file: &Path| {
        let f = file.to_str().unwrap().to_string();
        run_ok(&[
            "generate",
            "--model",
            model,
            "--prompt-ids",
            "1,5,9",
            "--max-new-tokens",
            "1",
            "--dump-logits",
            &f,
        ]);
        std::fs::read(file).unwrap()
    };
    let a = dump(
        fixture("onebit/model").to_str().unwrap(),
        &tmp.path().join("a.st"),
    );
    let b = dump(o, &tmp.path().join("b.st"));
    assert_eq!(
        a, b,
        "the imported pickle gives the safetensors fixture's logits"
    );
}

#[test]
fn options_that_cannot_work_are_refused_before_writing() {
    let tmp = tempfile::tempdir().unwrap();
    let src = fixture("bitnet-bf16/model");
    let s = src.to_str().unwrap();
    let dest = tmp.path().join("out");
    let d = dest.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            compress_args(s, d, &["--format", "hf-packed", "--tp", "2"]),
            "--tp writes the native format only",
        ),
        (
            compress_args(s, d, &["--tp", "3"]),
            "does not divide the 4 attention heads",
        ),
        (
            compress_args(s, d, &["--format", "bitblas", "--lm-head", "int8"]),
            "--lm-head int8 is written by the native format only",
        ),
    ];
    for (args, needle) in cases {
        let err = stderr(&run(&args));
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!dest.exists());
    }
    let llama = fixture("llama-f16/model");
    let err = stderr(&run(&compress_args(
        llama.to_str().unwrap(),
        d,
        &["--format", "hf-packed"],
    )));
    assert!(
        err.contains("holds the 1bitllm and bitnet families only"),
        "{err}"
    );
    let inside = src.join("out");
    let err = stderr(&run(&compress_args(s, inside.to_str().unwrap(), &[])));
    assert!(err.contains("must not be --input"), "{err}");
    assert!(!inside.exists());
    std::fs::create_dir(&dest).unwrap();
    std::fs::write(dest.join("notes.txt"), b"mine").unwrap();
    let err = stderr(&run(&compress_args(s, d, &[])));
    assert!(err.contains("is not a previous output"), "{err}");
    assert_eq!(std::fs::read(dest.join("notes.txt")).unwrap(), b"mine");
}

#[test]
fn presharded_output_names_its_rank_count_and_inspect_knows_every_format() {
    let tmp = tempfile::tempdir().unwrap();
    let src = fixture("bitnet-bf16/model");
    let s = src.to_str().unwrap();
    let tp2 = tmp.path().join("tp2");
    let t = tp2.to_str().unwrap();
    let out = run_ok(&compress_args(s, t, &["--tp", "2"]));
    assert!(
        stderr(&out).contains("compress: [4/4]"),
        "plain progress lines off a terminal"
    );
    let files = entries(&tp2);
    for f in [
        "bitnet_format.json",
        "manifest.json",
        "model-tp00-of-02.safetensors",
        "model-tp01-of-02.safetensors",
        "tokenizer.json",
        "config.json",
    ] {
        assert!(files.contains(&f.to_string()), "{files:?}");
    }
    let err = stderr(&run(&["up", "--model", t, "--tp", "4", "--port", "0"]));
    assert!(
        err.contains("pre-sharded for --tp 2 but --tp 4 was asked"),
        "{err}"
    );
    let err = stderr(&run(&["generate", "--model", t, "--prompt-ids", "1"]));
    assert!(err.contains("serve it with `up --tp 2`"), "{err}");
    for (format, extra, expected) in [
        ("tp2", vec![], "native v1 (tensor-parallel, 2 ranks)"),
        ("native", vec![], "native v1"),
        (
            "hf",
            vec!["--format", "hf-packed"],
            "hf-packed (uint8 [out/4, in], autobitlinear)",
        ),
        (
            "bitblas",
            vec!["--format", "bitblas"],
            "bitblas (fused qkv / gate_up, unpermuted)",
        ),
    ] {
        let dir = tmp.path().join(format);
        let dir = dir.to_str().unwrap();
        if format != "tp2" {
            run_ok(&compress_args(s, dir, &extra));
        }
        let out = run_ok(&["ckpt", "inspect", dir, "--json"]);
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["format"], expected, "{format}");
    }
}
