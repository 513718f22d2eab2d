//! `bitnet-bench model --preset NAME --sweep-to-memory`: the BitNet b1.58 paper's Table 3
//! protocol on this machine. At a fixed sequence length (512 by default), the batch grows
//! (1, 2, 4, … and finally the largest that fits) until the memory budget is full, for the
//! preset and for its pair of the same shape (`bitnet-X` ↔ `llama-X`); decode tokens/s and
//! resident memory are measured at every batch, and the maximum batch and its throughput are
//! compared between the two.
//!
//! The largest batch is computed from what one sequence costs: its KV cache at the sequence
//! length (f32 here; the paper's GPU runs used f16) plus its share of the step's working
//! buffers (logits and layer activations), on top of the process as it was before the model
//! was built and the model's weights. The resident memory measured at that batch is reported
//! beside the budget, so the estimate can be checked.

use crate::energy::EnergyReport;
use crate::memory::resident_bytes;
use crate::meta::RunMeta;
use crate::model_bench::decode_tokens_per_s;
use crate::presets;
use anyhow::{bail, Context, Result};
use bitnet_kernels::CpuBackend;
use bitnet_worker::Model;
use serde::Serialize;
use std::path::PathBuf;

/// What to sweep.
#[derive(Clone, Debug)]
pub struct SweepOptions {
    pub preset: String,
    pub threads: usize,
    /// Bytes the process may use; `None`: the machine's available memory at the start.
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
    pub resident_bytes: u64,
}

/// One model's sweep.
#[derive(Clone, Debug, Serialize)]
pub struct SweepModel {
    pub preset: String,
    pub weight_memory_bytes: u64,
    /// Bytes one more sequence costs (KV cache at `seq_len` and working buffers).
    pub bytes_per_sequence: u64,
    pub max_batch: usize,
    pub points: Vec<SweepPoint>,
    pub energy: EnergyReport,
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
    pub memory_budget_bytes: u64,
    pub seq_len: usize,
    pub threads: usize,
    /// The BitNet model first, then the FP16 LLaMA of the same shape.
    pub models: Vec<SweepModel>,
    /// BitNet ÷ FP16 LLaMA: largest batch, and tokens/s at each one's largest batch.
    pub max_batch_ratio: f64,
    pub throughput_ratio: f64,
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

/// The batches measured up to `max`: powers of two, then `max` itself.
fn batches_up_to(max: usize) -> Vec<usize> {
    let mut b: Vec<usize> = std::iter::successors(Some(1usize), |b| Some(b * 2))
        .take_while(|&b| b < max)
        .collect();
    b.push(max);
    b
}

/// Runs the sweep for the preset and its pair; prints a table, writes JSON when asked.
pub fn run(opts: &SweepOptions) -> Result<SweepReport> {
    presets::spec_or_err(&opts.preset)?;
    let (kind, size) = opts
        .preset
        .split_once('-')
        .context("a preset name has a dash")?;
    if opts.seq_len < 2 || opts.steps == 0 {
        bail!("--sweep-seq-len must be at least 2 and --sweep-steps positive");
    }
    let budget = match opts.memory_budget {
        Some(b) => b,
        None => available_memory().context("cannot read MemAvailable; give --memory-budget GB")?,
    };
    let pair = if kind == "bitnet" { "llama" } else { "bitnet" };
    let order = [format!("bitnet-{size}"), format!("llama-{size}")];
    eprintln!(
        "sweep to a memory budget of {:.2} GB at sequence length {} ({} and {pair}-{size})",
        budget as f64 / 1e9,
        opts.seq_len,
        opts.preset
    );
    let mut models = Vec::new();
    for preset in &order {
        models.push(sweep_one(preset, opts, budget)?);
    }
    let (b, l) = (&models[0], &models[1]);
    let report = SweepReport {
        kind: "sweep",
        meta: RunMeta::now(),
        memory_budget_bytes: budget,
        seq_len: opts.seq_len,
        threads: opts.threads,
        max_batch_ratio: b.max_batch as f64 / l.max_batch.max(1) as f64,
        throughput_ratio: b.max_batch_tokens_per_s()
            / l.max_batch_tokens_per_s().max(f64::MIN_POSITIVE),
        models,
    };
    println!(
        "{:>14} {:>10} {:>12} {:>14} {:>10}",
        "model", "max batch", "tok/s", "weights MiB", "RSS MiB"
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
    println!(
        "BitNet / FP16 LLaMA: max batch {:.2}x, throughput at max batch {:.2}x",
        report.max_batch_ratio, report.throughput_ratio
    );
    if let Some(path) = &opts.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(report)
}

/// Builds one model (freed on return) and measures it at growing batches.
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
    let bytes_per_sequence = (kv + work) as u64;
    let fixed = base + weight_memory_bytes;
    if fixed + bytes_per_sequence > budget {
        bail!(
            "{preset}: {:.2} GB of weights (plus {:.2} GB of process) leave no room for one sequence in a {:.2} GB budget",
            weight_memory_bytes as f64 / 1e9,
            base as f64 / 1e9,
            budget as f64 / 1e9
        );
    }
    let estimate = ((budget - fixed) / bytes_per_sequence) as usize;
    let prompt = opts.seq_len.saturating_sub(opts.steps + 1).max(1);
    let mut points: Vec<SweepPoint> = Vec::new();
    let measure = |batch: usize| -> Result<SweepPoint> {
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
        Ok(SweepPoint {
            batch,
            decode_tokens_per_s: tokens_per_s,
            resident_bytes: resident,
        })
    };
    // Doubling while the estimate allows, then the largest batch whose measured resident
    // memory fits: predicted from the measured cost of the last doubling, stepped down when a
    // measurement overshoots (the allocator's retained memory counts: it is what the process
    // holds).
    let mut candidate = None;
    for batch in batches_up_to(estimate) {
        let p = measure(batch)?;
        let over = p.resident_bytes > budget;
        if !over {
            points.push(p);
        }
        if over || batch == estimate {
            candidate = over.then_some(batch);
            break;
        }
    }
    let per_seq = match points.as_slice() {
        [.., a, b] => ((b.resident_bytes.saturating_sub(a.resident_bytes))
            / (b.batch - a.batch) as u64)
            .max(bytes_per_sequence),
        _ => bytes_per_sequence,
    };
    let mut next = match (candidate, points.last()) {
        (Some(over), Some(last)) => {
            let room = budget.saturating_sub(last.resident_bytes) / per_seq;
            (last.batch + room as usize).min(over - 1)
        }
        (None, Some(last)) => {
            last.batch + (budget.saturating_sub(last.resident_bytes) / per_seq) as usize
        }
        _ => 0,
    };
    for _ in 0..3 {
        let last = points.last().map_or(0, |p| p.batch);
        if next <= last {
            break;
        }
        let p = measure(next)?;
        if p.resident_bytes <= budget {
            points.push(p);
            break;
        }
        let over = (p.resident_bytes - budget).div_ceil(per_seq) as usize + 1;
        next = next.saturating_sub(over);
    }
    let Some(max_batch) = points.last().map(|p| p.batch) else {
        bail!(
            "{preset}: not even one sequence fits in a {:.2} GB budget",
            budget as f64 / 1e9
        );
    };
    let energy = crate::energy::measure(|| {
        decode_tokens_per_s(&model, max_batch, prompt, opts.steps + 1)
            .map(|_| (max_batch * opts.steps) as u64)
    })?;
    Ok(SweepModel {
        preset: preset.to_string(),
        weight_memory_bytes,
        bytes_per_sequence,
        max_batch,
        points,
        energy,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn batches_double_then_end_at_the_maximum() {
        assert_eq!(super::batches_up_to(1), vec![1]);
        assert_eq!(super::batches_up_to(4), vec![1, 2, 4]);
        assert_eq!(super::batches_up_to(11), vec![1, 2, 4, 8, 11]);
    }
}
