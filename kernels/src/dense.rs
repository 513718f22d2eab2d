//! Full-precision matrices: embeddings, LM heads, norms' neighbours and the FP16 LLaMA baseline.
//!
//! A [`DenseMatrix`] keeps the dtype it was stored in (f32, f16 or bf16) so memory matches the
//! checkpoint; ops read rows as f32 and accumulate in f32. [`DenseMatrix::to_int8`] builds the
//! optional int8 copy with one f32 scale per row (`--lm-head int8`: a numerics change — each
//! weight is rounded to 1/127 of its row's absmax; activations stay f32).

use crate::error::{check_len, KernelError};
use crate::reference;
use half::{bf16, f16};

/// Row storage of a dense matrix, in its checkpoint dtype.
#[derive(Clone, Debug, PartialEq)]
pub enum DenseData {
    F32(Vec<f32>),
    F16(Vec<f16>),
    BF16(Vec<bf16>),
    /// Int8 rows with one scale per row: element `(r, c)` is `values[r · cols + c] · scales[r]`
    /// (built by [`DenseMatrix::to_int8`]; `values` are in `-127 ..= 127`).
    I8 {
        values: Vec<i8>,
        scales: Vec<f32>,
    },
}

impl DenseData {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            DenseData::F32(v) => v.len(),
            DenseData::F16(v) => v.len(),
            DenseData::BF16(v) => v.len(),
            DenseData::I8 { values, .. } => values.len(),
        }
    }

    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes per element (without the per-row scales of [`DenseData::I8`]).
    pub fn element_bytes(&self) -> usize {
        match self {
            DenseData::F32(_) => 4,
            DenseData::F16(_) | DenseData::BF16(_) => 2,
            DenseData::I8 { .. } => 1,
        }
    }

    /// Name of the dtype as safetensors spells it.
    pub fn dtype_name(&self) -> &'static str {
        match self {
            DenseData::F32(_) => "F32",
            DenseData::F16(_) => "F16",
            DenseData::BF16(_) => "BF16",
            DenseData::I8 { .. } => "I8",
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
    /// Wraps row-major data; fails when the length is not `rows · cols` (or, for
    /// [`DenseData::I8`], when there is not one scale per row).
    pub fn new(rows: usize, cols: usize, data: DenseData) -> Result<Self, KernelError> {
        check_len("DenseMatrix::new", "data", rows * cols, data.len())?;
        if let DenseData::I8 { scales, .. } = &data {
            check_len("DenseMatrix::new", "scales", rows, scales.len())?;
        }
        Ok(Self { rows, cols, data })
    }

    /// An int8 copy with one f32 scale per row: `scale = max|row| / 127`,
    /// `q = round_ties_even(w · 127 / max|row|)` (an all-zero row gets scale 0 and zeros).
    /// An [`DenseData::I8`] matrix is returned as is.
    pub fn to_int8(&self) -> DenseMatrix {
        if let DenseData::I8 { .. } = self.data {
            return self.clone();
        }
        let mut values = vec![0i8; self.rows * self.cols];
        let mut scales = vec![0.0f32; self.rows];
        let mut row = vec![0.0f32; self.cols];
        for (r, (q, s)) in values
            .chunks_exact_mut(self.cols.max(1))
            .zip(scales.iter_mut())
            .enumerate()
        {
            self.row_into(r, &mut row);
            let absmax = row.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            if absmax > 0.0 {
                let inv = 127.0 / absmax;
                for (qv, &w) in q.iter_mut().zip(&row) {
                    *qv = (w * inv).round_ties_even().clamp(-127.0, 127.0) as i8;
                }
                *s = absmax / 127.0;
            }
        }
        DenseMatrix {
            rows: self.rows,
            cols: self.cols,
            data: DenseData::I8 { values, scales },
        }
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
            DenseData::I8 { values, scales } => {
                for (o, &q) in out.iter_mut().zip(&values[range]) {
                    *o = q as f32 * scales[row];
                }
            }
        }
    }

    /// Dot product of row `row` with `x` (`x.len() == cols`), accumulated in f32. For
    /// [`DenseData::I8`] (`--lm-head int8`, a numerics change) `x` is quantized too, as every
    /// BitLinear input is (`s = 127 / max|x|`, `qx = round_ties_even(x · s)`), the products are
    /// summed exactly in i32 and the result is `(Σ_k q[k] · qx[k]) as f32 · (scale[row] / s)`.
    pub fn row_dot(&self, row: usize, x: &[f32]) -> f32 {
        let range = row * self.cols..(row + 1) * self.cols;
        match &self.data {
            DenseData::F32(v) => v[range].iter().zip(x).map(|(w, x)| w * x).sum(),
            DenseData::F16(v) => v[range].iter().zip(x).map(|(w, x)| w.to_f32() * x).sum(),
            DenseData::BF16(v) => v[range].iter().zip(x).map(|(w, x)| w.to_f32() * x).sum(),
            DenseData::I8 { values, scales } => {
                let s = reference::activation_scale(x);
                let dot: i32 = values[range]
                    .iter()
                    .zip(x)
                    .map(|(&q, &v)| q as i32 * reference::quantize_value(v, s) as i32)
                    .sum();
                dot as f32 * (scales[row] / s)
            }
        }
    }

    /// Bytes this matrix holds in memory (with the per-row scales of an int8 copy).
    pub fn memory_bytes(&self) -> usize {
        let scales = match &self.data {
            DenseData::I8 { scales, .. } => scales.len() * 4,
            _ => 0,
        };
        self.data.len() * self.data.element_bytes() + scales
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
        let bad_scales = DenseData::I8 {
            values: vec![0; 4],
            scales: vec![1.0],
        };
        assert!(DenseMatrix::new(2, 2, bad_scales).is_err());
    }

    #[test]
    fn int8_copy_has_per_row_scales() {
        let m =
            DenseMatrix::new(2, 3, DenseData::F32(vec![1.0, -2.0, 0.5, 0.0, 0.0, 0.0])).unwrap();
        let q = m.to_int8();
        // row 0: absmax 2 -> scale 2/127; 1.0 -> 63.5 -> 64 (ties to even), 0.5 -> 31.75 -> 32
        assert_eq!(
            q.data(),
            &DenseData::I8 {
                values: vec![64, -127, 32, 0, 0, 0],
                scales: vec![2.0 / 127.0, 0.0],
            }
        );
        assert_eq!(q.memory_bytes(), 6 + 8);
        let mut row = [0.0f32; 3];
        q.row_into(0, &mut row);
        let s = 2.0f32 / 127.0;
        assert_eq!(row, [64.0 * s, -127.0 * s, 32.0 * s]);
        // x = [1, 0, -0.5]: s = 127, qx = [127, 0, -64] (-63.5 ties to even), dot = 64·127 − 32·64
        let dot = (64 * 127 - 32 * 64) as f32;
        assert_eq!(q.row_dot(0, &[1.0, 0.0, -0.5]), dot * (s / 127.0));
        assert_eq!(q.row_dot(1, &[1.0, 1.0, 1.0]), 0.0);
    }
}
