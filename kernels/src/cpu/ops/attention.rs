//! Causal GQA attention on the CPU: one task per (query, kv head) pair computes the scores,
//! softmax and weighted sum of the `n_heads / n_kv_heads` query heads that share the kv head, so
//! each K and V row is read from memory once per group (and stays in L1 for the group's heads).
//!
//! Tasks run on the backend's pool when the call is large (prefill, long decode contexts),
//! otherwise on the calling thread. Scores live in a per-thread scratch vector that only grows
//! (to `group · ctx_len`), so steady-state decoding does not allocate. Kernels: `attend` of
//! each family in [`super`] (scalar, `avx2`, `avx512`).

#[cfg(target_arch = "x86_64")]
use super::{avx2, avx512};
use super::{dispatch, scalar};
use crate::backend::AttentionShape;
use crate::cpu::{CpuBackend, CpuPath};
use crate::error::KernelError;
use rayon::prelude::*;
use std::cell::RefCell;

/// Multiply-adds (`n_queries · ctx_len · n_heads · head_dim`) from which a call uses the pool:
/// about 150 µs of single-threaded work, so the ~25 µs a pool round trip costs on these VMs
/// (measured) pays off.
const PARALLEL_MIN_MACS: usize = 1 << 21;

thread_local! {
    /// Softmax scores of the current task, reused across calls.
    static SCORES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// One query position against one kv head: the `group` query heads that share it.
#[derive(Clone, Copy, Debug)]
pub struct GroupTask<'a> {
    /// `group × head_dim` query rows.
    pub q: &'a [f32],
    /// The whole key and value caches (`ctx_len × kv_stride`).
    pub k: &'a [f32],
    pub v: &'a [f32],
    /// Floats per cached token (`n_kv_heads · head_dim`).
    pub kv_stride: usize,
    /// Offset of this kv head inside a cached token.
    pub kv_offset: usize,
    pub head_dim: usize,
    pub group: usize,
    /// Keys `0 .. visible` are attended (causal mask).
    pub visible: usize,
    /// `head_dim^-0.5`.
    pub scale: f32,
}

impl GroupTask<'_> {
    /// Key row of cached token `j`.
    pub fn key(&self, j: usize) -> &[f32] {
        &self.k[j * self.kv_stride + self.kv_offset..][..self.head_dim]
    }

    /// Value row of cached token `j`.
    pub fn value(&self, j: usize) -> &[f32] {
        &self.v[j * self.kv_stride + self.kv_offset..][..self.head_dim]
    }
}

/// See [`crate::Backend::attention`].
pub fn attention(
    b: &CpuBackend,
    shape: &AttentionShape,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &mut [f32],
) -> Result<(), KernelError> {
    let AttentionShape {
        n_heads,
        n_kv_heads,
        head_dim: hd,
        n_queries,
        ctx_len,
    } = *shape;
    crate::reference::check_attention_shape(shape, q, k, v, out)?;
    let group = n_heads / n_kv_heads;
    let width = group * hd;
    if width == 0 {
        return Ok(());
    }
    let path = b.path();
    let run = |c: usize, qg: &[f32], og: &mut [f32]| {
        let task = GroupTask {
            q: qg,
            k,
            v,
            kv_stride: n_kv_heads * hd,
            kv_offset: (c % n_kv_heads) * hd,
            head_dim: hd,
            group,
            visible: ctx_len - n_queries + c / n_kv_heads + 1,
            scale: 1.0 / (hd as f32).sqrt(),
        };
        SCORES.with_borrow_mut(|s| {
            if s.len() < group * task.visible {
                s.resize(group * ctx_len, 0.0);
            }
            let scores = &mut s[..group * task.visible];
            dispatch!(path, attend(&task, scores, og));
        });
    };
    let tasks = n_queries * n_kv_heads;
    if b.threads() > 1 && tasks > 1 && n_queries * ctx_len * n_heads * hd >= PARALLEL_MIN_MACS {
        b.pool().install(|| {
            out.par_chunks_mut(width)
                .zip(q.par_chunks(width))
                .enumerate()
                .for_each(|(c, (og, qg))| run(c, qg, og));
        });
    } else {
        for (c, (og, qg)) in out.chunks_mut(width).zip(q.chunks(width)).enumerate() {
            run(c, qg, og);
        }
    }
    Ok(())
}
