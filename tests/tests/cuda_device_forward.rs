//! Every fixture through the device-resident CUDA model (feature `cuda`:
//! `bitnet_worker::cuda::CudaModel`, what `--device cuda` runs): prompt logits within 1e-4 of
//! max |logit| of transformers' (the CPU's tolerance in `parity.rs`) and of the CPU model's,
//! layer 0's int8 activations exactly, the fixture's 24 greedy tokens (the CPU's) through
//! `generate_paged` with sampling on the device; then, per fixture, a batch of two sequences
//! on shuffled block tables in one device pool, chunked across block boundaries, against the
//! CPU model on the same tables (and passes of more than 16 tokens, where dense 16-bit layers
//! take cuBLAS with 16-bit activations: a looser tolerance for `llama-f16` / `bitnet-bf16`); bad input (a token outside the vocabulary, a table too short
//! for the tokens, another model's pool) refused without changing what a later pass computes;
//! and TP = 2 on one GPU (two ranks as threads, `HostStaged` over a `LocalGroup`) against
//! TP = 1: bit-identical logits for the ternary families, within 1e-5 of max |logit| otherwise.
//!
//! Skips with a notice without a GPU; with `BITNET_REQUIRE_CUDA=1` (scripts/gpu-check.sh) a
//! missing GPU or zero fixtures fails. Prints the cases it ran.
#![cfg(feature = "cuda")]

use bitnet_checkpoints::ModelWeights;
use bitnet_kernels::cuda::CudaBackend;
use bitnet_kernels::CpuBackend;
use bitnet_tests::{all_fixture_dirs, max_abs_diff, Fixture};
use bitnet_worker::collective::HostStaged;
use bitnet_worker::cuda::CudaModel;
use bitnet_worker::{
    generate_paged, ForwardOptions, GenerationRequest, Generator, LocalGroup, Model, PagedChunk,
    PagedModel, SamplingParams, ShardPlan, BLOCK_SIZE,
};
use std::sync::Arc;

fn require() -> bool {
    std::env::var("BITNET_REQUIRE_CUDA").is_ok_and(|v| v == "1")
}

fn device_model(weights: ModelWeights) -> Result<CudaModel, String> {
    let backend = CudaBackend::new().map_err(|e| e.to_string())?;
    CudaModel::new(weights, backend).map_err(|e| e.to_string())
}

const ALL: ForwardOptions = ForwardOptions {
    all_logits: true,
    trace_first_layer: true,
};

/// Prompt logits, int8 trace and greedy tokens against transformers and the CPU.
fn whole_prompt(f: &Fixture, weights: &ModelWeights, cases: &mut usize) -> Result<(), String> {
    let name = &f.name;
    let prompt = f.ids("prompt_ids");
    let model = device_model(weights.clone())?;
    let cpu = Model::new(weights.clone(), CpuBackend::new(1));
    let blocks = prompt.len().div_ceil(BLOCK_SIZE);
    let table: Vec<u32> = (0..blocks as u32).collect();
    let chunk = [PagedChunk {
        tokens: &prompt,
        block_table: &table,
        num_computed: 0,
    }];
    let mut pool = model.new_pool(blocks).map_err(|e| format!("{name}: {e}"))?;
    let out = model
        .forward_paged(&mut pool, &chunk, ALL)
        .map_err(|e| format!("{name}: forward: {e}"))?;
    let out = &out[0];
    let (_, reference) = f.f32("logits");
    let (diff, scale) = max_abs_diff(&out.logits, reference);
    println!(
        "cuda_device_forward: {name:<16} max |Δlogit| {diff:.2e} vs transformers (max {scale:.2})"
    );
    if diff > 1e-4 * scale {
        return Err(format!(
            "{name}: max |Δlogit| {diff} > 1e-4 × {scale} (transformers)"
        ));
    }
    let mut cache = cpu.new_cache(prompt.len());
    let host = cpu
        .forward(&prompt, &mut cache, ALL)
        .map_err(|e| e.to_string())?;
    let (diff, scale) = max_abs_diff(&out.logits, &host.logits);
    if diff > 1e-4 * scale {
        return Err(format!(
            "{name}: max |Δlogit| {diff} > 1e-4 × {scale} (CPU)"
        ));
    }
    if let (Some(q_ref), Some(trace)) = (f.ints("layer0.q_proj.q"), &out.first_layer_q) {
        let q: Vec<i64> = trace.q.iter().map(|&v| v as i64).collect();
        if q != q_ref {
            return Err(format!("{name}: layer-0 int8 activations differ"));
        }
    }
    let greedy = f.ids("greedy_ids");
    let req = GenerationRequest {
        prompt_ids: prompt.clone(),
        max_new_tokens: greedy.len(),
        sampling: SamplingParams::default(),
        stop_ids: vec![],
        keep_prompt_logits: false,
        logprobs: None,
    };
    let max_pos = weights.config.max_position_embeddings;
    let gpu = generate_paged(&model, max_pos, &req).map_err(|e| format!("{name}: {e}"))?;
    let host = Generator::new(&cpu).run(&req).map_err(|e| e.to_string())?;
    if gpu.token_ids != host.token_ids || gpu.token_ids != greedy {
        return Err(format!(
            "{name}: greedy on the device {:?}, CPU {:?}, transformers {greedy:?}",
            gpu.token_ids, host.token_ids
        ));
    }
    *cases += 4;
    Ok(())
}

/// Two sequences on shuffled tables in one pool, chunked across block boundaries, against the
/// CPU model on the same tables; bad input refused without changing later results. Passes of at
/// most 16 tokens keep every dense 16-bit projection on f32 activations (the CPU's numerics:
/// 1e-4 of max |logit|); a pass of 18 tokens then takes cuBLAS's path for dense 16-bit layers
/// and heads, whose activations are rounded to the weight dtype (an FP16
/// engine's numerics: 2e-3 of max |logit| for f16, 2e-2 for bf16 — the fixtures `llama-f16`
/// and `bitnet-bf16`; 1e-4 for the others).
fn chunked_batch(f: &Fixture, weights: &ModelWeights, cases: &mut usize) -> Result<(), String> {
    let name = &f.name;
    let vocab = weights.embedding.rows() as u32;
    let model = device_model(weights.clone())?;
    let cpu = Model::new(weights.clone(), CpuBackend::new(1));
    let a: Vec<u32> = (0..37).map(|i| (i * 7 + 3) % vocab).collect();
    let b: Vec<u32> = (0..20).map(|i| (i * 13 + 1) % vocab).collect();
    let c: Vec<u32> = (0..23).map(|i| (i * 5 + 2) % vocab).collect();
    let (ta, tb, tc) = ([5u32, 0, 3], [1u32, 4], [2u32, 6]);
    let mut gpu_pool = model.new_pool(7).map_err(|e| e.to_string())?;
    let mut cpu_pool = cpu.new_pool(7).map_err(|e| e.to_string())?;
    let compare = |got: &[bitnet_worker::ForwardOutput],
                   want: &[bitnet_worker::ForwardOutput],
                   tol: f32,
                   what: String|
     -> Result<(), String> {
        for (s, (g, w)) in got.iter().zip(want).enumerate() {
            let (diff, scale) = max_abs_diff(&g.logits, &w.logits);
            if g.logits.len() != w.logits.len() || diff > tol * scale {
                return Err(format!(
                    "{name}: {what} sequence {s}: max |Δlogit| {diff} (max {scale})"
                ));
            }
        }
        if got.len() != want.len() {
            return Err(format!(
                "{name}: {what}: {} outputs for {}",
                got.len(),
                want.len()
            ));
        }
        Ok(())
    };
    let mut done = (0usize, 0usize);
    for (na, nb) in [(7usize, 5usize), (2, 8), (9, 3), (5, 2), (14, 2)] {
        let batch = [
            PagedChunk {
                tokens: &a[done.0..done.0 + na],
                block_table: &ta,
                num_computed: done.0,
            },
            PagedChunk {
                tokens: &b[done.1..done.1 + nb],
                block_table: &tb,
                num_computed: done.1,
            },
        ];
        // Bad input first: nothing it would write is read later.
        let bad_token = [vocab];
        let bad = [
            PagedChunk {
                tokens: &bad_token,
                ..batch[0]
            },
            batch[1],
        ];
        if model.forward_paged(&mut gpu_pool, &bad, ALL).is_ok() {
            return Err(format!("{name}: token {vocab} accepted"));
        }
        let short = [PagedChunk {
            block_table: &ta[..1],
            ..batch[0]
        }];
        if done.0 + na > BLOCK_SIZE && model.forward_paged(&mut gpu_pool, &short, ALL).is_ok() {
            return Err(format!(
                "{name}: a table too short for the tokens was accepted"
            ));
        }
        if model.forward_paged(&mut cpu_pool, &batch, ALL).is_ok() {
            return Err(format!("{name}: the device model ran on a host pool"));
        }
        let got = model
            .forward_paged(&mut gpu_pool, &batch, ALL)
            .map_err(|e| format!("{name}: {e}"))?;
        let want = cpu
            .forward_paged(&mut cpu_pool, &batch, ALL)
            .map_err(|e| e.to_string())?;
        compare(&got, &want, 1e-4, format!("chunks ({na}, {nb})"))?;
        done = (done.0 + na, done.1 + nb);
        *cases += 1;
    }
    // More than 16 rows in one pass (17 + 1 tokens): the many-row path of dense 16-bit layers;
    // then c's next chunk, on keys and values that pass stored.
    let next = [a[0]];
    let wide = [
        PagedChunk {
            tokens: &c[..17],
            block_table: &tc,
            num_computed: 0,
        },
        PagedChunk {
            tokens: &next,
            block_table: &ta,
            num_computed: 37,
        },
        PagedChunk {
            tokens: &c[17..],
            block_table: &tc,
            num_computed: 17,
        },
    ];
    let tol = match name.as_str() {
        "llama-f16" => 2e-3,
        "bitnet-bf16" => 2e-2,
        _ => 1e-4,
    };
    let got = model
        .forward_paged(&mut gpu_pool, &wide[..2], ALL)
        .map_err(|e| format!("{name}: {e}"))?;
    let want = cpu
        .forward_paged(&mut cpu_pool, &wide[..2], ALL)
        .map_err(|e| e.to_string())?;
    compare(&got, &want, tol, "a pass of 18 tokens".into())?;
    let got = model
        .forward_paged(&mut gpu_pool, &wide[2..], ALL)
        .map_err(|e| format!("{name}: {e}"))?;
    let want = cpu
        .forward_paged(&mut cpu_pool, &wide[2..], ALL)
        .map_err(|e| e.to_string())?;
    compare(&got, &want, tol, "a chunk after 17 tokens".into())?;
    *cases += 2;
    Ok(())
}

/// TP = 2 on one GPU (HostStaged over threads) against TP = 1.
fn two_ranks(f: &Fixture, weights: &Arc<ModelWeights>, cases: &mut usize) -> Result<(), String> {
    let name = &f.name;
    if ShardPlan::new(0, 2)
        .and_then(|p| p.layout(&weights.config))
        .is_err()
    {
        println!("cuda_device_forward: {name}: TP=2 skipped (heads do not split)");
        return Ok(());
    }
    let prompt = f.ids("prompt_ids");
    let run = |model: &CudaModel| -> Result<Vec<f32>, String> {
        let blocks = prompt.len().div_ceil(BLOCK_SIZE);
        let table: Vec<u32> = (0..blocks as u32).collect();
        let mut pool = model.new_pool(blocks).map_err(|e| e.to_string())?;
        let chunk = [PagedChunk {
            tokens: &prompt,
            block_table: &table,
            num_computed: 0,
        }];
        let out = model
            .forward_paged(
                &mut pool,
                &chunk,
                ForwardOptions {
                    all_logits: true,
                    trace_first_layer: false,
                },
            )
            .map_err(|e| e.to_string())?;
        Ok(out.into_iter().next().map(|o| o.logits).unwrap_or_default())
    };
    let single = run(&device_model((**weights).clone())?)?;
    let results: Vec<Result<Vec<f32>, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = LocalGroup::ranks(2)
            .into_iter()
            .enumerate()
            .map(|(rank, c)| {
                let run = &run;
                s.spawn(move || -> Result<Vec<f32>, String> {
                    let shard = ShardPlan::new(rank, 2)
                        .and_then(|p| p.shard(weights))
                        .map_err(|e| e.to_string())?;
                    let backend = CudaBackend::new().map_err(|e| e.to_string())?;
                    let staged = HostStaged::new(Box::new(c), backend.stream().clone());
                    let model = CudaModel::from_shard(shard, backend, Box::new(staged))
                        .map_err(|e| format!("rank {rank}: {e}"))?;
                    run(&model)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("rank panicked".into())))
            .collect()
    });
    let ternary = !matches!(f.family.as_str(), "llama" | "onebit");
    for (rank, r) in results.into_iter().enumerate() {
        let logits = r.map_err(|e| format!("{name}: TP=2 rank {rank}: {e}"))?;
        let (diff, scale) = max_abs_diff(&logits, &single);
        let ok = if ternary {
            logits
                .iter()
                .zip(&single)
                .all(|(a, b)| a.to_bits() == b.to_bits())
        } else {
            diff <= 1e-5 * scale
        };
        if !ok || logits.len() != single.len() {
            return Err(format!(
                "{name}: TP=2 rank {rank}: max |Δlogit| {diff} vs TP=1"
            ));
        }
    }
    *cases += 1;
    Ok(())
}

#[test]
fn every_fixture_runs_device_resident() {
    if let Err(e) = CudaBackend::new() {
        assert!(!require(), "BITNET_REQUIRE_CUDA=1 but {e}");
        println!("cuda_device_forward: skipped, no CUDA backend: {e}");
        return;
    }
    let dirs = all_fixture_dirs();
    let (mut cases, mut failures) = (0usize, Vec::new());
    for dir in &dirs {
        let f = Fixture::load(dir).unwrap_or_else(|e| panic!("{e}"));
        let weights = match bitnet_checkpoints::load_model(&f.model_dir()) {
            Ok(w) => Arc::new(w),
            Err(e) => {
                failures.push(format!("{}: load failed: {e}", f.name));
                continue;
            }
        };
        for check in [whole_prompt, chunked_batch] {
            if let Err(e) = check(&f, &weights, &mut cases) {
                failures.push(e);
            }
        }
        if let Err(e) = two_ranks(&f, &weights, &mut cases) {
            failures.push(e);
        }
    }
    println!(
        "cuda_device_forward: {} fixtures, {cases} cases, {} failures",
        dirs.len(),
        failures.len()
    );
    assert!(!dirs.is_empty() && cases > 0, "no fixture ran on CUDA");
    assert!(failures.is_empty(), "failures:\n{}", failures.join("\n"));
}
