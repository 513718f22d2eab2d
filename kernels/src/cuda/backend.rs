//! [`CudaBackend`]: the [`Backend`] ops on one NVIDIA GPU.
//!
//! Start-up ([`CudaBackend::new`]): check that the driver, NVRTC and cuBLAS load (a clean
//! [`CudaError`] naming the missing one otherwise), open device `ordinal`, compile every kernel
//! source for its architecture (`sm_{major}{minor}`) through the on-disk cache, load them, and
//! make a cuBLAS handle on the backend's stream.
//!
//! The [`Backend`] trait passes host slices, so each op here uploads its activations, launches
//! on the backend's one stream ([`DeviceOps`]) and downloads the result; weights are uploaded
//! once and cached ([`super::weights`]). That makes every op checkable against the reference
//! (`kernels/tests/parity_cuda.rs`). Models run device-resident instead (`bitnet-worker`'s CUDA
//! model: activations, KV pool and logits stay on the GPU), through [`CudaBackend::ops`], the
//! device matrices and the stream of the same backend.

use super::blas::Blas;
use super::compile::{default_cache_dir, KernelCompiler};
use super::model_ops::{Heads, PagedTokens};
use super::module::Kernels;
use super::ops::DeviceOps;
use super::weights::{dense_bytes, Cache, DeviceDenseMatrix, DeviceSign, DeviceTernary};
use super::{libs, CudaError};
use crate::backend::{AttentionShape, Backend, PagedKv};
use crate::error::{check_len, KernelError};
use crate::reference::{self, projection_rows, rows_of};
use crate::{DenseMatrix, SignMatrix, TernaryMatrix};
use cudarc::driver::sys::CUdevice_attribute;
use cudarc::driver::{CudaContext, CudaSlice, CudaStream, DeviceRepr, ValidAsZeroBits};
use std::path::PathBuf;
use std::sync::Arc;

/// How to open the backend.
#[derive(Clone, Debug)]
pub struct CudaOptions {
    /// Device index among the visible ones (`CUDA_VISIBLE_DEVICES` applies first).
    pub ordinal: usize,
    /// Kernel cache folder; `None` compiles every time.
    pub cache_dir: Option<PathBuf>,
}

impl Default for CudaOptions {
    fn default() -> Self {
        Self {
            ordinal: 0,
            cache_dir: default_cache_dir(),
        }
    }
}

/// One GPU: its context, one stream, the loaded kernels, cuBLAS and the weight copies.
pub struct CudaBackend {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    kernels: Kernels,
    blas: Blas,
    arch: String,
    name: String,
    sms: usize,
    ternary: Cache<DeviceTernary>,
    dense: Cache<DeviceDenseMatrix>,
    sign: Cache<DeviceSign>,
}

impl CudaBackend {
    /// Device 0 with the default kernel cache.
    pub fn new() -> Result<Self, CudaError> {
        Self::with_options(CudaOptions::default())
    }

    /// The device and cache of `opts`.
    pub fn with_options(opts: CudaOptions) -> Result<Self, CudaError> {
        libs::check_all()?;
        let count = CudaContext::device_count().map_err(|e| CudaError::NoDevice {
            ordinal: opts.ordinal,
            reason: format!("the driver reports no device ({e:?})"),
        })?;
        if opts.ordinal >= count.max(0) as usize {
            return Err(CudaError::NoDevice {
                ordinal: opts.ordinal,
                reason: format!("{count} device(s) visible"),
            });
        }
        let ctx = CudaContext::new(opts.ordinal).map_err(|e| CudaError::NoDevice {
            ordinal: opts.ordinal,
            reason: format!("{e:?}"),
        })?;
        let (major, minor) = ctx
            .compute_capability()
            .map_err(|e| CudaError::driver("compute capability", e))?;
        let arch = format!("sm_{major}{minor}");
        let name = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
        let sms = ctx
            .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(|e| CudaError::driver("multiprocessor count", e))?
            .max(1) as usize;
        let compiler = KernelCompiler::new(&arch, opts.cache_dir)?;
        let kernels = Kernels::load(&ctx, &compiler)?;
        let stream = ctx
            .new_stream()
            .map_err(|e| CudaError::driver("creating a stream", e))?;
        let blas = Blas::new(stream.clone())?;
        Ok(Self {
            ctx,
            stream,
            kernels,
            blas,
            arch,
            name,
            sms,
            ternary: Cache::default(),
            dense: Cache::default(),
            sign: Cache::default(),
        })
    }

    /// The device's name (e.g. "NVIDIA H100 80GB HBM3").
    pub fn device_name(&self) -> &str {
        &self.name
    }

    /// The architecture the kernels were compiled for (e.g. "sm_90").
    pub fn arch(&self) -> &str {
        &self.arch
    }

    /// The CUDA context.
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// The stream every op runs on (collectives enqueue on it too).
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// The kernel launches on device buffers.
    pub fn ops(&self) -> DeviceOps<'_> {
        DeviceOps {
            stream: &self.stream,
            kernels: &self.kernels,
            sms: self.sms,
        }
    }

    /// The device copy of a ternary matrix (uploaded on first use).
    pub fn device_ternary(&self, w: &TernaryMatrix) -> Result<Arc<DeviceTernary>, CudaError> {
        let shape = [w.rows() as u64, w.cols() as u64, w.beta().to_bits() as u64];
        self.ternary.get_or_upload(w.packed(), &shape, || {
            DeviceTernary::upload(&self.stream, w)
        })
    }

    /// The device copy of a dense matrix (uploaded on first use).
    pub fn device_dense(&self, m: &DenseMatrix) -> Result<Arc<DeviceDenseMatrix>, CudaError> {
        let shape = [m.rows() as u64, m.cols() as u64];
        self.dense.get_or_upload(dense_bytes(m), &shape, || {
            DeviceDenseMatrix::upload(&self.stream, m)
        })
    }

    /// `out = x · Wᵀ` on device buffers (cuBLAS, or the int8 kernel).
    pub fn dense_matmul_device(
        &self,
        w: &DeviceDenseMatrix,
        x: &CudaSlice<f32>,
        n: usize,
        out: &mut CudaSlice<f32>,
    ) -> Result<(), CudaError> {
        self.blas.matmul(&self.ops(), w, x, n, out)
    }

    /// Drops every cached weight copy (frees device memory once no op uses them).
    pub fn clear_weight_cache(&self) {
        self.ternary.clear();
        self.dense.clear();
        self.sign.clear();
    }

    /// Waits for every queued op.
    pub fn synchronize(&self) -> Result<(), CudaError> {
        self.stream
            .synchronize()
            .map_err(|e| CudaError::driver("synchronizing", e))
    }

    /// Uploads a host slice.
    pub fn upload<T: DeviceRepr>(&self, host: &[T]) -> Result<CudaSlice<T>, CudaError> {
        self.stream
            .clone_htod(host)
            .map_err(|e| CudaError::driver("copying to the device", e))
    }

    /// A zeroed device buffer of `len` elements.
    pub fn zeros<T: DeviceRepr + ValidAsZeroBits>(
        &self,
        len: usize,
    ) -> Result<CudaSlice<T>, CudaError> {
        self.stream
            .alloc_zeros(len)
            .map_err(|e| CudaError::driver("allocating device memory", e))
    }

    /// Copies a device buffer into `host` (same length) and waits for it.
    pub fn download<T: DeviceRepr>(
        &self,
        dev: &CudaSlice<T>,
        host: &mut [T],
    ) -> Result<(), CudaError> {
        if dev.len() != host.len() {
            return Err(CudaError::Driver {
                what: "copying to the host".into(),
                reason: format!("{} device elements into {}", dev.len(), host.len()),
            });
        }
        self.stream
            .memcpy_dtoh(dev, host)
            .map_err(|e| CudaError::driver("copying to the host", e))?;
        self.synchronize()
    }

    /// Greedy sampling on the GPU: the argmax of each row of `cols` logits (only ids return).
    pub fn argmax_rows(&self, logits: &[f32], cols: usize) -> Result<Vec<u32>, KernelError> {
        let op = "argmax_rows";
        let rows = rows_of(op, logits.len(), cols)?;
        let run = || -> Result<Vec<u32>, CudaError> {
            let d = self.upload(logits)?;
            let mut ids = self.zeros::<u32>(rows)?;
            self.ops().argmax_rows(&d, cols, &mut ids)?;
            let mut out = vec![0u32; rows];
            self.download(&ids, &mut out)?;
            Ok(out)
        };
        run().map_err(|e| e.into_kernel(op))
    }

    /// Runs `f` and maps its [`CudaError`] to a [`KernelError`] of `op`.
    fn run(
        &self,
        op: &'static str,
        f: impl FnOnce() -> Result<(), CudaError>,
    ) -> Result<(), KernelError> {
        f().map_err(|e| e.into_kernel(op))
    }

    /// `f32` host rows through a device op that maps `x` to `out` of the same length.
    fn map_f32(
        &self,
        op: &'static str,
        x: &[f32],
        out: &mut [f32],
        f: impl FnOnce(&CudaSlice<f32>, &mut CudaSlice<f32>) -> Result<(), CudaError>,
    ) -> Result<(), KernelError> {
        self.run(op, || {
            let dx = self.upload(x)?;
            let mut dout = self.zeros::<f32>(out.len())?;
            f(&dx, &mut dout)?;
            self.download(&dout, out)
        })
    }
}

impl Backend for CudaBackend {
    fn name(&self) -> &'static str {
        "cuda"
    }

    fn embedding(
        &self,
        table: &DenseMatrix,
        ids: &[u32],
        out: &mut [f32],
    ) -> Result<(), KernelError> {
        check_len("embedding", "out", ids.len() * table.cols(), out.len())?;
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= table.rows()) {
            return Err(KernelError::TokenOutOfRange {
                op: "embedding",
                id,
                vocab: table.rows(),
            });
        }
        self.run("embedding", || {
            let t = self.device_dense(table)?;
            let d_ids = self.upload(ids)?;
            let mut d_out = self.zeros::<f32>(out.len())?;
            self.ops().embedding(&t, &d_ids, &mut d_out)?;
            self.download(&d_out, out)
        })
    }

    fn rms_norm(
        &self,
        x: &[f32],
        weight: Option<&[f32]>,
        eps: f32,
        cols: usize,
        out: &mut [f32],
    ) -> Result<(), KernelError> {
        let rows = reference::check_norm("rms_norm", x, weight, cols, out)?;
        self.map_f32("rms_norm", x, out, |dx, dout| {
            let dw = weight.map(|w| self.upload(w)).transpose()?;
            self.ops().rms_norm(dx, dw.as_ref(), eps, rows, cols, dout)
        })
    }

    fn layer_norm(
        &self,
        x: &[f32],
        eps: f32,
        cols: usize,
        out: &mut [f32],
    ) -> Result<(), KernelError> {
        let rows = reference::check_norm("layer_norm", x, None, cols, out)?;
        self.map_f32("layer_norm", x, out, |dx, dout| {
            self.ops().layer_norm(dx, eps, rows, cols, dout)
        })
    }

    fn quantize_rows(
        &self,
        x: &[f32],
        cols: usize,
        q: &mut [i8],
        scales: &mut [f32],
    ) -> Result<(), KernelError> {
        let rows = reference::check_quantize(x, cols, q, scales)?;
        self.run("quantize_rows", || {
            let dx = self.upload(x)?;
            let mut dq = self.zeros::<i8>(q.len())?;
            let mut ds = self.zeros::<f32>(rows)?;
            self.ops()
                .quantize_rows(&dx, rows, cols, cols, &mut dq, &mut ds)?;
            self.download(&dq, q)?;
            self.download(&ds, scales)
        })
    }

    fn ternary_matmul(
        &self,
        w: &TernaryMatrix,
        q: &[i8],
        acc: &mut [i32],
    ) -> Result<(), KernelError> {
        let n = projection_rows("ternary_matmul", w.cols(), w.rows(), q.len(), acc.len())?;
        self.run("ternary_matmul", || {
            let dw = self.device_ternary(w)?;
            let ld = dw.padded_cols();
            let mut padded = vec![0i8; n * ld];
            if w.cols() > 0 {
                for (dst, src) in padded.chunks_exact_mut(ld).zip(q.chunks_exact(w.cols())) {
                    dst[..w.cols()].copy_from_slice(src);
                }
            }
            let dq = self.upload(&padded)?;
            let mut dacc = self.zeros::<i32>(acc.len())?;
            self.ops().ternary_matmul(&dw, &dq, n, &mut dacc)?;
            self.download(&dacc, acc)
        })
    }

    fn dequantize_rows(
        &self,
        acc: &[i32],
        beta: f32,
        scales: &[f32],
        out: &mut [f32],
    ) -> Result<(), KernelError> {
        let cols = reference::dequantize_cols(acc, scales, out)?;
        self.run("dequantize_rows", || {
            let da = self.upload(acc)?;
            let ds = self.upload(scales)?;
            let mut dout = self.zeros::<f32>(out.len())?;
            self.ops()
                .dequantize_rows(&da, beta, &ds, cols, &mut dout)?;
            self.download(&dout, out)
        })
    }

    fn dense_matmul(&self, w: &DenseMatrix, x: &[f32], out: &mut [f32]) -> Result<(), KernelError> {
        let n = projection_rows("dense_matmul", w.cols(), w.rows(), x.len(), out.len())?;
        self.map_f32("dense_matmul", x, out, |dx, dout| {
            let dw = self.device_dense(w)?;
            self.dense_matmul_device(&dw, dx, n, dout)
        })
    }

    fn sign_matmul(&self, w: &SignMatrix, x: &[f32], out: &mut [f32]) -> Result<(), KernelError> {
        let n = projection_rows("sign_matmul", w.cols(), w.rows(), x.len(), out.len())?;
        self.map_f32("sign_matmul", x, out, |dx, dout| {
            let shape = [w.rows() as u64, w.cols() as u64];
            let dw = self
                .sign
                .get_or_upload(w.bits(), &shape, || DeviceSign::upload(&self.stream, w))?;
            self.ops().sign_matmul(&dw, dx, n, dout)
        })
    }

    fn scale_columns(&self, x: &mut [f32], factors: &[f32]) -> Result<(), KernelError> {
        rows_of("scale_columns", x.len(), factors.len())?;
        self.run("scale_columns", || {
            let mut dx = self.upload(x)?;
            let df = self.upload(factors)?;
            self.ops().scale_columns(&mut dx, &df)?;
            self.download(&dx, x)
        })
    }

    fn rope(
        &self,
        x: &mut [f32],
        positions: &[usize],
        n_heads: usize,
        head_dim: usize,
        theta: f32,
    ) -> Result<(), KernelError> {
        reference::check_rope_shape(x, positions, n_heads, head_dim)?;
        let pos: Vec<u32> = positions.iter().map(|&p| p as u32).collect();
        let inv_freq = reference::rope_inv_freq(head_dim, theta);
        self.run("rope", || {
            let mut dx = self.upload(x)?;
            let dp = self.upload(&pos)?;
            let df = self.upload(&inv_freq)?;
            self.ops().rope(&mut dx, &dp, &df, n_heads, head_dim)?;
            self.download(&dx, x)
        })
    }

    fn attention(
        &self,
        shape: &AttentionShape,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        out: &mut [f32],
    ) -> Result<(), KernelError> {
        reference::check_attention_shape(shape, q, k, v, out)?;
        self.map_f32("attention", q, out, |dq, dout| {
            let dk = self.upload(k)?;
            let dv = self.upload(v)?;
            self.ops().attention(shape, dq, &dk, &dv, dout)
        })
    }

    /// The paged kernel reading the blocks through the table in place: the pool is uploaded
    /// up to the highest block the table uses (this host-slice path serves the parity suite;
    /// the device-resident model keeps its pool on the GPU).
    fn paged_attention(
        &self,
        shape: &AttentionShape,
        q: &[f32],
        kv: &PagedKv<'_>,
        out: &mut [f32],
    ) -> Result<(), KernelError> {
        reference::check_paged_call(shape, q, kv, out)?;
        let used = shape.ctx_len.div_ceil(kv.block_size);
        let table = &kv.block_table[..used];
        let blocks = table.iter().map(|&b| b as usize + 1).max().unwrap_or(0);
        let rows = blocks * kv.block_size * shape.n_kv_heads * shape.head_dim;
        let first = shape.ctx_len - shape.n_queries;
        let positions: Vec<u32> = (0..shape.n_queries).map(|i| (first + i) as u32).collect();
        let heads = Heads {
            q: shape.n_heads,
            kv: shape.n_kv_heads,
            dim: shape.head_dim,
        };
        self.map_f32("paged_attention", q, out, |dq, dout| {
            let keys = self.upload(&kv.keys[..rows])?;
            let values = self.upload(&kv.values[..rows])?;
            let tables = self.upload(table)?;
            let positions = self.upload(&positions)?;
            let starts = self.zeros::<u32>(shape.n_queries)?;
            let tokens = PagedTokens {
                positions: &positions,
                table_start: &starts,
                tables: &tables,
                block_size: kv.block_size,
            };
            self.ops()
                .paged_attention(heads, dq, &keys, &values, &tokens, dout)
        })
    }

    fn silu_mul(&self, gate: &[f32], up: &[f32], out: &mut [f32]) -> Result<(), KernelError> {
        check_len("silu_mul", "up", gate.len(), up.len())?;
        check_len("silu_mul", "out", gate.len(), out.len())?;
        self.map_f32("silu_mul", gate, out, |dg, dout| {
            let du = self.upload(up)?;
            self.ops().gate("silu_mul", dg, &du, dout)
        })
    }

    fn relu2_mul(&self, gate: &[f32], up: &[f32], out: &mut [f32]) -> Result<(), KernelError> {
        check_len("relu2_mul", "up", gate.len(), up.len())?;
        check_len("relu2_mul", "out", gate.len(), out.len())?;
        self.map_f32("relu2_mul", gate, out, |dg, dout| {
            let du = self.upload(up)?;
            self.ops().gate("relu2_mul", dg, &du, dout)
        })
    }

    fn add_assign(&self, x: &mut [f32], y: &[f32]) -> Result<(), KernelError> {
        check_len("add_assign", "y", x.len(), y.len())?;
        self.run("add_assign", || {
            let mut dx = self.upload(x)?;
            let dy = self.upload(y)?;
            self.ops().add_assign(&mut dx, &dy)?;
            self.download(&dx, x)
        })
    }
}
