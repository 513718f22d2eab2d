//! Portable int8 kernel (the `scalar` path): exact i32 dot products, one weight row against
//! every activation row of the block.

use super::Int8Block;
use crate::cpu::dense::OutPtr;

/// Rows `r0..r1` of `block` into `out`.
///
/// # Safety
/// `out` must point at `block.nx · block.out_stride` writable floats, and no other thread may
/// access the elements of rows `r0..r1` while this runs.
pub unsafe fn run(block: &Int8Block, r0: usize, r1: usize, out: OutPtr) {
    let cols = block.cols;
    for r in r0..r1 {
        let wr = &block.w[r * cols..][..cols];
        for (j, qr) in block.q.chunks_exact(cols).enumerate() {
            let dot: i32 = wr.iter().zip(qr).map(|(&a, &b)| a as i32 * b as i32).sum();
            // SAFETY: `r < r1 <= out_stride`, `j < nx`, rows `r0..r1` are ours (contract).
            unsafe { block.store(out, j, r, dot) };
        }
    }
}
