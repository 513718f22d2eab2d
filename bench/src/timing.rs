//! Timing helpers: a warm-up, then repeated runs until both a minimum count and a minimum time
//! are reached; the median is reported.

use std::time::{Duration, Instant};

/// Median seconds of `f` over at least `min_runs` runs and `min_time` in total (one warm-up run
/// first, not counted).
pub fn median_seconds(min_runs: usize, min_time: Duration, mut f: impl FnMut()) -> f64 {
    f();
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < min_runs || start.elapsed() < min_time {
        let t = Instant::now();
        f();
        times.push(t.elapsed().as_secs_f64());
        if times.len() >= 10_000 {
            break;
        }
    }
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}
