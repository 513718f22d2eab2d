//! The device-independent part of `--sweep-to-memory` (the paper's Table 3 protocol): the
//! memory arithmetic (budget, margin, the limit a model's batches must stay under, what one
//! more sequence costs, the first estimate of the largest batch) and the batch-growth loop that
//! measures batches until the limit is reached. The loop takes the measurement as a closure, so
//! the CPU sweep (`crate::sweep`), the CUDA sweep (`crate::sweep_cuda`) and the tests (a fake
//! memory model) run the same logic.
//!
//! Growth: batches double (1, 2, 4, …) up to the estimate; the largest batch that fits is then
//! predicted from the measured cost of the last doubling and stepped down when a measurement
//! overshoots (at most three tries). A measurement that runs out of device memory ends the
//! sweep at the previous batch, with a note saying so, instead of failing the run.

use crate::sweep::SweepPoint;
use anyhow::Result;
use bitnet_worker::KvPool;

/// Device memory kept free beside the sweep: 2 % of the card, at least 512 MiB (the context,
/// cuBLAS workspaces and the allocator's fragmentation live there).
pub fn device_margin(total: u64) -> u64 {
    (total / 50).max(512 << 20)
}

/// The default budget on a GPU: what is free before the weights are loaded, less the margin.
pub fn default_device_budget(free: u64, total: u64) -> u64 {
    free.saturating_sub(device_margin(total))
}

/// The bytes a model's batches may reach on a GPU: the budget, but never more than what the
/// weights already hold (`fixed`) plus what is still free after loading them, less the margin —
/// so growing stops before an allocation would fail.
pub fn device_limit(budget: u64, fixed: u64, free_after_load: u64, total: u64) -> u64 {
    budget.min(fixed + free_after_load.saturating_sub(device_margin(total)))
}

/// Bytes one more sequence of `tokens` tokens costs a device model: its KV blocks (f32 keys and
/// values of every layer, whole blocks) and its row of the step's activations (hidden state,
/// norms, projections, the MLP's gate/up/activation with their int8 and i32 copies, logits).
pub fn device_bytes_per_sequence(
    layers: usize,
    kv_dim: usize,
    block_size: usize,
    tokens: usize,
    shape: (usize, usize, usize),
) -> u64 {
    let (vocab, ffn, hidden) = shape;
    let kv = KvPool::bytes_per_block(layers, kv_dim, block_size) * tokens.div_ceil(block_size);
    (kv + 4 * (vocab + 6 * ffn + 8 * hidden)) as u64
}

/// What the growth compares against: the memory limit, what the process or device holds
/// before any sequence (`fixed`), and the estimated bytes per sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryPlan {
    pub limit: u64,
    pub fixed: u64,
    pub per_sequence: u64,
}

impl MemoryPlan {
    /// The largest batch the estimate allows; `None` when not even one sequence fits.
    pub fn estimate(&self) -> Option<usize> {
        let per = self.per_sequence.max(1);
        (self.fixed + per <= self.limit).then(|| ((self.limit - self.fixed) / per) as usize)
    }
}

/// One measurement of the growth.
#[derive(Clone, Debug)]
pub enum Probe {
    /// Tokens/s and the memory held at that batch.
    Measured(SweepPoint),
    /// The step ran out of device memory (the error's text).
    OutOfMemory(String),
}

/// The batches measured (growing; each within the limit) and why the growth stopped early.
#[derive(Clone, Debug, Default)]
pub struct Growth {
    pub points: Vec<SweepPoint>,
    pub note: Option<String>,
}

/// True when an error's text is a device allocation failure (CUDA driver or cuBLAS).
pub fn is_out_of_memory(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("out_of_memory") || m.contains("out of memory") || m.contains("alloc_failed")
}

/// The batches measured up to `max`: powers of two, then `max` itself.
pub fn batches_up_to(max: usize) -> Vec<usize> {
    let mut b: Vec<usize> = std::iter::successors(Some(1usize), |b| Some(b * 2))
        .take_while(|&b| b < max)
        .collect();
    b.push(max);
    b
}

/// Grows the batch from 1 to the largest that stays within `plan.limit` (see the module docs).
/// `estimate` is the first guess of that batch (at least 1). Errors of `measure` other than
/// [`Probe::OutOfMemory`] end the run.
pub fn grow(
    plan: &MemoryPlan,
    estimate: usize,
    mut measure: impl FnMut(usize) -> Result<Probe>,
) -> Result<Growth> {
    let limit = plan.limit;
    let mut growth = Growth::default();
    let out_of_memory = |growth: &mut Growth, batch: usize, why: String| {
        let end = growth.points.last().map_or_else(
            || "no batch fits".to_string(),
            |p| format!("the sweep ends at batch {}", p.batch),
        );
        growth.note = Some(format!(
            "batch {batch} ran out of device memory ({why}); {end}"
        ));
    };
    let mut candidate = None;
    for batch in batches_up_to(estimate.max(1)) {
        let p = match measure(batch)? {
            Probe::Measured(p) => p,
            Probe::OutOfMemory(why) => {
                out_of_memory(&mut growth, batch, why);
                return Ok(growth);
            }
        };
        let over = p.resident_bytes > limit;
        if !over {
            growth.points.push(p);
        }
        if over || batch == estimate.max(1) {
            candidate = over.then_some(batch);
            break;
        }
    }
    let points = &growth.points;
    let per_seq = match points.as_slice() {
        [.., a, b] => ((b.resident_bytes.saturating_sub(a.resident_bytes))
            / (b.batch - a.batch) as u64)
            .max(plan.per_sequence)
            .max(1),
        _ => plan.per_sequence.max(1),
    };
    let mut next = match (candidate, points.last()) {
        (Some(over), Some(last)) => {
            let room = limit.saturating_sub(last.resident_bytes) / per_seq;
            (last.batch + room as usize).min(over - 1)
        }
        (None, Some(last)) => {
            last.batch + (limit.saturating_sub(last.resident_bytes) / per_seq) as usize
        }
        _ => 0,
    };
    for _ in 0..3 {
        let last = growth.points.last().map_or(0, |p| p.batch);
        if next <= last {
            break;
        }
        let p = match measure(next)? {
            Probe::Measured(p) => p,
            Probe::OutOfMemory(why) => {
                out_of_memory(&mut growth, next, why);
                break;
            }
        };
        if p.resident_bytes <= limit {
            growth.points.push(p);
            break;
        }
        let over = (p.resident_bytes - limit).div_ceil(per_seq) as usize + 1;
        next = next.saturating_sub(over);
    }
    Ok(growth)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A device whose memory is `fixed + batch · per_seq` and that fails an allocation above
    /// `capacity`; throughput grows with the batch.
    struct Fake {
        fixed: u64,
        per_seq: u64,
        capacity: u64,
        measured: Vec<usize>,
    }

    impl Fake {
        fn probe(&mut self, batch: usize) -> Result<Probe> {
            self.measured.push(batch);
            let held = self.fixed + batch as u64 * self.per_seq;
            if held > self.capacity {
                return Ok(Probe::OutOfMemory(
                    "CUDA driver: allocating device memory: DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")".into(),
                ));
            }
            Ok(Probe::Measured(SweepPoint {
                batch,
                decode_tokens_per_s: 10.0 * batch as f64,
                resident_bytes: held,
            }))
        }
    }

    fn check(g: &Growth, limit: u64) {
        assert!(g.points.windows(2).all(|w| w[0].batch < w[1].batch));
        assert!(g.points.iter().all(|p| p.resident_bytes <= limit));
    }

    #[test]
    fn batches_double_then_end_at_the_maximum() {
        assert_eq!(batches_up_to(1), vec![1]);
        assert_eq!(batches_up_to(4), vec![1, 2, 4]);
        assert_eq!(batches_up_to(11), vec![1, 2, 4, 8, 11]);
    }

    #[test]
    fn budget_arithmetic() {
        let gib = 1u64 << 30;
        // 2 % of an 80 GiB card; 512 MiB on a small one.
        assert_eq!(device_margin(80 * gib), 80 * gib / 50);
        assert_eq!(device_margin(8 * gib), 512 << 20);
        assert_eq!(
            default_device_budget(70 * gib, 80 * gib),
            70 * gib - 80 * gib / 50
        );
        assert_eq!(default_device_budget(100 << 20, 8 * gib), 0);
        // A budget above what is free after loading is capped by it (less the margin).
        let fixed = 5 * gib;
        assert_eq!(
            device_limit(100 * gib, fixed, 60 * gib, 80 * gib),
            fixed + 60 * gib - 80 * gib / 50
        );
        assert_eq!(device_limit(20 * gib, fixed, 60 * gib, 80 * gib), 20 * gib);
        let plan = MemoryPlan {
            limit: 20 * gib,
            fixed,
            per_sequence: gib,
        };
        assert_eq!(plan.estimate(), Some(15));
        let full = MemoryPlan {
            limit: fixed + gib - 1,
            ..plan
        };
        assert_eq!(full.estimate(), None);
        // 2B-4T: 30 layers, kv 640, 512 tokens = 32 blocks of 16.
        let per = device_bytes_per_sequence(30, 640, 16, 512, (128_256, 6912, 2560));
        let kv = 2 * 30 * 640 * 4 * 512;
        assert_eq!(per, (kv + 4 * (128_256 + 6 * 6912 + 8 * 2560)) as u64);
        // A partial block costs a whole one.
        assert_eq!(
            device_bytes_per_sequence(1, 8, 16, 17, (0, 0, 0)),
            device_bytes_per_sequence(1, 8, 16, 32, (0, 0, 0))
        );
    }

    #[test]
    fn an_exact_estimate_ends_at_the_limit() {
        let mut fake = Fake {
            fixed: 1000,
            per_seq: 100,
            capacity: u64::MAX,
            measured: vec![],
        };
        let plan = MemoryPlan {
            limit: 3000,
            fixed: 1000,
            per_sequence: 100,
        };
        let g = grow(&plan, plan.estimate().unwrap(), |b| fake.probe(b)).unwrap();
        check(&g, plan.limit);
        assert_eq!(g.points.last().unwrap().batch, 20);
        assert!(g.note.is_none());
        assert_eq!(fake.measured, vec![1, 2, 4, 8, 16, 20]);
    }

    #[test]
    fn an_underestimate_is_stepped_down_to_what_fits() {
        // Each sequence really costs 37 % more than estimated.
        let mut fake = Fake {
            fixed: 1000,
            per_seq: 137,
            capacity: u64::MAX,
            measured: vec![],
        };
        let plan = MemoryPlan {
            limit: 11_000,
            fixed: 1000,
            per_sequence: 100,
        };
        let g = grow(&plan, plan.estimate().unwrap(), |b| fake.probe(b)).unwrap();
        check(&g, plan.limit);
        let best = ((plan.limit - fake.fixed) / fake.per_seq) as usize; // 72
        let got = g.points.last().unwrap().batch;
        assert!(got <= best && got + 2 >= best, "{got} vs {best}");
    }

    #[test]
    fn an_overestimate_grows_past_the_estimate() {
        // Each sequence costs half the estimate: the prediction from measured memory grows on.
        let mut fake = Fake {
            fixed: 1000,
            per_seq: 50,
            capacity: u64::MAX,
            measured: vec![],
        };
        let plan = MemoryPlan {
            limit: 6000,
            fixed: 1000,
            per_sequence: 50,
        };
        let g = grow(&plan, 10, |b| fake.probe(b)).unwrap();
        check(&g, plan.limit);
        assert_eq!(g.points.last().unwrap().batch, 100);
    }

    #[test]
    fn out_of_memory_ends_the_sweep_at_the_previous_batch() {
        // The device has less memory than the limit says: batch 16 fails to allocate.
        let mut fake = Fake {
            fixed: 1000,
            per_seq: 100,
            capacity: 2500,
            measured: vec![],
        };
        let plan = MemoryPlan {
            limit: 5000,
            fixed: 1000,
            per_sequence: 100,
        };
        let g = grow(&plan, plan.estimate().unwrap(), |b| fake.probe(b)).unwrap();
        check(&g, plan.limit);
        assert_eq!(g.points.last().unwrap().batch, 8);
        let note = g.note.unwrap();
        assert!(
            note.contains("batch 16 ran out of device memory")
                && note.contains("CUDA_ERROR_OUT_OF_MEMORY")
                && note.ends_with("the sweep ends at batch 8"),
            "{note}"
        );
        assert_eq!(fake.measured, vec![1, 2, 4, 8, 16]);

        // Out of memory in the refinement step keeps what was measured.
        let mut fake = Fake {
            fixed: 1000,
            per_seq: 100,
            capacity: 2750,
            measured: vec![],
        };
        let plan = MemoryPlan {
            limit: 2900,
            fixed: 1000,
            per_sequence: 50,
        };
        let g = grow(&plan, 16, |b| fake.probe(b)).unwrap();
        assert_eq!(g.points.last().unwrap().batch, 16);
        assert!(g.note.is_some_and(|n| n.ends_with("ends at batch 16")));

        // Even batch 1 failing is a note, not an error: the run goes on without points.
        let mut fake = Fake {
            fixed: 1000,
            per_seq: 100,
            capacity: 1050,
            measured: vec![],
        };
        let g = grow(&plan, 4, |b| fake.probe(b)).unwrap();
        assert!(g.points.is_empty());
        let note = g.note.unwrap();
        assert!(
            note.contains("batch 1 ran out") && note.ends_with("no batch fits"),
            "{note}"
        );
    }

    #[test]
    fn other_errors_end_the_run() {
        let plan = MemoryPlan {
            limit: 100,
            fixed: 0,
            per_sequence: 1,
        };
        let e = grow(&plan, 4, |_| anyhow::bail!("launch failed")).unwrap_err();
        assert!(e.to_string().contains("launch failed"));
    }

    #[test]
    fn out_of_memory_errors_are_recognised() {
        for m in [
            "CUDA driver: allocating device memory: DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")",
            "cuBLAS: gemm: CublasError(CUBLAS_STATUS_ALLOC_FAILED)",
            "kernel error in cuda: out of memory",
        ] {
            assert!(is_out_of_memory(m), "{m}");
        }
        for m in [
            "CUDA driver: launching: CUDA_ERROR_ILLEGAL_ADDRESS",
            "bad table",
        ] {
            assert!(!is_out_of_memory(m), "{m}");
        }
    }
}
