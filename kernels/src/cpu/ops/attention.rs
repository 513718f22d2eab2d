//! Causal GQA attention on the CPU, over a contiguous or a paged key/value history: one task per
//! (query, kv head) pair computes the scores, softmax and weighted sum of the
//! `n_heads / n_kv_heads` query heads that share the kv head, so each K and V row is read from
//! memory once per group (and stays in L1 for the group's heads).
//!
//! Every history is paged: a task finds token `j`'s row through the block table with one shift,
//! one mask and one table load (block sizes are powers of two), and the rows of a block are
//! contiguous; a contiguous history is a single block large enough for every token, so both
//! entry points share the kernels.
//!
//! Tasks run on the backend's pool when the call is large (prefill, long decode contexts, or
//! the sequences of a decode batch taken together by `paged_attention_batch`), otherwise on the
//! calling thread. Scores live in a per-thread scratch vector that only grows
//! (to `group · ctx_len`), so steady-state decoding does not allocate. Kernels: `attend` of
//! each family in [`super`] (scalar, `avx2`, `avx512`).

#[cfg(target_arch = "x86_64")]
use super::{avx2, avx512};
use super::{dispatch, scalar};
use crate::backend::{AttentionShape, PagedAttentionCall, PagedKv};
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
    /// The key and value rows of the pool (`rows × kv_stride`), read through `table`.
    pub k: &'a [f32],
    pub v: &'a [f32],
    /// Block table: token `j` lives in row `table[j >> block_shift] << block_shift | j & mask`.
    pub table: &'a [u32],
    /// `log2` of the block size (a contiguous history is one block of `2^shift ≥ ctx_len`).
    pub block_shift: u32,
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
    /// Pool row of cached token `j`.
    #[inline(always)]
    fn row(&self, j: usize) -> usize {
        let mask = (1usize << self.block_shift) - 1;
        ((self.table[j >> self.block_shift] as usize) << self.block_shift) | (j & mask)
    }

    /// Key row of cached token `j`.
    #[inline(always)]
    pub fn key(&self, j: usize) -> &[f32] {
        &self.k[self.row(j) * self.kv_stride + self.kv_offset..][..self.head_dim]
    }

    /// Value row of cached token `j`.
    #[inline(always)]
    pub fn value(&self, j: usize) -> &[f32] {
        &self.v[self.row(j) * self.kv_stride + self.kv_offset..][..self.head_dim]
    }
}

/// See [`crate::Backend::attention`]: a contiguous history is one block holding every token.
pub fn attention(
    b: &CpuBackend,
    shape: &AttentionShape,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &mut [f32],
) -> Result<(), KernelError> {
    crate::reference::check_attention_shape(shape, q, k, v, out)?;
    let shift = shape.ctx_len.max(1).next_power_of_two().trailing_zeros();
    let mut tasks = Vec::new();
    push_tasks(&mut tasks, shape, q, (k, v, &[0], shift), out);
    run(b, tasks, macs(shape));
    Ok(())
}

/// See [`crate::Backend::paged_attention`]: keys and values are read in place, block by block.
pub fn paged_attention(
    b: &CpuBackend,
    shape: &AttentionShape,
    q: &[f32],
    kv: &PagedKv<'_>,
    out: &mut [f32],
) -> Result<(), KernelError> {
    crate::reference::check_paged_call(shape, q, kv, out)?;
    let mut tasks = Vec::new();
    push_tasks(&mut tasks, shape, q, history(kv), out);
    run(b, tasks, macs(shape));
    Ok(())
}

/// See [`crate::Backend::paged_attention_batch`]: every call is checked first, then the tasks
/// of all the sequences share the threads.
pub fn paged_attention_batch(
    b: &CpuBackend,
    calls: &mut [PagedAttentionCall<'_>],
) -> Result<(), KernelError> {
    for call in calls.iter() {
        crate::reference::check_paged_call(&call.shape, call.q, &call.kv, call.out)?;
    }
    let mut tasks = Vec::new();
    let mut total = 0;
    for call in calls.iter_mut() {
        total += macs(&call.shape);
        push_tasks(&mut tasks, &call.shape, call.q, history(&call.kv), call.out);
    }
    run(b, tasks, total);
    Ok(())
}

/// Keys, values, block table and block shift of a (checked) history.
type History<'a> = (&'a [f32], &'a [f32], &'a [u32], u32);

fn history<'a>(kv: &PagedKv<'a>) -> History<'a> {
    (
        kv.keys,
        kv.values,
        kv.block_table,
        kv.block_size.trailing_zeros(),
    )
}

/// Multiply-adds of one call (its share of the parallel threshold).
fn macs(shape: &AttentionShape) -> usize {
    shape.n_queries * shape.ctx_len * shape.n_heads * shape.head_dim
}

/// One task and the `group × head_dim` output rows it writes.
type Task<'a> = (GroupTask<'a>, &'a mut [f32]);

/// Appends the (query, kv head) tasks of one checked call.
fn push_tasks<'a>(
    tasks: &mut Vec<Task<'a>>,
    shape: &AttentionShape,
    q: &'a [f32],
    kv: History<'a>,
    out: &'a mut [f32],
) {
    let AttentionShape {
        n_heads,
        n_kv_heads,
        head_dim: hd,
        n_queries,
        ctx_len,
    } = *shape;
    let (k, v, table, block_shift) = kv;
    let group = n_heads / n_kv_heads;
    let width = group * hd;
    if width == 0 {
        return;
    }
    let chunks = out.chunks_mut(width).zip(q.chunks(width)).enumerate();
    tasks.extend(chunks.map(|(c, (og, qg))| {
        let task = GroupTask {
            q: qg,
            k,
            v,
            table,
            block_shift,
            kv_stride: n_kv_heads * hd,
            kv_offset: (c % n_kv_heads) * hd,
            head_dim: hd,
            group,
            visible: ctx_len - n_queries + c / n_kv_heads + 1,
            scale: 1.0 / (hd as f32).sqrt(),
        };
        (task, og)
    }));
}

/// Runs the tasks of checked calls worth `macs` multiply-adds, on the pool when that pays.
fn run(b: &CpuBackend, mut tasks: Vec<Task<'_>>, macs: usize) {
    let path = b.path();
    let one = |(task, og): &mut Task<'_>| {
        SCORES.with_borrow_mut(|s| {
            let need = task.group * task.visible;
            if s.len() < need {
                s.resize(need.next_power_of_two(), 0.0);
            }
            dispatch!(path, attend(task, &mut s[..need], og));
        });
    };
    if b.threads() > 1 && tasks.len() > 1 && macs >= PARALLEL_MIN_MACS {
        b.pool().install(|| tasks.par_iter_mut().for_each(one));
    } else {
        tasks.iter_mut().for_each(one);
    }
}
