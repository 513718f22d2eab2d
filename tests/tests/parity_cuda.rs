//! Every fixture checkpoint on `CudaBackend` (feature `cuda`) against its transformers
//! reference, with the tolerances of `parity.rs`: prompt logits within 1e-4 of max |logit|,
//! layer 0's int8 activations exactly, the same greedy tokens. Skips with a notice without a
//! GPU; with `BITNET_REQUIRE_CUDA=1` (scripts/gpu-check.sh) a missing GPU or zero fixtures fails.
#![cfg(feature = "cuda")]

use bitnet_kernels::cuda::CudaBackend;
use bitnet_tests::{all_fixture_dirs, max_abs_diff, Fixture};
use bitnet_worker::model::ForwardOptions;
use bitnet_worker::{GenerationRequest, Generator, Model, SamplingParams};

fn check(fixture: &Fixture, backend: CudaBackend) -> Result<(), String> {
    let name = &fixture.name;
    let weights = bitnet_checkpoints::load_model(&fixture.model_dir())
        .map_err(|e| format!("{name}: load failed: {e}"))?;
    let prompt = fixture.ids("prompt_ids");
    let model = Model::new(weights, backend);
    let mut cache = model.new_cache(prompt.len());
    let options = ForwardOptions {
        all_logits: true,
        trace_first_layer: true,
    };
    let out = model
        .forward(&prompt, &mut cache, options)
        .map_err(|e| format!("{name}: forward failed: {e}"))?;
    let (_, reference) = fixture.f32("logits");
    let (diff, scale) = max_abs_diff(&out.logits, reference);
    println!("parity_cuda: {name:<16} max |Δlogit| {diff:.2e} (max |logit| {scale:.2})");
    if diff > 1e-4 * scale {
        return Err(format!("{name}: max |Δlogit| {diff} > 1e-4 × {scale}"));
    }
    if let (Some(q_ref), Some(trace)) = (fixture.ints("layer0.q_proj.q"), out.first_layer_q) {
        let q: Vec<i64> = trace.q.iter().map(|&v| v as i64).collect();
        if q != q_ref {
            return Err(format!("{name}: layer-0 int8 activations differ"));
        }
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
            "{name}: greedy {:?} vs {greedy:?}",
            generation.token_ids
        ));
    }
    Ok(())
}

#[test]
fn every_fixture_matches_transformers_on_cuda() {
    let require = std::env::var("BITNET_REQUIRE_CUDA").is_ok_and(|v| v == "1");
    if let Err(e) = CudaBackend::new() {
        assert!(!require, "BITNET_REQUIRE_CUDA=1 but {e}");
        println!("parity_cuda: skipped, no CUDA backend: {e}");
        return;
    }
    let dirs = all_fixture_dirs();
    let mut failures = Vec::new();
    for dir in &dirs {
        let fixture = Fixture::load(dir).unwrap_or_else(|e| panic!("{e}"));
        let backend = CudaBackend::new().expect("started once already");
        if let Err(e) = check(&fixture, backend) {
            failures.push(e);
        }
    }
    println!(
        "parity_cuda: {} fixtures on cuda, {} failures",
        dirs.len(),
        failures.len()
    );
    assert!(!dirs.is_empty(), "no fixture ran on CUDA");
    assert!(
        failures.is_empty(),
        "fixture failures:\n{}",
        failures.join("\n")
    );
}
