//! Tensor parallelism changes nothing a user can see: for every fixture, TP = 1, 2 and 4 ranks
//! (threads joined by `LocalGroup`) give the single-rank `Model`'s 24 greedy tokens and its
//! prompt logits — bit for bit for the ternary families (the i32 partial sums are reduced
//! before scaling), within 1e-5 of max |logit| for dense and OneBit. A 2B-4T-shaped synthetic
//! model also runs at TP = 2 over a real `TcpRing` on localhost. Cases that cannot be split
//! (heads not divisible) are skipped and printed; every fixture must run at TP = 2.

use bitnet_checkpoints::ModelWeights;
use bitnet_kernels::CpuBackend;
use bitnet_tests::{all_fixture_dirs, max_abs_diff, Fixture};
use bitnet_worker::shard::ShardError;
use bitnet_worker::{
    Collective, GenerationRequest, Generator, LocalGroup, Model, SamplingParams, ShardPlan,
    ShardedGenerator, ShardedModel, SyntheticSpec, TcpRing, TcpRingConfig, WorkerError,
};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

const GREEDY_TOKENS: usize = 24;

/// Prompt logits (every position) and greedy tokens of one run.
#[derive(Debug)]
struct Run {
    logits: Vec<f32>,
    tokens: Vec<u32>,
}

fn request(prompt: &[u32]) -> GenerationRequest {
    GenerationRequest {
        prompt_ids: prompt.to_vec(),
        max_new_tokens: GREEDY_TOKENS,
        sampling: SamplingParams::default(),
        stop_ids: vec![],
        keep_prompt_logits: true,
        logprobs: None,
    }
}

fn single_rank(weights: &ModelWeights, prompt: &[u32]) -> Result<Run, WorkerError> {
    let model = Model::new(weights.clone(), CpuBackend::new(1));
    let g = Generator::new(&model).run(&request(prompt))?;
    Ok(Run {
        logits: g.prompt_logits.unwrap_or_default(),
        tokens: g.token_ids,
    })
}

/// Runs every rank in its own thread; `Ok(None)` when the model cannot be split this way.
fn tensor_parallel<C: Collective + 'static>(
    weights: &Arc<ModelWeights>,
    group: Vec<C>,
    prompt: &[u32],
) -> Result<Option<Vec<Run>>, String> {
    let world = group.len();
    match ShardPlan::new(0, world).and_then(|p| p.layout(&weights.config)) {
        Err(
            e @ (ShardError::HeadsNotDivisible { .. } | ShardError::KvHeadsNotDivisible { .. }),
        ) => {
            println!("    skip TP={world}: {e}");
            return Ok(None);
        }
        Err(e) => return Err(e.to_string()),
        Ok(_) => {}
    }
    let handles: Vec<_> = group
        .into_iter()
        .enumerate()
        .map(|(rank, collective)| {
            let weights = Arc::clone(weights);
            let prompt = prompt.to_vec();
            std::thread::spawn(move || -> Result<Run, String> {
                let shard = ShardPlan::new(rank, world)
                    .and_then(|p| p.shard(&weights))
                    .map_err(|e| format!("rank {rank}: {e}"))?;
                let model = ShardedModel::new(shard, CpuBackend::new(1), Box::new(collective))
                    .map_err(|e| format!("rank {rank}: {e}"))?;
                let g = ShardedGenerator::new(&model)
                    .run(&request(&prompt))
                    .map_err(|e| format!("rank {rank}: {e}"))?;
                Ok(Run {
                    logits: g.prompt_logits.unwrap_or_default(),
                    tokens: g.token_ids,
                })
            })
        })
        .collect();
    let runs = handles
        .into_iter()
        .map(|h| h.join().map_err(|_| "a rank panicked".to_string())?)
        .collect::<Result<Vec<_>, String>>()?;
    Ok(Some(runs))
}

/// Compares every rank's run with the single-rank one.
fn compare(case: &str, base: &Run, runs: &[Run], exact: bool) -> Result<(), String> {
    for (rank, run) in runs.iter().enumerate() {
        if run.tokens != base.tokens {
            return Err(format!(
                "{case} rank {rank}: greedy tokens {:?} vs single rank {:?}",
                run.tokens, base.tokens
            ));
        }
        if run.logits.is_empty() || run.logits.len() != base.logits.len() {
            return Err(format!("{case} rank {rank}: logits length differs"));
        }
        if exact {
            if let Some(i) =
                (0..run.logits.len()).find(|&i| run.logits[i].to_bits() != base.logits[i].to_bits())
            {
                return Err(format!(
                    "{case} rank {rank}: logit {i} is {} instead of {} (bit-exact expected)",
                    run.logits[i], base.logits[i]
                ));
            }
        } else {
            let (diff, scale) = max_abs_diff(&run.logits, &base.logits);
            if diff > 1e-5 * scale {
                return Err(format!(
                    "{case} rank {rank}: max |Δlogit| {diff} > 1e-5 × {scale}"
                ));
            }
        }
        if run
            .logits
            .iter()
            .zip(&runs[0].logits)
            .any(|(a, b)| a.to_bits() != b.to_bits())
        {
            return Err(format!("{case}: rank {rank} and rank 0 logits differ"));
        }
    }
    Ok(())
}

#[test]
fn every_fixture_gives_the_same_tokens_and_logits_at_tp_1_2_4() {
    let dirs = all_fixture_dirs();
    let mut cases = 0;
    let mut failures = Vec::new();
    for dir in &dirs {
        let fixture = Fixture::load(dir).unwrap_or_else(|e| panic!("{e}"));
        let weights = Arc::new(
            bitnet_checkpoints::load_model(&fixture.model_dir())
                .unwrap_or_else(|e| panic!("{}: {e}", fixture.name)),
        );
        let prompt = fixture.ids("prompt_ids");
        let exact = matches!(
            fixture.family.as_str(),
            "1bitllm" | "bitnet" | "llama-bitnet"
        );
        let base = single_rank(&weights, &prompt)
            .unwrap_or_else(|e| panic!("{}: single rank: {e}", fixture.name));
        println!(
            "{} ({}, {}):",
            fixture.name,
            fixture.family,
            if exact { "bit-exact" } else { "1e-5" }
        );
        for world in [1, 2, 4] {
            let case = format!("{} TP={world}", fixture.name);
            match tensor_parallel(&weights, LocalGroup::ranks(world), &prompt) {
                Ok(Some(runs)) => {
                    cases += 1;
                    match compare(&case, &base, &runs, exact) {
                        Ok(()) => println!("    ok   TP={world}"),
                        Err(e) => failures.push(e),
                    }
                }
                Ok(None) => {
                    if world <= 2 {
                        failures.push(format!("{case}: every fixture must split two ways"));
                    }
                }
                Err(e) => failures.push(format!("{case}: {e}")),
            }
        }
    }
    println!("{cases} tensor-parallel cases over {} fixtures", dirs.len());
    assert!(failures.is_empty(), "failures:\n{}", failures.join("\n"));
    assert!(cases >= 2 * dirs.len(), "too few cases ran: {cases}");
}

/// A 2B-4T-shaped model (ReLU², GQA 4:1, sub-norms, tied head), small.
fn synthetic_2b4t() -> ModelWeights {
    SyntheticSpec {
        hidden_size: 160,
        intermediate_size: 432,
        num_layers: 3,
        num_heads: 10,
        num_kv_heads: 2,
        max_position_embeddings: 256,
        ..SyntheticSpec::demo(300)
    }
    .build()
}

#[test]
fn synthetic_2b4t_model_over_a_tcp_ring_matches_one_rank() {
    let weights = Arc::new(synthetic_2b4t());
    let prompt: Vec<u32> = (0..19).map(|i| (i * 37 + 5) % 300).collect();
    let base = single_rank(&weights, &prompt).expect("single rank");

    let world = 2;
    let listeners: Vec<TcpListener> = (0..world)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind"))
        .collect();
    let addresses: Vec<_> = listeners
        .iter()
        .map(|l| l.local_addr().expect("address"))
        .collect();
    let connecting: Vec<_> = listeners
        .into_iter()
        .enumerate()
        .map(|(rank, listener)| {
            let mut config = TcpRingConfig::new(rank, addresses.clone());
            config.timeout = Duration::from_secs(60);
            std::thread::spawn(move || TcpRing::with_listener(listener, config))
        })
        .collect();
    let ring: Vec<TcpRing> = connecting
        .into_iter()
        .map(|h| h.join().expect("connect thread").expect("ring connects"))
        .collect();
    let runs = tensor_parallel(&weights, ring, &prompt)
        .expect("TP=2 over TCP")
        .expect("splits two ways");
    compare("synthetic 2B-4T TP=2 (TCP)", &base, &runs, true).unwrap_or_else(|e| panic!("{e}"));
    println!(
        "synthetic 2B-4T TP=2 over TcpRing: ok ({} greedy tokens)",
        base.tokens.len()
    );

    // Ten heads do not split four ways: a clear error, not a wrong answer.
    let err = ShardPlan::new(0, 4)
        .and_then(|p| p.layout(&weights.config))
        .expect_err("10 heads do not split 4 ways");
    assert!(err.to_string().contains("10 attention heads"), "{err}");
}

#[test]
fn synthetic_models_match_at_tp_2_and_4_with_replicated_kv_heads() {
    // 8 heads, 2 key/value heads: TP = 4 replicates each key/value head on two ranks.
    let base_spec = SyntheticSpec {
        hidden_size: 128,
        intermediate_size: 200,
        num_layers: 2,
        num_heads: 8,
        num_kv_heads: 2,
        max_position_embeddings: 128,
        tie_word_embeddings: false,
        ..SyntheticSpec::demo(97)
    };
    let prompt: Vec<u32> = (0..11).map(|i| (i * 13 + 2) % 97).collect();
    for (name, spec, exact) in [
        ("bitnet", base_spec.clone(), true),
        (
            "1bitllm",
            SyntheticSpec {
                family: bitnet_checkpoints::Family::OneBitLlm,
                activation: bitnet_checkpoints::Activation::Silu,
                ..base_spec.clone()
            },
            true,
        ),
        ("llama", base_spec.as_llama(), false),
    ] {
        let weights = Arc::new(spec.build());
        let base = single_rank(&weights, &prompt).expect("single rank");
        for world in [2, 4] {
            let runs = tensor_parallel(&weights, LocalGroup::ranks(world), &prompt)
                .expect("runs")
                .expect("splits");
            let case = format!("synthetic {name} TP={world}");
            compare(&case, &base, &runs, exact).unwrap_or_else(|e| panic!("{e}"));
            println!("{case}: ok");
        }
    }
}
