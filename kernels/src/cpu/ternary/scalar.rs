//! Portable ternary kernel over the block layout: no intrinsics, written so that the compiler
//! can vectorize the 32-byte inner loops for whatever the target baseline is.

use super::{Activations, Output};
use crate::packing::{BLOCK_BYTES, BLOCK_COLS};
use crate::TernaryMatrix;
use std::ops::Range;

/// Computes output rows `rows` for every activation row.
///
/// # Safety
/// Concurrent calls on one `out` must be given disjoint `rows` (see `Kernel::run`).
pub(super) unsafe fn run(w: &TernaryMatrix, acts: &Activations, rows: Range<usize>, out: &Output) {
    let packed = w.packed();
    for r in rows {
        for n in 0..acts.n {
            let mut dot = 0i32;
            let blocks = acts.row(n).chunks_exact(BLOCK_COLS).take(w.blocks());
            for (b, ab) in blocks.enumerate() {
                let at = w.byte_index(r, b * BLOCK_COLS);
                let wb: &[u8; BLOCK_BYTES] = packed[at..at + BLOCK_BYTES]
                    .try_into()
                    .expect("a whole block");
                dot += block_dot(wb, ab);
            }
            // SAFETY: the caller owns output row `r` (disjoint ranges per task).
            unsafe { out.store(n, r, dot - acts.sums[n]) };
        }
    }
}

/// `Σ code · q` over one 32-byte block and its 128 activations.
fn block_dot(wb: &[u8; BLOCK_BYTES], ab: &[i8]) -> i32 {
    let mut total = 0i32;
    for (slot, q) in ab.chunks_exact(BLOCK_BYTES).enumerate() {
        let shift = 2 * slot;
        // |code · q| ≤ 256, so the products fit i16 and their sum fits i32.
        total += wb
            .iter()
            .zip(q)
            .map(|(&c, &v)| (((c >> shift) & 3) as i16 * v as i16) as i32)
            .sum::<i32>();
    }
    total
}
