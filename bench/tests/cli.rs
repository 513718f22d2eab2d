//! Every `bitnet-bench` subcommand except `serve` (tests/serve.rs) on a tiny model, through the
//! binary: the output structure is checked (the figures themselves are not asserted), then
//! `report` turns the JSON files into Markdown and SVG plots.

use serde_json::Value;
use std::path::Path;
use std::process::Command;

fn bench(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_bitnet-bench"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn fixture_model() -> String {
    format!(
        "{}/../tests/fixtures/bitnet-packed/model",
        env!("CARGO_MANIFEST_DIR")
    )
}

#[test]
fn model_sweep_ppl_and_report_on_a_tiny_model() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).display().to_string();

    let (ok, stdout, err) = bench(&[
        "model",
        "--preset",
        "bitnet-tiny",
        "--batch",
        "1,2",
        "--prompt-len",
        "8",
        "--gen-len",
        "3",
        "--threads",
        "1",
        "--json",
        &p("model.json"),
    ]);
    assert!(ok, "{err}");
    assert!(
        stdout.contains("decode t/s") && stdout.contains("energy:"),
        "{stdout}"
    );
    let model = json(&dir.path().join("model.json"));
    assert_eq!(model["kind"], "model");
    assert_eq!(model["results"].as_array().unwrap().len(), 2);
    assert!(model["results"][1]["decode_tokens_per_s"].as_f64().unwrap() > 0.0);
    assert!(model["energy"]["source"].as_str().is_some());
    let (ok, _, err) = bench(&[
        "model",
        "--preset",
        "llama-tiny",
        "--batch",
        "1",
        "--prompt-len",
        "8",
        "--gen-len",
        "3",
        "--threads",
        "1",
        "--json",
        &p("model-llama.json"),
    ]);
    assert!(ok, "{err}");

    let (ok, stdout, err) = bench(&[
        "model",
        "--preset",
        "bitnet-tiny",
        "--sweep-to-memory",
        "--memory-budget",
        "0.12",
        "--sweep-seq-len",
        "256",
        "--sweep-steps",
        "1",
        "--threads",
        "1",
        "--json",
        &p("sweep.json"),
    ]);
    assert!(ok, "{err}");
    assert!(stdout.contains("max batch"), "{stdout}");
    let sweep = json(&dir.path().join("sweep.json"));
    assert_eq!(sweep["kind"], "sweep");
    let models = sweep["models"].as_array().unwrap();
    assert_eq!(models[0]["preset"], "bitnet-tiny");
    assert_eq!(models[1]["preset"], "llama-tiny");
    let budget = sweep["memory_budget_bytes"].as_u64().unwrap();
    for m in models {
        let points = m["points"].as_array().unwrap();
        assert_eq!(points.last().unwrap()["batch"], m["max_batch"]);
        assert!(points
            .windows(2)
            .all(|w| w[0]["batch"].as_u64() < w[1]["batch"].as_u64()));
        assert!(points
            .iter()
            .all(|q| q["resident_bytes"].as_u64().unwrap() <= budget));
    }
    assert!(sweep["max_batch_ratio"].as_f64().unwrap() > 0.0);
    assert_eq!(sweep["device"], "cpu");
    assert!(stdout.contains("sweep: bitnet-tiny max batch"), "{stdout}");

    // A CUDA sweep's JSON (as the GPU writes it: the LLaMA ran out of memory at its first
    // batch, NVML measured the BitNet) renders in the same report.
    let mut cuda = sweep.clone();
    cuda["device"] = "cuda".into();
    cuda["card"] = "NVIDIA H100 80GB HBM3".into();
    cuda["threads"] = 0.into();
    cuda["max_batch_ratio"] = Value::Null;
    cuda["throughput_ratio"] = Value::Null;
    cuda["models"][0]["energy"] = serde_json::json!({
        "measurable": true,
        "source": "nvml: total energy of GPU 00000000:65:00.0 (NVIDIA H100 80GB HBM3)",
        "joules_per_token": 0.25, "average_watts": 410.0, "window_s": 10.2, "note": null
    });
    cuda["models"][1]["max_batch"] = 0.into();
    cuda["models"][1]["points"] = serde_json::json!([]);
    cuda["models"][1]["note"] =
        "batch 1 ran out of device memory (CUDA_ERROR_OUT_OF_MEMORY); no batch fits".into();
    std::fs::write(dir.path().join("sweep-cuda.json"), cuda.to_string()).unwrap();

    let text = dir.path().join("text.txt");
    std::fs::write(
        &text,
        "the first line of text\n\nanother line, a little longer than the first one\nend\n",
    )
    .unwrap();
    let (ok, stdout, err) = bench(&[
        "ppl",
        "--model",
        &fixture_model(),
        "--text",
        &text.display().to_string(),
        "--seqlen",
        "64",
        "--threads",
        "1",
        "--json",
        &p("ppl.json"),
    ]);
    assert!(ok, "{err}");
    assert!(stdout.starts_with("perplexity "), "{stdout}");
    let ppl = json(&dir.path().join("ppl.json"));
    assert_eq!(ppl["texts"], 3);
    let v = ppl["perplexity"].as_f64().unwrap();
    assert!(v > 1.0 && v.is_finite(), "{v}");
    assert!((ppl["mean_nll"].as_f64().unwrap().exp() - v).abs() < 1e-9 * v);

    // A file that is not a benchmark result is skipped, not fatal.
    std::fs::write(dir.path().join("other.json"), "{\"x\": 1}").unwrap();
    let (ok, stdout, err) = bench(&["report", &dir.path().display().to_string()]);
    assert!(ok, "{err}");
    assert!(stdout.contains("report.md"));
    assert!(err.contains("other.json"), "{err}");
    let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    for heading in [
        "## Decode and prefill",
        "## Largest batch under a memory budget",
        "## Energy",
        "## Perplexity",
    ] {
        assert!(md.contains(heading), "missing {heading}:\n{md}");
    }
    assert!(
        md.contains("BitNet versus FP16 LLaMA")
            && md.contains("Source:")
            && md.contains("--sweep-to-memory")
    );
    assert!(
        md.contains("| bitnet-tiny | cuda (NVIDIA H100 80GB HBM3) |")
            && md.contains("| bitnet-tiny | cpu |")
            && md.contains(
                "BitNet ÷ FP16 LLaMA on cuda (NVIDIA H100 80GB HBM3): largest batch **—**"
            )
            && md.contains(
                "llama-tiny on cuda (NVIDIA H100 80GB HBM3): batch 1 ran out of device memory"
            )
            && md.contains("| 0.250 | 410.0 | 10.2 |"),
        "{md}"
    );
    for plot in [
        "decode_vs_batch.svg",
        "sweep_throughput.svg",
        "sweep_memory.svg",
    ] {
        let svg = std::fs::read_to_string(dir.path().join("plots").join(plot)).unwrap();
        assert!(
            svg.contains("<svg") && svg.contains("bitnet-tiny"),
            "{plot}"
        );
    }
}

#[test]
fn bad_input_is_a_clear_error() {
    let empty = tempfile::tempdir().unwrap();
    let (ok, _, err) = bench(&["report", &empty.path().display().to_string()]);
    assert!(!ok && err.contains("no benchmark JSON files"), "{err}");
    let (ok, _, err) = bench(&[
        "model",
        "--preset",
        "bitnet-tiny",
        "--sweep-to-memory",
        "--memory-budget",
        "0.000001",
    ]);
    assert!(!ok && err.contains("leave no room"), "{err}");
    let (ok, _, err) = bench(&[
        "model",
        "--preset",
        "bitnet-tiny",
        "--sweep-to-memory",
        "--memory-budget=-1",
    ]);
    assert!(!ok && err.contains("positive"), "{err}");
    let (ok, _, err) = bench(&[
        "ppl",
        "--model",
        &fixture_model(),
        "--text",
        "/nonexistent/t.txt",
    ]);
    assert!(!ok && err.contains("/nonexistent/t.txt"), "{err}");
    let (ok, _, err) = bench(&[
        "ppl",
        "--model",
        empty.path().to_str().unwrap(),
        "--text",
        "/dev/null",
    ]);
    assert!(!ok && err.contains("tokenizer"), "{err}");
}

#[test]
fn device_cuda_is_refused_cleanly_without_the_feature_or_a_gpu() {
    for args in [
        &["model", "--preset", "bitnet-tiny", "--device", "cuda"][..],
        &["kernels", "--device", "cuda", "--n", "1"][..],
        &[
            "model",
            "--preset",
            "bitnet-tiny",
            "--device",
            "cuda",
            "--sweep-to-memory",
            "--sweep-seq-len",
            "64",
        ][..],
    ] {
        let (ok, _, err) = bench(args);
        if cfg!(feature = "cuda") {
            // A GPU machine may run it; without one, the missing library or device is named.
            assert!(ok || err.contains("--device cuda"), "{args:?}: {err}");
        } else {
            assert!(!ok, "{args:?}");
            assert!(
                err.contains("this build has no CUDA support: rebuild with --features cuda"),
                "{args:?}: {err}"
            );
        }
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    let (ok, _, err) = bench(&["kernels", "--device", "bogus"]);
    assert!(
        !ok && err.contains("'bogus'") && err.contains("cuda"),
        "{err}"
    );
}
