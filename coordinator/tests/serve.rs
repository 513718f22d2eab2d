//! The gRPC server end to end, through the client SDK over a real localhost socket: greedy
//! output equal to the transformers reference and to the offline path, batch invariance (a
//! request alone and among 31 others), bad input answered with INVALID_ARGUMENT while the
//! server keeps serving, abort and a dropped stream freeing the blocks, and server/model info.

use bitnet_client::{
    Client, ClientOptions, FinishReason, GenerateEvent, GenerateParams, SamplingParams,
};
use bitnet_coordinator::serve::{build, serve_on, ServeOptions};
use std::path::{Path, PathBuf};
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

fn options(model: Option<PathBuf>) -> ServeOptions {
    ServeOptions {
        model_dir: model,
        max_num_seqs: 32,
        max_batched_tokens: 256,
        max_model_len: 256,
        num_kv_blocks: None,
        max_admitted: 64,
        device: Default::default(),
        threads: 2,
        lm_head_int8: false,
    }
}

/// Starts a server on an ephemeral port; returns a connected client and the shutdown sender.
async fn start(opts: ServeOptions) -> (Client, tokio::sync::oneshot::Sender<()>) {
    let served = build(&opts).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve_on(listener, served, async {
        let _ = rx.await;
    }));
    let client = Client::connect(&addr.to_string(), ClientOptions::default())
        .await
        .unwrap();
    (client, tx)
}

fn greedy(max_tokens: u32) -> SamplingParams {
    SamplingParams::greedy()
        .max_tokens(max_tokens)
        .ignore_eos(true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greedy_tokens_match_the_reference_alone_and_in_a_batch() {
    let (client, stop) = start(options(Some(fixture("bitnet-packed").join("model")))).await;
    let prompt = expected_ids("bitnet-packed", "prompt_ids");
    let reference = expected_ids("bitnet-packed", "greedy_ids");
    let alone = client
        .generate_text(GenerateParams::token_ids(prompt.clone()).with_sampling(greedy(24)))
        .await
        .unwrap();
    let choice = &alone.choices[0];
    assert_eq!(
        choice.output_ids, reference,
        "served greedy = transformers greedy"
    );
    assert_eq!(choice.finish_reason, FinishReason::Length);
    assert_eq!(choice.usage.prompt_tokens as usize, prompt.len());
    assert_eq!(choice.usage.completion_tokens, 24);

    // The same request among 31 others, all at once (batch invariance).
    let mut handles = Vec::new();
    for i in 0..32u32 {
        let client = client.clone();
        let ids = if i % 3 == 0 {
            prompt.clone()
        } else {
            vec![317, 5 + i, 40 + i, 7]
        };
        handles.push(tokio::spawn(async move {
            client
                .generate_text(GenerateParams::token_ids(ids).with_sampling(greedy(24)))
                .await
                .unwrap()
        }));
    }
    for (i, h) in handles.into_iter().enumerate() {
        let out = h.await.unwrap();
        if i % 3 == 0 {
            assert_eq!(
                out.choices[0].output_ids, reference,
                "request {i} in a batch"
            );
        } else {
            assert_eq!(out.choices[0].output_ids.len(), 24);
        }
    }
    let info = client.server_info().await.unwrap();
    assert_eq!((info.running, info.waiting), (0, 0));
    assert!(info.requests_finished >= 33);
    let model = client.model_info().await.unwrap();
    assert_eq!(model.family, "bitnet");
    let _ = stop.send(());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_invalid_argument_and_the_server_keeps_serving() {
    let (client, stop) = start(options(None)).await;
    let bad = [
        GenerateParams::token_ids(Vec::<u32>::new()),
        GenerateParams::text(""),
        GenerateParams::token_ids(vec![1, 999_999]),
        GenerateParams::token_ids(vec![1]).with_sampling(SamplingParams::new().max_tokens(0)),
        GenerateParams::token_ids(vec![1]).with_sampling(SamplingParams::new().max_tokens(1 << 30)),
        GenerateParams::token_ids(vec![1])
            .with_sampling(SamplingParams::new().temperature(f32::NAN)),
        GenerateParams::token_ids(vec![1]).with_sampling(SamplingParams::new().temperature(-1.0)),
        GenerateParams::token_ids(vec![1]).with_sampling(SamplingParams::new().top_p(0.0)),
        GenerateParams::token_ids(vec![1]).with_sampling(SamplingParams::new().top_p(1.5)),
        GenerateParams::token_ids(vec![1; 300]),
        GenerateParams::token_ids(vec![1]).with_sampling(SamplingParams::new().n(0)),
        GenerateParams::token_ids(vec![1]).with_sampling(SamplingParams::new().n(1000)),
        GenerateParams::token_ids(vec![1]).with_sampling(SamplingParams::new().logprobs(21)),
    ];
    for (i, params) in bad.into_iter().enumerate() {
        let err = client.generate_text(params).await.unwrap_err();
        assert!(err.is_invalid_argument(), "case {i}: {err}");
        let ok = client
            .generate_text(GenerateParams::text("Hello").with_sampling(greedy(3)))
            .await
            .unwrap();
        assert_eq!(ok.choices[0].output_ids.len(), 3, "after case {i}");
    }
    let _ = stop.send(());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_ends_a_running_request() {
    let (client, stop) = start(options(None)).await;
    let params = GenerateParams::text("Tell me a story")
        .with_request_id("long-one")
        .with_sampling(greedy(240));
    let handle = {
        let client = client.clone();
        tokio::spawn(async move { client.generate_text(params).await })
    };
    // wait until it runs (bounded), then abort it
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while client.server_info().await.unwrap().running != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the request never ran"
        );
        tokio::task::yield_now().await;
    }
    client.abort(["long-one"]).await.unwrap();
    let out = handle.await.unwrap().unwrap();
    assert_eq!(out.choices[0].finish_reason, FinishReason::Abort);
    assert!(out.choices[0].output_ids.len() < 240);
    let info = client.server_info().await.unwrap();
    assert_eq!(info.kv_blocks_used, 0, "abort frees the request's blocks");

    // A client that drops its stream cancels the request (its blocks are freed) while a
    // request of the same length started with it keeps running.
    let other = {
        let client = client.clone();
        let params = GenerateParams::text("Tell me a story").with_sampling(greedy(240));
        tokio::spawn(async move { client.generate_text(params).await })
    };
    let mut stream =
        client.generate(GenerateParams::text("Tell me a story").with_sampling(greedy(240)));
    let first = stream.next().await.unwrap().unwrap();
    assert!(matches!(first, GenerateEvent::Chunk { .. }));
    let finished = client.server_info().await.unwrap().requests_finished;
    drop(stream);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let info = client.server_info().await.unwrap();
        if info.requests_finished > finished {
            assert_eq!(info.running, 1, "cancelled long before the other: {info:?}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not cancelled: {info:?}"
        );
        tokio::task::yield_now().await;
    }
    assert_eq!(
        other.await.unwrap().unwrap().choices[0].output_ids.len(),
        240
    );
    assert_eq!(client.server_info().await.unwrap().kv_blocks_used, 0);
    let _ = stop.send(());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_text_equals_the_detokenized_output_and_stop_strings_end_it() {
    let (client, stop) = start(options(None)).await;
    let out = client
        .generate_text(GenerateParams::text("The quick brown").with_sampling(greedy(40)))
        .await
        .unwrap();
    let choice = &out.choices[0];
    let text = client
        .detokenize(choice.output_ids.clone(), true)
        .await
        .unwrap();
    assert_eq!(
        choice.text, text,
        "streamed deltas add up to the whole output"
    );
    // Stop at a piece of that text: the stream ends there, without the stop string.
    let chars: Vec<char> = text.chars().collect();
    if chars.len() > 6 {
        let needle: String = chars[chars.len() / 2..chars.len() / 2 + 3].iter().collect();
        let cut = client
            .generate_text(
                GenerateParams::text("The quick brown")
                    .with_sampling(greedy(40).stop(needle.clone())),
            )
            .await
            .unwrap();
        let c = &cut.choices[0];
        assert_eq!(c.finish_reason, FinishReason::Stop);
        assert_eq!(c.matched_stop.as_deref(), Some(needle.as_str()));
        assert!(!c.text.contains(&needle), "{:?} holds {needle:?}", c.text);
        assert!(text.starts_with(&c.text));
    }
    let _ = stop.send(());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generate_with_server_prints_what_offline_generate_prints() {
    remote_equals_offline(false).await;
}

/// `up --lm-head int8` in process: the served tokens and logprobs are offline
/// `generate --lm-head int8`'s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn int8_head_serves_what_offline_int8_generate_prints() {
    remote_equals_offline(true).await;
}

/// Serves the fixture (with an int8 LM head when asked) and compares `generate --server` with
/// offline `generate` of the same head: tokens, text, finish reason, top-2 logprobs.
async fn remote_equals_offline(lm_head_int8: bool) {
    let model = fixture("bitnet-packed").join("model");
    let served = build(&ServeOptions {
        lm_head_int8,
        ..options(Some(model.clone()))
    })
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve_on(listener, served, async {
        let _ = rx.await;
    }));
    let prompt = expected_ids("bitnet-packed", "prompt_ids")
        .iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let run = move |target: Vec<String>| {
        let prompt = prompt.clone();
        tokio::task::spawn_blocking(move || {
            let mut args = vec!["generate".to_string()];
            args.extend(target);
            args.extend(
                [
                    "--prompt-ids",
                    &prompt,
                    "--max-new-tokens",
                    "24",
                    "--temperature",
                    "0",
                    "--json",
                    "--logprobs",
                    "2",
                ]
                .map(String::from),
            );
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_bitnet-cluster"))
                .args(&args)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
        })
    };
    let remote = run(vec!["--server".into(), addr]).await.unwrap();
    let mut offline_args = vec!["--model".into(), model.display().to_string()];
    if lm_head_int8 {
        offline_args.extend(["--lm-head".into(), "int8".into()]);
    }
    let offline = run(offline_args).await.unwrap();
    for field in ["prompt_ids", "token_ids", "text", "finish_reason"] {
        assert_eq!(remote[field], offline[field], "{field}");
    }
    // Logprobs: one entry per token, the same top ids, the same values (f32 printed).
    let (r, o) = (&remote["logprobs"], &offline["logprobs"]);
    let n = remote["token_ids"].as_array().unwrap().len();
    assert_eq!(
        (r.as_array().unwrap().len(), o.as_array().unwrap().len()),
        (n, n)
    );
    for (a, b) in r.as_array().unwrap().iter().zip(o.as_array().unwrap()) {
        assert_eq!(a["sampled"]["token_id"], b["sampled"]["token_id"]);
        let ids = |v: &serde_json::Value| -> Vec<u64> {
            v["top"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["token_id"].as_u64().unwrap())
                .collect()
        };
        assert_eq!((ids(a).len(), ids(a)), (2, ids(b)));
        let (x, y) = (
            a["sampled"]["logprob"].as_f64().unwrap(),
            b["sampled"]["logprob"].as_f64().unwrap(),
        );
        assert!((x - y).abs() < 1e-4, "{x} vs {y}");
    }
    let _ = tx.send(());
}
