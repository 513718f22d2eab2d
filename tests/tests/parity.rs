//! Every fixture checkpoint against its transformers reference (f32): prompt logits within 1e-4
//! of max |logit|, the same 24 greedy tokens, and the integers exactly — ternary histograms and
//! layer 0's int8 activations `q`. Two floats that come from a reduction are compared to within
//! 2 ulp instead of bit-exactly, because torch sums in f32 in its own order while we round an
//! f64 sum once: β (`mean |W|`) and layer 0's per-token scale `s` (through the RMSNorm).
//! The fixture generator keeps every int8 activation of the prompt clear of a rounding
//! boundary, so a last-bit difference cannot flip an int8 value (see tests/fixtures/README.md).

use bitnet_checkpoints::Projection;
use bitnet_kernels::CpuBackend;
use bitnet_tests::{all_fixture_dirs, max_abs_diff, Fixture};
use bitnet_worker::model::ForwardOptions;
use bitnet_worker::{GenerationRequest, Generator, Model, SamplingParams};
use std::collections::BTreeSet;

const FAMILIES: [&str; 5] = ["1bitllm", "bitnet", "llama", "onebit", "llama-bitnet"];

/// Distance in units in the last place between two finite f32 of the same sign.
fn ulps(a: f32, b: f32) -> i64 {
    (a.to_bits() as i64 - b.to_bits() as i64).abs()
}

/// Checks one fixture; returns how many tensors were compared exactly (or within 2 ulp).
fn check(fixture: &Fixture) -> Result<usize, String> {
    let name = &fixture.name;
    let weights = bitnet_checkpoints::load_model(&fixture.model_dir())
        .map_err(|e| format!("{name}: load failed: {e}"))?;
    if weights.config.family.name() != fixture.family {
        return Err(format!(
            "{name}: detected family {} instead of {}",
            weights.config.family.name(),
            fixture.family
        ));
    }

    let mut compared = 0;
    for (i, layer) in weights.layers.iter().enumerate() {
        for (proj_name, proj) in layer.projections() {
            let Projection::Ternary { weight, .. } = proj else {
                continue;
            };
            let key = format!("model.layers.{i}.{proj_name}");
            let (_, beta) = fixture.f32(&format!("beta.{key}"));
            if ulps(weight.beta(), beta[0]) > 2 {
                return Err(format!(
                    "{name}: β of {key}: {} vs {}",
                    weight.beta(),
                    beta[0]
                ));
            }
            let h = weight.histogram();
            let got = vec![h.minus as i64, h.zero as i64, h.plus as i64];
            let expected = fixture.ints(&format!("hist.{key}"));
            if Some(&got) != expected.as_ref() {
                return Err(format!(
                    "{name}: histogram of {key}: {got:?} vs {expected:?}"
                ));
            }
            compared += 2;
        }
    }

    let prompt = fixture.ids("prompt_ids");
    let model = Model::new(weights, CpuBackend::new(2));
    let vocab = model.vocab_size();
    let mut cache = model.new_cache(prompt.len());
    let options = ForwardOptions {
        all_logits: true,
        trace_first_layer: true,
    };
    let out = model
        .forward(&prompt, &mut cache, options)
        .map_err(|e| format!("{name}: forward failed: {e}"))?;
    let (shape, reference) = fixture.f32("logits");
    if shape != [prompt.len(), vocab] {
        return Err(format!(
            "{name}: logits shape {shape:?} vs [{}, {vocab}]",
            prompt.len()
        ));
    }
    let (diff, scale) = max_abs_diff(&out.logits, reference);
    println!("{name:<16} max |Δlogit| {diff:.2e} (max |logit| {scale:.2})");
    if diff > 1e-4 * scale {
        return Err(format!("{name}: max |Δlogit| {diff} > 1e-4 × {scale}"));
    }

    if let Some(q_ref) = fixture.ints("layer0.q_proj.q") {
        let trace = out
            .first_layer_q
            .ok_or_else(|| format!("{name}: no layer-0 activations were traced"))?;
        let (_, s_ref) = fixture.f32("layer0.q_proj.s");
        if let Some(t) = (0..s_ref.len()).find(|&t| ulps(trace.scales[t], s_ref[t]) > 2) {
            return Err(format!(
                "{name}: layer-0 activation scale s of token {t}: {} vs {}",
                trace.scales[t], s_ref[t]
            ));
        }
        let q: Vec<i64> = trace.q.iter().map(|&v| v as i64).collect();
        if let Some(i) = (0..q.len()).find(|&i| q[i] != q_ref[i]) {
            return Err(format!(
                "{name}: layer-0 int8 activation {i}: {} vs {}",
                q[i], q_ref[i]
            ));
        }
        compared += 2;
    }

    let greedy = fixture.ids("greedy_ids");
    let generation = Generator::new(&model)
        .run(&GenerationRequest {
            prompt_ids: prompt,
            max_new_tokens: greedy.len(),
            sampling: SamplingParams::default(),
            stop_ids: vec![],
            keep_prompt_logits: false,
            logprobs: None,
        })
        .map_err(|e| format!("{name}: generation failed: {e}"))?;
    if generation.token_ids != greedy {
        return Err(format!(
            "{name}: greedy tokens {:?} vs {greedy:?}",
            generation.token_ids
        ));
    }
    Ok(compared)
}

#[test]
fn every_fixture_matches_transformers() {
    let dirs = all_fixture_dirs();
    let mut families = BTreeSet::new();
    let mut compared = 0;
    let mut failures = Vec::new();
    for dir in &dirs {
        let fixture = Fixture::load(dir).unwrap_or_else(|e| panic!("{e}"));
        match check(&fixture) {
            Ok(n) => compared += n,
            Err(e) => failures.push(e),
        }
        families.insert(fixture.family.clone());
    }
    println!(
        "{} fixtures checked, {compared} integer/scale tensors compared",
        dirs.len()
    );
    assert!(
        failures.is_empty(),
        "fixture failures:\n{}",
        failures.join("\n")
    );
    for family in FAMILIES {
        assert!(
            families.contains(family),
            "no fixture of family {family} was checked"
        );
    }
    assert!(compared > 0, "no integer tensor was compared");
}
