//! int8 × ternary GEMV/GEMM with exact i32 accumulation, per [`CpuPath`].
//!
//! `acc[n, o] = Σ_k q[n, k] · T[o, k]` over the block layout of [`crate::packing`]. Every path
//! computes `Σ_k code · q − Σ_k q` with the unsigned codes `t + 1 ∈ {0, 1, 2}`, which is what
//! the u8 × s8 instructions want:
//!
//! - [`avx512`]: `vpdpbusd` (AVX-512 VNNI) on a block broadcast to both halves of a zmm and
//!   masked per half, so every 512-bit multiply-add covers 64 consecutive columns;
//! - [`avx2`]: `vpmaddubsw` + `vpmaddwd` on the four 32-column code vectors of a block;
//! - [`scalar`]: portable Rust over the same layout.
//!
//! The activations are read in place when `cols` is a multiple of 128; otherwise they are copied
//! once per call, zero-padded to [`TernaryMatrix::padded_cols`], into a per-thread scratch buffer
//! that only grows (no allocation in steady state). Padding weights are code 1 and padding
//! activations are 0, so padding never changes a result.
//!
//! Threads: a call large enough to amortize the hand-off ([`PARALLEL_MIN_MACS`]) is cut into
//! chunks of output rows, taken in turn by the calling thread and `threads − 1` jobs spawned on
//! the backend's rayon pool (`in_place_scope`: the caller works instead of sleeping, which
//! saves a thread wake-up per call: `pool.install` costs ≈ 12 µs per call on the 2-core VMs,
//! this ≈ 1–3 µs). Each chunk covers every activation row, so the weights are streamed once per
//! call. Calls made from a pool thread (a forward pass inside `backend.pool().install(..)`)
//! work the same way.

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod scalar;

use super::{CpuBackend, CpuPath};
use crate::error::KernelError;
use crate::TernaryMatrix;
use std::cell::RefCell;
use std::marker::PhantomData;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Below this many multiply-adds a call stays on the calling thread (256 KiB of weights at
/// n = 1: waking a pool thread costs several microseconds on a VM).
pub const PARALLEL_MIN_MACS: usize = 1 << 20;

/// Output rows are handed out in multiples of this (a multiple of [`crate::packing::ROW_GROUP`]
/// and of every kernel's row tile).
const ROW_GRAIN: usize = 16;

/// The smallest piece of work handed out, in bytes of weights × activation rows.
const MIN_CHUNK_BYTES: usize = 64 << 10;

/// Pieces per thread for large calls: enough for a late or descheduled thread to be caught up
/// by the others, few enough that each piece is a long sequential read.
const CHUNKS_PER_THREAD: usize = 8;

/// `acc[n, o] = Σ_k q[n, k] · T[o, k]` for every row of `q`, on the backend's path and pool.
///
/// Panics when `q` or `acc` do not hold whole rows of `w.cols()` / `w.rows()` (the
/// [`crate::Backend`] method checks shapes and returns an error first).
pub fn matmul(backend: &CpuBackend, w: &TernaryMatrix, q: &[i8], acc: &mut [i32]) {
    let kernel = Kernel::new(backend.path()).expect("a CpuBackend only holds available paths");
    run(kernel, Some(backend.pool()), backend.threads(), w, q, acc);
}

/// [`matmul`] on one thread with an explicit path (benchmarks, tests); fails when this
/// processor lacks the path.
pub fn matmul_on_path(
    path: CpuPath,
    w: &TernaryMatrix,
    q: &[i8],
    acc: &mut [i32],
) -> Result<(), KernelError> {
    let kernel = Kernel::new(path).ok_or_else(|| KernelError::Shape {
        op: "ternary::matmul_on_path",
        reason: format!("this processor cannot run the {} path", path.name()),
    })?;
    run(kernel, None, 1, w, q, acc);
    Ok(())
}

fn run(
    kernel: Kernel,
    pool: Option<&rayon::ThreadPool>,
    threads: usize,
    w: &TernaryMatrix,
    q: &[i8],
    acc: &mut [i32],
) {
    let (cols, rows) = (w.cols(), w.rows());
    assert!(
        cols > 0 && q.len().is_multiple_of(cols),
        "q is not rows of {cols}"
    );
    let n = q.len() / cols;
    assert_eq!(acc.len(), n * rows, "acc is not {n} rows of {rows}");
    if n == 0 || rows == 0 {
        return;
    }
    with_activations(q, cols, w.padded_cols(), |acts| {
        let out = Output::new(acc, rows);
        match (pool, chunk_rows(threads, n, rows, w.row_bytes())) {
            (Some(pool), Some(chunk)) => {
                // Threads take the next chunk of output rows until none is left, the calling
                // thread included: a pool thread that wakes late only does less of the work,
                // and the caller never sleeps while work remains.
                let chunks = rows.div_ceil(chunk);
                let next = AtomicUsize::new(0);
                let work = || loop {
                    let c = next.fetch_add(1, Ordering::Relaxed);
                    if c >= chunks {
                        break;
                    }
                    // SAFETY: chunk `c` was claimed by this thread alone (`fetch_add`), and
                    // chunks are disjoint ranges of output rows.
                    unsafe { kernel.run(w, acts, c * chunk..((c + 1) * chunk).min(rows), &out) };
                };
                pool.in_place_scope(|scope| {
                    for _ in 1..threads {
                        scope.spawn(|_| work());
                    }
                    work();
                });
            }
            // SAFETY: a single caller owns every output row.
            _ => unsafe { kernel.run(w, acts, 0..rows, &out) },
        }
    });
}

/// Output rows per chunk when a call of `n` activation rows is worth splitting over `threads`
/// threads; `None` when it stays on the calling thread.
fn chunk_rows(threads: usize, n: usize, rows: usize, row_bytes: usize) -> Option<usize> {
    let macs = n * rows * row_bytes * 4;
    if threads <= 1 || macs < PARALLEL_MIN_MACS || rows <= ROW_GRAIN {
        return None;
    }
    let bytes = (n * rows * row_bytes / (threads * CHUNKS_PER_THREAD)).max(MIN_CHUNK_BYTES);
    Some((bytes / (n * row_bytes)).max(1).next_multiple_of(ROW_GRAIN))
}

/// The kernel family of one path. Only [`Kernel::new`] builds one, after checking that the
/// processor has the instructions: that check is what makes the SIMD calls in
/// [`Kernel::run`] sound.
#[derive(Clone, Copy, Debug)]
enum Kernel {
    Scalar,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512Vnni,
}

impl Kernel {
    fn new(path: CpuPath) -> Option<Self> {
        if !path.is_available() {
            return None;
        }
        Some(match path {
            CpuPath::Scalar => Kernel::Scalar,
            #[cfg(target_arch = "x86_64")]
            CpuPath::Avx2 => Kernel::Avx2,
            #[cfg(target_arch = "x86_64")]
            CpuPath::Avx512Vnni => Kernel::Avx512Vnni,
            #[cfg(not(target_arch = "x86_64"))]
            _ => return None,
        })
    }

    /// Computes output rows `rows` for every activation row.
    ///
    /// # Safety
    /// Calls that may run concurrently on one `out` must be given disjoint `rows` (each writes
    /// only its own rows of `out`); `rows` must start on a multiple of `ROW_GROUP` and end on one
    /// or at `w.rows()` (the SIMD kernels compute whole row groups).
    unsafe fn run(self, w: &TernaryMatrix, acts: &Activations, rows: Range<usize>, out: &Output) {
        match self {
            // SAFETY: the caller upholds the disjointness contract.
            Kernel::Scalar => unsafe { scalar::run(w, acts, rows, out) },
            // SAFETY: `Kernel::new` built this variant only after `CpuPath::is_available`
            // confirmed AVX2 (and FMA, F16C) at run time; the caller upholds the rest.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => unsafe { avx2::run(w, acts, rows, out) },
            // SAFETY: as above, AVX-512 F/BW/VL and VNNI were detected at run time.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Vnni => unsafe { avx512::run(w, acts, rows, out) },
        }
    }
}

/// The activation rows as the kernels read them: `n` rows of `stride ≥ padded_cols` bytes,
/// zero beyond `cols`, and the sum of each row (the `− Σ q` of the code trick).
struct Activations<'a> {
    data: &'a [i8],
    stride: usize,
    n: usize,
    sums: &'a [i32],
}

impl Activations<'_> {
    /// Activation row `i`, `stride` bytes.
    fn row(&self, i: usize) -> &[i8] {
        &self.data[i * self.stride..(i + 1) * self.stride]
    }
}

/// Per-thread scratch for padded activations and row sums; it grows to the largest call seen.
#[derive(Default)]
struct Scratch {
    acts: Vec<i8>,
    sums: Vec<i32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Runs `f` on the activations of `q` (rows of `cols`) padded to `padded` columns.
fn with_activations<R>(
    q: &[i8],
    cols: usize,
    padded: usize,
    f: impl FnOnce(&Activations) -> R,
) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut scratch) => prepare(&mut scratch, q, cols, padded, f),
        // A nested call on the same thread (a pool thread running another matmul while it
        // waits): use a temporary buffer rather than fail.
        Err(_) => prepare(&mut Scratch::default(), q, cols, padded, f),
    })
}

fn prepare<R>(
    scratch: &mut Scratch,
    q: &[i8],
    cols: usize,
    padded: usize,
    f: impl FnOnce(&Activations) -> R,
) -> R {
    let n = q.len() / cols;
    scratch.sums.clear();
    scratch.sums.extend(
        q.chunks_exact(cols)
            .map(|r| r.iter().map(|&v| v as i32).sum::<i32>()),
    );
    let data: &[i8] = if padded == cols {
        q
    } else {
        scratch.acts.resize(n * padded, 0);
        for (src, dst) in q
            .chunks_exact(cols)
            .zip(scratch.acts.chunks_exact_mut(padded))
        {
            dst[..cols].copy_from_slice(src);
            dst[cols..].fill(0);
        }
        &scratch.acts[..n * padded]
    };
    f(&Activations {
        data,
        stride: padded,
        n,
        sums: &scratch.sums,
    })
}

/// The `n × rows` accumulator, written by tasks that own disjoint ranges of output rows.
struct Output<'a> {
    ptr: *mut i32,
    len: usize,
    rows: usize,
    _acc: PhantomData<&'a mut [i32]>,
}

// SAFETY: an `Output` is a `&mut [i32]` split by output row: the tasks that share it write
// disjoint elements (see `Kernel::run`), and nothing reads it until they have all finished.
unsafe impl Send for Output<'_> {}
// SAFETY: as above.
unsafe impl Sync for Output<'_> {}

impl<'a> Output<'a> {
    fn new(acc: &'a mut [i32], rows: usize) -> Self {
        Self {
            ptr: acc.as_mut_ptr(),
            len: acc.len(),
            rows,
            _acc: PhantomData,
        }
    }

    /// Writes `acc[n, row]`.
    ///
    /// # Safety
    /// No other thread may access `acc[n, row]` concurrently: the caller owns output `row`.
    #[inline]
    unsafe fn store(&self, n: usize, row: usize, value: i32) {
        let i = n * self.rows + row;
        assert!(
            row < self.rows && i < self.len,
            "output ({n}, {row}) out of range"
        );
        // SAFETY: `i` is in bounds (checked above) and the element is owned by the caller.
        unsafe { self.ptr.add(i).write(value) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_calls_stay_on_one_thread_and_large_ones_split() {
        // 256 × 2560 at n = 1: 160 KiB of weights, below the threshold.
        assert_eq!(chunk_rows(2, 1, 256, 640), None);
        assert_eq!(chunk_rows(1, 64, 6912, 640), None);
        // 640 × 2560: 400 KiB, chunks of the 64 KiB minimum (≈ 100 rows, rounded to 112).
        assert_eq!(chunk_rows(2, 1, 640, 640), Some(112));
        // 2560 × 6912 decode: 4.2 MiB in 16 chunks of 160 rows.
        assert_eq!(chunk_rows(2, 1, 2560, 1728), Some(160));
        // GEMM: the same matrix at n = 64 is cut by rows only.
        assert_eq!(chunk_rows(2, 64, 2560, 1728), Some(160));
        // Never an empty chunk, even when one row is more than a share.
        assert_eq!(chunk_rows(8, 64, 17, 1728), Some(16));
    }

    #[test]
    fn every_available_path_matches_the_reference_on_a_padded_shape() {
        let (rows, cols, n) = (37, 300, 3);
        let values: Vec<i8> = (0..rows * cols).map(|i| (i * 7 % 3) as i8 - 1).collect();
        let w = TernaryMatrix::from_ternary(rows, cols, &values, 1.0).unwrap();
        let q: Vec<i8> = (0..n * cols).map(|i| (i * 37 % 256) as u8 as i8).collect();
        let mut expected = vec![0i32; n * rows];
        crate::reference::ternary_matmul(&w, &q, &mut expected).unwrap();
        for path in CpuPath::available() {
            let mut acc = vec![0i32; n * rows];
            matmul_on_path(path, &w, &q, &mut acc).unwrap();
            assert_eq!(acc, expected, "path {}", path.name());
        }
    }
}
