//! Decoding of the family-B packed ternary layout (FORMATS.md §2.B) into row-major -1/0/+1
//! values, which [`crate::loader`] hands to `TernaryMatrix::from_ternary` (the kernels' layout).
//!
//! A uint8 tensor of shape `[R, in]` with `R = ceil(out / 4)`: bits `2k..2k+1` (k = 0 the least
//! significant pair) of byte `P[r, c]` hold weight row `k·R + r`, column `c`, as code `t + 1`.
//! Code 3 is never written and is rejected.

use crate::error::CheckpointError;

/// Rows of the packed tensor for `out` output features.
pub fn packed_rows(out: usize) -> usize {
    out.div_ceil(4)
}

/// Unpacks `packed` (`[ceil(out/4), cols]`, row-major) into `out × cols` ternary values.
/// `name` is the tensor name for errors.
pub fn unpack_bitnet(
    name: &str,
    packed: &[u8],
    out: usize,
    cols: usize,
) -> Result<Vec<i8>, CheckpointError> {
    let r_total = packed_rows(out);
    let mut values = vec![0i8; out * cols];
    for (i, &byte) in packed.iter().enumerate().take(r_total * cols) {
        let (r, c) = (i / cols, i % cols);
        for k in 0..4 {
            let code = (byte >> (2 * k)) & 3;
            let row = k * r_total + r;
            if code == 3 {
                return Err(CheckpointError::PackedCode3 {
                    name: name.to_string(),
                    packed_row: r,
                    row,
                    col: c,
                });
            }
            if row < out {
                values[row * cols + c] = code as i8 - 1;
            }
        }
    }
    Ok(values)
}

/// Packs `out × cols` ternary values into the family-B layout (the inverse of
/// [`unpack_bitnet`]; rows past `out` hold code 0, as transformers' `pack_weights` leaves them).
pub fn pack_bitnet(values: &[i8], out: usize, cols: usize) -> Vec<u8> {
    let r_total = packed_rows(out);
    let mut packed = vec![0u8; r_total * cols];
    for (i, &t) in values.iter().enumerate().take(out * cols) {
        let (row, c) = (i / cols, i % cols);
        let (k, r) = (row / r_total, row % r_total);
        packed[r * cols + c] |= ((t + 1) as u8 & 3) << (2 * k);
    }
    packed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_documented_bit_layout() {
        // out = 8, cols = 2: R = 2. Byte P[0,0] = 0b10_01_00_10: codes (k=0..3) 2,0,1,2
        // -> rows 0, 2, 4, 6 of column 0 are +1, -1, 0, +1.
        let packed = [0b1001_0010, 0x55, 0x55, 0x55];
        let v = unpack_bitnet("w", &packed, 8, 2).unwrap();
        let col0: Vec<i8> = (0..8).map(|r| v[r * 2]).collect();
        assert_eq!(col0, vec![1, 0, -1, 0, 0, 0, 1, 0]);
        let col1: Vec<i8> = (0..8).map(|r| v[r * 2 + 1]).collect();
        assert_eq!(col1, vec![0; 8]);
    }

    #[test]
    fn matches_transformers_unpack_example() {
        // The docstring example of transformers' `unpack_weights`.
        let packed = [0b1010_0001, 0b0001_1000, 0b1001_0000, 0b0000_1010];
        let v = unpack_bitnet("w", &packed, 8, 2).unwrap();
        assert_eq!(
            v,
            vec![0, -1, -1, 1, -1, 1, -1, 1, 1, 0, 0, -1, 1, -1, 1, -1]
        );
    }

    #[test]
    fn pack_round_trips_odd_shapes() {
        for (out, cols) in [(4, 1), (8, 3), (12, 5), (6, 7)] {
            let values: Vec<i8> = (0..out * cols).map(|i| ((i * 7) % 3) as i8 - 1).collect();
            let packed = pack_bitnet(&values, out, cols);
            assert_eq!(packed.len(), packed_rows(out) * cols);
            assert_eq!(
                unpack_bitnet("w", &packed, out, cols).unwrap(),
                values,
                "{out}x{cols}"
            );
        }
    }

    #[test]
    fn code_three_names_tensor_row_and_column() {
        // out = 8, cols = 3, R = 2; code 3 in pair k = 2 of byte [1, 2] -> row 2·2 + 1 = 5.
        let mut packed = vec![0x55u8; 6];
        packed[5] = 0b0011_0101;
        let err = unpack_bitnet("model.layers.0.mlp.up_proj.weight", &packed, 8, 3).unwrap_err();
        match err {
            CheckpointError::PackedCode3 {
                ref name,
                packed_row,
                row,
                col,
            } => {
                assert_eq!(name, "model.layers.0.mlp.up_proj.weight");
                assert_eq!((packed_row, row, col), (1, 5, 2));
            }
            other => panic!("unexpected error {other}"),
        }
        assert!(err.to_string().contains("weight row 5, column 2"), "{err}");
    }
}
