//! Every fixture checkpoint against its transformers reference: prompt logits within 1e-4 of
//! max |logit|, the same 24 greedy tokens, and the integers exactly (β, ternary histograms,
//! layer 0's per-token activation scale `s` and int8 `q`).

use bitnet_kernels::CpuBackend;
use bitnet_tests::{all_fixture_dirs, max_abs_diff, Fixture};
use bitnet_worker::model::ForwardOptions;
use bitnet_worker::{GenerationRequest, Generator, Model, SamplingParams};
use std::collections::BTreeSet;

const FAMILIES: [&str; 5] = ["1bitllm", "bitnet", "llama", "onebit", "llama-bitnet"];

/// Checks one fixture; returns how many integer tensors were compared.
fn check(fixture: &Fixture) -> usize {
    let name = &fixture.name;
    let weights = bitnet_checkpoints::load_model(&fixture.model_dir())
        .unwrap_or_else(|e| panic!("{name}: load failed: {e}"));
    assert_eq!(
        weights.config.family.name(),
        fixture.family,
        "{name}: family detection"
    );

    // β and histograms of every BitLinear tensor.
    let mut integers = 0;
    for (i, layer) in weights.layers.iter().enumerate() {
        for (proj_name, proj) in layer.projections() {
            let key = format!("model.layers.{i}.{proj_name}");
            if let bitnet_checkpoints::Projection::Ternary { weight, .. } = proj {
                let (_, beta) = fixture.f32(&format!("beta.{key}"));
                assert_eq!(weight.beta(), beta[0], "{name}: β of {key}");
                let h = weight.histogram();
                let expected = fixture
                    .ints(&format!("hist.{key}"))
                    .unwrap_or_else(|| panic!("{name}: no hist.{key}"));
                assert_eq!(
                    vec![h.minus as i64, h.zero as i64, h.plus as i64],
                    expected,
                    "{name}: histogram of {key}"
                );
                integers += 2;
            }
        }
    }

    let prompt = fixture.ids("prompt_ids");
    let model = Model::new(weights, CpuBackend::new(2));
    let vocab = model.vocab_size();
    let mut cache = model.new_cache(prompt.len());
    let out = model
        .forward(
            &prompt,
            &mut cache,
            ForwardOptions {
                all_logits: true,
                trace_first_layer: true,
            },
        )
        .unwrap_or_else(|e| panic!("{name}: forward failed: {e}"));
    let (shape, reference) = fixture.f32("logits");
    assert_eq!(shape, [prompt.len(), vocab], "{name}: logits shape");
    let (diff, scale) = max_abs_diff(&out.logits, reference);
    assert!(
        diff <= 1e-4 * scale,
        "{name}: max |Δlogit| {diff} > 1e-4 × {scale}"
    );

    // layer 0's int8 activations, exactly.
    if let Some(q_ref) = fixture.ints("layer0.q_proj.q") {
        let trace = out
            .first_layer_q
            .unwrap_or_else(|| panic!("{name}: no trace"));
        let (_, s_ref) = fixture.f32("layer0.q_proj.s");
        assert_eq!(trace.scales, s_ref, "{name}: per-token activation scales s");
        let q: Vec<i64> = trace.q.iter().map(|&v| v as i64).collect();
        assert_eq!(q, q_ref, "{name}: int8 activations q");
        integers += 2;
    }

    let greedy = fixture.ids("greedy_ids");
    let generation = Generator::new(&model)
        .run(&GenerationRequest {
            prompt_ids: prompt,
            max_new_tokens: greedy.len(),
            sampling: SamplingParams::default(),
            stop_ids: vec![],
            keep_prompt_logits: false,
        })
        .unwrap_or_else(|e| panic!("{name}: generation failed: {e}"));
    assert_eq!(generation.token_ids, greedy, "{name}: greedy tokens");
    integers
}

#[test]
fn every_fixture_matches_transformers() {
    let dirs = all_fixture_dirs();
    let mut families = BTreeSet::new();
    let mut integer_checks = 0;
    for dir in &dirs {
        let fixture = Fixture::load(dir).unwrap_or_else(|e| panic!("{e}"));
        integer_checks += check(&fixture);
        println!(
            "fixture {:<20} family {:<13} ok",
            fixture.name, fixture.family
        );
        families.insert(fixture.family.clone());
    }
    println!(
        "{} fixtures, {} integer tensors compared exactly",
        dirs.len(),
        integer_checks
    );
    for family in FAMILIES {
        assert!(
            families.contains(family),
            "no fixture of family {family} was checked"
        );
    }
    assert!(integer_checks > 0, "no integer tensor was compared");
}
