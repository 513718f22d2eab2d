//! `bitnet-bench model --sweep-to-memory --device cuda` (feature `cuda`): the paper's Table 3
//! protocol on visible GPU 0, with the device-resident `CudaModel` (weights, paged KV pool,
//! activations and logits on the GPU, greedy sampling there) — the batch-growth logic is
//! [`crate::sweep_plan`]'s, as on the CPU.
//!
//! Memory. The budget is device memory for weights + KV pool + activations: `--memory-budget`
//! GB, or by default what the driver reports free (`cuMemGetInfo`) before any model is loaded,
//! less a margin ([`crate::sweep_plan::device_margin`]). After a model is loaded its batches
//! must also stay under what is then free, less the margin, so growing stops before an
//! allocation would fail. At every batch the memory held is the stream-ordered allocator's
//! high-water mark over the decode steps (`CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH` of the device's
//! pool, from which cudarc allocates weights, pool and activations alike); where the device
//! has no memory pools it is the memory in use after the steps (total − free, less what the
//! context held before loading) plus the estimated activations. An out-of-memory error during a
//! step ends that model's sweep at the previous batch with a note; weights that do not fit are
//! a note too (max batch 0), so the other model of the pair is still measured.
//!
//! Each sequence's pool holds exactly `--sweep-seq-len` tokens; decode runs `--sweep-steps`
//! timed steps (after one warm-up) at the last positions. Energy at the largest batch is NVML's
//! counter over ≥ 10 s of decode steps in one pool ([`crate::energy_nvml`]).

use crate::energy::{self, EnergyReport};
use crate::model_bench_cuda::{decode_pool_tokens, decode_tokens_per_s, DecodeRun};
use crate::presets;
use crate::sweep::{SweepModel, SweepOptions, SweepPoint};
use crate::sweep_plan::{
    default_device_budget, device_bytes_per_sequence, device_limit, grow, is_out_of_memory,
    MemoryPlan, Probe,
};
use anyhow::{anyhow, Context, Result};
use bitnet_kernels::cuda::CudaBackend;
use bitnet_worker::cuda::CudaModel;
use bitnet_worker::BLOCK_SIZE;
use cudarc::driver::sys::{CUmemPool_attribute, CUmemoryPool};
use cudarc::driver::{result, CudaContext};
use std::sync::Arc;

/// `(free, total)` device memory in bytes.
fn mem_info(ctx: &CudaContext) -> Result<(u64, u64)> {
    ctx.mem_get_info()
        .map(|(free, total)| (free as u64, total as u64))
        .map_err(|e| anyhow!("CUDA: reading free device memory: {e:?}"))
}

/// The sweep's budget (`requested`, or the free memory less the margin) and the card's name.
pub fn budget(requested: Option<u64>) -> Result<(u64, String)> {
    let backend = CudaBackend::new().context("--device cuda")?;
    let (free, total) = mem_info(backend.context())?;
    let budget = requested.unwrap_or_else(|| default_device_budget(free, total));
    eprintln!(
        "{}: {:.2} GB free of {:.2} GB",
        backend.device_name(),
        free as f64 / 1e9,
        total as f64 / 1e9
    );
    Ok((budget, backend.device_name().to_string()))
}

/// The device's stream-ordered memory pool (`None` without memory-pool support).
struct PoolPeak {
    ctx: Arc<CudaContext>,
    pool: Option<CUmemoryPool>,
}

impl PoolPeak {
    fn new(ctx: &Arc<CudaContext>) -> Self {
        let pool = ctx
            .has_async_alloc()
            .then(|| {
                ctx.bind_to_thread().ok()?;
                // SAFETY: the context's own device.
                unsafe { result::device::get_mem_pool(ctx.cu_device()) }.ok()
            })
            .flatten();
        Self {
            ctx: ctx.clone(),
            pool,
        }
    }

    fn attribute(&self, attr: CUmemPool_attribute) -> Result<Option<u64>> {
        let Some(pool) = self.pool else {
            return Ok(None);
        };
        self.ctx
            .bind_to_thread()
            .map_err(|e| anyhow!("CUDA: binding the context: {e:?}"))?;
        let mut value: u64 = 0;
        // SAFETY: the device's pool; the attribute is a cuuint64_t.
        unsafe { result::mem_pool::get_attribute(pool, attr, (&mut value as *mut u64).cast()) }
            .map_err(|e| anyhow!("CUDA: reading the memory pool's {attr:?}: {e:?}"))?;
        Ok(Some(value))
    }

    /// Bytes the pool holds now.
    fn current(&self) -> Result<Option<u64>> {
        self.attribute(CUmemPool_attribute::CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT)
    }

    /// The most the pool held since the last [`Self::reset`].
    fn peak(&self) -> Result<Option<u64>> {
        self.attribute(CUmemPool_attribute::CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH)
    }

    /// Waits for every queued op and hands what the pool holds unused back to the device, so
    /// the pool holds only live buffers (freed ones are otherwise kept until a later sync).
    fn settle(&self) -> Result<()> {
        self.ctx
            .synchronize()
            .map_err(|e| anyhow!("CUDA: synchronizing: {e:?}"))?;
        if let Some(pool) = self.pool {
            // SAFETY: the device's pool; nothing is in flight after the synchronize.
            unsafe { result::mem_pool::trim_to(pool, 0) }
                .map_err(|e| anyhow!("CUDA: trimming the memory pool: {e:?}"))?;
        }
        Ok(())
    }

    /// Restarts the high-water mark from the live buffers (after [`Self::settle`]).
    fn reset(&self) -> Result<()> {
        self.settle()?;
        let Some(pool) = self.pool else {
            return Ok(());
        };
        let mut zero: u64 = 0;
        // SAFETY: the device's pool; a high-water mark may only be set to 0 (a cuuint64_t).
        unsafe {
            result::mem_pool::set_attribute(
                pool,
                CUmemPool_attribute::CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH,
                (&mut zero as *mut u64).cast(),
            )
        }
        .map_err(|e| anyhow!("CUDA: resetting the memory pool's high-water mark: {e:?}"))
    }
}

/// A model entry with no batch: why (weights do not fit, or no room for one sequence).
fn no_batch(preset: &str, weights: u64, limit: u64, measure: &str, note: String) -> SweepModel {
    eprintln!("  {preset}: {note}");
    SweepModel {
        preset: preset.to_string(),
        weight_memory_bytes: weights,
        bytes_per_sequence: 0,
        memory_limit_bytes: limit,
        memory_measure: measure.into(),
        max_batch: 0,
        points: Vec::new(),
        energy: EnergyReport::not_measurable("no batch of this model ran"),
        note: Some(note),
    }
}

/// Loads one model on the GPU (freed on return) and measures it at growing batches.
pub fn sweep_one(preset: &str, opts: &SweepOptions, budget: u64) -> Result<SweepModel> {
    let spec = presets::spec_or_err(preset)?;
    let backend = CudaBackend::new().context("--device cuda")?;
    let ctx = backend.context().clone();
    let pool = PoolPeak::new(&ctx);
    let measure = if pool.pool.is_some() {
        "device memory pool high-water mark (weights + KV pool + activations)"
    } else {
        "device memory in use after the steps, less the context, plus estimated activations"
    };
    let (free, total) = mem_info(&ctx)?;
    let base_used = total - free.min(total);
    let estimated_weights = presets::weight_bytes(&spec) as u64;
    let room = default_device_budget(free, total).min(budget);
    if estimated_weights > room {
        let note = format!(
            "weights of ~{:.2} GB do not fit in {:.2} GB (budget, or free device memory less the margin)",
            estimated_weights as f64 / 1e9,
            room as f64 / 1e9
        );
        return Ok(no_batch(preset, estimated_weights, room, measure, note));
    }
    eprintln!("building {preset} ...");
    let model = match CudaModel::new(spec.build(), backend) {
        Ok(m) => m,
        Err(e) if is_out_of_memory(&e.to_string()) => {
            let note = format!("loading the weights ran out of device memory ({e})");
            return Ok(no_batch(preset, estimated_weights, room, measure, note));
        }
        Err(e) => return Err(e).context(format!("--device cuda: loading {preset}")),
    };
    let weights = model.weight_bytes();
    pool.settle()?;
    let fixed = pool.current()?.unwrap_or(weights).max(weights);
    let (free_after, _) = mem_info(&ctx)?;
    let limit = device_limit(budget, fixed, free_after, total);
    // Each sequence's pool holds exactly seq_len tokens.
    let gen_len = opts.steps + 1;
    let prompt = opts.seq_len.saturating_sub(gen_len + 1).max(1);
    let c = model.config();
    let shape = (model.vocab_size(), c.intermediate_size, c.hidden_size);
    let activations = device_bytes_per_sequence(0, 0, BLOCK_SIZE, 0, shape);
    let plan = MemoryPlan {
        limit,
        fixed,
        per_sequence: device_bytes_per_sequence(
            c.num_layers,
            model.kv_dim(),
            BLOCK_SIZE,
            decode_pool_tokens(prompt, gen_len),
            shape,
        ),
    };
    let Some(estimate) = plan.estimate().filter(|&e| e > 0) else {
        let note = format!(
            "{:.2} GB of weights leave no room for one sequence of {} tokens under {:.2} GB",
            weights as f64 / 1e9,
            opts.seq_len,
            limit as f64 / 1e9
        );
        return Ok(no_batch(preset, weights, limit, measure, note));
    };
    eprintln!(
        "  {preset}: {:.2} GB of weights, ~{:.1} MB per sequence, limit {:.2} GB: up to ~{estimate} sequences",
        weights as f64 / 1e9,
        plan.per_sequence as f64 / 1e6,
        limit as f64 / 1e9
    );
    let batches = Batches {
        preset,
        model: &model,
        pool: &pool,
        prompt,
        gen_len,
        limit,
        base_used,
        activations,
    };
    let growth = grow(&plan, estimate, |batch| batches.probe(batch))?;
    let max_batch = growth.points.last().map_or(0, |p| p.batch);
    let energy = if max_batch == 0 {
        EnergyReport::not_measurable("no batch of this model ran")
    } else {
        energy_at(&model, max_batch, prompt, gen_len)?
    };
    Ok(SweepModel {
        preset: preset.to_string(),
        weight_memory_bytes: weights,
        bytes_per_sequence: plan.per_sequence,
        memory_limit_bytes: limit,
        memory_measure: measure.into(),
        max_batch,
        points: growth.points,
        energy,
        note: growth.note,
    })
}

/// What measuring one batch of a loaded model needs.
struct Batches<'a> {
    preset: &'a str,
    model: &'a CudaModel,
    pool: &'a PoolPeak,
    prompt: usize,
    gen_len: usize,
    limit: u64,
    /// Device memory in use before the weights were loaded (fallback measure only).
    base_used: u64,
    /// Estimated activation bytes per sequence (fallback measure only).
    activations: u64,
}

impl Batches<'_> {
    /// Decode tokens/s at `batch` and the device memory held at the steps' peak; running out
    /// of device memory is a [`Probe::OutOfMemory`], any other error ends the run.
    fn probe(&self, batch: usize) -> Result<Probe> {
        let preset = self.preset;
        self.pool.reset()?;
        let (tokens_per_s, used) =
            match decode_tokens_per_s(self.model, batch, self.prompt, self.gen_len) {
                Ok(r) => r,
                Err(e) if is_out_of_memory(&format!("{e:#}")) => {
                    eprintln!("  {preset} batch {batch:>5}: out of device memory");
                    return Ok(Probe::OutOfMemory(format!("{e:#}")));
                }
                Err(e) => return Err(e.context(format!("{preset} at batch {batch}"))),
            };
        let resident = match self.pool.peak()? {
            Some(peak) => peak,
            None => used.saturating_sub(self.base_used) + batch as u64 * self.activations,
        };
        let over = if resident > self.limit {
            " (over the limit)"
        } else {
            ""
        };
        eprintln!(
            "  {preset} batch {batch:>5}: {tokens_per_s:>10.2} tok/s, device {:.0} MiB{over}",
            resident as f64 / (1u64 << 20) as f64
        );
        Ok(Probe::Measured(SweepPoint {
            batch,
            decode_tokens_per_s: tokens_per_s,
            resident_bytes: resident,
        }))
    }
}

/// NVML energy of decode steps at `batch` (one pool, one warm-up step first); printed.
fn energy_at(
    model: &CudaModel,
    batch: usize,
    prompt: usize,
    gen_len: usize,
) -> Result<EnergyReport> {
    let report = match crate::energy_nvml::meter(model.backend().context()) {
        Err(why) => EnergyReport::not_measurable(why),
        Ok(meter) => {
            let warm = DecodeRun::new(model, batch, prompt, gen_len).and_then(|mut r| {
                r.step()?;
                Ok(r)
            });
            match warm {
                Ok(mut run) => energy::measure_with(Ok(meter), || {
                    run.step()?;
                    Ok(batch as u64)
                })?,
                Err(e) if is_out_of_memory(&format!("{e:#}")) => EnergyReport::not_measurable(
                    format!("the decode run at batch {batch} ran out of device memory ({e:#})"),
                ),
                Err(e) => return Err(e),
            }
        }
    };
    energy::print(&report);
    Ok(report)
}
