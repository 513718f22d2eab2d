//! `bitnet-bench model --preset NAME --sweep-to-memory`: the BitNet b1.58 paper's Table 3
//! protocol on this machine. At a fixed sequence length (512 by default), the batch grows
//! (1, 2, 4, … and finally the largest that fits) until the memory budget is full, for the
//! preset and for its pair of the same shape (`bitnet-X` ↔ `llama-X`); decode tokens/s and
//! the memory held are measured at every batch, and the maximum batch and its throughput are
//! compared between the two. The growth and its memory arithmetic are [`crate::sweep_plan`]'s,
//! shared by both devices:
//!
//! - CPU (here): the budget is the machine's available memory (or `--memory-budget`) and counts
//!   the whole process: what it held before the model was built, the weights, and per sequence
//!   its KV cache at the sequence length (f32; the paper's GPU runs used f16) plus its share of
//!   the step's working buffers (logits and layer activations). The resident memory measured at
//!   each batch is compared with the budget, so the estimate is checked.
//! - CUDA (`--device cuda`, feature `cuda`: `crate::sweep_cuda`): the device-resident model on
//!   visible GPU 0; the budget counts weights, KV pool and activations in device memory.

use crate::energy::EnergyReport;
use crate::memory::resident_bytes;
use crate::meta::RunMeta;
use crate::model_bench::decode_tokens_per_s;
use crate::presets;
use crate::sweep_plan::{grow, MemoryPlan, Probe};
use anyhow::{bail, Context, Result};
use bitnet_coordinator::device::Device;
use bitnet_kernels::CpuBackend;
use bitnet_worker::Model;
use serde::Serialize;
use std::path::PathBuf;

/// What to sweep.
#[derive(Clone, Debug)]
pub struct SweepOptions {
    pub preset: String,
    pub device: Device,
    pub threads: usize,
    /// Bytes the sweep may use; `None`: the machine's available memory at the start (CUDA: the
    /// device's free memory less a margin).
    pub memory_budget: Option<u64>,
    pub seq_len: usize,
    /// Decode steps measured per batch (after one warm-up step).
    pub steps: usize,
    pub json: Option<PathBuf>,
}

/// One batch of one model. Field names are relied on by `bitnet-bench report`.
#[derive(Clone, Debug, Serialize)]
pub struct SweepPoint {
    pub batch: usize,
    pub decode_tokens_per_s: f64,
    /// Memory held at that batch: the process's resident set (CPU), or the device memory of
    /// weights, KV pool and activations at the step's peak (CUDA).
    pub resident_bytes: u64,
}

/// One model's sweep.
#[derive(Clone, Debug, Serialize)]
pub struct SweepModel {
    pub preset: String,
    pub weight_memory_bytes: u64,
    /// Bytes one more sequence costs (KV cache at `seq_len` and working buffers), estimated.
    pub bytes_per_sequence: u64,
    /// What the batches had to stay under: the budget, or less where the device has less free.
    pub memory_limit_bytes: u64,
    /// How `resident_bytes` was measured.
    pub memory_measure: String,
    /// 0 when not even one sequence could run (see `note`).
    pub max_batch: usize,
    pub points: Vec<SweepPoint>,
    pub energy: EnergyReport,
    /// Why the sweep ended early (out of device memory), if it did.
    pub note: Option<String>,
}

impl SweepModel {
    /// Tokens/s at the largest batch measured.
    pub fn max_batch_tokens_per_s(&self) -> f64 {
        self.points.last().map_or(0.0, |p| p.decode_tokens_per_s)
    }
}

/// The whole comparison. Field names are relied on by `bitnet-bench report`.
#[derive(Clone, Debug, Serialize)]
pub struct SweepReport {
    pub kind: &'static str,
    pub meta: RunMeta,
    /// "cpu" or "cuda".
    pub device: String,
    /// The GPU's name (CUDA runs).
    pub card: Option<String>,
    pub memory_budget_bytes: u64,
    pub seq_len: usize,
    /// Compute threads (CPU runs; 0 on CUDA).
    pub threads: usize,
    /// The BitNet model first, then the FP16 LLaMA of the same shape.
    pub models: Vec<SweepModel>,
    /// BitNet ÷ FP16 LLaMA: largest batch, and tokens/s at each one's largest batch (`null`
    /// when the LLaMA ran no batch at all).
    pub max_batch_ratio: Option<f64>,
    pub throughput_ratio: Option<f64>,
}

/// The machine's available memory (`MemAvailable`), in bytes.
pub fn available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: u64 = info
        .lines()
        .find(|l| l.starts_with("MemAvailable:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// `a / b`, or `None` when `b` is zero.
fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0).then(|| a / b)
}

/// Runs the sweep for the preset and its pair; prints a table, writes JSON when asked.
pub fn run(opts: &SweepOptions) -> Result<SweepReport> {
    presets::spec_or_err(&opts.preset)?;
    let (kind, size) = opts
        .preset
        .split_once('-')
        .context("a preset name has a dash")?;
    if opts.seq_len < opts.steps + 3 || opts.steps == 0 {
        bail!("--sweep-seq-len must exceed --sweep-steps + 2 and --sweep-steps must be positive");
    }
    let (budget, card) = match opts.device {
        Device::Cpu => match opts.memory_budget {
            Some(b) => (b, None),
            None => (
                available_memory().context("cannot read MemAvailable; give --memory-budget GB")?,
                None,
            ),
        },
        #[cfg(feature = "cuda")]
        Device::Cuda => {
            let (budget, card) = crate::sweep_cuda::budget(opts.memory_budget)?;
            (budget, Some(card))
        }
        #[cfg(not(feature = "cuda"))]
        Device::Cuda => bail!(bitnet_coordinator::device::DeviceError::NotBuilt),
    };
    let pair = if kind == "bitnet" { "llama" } else { "bitnet" };
    let order = [format!("bitnet-{size}"), format!("llama-{size}")];
    eprintln!(
        "sweep to a memory budget of {:.2} GB at sequence length {} ({} and {pair}-{size}) on {}",
        budget as f64 / 1e9,
        opts.seq_len,
        opts.preset,
        card.as_deref().unwrap_or("the CPU")
    );
    let mut models = Vec::new();
    for preset in &order {
        models.push(match opts.device {
            Device::Cpu => sweep_one(preset, opts, budget)?,
            #[cfg(feature = "cuda")]
            Device::Cuda => crate::sweep_cuda::sweep_one(preset, opts, budget)?,
            #[cfg(not(feature = "cuda"))]
            Device::Cuda => bail!(bitnet_coordinator::device::DeviceError::NotBuilt),
        });
    }
    let (b, l) = (&models[0], &models[1]);
    let report = SweepReport {
        kind: "sweep",
        meta: RunMeta::now(),
        device: opts.device.name().to_string(),
        card,
        memory_budget_bytes: budget,
        seq_len: opts.seq_len,
        threads: if opts.device == Device::Cpu {
            opts.threads
        } else {
            0
        },
        max_batch_ratio: ratio(b.max_batch as f64, l.max_batch as f64),
        throughput_ratio: ratio(b.max_batch_tokens_per_s(), l.max_batch_tokens_per_s()),
        models,
    };
    print(&report);
    if let Some(path) = &opts.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(report)
}

/// The table, one `sweep:` summary line (what scripts/gpu-check.sh keeps) and the notes.
fn print(report: &SweepReport) {
    let memory = if report.device == "cpu" {
        "RSS MiB"
    } else {
        "device MiB"
    };
    println!(
        "{:>14} {:>10} {:>12} {:>14} {:>10}",
        "model", "max batch", "tok/s", "weights MiB", memory
    );
    for m in &report.models {
        let last = m.points.last();
        println!(
            "{:>14} {:>10} {:>12.2} {:>14.0} {:>10.0}",
            m.preset,
            m.max_batch,
            m.max_batch_tokens_per_s(),
            m.weight_memory_bytes as f64 / (1u64 << 20) as f64,
            last.map_or(0.0, |p| p.resident_bytes as f64 / (1u64 << 20) as f64)
        );
    }
    let x = |r: Option<f64>| r.map_or("—".to_string(), |r| format!("{r:.2}x"));
    let each = report
        .models
        .iter()
        .map(|m| {
            format!(
                "{} max batch {} ({:.1} tok/s)",
                m.preset,
                m.max_batch,
                m.max_batch_tokens_per_s()
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    println!(
        "sweep: {each} at sequence {}; BitNet / FP16 LLaMA: max batch {}, throughput at max batch {}",
        report.seq_len,
        x(report.max_batch_ratio),
        x(report.throughput_ratio)
    );
    for m in &report.models {
        if let Some(note) = &m.note {
            println!("note: {}: {note}", m.preset);
        }
    }
}

/// Builds one model on the CPU (freed on return) and measures it at growing batches.
fn sweep_one(preset: &str, opts: &SweepOptions, budget: u64) -> Result<SweepModel> {
    let spec = presets::spec(preset).expect("preset checked by the caller");
    let base = resident_bytes();
    eprintln!("building {preset} ...");
    let weights = spec.build();
    let weight_memory_bytes = weights.memory_bytes() as u64;
    let model = Model::new(weights, CpuBackend::from_env(opts.threads)?);
    let config = model.config().clone();
    let kv = 2 * config.num_layers * config.num_kv_heads * config.head_dim * 4 * opts.seq_len;
    let work = 4 * (model.vocab_size() + 4 * spec.intermediate_size + 8 * spec.hidden_size);
    let plan = MemoryPlan {
        limit: budget,
        fixed: base + weight_memory_bytes,
        per_sequence: (kv + work) as u64,
    };
    let Some(estimate) = plan.estimate() else {
        bail!(
            "{preset}: {:.2} GB of weights (plus {:.2} GB of process) leave no room for one sequence in a {:.2} GB budget",
            weight_memory_bytes as f64 / 1e9,
            base as f64 / 1e9,
            budget as f64 / 1e9
        );
    };
    let prompt = opts.seq_len.saturating_sub(opts.steps + 1).max(1);
    let growth = grow(&plan, estimate, |batch| {
        let (tokens_per_s, resident) = decode_tokens_per_s(&model, batch, prompt, opts.steps + 1)?;
        eprintln!(
            "  {preset} batch {batch:>5}: {tokens_per_s:>9.2} tok/s, RSS {:.0} MiB{}",
            resident as f64 / (1u64 << 20) as f64,
            if resident > budget {
                " (over the budget)"
            } else {
                ""
            }
        );
        Ok(Probe::Measured(SweepPoint {
            batch,
            decode_tokens_per_s: tokens_per_s,
            resident_bytes: resident,
        }))
    })?;
    let Some(max_batch) = growth.points.last().map(|p| p.batch) else {
        bail!(
            "{preset}: not even one sequence fits in a {:.2} GB budget",
            budget as f64 / 1e9
        );
    };
    // Every step of a call produces `max_batch` tokens, the warm-up included (it is in the window).
    let energy = crate::energy::measure(|| {
        decode_tokens_per_s(&model, max_batch, prompt, opts.steps + 1)
            .map(|_| (max_batch * (opts.steps + 1)) as u64)
    })?;
    Ok(SweepModel {
        preset: preset.to_string(),
        weight_memory_bytes,
        bytes_per_sequence: plan.per_sequence,
        memory_limit_bytes: budget,
        memory_measure: "resident set of the process (VmRSS)".into(),
        max_batch,
        points: growth.points,
        energy,
        note: growth.note,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn ratios_are_undefined_without_a_denominator() {
        assert_eq!(super::ratio(6.0, 3.0), Some(2.0));
        assert_eq!(super::ratio(6.0, 0.0), None);
    }
}
