//! Ad hoc timing of the dense projections (`dense_matmul`): GB/s of weights read per GEMV at the
//! LM-head shape (128256 × 2560) and a layer shape (2560 × 2560), f16 / bf16 (and f32, int8),
//! per path and thread count, median of many calls, next to a streaming-read bandwidth measured
//! in the same run. With `--batch`, also GEMM GFLOP/s at n = 4, 16, 64 on the layer shape.
//!
//! `cargo run -p bitnet-kernels --release --example dense_bench -- [--quick] [--batch]
//! [--dtype f16|bf16|f32|int8 ...]`

use bitnet_kernels::cpu::{CpuBackend, CpuPath};
use bitnet_kernels::{Backend, DenseData, DenseMatrix};
use half::{bf16, f16};
use std::time::Instant;

/// Deterministic values in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005) | 1;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Median seconds per call of `f` over `reps` calls after a warm-up.
fn time(reps: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..reps.clamp(1, 5) {
        f();
    }
    median(
        (0..reps)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

/// Streaming read bandwidth (GB/s) of `threads` threads over a 1 GiB buffer.
fn read_bandwidth(threads: usize) -> f64 {
    let words = (1usize << 30) / 8;
    let buf: Vec<u64> = (0..words as u64).collect();
    let chunk = words.div_ceil(threads);
    let secs = time(7, || {
        std::thread::scope(|s| {
            let hs: Vec<_> = buf
                .chunks(chunk)
                .map(|c| s.spawn(move || c.iter().fold(0u64, |a, &x| a ^ x)))
                .collect();
            let x = hs.into_iter().fold(0, |a, h| a ^ h.join().unwrap());
            std::hint::black_box(x);
        })
    });
    (words * 8) as f64 / secs / 1e9
}

fn matrix(dtype: &str, rows: usize, cols: usize) -> DenseMatrix {
    let v = values(rows * cols, rows as u64);
    let data = match dtype {
        "f32" | "int8" => DenseData::F32(v),
        "f16" => DenseData::F16(v.iter().map(|&x| f16::from_f32(x)).collect()),
        _ => DenseData::BF16(v.iter().map(|&x| bf16::from_f32(x)).collect()),
    };
    let m = DenseMatrix::new(rows, cols, data).unwrap();
    if dtype == "int8" {
        m.to_int8()
    } else {
        m
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let batch = args.iter().any(|a| a == "--batch");
    let chosen: Vec<&str> = args
        .windows(2)
        .filter(|w| w[0] == "--dtype")
        .map(|w| w[1].as_str())
        .collect();
    let dtypes: &[&str] = if !chosen.is_empty() {
        &chosen
    } else if quick {
        &["f16", "bf16"]
    } else {
        &["f16", "bf16", "f32", "int8"]
    };
    for threads in [1, 2] {
        println!(
            "read bandwidth, {threads} thread(s): {:.1} GB/s",
            read_bandwidth(threads)
        );
    }
    println!(
        "{:<12} {:>6} {:>16} {:>8} {:>10} {:>10}",
        "path", "dtype", "shape", "threads", "median ms", "GB/s"
    );
    for (rows, cols, reps) in [(128256usize, 2560usize, 21usize), (2560, 2560, 301)] {
        for &dtype in dtypes {
            let w = matrix(dtype, rows, cols);
            let x = values(cols, 7);
            let mut out = vec![0.0f32; rows];
            for path in CpuPath::available().into_iter().rev() {
                if quick && path == CpuPath::Scalar {
                    continue;
                }
                for threads in [1, 2] {
                    let b = CpuBackend::with_path(path, threads).unwrap();
                    let reps = if path == CpuPath::Scalar { 3 } else { reps };
                    let secs = time(reps, || b.dense_matmul(&w, &x, &mut out).unwrap());
                    println!(
                        "{:<12} {:>6} {:>16} {:>8} {:>10.3} {:>10.1}",
                        path.name(),
                        dtype,
                        format!("{rows}x{cols}"),
                        threads,
                        secs * 1e3,
                        w.memory_bytes() as f64 / secs / 1e9
                    );
                }
            }
        }
    }
    if batch {
        for (rows, cols, ns) in [
            (128256usize, 2560usize, &[4usize, 16][..]),
            (2560, 2560, &[4, 16, 64]),
        ] {
            for &dtype in dtypes {
                let w = matrix(dtype, rows, cols);
                for &n in ns {
                    let x = values(n * cols, 9);
                    let mut out = vec![0.0f32; n * rows];
                    let b = CpuBackend::new(2);
                    let reps = if rows > 100_000 { 9 } else { 51 };
                    let secs = time(reps, || b.dense_matmul(&w, &x, &mut out).unwrap());
                    println!(
                        "{} {dtype} {rows}x{cols} n={n} 2 threads: {:.3} ms, {:.1} GB/s of weights, \
                         {:.1} GFLOP/s",
                        b.path().name(),
                        secs * 1e3,
                        w.memory_bytes() as f64 / secs / 1e9,
                        2.0 * (rows * cols * n) as f64 / secs / 1e9
                    );
                }
            }
        }
    }
}
