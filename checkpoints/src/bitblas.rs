//! The BitBLAS checkpoint layout (FORMATS.md §2.D), unpermuted: `qweight` int8 `[out, in/4]`
//! with 2-bit codes `t + 2` ∈ {1, 2, 3}, four per byte along the input dimension, least
//! significant first (a partial last byte is padded with code 2, zero); `sw` float `[out]`,
//! `1/β` of each (fused) sub-matrix repeated over its rows; output `(acc / s) / sw`.
//!
//! We write `sw` in F64: about 15% of f32 values β have no f32 `s` with `1/s == β` (the
//! reciprocal is not onto), so an F32 `sw` would move β by an ulp and the logits would no
//! longer be bit-identical to the source. `1 / (1/β)` in f64, rounded to f32, is β exactly.
//! The reader accepts F16, BF16, F32 and F64.
//!
//! Used by [`crate::loader`] (reading) and the compression tool (writing). `q;k;v` are fused
//! into `self_attn.qkv_proj`, `gate;up` into `mlp.gate_up_proj`.

use crate::error::CheckpointError;

/// Bytes of a `qweight` row for `cols` input features.
pub fn qweight_cols(cols: usize) -> usize {
    cols.div_ceil(4)
}

/// Packs `out × cols` ternary values into `[out, ceil(cols/4)]` codes `t + 2`.
pub fn pack_qweight(values: &[i8], out: usize, cols: usize) -> Vec<u8> {
    let width = qweight_cols(cols);
    // Code 2 (zero) in every slot: 0b10_10_10_10.
    let mut packed = vec![0xAAu8; out * width];
    for (r, row) in values.chunks_exact(cols.max(1)).enumerate().take(out) {
        for (c, &t) in row.iter().enumerate() {
            let shift = 2 * (c % 4);
            let byte = &mut packed[r * width + c / 4];
            *byte = (*byte & !(3 << shift)) | (((t + 2) as u8) << shift);
        }
    }
    packed
}

/// Unpacks a `qweight` (`[out, ceil(cols/4)]`) into `out × cols` ternary values; code 0 (never
/// written) is an error naming the tensor, row and column.
pub fn unpack_qweight(
    name: &str,
    packed: &[u8],
    out: usize,
    cols: usize,
) -> Result<Vec<i8>, CheckpointError> {
    let width = qweight_cols(cols);
    let mut values = Vec::with_capacity(out * cols);
    for r in 0..out {
        let row = &packed[r * width..(r + 1) * width];
        for c in 0..cols {
            let code = (row[c / 4] >> (2 * (c % 4))) & 3;
            if code == 0 {
                return Err(CheckpointError::Value {
                    name: name.to_string(),
                    path: Default::default(),
                    message: format!(
                        "BitBLAS code 0 at row {r}, column {c} (codes must be 1, 2 or 3)"
                    ),
                });
            }
            values.push(code as i8 - 2);
        }
    }
    Ok(values)
}

/// The `sw` value written for `beta` (F64, see the module doc).
pub fn sw_for_beta(beta: f32) -> f64 {
    1.0 / beta as f64
}

/// β of rows `start .. start + len` of a `sw` vector: `1 / sw`, which must be the same on every
/// row of the block (one β per sub-matrix).
pub fn beta_of_block(
    name: &str,
    sw: &[f64],
    start: usize,
    len: usize,
) -> Result<f32, CheckpointError> {
    let block = &sw[start..start + len];
    let first = block.first().copied().unwrap_or(f64::NAN);
    let bad = |message: String| CheckpointError::Value {
        name: name.to_string(),
        path: Default::default(),
        message,
    };
    if !(first.is_finite() && first > 0.0) {
        return Err(bad(format!(
            "sw[{start}] = {first} is not a positive finite number"
        )));
    }
    if let Some(i) = block.iter().position(|&v| v != first) {
        return Err(bad(format!(
            "sw is not constant over rows {start}..{} (row {} differs): one scale per \
             sub-matrix is required",
            start + len,
            start + i
        )));
    }
    Ok((1.0 / first) as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qweight_layout_is_least_significant_first() {
        // One row of 5 columns: codes 1, 2, 3, 3 | 1 (+ padding 2, 2, 2).
        let packed = pack_qweight(&[-1, 0, 1, 1, -1], 1, 5);
        assert_eq!(packed, vec![0b11_11_10_01, 0b10_10_10_01]);
        assert_eq!(
            unpack_qweight("w", &packed, 1, 5).unwrap(),
            vec![-1, 0, 1, 1, -1]
        );
        let err = unpack_qweight("w", &[0b11_00_10_01], 1, 4).unwrap_err();
        assert!(
            err.to_string().contains("code 0 at row 0, column 2"),
            "{err}"
        );
    }

    #[test]
    fn sw_inverts_back_to_the_same_beta() {
        let mut exact = 0;
        let n = 20_000;
        for i in 0..n {
            let beta = 1e-3 + i as f32 * 7.3e-6;
            if beta_of_block("sw", &[sw_for_beta(beta)], 0, 1).unwrap() == beta {
                exact += 1;
            }
        }
        assert_eq!(exact, n, "every β in the range round-trips through sw");
        let sw = [2.0f64, 2.0, 4.0];
        assert_eq!(beta_of_block("sw", &sw, 0, 2).unwrap(), 0.5);
        let err = beta_of_block("sw", &sw, 0, 3).unwrap_err().to_string();
        assert!(err.contains("row 2 differs"), "{err}");
    }
}
