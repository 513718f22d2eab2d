//! The kernels' own ternary weight layout and the ternarization rule (FORMATS.md §1).
//!
//! A [`TernaryMatrix`] is `rows` output features by `cols` input features. Row `r` occupies
//! `row_bytes = ceil(cols / 4)` consecutive bytes; byte `j` holds columns `4j .. 4j + 3`, two bits
//! each, column `4j` in the least significant pair. The code of a weight `t ∈ {-1, 0, +1}` is
//! `t + 1` (0, 1, 2); code 3 never appears; padding columns hold code 1 (zero). One `β` (the
//! whole-tensor mean of |W| of the latent weights) scales the whole matrix.
//!
//! Checkpoint readers convert every packed family into this layout; fast kernels may repack it
//! again at load, but this module is the single owner of the canonical layout.

use crate::error::{check_len, KernelError};

/// A ternary weight matrix in the canonical 2-bit layout with its per-tensor scale β.
#[derive(Clone, Debug, PartialEq)]
pub struct TernaryMatrix {
    rows: usize,
    cols: usize,
    row_bytes: usize,
    packed: Vec<u8>,
    beta: f32,
}

/// Counts of -1, 0 and +1 in a ternary matrix.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TernaryHistogram {
    pub minus: u64,
    pub zero: u64,
    pub plus: u64,
}

impl TernaryMatrix {
    /// Packs row-major ternary values (`rows × cols`, each -1, 0 or +1) with scale `beta`.
    pub fn from_ternary(
        rows: usize,
        cols: usize,
        values: &[i8],
        beta: f32,
    ) -> Result<Self, KernelError> {
        check_len(
            "TernaryMatrix::from_ternary",
            "values",
            rows * cols,
            values.len(),
        )?;
        let row_bytes = cols.div_ceil(4);
        let mut packed = vec![0x55u8; rows * row_bytes];
        for (i, &t) in values.iter().enumerate() {
            if !(-1..=1).contains(&t) {
                return Err(KernelError::NotTernary {
                    op: "TernaryMatrix::from_ternary",
                    index: i,
                    value: t,
                });
            }
            let (r, c) = (i / cols, i % cols);
            let byte = &mut packed[r * row_bytes + c / 4];
            let shift = 2 * (c % 4);
            *byte = (*byte & !(3 << shift)) | (((t + 1) as u8) << shift);
        }
        Ok(Self {
            rows,
            cols,
            row_bytes,
            packed,
            beta,
        })
    }

    /// Ternarizes row-major latent weights with the rule of FORMATS.md §1:
    /// `β = max(mean |W|, 1e-5)`, `T = clamp(round_ties_even(W · (1/β)), -1, 1)` in f32.
    pub fn from_latent(rows: usize, cols: usize, latent: &[f32]) -> Result<Self, KernelError> {
        check_len(
            "TernaryMatrix::from_latent",
            "latent",
            rows * cols,
            latent.len(),
        )?;
        let beta = latent_beta(latent);
        let s_w = 1.0f32 / beta;
        let values: Vec<i8> = latent.iter().map(|&w| ternarize(w, s_w)).collect();
        Self::from_ternary(rows, cols, &values, beta)
    }

    /// Number of output features.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of input features.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Bytes per packed row (`ceil(cols / 4)`).
    pub fn row_bytes(&self) -> usize {
        self.row_bytes
    }

    /// The per-tensor scale β (output = i32 accumulator · β / s).
    pub fn beta(&self) -> f32 {
        self.beta
    }

    /// The packed bytes, row-major, `rows × row_bytes`.
    pub fn packed(&self) -> &[u8] {
        &self.packed
    }

    /// The packed bytes of one row.
    pub fn packed_row(&self, row: usize) -> &[u8] {
        &self.packed[row * self.row_bytes..(row + 1) * self.row_bytes]
    }

    /// The ternary value at (`row`, `col`).
    pub fn get(&self, row: usize, col: usize) -> i8 {
        decode(self.packed[row * self.row_bytes + col / 4], col % 4)
    }

    /// All values, row-major, as -1/0/+1.
    pub fn to_ternary(&self) -> Vec<i8> {
        let mut out = Vec::with_capacity(self.rows * self.cols);
        for r in 0..self.rows {
            for c in 0..self.cols {
                out.push(self.get(r, c));
            }
        }
        out
    }

    /// Counts of -1, 0 and +1 (padding excluded).
    pub fn histogram(&self) -> TernaryHistogram {
        let mut h = TernaryHistogram::default();
        for r in 0..self.rows {
            for c in 0..self.cols {
                match self.get(r, c) {
                    -1 => h.minus += 1,
                    0 => h.zero += 1,
                    _ => h.plus += 1,
                }
            }
        }
        h
    }

    /// Bytes this matrix holds in memory (packed codes plus β).
    pub fn memory_bytes(&self) -> usize {
        self.packed.len() + std::mem::size_of::<f32>()
    }
}

/// The whole-tensor weight scale `β = max(mean |W|, 1e-5)`, mean accumulated in f64.
pub fn latent_beta(latent: &[f32]) -> f32 {
    if latent.is_empty() {
        return 1e-5;
    }
    let sum: f64 = latent.iter().map(|w| w.abs() as f64).sum();
    ((sum / latent.len() as f64) as f32).max(1e-5)
}

/// One latent weight to a ternary value given `s_w = 1/β` (f32 multiply, ties to even).
pub fn ternarize(w: f32, s_w: f32) -> i8 {
    (w * s_w).round_ties_even().clamp(-1.0, 1.0) as i8
}

/// Decodes the 2-bit code at position `slot` (0..4) of a packed byte.
#[inline]
pub fn decode(byte: u8, slot: usize) -> i8 {
    ((byte >> (2 * slot)) & 3) as i8 - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_odd_shapes() {
        for (rows, cols) in [(1, 1), (3, 7), (5, 9), (2, 96)] {
            let values: Vec<i8> = (0..rows * cols).map(|i| (i % 3) as i8 - 1).collect();
            let m = TernaryMatrix::from_ternary(rows, cols, &values, 0.5).unwrap();
            assert_eq!(m.to_ternary(), values, "{rows}x{cols}");
            assert_eq!(m.row_bytes(), cols.div_ceil(4));
        }
    }

    #[test]
    fn layout_is_least_significant_first_with_code_t_plus_one() {
        let m = TernaryMatrix::from_ternary(1, 5, &[-1, 0, 1, 1, -1], 1.0).unwrap();
        // cols 0..3: codes 0,1,2,2 -> 0b10_10_01_00; col 4: code 0, padding code 1 x3.
        assert_eq!(m.packed(), &[0b1010_0100, 0b0101_0100]);
    }

    #[test]
    fn rejects_non_ternary_values() {
        let err = TernaryMatrix::from_ternary(1, 2, &[0, 2], 1.0).unwrap_err();
        assert!(matches!(err, KernelError::NotTernary { index: 1, .. }));
    }

    #[test]
    fn ternarization_follows_the_reference_rule() {
        // mean |W| = (0.1 + 0.5 + 1.0 + 0.4) / 4 = 0.5 ; W / β = 0.2, -1, 2, 0.8
        let m = TernaryMatrix::from_latent(1, 4, &[0.1, -0.5, 1.0, 0.4]).unwrap();
        assert_eq!(m.beta(), 0.5);
        assert_eq!(m.to_ternary(), vec![0, -1, 1, 1]);
        // exact halves round to even: 0.5 -> 0, -1.5 -> -2 -> clamp -1
        assert_eq!(ternarize(0.5, 1.0), 0);
        assert_eq!(ternarize(-1.5, 1.0), -1);
        assert_eq!(latent_beta(&[0.0, 0.0]), 1e-5);
    }

    #[test]
    fn histogram_counts_each_value() {
        let m = TernaryMatrix::from_ternary(2, 3, &[-1, 0, 1, 1, 1, 0], 1.0).unwrap();
        let h = m.histogram();
        assert_eq!((h.minus, h.zero, h.plus), (1, 2, 3));
    }
}
