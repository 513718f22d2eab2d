//! The kernels' own ternary weight layout and the ternarization rule (FORMATS.md §1).
//!
//! A [`TernaryMatrix`] is `rows` output features by `cols` input features, stored so that the
//! SIMD kernels (`crate::cpu::ternary`) decode it with one load and a mask and read it strictly
//! front to back:
//!
//! - columns come in blocks of [`BLOCK_COLS`] = 128: `blocks = ceil(cols / 128)`, `cols` is
//!   padded up to [`TernaryMatrix::padded_cols`] `= blocks · 128`;
//! - a block of one row is [`BLOCK_BYTES`] = 32 bytes; byte `j` (0..32) holds the four columns
//!   `128b + j`, `128b + 32 + j`, `128b + 64 + j`, `128b + 96 + j` in its bit pairs 0, 1, 2, 3
//!   (bits `2i .. 2i + 1` hold column `128b + 32i + j`);
//! - rows come in groups of [`ROW_GROUP`] = 4 (`rows` padded up to a multiple of 4 with zero
//!   rows); a group occupies `4 · blocks · 32` consecutive bytes, block-major: block 0 of its
//!   four rows, then block 1 of its four rows, and so on. So the byte of (row `r`, column `c`)
//!   is at `(r / 4) · 4 · row_bytes + (c / 128) · 128 + (r % 4) · 32 + c % 32`
//!   ([`TernaryMatrix::byte_index`]), in slot `(c % 128) / 32`;
//! - the code of a weight `t ∈ {-1, 0, +1}` is `t + 1` (0, 1, 2); code 3 never appears; padding
//!   (columns and rows) holds code 1 (zero).
//!
//! A 32-byte load of a block gives, after `(v >> 2i) & 3`, the codes of 32 consecutive columns
//! `128b + 32i ..`: the activations need no reordering, only zero padding up to `padded_cols`.
//! A kernel that computes the four rows of a group together reads the matrix as one sequential
//! stream (several interleaved row streams read from DRAM at a fraction of the speed on the
//! machines we measured). One `β` (the whole-tensor mean of |W| of the latent weights) scales
//! the whole matrix. Checkpoint readers hand plain ternary values to
//! [`TernaryMatrix::from_ternary`]; this module is the single owner of the layout.

use crate::error::{check_len, KernelError};

/// Columns per packed block.
pub const BLOCK_COLS: usize = 128;
/// Bytes per packed block of one row (four 2-bit codes per byte).
pub const BLOCK_BYTES: usize = 32;
/// Rows whose blocks are interleaved (and the multiple `rows` is padded to).
pub const ROW_GROUP: usize = 4;
/// A byte whose four codes are all 1 (weight 0): the padding value.
const ZERO_CODES: u8 = 0x55;

/// A ternary weight matrix in the canonical 2-bit layout with its per-tensor scale β.
#[derive(Clone, Debug, PartialEq)]
pub struct TernaryMatrix {
    rows: usize,
    cols: usize,
    blocks: usize,
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
        if let Some(index) = values.iter().position(|t| !(-1..=1).contains(t)) {
            return Err(KernelError::NotTernary {
                op: "TernaryMatrix::from_ternary",
                index,
                value: values[index],
            });
        }
        let blocks = cols.div_ceil(BLOCK_COLS);
        let mut m = Self {
            rows,
            cols,
            blocks,
            packed: vec![ZERO_CODES; rows.next_multiple_of(ROW_GROUP) * blocks * BLOCK_BYTES],
            beta,
        };
        if cols > 0 {
            for (r, src) in values.chunks_exact(cols).enumerate() {
                for (b, block) in src.chunks(BLOCK_COLS).enumerate() {
                    let at = m.byte_index(r, b * BLOCK_COLS);
                    pack_block(block, &mut m.packed[at..at + BLOCK_BYTES]);
                }
            }
        }
        Ok(m)
    }

    /// Takes bytes already in this layout (as [`TernaryMatrix::packed`] returns them, e.g. read
    /// back from a native checkpoint) with scale `beta`. Checks the length, that no code is 3
    /// and that every padding position holds code 1 (zero), so a corrupt file cannot reach the
    /// kernels.
    pub fn from_packed(
        rows: usize,
        cols: usize,
        packed: Vec<u8>,
        beta: f32,
    ) -> Result<Self, KernelError> {
        let blocks = cols.div_ceil(BLOCK_COLS);
        let expected = rows.next_multiple_of(ROW_GROUP) * blocks * BLOCK_BYTES;
        check_len(
            "TernaryMatrix::from_packed",
            "packed",
            expected,
            packed.len(),
        )?;
        let m = Self {
            rows,
            cols,
            blocks,
            packed,
            beta,
        };
        // A code 3 has both bits of a pair set.
        if let Some(at) = m.packed.iter().position(|&b| b & (b >> 1) & 0x55 != 0) {
            let (row, col) = m.position_of(at);
            return Err(KernelError::PackedCode3 {
                op: "TernaryMatrix::from_packed",
                row,
                col,
            });
        }
        let padding_rows = m.rows..m.padded_rows();
        let bad_row = padding_rows
            .flat_map(|r| (0..m.padded_cols()).map(move |c| (r, c)))
            .chain((0..m.rows).flat_map(|r| (m.cols..m.padded_cols()).map(move |c| (r, c))))
            .find(|&(r, c)| {
                decode(m.packed[m.byte_index(r, c)], (c % BLOCK_COLS) / BLOCK_BYTES) != 0
            });
        if let Some((row, col)) = bad_row {
            return Err(KernelError::Shape {
                op: "TernaryMatrix::from_packed",
                reason: format!(
                    "padding position (row {row}, column {col}) of a {rows}x{cols} matrix is not zero"
                ),
            });
        }
        Ok(m)
    }

    /// The (row, first column) of the byte at `index` of the packed bytes (its slot 0).
    fn position_of(&self, index: usize) -> (usize, usize) {
        let group = index / self.group_bytes();
        let in_group = index % self.group_bytes();
        let block = in_group / (ROW_GROUP * BLOCK_BYTES);
        let in_block = in_group % (ROW_GROUP * BLOCK_BYTES);
        (
            group * ROW_GROUP + in_block / BLOCK_BYTES,
            block * BLOCK_COLS + in_block % BLOCK_BYTES,
        )
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

    /// Blocks of [`BLOCK_COLS`] columns per row (`ceil(cols / 128)`).
    pub fn blocks(&self) -> usize {
        self.blocks
    }

    /// `cols` rounded up to a whole number of blocks: the activation length the kernels read.
    pub fn padded_cols(&self) -> usize {
        self.blocks * BLOCK_COLS
    }

    /// `rows` rounded up to a whole number of row groups: the rows the packed bytes hold.
    pub fn padded_rows(&self) -> usize {
        self.rows.next_multiple_of(ROW_GROUP)
    }

    /// Packed bytes per row (`blocks · 32`).
    pub fn row_bytes(&self) -> usize {
        self.blocks * BLOCK_BYTES
    }

    /// Packed bytes per group of [`ROW_GROUP`] rows.
    pub fn group_bytes(&self) -> usize {
        ROW_GROUP * self.row_bytes()
    }

    /// The per-tensor scale β (output = i32 accumulator · β / s).
    pub fn beta(&self) -> f32 {
        self.beta
    }

    /// The packed bytes: `padded_rows / 4` groups of `group_bytes`.
    pub fn packed(&self) -> &[u8] {
        &self.packed
    }

    /// Index in [`TernaryMatrix::packed`] of the byte holding (`row`, `col`); its bit pair is
    /// `(col % 128) / 32`. Valid for padding rows and columns too.
    #[inline]
    pub fn byte_index(&self, row: usize, col: usize) -> usize {
        (row / ROW_GROUP) * self.group_bytes()
            + (col / BLOCK_COLS) * (ROW_GROUP * BLOCK_BYTES)
            + (row % ROW_GROUP) * BLOCK_BYTES
            + col % BLOCK_BYTES
    }

    /// The ternary value at (`row`, `col`).
    pub fn get(&self, row: usize, col: usize) -> i8 {
        debug_assert!(
            row < self.rows && col < self.cols,
            "({row}, {col}) is outside"
        );
        decode(
            self.packed[self.byte_index(row, col)],
            (col % BLOCK_COLS) / BLOCK_BYTES,
        )
    }

    /// All values, row-major, as -1/0/+1.
    pub fn to_ternary(&self) -> Vec<i8> {
        let mut out = Vec::with_capacity(self.rows * self.cols);
        for r in 0..self.rows {
            out.extend((0..self.cols).map(|c| self.get(r, c)));
        }
        out
    }

    /// Counts of -1, 0 and +1 (padding excluded).
    pub fn histogram(&self) -> TernaryHistogram {
        let mut counts = [0u64; 4];
        for &byte in &self.packed {
            for slot in 0..4 {
                counts[(byte >> (2 * slot) & 3) as usize] += 1;
            }
        }
        // Every padding position holds code 1 (zero) by construction.
        let padding = (self.padded_rows() * self.padded_cols() - self.rows * self.cols) as u64;
        TernaryHistogram {
            minus: counts[0],
            zero: counts[1] - padding,
            plus: counts[2],
        }
    }

    /// Bytes this matrix holds in memory (packed codes, padding included, plus β).
    pub fn memory_bytes(&self) -> usize {
        self.packed.len() + std::mem::size_of::<f32>()
    }
}

/// Packs up to 128 ternary values of one row into its 32-byte block (already filled with
/// [`ZERO_CODES`], so the padding of a partial last block stays code 1).
fn pack_block(cols: &[i8], bytes: &mut [u8]) {
    for (slot, quarter) in cols.chunks(BLOCK_BYTES).enumerate() {
        let shift = 2 * slot;
        for (byte, &t) in bytes.iter_mut().zip(quarter) {
            *byte = (*byte & !(3 << shift)) | (((t + 1) as u8) << shift);
        }
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
        for (rows, cols) in [
            (1, 1),
            (3, 7),
            (5, 9),
            (2, 96),
            (4, 128),
            (3, 129),
            (9, 300),
        ] {
            let values: Vec<i8> = (0..rows * cols).map(|i| (i % 3) as i8 - 1).collect();
            let m = TernaryMatrix::from_ternary(rows, cols, &values, 0.5).unwrap();
            assert_eq!(m.to_ternary(), values, "{rows}x{cols}");
            assert_eq!(m.blocks(), cols.div_ceil(128));
            assert_eq!(m.row_bytes(), cols.div_ceil(128) * 32);
            assert_eq!(m.padded_cols(), cols.div_ceil(128) * 128);
            assert_eq!(m.padded_rows(), rows.div_ceil(4) * 4);
            assert_eq!(m.packed().len(), m.padded_rows() * m.row_bytes());
            assert_eq!(m.memory_bytes(), m.packed().len() + 4);
        }
    }

    #[test]
    fn layout_interleaves_quarters_of_a_block_and_blocks_of_a_row_group() {
        // 5 rows of 130 columns: 2 blocks (row_bytes 64), 2 row groups (group_bytes 256).
        let (rows, cols) = (5, 130);
        let mut values = vec![0i8; rows * cols];
        let mut set = |r: usize, c: usize, t: i8| values[r * cols + c] = t;
        // Row 0, columns 0, 32, 64, 96: byte 0 of block 0, slots 0..3.
        set(0, 0, -1);
        set(0, 32, 1);
        set(0, 96, 1);
        // Row 0, column 33 (byte 1, slot 1) and 127 (byte 31, slot 3).
        set(0, 33, -1);
        set(0, 127, -1);
        // Row 0, column 129: block 1, which follows block 0 of all four rows of the group.
        set(0, 129, 1);
        // Row 1, column 0: block 0 of row 1 follows block 0 of row 0.
        set(1, 0, 1);
        // Row 4, column 2: the second group starts at byte 256.
        set(4, 2, -1);
        let m = TernaryMatrix::from_ternary(rows, cols, &values, 1.0).unwrap();
        let p = m.packed();
        assert_eq!(p.len(), 8 * 64, "rows are padded to 8");
        // byte 0: codes 0 (col 0), 2 (col 32), 1 (col 64), 2 (col 96) -> 0b10_01_10_00
        assert_eq!(p[0], 0b1001_1000);
        // byte 1: cols 1, 33, 65, 97 -> codes 1, 0, 1, 1 -> 0b01_01_00_01
        assert_eq!(p[1], 0b0101_0001);
        // byte 31: cols 31, 63, 95, 127 -> codes 1, 1, 1, 0 -> 0b00_01_01_01
        assert_eq!(p[31], 0b0001_0101);
        // row 1 block 0 byte 0: col 0 code 2, others 1 -> 0b01_01_01_10
        assert_eq!(p[32], 0b0101_0110);
        // row 0 block 1 (byte 128): col 128 code 1, padding 1 -> 0x55; byte 129: col 129 code 2.
        assert_eq!(p[128], 0x55);
        assert_eq!(p[129], 0b0101_0110);
        // row 4 block 0 byte 2 (256 + 2): col 2 code 0 -> 0b01_01_01_00
        assert_eq!(p[258], 0b0101_0100);
        let touched = [0, 1, 31, 32, 129, 258];
        for (i, &byte) in p.iter().enumerate() {
            if !touched.contains(&i) {
                assert_eq!(byte, 0x55, "byte {i} is zero weights or padding (code 1)");
            }
        }
        assert_eq!(m.byte_index(0, 129), 129);
        assert_eq!(m.byte_index(4, 2), 258);
        assert_eq!(
            m.byte_index(7, 129),
            256 + 128 + 3 * 32 + 1,
            "padding row 7"
        );
        assert_eq!((m.get(0, 32), m.get(0, 127), m.get(0, 129)), (1, -1, 1));
        assert_eq!((m.get(1, 0), m.get(4, 2), m.get(4, 129)), (1, -1, 0));
    }

    #[test]
    fn from_packed_round_trips_and_rejects_corruption() {
        for (rows, cols) in [(1, 1), (5, 130), (9, 300), (4, 128)] {
            let values: Vec<i8> = (0..rows * cols).map(|i| ((i * 5) % 3) as i8 - 1).collect();
            let m = TernaryMatrix::from_ternary(rows, cols, &values, 0.75).unwrap();
            let back = TernaryMatrix::from_packed(rows, cols, m.packed().to_vec(), 0.75).unwrap();
            assert_eq!(back, m, "{rows}x{cols}");
        }
        let m = TernaryMatrix::from_ternary(5, 130, &[0; 650], 1.0).unwrap();
        let mut bytes = m.packed().to_vec();
        bytes[m.byte_index(4, 129)] = 0x57; // code 3 in slot 0: row 4, column 129
        let err = TernaryMatrix::from_packed(5, 130, bytes, 1.0).unwrap_err();
        assert!(
            matches!(
                err,
                KernelError::PackedCode3 {
                    row: 4,
                    col: 129,
                    ..
                }
            ),
            "{err}"
        );
        let mut bytes = m.packed().to_vec();
        bytes[m.byte_index(6, 0)] = 0x56; // padding row 6 holds a +1
        let err = TernaryMatrix::from_packed(5, 130, bytes, 1.0).unwrap_err();
        assert!(
            err.to_string()
                .contains("padding position (row 6, column 0)"),
            "{err}"
        );
        let err = TernaryMatrix::from_packed(5, 130, vec![0x55; 3], 1.0).unwrap_err();
        assert!(matches!(err, KernelError::Length { .. }), "{err}");
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
        assert_eq!(
            (h.minus, h.zero, h.plus),
            (1, 2, 3),
            "padding is not counted"
        );
        let wide: Vec<i8> = (0..3 * 200).map(|i| (i % 3) as i8 - 1).collect();
        let h = TernaryMatrix::from_ternary(3, 200, &wide, 1.0)
            .unwrap()
            .histogram();
        assert_eq!((h.minus, h.zero, h.plus), (200, 200, 200));
    }
}
