//! Forward-pass invariants that need no fixture: the KV cache makes incremental decoding equal
//! to one full prefill, bad input is refused without corrupting the cache, generation stops
//! where it should.

use bitnet_kernels::{reference::ReferenceBackend, CpuBackend};
use bitnet_worker::model::ForwardOptions;
use bitnet_worker::{
    FinishReason, GenerationRequest, Generator, Model, SamplingParams, SyntheticSpec, WorkerError,
};

fn spec(ternary: bool) -> SyntheticSpec {
    let spec = SyntheticSpec {
        hidden_size: 64,
        intermediate_size: 96,
        num_layers: 2,
        num_heads: 4,
        num_kv_heads: 2,
        vocab_size: 50,
        max_position_embeddings: 64,
        seed: 9,
        ..SyntheticSpec::demo(50)
    };
    if ternary {
        spec
    } else {
        spec.as_llama()
    }
}

fn all_logits() -> ForwardOptions {
    ForwardOptions {
        all_logits: true,
        trace_first_layer: true,
    }
}

#[test]
fn incremental_decode_matches_full_prefill() {
    for ternary in [true, false] {
        let model = Model::new(spec(ternary).build(), CpuBackend::new(2));
        let prompt = [3u32, 17, 4, 42, 8, 1];
        let mut full_cache = model.new_cache(16);
        let full = model
            .forward(&prompt, &mut full_cache, all_logits())
            .unwrap();
        assert_eq!(full.logits.len(), prompt.len() * 50);

        let mut cache = model.new_cache(16);
        model
            .forward(&prompt[..3], &mut cache, ForwardOptions::default())
            .unwrap();
        for (i, &t) in prompt[3..].iter().enumerate() {
            let step = model
                .forward(&[t], &mut cache, ForwardOptions::default())
                .unwrap();
            let row = &full.logits[(3 + i) * 50..(4 + i) * 50];
            let max = row.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            for (a, b) in step.logits.iter().zip(row) {
                assert!(
                    (a - b).abs() <= 1e-4 * max,
                    "ternary={ternary} pos {}",
                    3 + i
                );
            }
        }
        assert_eq!(cache.len(), prompt.len());
        let trace = full.first_layer_q;
        assert_eq!(trace.is_some(), ternary, "trace only for ternary layers");
        if let Some(t) = trace {
            assert_eq!(t.scales.len(), prompt.len());
            assert_eq!(t.q.len(), prompt.len() * 64);
            assert!(
                t.q.iter().any(|&q| q == 127 || q == -127),
                "absmax maps to ±127"
            );
        }
    }
}

#[test]
fn cpu_backend_equals_reference_backend() {
    let prompt = [1u32, 2, 3, 4, 5, 6, 7];
    let cpu = Model::new(spec(true).build(), CpuBackend::new(3));
    let refm = Model::new(spec(true).build(), ReferenceBackend);
    let a = cpu
        .forward(&prompt, &mut cpu.new_cache(8), all_logits())
        .unwrap();
    let b = refm
        .forward(&prompt, &mut refm.new_cache(8), all_logits())
        .unwrap();
    // Integers are exact on every path; floats differ only by SIMD reassociation.
    assert_eq!(a.first_layer_q, b.first_layer_q);
    let max = b.logits.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    for (i, (x, y)) in a.logits.iter().zip(&b.logits).enumerate() {
        assert!(
            (x - y).abs() <= 1e-5 * max,
            "logit {i}: cpu {x} vs reference {y}"
        );
    }
}

#[test]
fn bad_tokens_and_full_cache_are_refused_and_leave_the_cache_intact() {
    let model = Model::new(spec(true).build(), CpuBackend::new(1));
    let mut cache = model.new_cache(4);
    model
        .forward(&[1, 2], &mut cache, ForwardOptions::default())
        .unwrap();
    let err = model
        .forward(&[50], &mut cache, ForwardOptions::default())
        .unwrap_err();
    assert!(matches!(
        err,
        WorkerError::TokenOutOfRange { id: 50, vocab: 50 }
    ));
    let err = model
        .forward(&[1, 2, 3], &mut cache, ForwardOptions::default())
        .unwrap_err();
    assert!(matches!(
        err,
        WorkerError::ContextFull {
            needed: 5,
            capacity: 4
        }
    ));
    assert!(matches!(
        model.forward(&[], &mut cache, ForwardOptions::default()),
        Err(WorkerError::EmptyPrompt)
    ));
    assert_eq!(cache.len(), 2);
    model
        .forward(&[3, 4], &mut cache, ForwardOptions::default())
        .unwrap();
    assert_eq!(cache.len(), 4);
}

#[test]
fn generation_stops_at_length_or_stop_id_and_seeds_repeat() {
    let model = Model::new(spec(true).build(), CpuBackend::new(2));
    let generator = Generator::new(&model);
    let mut req = GenerationRequest {
        prompt_ids: vec![5, 6, 7],
        max_new_tokens: 10,
        sampling: SamplingParams::default(),
        stop_ids: vec![],
        keep_prompt_logits: true,
        logprobs: None,
    };
    let greedy = generator.run(&req).unwrap();
    assert_eq!(greedy.token_ids.len(), 10);
    assert_eq!(greedy.finish_reason, FinishReason::Length);
    assert_eq!(greedy.prompt_logits.as_ref().unwrap().len(), 3 * 50);

    req.stop_ids = vec![greedy.token_ids[4]];
    let stopped = generator.run(&req).unwrap();
    let first_stop = greedy
        .token_ids
        .iter()
        .position(|t| *t == greedy.token_ids[4])
        .unwrap();
    assert_eq!(stopped.token_ids, greedy.token_ids[..=first_stop]);
    assert_eq!(stopped.finish_reason, FinishReason::Stop);

    req.stop_ids.clear();
    req.sampling = SamplingParams {
        temperature: 1.5,
        top_k: 20,
        top_p: 0.95,
        seed: Some(1),
    };
    let a = generator.run(&req).unwrap();
    let b = generator.run(&req).unwrap();
    assert_eq!(a.token_ids, b.token_ids, "same seed, same tokens");
}

#[test]
fn a_batch_of_sequences_equals_each_sequence_alone() {
    use bitnet_worker::SequenceChunk;
    for ternary in [true, false] {
        let model = Model::new(spec(ternary).build(), CpuBackend::new(2));
        let prompts: [&[u32]; 3] = [&[1, 2, 3, 4], &[9], &[7, 7, 30, 12, 5, 44]];
        // alone
        let mut alone = Vec::new();
        for p in prompts {
            let mut cache = model.new_cache(16);
            let pre = model.forward(p, &mut cache, all_logits()).unwrap();
            let step = model
                .forward(&[11], &mut cache, ForwardOptions::default())
                .unwrap();
            alone.push((pre.logits, step.logits));
        }
        // together: batched prefill, then one batched decode step
        let mut caches: Vec<_> = (0..3).map(|_| model.new_cache(16)).collect();
        let mut chunks: Vec<SequenceChunk> = caches
            .iter_mut()
            .zip(prompts)
            .map(|(cache, tokens)| SequenceChunk { tokens, cache })
            .collect();
        let pre = model.forward_batch(&mut chunks, all_logits()).unwrap();
        let next = [11u32];
        let mut chunks: Vec<SequenceChunk> = caches
            .iter_mut()
            .map(|cache| SequenceChunk {
                tokens: &next,
                cache,
            })
            .collect();
        let step = model
            .forward_batch(&mut chunks, ForwardOptions::default())
            .unwrap();
        for i in 0..3 {
            for (got, want) in [
                (&pre[i].logits, &alone[i].0),
                (&step[i].logits, &alone[i].1),
            ] {
                assert_eq!(got.len(), want.len());
                let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                for (a, b) in got.iter().zip(want.iter()) {
                    assert!((a - b).abs() <= 1e-5 * scale, "ternary={ternary} seq {i}");
                }
            }
            assert_eq!(pre[i].first_layer_q.is_some(), ternary);
        }
        assert_eq!(
            caches.iter().map(|c| c.len()).collect::<Vec<_>>(),
            [5, 2, 7]
        );
    }
}

#[test]
fn a_bad_sequence_fails_the_batch_and_leaves_every_cache_intact() {
    use bitnet_worker::SequenceChunk;
    let model = Model::new(spec(true).build(), CpuBackend::new(1));
    let mut a = model.new_cache(8);
    let mut b = model.new_cache(8);
    let err = model
        .forward_batch(
            &mut [
                SequenceChunk {
                    tokens: &[1, 2],
                    cache: &mut a,
                },
                SequenceChunk {
                    tokens: &[3, 99],
                    cache: &mut b,
                },
            ],
            ForwardOptions::default(),
        )
        .unwrap_err();
    assert!(matches!(err, WorkerError::TokenOutOfRange { id: 99, .. }));
    assert_eq!((a.len(), b.len()), (0, 0));
}
