//! The `bitnet-cluster` binary as a user runs it: generate on the demo model and on fixture
//! checkpoints (JSON output, logits dump, chat template), `ckpt inspect`, and one clear error
//! line with a non-zero exit for bad directories, truncated files and bad prompt ids.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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

fn stdout_json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stdout is one JSON object")
}

/// Asserts a failed run printed exactly one `error:` line mentioning `needle`.
fn assert_one_error_line(out: &Output, needle: &str) {
    assert!(!out.status.success(), "expected a failure");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one error line, got: {stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    assert!(
        lines[0].contains(needle),
        "{stderr} should mention {needle}"
    );
}

fn ids(v: &serde_json::Value) -> Vec<u64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_u64().expect("id"))
        .collect()
}

#[test]
fn demo_model_generates_without_any_files() {
    let out = run(&[
        "generate",
        "--prompt",
        "Hello",
        "--max-new-tokens",
        "5",
        "--json",
    ]);
    let json = stdout_json(&out);
    assert_eq!(
        ids(&json["prompt_ids"])[0],
        0,
        "the demo tokenizer adds <|begin_of_text|> (id 0)"
    );
    let n = ids(&json["token_ids"]).len();
    let reason = json["finish_reason"].as_str().unwrap();
    assert!(
        (n == 5 && reason == "length") || (n <= 5 && reason == "stop"),
        "{json}"
    );
    assert!(json["decode_tokens_per_s"].as_f64().is_some());
    assert!(json["prefill_tokens_per_s"].as_f64().unwrap() > 0.0);
}

#[test]
fn generate_json_and_logits_dump_match_the_fixture() {
    let dir = fixture("bitnet-packed");
    let expected = std::fs::read(dir.join("expected.safetensors")).unwrap();
    let expected = safetensors::SafeTensors::deserialize(&expected).unwrap();
    let prompt: Vec<i64> = expected
        .tensor("prompt_ids")
        .unwrap()
        .data()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let greedy: Vec<u64> = expected
        .tensor("greedy_ids")
        .unwrap()
        .data()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as u64)
        .collect();
    let prompt_arg = prompt
        .iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let tmp = tempfile::tempdir().unwrap();
    let dump = tmp.path().join("logits.safetensors");
    let out = run(&[
        "generate",
        "--model",
        dir.join("model").to_str().unwrap(),
        "--prompt-ids",
        &prompt_arg,
        "--max-new-tokens",
        "24",
        "--temperature",
        "0",
        "--json",
        "--dump-logits",
        dump.to_str().unwrap(),
    ]);
    let json = stdout_json(&out);
    let got = ids(&json["token_ids"]);
    // Generation stops at an eos id; up to there it must equal the reference greedy tokens.
    assert_eq!(got[..], greedy[..got.len()], "greedy tokens");
    match json["finish_reason"].as_str().unwrap() {
        "length" => assert_eq!(got.len(), 24),
        "stop" => assert!(got.len() <= 24),
        other => panic!("finish_reason {other}"),
    }
    assert_eq!(ids(&json["prompt_ids"]).len(), prompt.len());

    let dumped = std::fs::read(&dump).unwrap();
    let dumped = safetensors::SafeTensors::deserialize(&dumped).unwrap();
    let logits = dumped.tensor("logits").unwrap();
    let reference = expected.tensor("logits").unwrap();
    assert_eq!(logits.dtype(), safetensors::Dtype::F32);
    assert_eq!(logits.shape(), reference.shape());
    let f = |b: &[u8]| -> Vec<f32> {
        b.chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    };
    let (a, b) = (f(logits.data()), f(reference.data()));
    let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let diff = a
        .iter()
        .zip(&b)
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(diff <= 1e-4 * scale, "max |Δlogit| {diff} vs scale {scale}");
}

#[test]
fn chat_prompt_uses_the_models_template() {
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("chat_expected.json")).unwrap())
            .unwrap();
    let name = expected["fixture"].as_str().unwrap_or("bitnet-packed");
    let model = fixture(name).join("model");
    let content = expected["messages"][0]["content"].as_str().unwrap();
    let out = run(&[
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--prompt",
        content,
        "--chat",
        "--max-new-tokens",
        "1",
        "--json",
    ]);
    let json = stdout_json(&out);
    assert_eq!(ids(&json["prompt_ids"]), ids(&expected["ids"]));
}

#[test]
fn inspect_reports_family_and_histograms() {
    let dir = fixture("1bitllm").join("model");
    let out = run(&["ckpt", "inspect", dir.to_str().unwrap(), "--json"]);
    let json = stdout_json(&out);
    let text = json.to_string();
    assert!(
        text.contains("1bitllm") || text.contains("OneBitLlm"),
        "{text}"
    );
    let table = run(&["ckpt", "inspect", dir.to_str().unwrap()]);
    assert!(table.status.success());
    assert!(String::from_utf8_lossy(&table.stdout).contains("q_proj"));
}

#[test]
fn bad_directory_is_one_clear_error() {
    let out = run(&[
        "generate",
        "--model",
        "/nonexistent/model",
        "--prompt-ids",
        "1,2",
    ]);
    assert_one_error_line(&out, "/nonexistent/model");
    let empty = tempfile::tempdir().unwrap();
    let out = run(&[
        "generate",
        "--model",
        empty.path().to_str().unwrap(),
        "--prompt-ids",
        "1",
    ]);
    assert_one_error_line(&out, "config.json");
}

#[test]
fn truncated_safetensors_is_one_clear_error() {
    let src = fixture("bitnet-packed").join("model");
    let tmp = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, tmp.path().join(path.file_name().unwrap())).unwrap();
    }
    let weights = tmp.path().join("model.safetensors");
    let len = std::fs::metadata(&weights).unwrap().len();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&weights)
        .unwrap();
    file.set_len(len / 2).unwrap();
    let out = run(&[
        "generate",
        "--model",
        tmp.path().to_str().unwrap(),
        "--prompt-ids",
        "1,2",
    ]);
    assert_one_error_line(&out, "model.safetensors");
}

#[test]
fn out_of_vocabulary_prompt_id_is_one_clear_error() {
    let model = fixture("bitnet-packed").join("model");
    let out = run(&[
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--prompt-ids",
        "1,99999999",
    ]);
    assert_one_error_line(&out, "99999999");
    let out = run(&["generate", "--prompt-ids", "1", "--temperature", "-1"]);
    assert_one_error_line(&out, "temperature");
    let out = run(&["generate", "--prompt-ids", "1", "--chat"]);
    assert_one_error_line(&out, "--chat");
}
