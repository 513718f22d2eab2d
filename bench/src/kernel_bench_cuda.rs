//! `bitnet-bench kernels --device cuda` (feature `cuda`): the ternary GEMV/GEMM kernels of
//! `CudaBackend` on device buffers (no host copies in the timed loop) beside cuBLAS on the same
//! shapes in f16 and bf16, at the layer shapes of [`crate::kernel_bench::SHAPES`], with the
//! device copy bandwidth measured in the same run (the issue-6 goals: ternary GEMV at ≥ 70 % of
//! it and ≥ 6× cuBLAS BF16 GEMV). Every timed call ends with a stream synchronize.

use crate::kernel_bench::{result, KernelBenchOptions, KernelResult, SHAPES};
use crate::timing::median_seconds;
use anyhow::{anyhow, Context, Result};
use bitnet_kernels::cuda::CudaBackend;
use bitnet_kernels::{DenseData, DenseMatrix, TernaryMatrix};
use half::{bf16, f16};
use std::time::Duration;

/// Runs every kernel on every shape on visible device 0 and prints a table.
pub fn run(opts: &KernelBenchOptions) -> Result<Vec<KernelResult>> {
    let backend = CudaBackend::new().context("--device cuda")?;
    let copy_gb_s = crate::bandwidth::device_copy_bandwidth_gb_s(&backend, 5)?;
    println!(
        "{} ({}): device copy bandwidth {copy_gb_s:.1} GB/s",
        backend.device_name(),
        backend.arch()
    );
    let stream = backend.stream().clone();
    let dev = |e: cudarc::driver::DriverError| anyhow!("CUDA: {e:?}");
    let min = Duration::from_millis(300);
    let mut results = Vec::new();
    for shape in SHAPES {
        let (_, _, rows, cols) = shape;
        let values: Vec<i8> = (0..rows * cols)
            .map(|i| ((i * 7 + i / 3) % 3) as i8 - 1)
            .collect();
        let ternary = TernaryMatrix::from_ternary(rows, cols, &values, 0.01)?;
        let w = backend.device_ternary(&ternary)?;
        let f16_m = DenseMatrix::new(
            rows,
            cols,
            DenseData::F16(
                values
                    .iter()
                    .map(|&v| f16::from_f32(v as f32 * 0.01))
                    .collect(),
            ),
        )?;
        let bf16_m = DenseMatrix::new(
            rows,
            cols,
            DenseData::BF16(
                values
                    .iter()
                    .map(|&v| bf16::from_f32(v as f32 * 0.01))
                    .collect(),
            ),
        )?;
        let (w16, wb16) = (
            backend.device_dense(&f16_m)?,
            backend.device_dense(&bf16_m)?,
        );
        for &n in &opts.rows {
            let q: Vec<i8> = (0..n * w.padded_cols())
                .map(|i| ((i * 13) % 255) as i8)
                .collect();
            let q = stream.clone_htod(&q).map_err(dev)?;
            let mut acc = stream.alloc_zeros::<i32>(n * rows).map_err(dev)?;
            let x: Vec<f32> = (0..n * cols)
                .map(|i| ((i % 17) as f32 - 8.0) * 0.1)
                .collect();
            let x = stream.clone_htod(&x).map_err(dev)?;
            let mut out = stream.alloc_zeros::<f32>(n * rows).map_err(dev)?;
            let mut failed = None;
            let t = median_seconds(5, min, || {
                let run = backend.ops().ternary_matmul(&w, &q, n, &mut acc);
                if let Err(e) = run.and_then(|()| backend.synchronize()) {
                    failed.get_or_insert(e);
                }
            });
            let ternary_bytes = ternary.packed().len();
            results.push(result("ternary i8×i2", "cuda", shape, n, ternary_bytes, t));
            for (name, m) in [("cublas f16", &w16), ("cublas bf16", &wb16)] {
                let t = median_seconds(3, min, || {
                    let run = backend.dense_matmul_device(m, &x, n, &mut out);
                    if let Err(e) = run.and_then(|()| backend.synchronize()) {
                        failed.get_or_insert(e);
                    }
                });
                results.push(result(name, "cuda", shape, n, rows * cols * 2, t));
            }
            if let Some(e) = failed {
                return Err(anyhow!("{e}"));
            }
        }
    }
    println!(
        "{:<14} {:<5} {:<8} {:>11} {:>4} {:>10} {:>8} {:>8} {:>8}",
        "kernel", "model", "layer", "out×in", "n", "µs", "GB/s", "of copy", "GOP/s"
    );
    for r in &results {
        println!(
            "{:<14} {:<5} {:<8} {:>11} {:>4} {:>10.1} {:>8.1} {:>7.1}% {:>8.1}",
            r.kernel,
            r.model,
            r.layer,
            format!("{}×{}", r.out_features, r.in_features),
            r.n,
            r.microseconds,
            r.gb_s,
            100.0 * r.gb_s / copy_gb_s,
            r.gop_s
        );
    }
    if let Some(path) = &opts.json {
        let report = serde_json::json!({
            "kind": "kernels",
            "meta": crate::meta::RunMeta::now(),
            "device": format!("cuda ({})", backend.device_name()),
            "arch": backend.arch(),
            "device_copy_gb_s": copy_gb_s,
            "results": &results,
        });
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(results)
}
