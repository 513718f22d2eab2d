//! Parity of every [`Backend`] op of `CudaBackend` (feature `cuda`) with the scalar reference
//! (`bitnet_kernels::reference`): the CUDA side of `parity.rs` / `parity_ops.rs`.
//!
//! Without a GPU the suite prints why it skipped and passes; with `BITNET_REQUIRE_CUDA=1`
//! (`scripts/gpu-check.sh`) a backend that does not start, or zero CUDA cases, is a failure.
//! Tolerances, per op:
//! - exact: ternary_matmul (i32 accumulators, every shape, saturation), quantize_rows (`q` and
//!   `s`), dequantize_rows, embedding (every dtype), relu2_mul, add_assign, scale_columns,
//!   argmax (first maximum on ties);
//! - RMSNorm / LayerNorm: `|Δ| ≤ 2⁻²² · |ref|` (f64 sums in another order: last bit at most);
//! - RoPE, silu_mul: `|Δ| ≤ 4e-6 · max|row|` (device sincosf / expf within 2 ulp);
//! - attention: `|Δ| ≤ 1e-5 · max|v|` (online softmax, reassociated dot products); paged
//!   attention (the paged kernel reading shuffled block tables of a larger pool in place, odd
//!   lengths around block boundaries, decode and chunked prefill, GQA) against the reference
//!   over the gathered history, the same tolerance;
//! - dense int8 (W8A8): bit-exact; dense f32 / sign, and f16 / bf16 for up to 16 rows (f32
//!   activations, `dense_h16_rows`): `|Δ| ≤ 4 · √cols · 2⁻²⁴ · Σ|x·w|`; f16 / bf16 for more rows
//!   through cuBLAS with activations rounded to the weight dtype: `|Δ| ≤ 2 · u · Σ|x·w|`
//!   (u = 2⁻¹¹, 2⁻⁸).
//!
//! Prints `parity_cuda: <op>: <N> cases` and the total.
#![cfg(feature = "cuda")]

use bitnet_kernels::cuda::CudaBackend;
use bitnet_kernels::reference;
use bitnet_kernels::{
    AttentionShape, Backend, DenseData, DenseMatrix, PagedKv, SignMatrix, TernaryMatrix,
};
use half::{bf16, f16};
use std::collections::BTreeMap;

/// splitmix64: deterministic, dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn ternary(&mut self, len: usize) -> Vec<i8> {
        (0..len).map(|_| (self.next() % 3) as i8 - 1).collect()
    }
    fn int8(&mut self, n: usize, k: usize) -> Vec<i8> {
        let mut q: Vec<i8> = (0..n * k).map(|_| self.next() as u8 as i8).collect();
        for row in q.chunks_exact_mut(k) {
            row[0] = -128;
            row[k - 1] = 127;
        }
        q
    }
    fn floats(&mut self, len: usize, amplitude: f32) -> Vec<f32> {
        (0..len)
            .map(|_| ((self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * amplitude)
            .collect()
    }
}

/// The backend under test, cases per op and every failure.
struct Parity {
    b: CudaBackend,
    cases: BTreeMap<&'static str, usize>,
    failures: Vec<String>,
}

impl Parity {
    /// The backend, or `None` (after printing why) when this machine has no usable GPU.
    fn new() -> Option<Self> {
        match CudaBackend::new() {
            Ok(b) => {
                println!("parity_cuda: {} ({})", b.device_name(), b.arch());
                Some(Parity {
                    b,
                    cases: BTreeMap::new(),
                    failures: Vec::new(),
                })
            }
            Err(e) => {
                assert!(
                    std::env::var("BITNET_REQUIRE_CUDA").map_or(true, |v| v != "1"),
                    "BITNET_REQUIRE_CUDA=1 but the CUDA backend did not start: {e}"
                );
                println!("parity_cuda: skipped, no CUDA backend: {e}");
                None
            }
        }
    }

    fn count(&mut self, op: &'static str) {
        *self.cases.entry(op).or_default() += 1;
    }

    /// Records the first element outside `tol(i)`.
    fn close(&mut self, who: String, got: &[f32], want: &[f32], tol: impl Fn(usize) -> f32) {
        if got.len() != want.len() {
            self.failures.push(format!(
                "{who}: {} values, expected {}",
                got.len(),
                want.len()
            ));
            return;
        }
        // A NaN difference fails too.
        let within = |i: usize| (got[i] - want[i]).abs() <= tol(i);
        let bad = (0..got.len()).find(|&i| !within(i));
        if let Some(i) = bad {
            self.failures.push(format!(
                "{who}: [{i}] = {}, expected {} (tolerance {})",
                got[i],
                want[i],
                tol(i)
            ));
        }
    }

    fn exact<T: PartialEq + std::fmt::Debug>(&mut self, who: String, got: &[T], want: &[T]) {
        if let Some(i) = (0..want.len()).find(|&i| got.get(i) != Some(&want[i])) {
            self.failures.push(format!(
                "{who}: [{i}] = {:?}, expected {:?} ({} of {} differ)",
                got.get(i),
                want[i],
                got.iter().zip(want).filter(|(a, b)| a != b).count(),
                want.len()
            ));
        }
    }

    fn error(&mut self, who: String, e: impl std::fmt::Display) {
        self.failures.push(format!("{who}: error {e}"));
    }

    fn finish(self) {
        let total: usize = self.cases.values().sum();
        for (op, n) in &self.cases {
            println!("parity_cuda: {op}: {n} cases");
        }
        println!(
            "parity_cuda: cuda: {total} cases, {} failures",
            self.failures.len()
        );
        assert!(total > 0, "the CUDA backend started but ran no case");
        assert!(
            self.failures.is_empty(),
            "{} failures:\n{}",
            self.failures.len(),
            self.failures.join("\n")
        );
    }
}

fn ternary_case(p: &mut Parity, name: String, rows: usize, k: usize, t: Vec<i8>, q: Vec<i8>) {
    p.count("ternary_matmul");
    let w = TernaryMatrix::from_ternary(rows, k, &t, 1.0).expect("ternary values");
    let n = q.len() / k;
    let mut want = vec![0i32; n * rows];
    reference::ternary_matmul(&w, &q, &mut want).expect("reference");
    let mut got = vec![i32::MIN; n * rows];
    match p.b.ternary_matmul(&w, &q, &mut got) {
        Ok(()) => p.exact(name, &got, &want),
        Err(e) => p.error(name, e),
    }
}

#[test]
fn ternary_matmul_is_bit_exact() {
    let Some(mut p) = Parity::new() else { return };
    let mut rng = Rng(0x5EED_C0DA);
    for k in [7, 96, 769, 2560, 6912] {
        for n in [1, 3, 8, 17, 64] {
            for rows in [1, 5, 130] {
                let (t, q) = (rng.ternary(rows * k), rng.int8(n, k));
                ternary_case(&mut p, format!("rows {rows} K {k} n {n}"), rows, k, t, q);
            }
        }
    }
    // Decode and prefill layer shapes of 2B-4T and 3B (K split over the grid, partial groups).
    for (rows, k, n) in [
        (6912, 2560, 1),
        (2560, 6912, 1),
        (8640, 3200, 1),
        (2563, 2560, 9),
    ] {
        let (t, q) = (rng.ternary(rows * k), rng.int8(n, k));
        ternary_case(&mut p, format!("rows {rows} K {k} n {n}"), rows, k, t, q);
    }
    for (k, n) in [(6912, 1), (769, 5), (128, 9)] {
        for (t, v) in [(1i8, -128i8), (-1, -128), (1, 127), (-1, 127)] {
            let name = format!("saturation t={t} q={v} K {k} n {n}");
            ternary_case(&mut p, name, 9, k, vec![t; 9 * k], vec![v; n * k]);
        }
    }
    p.finish();
}

#[test]
fn quantization_and_scaling_are_bit_exact() {
    let Some(mut p) = Parity::new() else { return };
    let mut rng = Rng(0xF10A7);
    for cols in [7, 96, 769, 2560] {
        for n in [1, 3, 17] {
            let mut x = rng.floats(n * cols, 3.0);
            // Ties: absmax 2 gives s = 63.5, so 1.0 · s = 63.5 rounds to 64 (even).
            x[0] = 2.0;
            if cols > 2 {
                x[1] = 1.0;
                x[2] = -1.0;
            }
            if n > 1 {
                x[cols..2 * cols].fill(0.0);
            }
            let who = format!("quantize cols {cols} n {n}");
            p.count("quantize_rows");
            let (mut wq, mut ws) = (vec![0i8; x.len()], vec![0f32; n]);
            reference::quantize_rows(&x, cols, &mut wq, &mut ws).unwrap();
            let (mut gq, mut gs) = (vec![0i8; x.len()], vec![0f32; n]);
            match p.b.quantize_rows(&x, cols, &mut gq, &mut gs) {
                Ok(()) => {
                    p.exact(who.clone(), &gq, &wq);
                    p.exact(who, &gs, &ws);
                }
                Err(e) => p.error(who, e),
            }
            p.count("dequantize_rows");
            let acc: Vec<i32> = (0..n * cols).map(|_| rng.next() as i32 >> 8).collect();
            let mut want = vec![0f32; acc.len()];
            reference::dequantize_rows(&acc, 0.37, &ws, &mut want).unwrap();
            let mut got = vec![f32::NAN; acc.len()];
            let who = format!("dequantize cols {cols} n {n}");
            match p.b.dequantize_rows(&acc, 0.37, &ws, &mut got) {
                Ok(()) => p.exact(who, &got, &want),
                Err(e) => p.error(who, e),
            }
        }
    }
    p.finish();
}

#[test]
fn row_and_element_ops_match() {
    let Some(mut p) = Parity::new() else { return };
    let mut rng = Rng(0xE1E);
    for cols in [7, 96, 769, 2560] {
        for n in [1, 3, 17] {
            let x = rng.floats(n * cols, 4.0);
            let w = rng.floats(cols, 1.5);
            for weight in [None, Some(&w[..])] {
                p.count("rms_norm");
                let mut want = vec![0f32; x.len()];
                reference::rms_norm(&x, weight, 1e-5, cols, &mut want).unwrap();
                let mut got = vec![f32::NAN; x.len()];
                let who = format!("rms_norm cols {cols} n {n} weight {}", weight.is_some());
                match p.b.rms_norm(&x, weight, 1e-5, cols, &mut got) {
                    Ok(()) => p.close(who, &got, &want, |i| want[i].abs() * 2.4e-7),
                    Err(e) => p.error(who, e),
                }
            }
            p.count("layer_norm");
            let mut want = vec![0f32; x.len()];
            reference::layer_norm(&x, 1e-5, cols, &mut want).unwrap();
            let mut got = vec![f32::NAN; x.len()];
            match p.b.layer_norm(&x, 1e-5, cols, &mut got) {
                Ok(()) => p.close(format!("layer_norm {cols}"), &got, &want, |i| {
                    want[i].abs() * 2.4e-7 + 1e-7
                }),
                Err(e) => p.error(format!("layer_norm {cols}"), e),
            }
            let (g, u) = (rng.floats(n * cols, 6.0), rng.floats(n * cols, 2.0));
            for (op, f) in [
                (
                    "silu_mul",
                    reference::silu_mul as fn(&[f32], &[f32], &mut [f32]) -> _,
                ),
                ("relu2_mul", reference::relu2_mul),
            ] {
                p.count(op);
                let mut want = vec![0f32; g.len()];
                f(&g, &u, &mut want).unwrap();
                let mut got = vec![f32::NAN; g.len()];
                let r = if op == "silu_mul" {
                    p.b.silu_mul(&g, &u, &mut got)
                } else {
                    p.b.relu2_mul(&g, &u, &mut got)
                };
                let exact = op == "relu2_mul";
                match r {
                    Ok(()) if exact => p.exact(format!("{op} {cols}"), &got, &want),
                    Ok(()) => p.close(format!("{op} {cols}"), &got, &want, |i| {
                        4e-6 * want[i].abs() + 1e-30
                    }),
                    Err(e) => p.error(format!("{op} {cols}"), e),
                }
            }
            p.count("add_assign");
            let (mut a, mut b2) = (g.clone(), g.clone());
            reference::add_assign(&mut a, &u).unwrap();
            match p.b.add_assign(&mut b2, &u) {
                Ok(()) => p.exact(format!("add_assign {cols}"), &b2, &a),
                Err(e) => p.error(format!("add_assign {cols}"), e),
            }
            p.count("scale_columns");
            let (mut a, mut b2) = (g.clone(), g.clone());
            reference::scale_columns(&mut a, &w).unwrap();
            match p.b.scale_columns(&mut b2, &w) {
                Ok(()) => p.exact(format!("scale_columns {cols}"), &b2, &a),
                Err(e) => p.error(format!("scale_columns {cols}"), e),
            }
            p.count("argmax_rows");
            let mut logits = rng.floats(n * cols, 10.0);
            if cols > 5 {
                logits[3] = 50.0;
                logits[5] = 50.0; // tie: the first one wins
            }
            let want: Vec<u32> = logits.chunks(cols).map(argmax).collect();
            match p.b.argmax_rows(&logits, cols) {
                Ok(got) => p.exact(format!("argmax cols {cols} n {n}"), &got, &want),
                Err(e) => p.error(format!("argmax {cols}"), e),
            }
        }
    }
    for (heads, hd, theta) in [
        (20, 128, 500_000.0f32),
        (4, 24, 10_000.0),
        (2, 100, 10_000.0),
    ] {
        let positions: Vec<usize> = vec![0, 1, 17, 300, 4095];
        let x = rng.floats(positions.len() * heads * hd, 2.0);
        p.count("rope");
        let (mut want, mut got) = (x.clone(), x.clone());
        reference::rope(&mut want, &positions, heads, hd, theta).unwrap();
        let who = format!("rope heads {heads} hd {hd}");
        match p.b.rope(&mut got, &positions, heads, hd, theta) {
            Ok(()) => p.close(who, &got, &want, |_| 4e-6 * 2.0 * 1.5),
            Err(e) => p.error(who, e),
        }
    }
    p.finish();
}

/// The first index of the maximum (as `worker::sampler::argmax`).
fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best as u32
}

#[test]
fn attention_matches_decode_and_prefill() {
    let Some(mut p) = Parity::new() else { return };
    let mut rng = Rng(0xA77);
    for (n_heads, n_kv_heads, head_dim) in [(20, 5, 128), (4, 4, 24), (8, 2, 100), (2, 1, 256)] {
        for (n_queries, ctx_len) in [(1, 1), (1, 33), (1, 300), (7, 7), (5, 40), (64, 64)] {
            let shape = AttentionShape {
                n_heads,
                n_kv_heads,
                head_dim,
                n_queries,
                ctx_len,
            };
            let q = rng.floats(n_queries * n_heads * head_dim, 2.0);
            let k = rng.floats(ctx_len * n_kv_heads * head_dim, 2.0);
            let v = rng.floats(ctx_len * n_kv_heads * head_dim, 3.0);
            p.count("attention");
            let mut want = vec![0f32; q.len()];
            reference::attention(&shape, &q, &k, &v, &mut want).unwrap();
            let mut got = vec![f32::NAN; q.len()];
            let who = format!("attention {shape:?}");
            match p.b.attention(&shape, &q, &k, &v, &mut got) {
                Ok(()) => p.close(who, &got, &want, |_| 1e-5 * 3.0),
                Err(e) => p.error(who, e),
            }
        }
    }
    p.finish();
}

/// A random permutation of `0..n` (Fisher–Yates).
fn permutation(rng: &mut Rng, n: usize) -> Vec<u32> {
    let mut p: Vec<u32> = (0..n as u32).collect();
    for i in (1..n).rev() {
        p.swap(i, (rng.next() % (i as u64 + 1)) as usize);
    }
    p
}

#[test]
fn paged_attention_reads_shuffled_blocks_in_place() {
    let Some(mut p) = Parity::new() else { return };
    let mut rng = Rng(0x9A6ED);
    const BLOCK: usize = 16;
    for (n_heads, n_kv_heads, head_dim) in [(20, 5, 128), (4, 4, 24), (6, 2, 100), (2, 1, 256)] {
        for ctx_len in [1, 15, 16, 17, 33, 300] {
            for n_queries in [1, 3, 17].into_iter().filter(|&n| n <= ctx_len) {
                let shape = AttentionShape {
                    n_heads,
                    n_kv_heads,
                    head_dim,
                    n_queries,
                    ctx_len,
                };
                let stride = n_kv_heads * head_dim;
                // Spare blocks hold other sequences' keys: a wrong row mapping reads them.
                let pool_blocks = ctx_len.div_ceil(BLOCK) + 3;
                let keys = rng.floats(pool_blocks * BLOCK * stride, 2.0);
                let values = rng.floats(pool_blocks * BLOCK * stride, 3.0);
                let table = permutation(&mut rng, pool_blocks);
                let kv = PagedKv {
                    keys: &keys,
                    values: &values,
                    block_table: &table[..ctx_len.div_ceil(BLOCK)],
                    block_size: BLOCK,
                };
                let q = rng.floats(n_queries * n_heads * head_dim, 2.0);
                let (k, v) = reference::gather_paged(&shape, &kv).expect("gather");
                let mut want = vec![0f32; q.len()];
                reference::attention(&shape, &q, &k, &v, &mut want).unwrap();
                p.count("paged_attention");
                let mut got = vec![f32::NAN; q.len()];
                let who = format!("paged_attention {shape:?} table {:?}", kv.block_table);
                match p.b.paged_attention(&shape, &q, &kv, &mut got) {
                    Ok(()) => p.close(who, &got, &want, |_| 1e-5 * 3.0),
                    Err(e) => p.error(who, e),
                }
            }
        }
    }
    // A table naming a block outside the pool is an error before any launch.
    let shape = AttentionShape {
        n_heads: 2,
        n_kv_heads: 1,
        head_dim: 8,
        n_queries: 1,
        ctx_len: 17,
    };
    let pool = vec![0f32; 2 * BLOCK * 8];
    let kv = PagedKv {
        keys: &pool,
        values: &pool,
        block_table: &[1, 2],
        block_size: BLOCK,
    };
    let mut out = vec![0f32; 16];
    p.count("paged_attention");
    if p.b
        .paged_attention(&shape, &[0.0; 16], &kv, &mut out)
        .is_ok()
    {
        p.failures
            .push("paged_attention accepted block 2 of a pool of 2".into());
    }
    p.finish();
}

#[test]
fn embedding_and_dense_projections_match() {
    let Some(mut p) = Parity::new() else { return };
    let mut rng = Rng(0xDE45E);
    for (rows, cols) in [(5, 7), (130, 96), (1000, 769), (300, 2560)] {
        let vals = rng.floats(rows * cols, 1.0);
        let tables = [
            ("f32", DenseData::F32(vals.clone()), 0.0f32),
            (
                "f16",
                DenseData::F16(vals.iter().map(|&v| f16::from_f32(v)).collect()),
                1.0 / 2048.0,
            ),
            (
                "bf16",
                DenseData::BF16(vals.iter().map(|&v| bf16::from_f32(v)).collect()),
                1.0 / 256.0,
            ),
        ];
        for (dtype, data, unit) in tables {
            let m = DenseMatrix::new(rows, cols, data).unwrap();
            for m in [m.clone(), m.to_int8()] {
                let tag = m.data().dtype_name();
                let ids: Vec<u32> = (0..9).map(|i| ((i * 7919) % rows) as u32).collect();
                p.count("embedding");
                let mut want = vec![0f32; ids.len() * cols];
                reference::embedding(&m, &ids, &mut want).unwrap();
                let mut got = vec![f32::NAN; want.len()];
                let who = format!("embedding {tag} {rows}x{cols}");
                match p.b.embedding(&m, &ids, &mut got) {
                    Ok(()) => p.exact(who, &got, &want),
                    Err(e) => p.error(who, e),
                }
                for n in [1, 3, 17] {
                    let x = rng.floats(n * cols, 2.0);
                    p.count("dense_matmul");
                    let mut want = vec![0f32; n * rows];
                    reference::dense_matmul(&m, &x, &mut want).unwrap();
                    let bound = abs_bound(&m, &x, n);
                    // Up to 16 rows, 16-bit weights meet f32 activations (dense_h16_rows); more
                    // rows go through cuBLAS with the activations rounded to the weight dtype.
                    let rel = if (tag == "F16" || tag == "BF16") && n > 16 {
                        2.0 * unit
                    } else {
                        4.0 * (cols as f32).sqrt() / (1u64 << 24) as f32
                    };
                    let mut got = vec![f32::NAN; want.len()];
                    let who = format!("dense {dtype}->{tag} {rows}x{cols} n {n}");
                    match p.b.dense_matmul(&m, &x, &mut got) {
                        // The int8 head is W8A8 with exact i32 sums: bit-exact.
                        Ok(()) if tag == "I8" => p.exact(who, &got, &want),
                        Ok(()) => p.close(who, &got, &want, |i| rel * bound[i] + 1e-30),
                        Err(e) => p.error(who, e),
                    }
                }
            }
        }
        if cols % 8 == 0 {
            let signs: Vec<i8> = (0..rows * cols)
                .map(|_| if rng.next() & 1 == 1 { 1 } else { -1 })
                .collect();
            let s = SignMatrix::from_signs(rows, cols, &signs).unwrap();
            for n in [1, 4] {
                let x = rng.floats(n * cols, 2.0);
                p.count("sign_matmul");
                let mut want = vec![0f32; n * rows];
                reference::sign_matmul(&s, &x, &mut want).unwrap();
                let l1: Vec<f32> = x
                    .chunks(cols)
                    .map(|r| r.iter().map(|v| v.abs()).sum())
                    .collect();
                let tol = 4.0 * (cols as f32).sqrt() / (1u64 << 24) as f32;
                let mut got = vec![f32::NAN; want.len()];
                let who = format!("sign {rows}x{cols} n {n}");
                match p.b.sign_matmul(&s, &x, &mut got) {
                    Ok(()) => p.close(who, &got, &want, |i| tol * l1[i / rows] + 1e-30),
                    Err(e) => p.error(who, e),
                }
            }
        }
    }
    p.finish();
}

/// `Σ_k |x[t, k] · w[o, k]|` for every output, the scale of a dense product's rounding error.
fn abs_bound(m: &DenseMatrix, x: &[f32], n: usize) -> Vec<f32> {
    let (rows, cols) = (m.rows(), m.cols());
    let mut row = vec![0f32; cols];
    let mut out = vec![0f32; n * rows];
    for o in 0..rows {
        m.row_into(o, &mut row);
        for t in 0..n {
            out[t * rows + o] = x[t * cols..(t + 1) * cols]
                .iter()
                .zip(&row)
                .map(|(a, b)| (a * b).abs())
                .sum();
        }
    }
    out
}
