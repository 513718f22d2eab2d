//! `bitnet-cluster up --tp N` end to end with real processes: the binary spawns N
//! `bitnet-cluster worker` processes joined by the TCP ring; a client gets the transformers
//! greedy tokens of the `bitnet-packed` fixture for TP = 1 and TP = 2; SIGTERM stops the
//! coordinator with exit 0 and no worker survives; a killed worker fails every open stream,
//! turns health NOT_SERVING, makes the coordinator exit non-zero and take the other workers
//! down. Linux only (process checks read `/proc`).
#![cfg(target_os = "linux")]

use bitnet_client::{
    Client, ClientOptions, FinishReason, GenerateEvent, GenerateParams, SamplingParams,
};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tokio_stream::StreamExt;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
}

fn expected_ids(name: &str, tensor: &str) -> Vec<u32> {
    let bytes = std::fs::read(fixture(name).join("expected.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensor(tensor)
        .unwrap()
        .data()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as u32)
        .collect()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The coordinator process; killed and reaped if a test fails before stopping it.
struct Server {
    child: Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(tp: usize) -> Self {
        Self::start_with(tp, &[])
    }

    fn start_with(tp: usize, extra: &[&str]) -> Self {
        let port = free_port();
        let model = fixture("bitnet-packed").join("model");
        let child = Command::new(env!("CARGO_BIN_EXE_bitnet-cluster"))
            .args(["up", "--model"])
            .arg(&model)
            .args(["--tp", &tp.to_string(), "--port", &port.to_string()])
            .args(["--threads-per-worker", "1", "--max-model-len", "256"])
            .args(["--max-num-seqs", "8"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        Self {
            child,
            addr: format!("127.0.0.1:{port}"),
        }
    }

    /// A client, once the server answers `GetModelInfo` (retries for up to 20 s).
    async fn client(&mut self) -> Client {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the server exited during startup: {status}");
            }
            let options = ClientOptions::default()
                .with_connect_timeout(Duration::from_millis(500))
                .with_request_timeout(Duration::from_secs(20));
            if let Ok(client) = Client::connect(&self.addr, options).await {
                if client.model_info().await.is_ok() {
                    return client;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the server did not start in 20 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn workers(&self) -> Vec<u32> {
        children_of(self.child.id())
    }

    fn signal(&self, signal: &str) {
        signal_pid(self.child.id(), signal);
    }

    fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "the server did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn signal_pid(pid: u32, signal: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{signal} {pid}");
}

/// `(ppid, state)` of a process, from `/proc/PID/stat`; `None` once it is gone.
fn stat(pid: u32) -> Option<(u32, char)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((ppid, state))
}

fn children_of(parent: u32) -> Vec<u32> {
    let mut out: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| matches!(stat(pid), Some((ppid, _)) if ppid == parent))
        .collect();
    out.sort();
    out
}

fn alive(pid: u32) -> bool {
    matches!(stat(pid), Some((_, state)) if state != 'Z' && state != 'X')
}

fn assert_all_gone(pids: &[u32]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while pids.iter().any(|&p| alive(p)) {
        assert!(
            Instant::now() < deadline,
            "worker processes survived: {:?}",
            pids.iter().filter(|&&p| alive(p)).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Serves the fixture with `tp` worker processes, checks the greedy tokens, stops it with
/// SIGTERM and checks every worker is gone.
async fn greedy_with_workers(tp: usize, extra: &[&str]) {
    let mut server = Server::start_with(tp, extra);
    let client = server.client().await;
    let workers = server.workers();
    assert_eq!(workers.len(), tp, "one worker process per rank");
    let info = client.model_info().await.unwrap();
    assert_eq!(info.tensor_parallel as usize, tp);
    if let Some(i) = extra.iter().position(|&a| a == "--num-kv-blocks") {
        let blocks: u64 = extra[i + 1].parse().unwrap();
        assert_eq!(client.server_info().await.unwrap().kv_blocks_total, blocks);
    }

    let prompt = expected_ids("bitnet-packed", "prompt_ids");
    let reference = expected_ids("bitnet-packed", "greedy_ids");
    let sampling = SamplingParams::greedy().max_tokens(24).ignore_eos(true);
    let mut handles = Vec::new();
    for _ in 0..3 {
        let client = client.clone();
        let params = GenerateParams::token_ids(prompt.clone()).with_sampling(sampling.clone());
        handles.push(tokio::spawn(
            async move { client.generate_text(params).await },
        ));
    }
    for h in handles {
        let out = h.await.unwrap().unwrap();
        let choice = &out.choices[0];
        assert_eq!(
            choice.output_ids, reference,
            "TP={tp} greedy = transformers"
        );
        assert_eq!(choice.finish_reason, FinishReason::Length);
        assert_eq!(choice.usage.completion_tokens, 24);
    }
    drop(client);

    server.signal("TERM");
    let status = server.wait(Duration::from_secs(15));
    assert!(status.success(), "SIGTERM exits 0, got {status}");
    assert_all_gone(&workers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tp1_worker_process_matches_the_reference() {
    greedy_with_workers(1, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tp2_worker_processes_match_the_reference() {
    greedy_with_workers(2, &[]).await;
}

/// Runs `bitnet-cluster generate` (greedy, 12 tokens, top-2 logprobs, JSON) with `args` on the
/// fixture's prompt.
fn generate_json(args: &[&str]) -> serde_json::Value {
    let prompt = expected_ids("bitnet-packed", "prompt_ids")
        .iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let out = Command::new(env!("CARGO_BIN_EXE_bitnet-cluster"))
        .arg("generate")
        .args(args)
        .args(["--prompt-ids", &prompt, "--max-new-tokens", "12"])
        .args(["--temperature", "0", "--json", "--logprobs", "2"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The sampled token's logprob at every step of a `generate --json --logprobs` output.
fn sampled_logprobs(v: &serde_json::Value) -> Vec<f64> {
    v["logprobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["sampled"]["logprob"].as_f64().unwrap())
        .collect()
}

/// `up --tp 2 --lm-head int8`: both workers serve with the int8 head, so the served tokens and
/// logprobs are offline `generate --lm-head int8`'s, and the logprobs differ from the stored
/// head's (the flag reached the workers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tp2_int8_head_serves_what_offline_int8_generate_gives() {
    let mut server = Server::start_with(2, &["--lm-head", "int8"]);
    let _ = server.client().await;
    let addr = server.addr.clone();
    let served = tokio::task::spawn_blocking(move || generate_json(&["--server", &addr]))
        .await
        .unwrap();
    let model = fixture("bitnet-packed").join("model");
    let model = model.to_str().unwrap();
    let int8 = generate_json(&["--model", model, "--lm-head", "int8"]);
    let stored = generate_json(&["--model", model]);
    assert_eq!(served["token_ids"], int8["token_ids"]);
    let (s, i, f) = (
        sampled_logprobs(&served),
        sampled_logprobs(&int8),
        sampled_logprobs(&stored),
    );
    assert_eq!(s.len(), 12);
    for (a, b) in s.iter().zip(&i) {
        assert!((a - b).abs() < 1e-4, "served {a} vs offline int8 {b}");
    }
    let moved = s
        .iter()
        .zip(&f)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(
        moved > 1e-4,
        "int8 head logprobs equal the stored head's ({moved})"
    );
    server.signal("TERM");
    assert!(server.wait(Duration::from_secs(15)).success());
}

/// Chunked prefill (4 tokens a step) and preemption (4 KV blocks for 3 requests needing 2
/// each) across worker processes: resumed sequences restart on every rank and still give the
/// reference tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tp2_chunked_prefill_and_preemption_match_the_reference() {
    greedy_with_workers(2, &["--max-batched-tokens", "4", "--num-kv-blocks", "4"]).await;
}

/// `n > 1` and logprobs across worker processes: the forks start on blocks the first sample
/// computed on every rank (a prompt of three blocks), so greedy samples all equal `n = 1`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tp2_forks_share_prompt_blocks_and_return_logprobs() {
    let mut server = Server::start(2);
    let client = server.client().await;
    let prompt: Vec<u32> = (0..40).map(|i| (i * 37 + 11) % 250 + 3).collect();
    let greedy = SamplingParams::greedy().max_tokens(12).ignore_eos(true);
    let run = |sampling: SamplingParams| {
        let params = GenerateParams::token_ids(prompt.clone()).with_sampling(sampling);
        let client = client.clone();
        async move { client.generate_text(params).await.unwrap() }
    };
    let one = run(greedy.clone()).await;
    let many = run(greedy.n(3).logprobs(2)).await;
    assert_eq!(many.choices.len(), 3);
    for c in &many.choices {
        assert_eq!(
            c.output_ids, one.choices[0].output_ids,
            "sample {}",
            c.index
        );
        assert_eq!(c.logprobs.len(), 12);
        assert!(c
            .logprobs
            .iter()
            .all(|l| l.top.len() == 2 && l.top[0] == l.sampled));
    }
    assert_eq!(client.server_info().await.unwrap().kv_blocks_used, 0);
    drop(client);
    let workers = server.workers();
    server.signal("TERM");
    assert!(server.wait(Duration::from_secs(15)).success());
    assert_all_gone(&workers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_worker_stops_the_cluster_with_an_error() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
    let mut server = Server::start(2);
    let client = server.client().await;
    let workers = server.workers();
    assert_eq!(workers.len(), 2);
    // Health is watched from before the failure.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    let mut watch = health
        .watch(HealthCheckRequest {
            service: "bitnet.v1.Serving".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let status = |m: Option<tonic_health::pb::HealthCheckResponse>| m.map(|m| m.status());
    assert_eq!(
        status(watch.message().await.unwrap()),
        Some(ServingStatus::Serving)
    );
    // Two long requests in flight when the worker dies: each fails with an error (no hang).
    let prompt = expected_ids("bitnet-packed", "prompt_ids");
    let sampling = SamplingParams::greedy().max_tokens(240).ignore_eos(true);
    let mut streams: Vec<_> = (0..2)
        .map(|_| {
            client
                .generate(GenerateParams::token_ids(prompt.clone()).with_sampling(sampling.clone()))
        })
        .collect();
    for stream in &mut streams {
        let first = stream
            .next()
            .await
            .expect("an event")
            .expect("the first chunk");
        assert!(matches!(first, GenerateEvent::Chunk { .. }), "{first:?}");
    }
    signal_pid(workers[1], "KILL");
    for (i, stream) in streams.iter_mut().enumerate() {
        let mut failed = false;
        while let Some(event) = stream.next().await {
            match event {
                Err(_) => failed = true,
                Ok(GenerateEvent::Complete { finish_reason, .. }) => {
                    failed |= finish_reason == FinishReason::Error;
                }
                Ok(_) => {}
            }
        }
        assert!(failed, "open request {i} ends with an error");
    }
    // Health turns NOT_SERVING (the server drains open streams, this watch included, so the
    // watcher always sees it).
    loop {
        match watch.message().await {
            Ok(Some(m)) if m.status() == ServingStatus::Serving => continue,
            Ok(Some(m)) => {
                assert_eq!(m.status(), ServingStatus::NotServing);
                break;
            }
            other => panic!("the health watch ended before NOT_SERVING: {other:?}"),
        }
    }
    drop(watch);
    let status = server.wait(Duration::from_secs(15));
    assert!(
        !status.success(),
        "a dead worker exits non-zero, got {status}"
    );
    assert_all_gone(&workers);
}

/// One `bitnet-cluster worker` driven by hand: port on stdout, Info/Health before and after
/// loading the demo model, a bad step answered with an error on the stream (the worker keeps
/// serving), a good step, and `Shutdown` ending the process with exit 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_serves_its_api_and_exits_on_shutdown() {
    use bitnet_proto::worker::worker_client::WorkerClient;
    use bitnet_proto::worker::{
        HealthRequest, InfoRequest, LoadModelRequest, NewRequest, ProfileRequest, RunningRequest,
        ShutdownRequest, StepRequest,
    };
    use std::io::BufRead;

    let mut child = Command::new(env!("CARGO_BIN_EXE_bitnet-cluster"))
        .args(["worker", "--port", "0", "--threads", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let mut worker = Server {
        child,
        addr: String::new(),
    };
    let port: u16 = line
        .trim()
        .strip_prefix("listening ")
        .expect("`listening <port>` first")
        .parse()
        .unwrap();
    let mut client = WorkerClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .unwrap();

    let info = client.info(InfoRequest {}).await.unwrap().into_inner();
    assert_eq!((info.device.as_str(), info.block_size), ("cpu", 16));
    assert!(!info.ring_address.is_empty());
    assert!(info.shape.is_none(), "no shape before LoadModel");
    let health = client.health(HealthRequest {}).await.unwrap().into_inner();
    assert!(!health.ready);

    let loaded = client
        .load_model(LoadModelRequest {
            model_dir: String::new(),
            tp_rank: 0,
            tp_size: 1,
            verify: false,
            max_model_len: 64,
            lm_head_int8: false,
        })
        .await
        .unwrap()
        .into_inner();
    let shape = loaded.shape.unwrap();
    assert!(shape.vocab_size > 0);
    assert!(
        client
            .health(HealthRequest {})
            .await
            .unwrap()
            .into_inner()
            .ready
    );

    // Profile allocates the paged KV pool, capped by `max_blocks`.
    let profiled = client
        .profile(ProfileRequest {
            block_size: 16,
            memory_budget_bytes: 0,
            max_blocks: 4,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(profiled.num_blocks, 4);

    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut responses = client
        .step(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    // A running sequence the worker never saw: an error answer, not a crash.
    tx.send(StepRequest {
        step_id: 1,
        running: vec![RunningRequest {
            seq_id: 5,
            num_scheduled: 1,
            ..Default::default()
        }],
        ..Default::default()
    })
    .await
    .unwrap();
    let bad = responses.message().await.unwrap().unwrap();
    assert_eq!(bad.step_id, 1);
    assert!(bad.error.contains("never sent as new"), "{}", bad.error);
    tx.send(StepRequest {
        step_id: 2,
        new_requests: vec![NewRequest {
            seq_id: 1,
            prompt_ids: vec![1, 2, 3],
            num_scheduled: 3,
            block_ids: vec![3],
            ..Default::default()
        }],
        ..Default::default()
    })
    .await
    .unwrap();
    let good = responses.message().await.unwrap().unwrap();
    assert_eq!((good.step_id, good.error.as_str()), (2, ""));
    assert_eq!(good.tokens.len(), 1);
    assert!(good.tokens[0].token_id < shape.vocab_size);

    client.shutdown(ShutdownRequest {}).await.unwrap();
    let status = worker.wait(Duration::from_secs(5));
    assert!(status.success(), "Shutdown exits 0, got {status}");
}
