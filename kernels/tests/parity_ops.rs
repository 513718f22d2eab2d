//! Parity of the CPU backend's row/element ops and dense projections with the scalar reference
//! (`bitnet_kernels::reference`), on every [`CpuPath`] this processor has, each with 1 and 3
//! threads (3 exercises uneven splits of rows and attention groups).
//!
//! Shapes are odd on purpose (cols 7, 96, 769, 2560; n 1, 3, 17, and 64 at 2560 columns for the
//! activation-block split and the threaded element-wise ops; heads/kv 20/5 and 4/4; head_dim
//! 128 and 24; contexts 1, 33, 300). Tolerances, per op:
//! - exact: embedding (every dtype), RMSNorm and LayerNorm (f64 sums of the same terms: only
//!   their order differs, see `cpu::ops`), quantize_rows (`q` and `s`), dequantize_rows, RoPE,
//!   scale_columns, relu2_mul, add_assign, and matching errors on bad shapes;
//! - dense_matmul (f32/f16/bf16/int8): `|Δ| ≤ 4 · √cols · 2⁻²⁴ · Σ_k |x_k · w_k|` (float
//!   reassociation: a missed or doubled term would be ~Σ/cols, far outside);
//! - silu_mul: `|Δ| ≤ 4e-6 · |ref| + 1e-30` (vectorized `exp`);
//! - attention: `|Δ| ≤ 1e-5 · max|v|` (reassociated dot products, vectorized `exp`).
//!
//! Prints `parity_ops: path <name>: <N> cases` per path and fails when an available path ran
//! none.

use bitnet_kernels::cpu::CpuPath;
use bitnet_kernels::reference;
use bitnet_kernels::{AttentionShape, Backend, CpuBackend, DenseData, DenseMatrix, KernelError};
use half::{bf16, f16};
use std::collections::BTreeMap;

const COLS: [usize; 4] = [7, 96, 769, 2560];
const NS: [usize; 3] = [1, 3, 17];

/// Rows per case at `cols`: [`NS`], plus 64 at 2560 columns, large enough
/// (≥ `cpu::ops::PARALLEL_MIN_ELEMENTS`) for the row-wise and element-wise ops to split over
/// the threads.
fn ns(cols: usize) -> Vec<usize> {
    let mut ns = NS.to_vec();
    if cols == 2560 {
        ns.push(64);
    }
    ns
}

/// Deterministic values in [-1, 1) (64-bit LCG, top bits).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn f32(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn vec(&mut self, n: usize, amplitude: f32) -> Vec<f32> {
        (0..n).map(|_| self.f32() * amplitude).collect()
    }
}

/// Every backend under test with the cases it passed and every failure, by case name.
struct Parity {
    backends: Vec<(String, CpuPath, CpuBackend)>,
    cases: BTreeMap<CpuPath, usize>,
    failures: Vec<String>,
}

impl Parity {
    fn new() -> Self {
        let mut backends = Vec::new();
        for path in CpuPath::available() {
            for threads in [1, 3] {
                let b = CpuBackend::with_path(path, threads).expect("available path");
                backends.push((format!("{} ×{threads}", path.name()), path, b));
            }
        }
        Parity {
            backends,
            cases: BTreeMap::new(),
            failures: Vec::new(),
        }
    }

    /// Runs `op` on every backend and checks it against `want` within `tol(i, want[i])`.
    fn floats(
        &mut self,
        case: &str,
        want: &[f32],
        tol: impl Fn(usize, f32) -> f32,
        op: impl Fn(&CpuBackend) -> Result<Vec<f32>, KernelError>,
    ) {
        for (name, path, b) in &self.backends {
            *self.cases.entry(*path).or_default() += 1;
            let got = match op(b) {
                Ok(got) => got,
                Err(e) => {
                    self.failures.push(format!("{name}: {case}: error {e}"));
                    continue;
                }
            };
            let bad = (0..want.len()).find(|&i| {
                let (g, w) = (got[i], want[i]);
                !(g.to_bits() == w.to_bits() || (g - w).abs() <= tol(i, w))
            });
            if let Some(i) = bad {
                self.failures.push(format!(
                    "{name}: {case}: [{i}] got {} want {} (tolerance {:e})",
                    got[i],
                    want[i],
                    tol(i, want[i])
                ));
            }
        }
    }

    /// Runs `op` on every backend and requires exactly `want` (values or error).
    fn exact<T: PartialEq + std::fmt::Debug>(
        &mut self,
        case: &str,
        want: &Result<T, KernelError>,
        op: impl Fn(&CpuBackend) -> Result<T, KernelError>,
    ) {
        for (name, path, b) in &self.backends {
            *self.cases.entry(*path).or_default() += 1;
            let got = op(b);
            if &got != want {
                let brief = |r: &Result<T, KernelError>| match r {
                    Ok(v) => format!("{:.200}", format!("{v:?}")),
                    Err(e) => format!("error {e}"),
                };
                self.failures.push(format!(
                    "{name}: {case}: got {} want {}",
                    brief(&got),
                    brief(want)
                ));
            }
        }
    }
}

fn dense_data(dtype: &str, v: &[f32]) -> DenseData {
    match dtype {
        "f32" => DenseData::F32(v.to_vec()),
        "f16" => DenseData::F16(v.iter().map(|&x| f16::from_f32(x)).collect()),
        _ => DenseData::BF16(v.iter().map(|&x| bf16::from_f32(x)).collect()),
    }
}

fn check_dense(p: &mut Parity, rng: &mut Rng) {
    let shapes = [(7, 7), (33, 96), (129, 769), (300, 2560)];
    for dtype in ["f32", "f16", "bf16", "int8"] {
        for (rows, cols) in shapes {
            let base = DenseMatrix::new(rows, cols, dense_data(dtype, &rng.vec(rows * cols, 1.0)))
                .unwrap();
            let w = if dtype == "int8" {
                base.to_int8()
            } else {
                base
            };
            let mut widened = vec![0.0f32; rows * cols];
            for (r, row) in widened.chunks_exact_mut(cols).enumerate() {
                w.row_into(r, row);
            }
            // n = 64 at 2560 columns crosses an activation block (48 rows fit half of L2).
            let extra: &[usize] = if cols == 2560 { &[64] } else { &[] };
            for &n in NS.iter().chain(extra) {
                let x = rng.vec(n * cols, 2.0);
                let mut want = vec![0.0f32; n * rows];
                reference::dense_matmul(&w, &x, &mut want).unwrap();
                let bound: Vec<f32> = (0..n * rows)
                    .map(|i| {
                        let (t, o) = (i / rows, i % rows);
                        let xr = &x[t * cols..][..cols];
                        let wr = &widened[o * cols..][..cols];
                        let abs: f32 = xr.iter().zip(wr).map(|(a, b)| (a * b).abs()).sum();
                        4.0 * (cols as f32).sqrt() * f32::EPSILON / 2.0 * abs + 1e-30
                    })
                    .collect();
                let case = format!("dense_matmul {dtype} {rows}x{cols} n={n}");
                if dtype == "int8" {
                    // Exact i32 sums and the same two float operations on every path.
                    p.exact(&case, &Ok(want), |b| {
                        let mut out = vec![f32::NAN; n * rows];
                        b.dense_matmul(&w, &x, &mut out).map(|_| out)
                    });
                    continue;
                }
                p.floats(
                    &case,
                    &want,
                    |i, _| bound[i],
                    |b| {
                        let mut out = vec![f32::NAN; n * rows];
                        b.dense_matmul(&w, &x, &mut out).map(|_| out)
                    },
                );
            }
        }
    }
}

fn check_embedding(p: &mut Parity, rng: &mut Rng) {
    for dtype in ["f32", "f16", "bf16", "int8"] {
        for cols in COLS {
            let vocab = 11;
            let base =
                DenseMatrix::new(vocab, cols, dense_data(dtype, &rng.vec(vocab * cols, 3.0)));
            let base = base.unwrap();
            let table = if dtype == "int8" {
                base.to_int8()
            } else {
                base
            };
            for ids in [vec![0u32], vec![10, 3, 3, 7], vec![1, 11]] {
                let case = format!("embedding {dtype} cols={cols} ids={ids:?}");
                let mut out = vec![0.0f32; ids.len() * cols];
                let want = reference::embedding(&table, &ids, &mut out).map(|_| out);
                p.exact(&case, &want, |b| {
                    let mut out = vec![0.0f32; ids.len() * cols];
                    b.embedding(&table, &ids, &mut out).map(|_| out)
                });
            }
        }
    }
}

fn check_norms(p: &mut Parity, rng: &mut Rng) {
    for cols in COLS {
        for n in ns(cols) {
            let x = rng.vec(n * cols, 3.0);
            let weight = rng.vec(cols, 1.5);
            for w in [None, Some(&weight[..])] {
                let case = format!("rms_norm cols={cols} n={n} weight={}", w.is_some());
                let mut out = vec![0.0f32; n * cols];
                let want = reference::rms_norm(&x, w, 1e-6, cols, &mut out).map(|_| out);
                p.exact(&case, &want, |b| {
                    let mut out = vec![0.0f32; n * cols];
                    b.rms_norm(&x, w, 1e-6, cols, &mut out).map(|_| out)
                });
            }
            let shifted: Vec<f32> = x.iter().map(|v| v + 0.75).collect();
            let case = format!("layer_norm cols={cols} n={n}");
            let mut out = vec![0.0f32; n * cols];
            let want = reference::layer_norm(&shifted, 1e-5, cols, &mut out).map(|_| out);
            p.exact(&case, &want, |b| {
                let mut out = vec![0.0f32; n * cols];
                b.layer_norm(&shifted, 1e-5, cols, &mut out).map(|_| out)
            });
        }
    }
    let x = rng.vec(10, 1.0);
    let mut out = vec![0.0f32; 10];
    let want = reference::rms_norm(&x, None, 1e-6, 3, &mut out).map(|_| out);
    p.exact("rms_norm 10 values in rows of 3 (error)", &want, |b| {
        let mut out = vec![0.0f32; 10];
        b.rms_norm(&x, None, 1e-6, 3, &mut out).map(|_| out)
    });
}

fn check_quantization(p: &mut Parity, rng: &mut Rng) {
    for cols in COLS {
        for n in ns(cols) {
            let mut x = rng.vec(n * cols, 4.0);
            // Row 0: absmax 127/64 makes s = 64 exactly, so (j + 0.5) / 64 lands on ties.
            for (j, v) in x[..cols].iter_mut().enumerate() {
                *v = (j as f32 % 254.0 - 127.0 + 0.5) / 64.0;
            }
            x[0] = 127.0 / 64.0;
            if n > 1 {
                x[cols..2 * cols].fill(0.0);
            }
            let case = format!("quantize_rows cols={cols} n={n}");
            let (mut q, mut s) = (vec![0i8; n * cols], vec![0.0f32; n]);
            let want = reference::quantize_rows(&x, cols, &mut q, &mut s).map(|_| (q, s));
            p.exact(&case, &want, |b| {
                let (mut q, mut s) = (vec![0i8; n * cols], vec![0.0f32; n]);
                b.quantize_rows(&x, cols, &mut q, &mut s).map(|_| (q, s))
            });
            let acc: Vec<i32> = (0..n * cols)
                .map(|i| ((rng.f32() * 2e6) as i32).wrapping_add(i as i32))
                .collect();
            let scales = rng
                .vec(n, 50.0)
                .iter()
                .map(|s| s.abs() + 1.0)
                .collect::<Vec<_>>();
            let case = format!("dequantize_rows cols={cols} n={n}");
            let mut out = vec![0.0f32; n * cols];
            let want = reference::dequantize_rows(&acc, 0.37, &scales, &mut out).map(|_| out);
            p.exact(&case, &want, |b| {
                let mut out = vec![0.0f32; n * cols];
                b.dequantize_rows(&acc, 0.37, &scales, &mut out)
                    .map(|_| out)
            });
        }
    }
}

fn check_elementwise(p: &mut Parity, rng: &mut Rng) {
    for cols in COLS {
        for n in ns(cols) {
            let len = n * cols;
            let (mut g, u) = (rng.vec(len, 6.0), rng.vec(len, 2.0));
            // Saturating gates: exp overflows or underflows in the reference.
            g[0] = -100.0;
            g[len - 1] = 95.0;
            let mut out = vec![0.0f32; len];
            let want = reference::silu_mul(&g, &u, &mut out).map(|_| out).unwrap();
            let case = format!("silu_mul cols={cols} n={n}");
            p.floats(
                &case,
                &want,
                |_, w| 4e-6 * w.abs() + 1e-30,
                |b| {
                    let mut out = vec![0.0f32; len];
                    b.silu_mul(&g, &u, &mut out).map(|_| out)
                },
            );
            let mut out = vec![0.0f32; len];
            let want = reference::relu2_mul(&g, &u, &mut out).map(|_| out);
            p.exact(&format!("relu2_mul cols={cols} n={n}"), &want, |b| {
                let mut out = vec![0.0f32; len];
                b.relu2_mul(&g, &u, &mut out).map(|_| out)
            });
            let mut want = g.clone();
            let want = reference::add_assign(&mut want, &u).map(|_| want);
            p.exact(&format!("add_assign cols={cols} n={n}"), &want, |b| {
                let mut x = g.clone();
                b.add_assign(&mut x, &u).map(|_| x)
            });
            let factors = rng.vec(cols, 3.0);
            let mut want = g.clone();
            let want = reference::scale_columns(&mut want, &factors).map(|_| want);
            p.exact(&format!("scale_columns cols={cols} n={n}"), &want, |b| {
                let mut x = g.clone();
                b.scale_columns(&mut x, &factors).map(|_| x)
            });
        }
    }
    let (g, u) = (vec![1.0f32; 5], vec![1.0f32; 4]);
    let want = reference::add_assign(&mut g.clone(), &u);
    p.exact("add_assign 5 + 4 (error)", &want, |b| {
        b.add_assign(&mut g.clone(), &u)
    });
}

fn check_rope(p: &mut Parity, rng: &mut Rng) {
    for (heads, hd) in [(20, 128), (5, 128), (4, 24), (3, 2), (2, 600)] {
        for positions in [
            vec![0usize],
            vec![7, 8, 9],
            (0..17).map(|t| t * 241).collect(),
            // Enough rows (64 · 20 · 128 values) to split over the threads.
            (0..64).map(|t| t * 37 + 5).collect(),
        ] {
            for theta in [10_000.0f32, 500_000.0] {
                let x = rng.vec(positions.len() * heads * hd, 2.0);
                let case = format!("rope heads={heads} hd={hd} positions={positions:?} θ={theta}");
                let mut want = x.clone();
                let want = reference::rope(&mut want, &positions, heads, hd, theta).map(|_| want);
                p.exact(&case, &want, |b| {
                    let mut y = x.clone();
                    b.rope(&mut y, &positions, heads, hd, theta).map(|_| y)
                });
            }
        }
    }
    let x = vec![1.0f32; 6];
    let want = reference::rope(&mut x.clone(), &[1, 2], 1, 3, 1e4);
    p.exact("rope odd head_dim (error)", &want, |b| {
        b.rope(&mut x.clone(), &[1, 2], 1, 3, 1e4)
    });
}

fn check_attention(p: &mut Parity, rng: &mut Rng) {
    for (n_heads, n_kv_heads) in [(20, 5), (4, 4)] {
        for head_dim in [128, 24] {
            for ctx_len in [1, 33, 300] {
                for n_queries in NS.into_iter().filter(|&n| n <= ctx_len) {
                    let shape = AttentionShape {
                        n_heads,
                        n_kv_heads,
                        head_dim,
                        n_queries,
                        ctx_len,
                    };
                    // Sharper scores for the small head: a wider softmax range.
                    let amp = if head_dim == 24 { 4.0 } else { 1.0 };
                    let q = rng.vec(n_queries * n_heads * head_dim, amp);
                    let k = rng.vec(ctx_len * n_kv_heads * head_dim, amp);
                    let v = rng.vec(ctx_len * n_kv_heads * head_dim, 1.0);
                    let vmax = v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
                    let mut want = vec![0.0f32; q.len()];
                    reference::attention(&shape, &q, &k, &v, &mut want).unwrap();
                    let case = format!("attention {shape:?}");
                    p.floats(
                        &case,
                        &want,
                        |_, _| 1e-5 * vmax,
                        |b| {
                            let mut out = vec![f32::NAN; q.len()];
                            b.attention(&shape, &q, &k, &v, &mut out).map(|_| out)
                        },
                    );
                }
            }
        }
    }
    let bad = AttentionShape {
        n_heads: 6,
        n_kv_heads: 4,
        head_dim: 2,
        n_queries: 1,
        ctx_len: 1,
    };
    let want = reference::attention(&bad, &[0.0; 12], &[0.0; 8], &[0.0; 8], &mut [0.0; 12]);
    p.exact("attention 6 heads over 4 kv heads (error)", &want, |b| {
        b.attention(&bad, &[0.0; 12], &[0.0; 8], &[0.0; 8], &mut [0.0; 12])
    });
}

#[test]
fn every_op_matches_the_reference_on_every_path() {
    let mut p = Parity::new();
    let mut rng = Rng::new(2024);
    check_dense(&mut p, &mut rng);
    check_embedding(&mut p, &mut rng);
    check_norms(&mut p, &mut rng);
    check_quantization(&mut p, &mut rng);
    check_elementwise(&mut p, &mut rng);
    check_rope(&mut p, &mut rng);
    check_attention(&mut p, &mut rng);
    for path in CpuPath::available() {
        let n = p.cases.get(&path).copied().unwrap_or(0);
        println!("parity_ops: path {}: {n} cases", path.name());
        assert!(n > 0, "path {} is available but ran no cases", path.name());
    }
    assert!(
        p.failures.is_empty(),
        "{} failures:\n{}",
        p.failures.len(),
        p.failures
            .iter()
            .take(40)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}
