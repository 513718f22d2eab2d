//! The projections of the CUDA model on device buffers, in the arithmetic of each family
//! (`crate::projection`) and with the tensor-parallel split of `crate::ShardedModel`:
//! column-parallel projections read the replicated input and write this rank's output rows
//! (OneBit gathers its pre-norm rows first: its LayerNorm spans every row); row-parallel ones
//! gather the whole input row (padded all-gather + `interleave_parts`), normalize and quantize
//! it exactly as one rank would, multiply this rank's input columns and all-reduce the **i32
//! partial sums before scaling** (f32 sums for dense layers), so ternary logits are
//! bit-identical to a single rank.

use super::model::{CudaModel, Gather};
use super::weights::{DeviceNorm, DeviceProjection, DeviceRowParallel};
use crate::error::WorkerError;
use crate::model::QuantTrace;
use crate::projection::ONEBIT_LN_EPS;
use crate::shard::Span;
use bitnet_kernels::cuda::{CudaError, DeviceSign, DeviceTernary, QuantSpan};
use cudarc::driver::{CudaSlice, DeviceRepr, ValidAsZeroBits};

impl CudaModel {
    /// A zeroed device buffer.
    pub(crate) fn buf<T: DeviceRepr + ValidAsZeroBits>(
        &self,
        len: usize,
    ) -> Result<CudaSlice<T>, CudaError> {
        self.backend.zeros::<T>(len)
    }

    /// RMSNorm of `rows` rows of `cols`.
    pub(crate) fn norm(
        &self,
        norm: &DeviceNorm,
        x: &CudaSlice<f32>,
        rows: usize,
        cols: usize,
    ) -> Result<CudaSlice<f32>, WorkerError> {
        let mut out = self.buf(rows * cols)?;
        self.backend
            .ops()
            .rms_norm(x, norm.weight.as_ref(), norm.eps, rows, cols, &mut out)?;
        Ok(out)
    }

    /// A projection of the whole input `x` (`n × in_features`): `crate::projection`'s
    /// `apply_projection` on the device; fills `trace` for a ternary projection when asked.
    pub(crate) fn apply(
        &self,
        p: &DeviceProjection,
        x: &CudaSlice<f32>,
        n: usize,
        trace: Option<&mut QuantTrace>,
    ) -> Result<CudaSlice<f32>, WorkerError> {
        match p {
            DeviceProjection::Ternary { weight, input_norm } => {
                let normed = input_norm
                    .as_ref()
                    .map(|norm| self.norm(norm, x, n, weight.cols))
                    .transpose()?;
                let input = normed.as_ref().unwrap_or(x);
                let cols = Span::new(0, weight.cols);
                let (acc, scales) =
                    self.quantized_acc(weight, input, n, weight.cols, cols, trace)?;
                self.dequantize(weight, &acc, &scales, n)
            }
            DeviceProjection::Dense(m) => {
                let mut out = self.buf(n * m.rows)?;
                self.backend.dense_matmul_device(m, x, n, &mut out)?;
                Ok(out)
            }
            DeviceProjection::OneBit {
                signs,
                input_factor,
                weight_scale,
            } => {
                let y = self.onebit_pre_norm(signs, input_factor, weight_scale, x, n)?;
                let mut out = self.buf(n * signs.rows)?;
                self.backend
                    .ops()
                    .layer_norm(&y, ONEBIT_LN_EPS, n, signs.rows, &mut out)?;
                Ok(out)
            }
        }
    }

    /// A column-parallel projection of the replicated input to this rank's output rows; `g`
    /// describes how the ranks' rows line up (used by OneBit, whose LayerNorm spans all rows).
    pub(crate) fn column_parallel(
        &self,
        p: &DeviceProjection,
        x: &CudaSlice<f32>,
        n: usize,
        g: &Gather,
        trace: Option<&mut QuantTrace>,
    ) -> Result<CudaSlice<f32>, WorkerError> {
        let DeviceProjection::OneBit {
            signs,
            input_factor,
            weight_scale,
        } = p
        else {
            return self.apply(p, x, n, trace);
        };
        if self.layout.world == 1 {
            return self.apply(p, x, n, trace);
        }
        let y = self.onebit_pre_norm(signs, input_factor, weight_scale, x, n)?;
        let full = self.gather_full(g, &y, n)?;
        let full = full.as_ref().unwrap_or(&y);
        let width = g.width();
        let ops = self.backend.ops();
        let mut normed = self.buf(n * width)?;
        ops.layer_norm(full, ONEBIT_LN_EPS, n, width, &mut normed)?;
        let local = g.local(self.layout.rank);
        let mut out = self.buf(n * local.len())?;
        ops.take_columns(&normed, n, width, (local.start, local.end), &mut out)?;
        Ok(out)
    }

    /// A row-parallel projection: `local` holds this rank's columns of `n` rows of the input
    /// (before the optional sub-norm); returns the whole output rows, identical on every rank.
    pub(crate) fn row_parallel(
        &self,
        p: &DeviceRowParallel,
        sub_norm: Option<&DeviceNorm>,
        local: &CudaSlice<f32>,
        n: usize,
        g: &Gather,
    ) -> Result<CudaSlice<f32>, WorkerError> {
        let width = g.width();
        let span = g.local(self.layout.rank);
        // The whole input row, normalized exactly as on one rank (None: `local` is it).
        let full_input =
            |extra: Option<&DeviceNorm>| -> Result<Option<CudaSlice<f32>>, WorkerError> {
                let mut cur = self.gather_full(g, local, n)?;
                for norm in [sub_norm, extra].into_iter().flatten() {
                    cur = Some(self.norm(norm, cur.as_ref().unwrap_or(local), n, width)?);
                }
                Ok(cur)
            };
        match p {
            DeviceRowParallel::Ternary { weight, input_norm } => {
                let full = full_input(input_norm.as_ref())?;
                let x = full.as_ref().unwrap_or(local);
                let (mut acc, scales) = self.quantized_acc(weight, x, n, width, span, None)?;
                self.collective.all_reduce_sum_i32_device(&mut acc)?;
                self.dequantize(weight, &acc, &scales, n)
            }
            DeviceRowParallel::Dense(m) => {
                let taken = match (sub_norm, self.layout.world) {
                    (None, _) => None,
                    (Some(_), 1) => full_input(None)?,
                    (Some(_), _) => {
                        let full = full_input(None)?;
                        let full = full.as_ref().unwrap_or(local);
                        let mut cols = self.buf(n * span.len())?;
                        self.backend.ops().take_columns(
                            full,
                            n,
                            width,
                            (span.start, span.end),
                            &mut cols,
                        )?;
                        Some(cols)
                    }
                };
                let input = taken.as_ref().unwrap_or(local);
                let mut out = self.buf(n * m.rows)?;
                self.backend.dense_matmul_device(m, input, n, &mut out)?;
                self.collective.all_reduce_sum_f32_device(&mut out)?;
                Ok(out)
            }
            DeviceRowParallel::Replicated(p) => {
                let full = full_input(None)?;
                self.apply(p, full.as_ref().unwrap_or(local), n, None)
            }
        }
    }

    /// The whole rows of an activation this rank holds columns of (`local`: `n` rows of its
    /// width): padded to the widest rank, all-gathered, interleaved. `None` for a group of one
    /// (`local` is already whole).
    pub(crate) fn gather_full(
        &self,
        g: &Gather,
        local: &CudaSlice<f32>,
        n: usize,
    ) -> Result<Option<CudaSlice<f32>>, WorkerError> {
        let world = self.layout.world;
        if world == 1 {
            return Ok(None);
        }
        let mine = g.local(self.layout.rank).len();
        if local.len() != n * mine {
            return Err(WorkerError::Kernel(bitnet_kernels::KernelError::Shape {
                op: "row_parallel",
                reason: format!("{} local values for {n} rows of {mine}", local.len()),
            }));
        }
        let ops = self.backend.ops();
        let ld = g.max_width;
        let padded = if mine == ld {
            None
        } else {
            let mut p = self.buf(n * ld)?;
            ops.take_columns(local, n, mine, (0, ld), &mut p)?;
            Some(p)
        };
        let mut all = self.buf(world * n * ld)?;
        self.collective
            .all_gather_f32_device(padded.as_ref().unwrap_or(local), &mut all)?;
        let mut full = self.buf(n * g.width())?;
        ops.interleave_parts(&all, &g.starts_dev, n, ld, g.width(), &mut full)?;
        Ok(Some(full))
    }

    /// Quantizes columns `cols` of the `width`-wide rows of `x` (scale of the whole row) and
    /// multiplies them by `w` (whose columns they are): exact i32 sums and the row scales.
    /// Fills `trace` (the int8 rows and scales) when asked.
    pub(crate) fn quantized_acc(
        &self,
        w: &DeviceTernary,
        x: &CudaSlice<f32>,
        n: usize,
        width: usize,
        cols: Span,
        trace: Option<&mut QuantTrace>,
    ) -> Result<(CudaSlice<i32>, CudaSlice<f32>), WorkerError> {
        if cols.len() != w.cols {
            return Err(WorkerError::Kernel(bitnet_kernels::KernelError::Shape {
                op: "ternary_matmul",
                reason: format!("{} input columns for a matrix of {}", cols.len(), w.cols),
            }));
        }
        let ops = self.backend.ops();
        let ld = w.padded_cols();
        let mut q = self.buf::<i8>(n * ld)?;
        let mut scales = self.buf::<f32>(n)?;
        let span = QuantSpan {
            rows: n,
            cols: width,
            c0: cols.start,
            c1: cols.end,
            ldq: ld,
        };
        ops.quantize_cols(x, span, &mut q, &mut scales)?;
        if let Some(t) = trace {
            let padded = ops.download(&q)?;
            let q: Vec<i8> = padded
                .chunks_exact(ld.max(1))
                .flat_map(|row| row[..w.cols].iter().copied())
                .collect();
            *t = QuantTrace {
                scales: ops.download(&scales)?,
                q,
            };
        }
        let mut acc = self.buf::<i32>(n * w.rows)?;
        ops.ternary_matmul(w, &q, n, &mut acc)?;
        Ok((acc, scales))
    }

    /// `acc · β / s` per row.
    fn dequantize(
        &self,
        w: &DeviceTernary,
        acc: &CudaSlice<i32>,
        scales: &CudaSlice<f32>,
        n: usize,
    ) -> Result<CudaSlice<f32>, WorkerError> {
        let mut out = self.buf(n * w.rows)?;
        self.backend
            .ops()
            .dequantize_rows(acc, w.beta, scales, w.rows, &mut out)?;
        Ok(out)
    }

    /// OneBit before its LayerNorm: `((x ⊙ g) · Sᵀ) ⊙ h`.
    fn onebit_pre_norm(
        &self,
        signs: &DeviceSign,
        input_factor: &CudaSlice<f32>,
        weight_scale: &CudaSlice<f32>,
        x: &CudaSlice<f32>,
        n: usize,
    ) -> Result<CudaSlice<f32>, WorkerError> {
        let ops = self.backend.ops();
        let mut scaled = self
            .backend
            .stream()
            .clone_dtod(x)
            .map_err(|e| CudaError::driver("copying activations", e))?;
        ops.scale_columns(&mut scaled, input_factor)?;
        let mut y = self.buf(n * signs.rows)?;
        ops.sign_matmul(signs, &scaled, n, &mut y)?;
        ops.scale_columns(&mut y, weight_scale)?;
        Ok(y)
    }
}
