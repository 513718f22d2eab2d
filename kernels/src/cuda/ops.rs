//! [`DeviceOps`]: the kernel launches on device buffers, one method per op. The host-slice
//! [`crate::Backend`] implementation (`super::backend`) stages its inputs through these, and the
//! benchmarks time them directly on device-resident buffers (no transfers).
//!
//! Launch geometry lives here and only here; the kernels document what they expect.

use super::module::Kernels;
use super::weights::{DeviceDense, DeviceDenseMatrix, DeviceSign, DeviceTernary};
use super::CudaError;
use cudarc::driver::{CudaSlice, CudaStream, LaunchConfig, PushKernelArg};
use std::sync::Arc;

/// Threads per block of the one-thread-per-element and warp-per-row kernels.
const THREADS: u32 = 256;
/// Warps per streaming multiprocessor the ternary kernels aim to keep busy (K is split until
/// the grid has about this many warps per SM).
const TARGET_WARPS_PER_SM: usize = 16;
/// Row groups per warp of `ternary_gemv` (GEMV_GROUPS in ternary.cu).
const GEMV_GROUPS: usize = 2;
/// Tokens per warp of `ternary_gemm_dp4a` (GEMM_TOKENS in ternary.cu).
const GEMM_TOKENS: usize = 8;
/// Columns per superblock (4 blocks of 128) of the ternary kernels.
const SUPERBLOCK_BLOCKS: usize = 4;

/// Kernel launches on one stream.
pub struct DeviceOps<'a> {
    pub stream: &'a Arc<CudaStream>,
    pub kernels: &'a Kernels,
    /// Streaming multiprocessors of the device (sizes the K split).
    pub sms: usize,
}

pub(super) fn launch_err(name: &str) -> impl FnOnce(cudarc::driver::DriverError) -> CudaError + '_ {
    move |e| CudaError::driver(format!("launching {name}"), e)
}

pub(super) fn elements(n: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: ((n as u32).div_ceil(THREADS).max(1), 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

pub(super) fn warps(n: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: ((n as u32).div_ceil(THREADS / 32).max(1), 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

pub(super) fn rows_cfg(rows: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (rows as u32, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// The K split of a ternary launch: (superblocks per split, number of splits), so that about
/// `target` warps run in total given `warps` warps per split.
pub fn k_split(blocks: usize, warps: usize, target: usize) -> (usize, usize) {
    let superblocks = blocks.div_ceil(SUPERBLOCK_BLOCKS).max(1);
    let splits = target.div_ceil(warps.max(1)).clamp(1, superblocks);
    let per = superblocks.div_ceil(splits);
    (per, superblocks.div_ceil(per))
}

impl DeviceOps<'_> {
    /// `acc[t, o] = Σ_k q[t, k] · T[o, k]` for `n` tokens; `q` holds `n` rows of
    /// `w.padded_cols()` bytes (zero padded), `acc` `n · w.rows` values (overwritten).
    pub fn ternary_matmul(
        &self,
        w: &DeviceTernary,
        q: &CudaSlice<i8>,
        n: usize,
        acc: &mut CudaSlice<i32>,
    ) -> Result<(), CudaError> {
        self.stream
            .memset_zeros(acc)
            .map_err(|e| CudaError::driver("zeroing accumulators", e))?;
        if n == 0 || w.rows == 0 {
            return Ok(());
        }
        let groups = w.rows.div_ceil(4);
        let target = self.sms * TARGET_WARPS_PER_SM;
        let (rows, blocks) = (w.rows as i32, w.blocks as i32);
        if n == 1 {
            let warps_rows = groups.div_ceil(GEMV_GROUPS);
            let (per, splits) = k_split(w.blocks, warps_rows, target);
            let cfg = LaunchConfig {
                grid_dim: ((warps_rows as u32).div_ceil(THREADS / 32), splits as u32, 1),
                block_dim: (THREADS, 1, 1),
                shared_mem_bytes: 0,
            };
            let f = self.kernels.get("ternary_gemv")?;
            let per = per as i32;
            // SAFETY: argument list matches ternary_gemv; buffers hold the sizes documented above.
            unsafe {
                self.stream
                    .launch_builder(f)
                    .arg(&w.packed)
                    .arg(q)
                    .arg(acc)
                    .arg(&rows)
                    .arg(&blocks)
                    .arg(&per)
                    .launch(cfg)
            }
            .map_err(launch_err("ternary_gemv"))?;
            return Ok(());
        }
        let tiles = n.div_ceil(GEMM_TOKENS);
        let (per, splits) = k_split(w.blocks, groups * tiles, target);
        let cfg = LaunchConfig {
            grid_dim: (
                (groups as u32).div_ceil(THREADS / 32),
                splits as u32,
                tiles as u32,
            ),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        let f = self.kernels.get("ternary_gemm_dp4a")?;
        let (n, per) = (n as i32, per as i32);
        // SAFETY: argument list matches ternary_gemm_dp4a.
        unsafe {
            self.stream
                .launch_builder(f)
                .arg(&w.packed)
                .arg(q)
                .arg(acc)
                .arg(&rows)
                .arg(&blocks)
                .arg(&n)
                .arg(&per)
                .launch(cfg)
        }
        .map_err(launch_err("ternary_gemm_dp4a"))?;
        Ok(())
    }

    /// Per-row int8 quantization of `rows` rows of `cols`; `q` rows are `ldq` bytes (zero padded).
    pub fn quantize_rows(
        &self,
        x: &CudaSlice<f32>,
        rows: usize,
        cols: usize,
        ldq: usize,
        q: &mut CudaSlice<i8>,
        scales: &mut CudaSlice<f32>,
    ) -> Result<(), CudaError> {
        if rows == 0 {
            return Ok(());
        }
        let f = self.kernels.get("quantize_rows")?;
        let (cols, ldq) = (cols as i32, ldq as i32);
        // SAFETY: argument list matches quantize_rows.
        unsafe {
            self.stream
                .launch_builder(f)
                .arg(x)
                .arg(q)
                .arg(scales)
                .arg(&cols)
                .arg(&ldq)
                .launch(rows_cfg(rows))
        }
        .map_err(launch_err("quantize_rows"))?;
        Ok(())
    }

    /// `out = acc · (beta / scales[row])` over rows of `cols`.
    pub fn dequantize_rows(
        &self,
        acc: &CudaSlice<i32>,
        beta: f32,
        scales: &CudaSlice<f32>,
        cols: usize,
        out: &mut CudaSlice<f32>,
    ) -> Result<(), CudaError> {
        let total = acc.len();
        if total == 0 {
            return Ok(());
        }
        let f = self.kernels.get("dequantize_rows")?;
        let (cols, total_i) = (cols as i32, total as i32);
        // SAFETY: argument list matches dequantize_rows.
        unsafe {
            self.stream
                .launch_builder(f)
                .arg(acc)
                .arg(&beta)
                .arg(scales)
                .arg(out)
                .arg(&cols)
                .arg(&total_i)
                .launch(elements(total))
        }
        .map_err(launch_err("dequantize_rows"))?;
        Ok(())
    }

    /// RMSNorm of `rows` rows of `cols` (`weight` of `cols`, or none).
    pub fn rms_norm(
        &self,
        x: &CudaSlice<f32>,
        weight: Option<&CudaSlice<f32>>,
        eps: f32,
        rows: usize,
        cols: usize,
        out: &mut CudaSlice<f32>,
    ) -> Result<(), CudaError> {
        if rows == 0 {
            return Ok(());
        }
        let f = self.kernels.get("rms_norm")?;
        let cols = cols as i32;
        let null: u64 = 0;
        let mut b = self.stream.launch_builder(f);
        b.arg(x);
        match weight {
            Some(w) => b.arg(w),
            None => b.arg(&null),
        };
        b.arg(&eps).arg(&cols).arg(out);
        // SAFETY: argument list matches rms_norm (a null weight means none).
        unsafe { b.launch(rows_cfg(rows)) }.map_err(launch_err("rms_norm"))?;
        Ok(())
    }

    /// Parameter-free LayerNorm of `rows` rows of `cols`.
    pub fn layer_norm(
        &self,
        x: &CudaSlice<f32>,
        eps: f32,
        rows: usize,
        cols: usize,
        out: &mut CudaSlice<f32>,
    ) -> Result<(), CudaError> {
        if rows == 0 {
            return Ok(());
        }
        let f = self.kernels.get("layer_norm")?;
        let cols = cols as i32;
        // SAFETY: argument list matches layer_norm.
        unsafe {
            self.stream
                .launch_builder(f)
                .arg(x)
                .arg(&eps)
                .arg(&cols)
                .arg(out)
                .launch(rows_cfg(rows))
        }
        .map_err(launch_err("layer_norm"))?;
        Ok(())
    }

    /// Rotate-half RoPE in place; `positions` one per token, `inv_freq` `head_dim / 2` values.
    pub fn rope(
        &self,
        x: &mut CudaSlice<f32>,
        positions: &CudaSlice<u32>,
        inv_freq: &CudaSlice<f32>,
        n_heads: usize,
        head_dim: usize,
    ) -> Result<(), CudaError> {
        let tokens = positions.len();
        let pairs = tokens * n_heads * (head_dim / 2);
        if pairs == 0 {
            return Ok(());
        }
        let f = self.kernels.get("rope")?;
        let (t, h, d) = (tokens as i32, n_heads as i32, head_dim as i32);
        // SAFETY: argument list matches rope.
        unsafe {
            self.stream
                .launch_builder(f)
                .arg(x)
                .arg(positions)
                .arg(inv_freq)
                .arg(&t)
                .arg(&h)
                .arg(&d)
                .launch(elements(pairs))
        }
        .map_err(launch_err("rope"))?;
        Ok(())
    }

    /// Causal GQA attention over one sequence's contiguous K/V (see `crate::AttentionShape`).
    pub fn attention(
        &self,
        shape: &crate::AttentionShape,
        q: &CudaSlice<f32>,
        k: &CudaSlice<f32>,
        v: &CudaSlice<f32>,
        out: &mut CudaSlice<f32>,
    ) -> Result<(), CudaError> {
        let pairs = shape.n_queries * shape.n_heads;
        if pairs == 0 {
            return Ok(());
        }
        if shape.head_dim > 256 {
            return Err(CudaError::Driver {
                what: "attention".into(),
                reason: format!("head_dim {} is above 256", shape.head_dim),
            });
        }
        let f = self.kernels.get("attention")?;
        let scale = 1.0 / (shape.head_dim as f32).sqrt();
        let ints = [
            shape.n_heads as i32,
            shape.n_kv_heads as i32,
            shape.head_dim as i32,
            shape.n_queries as i32,
            shape.ctx_len as i32,
        ];
        let cfg = LaunchConfig {
            grid_dim: ((pairs as u32).div_ceil(4), 1, 1),
            block_dim: (128, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut b = self.stream.launch_builder(f);
        b.arg(q).arg(k).arg(v).arg(out);
        for i in &ints {
            b.arg(i);
        }
        b.arg(&scale);
        // SAFETY: argument list matches attention.
        unsafe { b.launch(cfg) }.map_err(launch_err("attention"))?;
        Ok(())
    }

    /// `out = gate ∘ up` through the gating kernel `name` (`silu_mul` or `relu2_mul`).
    pub fn gate(
        &self,
        name: &'static str,
        gate: &CudaSlice<f32>,
        up: &CudaSlice<f32>,
        out: &mut CudaSlice<f32>,
    ) -> Result<(), CudaError> {
        let n = gate.len();
        if n == 0 {
            return Ok(());
        }
        let f = self.kernels.get(name)?;
        let n_i = n as i64;
        // SAFETY: argument list matches silu_mul / relu2_mul.
        unsafe {
            self.stream
                .launch_builder(f)
                .arg(gate)
                .arg(up)
                .arg(out)
                .arg(&n_i)
                .launch(elements(n))
        }
        .map_err(launch_err(name))?;
        Ok(())
    }

    /// `x += y`.
    pub fn add_assign(&self, x: &mut CudaSlice<f32>, y: &CudaSlice<f32>) -> Result<(), CudaError> {
        let n = x.len();
        if n == 0 {
            return Ok(());
        }
        let f = self.kernels.get("add_assign")?;
        let n_i = n as i64;
        // SAFETY: argument list matches add_assign.
        unsafe {
            self.stream
                .launch_builder(f)
                .arg(x)
                .arg(y)
                .arg(&n_i)
                .launch(elements(n))
        }
        .map_err(launch_err("add_assign"))?;
        Ok(())
    }

    /// `x[r, c] *= factors[c]`.
    pub fn scale_columns(
        &self,
        x: &mut CudaSlice<f32>,
        factors: &CudaSlice<f32>,
    ) -> Result<(), CudaError> {
        let n = x.len();
        if n == 0 {
            return Ok(());
        }
        let f = self.kernels.get("scale_columns")?;
        let (cols, n_i) = (factors.len() as i32, n as i64);
        // SAFETY: argument list matches scale_columns.
        unsafe {
            self.stream
                .launch_builder(f)
                .arg(x)
                .arg(factors)
                .arg(&cols)
                .arg(&n_i)
                .launch(elements(n))
        }
        .map_err(launch_err("scale_columns"))?;
        Ok(())
    }

    /// `out[t] = table[ids[t]]` as f32 (ids already checked against the table).
    pub fn embedding(
        &self,
        table: &DeviceDenseMatrix,
        ids: &CudaSlice<u32>,
        out: &mut CudaSlice<f32>,
    ) -> Result<(), CudaError> {
        let n = ids.len() * table.cols;
        if n == 0 {
            return Ok(());
        }
        let (cols, n_i) = (table.cols as i32, n as i64);
        let name = match &table.data {
            DeviceDense::F32(_) => "embedding_f32",
            DeviceDense::F16(_) => "embedding_f16",
            DeviceDense::BF16(_) => "embedding_bf16",
            DeviceDense::I8 { .. } => "embedding_i8",
        };
        let f = self.kernels.get(name)?;
        let mut b = self.stream.launch_builder(f);
        match &table.data {
            DeviceDense::F32(t) => b.arg(t),
            DeviceDense::F16(t) | DeviceDense::BF16(t) => b.arg(t),
            DeviceDense::I8 { values, scales } => b.arg(values).arg(scales),
        };
        b.arg(ids).arg(out).arg(&cols).arg(&n_i);
        // SAFETY: argument list matches the embedding kernel of the table's dtype.
        unsafe { b.launch(elements(n)) }.map_err(launch_err(name))?;
        Ok(())
    }

    /// f32 activations to 16-bit floats (`f32_to_f16` or `f32_to_bf16`) for cuBLAS.
    pub fn to_half(
        &self,
        name: &'static str,
        x: &CudaSlice<f32>,
        out: &mut CudaSlice<u16>,
    ) -> Result<(), CudaError> {
        let n = x.len();
        if n == 0 {
            return Ok(());
        }
        let f = self.kernels.get(name)?;
        let n_i = n as i64;
        // SAFETY: argument list matches f32_to_f16 / f32_to_bf16.
        unsafe {
            self.stream
                .launch_builder(f)
                .arg(x)
                .arg(out)
                .arg(&n_i)
                .launch(elements(n))
        }
        .map_err(launch_err(name))?;
        Ok(())
    }

    /// The int8 LM head (W8A8): `x` is quantized per token as every BitLinear input
    /// (`quantize_rows`), then `out[t, o] = (Σ w[o, k] q[t, k]) as f32 · (s_w[o] / s_x[t])`
    /// with exact i32 sums (`w` must hold [`DeviceDense::I8`]).
    pub fn dense_i8(
        &self,
        w: &DeviceDenseMatrix,
        x: &CudaSlice<f32>,
        n: usize,
        out: &mut CudaSlice<f32>,
    ) -> Result<(), CudaError> {
        let DeviceDense::I8 { values, scales } = &w.data else {
            return Err(CudaError::Driver {
                what: "dense_i8_matmul".into(),
                reason: "the matrix is not int8".into(),
            });
        };
        if n * w.rows == 0 {
            return Ok(());
        }
        let mut q = self
            .stream
            .alloc_zeros::<i8>(n * w.cols)
            .map_err(|e| CudaError::driver("allocating int8 activations", e))?;
        let mut q_scales = self
            .stream
            .alloc_zeros::<f32>(n)
            .map_err(|e| CudaError::driver("allocating activation scales", e))?;
        self.quantize_rows(x, n, w.cols, w.cols, &mut q, &mut q_scales)?;
        let f = self.kernels.get("dense_i8_matmul")?;
        let (r, c, n_i) = (w.rows as i32, w.cols as i32, n as i32);
        // SAFETY: argument list matches dense_i8_matmul.
        unsafe {
            self.stream
                .launch_builder(f)
                .arg(values)
                .arg(scales)
                .arg(&q)
                .arg(&q_scales)
                .arg(out)
                .arg(&r)
                .arg(&c)
                .arg(&n_i)
                .launch(warps(n * w.rows))
        }
        .map_err(launch_err("dense_i8_matmul"))?;
        Ok(())
    }

    /// OneBit sign projection `out[t, o] = Σ S[o, k] x[t, k]`.
    pub fn sign_matmul(
        &self,
        w: &DeviceSign,
        x: &CudaSlice<f32>,
        n: usize,
        out: &mut CudaSlice<f32>,
    ) -> Result<(), CudaError> {
        if n * w.rows == 0 {
            return Ok(());
        }
        let f = self.kernels.get("sign_matmul")?;
        let (r, c, n_i) = (w.rows as i32, w.cols as i32, n as i32);
        // SAFETY: argument list matches sign_matmul.
        unsafe {
            self.stream
                .launch_builder(f)
                .arg(&w.bits)
                .arg(x)
                .arg(out)
                .arg(&r)
                .arg(&c)
                .arg(&n_i)
                .launch(warps(n * w.rows))
        }
        .map_err(launch_err("sign_matmul"))?;
        Ok(())
    }

    /// Greedy sampling: the first index of the largest value of each row of `cols` logits.
    pub fn argmax_rows(
        &self,
        logits: &CudaSlice<f32>,
        cols: usize,
        ids: &mut CudaSlice<u32>,
    ) -> Result<(), CudaError> {
        let rows = ids.len();
        if rows == 0 {
            return Ok(());
        }
        let f = self.kernels.get("argmax_rows")?;
        let cols = cols as i32;
        // SAFETY: argument list matches argmax_rows.
        unsafe {
            self.stream
                .launch_builder(f)
                .arg(logits)
                .arg(ids)
                .arg(&cols)
                .launch(rows_cfg(rows))
        }
        .map_err(launch_err("argmax_rows"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::k_split;

    #[test]
    fn k_split_covers_every_superblock_once() {
        for blocks in [1, 3, 4, 5, 20, 54, 224] {
            for warps in [1, 7, 100, 5000] {
                let (per, splits) = k_split(blocks, warps, 2112);
                let superblocks = blocks.div_ceil(4);
                assert!(per * splits >= superblocks, "{blocks} {warps}");
                assert!(per * (splits - 1) < superblocks, "no empty split");
                assert!(
                    splits == 1 || splits * warps <= 2112 + warps,
                    "near the target"
                );
            }
        }
    }
}
