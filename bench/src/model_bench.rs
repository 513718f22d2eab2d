//! `bitnet-bench model`: a preset model with random weights in memory; prefill and decode
//! tokens/s per batch size, resident memory, the machine's read bandwidth measured in the same
//! run, and the decode bandwidth floor with the fraction of it achieved. `--device cuda` (feature
//! `cuda`) runs the same measurements on the device-resident CUDA model
//! (`crate::model_bench_cuda`), against the GPU's device copy bandwidth.

use crate::bandwidth::read_bandwidth_gb_s;
use crate::energy::{self, EnergyReport};
use crate::memory::resident_bytes;
use crate::meta::RunMeta;
use crate::presets;
use anyhow::{bail, Context, Result};
use bitnet_coordinator::device::Device;
use bitnet_kernels::{Backend, CpuBackend};
use bitnet_worker::{ForwardOptions, KvCache, Model, SequenceChunk};
use serde::Serialize;
use std::path::PathBuf;
use std::time::Instant;

/// What to measure.
#[derive(Clone, Debug)]
pub struct ModelBenchOptions {
    pub preset: String,
    pub device: Device,
    pub threads: usize,
    pub batches: Vec<usize>,
    pub prompt_lens: Vec<usize>,
    pub gen_len: usize,
    /// Prefill is measured for a batch only when `batch × prompt_len` is at most this.
    pub max_prefill_tokens: usize,
    /// Replace the LM head by an int8 copy with per-row scales (`--lm-head int8`).
    pub lm_head_int8: bool,
    pub json: Option<PathBuf>,
}

/// One (batch, prompt length) point. Field names are relied on by other tools.
#[derive(Clone, Debug, Serialize)]
pub struct ModelResult {
    pub batch: usize,
    pub prompt_len: usize,
    /// `null` when skipped (`batch × prompt_len` above `--max-prefill-tokens`).
    pub prefill_tokens_per_s: Option<f64>,
    pub decode_tokens_per_s: f64,
    pub decode_floor_tokens_per_s: f64,
    pub fraction_of_floor: f64,
    pub resident_bytes: u64,
    /// Bytes one decode step must read: all weights once plus every sequence's KV cache.
    pub bytes_per_step: u64,
}

/// The whole run. Field names are relied on by other tools.
#[derive(Clone, Debug, Serialize)]
pub struct ModelReport {
    pub kind: &'static str,
    pub meta: RunMeta,
    pub preset: String,
    pub device: String,
    pub threads: usize,
    pub cpu_path: String,
    /// "f16" or "int8".
    pub lm_head: String,
    pub read_bandwidth_gb_s: f64,
    /// Weight bytes one decode step reads (projections, LM head, norms).
    pub weight_bytes: u64,
    /// Weight bytes held in memory (adds the embedding table when it is not the head).
    pub weight_memory_bytes: u64,
    pub build_seconds: f64,
    pub results: Vec<ModelResult>,
    /// Energy of batch-1 decode, where this machine has a meter (RAPL; NVML on a GPU).
    pub energy: EnergyReport,
}

/// Runs the model benchmark and prints a table (and writes JSON when asked).
pub fn run(opts: &ModelBenchOptions) -> Result<ModelReport> {
    let spec = presets::spec_or_err(&opts.preset)?;
    if opts.batches.is_empty() || opts.prompt_lens.is_empty() || opts.gen_len < 2 {
        bail!("--batch and --prompt-len must be non-empty and --gen-len at least 2");
    }
    if opts.batches.contains(&0) || opts.prompt_lens.contains(&0) {
        bail!("batch sizes and prompt lengths must be positive");
    }
    match opts.device {
        Device::Cpu => run_on(
            opts,
            &spec,
            CpuBackend::from_env(opts.threads)?,
            |b: &CpuBackend| {
                let bandwidth = read_bandwidth_gb_s(b.pool(), 5);
                eprintln!(
                    "read bandwidth {bandwidth:.1} GB/s ({} threads)",
                    b.threads()
                );
                Ok(BackendFacts {
                    device: "cpu".into(),
                    threads: b.threads(),
                    cpu_path: b.path().name().into(),
                    bandwidth,
                    meter: energy::rapl(),
                })
            },
        ),
        #[cfg(feature = "cuda")]
        Device::Cuda => crate::model_bench_cuda::run(opts, &spec),
        #[cfg(not(feature = "cuda"))]
        Device::Cuda => Err(bitnet_coordinator::device::DeviceError::NotBuilt.into()),
    }
}

/// What the report says of the backend, measured once the model is built.
pub(crate) struct BackendFacts {
    pub device: String,
    pub threads: usize,
    pub cpu_path: String,
    /// GB/s the decode floor divides by (CPU read, GPU device copy).
    pub bandwidth: f64,
    /// The energy meter (RAPL for the CPU, NVML for a GPU), or why there is none.
    pub meter: energy::Meter,
}

/// The preset's weights (with the int8 head when asked), their byte counts and build time.
pub(crate) struct BuiltWeights {
    pub weights: bitnet_checkpoints::ModelWeights,
    /// Bytes one decode step reads (every projection, the head, the norms).
    pub weight_bytes: u64,
    pub weight_memory_bytes: u64,
    pub build_seconds: f64,
}

/// Builds the preset's random weights.
pub(crate) fn build_weights(
    opts: &ModelBenchOptions,
    spec: &bitnet_worker::SyntheticSpec,
) -> BuiltWeights {
    eprintln!(
        "building {} ({} layers, hidden {}, ~{:.2} GB of weights) ...",
        opts.preset,
        spec.num_layers,
        spec.hidden_size,
        presets::weight_bytes(spec) as f64 / 1e9
    );
    let start = Instant::now();
    let mut weights = spec.build();
    if opts.lm_head_int8 {
        weights.lm_head = Some(weights.lm_head().to_int8());
    }
    let build_seconds = start.elapsed().as_secs_f64();
    // Bytes a decode step reads: every projection, the LM head, the norms (the embedding table
    // of a tied model is read once per token row, not whole; an int8 head is read instead).
    let weight_memory_bytes = weights.memory_bytes() as u64;
    let weight_bytes = weight_memory_bytes
        - if weights.lm_head.is_some() {
            weights.embedding.memory_bytes() as u64
        } else {
            0
        };
    BuiltWeights {
        weights,
        weight_bytes,
        weight_memory_bytes,
        build_seconds,
    }
}

/// The measurements of one device: prefill tokens/s of `(batch, prompt_len)` and decode
/// tokens/s with the memory held of `(batch, prompt_len, gen_len)`.
pub(crate) struct Measure<'a> {
    pub prefill: &'a dyn Fn(usize, usize) -> Result<f64>,
    pub decode: &'a dyn Fn(usize, usize, usize) -> Result<(f64, u64)>,
}

/// The benchmark on a host `backend`; `facts` measures the bandwidth once the weights are built.
fn run_on<B: Backend>(
    opts: &ModelBenchOptions,
    spec: &bitnet_worker::SyntheticSpec,
    backend: B,
    facts: impl FnOnce(&B) -> Result<BackendFacts>,
) -> Result<ModelReport> {
    let built = build_weights(opts, spec);
    let config = built.weights.config.clone();
    let model = Model::new(built.weights, backend);
    let facts = facts(model.backend())?;
    let measure = Measure {
        prefill: &|batch, prompt_len| prefill_tokens_per_s(&model, batch, prompt_len),
        decode: &|batch, prompt_len, gen_len| {
            decode_tokens_per_s(&model, batch, prompt_len, gen_len)
        },
    };
    let sizes = (
        built.weight_bytes,
        built.weight_memory_bytes,
        built.build_seconds,
    );
    report(opts, &config, facts, sizes, measure)
}

/// Runs every (prompt length, batch) point and the energy measurement, prints the table and
/// writes the JSON when asked. `sizes`: weight bytes read per step, held, build seconds.
pub(crate) fn report(
    opts: &ModelBenchOptions,
    config: &bitnet_checkpoints::ModelConfig,
    facts: BackendFacts,
    sizes: (u64, u64, f64),
    measure: Measure<'_>,
) -> Result<ModelReport> {
    let (weight_bytes, weight_memory_bytes, build_seconds) = sizes;
    let bandwidth = facts.bandwidth;
    let kv_token_bytes = (2 * config.num_layers * config.num_kv_heads * config.head_dim * 4) as u64;
    let mut results = Vec::new();
    for &prompt_len in &opts.prompt_lens {
        for &batch in &opts.batches {
            let prefill = if batch * prompt_len <= opts.max_prefill_tokens {
                Some((measure.prefill)(batch, prompt_len)?)
            } else {
                None
            };
            let (decode, resident) = (measure.decode)(batch, prompt_len, opts.gen_len)?;
            let context = prompt_len + opts.gen_len / 2;
            let bytes_per_step = weight_bytes + batch as u64 * context as u64 * kv_token_bytes;
            let floor = batch as f64 * bandwidth * 1e9 / bytes_per_step as f64;
            results.push(ModelResult {
                batch,
                prompt_len,
                prefill_tokens_per_s: prefill,
                decode_tokens_per_s: decode,
                decode_floor_tokens_per_s: floor,
                fraction_of_floor: decode / floor,
                resident_bytes: resident,
                bytes_per_step,
            });
            print_row(results.last().expect("just pushed"), results.len() == 1);
        }
    }
    // Every step of a call produces a token, its warm-up step included (it is in the window).
    let energy = energy::measure_with(facts.meter, || {
        (measure.decode)(1, opts.prompt_lens[0], opts.gen_len).map(|_| opts.gen_len as u64)
    })?;
    energy::print(&energy);
    let report = ModelReport {
        kind: "model",
        meta: RunMeta::now(),
        energy,
        preset: opts.preset.clone(),
        device: facts.device,
        threads: facts.threads,
        cpu_path: facts.cpu_path,
        lm_head: if opts.lm_head_int8 { "int8" } else { "f16" }.into(),
        read_bandwidth_gb_s: bandwidth,
        weight_bytes,
        weight_memory_bytes,
        build_seconds,
        results,
    };
    if let Some(path) = &opts.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(report)
}

fn print_row(r: &ModelResult, header: bool) {
    if header {
        println!(
            "{:>6} {:>7} {:>12} {:>12} {:>12} {:>9} {:>12}",
            "batch", "prompt", "prefill t/s", "decode t/s", "floor t/s", "of floor", "RSS MiB"
        );
    }
    let prefill = r
        .prefill_tokens_per_s
        .map_or("skipped".to_string(), |v| format!("{v:.1}"));
    println!(
        "{:>6} {:>7} {:>12} {:>12.2} {:>12.2} {:>8.1}% {:>12.0}",
        r.batch,
        r.prompt_len,
        prefill,
        r.decode_tokens_per_s,
        r.decode_floor_tokens_per_s,
        100.0 * r.fraction_of_floor,
        r.resident_bytes as f64 / (1 << 20) as f64
    );
}

/// Deterministic token ids for sequence `s`.
fn token_ids(vocab: usize, s: usize, n: usize) -> Vec<u32> {
    (0..n)
        .map(|i| ((s * 7919 + i * 104_729 + 13) % vocab) as u32)
        .collect()
}

/// Tokens/s of one batched prefill of `batch` prompts of `prompt_len` tokens.
fn prefill_tokens_per_s<B: bitnet_kernels::Backend>(
    model: &Model<B>,
    batch: usize,
    prompt_len: usize,
) -> Result<f64> {
    let vocab = model.vocab_size();
    let prompts: Vec<Vec<u32>> = (0..batch)
        .map(|s| token_ids(vocab, s, prompt_len))
        .collect();
    let mut caches: Vec<KvCache> = (0..batch).map(|_| model.new_cache(prompt_len)).collect();
    // warm-up on a short chunk (pages in the weights, starts the threads)
    model.forward(
        &prompts[0][..1],
        &mut model.new_cache(1),
        ForwardOptions::default(),
    )?;
    let mut chunks: Vec<SequenceChunk> = caches
        .iter_mut()
        .zip(&prompts)
        .map(|(cache, p)| SequenceChunk { tokens: p, cache })
        .collect();
    let start = Instant::now();
    model.forward_batch(&mut chunks, ForwardOptions::default())?;
    Ok((batch * prompt_len) as f64 / start.elapsed().as_secs_f64())
}

/// Tokens/s of `gen_len` decode steps of `batch` sequences at a context of `prompt_len`
/// (the first step a warm-up), and the resident memory while the caches are held.
pub fn decode_tokens_per_s<B: bitnet_kernels::Backend>(
    model: &Model<B>,
    batch: usize,
    prompt_len: usize,
    gen_len: usize,
) -> Result<(f64, u64)> {
    let vocab = model.vocab_size();
    let mut caches = Vec::with_capacity(batch);
    for s in 0..batch {
        let mut cache = model.new_cache(prompt_len + gen_len + 1);
        cache.fill_synthetic(prompt_len, s as u64)?;
        caches.push(cache);
    }
    let step = |i: usize, caches: &mut [KvCache]| -> Result<()> {
        let tokens: Vec<[u32; 1]> = (0..batch)
            .map(|s| [((s * 31 + i * 17) % vocab) as u32])
            .collect();
        let mut chunks: Vec<SequenceChunk> = caches
            .iter_mut()
            .zip(&tokens)
            .map(|(cache, t)| SequenceChunk { tokens: t, cache })
            .collect();
        model.forward_batch(&mut chunks, ForwardOptions::default())?;
        Ok(())
    };
    step(0, &mut caches)?; // warm-up
    let start = Instant::now();
    for i in 1..gen_len {
        step(i, &mut caches)?;
    }
    let seconds = start.elapsed().as_secs_f64();
    Ok(((batch * (gen_len - 1)) as f64 / seconds, resident_bytes()))
}
