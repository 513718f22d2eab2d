//! `bitnet-bench serve` end to end: against an in-test server (the demo model), against a
//! `bitnet-cluster up` it launches itself (soak mode, memory sampled), and its errors.

use bitnet_coordinator::serve::{build, serve_on, ServeOptions};
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;

fn bench() -> Command {
    Command::new(env!("CARGO_BIN_EXE_bitnet-bench"))
}

/// The `bitnet-cluster` binary cargo built beside `bitnet-bench` (a workspace build).
fn cluster_bin() -> PathBuf {
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_bitnet-bench"));
    let bin = exe.with_file_name("bitnet-cluster");
    assert!(
        bin.exists(),
        "{} missing: build the workspace (cargo test --workspace)",
        bin.display()
    );
    bin
}

fn read_json(path: &std::path::Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn serve_reports_every_point_against_a_running_server() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (addr, stop) = runtime.block_on(async {
        let served = build(&ServeOptions {
            model_dir: None,
            max_num_seqs: 8,
            max_batched_tokens: 256,
            max_model_len: 128,
            num_kv_blocks: None,
            max_admitted: 64,
            device: Default::default(),
            threads: 1,
            lm_head_int8: false,
        })
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve_on(listener, served, async {
            let _ = rx.await;
        }));
        (addr, tx)
    });
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("serve.json");
    let out = bench()
        .args([
            "serve",
            "--server",
            &addr,
            "--concurrency",
            "1,3",
            "--request-rate",
            "inf,50",
        ])
        .args([
            "--num-prompts",
            "5",
            "--input-len",
            "12",
            "--output-len",
            "4",
            "--seed",
            "3",
        ])
        .args(["--goodput", "ttft:60000", "--json"])
        .arg(&json)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("TTFT ms") && stdout.contains("goodput"),
        "{stdout}"
    );
    let report = read_json(&json);
    assert_eq!(report["kind"], "serve");
    for key in ["machine", "date", "commit", "command"] {
        assert!(
            report["meta"][key].as_str().is_some_and(|s| !s.is_empty()),
            "meta.{key}"
        );
    }
    let points = report["points"].as_array().unwrap();
    assert_eq!(points.len(), 4, "2 concurrencies × 2 rates");
    assert_eq!(points[1]["request_rate"], 50.0);
    assert!(points[0]["request_rate"].is_null());
    for p in points {
        assert_eq!(p["completed"], 5, "{p}");
        assert_eq!(p["failed"], 0);
        assert_eq!(p["total_input_tokens"], 5 * 12);
        assert_eq!(p["total_output_tokens"], 5 * 4);
        assert!(p["output_throughput"].as_f64().unwrap() > 0.0);
        for metric in ["ttft", "tpot", "itl", "e2el"] {
            let median = p[metric]["median_ms"].as_f64().unwrap();
            assert!(
                median >= 0.0 && p[metric]["p99_ms"].as_f64().unwrap() >= median,
                "{metric}"
            );
        }
        let (wall, over) = (
            p["step_wall_ms"].as_f64().unwrap(),
            p["coordinator_overhead_ms_per_step"].as_f64().unwrap(),
        );
        assert!(
            p["steps"].as_u64().unwrap() >= 4 && wall > 0.0 && over <= wall,
            "{p}"
        );
        // Every request met a 60 s TTFT.
        let goodput = p["goodput"].as_f64().unwrap();
        assert!((goodput - p["request_throughput"].as_f64().unwrap()).abs() < 1e-9);
    }
    stop.send(()).unwrap();
}

#[test]
fn serve_launches_a_cluster_soaks_it_and_samples_its_memory() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("soak.json");
    let out = bench()
        .args(["serve", "--launch", "--cluster-bin"])
        .arg(cluster_bin())
        .args([
            "--concurrency",
            "2",
            "--input-len",
            "8",
            "--output-len",
            "4",
            "--num-prompts",
            "3",
        ])
        .args([
            "--duration",
            "1",
            "--rss-interval",
            "0.2",
            "--threads",
            "1",
            "--json",
        ])
        .arg(&json)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = read_json(&json);
    assert!(report["server"].as_str().unwrap().starts_with("launched"));
    let p = &report["points"][0];
    assert!(p["completed"].as_u64().unwrap() >= 2, "{p}");
    assert_eq!(p["failed"], 0);
    let rss = &p["rss"];
    let samples = rss["samples"].as_array().unwrap();
    assert!(samples.len() >= 2, "{rss}");
    assert!(
        samples.iter().all(|s| s[1].as_u64().unwrap() > 1 << 20),
        "{rss}"
    );
    assert!(rss["slope_mib_per_min"].as_f64().unwrap().is_finite());
}

#[test]
fn serve_errors_are_one_clear_line() {
    let out = bench()
        .args(["serve", "--server", "127.0.0.1:1", "--num-prompts", "1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("connecting to 127.0.0.1:1"), "{err}");

    let out = bench()
        .args(["serve", "--server", "x:1", "--goodput", "ttft"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("NAME:MILLISECONDS"));

    let out = bench().args(["serve"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--server"));

    let out = bench()
        .args(["serve", "--preset", "bitnet-9t", "--num-prompts", "1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown preset"));
}
