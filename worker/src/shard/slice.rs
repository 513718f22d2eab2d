//! Row and column slices of the weight matrices, built from their values so that the kernels'
//! layouts stay private to `bitnet-kernels`. β of a ternary slice is the whole tensor's β.

use super::layout::Span;
use bitnet_kernels::{DenseData, DenseMatrix, KernelError, SignMatrix, TernaryMatrix};

/// Rows `rows` of a ternary matrix (all columns), keeping β.
pub fn ternary_rows(m: &TernaryMatrix, rows: Span) -> Result<TernaryMatrix, KernelError> {
    let values: Vec<i8> = rows
        .iter()
        .flat_map(|r| (0..m.cols()).map(move |c| m.get(r, c)))
        .collect();
    TernaryMatrix::from_ternary(rows.len(), m.cols(), &values, m.beta())
}

/// Columns `cols` of a ternary matrix (all rows), keeping β.
pub fn ternary_cols(m: &TernaryMatrix, cols: Span) -> Result<TernaryMatrix, KernelError> {
    let values: Vec<i8> = (0..m.rows())
        .flat_map(|r| cols.iter().map(move |c| m.get(r, c)))
        .collect();
    TernaryMatrix::from_ternary(m.rows(), cols.len(), &values, m.beta())
}

/// Picks elements `(r, c)` for `r` in `rows`, `c` in `cols` of a row-major `_ × width` slice.
fn pick<T: Copy>(v: &[T], width: usize, rows: Span, cols: Span) -> Vec<T> {
    rows.iter()
        .flat_map(|r| {
            v[r * width + cols.start..r * width + cols.end]
                .iter()
                .copied()
        })
        .collect()
}

/// The sub-matrix `rows × cols` of a dense matrix, in its own dtype.
pub fn dense_block(m: &DenseMatrix, rows: Span, cols: Span) -> Result<DenseMatrix, KernelError> {
    let w = m.cols();
    let data = match m.data() {
        DenseData::F32(v) => DenseData::F32(pick(v, w, rows, cols)),
        DenseData::F16(v) => DenseData::F16(pick(v, w, rows, cols)),
        DenseData::BF16(v) => DenseData::BF16(pick(v, w, rows, cols)),
        DenseData::I8 { values, scales } => DenseData::I8 {
            values: pick(values, w, rows, cols),
            scales: scales[rows.start..rows.end].to_vec(),
        },
    };
    DenseMatrix::new(rows.len(), cols.len(), data)
}

/// Rows `rows` of a sign matrix.
pub fn sign_rows(m: &SignMatrix, rows: Span) -> Result<SignMatrix, KernelError> {
    let bits: Vec<u8> = rows
        .iter()
        .flat_map(|r| m.row_bits(r).iter().copied())
        .collect();
    SignMatrix::from_packed(rows.len(), m.cols(), bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_keep_values_and_beta() {
        let values: Vec<i8> = (0..7 * 300).map(|i| (i % 3) as i8 - 1).collect();
        let m = TernaryMatrix::from_ternary(7, 300, &values, 0.25).unwrap();
        let rows = ternary_rows(&m, Span::new(2, 5)).unwrap();
        assert_eq!(rows.beta(), 0.25);
        assert_eq!(rows.to_ternary(), values[2 * 300..5 * 300].to_vec());
        let cols = ternary_cols(&m, Span::new(129, 200)).unwrap();
        assert_eq!((cols.rows(), cols.cols(), cols.beta()), (7, 71, 0.25));
        assert_eq!(cols.get(3, 0), m.get(3, 129));
        assert_eq!(cols.get(6, 70), m.get(6, 199));

        let d = DenseMatrix::new(3, 4, DenseData::F32((0..12).map(|v| v as f32).collect()))
            .unwrap()
            .to_int8();
        let b = dense_block(&d, Span::new(1, 3), Span::new(2, 4)).unwrap();
        let mut row = [0.0f32; 2];
        b.row_into(1, &mut row);
        let mut full = [0.0f32; 4];
        d.row_into(2, &mut full);
        assert_eq!(row, [full[2], full[3]]);

        let signs: Vec<i8> = (0..3 * 16)
            .map(|i| if i % 5 == 0 { -1 } else { 1 })
            .collect();
        let s = SignMatrix::from_signs(3, 16, &signs).unwrap();
        let r = sign_rows(&s, Span::new(1, 3)).unwrap();
        assert_eq!(r.get(0, 4), s.get(1, 4));
        assert_eq!(r.get(1, 15), s.get(2, 15));
    }
}
