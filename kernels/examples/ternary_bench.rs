//! Ad hoc timing of the ternary kernels alone: GB/s of weights per GEMV and GOP/s per GEMM, per
//! path and thread count, next to a streaming-read bandwidth measured in the same run.
//!
//! `cargo run -p bitnet-kernels --release --example ternary_bench [-- --quick]`
//!
//! "cached" repeats one 4.4 MB matrix (it stays in L3); "streamed" cycles through 24 copies
//! (106 MB), so the weights come from DRAM as in a decode step. Every figure is the median of
//! several rounds that interleave all configurations, so a noisy neighbour hits them alike.
//! (`bitnet-bench kernels` is the maintained benchmark; this one isolates the kernels.)

use bitnet_kernels::cpu::{ternary, CpuBackend, CpuPath};
use bitnet_kernels::TernaryMatrix;
use std::collections::BTreeMap;
use std::time::Instant;

/// Deterministic pseudo-random 31-bit values.
fn lcg(seed: u64) -> impl FnMut() -> u64 {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    move || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        s >> 33
    }
}

fn matrix(rows: usize, cols: usize, seed: u64) -> TernaryMatrix {
    let mut next = lcg(seed);
    let values: Vec<i8> = (0..rows * cols).map(|_| (next() % 3) as i8 - 1).collect();
    TernaryMatrix::from_ternary(rows, cols, &values, 1.0).unwrap()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Median seconds per call of `f` over `reps` calls after a short warm-up.
fn time(reps: usize, mut f: impl FnMut(usize)) -> f64 {
    for i in 0..reps.min(5) {
        f(i);
    }
    let mut samples: Vec<f64> = (0..reps)
        .map(|i| {
            let t = Instant::now();
            f(i);
            t.elapsed().as_secs_f64()
        })
        .collect();
    median(&mut samples)
}

/// Streaming read bandwidth (GB/s) of `threads` threads over `buf`.
fn read_bandwidth(buf: &[u64], threads: usize) -> f64 {
    let secs = time(5, |_| {
        std::thread::scope(|s| {
            let hs: Vec<_> = buf
                .chunks(buf.len().div_ceil(threads))
                .map(|c| s.spawn(move || c.iter().fold(0u64, |a, &x| a ^ x)))
                .collect();
            let x = hs.into_iter().fold(0, |a, h| a ^ h.join().unwrap());
            std::hint::black_box(x);
        })
    });
    std::mem::size_of_val(buf) as f64 / secs / 1e9
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (rounds, reps) = if quick { (3, 40) } else { (7, 120) };
    let buf: Vec<u64> = (0..(1u64 << 27)).collect(); // 1 GiB
    let backends: Vec<(CpuPath, usize, CpuBackend)> = CpuPath::available()
        .into_iter()
        .flat_map(|p| [1, 2].map(|t| (p, t, CpuBackend::with_path(p, t).unwrap())))
        .collect();
    let shapes = [(6912usize, 2560usize), (2560, 6912)];
    let mats: Vec<Vec<TernaryMatrix>> = shapes
        .iter()
        .map(|&(r, c)| (0..24).map(|i| matrix(r, c, i)).collect())
        .collect();
    let mut next = lcg(99);
    let q: Vec<i8> = (0..64 * 6912).map(|_| next() as u8 as i8).collect();
    let mut acc = vec![0i32; 64 * 6912];
    // (label, metric) -> samples over rounds
    let mut results: BTreeMap<(String, &str), Vec<f64>> = BTreeMap::new();
    for round in 0..rounds {
        eprintln!("round {}/{rounds}", round + 1);
        for t in [1, 2] {
            let label = format!("read bandwidth t={t}");
            let bw = read_bandwidth(&buf, t);
            results.entry((label, "GB/s")).or_default().push(bw);
        }
        for (&(rows, cols), copies) in shapes.iter().zip(&mats) {
            let bytes = copies[0].packed().len() as f64;
            for (path, threads, cpu) in &backends {
                let label = format!("{rows}x{cols} {:<10} t={threads}", path.name());
                let gemv = |i: usize, acc: &mut [i32]| {
                    ternary::matmul(cpu, &copies[i % 24], &q[..cols], &mut acc[..rows])
                };
                let (fast, slow_reps) = if *path == CpuPath::Scalar {
                    (reps / 10, 2)
                } else {
                    (reps, 1)
                };
                let cached = time(fast, |_| gemv(0, &mut acc));
                let streamed = time(fast, |i| gemv(i, &mut acc));
                let mut push = |m, v| results.entry((label.clone(), m)).or_default().push(v);
                push("GEMV cached GB/s", bytes / cached / 1e9);
                push("GEMV streamed GB/s", bytes / streamed / 1e9);
                for n in [16, 64] {
                    let secs = time(fast / 10 + slow_reps, |_| {
                        ternary::matmul(cpu, &copies[0], &q[..n * cols], &mut acc[..n * rows])
                    });
                    let m = if n == 16 { "n=16 GOP/s" } else { "n=64 GOP/s" };
                    push(m, 2.0 * (n * rows * cols) as f64 / secs / 1e9);
                }
                if *threads > 1 && *path != CpuPath::Scalar {
                    // The same GEMV with the caller on a pool thread (a forward pass run inside
                    // `pool().install`): no hand-off from outside the pool.
                    let label = format!("{rows}x{cols} {:<10} t={threads} in pool", path.name());
                    let (cached, streamed) = cpu.pool().install(|| {
                        let mut acc = vec![0i32; rows];
                        (
                            time(fast, |_| gemv(0, &mut acc)),
                            time(fast, |i| gemv(i, &mut acc)),
                        )
                    });
                    let mut push = |m, v| results.entry((label.clone(), m)).or_default().push(v);
                    push("GEMV cached GB/s", bytes / cached / 1e9);
                    push("GEMV streamed GB/s", bytes / streamed / 1e9);
                }
            }
        }
    }
    let mut lines: BTreeMap<String, String> = BTreeMap::new();
    for ((label, metric), mut v) in results {
        let line = lines.entry(label).or_default();
        line.push_str(&format!("  {metric} {:7.1}", median(&mut v)));
    }
    for (label, line) in lines {
        println!("{label:<34}{line}");
    }
}
