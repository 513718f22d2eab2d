//! The launches a device-resident forward pass needs beyond the per-op kernels of
//! [`DeviceOps`] (`super::ops`): paged attention over a KV pool read through block tables in
//! place and the store of new keys and values into it, quantization of one column span of a
//! row (a tensor-parallel rank's part of a gathered row), row and column moves, and 16-bit dense
//! projections with f32 activations for a few tokens. `bitnet-worker`'s CUDA model calls these
//! on buffers that stay on the device between ops; `CudaBackend::paged_attention` stages host
//! slices through [`DeviceOps::paged_attention`] for the parity suite.

use super::ops::{elements, launch_err, warps, DeviceOps};
use super::weights::{DeviceDense, DeviceDenseMatrix};
use super::CudaError;
use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};

/// Largest head size of the attention kernels (ATT_MAX_D · 32 in attention.cu).
pub const MAX_HEAD_DIM: usize = 256;
/// Most tokens `dense_h16_rows` takes in one launch (DENSE_ROWS_MAX_TOKENS in dense.cu).
pub const DENSE_ROWS_MAX_TOKENS: usize = 16;

/// Heads of one attention call (this rank's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heads {
    pub q: usize,
    pub kv: usize,
    pub dim: usize,
}

impl Heads {
    /// Fails unless the attention kernels can run these heads.
    pub fn check(&self) -> Result<(), CudaError> {
        if self.kv == 0 || !self.q.is_multiple_of(self.kv) || self.dim == 0 {
            return Err(CudaError::Shape {
                op: "paged_attention",
                reason: format!(
                    "{} query heads cannot share {} key/value heads of size {}",
                    self.q, self.kv, self.dim
                ),
            });
        }
        if self.dim > MAX_HEAD_DIM {
            return Err(CudaError::Shape {
                op: "paged_attention",
                reason: format!("head_dim {} is above {MAX_HEAD_DIM}", self.dim),
            });
        }
        Ok(())
    }
}

/// What [`DeviceOps::quantize_cols`] quantizes: `rows` rows of `cols`, keeping columns
/// `c0 .. c1` in rows of `ldq` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuantSpan {
    pub rows: usize,
    pub cols: usize,
    pub c0: usize,
    pub c1: usize,
    pub ldq: usize,
}

/// Where each token of a paged-attention batch sits: its position in its own sequence (it sees
/// keys `0 ..= position`) and the offset of its sequence's block table in `tables`.
pub struct PagedTokens<'a> {
    pub positions: &'a CudaSlice<u32>,
    pub table_start: &'a CudaSlice<u32>,
    pub tables: &'a CudaSlice<u32>,
    /// Tokens per block (a power of two).
    pub block_size: usize,
}

impl DeviceOps<'_> {
    /// Causal GQA attention of `n` tokens (`q` / `out`: `n × heads.q · heads.dim`) over one
    /// layer of a paged pool (`keys` / `values`: rows of `heads.kv · heads.dim`), every token
    /// reading its sequence's keys `0 ..= position` through its block table, in place.
    pub fn paged_attention(
        &self,
        heads: Heads,
        q: &CudaSlice<f32>,
        keys: &CudaSlice<f32>,
        values: &CudaSlice<f32>,
        tokens: &PagedTokens<'_>,
        out: &mut CudaSlice<f32>,
    ) -> Result<(), CudaError> {
        heads.check()?;
        let n = tokens.positions.len();
        let bs = tokens.block_size;
        if bs == 0 || !bs.is_power_of_two() {
            return Err(CudaError::Shape {
                op: "paged_attention",
                reason: format!("block size {bs} is not a power of two"),
            });
        }
        let width = n * heads.q * heads.dim;
        if q.len() < width || out.len() < width || tokens.table_start.len() < n {
            return Err(CudaError::Shape {
                op: "paged_attention",
                reason: format!(
                    "{n} tokens need {width} query/output floats and {n} table offsets, got \
                     {} / {} / {}",
                    q.len(),
                    out.len(),
                    tokens.table_start.len()
                ),
            });
        }
        if n == 0 {
            return Ok(());
        }
        let f = self.kernels.get("paged_attention")?;
        let scale = 1.0 / (heads.dim as f32).sqrt();
        let ints = [
            n as i32,
            heads.q as i32,
            heads.kv as i32,
            heads.dim as i32,
            bs.trailing_zeros() as i32,
        ];
        let cfg = LaunchConfig {
            grid_dim: (((n * heads.q) as u32).div_ceil(4), 1, 1),
            block_dim: (128, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut b = self.stream.launch_builder(f);
        b.arg(q).arg(keys).arg(values).arg(out);
        b.arg(tokens.positions)
            .arg(tokens.table_start)
            .arg(tokens.tables);
        for i in &ints {
            b.arg(i);
        }
        b.arg(&scale);
        // SAFETY: argument list matches paged_attention; sizes checked above, table entries
        // checked against the pool by the caller.
        unsafe { b.launch(cfg) }.map_err(launch_err("paged_attention"))?;
        Ok(())
    }

    /// Stores rows of `dim` floats: row `slots[t]` of `keys` / `values` = row `t` of `k` / `v`.
    pub fn kv_store(
        &self,
        keys: &mut CudaSlice<f32>,
        values: &mut CudaSlice<f32>,
        k: &CudaSlice<f32>,
        v: &CudaSlice<f32>,
        slots: &CudaSlice<u32>,
        dim: usize,
    ) -> Result<(), CudaError> {
        let n = slots.len() * dim;
        if k.len() < n || v.len() < n {
            return Err(CudaError::Shape {
                op: "kv_store",
                reason: format!(
                    "{} rows of {dim} from {} / {} floats",
                    slots.len(),
                    k.len(),
                    v.len()
                ),
            });
        }
        if n == 0 {
            return Ok(());
        }
        let f = self.kernels.get("kv_store")?;
        let (dim_i, n_i) = (dim as i32, n as i64);
        // SAFETY: argument list matches kv_store; slots are checked against the pool by the
        // caller.
        unsafe {
            self.stream
                .launch_builder(f)
                .arg(keys)
                .arg(values)
                .arg(k)
                .arg(v)
                .arg(slots)
                .arg(&dim_i)
                .arg(&n_i)
                .launch(elements(n))
        }
        .map_err(launch_err("kv_store"))?;
        Ok(())
    }

    /// Per-row int8 quantization with the scale of the whole `cols`-wide row, keeping columns
    /// `c0 .. c1` in `q` rows of `ldq` bytes (zero padded). `c0 = 0, c1 = cols` is
    /// [`DeviceOps::quantize_rows`].
    pub fn quantize_cols(
        &self,
        x: &CudaSlice<f32>,
        shape: QuantSpan,
        q: &mut CudaSlice<i8>,
        scales: &mut CudaSlice<f32>,
    ) -> Result<(), CudaError> {
        let QuantSpan {
            rows,
            cols,
            c0,
            c1,
            ldq,
        } = shape;
        if c0 > c1 || c1 > cols || c1 - c0 > ldq || x.len() < rows * cols || q.len() < rows * ldq {
            return Err(CudaError::Shape {
                op: "quantize_cols",
                reason: format!("columns {c0}..{c1} of {rows} × {cols} into rows of {ldq}"),
            });
        }
        if rows == 0 {
            return Ok(());
        }
        let f = self.kernels.get("quantize_cols")?;
        let ints = [cols as i32, c0 as i32, c1 as i32, ldq as i32];
        let mut b = self.stream.launch_builder(f);
        b.arg(x).arg(q).arg(scales);
        for i in &ints {
            b.arg(i);
        }
        // SAFETY: argument list matches quantize_cols; sizes checked above.
        unsafe { b.launch(super::ops::rows_cfg(rows)) }.map_err(launch_err("quantize_cols"))?;
        Ok(())
    }

    /// `out[i] = x[idx[i]]` for rows of `cols`.
    pub fn gather_rows(
        &self,
        x: &CudaSlice<f32>,
        idx: &CudaSlice<u32>,
        cols: usize,
        out: &mut CudaSlice<f32>,
    ) -> Result<(), CudaError> {
        let n = idx.len() * cols;
        if out.len() < n {
            return Err(CudaError::Shape {
                op: "gather_rows",
                reason: format!("{} rows of {cols} into {} floats", idx.len(), out.len()),
            });
        }
        if n == 0 {
            return Ok(());
        }
        let f = self.kernels.get("gather_rows")?;
        let (cols_i, n_i) = (cols as i32, n as i64);
        // SAFETY: argument list matches gather_rows; indices are rows of x (built by the caller).
        unsafe {
            self.stream
                .launch_builder(f)
                .arg(x)
                .arg(idx)
                .arg(out)
                .arg(&cols_i)
                .arg(&n_i)
                .launch(elements(n))
        }
        .map_err(launch_err("gather_rows"))?;
        Ok(())
    }

    /// Columns `c0 .. c1` of each of `rows` rows `width` wide, into `out` (`rows × (c1 − c0)`);
    /// columns past `width` read as zero (padding rows to a wider stride).
    pub fn take_columns(
        &self,
        x: &CudaSlice<f32>,
        rows: usize,
        width: usize,
        span: (usize, usize),
        out: &mut CudaSlice<f32>,
    ) -> Result<(), CudaError> {
        let (c0, c1) = span;
        let w = c1.saturating_sub(c0);
        if c0 > c1 || c0 > width || x.len() < rows * width || out.len() < rows * w {
            return Err(CudaError::Shape {
                op: "take_columns",
                reason: format!("columns {c0}..{c1} of {rows} rows of {width}"),
            });
        }
        let n = rows * w;
        if n == 0 {
            return Ok(());
        }
        let f = self.kernels.get("take_columns")?;
        let ints = [width as i32, c0 as i32, w as i32];
        let n_i = n as i64;
        let mut b = self.stream.launch_builder(f);
        b.arg(x).arg(out);
        for i in &ints {
            b.arg(i);
        }
        b.arg(&n_i);
        // SAFETY: argument list matches take_columns; sizes checked above.
        unsafe { b.launch(elements(n)) }.map_err(launch_err("take_columns"))?;
        Ok(())
    }

    /// Whole rows from an all-gather of column blocks: `parts` holds `world` blocks of `rows`
    /// rows of `part_ld` floats (rank `p` owns columns `starts[p] .. starts[p + 1]`); `out` gets
    /// `rows` rows of `starts[world]` columns.
    pub fn interleave_parts(
        &self,
        parts: &CudaSlice<f32>,
        starts: &CudaSlice<u32>,
        rows: usize,
        part_ld: usize,
        width: usize,
        out: &mut CudaSlice<f32>,
    ) -> Result<(), CudaError> {
        let world = starts.len().saturating_sub(1);
        if world == 0 || parts.len() < world * rows * part_ld || out.len() < rows * width {
            return Err(CudaError::Shape {
                op: "interleave_parts",
                reason: format!(
                    "{world} parts of {rows} × {part_ld} into {rows} × {width} ({} / {} floats)",
                    parts.len(),
                    out.len()
                ),
            });
        }
        let n = rows * width;
        if n == 0 {
            return Ok(());
        }
        let f = self.kernels.get("interleave_parts")?;
        let ints = [world as i32, rows as i32, part_ld as i32, width as i32];
        let n_i = n as i64;
        let mut b = self.stream.launch_builder(f);
        b.arg(parts).arg(starts).arg(out);
        for i in &ints {
            b.arg(i);
        }
        b.arg(&n_i);
        // SAFETY: argument list matches interleave_parts; sizes checked above, `starts` is
        // non-decreasing with starts[p + 1] − starts[p] ≤ part_ld (built by the caller).
        unsafe { b.launch(elements(n)) }.map_err(launch_err("interleave_parts"))?;
        Ok(())
    }

    /// `out = x · Wᵀ` for `n ≤ DENSE_ROWS_MAX_TOKENS` rows of `x` against 16-bit weights, with
    /// f32 activations and accumulation (the CPU's numerics); `None` when `w` is not f16/bf16
    /// or `n` is too large (use cuBLAS).
    pub fn dense_h16_rows(
        &self,
        w: &DeviceDenseMatrix,
        x: &CudaSlice<f32>,
        n: usize,
        out: &mut CudaSlice<f32>,
    ) -> Result<Option<()>, CudaError> {
        let (data, bf16) = match &w.data {
            DeviceDense::F16(d) => (d, 0i32),
            DeviceDense::BF16(d) => (d, 1i32),
            _ => return Ok(None),
        };
        if n > DENSE_ROWS_MAX_TOKENS {
            return Ok(None);
        }
        if x.len() < n * w.cols || out.len() < n * w.rows {
            return Err(CudaError::Shape {
                op: "dense_h16_rows",
                reason: format!("{n} rows against a {} × {} matrix", w.rows, w.cols),
            });
        }
        if n * w.rows == 0 {
            return Ok(Some(()));
        }
        let f = self.kernels.get("dense_h16_rows")?;
        let ints = [w.rows as i32, w.cols as i32, n as i32, bf16];
        let mut b = self.stream.launch_builder(f);
        b.arg(data).arg(x).arg(out);
        for i in &ints {
            b.arg(i);
        }
        // SAFETY: argument list matches dense_h16_rows; x is a whole allocation (aligned for the
        // kernel's 16-byte loads), sizes checked above.
        unsafe { b.launch(warps(w.rows)) }.map_err(launch_err("dense_h16_rows"))?;
        Ok(Some(()))
    }
}
