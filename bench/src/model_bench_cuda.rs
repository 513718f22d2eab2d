//! `bitnet-bench model --device cuda` (feature `cuda`): the same points as the CPU model bench
//! on the device-resident CUDA model (`bitnet_worker::cuda::CudaModel`): weights, KV pool,
//! activations and logits on the GPU, greedy sampling there, so a step moves only token ids and
//! block tables up and sampled ids down — what serving does.
//!
//! Prefill: one batched pass of `batch` prompts, each sequence picking its first token. Decode:
//! `gen_len` one-token steps of `batch` sequences at a context of `prompt_len` (the first a
//! warm-up); the pool's history is left zeroed instead of prefilled (attention reads every key
//! and value whatever they hold, so the timing is that of a real context). "Resident" memory is
//! the GPU's memory in use (total − free) while the pool is held. The floor divides by the
//! device copy bandwidth measured in the same run. Energy (batch-1 decode) is read from NVML's
//! counter of the GPU (`crate::energy_nvml`).

use crate::model_bench::ModelReport;
use crate::model_bench::{build_weights, report, BackendFacts, Measure, ModelBenchOptions};
use anyhow::{Context, Result};
use bitnet_kernels::cuda::CudaBackend;
use bitnet_worker::cuda::CudaModel;
use bitnet_worker::{
    PagedChunk, PagedModel, SampleRequest, Sampler, SamplingParams, SyntheticSpec, BLOCK_SIZE,
};
use std::time::Instant;

/// Runs the model benchmark of `spec` on visible device 0.
pub fn run(opts: &ModelBenchOptions, spec: &SyntheticSpec) -> Result<ModelReport> {
    let backend = CudaBackend::new().context("--device cuda")?;
    let built = build_weights(opts, spec);
    let config = built.weights.config.clone();
    let model = CudaModel::new(built.weights, backend).context("--device cuda")?;
    let b = model.backend();
    let bandwidth = crate::bandwidth::device_copy_bandwidth_gb_s(b, 5)?;
    eprintln!(
        "device copy bandwidth {bandwidth:.1} GB/s ({}, {})",
        b.device_name(),
        b.arch()
    );
    let facts = BackendFacts {
        device: format!("cuda ({})", b.device_name()),
        threads: 0,
        cpu_path: "-".into(),
        bandwidth,
        meter: crate::energy_nvml::meter(b.context()),
    };
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

/// Deterministic token ids for sequence `s`.
fn token_ids(vocab: usize, s: usize, n: usize) -> Vec<u32> {
    (0..n)
        .map(|i| ((s * 7919 + i * 104_729 + 13) % vocab) as u32)
        .collect()
}

/// Greedy samplers, one per sequence.
fn greedy(batch: usize) -> Result<Vec<Sampler>> {
    (0..batch)
        .map(|_| {
            Sampler::new(SamplingParams {
                seed: Some(0),
                ..SamplingParams::default()
            })
            .map_err(Into::into)
        })
        .collect()
}

/// One pass of `chunks`, every sequence picking its next token on the device.
fn step(
    model: &CudaModel,
    pool: &mut bitnet_worker::KvPool,
    chunks: &[PagedChunk<'_>],
    samplers: &mut [Sampler],
) -> Result<Vec<u32>> {
    let mut picks: Vec<SampleRequest> = samplers
        .iter_mut()
        .enumerate()
        .map(|(index, sampler)| SampleRequest {
            index,
            sampler,
            logprobs: None,
        })
        .collect();
    let out = model.forward_sample(pool, chunks, &mut picks)?;
    Ok(out.sampled.iter().map(|s| s.token).collect())
}

/// Block tables of `batch` sequences of up to `len` tokens each, in one pool.
fn tables(batch: usize, len: usize) -> Vec<Vec<u32>> {
    let per = len.div_ceil(BLOCK_SIZE);
    (0..batch)
        .map(|s| ((s * per) as u32..((s + 1) * per) as u32).collect())
        .collect()
}

/// Tokens/s of one batched prefill of `batch` prompts of `prompt_len` tokens.
fn prefill_tokens_per_s(model: &CudaModel, batch: usize, prompt_len: usize) -> Result<f64> {
    let vocab = model.vocab_size();
    let prompts: Vec<Vec<u32>> = (0..batch)
        .map(|s| token_ids(vocab, s, prompt_len))
        .collect();
    let tables = tables(batch, prompt_len);
    let mut pool = model.new_pool(batch * prompt_len.div_ceil(BLOCK_SIZE))?;
    // warm-up on a short chunk (kernels loaded, allocator primed)
    let warm = [PagedChunk {
        tokens: &prompts[0][..1],
        block_table: &tables[0],
        num_computed: 0,
    }];
    step(model, &mut pool, &warm, &mut greedy(1)?)?;
    let chunks: Vec<PagedChunk> = prompts
        .iter()
        .zip(&tables)
        .map(|(p, t)| PagedChunk {
            tokens: p,
            block_table: t,
            num_computed: 0,
        })
        .collect();
    let mut samplers = greedy(batch)?;
    let start = Instant::now();
    step(model, &mut pool, &chunks, &mut samplers)?;
    Ok((batch * prompt_len) as f64 / start.elapsed().as_secs_f64())
}

/// Tokens each sequence's pool holds for a decode run of `gen_len` steps after `prompt_len`.
pub(crate) fn decode_pool_tokens(prompt_len: usize, gen_len: usize) -> usize {
    prompt_len + gen_len + 1
}

/// `batch` sequences decoding one token per step at a context of `prompt_len`, in one device
/// pool of [`decode_pool_tokens`] tokens each (zeroed, not prefilled: attention reads every key
/// and value whatever they hold). Step `i` runs at position `prompt_len + i % gen_len`, so a
/// run can step on for as long as a measurement needs (an energy window) in the same pool.
pub(crate) struct DecodeRun<'m> {
    model: &'m CudaModel,
    pool: bitnet_worker::KvPool,
    tables: Vec<Vec<u32>>,
    samplers: Vec<Sampler>,
    next: Vec<u32>,
    prompt_len: usize,
    gen_len: usize,
    steps: usize,
}

impl<'m> DecodeRun<'m> {
    /// Allocates the pool (fails cleanly when the device is out of memory).
    pub fn new(
        model: &'m CudaModel,
        batch: usize,
        prompt_len: usize,
        gen_len: usize,
    ) -> Result<Self> {
        let vocab = model.vocab_size();
        let len = decode_pool_tokens(prompt_len, gen_len);
        let tables = tables(batch, len);
        let pool = model.new_pool(batch * len.div_ceil(BLOCK_SIZE))?;
        Ok(Self {
            model,
            pool,
            tables,
            samplers: greedy(batch)?,
            next: (0..batch).map(|s| ((s * 31) % vocab) as u32).collect(),
            prompt_len,
            gen_len: gen_len.max(1),
            steps: 0,
        })
    }

    /// One decode step of every sequence (the sampled ids come back, so it has finished).
    pub fn step(&mut self) -> Result<()> {
        let position = self.prompt_len + self.steps % self.gen_len;
        let tokens: Vec<[u32; 1]> = self.next.iter().map(|&t| [t]).collect();
        let chunks: Vec<PagedChunk> = tokens
            .iter()
            .zip(&self.tables)
            .map(|(t, table)| PagedChunk {
                tokens: t,
                block_table: table,
                num_computed: position,
            })
            .collect();
        self.next = step(self.model, &mut self.pool, &chunks, &mut self.samplers)?;
        self.steps += 1;
        Ok(())
    }
}

/// Tokens/s of `gen_len` decode steps of `batch` sequences at a context of `prompt_len` (the
/// first step a warm-up), and the GPU memory in use while the pool is held.
pub(crate) fn decode_tokens_per_s(
    model: &CudaModel,
    batch: usize,
    prompt_len: usize,
    gen_len: usize,
) -> Result<(f64, u64)> {
    let mut run = DecodeRun::new(model, batch, prompt_len, gen_len)?;
    run.step()?; // warm-up
    let start = Instant::now();
    for _ in 1..gen_len {
        run.step()?;
    }
    let seconds = start.elapsed().as_secs_f64();
    let used = model
        .backend()
        .context()
        .mem_get_info()
        .map(|(free, total)| (total - free) as u64)
        .unwrap_or(0);
    Ok(((batch * (gen_len - 1)) as f64 / seconds, used))
}
