//! Paged attention (`Backend::paged_attention`) on every [`CpuPath`] this processor has (1 and 3
//! threads) against the reference: the reference attention over the history gathered into
//! contiguous rows (`reference::gather_paged`, itself checked by hand below).
//!
//! The pool is larger than the sequence and its block table is a shuffled subset of it, so a
//! wrong row mapping reads another sequence's keys. Context lengths sit on both sides of block
//! boundaries (1, 15, 16, 17, 33, 300), queries are decode (1) and chunked prefill (3, 17) over
//! GQA groups 4, 1 and 3 with head_dim 128 and 24. Tolerances: `|Δ| ≤ 1e-5 · max|v|` against the
//! reference; bit-identical to the same path's contiguous `attention` (same kernel, same
//! arithmetic, only the addressing differs). Prints the cases per path and fails when an
//! available path ran none.

use bitnet_kernels::cpu::CpuPath;
use bitnet_kernels::reference;
use bitnet_kernels::{
    AttentionShape, Backend, CpuBackend, KernelError, PagedAttentionCall, PagedKv,
};
use std::collections::BTreeMap;

const BLOCK: usize = 16;

/// Deterministic values in [-1, 1) (64-bit LCG, top bits).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn f32(&mut self) -> f32 {
        ((self.next() >> 7) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn vec(&mut self, n: usize, amplitude: f32) -> Vec<f32> {
        (0..n).map(|_| self.f32() * amplitude).collect()
    }
    /// A random permutation of `0..n`.
    fn permutation(&mut self, n: usize) -> Vec<u32> {
        let mut p: Vec<u32> = (0..n as u32).collect();
        for i in (1..n).rev() {
            p.swap(i, self.next() as usize % (i + 1));
        }
        p
    }
}

fn backends() -> Vec<(String, CpuPath, CpuBackend)> {
    let mut out = Vec::new();
    for path in CpuPath::available() {
        for threads in [1, 3] {
            let b = CpuBackend::with_path(path, threads).expect("available path");
            out.push((format!("{} ×{threads}", path.name()), path, b));
        }
    }
    out
}

#[test]
fn paged_attention_matches_the_reference_on_every_path() {
    let backends = backends();
    let mut cases: BTreeMap<CpuPath, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut rng = Rng::new(77);
    for (n_heads, n_kv_heads) in [(20, 5), (4, 4), (6, 2)] {
        for head_dim in [128, 24] {
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
                    // Two spare blocks beyond the sequence's, holding other "sequences" keys.
                    let pool_blocks = ctx_len.div_ceil(BLOCK) + 2;
                    let amp = if head_dim == 24 { 4.0 } else { 1.0 };
                    let keys = rng.vec(pool_blocks * BLOCK * stride, amp);
                    let values = rng.vec(pool_blocks * BLOCK * stride, 1.0);
                    let table = rng.permutation(pool_blocks);
                    let kv = PagedKv {
                        keys: &keys,
                        values: &values,
                        block_table: &table[..ctx_len.div_ceil(BLOCK)],
                        block_size: BLOCK,
                    };
                    let q = rng.vec(n_queries * n_heads * head_dim, amp);
                    let (k, v) = reference::gather_paged(&shape, &kv).expect("gather");
                    let mut want = vec![0.0f32; q.len()];
                    reference::attention(&shape, &q, &k, &v, &mut want).expect("reference");
                    let vmax = v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
                    for (name, path, b) in &backends {
                        *cases.entry(*path).or_default() += 1;
                        let case = format!("{name}: {shape:?}");
                        let mut got = vec![f32::NAN; q.len()];
                        if let Err(e) = b.paged_attention(&shape, &q, &kv, &mut got) {
                            failures.push(format!("{case}: error {e}"));
                            continue;
                        }
                        let close = |i: usize| (got[i] - want[i]).abs() <= 1e-5 * vmax;
                        if let Some(i) = (0..want.len()).find(|&i| !close(i)) {
                            failures.push(format!("{case}: [{i}] got {} want {}", got[i], want[i]));
                        }
                        let mut contiguous = vec![f32::NAN; q.len()];
                        b.attention(&shape, &q, &k, &v, &mut contiguous)
                            .expect("contiguous attention");
                        let same = got
                            .iter()
                            .zip(&contiguous)
                            .all(|(a, c)| a.to_bits() == c.to_bits());
                        if !same {
                            failures.push(format!("{case}: paged differs from contiguous"));
                        }
                    }
                }
            }
        }
    }
    for path in CpuPath::available() {
        let n = cases.get(&path).copied().unwrap_or(0);
        println!("paged_attention: path {}: {n} cases", path.name());
        assert!(n > 0, "path {} is available but ran no cases", path.name());
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A decode batch of sequences sharing one pool (disjoint shuffled blocks, contexts 1 to 300,
/// one with a 5-token chunk): `paged_attention_batch` gives, bit for bit, what one
/// `paged_attention` call per sequence gives on the same backend (the batch only changes which
/// thread runs a task), on every path with 1 and 3 threads; a bad member fails the whole call
/// before anything is written.
#[test]
fn batched_paged_attention_equals_one_call_per_sequence() {
    let mut rng = Rng::new(91);
    let (n_heads, n_kv_heads, head_dim) = (20, 5, 128);
    let stride = n_kv_heads * head_dim;
    let seqs: [(usize, usize); 6] = [(1, 1), (17, 1), (33, 5), (300, 1), (129, 1), (16, 1)];
    let blocks: Vec<usize> = seqs.iter().map(|&(ctx, _)| ctx.div_ceil(BLOCK)).collect();
    let pool_blocks: usize = blocks.iter().sum::<usize>() + 3;
    let keys = rng.vec(pool_blocks * BLOCK * stride, 1.0);
    let values = rng.vec(pool_blocks * BLOCK * stride, 1.0);
    let order = rng.permutation(pool_blocks);
    let mut tables = Vec::new();
    let mut used = 0;
    for &b in &blocks {
        tables.push(order[used..used + b].to_vec());
        used += b;
    }
    let shapes: Vec<AttentionShape> = seqs
        .iter()
        .map(|&(ctx_len, n_queries)| AttentionShape {
            n_heads,
            n_kv_heads,
            head_dim,
            n_queries,
            ctx_len,
        })
        .collect();
    let qs: Vec<Vec<f32>> = shapes
        .iter()
        .map(|s| rng.vec(s.n_queries * n_heads * head_dim, 1.0))
        .collect();
    let kv = |i: usize| PagedKv {
        keys: &keys,
        values: &values,
        block_table: &tables[i],
        block_size: BLOCK,
    };
    let mut cases = 0;
    for (name, _, b) in backends() {
        let single: Vec<Vec<f32>> = (0..seqs.len())
            .map(|i| {
                let mut out = vec![f32::NAN; qs[i].len()];
                b.paged_attention(&shapes[i], &qs[i], &kv(i), &mut out)
                    .expect("one sequence");
                out
            })
            .collect();
        let mut outs: Vec<Vec<f32>> = qs.iter().map(|q| vec![f32::NAN; q.len()]).collect();
        let mut calls: Vec<PagedAttentionCall<'_>> = outs
            .iter_mut()
            .enumerate()
            .map(|(i, out)| PagedAttentionCall {
                shape: shapes[i],
                q: &qs[i],
                kv: kv(i),
                out,
            })
            .collect();
        b.paged_attention_batch(&mut calls).expect("batch");
        for (i, (got, want)) in outs.iter().zip(&single).enumerate() {
            let same = got
                .iter()
                .zip(want)
                .all(|(a, w)| a.to_bits() == w.to_bits());
            assert!(same, "{name}: sequence {i} differs from its own call");
            cases += 1;
        }
        // The last member's table is too short for its context: nothing may be written.
        let mut outs: Vec<Vec<f32>> = qs.iter().map(|q| vec![f32::NAN; q.len()]).collect();
        let short = [tables[3][0]];
        let mut calls: Vec<PagedAttentionCall<'_>> = outs
            .iter_mut()
            .enumerate()
            .map(|(i, out)| PagedAttentionCall {
                shape: shapes[i],
                q: &qs[i],
                kv: if i == 3 {
                    PagedKv {
                        block_table: &short,
                        ..kv(i)
                    }
                } else {
                    kv(i)
                },
                out,
            })
            .collect();
        let err = b.paged_attention_batch(&mut calls);
        assert!(
            matches!(err, Err(KernelError::Shape { .. })),
            "{name}: {err:?}"
        );
        assert!(
            outs.iter().flatten().all(|v| v.is_nan()),
            "{name}: wrote before failing"
        );
    }
    println!("paged_attention_batch: {cases} sequences compared");
    assert!(cases > 0);
}

#[test]
fn gather_paged_follows_the_block_table() {
    // One kv head of width 1, blocks of 2: pool rows hold their own index.
    let shape = AttentionShape {
        n_heads: 1,
        n_kv_heads: 1,
        head_dim: 1,
        n_queries: 1,
        ctx_len: 5,
    };
    let keys: Vec<f32> = (0..8).map(|i| i as f32).collect();
    let values: Vec<f32> = (0..8).map(|i| 10.0 + i as f32).collect();
    let kv = PagedKv {
        keys: &keys,
        values: &values,
        block_table: &[3, 0, 2],
        block_size: 2,
    };
    let (k, v) = reference::gather_paged(&shape, &kv).unwrap();
    assert_eq!(k, vec![6.0, 7.0, 0.0, 1.0, 4.0]);
    assert_eq!(v, vec![16.0, 17.0, 10.0, 11.0, 14.0]);
}

#[test]
fn bad_tables_are_errors_on_every_backend() {
    let shape = AttentionShape {
        n_heads: 2,
        n_kv_heads: 1,
        head_dim: 4,
        n_queries: 1,
        ctx_len: 17,
    };
    let pool = vec![0.0f32; 3 * BLOCK * 4];
    let q = [0.0f32; 8];
    let kv = |table: &'static [u32], block_size: usize| PagedKv {
        keys: &pool,
        values: &pool,
        block_table: table,
        block_size,
    };
    let bad = [
        ("table too short", kv(&[0], BLOCK)),
        ("block outside the pool", kv(&[0, 3], BLOCK)),
        ("block size not a power of two", kv(&[0, 1], 12)),
    ];
    let reference_backend = reference::ReferenceBackend;
    for (what, kv) in bad {
        let mut out = [0.0f32; 8];
        let want = reference_backend.paged_attention(&shape, &q, &kv, &mut out);
        assert!(
            matches!(want, Err(KernelError::Shape { .. })),
            "reference, {what}: {want:?}"
        );
        for (name, _, b) in backends() {
            let got = b.paged_attention(&shape, &q, &kv, &mut out);
            assert_eq!(got, want, "{name}: {what}");
        }
    }
}

/// Decode attention at the 2B-4T shape, paged (blocks of 16, shuffled) against the contiguous
/// history (one block), interleaved so both see the same machine load; prints the medians.
/// Timing only: `cargo test --release -p bitnet-kernels --test paged_attention -- --ignored
/// --nocapture`.
#[test]
#[ignore]
fn paged_decode_costs_what_contiguous_decode_costs() {
    let b = CpuBackend::new(1);
    let mut rng = Rng::new(5);
    for ctx_len in [128, 1024, 4096] {
        let shape = AttentionShape {
            n_heads: 20,
            n_kv_heads: 5,
            head_dim: 128,
            n_queries: 1,
            ctx_len,
        };
        let stride = 5 * 128;
        let blocks = ctx_len.div_ceil(BLOCK);
        let keys = rng.vec(blocks * BLOCK * stride, 1.0);
        let values = rng.vec(blocks * BLOCK * stride, 1.0);
        let table = rng.permutation(blocks);
        let kv = PagedKv {
            keys: &keys,
            values: &values,
            block_table: &table,
            block_size: BLOCK,
        };
        let (k, v) = reference::gather_paged(&shape, &kv).unwrap();
        let q = rng.vec(20 * 128, 1.0);
        let mut out = vec![0.0f32; q.len()];
        let reps = (200_000 / ctx_len).max(20);
        let (mut paged, mut contiguous) = (Vec::new(), Vec::new());
        for _ in 0..15 {
            let t = std::time::Instant::now();
            for _ in 0..reps {
                b.paged_attention(&shape, &q, &kv, &mut out).unwrap();
            }
            paged.push(t.elapsed().as_secs_f64() / reps as f64);
            let t = std::time::Instant::now();
            for _ in 0..reps {
                b.attention(&shape, &q, &k, &v, &mut out).unwrap();
            }
            contiguous.push(t.elapsed().as_secs_f64() / reps as f64);
        }
        paged.sort_by(f64::total_cmp);
        contiguous.sort_by(f64::total_cmp);
        println!(
            "decode attention ctx {ctx_len}: paged {:.1} µs, contiguous {:.1} µs ({} path, 1 thread)",
            paged[7] * 1e6,
            contiguous[7] * 1e6,
            b.path().name()
        );
    }
}
