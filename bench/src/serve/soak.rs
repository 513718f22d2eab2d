//! A soak run: `concurrency` request loops kept busy for a fixed time (closed loop, prompts
//! cycled), while the servers' resident memory is sampled; the least-squares slope of that
//! series says whether memory grows under steady load. The slope is reported over the whole
//! run and over the steady part after a warm-up (the first [`WARMUP_FRACTION`] of the run,
//! at least [`WARMUP_MIN_S`]), in which the KV pool's pages are first touched.

use super::load::one_request;
use super::metrics::RequestRecord;
use super::workload::WorkItem;
use crate::memory::resident_bytes_of_tree;
use bitnet_client::Client;
use serde::Serialize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Share of a soak run counted as warm-up for the steady slope.
pub const WARMUP_FRACTION: f64 = 0.1;
/// Shortest warm-up, seconds.
pub const WARMUP_MIN_S: f64 = 30.0;

/// Resident memory samples `(seconds, bytes)` and their slope.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RssSeries {
    /// Which process tree was sampled ("not sampled" without a known server process).
    pub process: String,
    pub samples: Vec<(f64, u64)>,
    /// Least-squares slope in MiB per minute (0 with fewer than two samples).
    pub slope_mib_per_min: f64,
    /// The same over the samples after the warm-up.
    pub steady_slope_mib_per_min: f64,
    pub warmup_s: f64,
}

impl RssSeries {
    fn new(process: String, samples: Vec<(f64, u64)>) -> Self {
        let per_min = |s: &[(f64, u64)]| slope(s) * 60.0 / (1u64 << 20) as f64;
        let warmup_s = warmup_of(&samples);
        let steady: Vec<(f64, u64)> = samples
            .iter()
            .copied()
            .filter(|s| s.0 >= warmup_s)
            .collect();
        Self {
            process,
            slope_mib_per_min: per_min(&samples),
            steady_slope_mib_per_min: per_min(&steady),
            warmup_s,
            samples,
        }
    }

    pub fn first_mib(&self) -> f64 {
        self.samples
            .first()
            .map_or(0.0, |s| s.1 as f64 / (1u64 << 20) as f64)
    }

    pub fn last_mib(&self) -> f64 {
        self.samples
            .last()
            .map_or(0.0, |s| s.1 as f64 / (1u64 << 20) as f64)
    }

    pub fn span_s(&self) -> f64 {
        match (self.samples.first(), self.samples.last()) {
            (Some(a), Some(b)) => b.0 - a.0,
            _ => 0.0,
        }
    }
}

/// The warm-up of a series: [`WARMUP_FRACTION`] of its span, at least [`WARMUP_MIN_S`].
pub fn warmup_of(samples: &[(f64, u64)]) -> f64 {
    let span = samples.last().map_or(0.0, |s| s.0);
    (span * WARMUP_FRACTION).max(WARMUP_MIN_S.min(span / 2.0))
}

/// Least-squares slope of `y` over `x` (bytes per second).
pub fn slope(samples: &[(f64, u64)]) -> f64 {
    let n = samples.len() as f64;
    if samples.len() < 2 {
        return 0.0;
    }
    let mx = samples.iter().map(|s| s.0).sum::<f64>() / n;
    let my = samples.iter().map(|s| s.1 as f64).sum::<f64>() / n;
    let sxy: f64 = samples.iter().map(|s| (s.0 - mx) * (s.1 as f64 - my)).sum();
    let sxx: f64 = samples.iter().map(|s| (s.0 - mx).powi(2)).sum();
    if sxx > 0.0 {
        sxy / sxx
    } else {
        0.0
    }
}

/// Keeps `concurrency` requests in flight for `duration`, sampling the resident memory of
/// process tree `pid` every `interval`; returns the records, the run's duration and the series.
pub async fn run_soak(
    client: &Client,
    items: &[WorkItem],
    concurrency: usize,
    duration: Duration,
    pid: Option<u32>,
    interval: Duration,
) -> (Vec<RequestRecord>, f64, RssSeries) {
    let start = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let items: Arc<[WorkItem]> = items.into();
    let mut loops = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (client, next, items) = (client.clone(), next.clone(), items.clone());
        loops.push(tokio::spawn(async move {
            let mut records = Vec::new();
            while start.elapsed() < duration {
                let i = next.fetch_add(1, Ordering::Relaxed);
                records.push(one_request(&client, items[i % items.len()].clone(), start).await);
            }
            records
        }));
    }
    let mut samples = Vec::new();
    if let Some(pid) = pid {
        let mut tick = tokio::time::interval(interval);
        while start.elapsed() < duration {
            tick.tick().await;
            samples.push((start.elapsed().as_secs_f64(), resident_bytes_of_tree(pid)));
        }
    }
    let mut records = Vec::new();
    for l in loops {
        records.extend(l.await.unwrap_or_default());
    }
    let elapsed = start.elapsed().as_secs_f64();
    let process = pid.map_or("not sampled (no server process known)".into(), |p| {
        format!("pid {p} and its children")
    });
    (records, elapsed, RssSeries::new(process, samples))
}

#[cfg(test)]
mod tests {
    #[test]
    fn slope_is_least_squares() {
        let flat = [(0.0, 100), (1.0, 100), (2.0, 100)];
        assert_eq!(super::slope(&flat), 0.0);
        let rising = [(0.0, 0), (1.0, 10), (2.0, 20), (3.0, 30)];
        assert!((super::slope(&rising) - 10.0).abs() < 1e-12);
        let s = super::RssSeries::new("x".into(), vec![(0.0, 0), (60.0, 1 << 20)]);
        assert!((s.slope_mib_per_min - 1.0).abs() < 1e-12);
        // A jump while the pool is first touched, then flat: only the whole-run slope sees it.
        let mut samples = vec![(0.0, 0u64)];
        samples.extend((1..=60).map(|i| (i as f64 * 10.0, 300u64 << 20)));
        let s = super::RssSeries::new("x".into(), samples);
        assert_eq!(s.warmup_s, 60.0);
        assert!(s.slope_mib_per_min > 1.0 && s.steady_slope_mib_per_min.abs() < 1e-9);
    }
}
