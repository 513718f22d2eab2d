//! OneBit's 1-bit sign matrices (FORMATS.md §2.E), kept in the checkpoint's own packing.
//!
//! `rows` output features by `cols` input features (`cols` a multiple of 8). Row `r` occupies
//! `cols / 8` bytes; bit `k` of byte `j` is column `8j + k` (least significant first); a set bit
//! means -1 and a clear bit +1.

use crate::error::{check_len, KernelError};

/// A ±1 matrix, one bit per weight.
#[derive(Clone, Debug, PartialEq)]
pub struct SignMatrix {
    rows: usize,
    cols: usize,
    bits: Vec<u8>,
}

impl SignMatrix {
    /// Wraps packed sign bits (`rows × cols/8` bytes).
    pub fn from_packed(rows: usize, cols: usize, bits: Vec<u8>) -> Result<Self, KernelError> {
        if !cols.is_multiple_of(8) {
            return Err(KernelError::Shape {
                op: "SignMatrix::from_packed",
                reason: format!("input features {cols} is not a multiple of 8"),
            });
        }
        check_len(
            "SignMatrix::from_packed",
            "bits",
            rows * cols / 8,
            bits.len(),
        )?;
        Ok(Self { rows, cols, bits })
    }

    /// Packs row-major signs (each -1 or +1).
    pub fn from_signs(rows: usize, cols: usize, signs: &[i8]) -> Result<Self, KernelError> {
        check_len("SignMatrix::from_signs", "signs", rows * cols, signs.len())?;
        let mut bits = vec![0u8; rows * cols / 8];
        for (i, &s) in signs.iter().enumerate() {
            match s {
                -1 => bits[i / 8] |= 1 << (i % 8),
                1 => {}
                value => {
                    return Err(KernelError::Shape {
                        op: "SignMatrix::from_signs",
                        reason: format!("value {value} at index {i} is not a sign (-1 or +1)"),
                    })
                }
            }
        }
        Self::from_packed(rows, cols, bits)
    }

    /// Number of output features.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of input features.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Every row's packed bits, row after row (`rows · cols / 8` bytes).
    pub fn bits(&self) -> &[u8] {
        &self.bits
    }

    /// The packed bits of one row (`cols / 8` bytes).
    pub fn row_bits(&self, row: usize) -> &[u8] {
        let n = self.cols / 8;
        &self.bits[row * n..(row + 1) * n]
    }

    /// The sign at (`row`, `col`).
    pub fn get(&self, row: usize, col: usize) -> i8 {
        if self.row_bits(row)[col / 8] >> (col % 8) & 1 == 1 {
            -1
        } else {
            1
        }
    }

    /// Bytes this matrix holds in memory.
    pub fn memory_bytes(&self) -> usize {
        self.bits.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_bit_means_minus_one_least_significant_first() {
        let m = SignMatrix::from_packed(1, 8, vec![0b0000_0101]).unwrap();
        let signs: Vec<i8> = (0..8).map(|c| m.get(0, c)).collect();
        assert_eq!(signs, vec![-1, 1, -1, 1, 1, 1, 1, 1]);
        let again = SignMatrix::from_signs(1, 8, &signs).unwrap();
        assert_eq!(again, m);
    }

    #[test]
    fn rejects_columns_not_multiple_of_eight() {
        assert!(SignMatrix::from_packed(1, 7, vec![0]).is_err());
    }
}
