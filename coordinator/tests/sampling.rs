//! Served sampling features through a real localhost server and the client SDK: logprobs (the
//! sampled token's and the top-n, normalized, the greedy token on top), `n > 1` (distinct,
//! reproducible seeded samples on one stream; a greedy fork equals the parent), deadlines
//! (`grpc-timeout` ends the stream with DEADLINE_EXCEEDED and frees the blocks), and the KV
//! pool under pressure (outputs identical to an unpressured server).

use bitnet_client::{Client, ClientOptions, FinishReason, GenerateParams, SamplingParams};
use bitnet_coordinator::serve::{build, serve_on, ServeOptions};
use bitnet_proto::serving::serving_client::ServingClient;
use bitnet_proto::serving::{self as pb, generate_response};
use std::time::{Duration, Instant};

fn options(num_kv_blocks: Option<usize>) -> ServeOptions {
    ServeOptions {
        model_dir: None,
        max_num_seqs: 16,
        max_batched_tokens: 256,
        max_model_len: 4096,
        num_kv_blocks,
        max_admitted: 64,
        device: Default::default(),
        threads: 2,
        lm_head_int8: false,
    }
}

/// Starts a demo-model server on an ephemeral port; returns its address, a connected client
/// and the shutdown sender.
async fn start(opts: ServeOptions) -> (String, Client, tokio::sync::oneshot::Sender<()>) {
    let served = build(&opts).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve_on(listener, served, async {
        let _ = rx.await;
    }));
    let client = Client::connect(&addr, ClientOptions::default())
        .await
        .unwrap();
    (addr, client, tx)
}

/// Polls `server_info` until no KV block is in use (or fails after 10 s).
async fn wait_for_free_blocks(client: &Client) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let info = client.server_info().await.unwrap();
        if info.kv_blocks_used == 0 && info.running == 0 && info.waiting == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "blocks still in use: {info:?}");
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logprobs_are_a_normalized_top_n_with_the_sampled_token() {
    let (_, client, stop) = start(options(None)).await;
    let sampling = SamplingParams::greedy()
        .max_tokens(6)
        .ignore_eos(true)
        .logprobs(4);
    let out = client
        .generate_text(GenerateParams::text("Hello there").with_sampling(sampling))
        .await
        .unwrap();
    let c = &out.choices[0];
    assert_eq!(c.logprobs.len(), c.output_ids.len(), "one entry per token");
    for (lp, &id) in c.logprobs.iter().zip(&c.output_ids) {
        assert_eq!(lp.sampled.token_id, id);
        assert_eq!(lp.top.len(), 4);
        // Greedy: the sampled token is the most likely one.
        assert_eq!(lp.top[0].token_id, id);
        assert_eq!(lp.top[0].logprob, lp.sampled.logprob);
        assert!(lp.top.windows(2).all(|w| w[0].logprob >= w[1].logprob));
        let mass: f32 = lp.top.iter().map(|t| t.logprob.exp()).sum();
        assert!(lp.sampled.logprob <= 0.0 && mass <= 1.0 + 1e-5, "{lp:?}");
    }
    // Without `logprobs`, none are sent.
    let plain = client
        .generate_text(
            GenerateParams::text("Hello there")
                .with_sampling(SamplingParams::greedy().max_tokens(3)),
        )
        .await
        .unwrap();
    assert!(plain.choices[0].logprobs.is_empty());
    let _ = stop.send(());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn n_samples_are_distinct_reproducible_and_share_the_prompt() {
    let (_, client, stop) = start(options(None)).await;
    // A prompt longer than a block, so the forks start on the parent's first blocks.
    let prompt: Vec<u32> = (0..40).map(|i| (i * 37 + 11) % 200 + 3).collect();
    let seeded = |seed| {
        SamplingParams::new()
            .temperature(8.0)
            .seed(seed)
            .n(4)
            .max_tokens(12)
            .ignore_eos(true)
    };
    let run = |sampling: SamplingParams| {
        let client = client.clone();
        let params = GenerateParams::token_ids(prompt.clone()).with_sampling(sampling);
        async move { client.generate_text(params).await.unwrap() }
    };
    let first = run(seeded(5)).await;
    assert_eq!(first.choices.len(), 4);
    for (i, c) in first.choices.iter().enumerate() {
        assert_eq!(c.index as usize, i);
        assert_eq!(c.output_ids.len(), 12);
        assert_eq!(c.finish_reason, FinishReason::Length);
        assert_eq!(c.usage.prompt_tokens, 40);
    }
    let ids: Vec<&Vec<u32>> = first.choices.iter().map(|c| &c.output_ids).collect();
    let distinct = ids
        .iter()
        .enumerate()
        .all(|(i, a)| ids[i + 1..].iter().all(|b| a != b));
    assert!(distinct, "seeded samples differ: {ids:?}");
    let again = run(seeded(5)).await;
    assert_eq!(first.choices, again.choices, "same seed, same samples");
    // Greedy forks read the parent's prompt blocks: every sample equals n = 1.
    let greedy = SamplingParams::greedy().max_tokens(12).ignore_eos(true);
    let one = run(greedy.clone()).await;
    let many = run(greedy.n(3)).await;
    for c in &many.choices {
        assert_eq!(
            c.output_ids, one.choices[0].output_ids,
            "sample {}",
            c.index
        );
    }
    wait_for_free_blocks(&client).await;
    let _ = stop.send(());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passed_deadline_ends_the_stream_and_frees_the_blocks() {
    let (addr, client, stop) = start(options(None)).await;
    let mut raw = ServingClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let request = |timeout: Duration| {
        let mut r = tonic::Request::new(pb::GenerateRequest {
            request_id: String::new(),
            input: Some(pb::generate_request::Input::Text("Once upon a time".into())),
            sampling: Some(pb::SamplingParams {
                temperature: Some(0.0),
                max_tokens: Some(2000),
                ignore_eos: Some(true),
                ..Default::default()
            }),
            chat: false,
        });
        r.set_timeout(timeout);
        r
    };
    // 1 ns has passed before the server sees the request (tonic's client may give up first,
    // with CANCELLED); 300 ms pass while 2000 tokens are generated.
    for timeout in [Duration::from_nanos(1), Duration::from_millis(300)] {
        let started = Instant::now();
        let expected = |status: &tonic::Status| match status.code() {
            tonic::Code::DeadlineExceeded => true,
            tonic::Code::Cancelled => timeout < Duration::from_millis(1),
            _ => false,
        };
        let mut stream = match raw.generate(request(timeout)).await {
            Ok(response) => response.into_inner(),
            Err(status) => {
                assert!(expected(&status), "{timeout:?}: {status}");
                wait_for_free_blocks(&client).await;
                continue;
            }
        };
        let mut tokens = 0;
        let status = loop {
            match stream.message().await {
                Ok(Some(msg)) => match msg.response {
                    Some(generate_response::Response::Chunk(c)) => tokens += c.token_ids.len(),
                    other => panic!("a {timeout:?} deadline ended with {other:?}"),
                },
                Ok(None) => panic!("the stream ended without a status"),
                Err(status) => break status,
            }
        };
        assert!(expected(&status), "{timeout:?}: {status}");
        println!("{timeout:?}: {tokens} tokens, then {}", status.message());
        assert!(tokens < 2000, "aborted early ({tokens} tokens)");
        assert!(started.elapsed() < Duration::from_secs(10));
        wait_for_free_blocks(&client).await;
    }
    // The server keeps serving.
    let ok = client
        .generate_text(
            GenerateParams::text("Hello").with_sampling(SamplingParams::greedy().max_tokens(3)),
        )
        .await
        .unwrap();
    assert_eq!(ok.choices[0].output_ids.len(), 3);
    let _ = stop.send(());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tiny_kv_pool_preempts_and_still_gives_the_unpressured_outputs() {
    // 8 requests of a 10-token prompt + 30 tokens need 3 blocks each; 6 blocks in all force
    // preemption (by recompute) as the running sequences grow.
    let prompts: Vec<Vec<u32>> = (0..8u32)
        .map(|r| (0..10).map(|i| (r * 31 + i * 7) % 200 + 3).collect())
        .collect();
    let sampling = SamplingParams::new()
        .temperature(0.9)
        .seed(11)
        .max_tokens(30)
        .ignore_eos(true);
    let mut outputs = Vec::new();
    for blocks in [None, Some(6)] {
        let (_, client, stop) = start(options(blocks)).await;
        let handles: Vec<_> = prompts
            .iter()
            .map(|p| {
                let client = client.clone();
                let params = GenerateParams::token_ids(p.clone()).with_sampling(sampling.clone());
                tokio::spawn(async move { client.generate_text(params).await.unwrap() })
            })
            .collect();
        let mut ids = Vec::new();
        for h in handles {
            ids.push(h.await.unwrap().choices[0].output_ids.clone());
        }
        let info = client.server_info().await.unwrap();
        if blocks.is_some() {
            assert_eq!(info.kv_blocks_total, 6);
            assert!(info.num_preemptions > 0, "the tiny pool preempted");
        } else {
            assert_eq!(info.num_preemptions, 0);
        }
        wait_for_free_blocks(&client).await;
        outputs.push(ids);
        let _ = stop.send(());
    }
    assert!(outputs[0].iter().all(|o| o.len() == 30));
    assert_eq!(
        outputs[0], outputs[1],
        "pressured outputs equal unpressured ones"
    );
}
