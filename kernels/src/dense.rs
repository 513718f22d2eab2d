//! Full-precision matrices: embeddings, LM heads, norms' neighbours and the FP16 LLaMA baseline.
//!
//! A [`DenseMatrix`] keeps the dtype it was stored in (f32, f16 or bf16) so memory matches the
//! checkpoint; ops read rows as f32 and accumulate in f32.

use crate::error::{check_len, KernelError};
use half::{bf16, f16};

/// Row storage of a dense matrix, in its checkpoint dtype.
#[derive(Clone, Debug, PartialEq)]
pub enum DenseData {
    F32(Vec<f32>),
    F16(Vec<f16>),
    BF16(Vec<bf16>),
}

impl DenseData {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            DenseData::F32(v) => v.len(),
            DenseData::F16(v) => v.len(),
            DenseData::BF16(v) => v.len(),
        }
    }

    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes per element.
    pub fn element_bytes(&self) -> usize {
        match self {
            DenseData::F32(_) => 4,
            DenseData::F16(_) | DenseData::BF16(_) => 2,
        }
    }

    /// Name of the dtype as safetensors spells it.
    pub fn dtype_name(&self) -> &'static str {
        match self {
            DenseData::F32(_) => "F32",
            DenseData::F16(_) => "F16",
            DenseData::BF16(_) => "BF16",
        }
    }
}

/// A row-major `rows × cols` matrix of floats (`rows` = output features for a projection).
#[derive(Clone, Debug, PartialEq)]
pub struct DenseMatrix {
    rows: usize,
    cols: usize,
    data: DenseData,
}

impl DenseMatrix {
    /// Wraps row-major data; fails when the length is not `rows · cols`.
    pub fn new(rows: usize, cols: usize, data: DenseData) -> Result<Self, KernelError> {
        check_len("DenseMatrix::new", "data", rows * cols, data.len())?;
        Ok(Self { rows, cols, data })
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The stored data.
    pub fn data(&self) -> &DenseData {
        &self.data
    }

    /// Writes row `row` as f32 into `out` (`out.len() == cols`).
    pub fn row_into(&self, row: usize, out: &mut [f32]) {
        let range = row * self.cols..(row + 1) * self.cols;
        match &self.data {
            DenseData::F32(v) => out.copy_from_slice(&v[range]),
            DenseData::F16(v) => {
                for (o, x) in out.iter_mut().zip(&v[range]) {
                    *o = x.to_f32();
                }
            }
            DenseData::BF16(v) => {
                for (o, x) in out.iter_mut().zip(&v[range]) {
                    *o = x.to_f32();
                }
            }
        }
    }

    /// Dot product of row `row` with `x` (`x.len() == cols`), accumulated in f32.
    pub fn row_dot(&self, row: usize, x: &[f32]) -> f32 {
        let range = row * self.cols..(row + 1) * self.cols;
        match &self.data {
            DenseData::F32(v) => v[range].iter().zip(x).map(|(w, x)| w * x).sum(),
            DenseData::F16(v) => v[range].iter().zip(x).map(|(w, x)| w.to_f32() * x).sum(),
            DenseData::BF16(v) => v[range].iter().zip(x).map(|(w, x)| w.to_f32() * x).sum(),
        }
    }

    /// Bytes this matrix holds in memory.
    pub fn memory_bytes(&self) -> usize {
        self.data.len() * self.data.element_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_read_back_in_every_dtype() {
        let vals = [1.0f32, -2.0, 0.5, 4.0, 3.0, -0.25];
        let datas = [
            DenseData::F32(vals.to_vec()),
            DenseData::F16(vals.iter().map(|&x| f16::from_f32(x)).collect()),
            DenseData::BF16(vals.iter().map(|&x| bf16::from_f32(x)).collect()),
        ];
        for data in datas {
            let m = DenseMatrix::new(2, 3, data).unwrap();
            let mut row = [0.0f32; 3];
            m.row_into(1, &mut row);
            assert_eq!(row, [4.0, 3.0, -0.25]);
            assert_eq!(m.row_dot(0, &[1.0, 1.0, 2.0]), 0.0);
        }
    }

    #[test]
    fn rejects_wrong_length() {
        assert!(DenseMatrix::new(2, 2, DenseData::F32(vec![0.0; 3])).is_err());
    }
}
