//! `bitnet-bench kernels`: GB/s and GOP/s of the ternary GEMV/GEMM on every CPU path at the
//! 2B-4T and 3B layer shapes, beside our dense f16 projection and the `gemm` crate's f32 and f16
//! GEMM on the same shapes.

use crate::timing::median_seconds;
use anyhow::{Context, Result};
use bitnet_kernels::cpu::CpuPath;
use bitnet_kernels::{Backend, CpuBackend, DenseData, DenseMatrix, TernaryMatrix};
use gemm::{gemm, Parallelism};
use half::f16;
use serde::Serialize;
use std::path::PathBuf;
use std::time::Duration;

/// Layer shapes `(model, name, out_features, in_features)`.
pub const SHAPES: [(&str, &str, usize, usize); 7] = [
    ("2b4t", "q/o", 2560, 2560),
    ("2b4t", "k/v", 640, 2560),
    ("2b4t", "gate/up", 6912, 2560),
    ("2b4t", "down", 2560, 6912),
    ("3b", "q/k/v/o", 3200, 3200),
    ("3b", "gate/up", 8640, 3200),
    ("3b", "down", 3200, 8640),
];

/// What to measure.
#[derive(Clone, Debug)]
pub struct KernelBenchOptions {
    pub threads: usize,
    /// Activation rows: 1 is a GEMV, more a GEMM.
    pub rows: Vec<usize>,
    pub json: Option<PathBuf>,
}

/// One measurement.
#[derive(Clone, Debug, Serialize)]
pub struct KernelResult {
    pub kernel: String,
    pub path: String,
    pub model: String,
    pub layer: String,
    pub out_features: usize,
    pub in_features: usize,
    pub n: usize,
    pub microseconds: f64,
    /// Weight bytes streamed per call / time.
    pub gb_s: f64,
    /// 2 · out · in · n / time.
    pub gop_s: f64,
}

pub(crate) fn result(
    kernel: &str,
    path: &str,
    shape: (&str, &str, usize, usize),
    n: usize,
    weight_bytes: usize,
    seconds: f64,
) -> KernelResult {
    let (model, layer, rows, cols) = shape;
    KernelResult {
        kernel: kernel.into(),
        path: path.into(),
        model: model.into(),
        layer: layer.into(),
        out_features: rows,
        in_features: cols,
        n,
        microseconds: seconds * 1e6,
        gb_s: weight_bytes as f64 / seconds / 1e9,
        gop_s: 2.0 * (rows * cols * n) as f64 / seconds / 1e9,
    }
}

/// Runs every kernel on every shape and prints a table.
pub fn run(opts: &KernelBenchOptions) -> Result<Vec<KernelResult>> {
    let min = Duration::from_millis(300);
    let mut results = Vec::new();
    println!(
        "{:<14} {:<11} {:<5} {:<8} {:>11} {:>4} {:>10} {:>8} {:>8}",
        "kernel", "path", "model", "layer", "out×in", "n", "µs", "GB/s", "GOP/s"
    );
    let mut print = |r: KernelResult| {
        println!(
            "{:<14} {:<11} {:<5} {:<8} {:>11} {:>4} {:>10.1} {:>8.1} {:>8.1}",
            r.kernel,
            r.path,
            r.model,
            r.layer,
            format!("{}×{}", r.out_features, r.in_features),
            r.n,
            r.microseconds,
            r.gb_s,
            r.gop_s
        );
        results.push(r);
    };
    for shape in SHAPES {
        let (_, _, rows, cols) = shape;
        let values: Vec<i8> = (0..rows * cols)
            .map(|i| ((i * 7 + i / 3) % 3) as i8 - 1)
            .collect();
        let ternary = TernaryMatrix::from_ternary(rows, cols, &values, 0.01)?;
        let ternary_bytes = ternary.packed().len();
        let f16_weights: Vec<f16> = values
            .iter()
            .map(|&v| f16::from_f32(v as f32 * 0.01))
            .collect();
        let f32_weights: Vec<f32> = values.iter().map(|&v| v as f32 * 0.01).collect();
        let dense = DenseMatrix::new(rows, cols, DenseData::F16(f16_weights.clone()))?;
        for &n in &opts.rows {
            let q: Vec<i8> = (0..n * cols).map(|i| ((i * 13) % 255) as i8).collect();
            let x: Vec<f32> = (0..n * cols)
                .map(|i| ((i % 17) as f32 - 8.0) * 0.1)
                .collect();
            let mut acc = vec![0i32; n * rows];
            let mut out = vec![0.0f32; n * rows];
            for path in CpuPath::available() {
                let backend = CpuBackend::with_path(path, opts.threads)?;
                let t = median_seconds(5, min, || {
                    backend
                        .ternary_matmul(&ternary, &q, &mut acc)
                        .expect("shapes match");
                });
                print(result(
                    "ternary i8×i2",
                    path.name(),
                    shape,
                    n,
                    ternary_bytes,
                    t,
                ));
                let t = median_seconds(3, min, || {
                    backend
                        .dense_matmul(&dense, &x, &mut out)
                        .expect("shapes match");
                });
                print(result(
                    "dense f16",
                    path.name(),
                    shape,
                    n,
                    rows * cols * 2,
                    t,
                ));
            }
            let parallelism = if opts.threads > 1 {
                Parallelism::Rayon(opts.threads)
            } else {
                Parallelism::None
            };
            let t = median_seconds(3, min, || {
                gemm_rows(&f32_weights, &x, &mut out, (n, rows, cols), parallelism)
            });
            print(result("gemm crate f32", "-", shape, n, rows * cols * 4, t));
            let x16: Vec<f16> = x.iter().map(|&v| f16::from_f32(v)).collect();
            let mut out16 = vec![f16::ZERO; n * rows];
            let t = median_seconds(3, min, || {
                gemm_rows(&f16_weights, &x16, &mut out16, (n, rows, cols), parallelism)
            });
            print(result("gemm crate f16", "-", shape, n, rows * cols * 2, t));
        }
    }
    if let Some(path) = &opts.json {
        let report = serde_json::json!({
            "kind": "kernels",
            "meta": crate::meta::RunMeta::now(),
            "threads": opts.threads,
            "results": &results,
        });
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(results)
}

/// `out[n, o] = Σ_k x[n, k] · W[o, k]` through the `gemm` crate (row-major W, x and out).
fn gemm_rows<T: Copy + 'static + From<i8>>(
    w: &[T],
    x: &[T],
    out: &mut [T],
    (n, rows, cols): (usize, usize, usize),
    parallelism: Parallelism,
) {
    assert!(w.len() == rows * cols && x.len() == n * cols && out.len() == n * rows);
    // SAFETY: the three buffers have exactly the extents the strides describe (checked above):
    // dst n×rows row-major, lhs n×cols row-major, rhs cols×rows read as W transposed.
    unsafe {
        gemm(
            n,
            rows,
            cols,
            out.as_mut_ptr(),
            1,
            rows as isize,
            false,
            x.as_ptr(),
            1,
            cols as isize,
            w.as_ptr(),
            cols as isize,
            1,
            T::from(0),
            T::from(1),
            false,
            false,
            false,
            parallelism,
        )
    }
}
