//! Ad hoc timing of the row and element ops per CPU path at the 2B-4T shapes (hidden 2560,
//! ffn 6912, 20 query / 5 kv heads of 128): µs per call, median of many calls, for decode
//! (one token) and attention over a few context lengths.
//!
//! `cargo run -p bitnet-kernels --release --example ops_bench`

use bitnet_kernels::cpu::{CpuBackend, CpuPath};
use bitnet_kernels::{AttentionShape, Backend};
use std::time::Instant;

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

/// Median microseconds per call of `f`.
fn micros(reps: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..reps.min(10) {
        f();
    }
    let mut v: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let (hidden, ffn, heads, kv, hd) = (2560, 6912, 20, 5, 128);
    let x = values(hidden, 1);
    let w = values(hidden, 2);
    let (g, u) = (values(ffn, 3), values(ffn, 4));
    for path in CpuPath::available() {
        for threads in [1, 2] {
            let b = CpuBackend::with_path(path, threads).unwrap();
            let name = format!("{} ×{threads}", path.name());
            let mut out = vec![0.0f32; ffn];
            let t_norm = micros(2001, || {
                b.rms_norm(&x, Some(&w), 1e-6, hidden, &mut out[..hidden])
                    .unwrap()
            });
            let (mut q8, mut s) = (vec![0i8; ffn], [0.0f32]);
            let t_quant = micros(2001, || b.quantize_rows(&g, ffn, &mut q8, &mut s).unwrap());
            let t_silu = micros(2001, || b.silu_mul(&g, &u, &mut out).unwrap());
            let mut qk = values((heads + kv) * hd, 5);
            let t_rope = micros(2001, || {
                b.rope(&mut qk, &[1234], heads + kv, hd, 5e5).unwrap()
            });
            println!(
                "{name:<14} rms_norm {t_norm:7.2} µs  quantize {t_quant:7.2} µs  \
                 silu_mul {t_silu:7.2} µs  rope(q+k) {t_rope:7.2} µs"
            );
            for (n_queries, ctx_len) in [(1, 512), (1, 2048), (128, 128)] {
                let shape = AttentionShape {
                    n_heads: heads,
                    n_kv_heads: kv,
                    head_dim: hd,
                    n_queries,
                    ctx_len,
                };
                let q = values(n_queries * heads * hd, 6);
                let k = values(ctx_len * kv * hd, 7);
                let v = values(ctx_len * kv * hd, 8);
                let mut o = vec![0.0f32; q.len()];
                let reps = if path == CpuPath::Scalar { 21 } else { 201 };
                let t = micros(reps, || b.attention(&shape, &q, &k, &v, &mut o).unwrap());
                println!("{name:<14} attention q={n_queries} ctx={ctx_len}: {t:9.1} µs");
            }
        }
    }
}
