//! The paged KV path: `Model::forward_paged` over one shared `KvPool` gives the same logits
//! as each sequence in its own cache, whatever blocks its table names and however its prompt
//! is chunked across block boundaries; the [`StepRunner`] refuses a bad step without moving
//! any sequence, and a sequence that starts on blocks another sequence computed (n > 1
//! sharing) samples what a full recompute would.

use bitnet_kernels::CpuBackend;
use bitnet_proto::worker::{NewRequest, RunningRequest, SamplingState, StepRequest};
use bitnet_worker::{
    ForwardOptions, Model, PagedChunk, SequenceChunk, StepRunner, SyntheticSpec, BLOCK_SIZE,
};

fn model() -> Model<CpuBackend> {
    let spec = SyntheticSpec {
        hidden_size: 64,
        intermediate_size: 96,
        num_layers: 2,
        num_heads: 4,
        num_kv_heads: 2,
        vocab_size: 50,
        max_position_embeddings: 128,
        seed: 3,
        ..SyntheticSpec::demo(50)
    };
    Model::new(spec.build(), CpuBackend::new(2))
}

fn prompt(len: usize, salt: u32) -> Vec<u32> {
    (0..len as u32)
        .map(|i| (i * 7 + salt * 13 + 1) % 50)
        .collect()
}

#[test]
fn paged_forward_equals_private_caches_across_block_boundaries() {
    let model = model();
    let options = ForwardOptions {
        all_logits: true,
        trace_first_layer: false,
    };
    // Three sequences, prompts of odd lengths, each prefilled in chunks that straddle blocks.
    let prompts = [prompt(37, 0), prompt(16, 1), prompt(5, 2)];
    let chunkings: [&[usize]; 3] = [&[5, 11, 17, 4], &[16], &[1, 3, 1]];
    // Tables from a pool of 12 blocks, interleaved and out of order.
    let tables: [Vec<u32>; 3] = [vec![9, 2, 7], vec![4, 0], vec![11]];
    let mut pool = model.new_pool(12).unwrap();
    assert_eq!((pool.block_size(), pool.kv_dim()), (BLOCK_SIZE, 2 * 16));
    let mut caches: Vec<_> = (0..3).map(|_| model.new_cache(64)).collect();
    let mut done = [0usize; 3];
    for round in 0..4 {
        let mut paged = Vec::new();
        let mut which = Vec::new();
        for s in 0..3 {
            if let Some(&n) = chunkings[s].get(round) {
                paged.push(PagedChunk {
                    tokens: &prompts[s][done[s]..done[s] + n],
                    block_table: &tables[s],
                    num_computed: done[s],
                });
                which.push(s);
            }
        }
        let got = model.forward_paged(&mut pool, &paged, options).unwrap();
        let mut chunks: Vec<SequenceChunk> = Vec::new();
        for (s, cache) in caches.iter_mut().enumerate() {
            if let Some(&n) = chunkings[s].get(round) {
                chunks.push(SequenceChunk {
                    tokens: &prompts[s][done[s]..done[s] + n],
                    cache,
                });
            }
        }
        let want = model.forward_batch(&mut chunks, options).unwrap();
        for ((g, w), s) in got.iter().zip(&want).zip(&which) {
            assert!(
                g.logits
                    .iter()
                    .zip(&w.logits)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "round {round}, sequence {s}: paged logits differ"
            );
        }
        for &s in &which {
            done[s] += chunkings[s][round];
        }
    }
    // Decode steps, one token each, crossing block 2 → 3 of sequence 0 (37 → 40 > 32).
    for token in [3u32, 8, 1] {
        let paged: Vec<PagedChunk> = (0..3)
            .map(|s| PagedChunk {
                tokens: std::slice::from_ref(&token),
                block_table: &tables[s],
                num_computed: done[s],
            })
            .collect();
        let got = model.forward_paged(&mut pool, &paged, options).unwrap();
        let mut chunks: Vec<SequenceChunk> = caches
            .iter_mut()
            .map(|cache| SequenceChunk {
                tokens: std::slice::from_ref(&token),
                cache,
            })
            .collect();
        let want = model.forward_batch(&mut chunks, options).unwrap();
        for s in 0..3 {
            assert_eq!(got[s].logits, want[s].logits, "decode, sequence {s}");
            done[s] += 1;
        }
    }
}

#[test]
fn a_table_that_cannot_hold_the_chunk_is_refused_before_compute() {
    let model = model();
    let mut pool = model.new_pool(4).unwrap();
    let tokens = prompt(17, 0);
    let short = [PagedChunk {
        tokens: &tokens,
        block_table: &[0],
        num_computed: 0,
    }];
    assert!(model
        .forward_paged(&mut pool, &short, ForwardOptions::default())
        .is_err());
    let outside = [PagedChunk {
        tokens: &tokens,
        block_table: &[0, 4],
        num_computed: 0,
    }];
    assert!(model
        .forward_paged(&mut pool, &outside, ForwardOptions::default())
        .is_err());
}

fn greedy() -> Option<SamplingState> {
    Some(SamplingState {
        top_p: 1.0,
        ..Default::default()
    })
}

fn new_request(seq_id: u64, prompt: &[u32], computed: u32, blocks: Vec<u32>) -> NewRequest {
    NewRequest {
        seq_id,
        prompt_ids: prompt.to_vec(),
        num_computed: computed,
        num_scheduled: prompt.len() as u32 - computed,
        block_ids: blocks,
        sampling: greedy(),
    }
}

#[test]
fn a_failed_step_moves_no_sequence_and_shared_blocks_are_read_in_place() {
    let model = model();
    let mut runner = StepRunner::new(model.new_pool(8).unwrap(), 128);
    let p = prompt(21, 4);
    // Sequence 1 computes the whole prompt in blocks [5, 1].
    let first = runner
        .step(
            &model,
            &StepRequest {
                step_id: 0,
                new_requests: vec![new_request(1, &p, 0, vec![5, 1])],
                ..Default::default()
            },
        )
        .unwrap();
    let t1 = first.tokens[0].token_id;
    // Sequence 2 starts on sequence 1's full first block and computes only the rest: same
    // token as sequence 1 (greedy) and as sequence 3, which recomputes everything.
    let second = runner
        .step(
            &model,
            &StepRequest {
                step_id: 1,
                new_requests: vec![
                    new_request(2, &p, 16, vec![5, 6]),
                    new_request(3, &p, 0, vec![2, 3]),
                ],
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(second.tokens.len(), 2);
    assert!(second.tokens.iter().all(|t| t.token_id == t1));
    // A step asking sequence 3 for 40 tokens it does not know: refused, and sequence 1,
    // listed first, has not moved (the next decode step is still its first).
    let bad = StepRequest {
        step_id: 2,
        running: vec![
            RunningRequest {
                seq_id: 1,
                num_scheduled: 1,
                ..Default::default()
            },
            RunningRequest {
                seq_id: 3,
                num_scheduled: 40,
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    assert!(runner.step(&model, &bad).is_err());
    let good = StepRequest {
        step_id: 3,
        running: [1, 2, 3]
            .map(|seq_id| RunningRequest {
                seq_id,
                num_scheduled: 1,
                ..Default::default()
            })
            .to_vec(),
        ..Default::default()
    };
    let decoded = runner.step(&model, &good).unwrap();
    let ids: Vec<u32> = decoded.tokens.iter().map(|t| t.token_id).collect();
    assert_eq!(ids.len(), 3);
    assert!(ids.iter().all(|&t| t == ids[0]), "{ids:?}");
}

#[test]
fn logprobs_come_with_the_token_when_asked() {
    let model = model();
    let mut runner = StepRunner::new(model.new_pool(4).unwrap(), 128);
    let mut req = new_request(1, &prompt(9, 1), 0, vec![0]);
    req.sampling.as_mut().unwrap().logprobs = Some(3);
    let reply = runner
        .step(
            &model,
            &StepRequest {
                step_id: 0,
                new_requests: vec![req, new_request(2, &prompt(9, 1), 0, vec![1])],
                ..Default::default()
            },
        )
        .unwrap();
    let (a, b) = (&reply.tokens[0], &reply.tokens[1]);
    assert_eq!(a.top_ids.len(), 3);
    assert_eq!(
        a.top_ids[0], a.token_id,
        "greedy picks the most likely token"
    );
    assert_eq!(a.top_logprobs[0], a.logprob);
    assert!(a.logprob < 0.0 && a.top_logprobs.windows(2).all(|w| w[0] >= w[1]));
    assert!(
        b.top_ids.is_empty() && b.logprob == 0.0,
        "no logprobs unless asked"
    );
}
