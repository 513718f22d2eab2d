//! Sharding without fixtures: shard plans refuse what cannot be split with a clear error, a
//! batch of sequences through a sharded model equals the single-rank batch bit for bit, random
//! sampling gives the same tokens on every rank, and a rank that dies makes the others fail
//! (not hang) with their caches intact.

use bitnet_kernels::CpuBackend;
use bitnet_worker::model::ForwardOptions;
use bitnet_worker::shard::{ShardError, Span};
use bitnet_worker::{
    Collective, GenerationRequest, LocalCollective, LocalGroup, Model, SamplingParams,
    SequenceChunk, ShardPlan, ShardedGenerator, ShardedModel, SingleRank, SyntheticSpec,
    WorkerError,
};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn spec() -> SyntheticSpec {
    SyntheticSpec {
        hidden_size: 96,
        intermediate_size: 150,
        num_layers: 2,
        num_heads: 6,
        num_kv_heads: 2,
        vocab_size: 61,
        max_position_embeddings: 64,
        seed: 21,
        ..SyntheticSpec::demo(61)
    }
}

fn sharded(
    weights: &bitnet_checkpoints::ModelWeights,
    collective: LocalCollective,
) -> ShardedModel<CpuBackend> {
    let (rank, world) = (collective.rank(), collective.world_size());
    let shard = ShardPlan::new(rank, world)
        .and_then(|p| p.shard(weights))
        .expect("shards");
    ShardedModel::new(shard, CpuBackend::new(1), Box::new(collective)).expect("group matches")
}

#[test]
fn plans_split_heads_and_features_or_say_why_not() {
    let config = spec().config();
    let l = ShardPlan::new(1, 2).unwrap().layout(&config).unwrap();
    assert_eq!(l.q_heads, Span::new(3, 6));
    assert_eq!(l.kv_heads, Span::new(1, 2));
    assert_eq!(l.ffn, Span::new(75, 150));
    assert_eq!(l.q_features(), Span::new(48, 96));
    // 6 heads, 2 kv heads, TP 6: each rank holds the kv head its query head reads.
    let l = ShardPlan::new(4, 6).unwrap().layout(&config).unwrap();
    assert_eq!((l.q_heads, l.kv_heads), (Span::new(4, 5), Span::new(1, 2)));
    assert_eq!(
        ShardPlan::new(0, 4).unwrap().layout(&config),
        Err(ShardError::HeadsNotDivisible { heads: 6, world: 4 })
    );
    // 6 heads split 3 ways, but 2 kv heads neither divide nor are divided by 3.
    assert!(matches!(
        ShardPlan::new(0, 3).unwrap().layout(&config),
        Err(ShardError::KvHeadsNotDivisible { .. })
    ));
    assert_eq!(
        ShardPlan::new(2, 2),
        Err(ShardError::RankOutOfRange { rank: 2, world: 2 })
    );
    let weights = spec().build();
    let shard = ShardPlan::new(0, 2).unwrap().shard(&weights).unwrap();
    let err = ShardedModel::new(shard, CpuBackend::new(1), Box::new(SingleRank))
        .err()
        .expect("rank 0 of 2 cannot run alone");
    assert!(err.to_string().contains("rank 0 of 2"), "{err}");
}

#[test]
fn a_sharded_batch_equals_the_single_rank_batch() {
    let weights = Arc::new(spec().build());
    let prompts: [&[u32]; 3] = [&[1, 2, 3, 4, 5], &[9], &[60, 0, 33]];
    let model = Model::new((*weights).clone(), CpuBackend::new(1));
    let options = ForwardOptions {
        all_logits: true,
        trace_first_layer: true,
    };
    let mut caches: Vec<_> = (0..3).map(|_| model.new_cache(16)).collect();
    let mut batch: Vec<_> = prompts
        .iter()
        .zip(caches.iter_mut())
        .map(|(t, cache)| SequenceChunk { tokens: t, cache })
        .collect();
    let expected = model.forward_batch(&mut batch, options).expect("forward");

    let handles: Vec<_> = LocalGroup::ranks(2)
        .into_iter()
        .map(|c| {
            let weights = Arc::clone(&weights);
            std::thread::spawn(move || {
                let model = sharded(&weights, c);
                let mut caches: Vec<_> = (0..3).map(|_| model.new_cache(16)).collect();
                let mut batch: Vec<_> = prompts
                    .iter()
                    .zip(caches.iter_mut())
                    .map(|(t, cache)| SequenceChunk { tokens: t, cache })
                    .collect();
                let first = model.forward_batch(&mut batch, options).expect("forward");
                // One decode step per sequence after the prefill.
                let mut batch: Vec<_> = caches
                    .iter_mut()
                    .map(|cache| SequenceChunk {
                        tokens: &[7],
                        cache,
                    })
                    .collect();
                let second = model.forward_batch(&mut batch, options).expect("decode");
                (first, second)
            })
        })
        .collect();
    let mut decode = Vec::new();
    for h in handles {
        let (first, second) = h.join().expect("rank");
        for (got, want) in first.iter().zip(&expected) {
            assert_eq!(got.logits, want.logits);
            assert_eq!(got.first_layer_q, want.first_layer_q);
        }
        decode.push(second);
    }
    let mut batch: Vec<_> = caches
        .iter_mut()
        .map(|cache| SequenceChunk {
            tokens: &[7],
            cache,
        })
        .collect();
    let want = model.forward_batch(&mut batch, options).expect("decode");
    for rank in decode {
        for (got, want) in rank.iter().zip(&want) {
            assert_eq!(got.logits, want.logits);
        }
    }
}

#[test]
fn random_sampling_gives_the_same_tokens_on_every_rank() {
    let weights = Arc::new(spec().build());
    let handles: Vec<_> = LocalGroup::ranks(2)
        .into_iter()
        .map(|c| {
            let weights = Arc::clone(&weights);
            std::thread::spawn(move || {
                let model = sharded(&weights, c);
                let req = GenerationRequest {
                    prompt_ids: vec![3, 1, 4, 1, 5],
                    max_new_tokens: 20,
                    // No seed: every rank draws its own, rank 0's picks are broadcast.
                    sampling: SamplingParams {
                        temperature: 1.5,
                        ..SamplingParams::default()
                    },
                    stop_ids: vec![],
                    keep_prompt_logits: false,
                    logprobs: None,
                };
                ShardedGenerator::new(&model).run(&req).expect("generates")
            })
        })
        .collect();
    let tokens: Vec<Vec<u32>> = handles
        .into_iter()
        .map(|h| h.join().expect("rank").token_ids)
        .collect();
    assert_eq!(tokens[0].len(), 20);
    assert_eq!(tokens[0], tokens[1]);
}

#[test]
fn a_dead_rank_fails_the_others_and_leaves_their_caches_intact() {
    let weights = spec().build();
    let mut group = LocalGroup::ranks_with_timeout(2, Duration::from_secs(5));
    let dead = group.pop().expect("rank 1");
    let model = sharded(&weights, group.pop().expect("rank 0"));
    drop(dead);
    let mut cache = model.new_cache(8);
    let start = Instant::now();
    let err = model
        .forward(&[1, 2, 3], &mut cache, ForwardOptions::default())
        .expect_err("rank 1 is gone");
    assert!(matches!(err, WorkerError::Collective(_)), "{err}");
    assert!(start.elapsed() < Duration::from_secs(4));
    assert!(cache.is_empty());
}
