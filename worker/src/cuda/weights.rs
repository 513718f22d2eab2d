//! The device copies of one rank's weights ([`crate::shard::ModelShard`]), uploaded once when
//! the CUDA model is built: norms, projections in their family's form (ternary 2-bit packed,
//! dense f32/f16/bf16/int8, OneBit signs with their factors), and the check that the device
//! kernels can run the model at all ([`check_supported`]).

use crate::error::WorkerError;
use crate::shard::{LayerShard, RowParallel, ShardLayout};
use bitnet_checkpoints::{ModelConfig, Norm, Projection};
use bitnet_kernels::cuda::{
    CudaBackend, CudaError, DeviceDenseMatrix, DeviceSign, DeviceTernary, MAX_HEAD_DIM,
};
use cudarc::driver::CudaSlice;

/// An RMSNorm on the device (gain optional).
pub(crate) struct DeviceNorm {
    pub weight: Option<CudaSlice<f32>>,
    pub eps: f32,
}

/// One projection on the device (see `crate::projection` for the arithmetic of each kind).
pub(crate) enum DeviceProjection {
    Ternary {
        weight: DeviceTernary,
        input_norm: Option<DeviceNorm>,
    },
    Dense(DeviceDenseMatrix),
    OneBit {
        signs: DeviceSign,
        input_factor: CudaSlice<f32>,
        weight_scale: CudaSlice<f32>,
    },
}

/// The local part of a row-parallel projection on the device ([`RowParallel`]).
pub(crate) enum DeviceRowParallel {
    Ternary {
        weight: DeviceTernary,
        input_norm: Option<DeviceNorm>,
    },
    Dense(DeviceDenseMatrix),
    Replicated(DeviceProjection),
}

/// One decoder layer of the rank on the device ([`LayerShard`]).
pub(crate) struct DeviceLayer {
    pub input_norm: Option<DeviceNorm>,
    pub q: DeviceProjection,
    pub k: DeviceProjection,
    pub v: DeviceProjection,
    pub o: DeviceRowParallel,
    pub attn_sub_norm: Option<DeviceNorm>,
    pub post_attention_norm: DeviceNorm,
    pub gate: DeviceProjection,
    pub up: DeviceProjection,
    pub down: DeviceRowParallel,
    pub ffn_sub_norm: Option<DeviceNorm>,
}

/// Fails, naming the family, unless the device kernels can run `config` split as `layout`.
pub fn check_supported(config: &ModelConfig, layout: &ShardLayout) -> Result<(), WorkerError> {
    let family = config.family.name();
    let refuse = |why: String| {
        Err(WorkerError::Unsupported(format!(
            "the CUDA forward cannot run this {family} model: {why}"
        )))
    };
    let hd = config.head_dim;
    if hd == 0 || hd > MAX_HEAD_DIM || !hd.is_multiple_of(2) {
        return refuse(format!(
            "head_dim {hd} (the attention kernels take even sizes up to {MAX_HEAD_DIM})"
        ));
    }
    let (hq, hkv) = (layout.local_heads(), layout.local_kv_heads());
    if hkv == 0 || !hq.is_multiple_of(hkv) {
        return refuse(format!("{hq} query heads over {hkv} key/value heads"));
    }
    if config.hidden_size == 0 || config.num_layers == 0 {
        return refuse("an empty model".into());
    }
    Ok(())
}

/// Bytes of device memory the uploaded weights take.
#[derive(Default)]
pub(crate) struct Uploader<'a> {
    pub backend: Option<&'a CudaBackend>,
    pub bytes: u64,
}

impl Uploader<'_> {
    fn backend(&self) -> Result<&CudaBackend, CudaError> {
        self.backend.ok_or_else(|| CudaError::Driver {
            what: "uploading weights".into(),
            reason: "no backend".into(),
        })
    }

    fn floats(&mut self, v: &[f32]) -> Result<CudaSlice<f32>, CudaError> {
        self.bytes += std::mem::size_of_val(v) as u64;
        self.backend()?.upload(v)
    }

    pub fn norm(&mut self, n: &Norm) -> Result<DeviceNorm, CudaError> {
        Ok(DeviceNorm {
            weight: n.weight.as_deref().map(|w| self.floats(w)).transpose()?,
            eps: n.eps,
        })
    }

    fn opt_norm(&mut self, n: &Option<Norm>) -> Result<Option<DeviceNorm>, CudaError> {
        n.as_ref().map(|n| self.norm(n)).transpose()
    }

    fn ternary(&mut self, w: &bitnet_kernels::TernaryMatrix) -> Result<DeviceTernary, CudaError> {
        self.bytes += w.packed().len() as u64;
        DeviceTernary::upload(self.backend()?.stream(), w)
    }

    pub fn dense(
        &mut self,
        m: &bitnet_kernels::DenseMatrix,
    ) -> Result<DeviceDenseMatrix, CudaError> {
        self.bytes += m.memory_bytes() as u64;
        DeviceDenseMatrix::upload(self.backend()?.stream(), m)
    }

    fn projection(&mut self, p: &Projection) -> Result<DeviceProjection, CudaError> {
        Ok(match p {
            Projection::Ternary { weight, input_norm } => DeviceProjection::Ternary {
                weight: self.ternary(weight)?,
                input_norm: self.opt_norm(input_norm)?,
            },
            Projection::Dense(m) => DeviceProjection::Dense(self.dense(m)?),
            Projection::OneBit {
                signs,
                input_factor,
                weight_scale,
            } => {
                self.bytes += signs.bits().len() as u64;
                DeviceProjection::OneBit {
                    signs: DeviceSign::upload(self.backend()?.stream(), signs)?,
                    input_factor: self.floats(input_factor)?,
                    weight_scale: self.floats(weight_scale)?,
                }
            }
        })
    }

    fn row_parallel(&mut self, p: &RowParallel) -> Result<DeviceRowParallel, CudaError> {
        Ok(match p {
            RowParallel::Ternary { weight, input_norm } => DeviceRowParallel::Ternary {
                weight: self.ternary(weight)?,
                input_norm: self.opt_norm(input_norm)?,
            },
            RowParallel::Dense(m) => DeviceRowParallel::Dense(self.dense(m)?),
            RowParallel::Replicated(p) => DeviceRowParallel::Replicated(self.projection(p)?),
        })
    }

    pub fn layer(&mut self, l: &LayerShard) -> Result<DeviceLayer, CudaError> {
        Ok(DeviceLayer {
            input_norm: self.opt_norm(&l.input_norm)?,
            q: self.projection(&l.q)?,
            k: self.projection(&l.k)?,
            v: self.projection(&l.v)?,
            o: self.row_parallel(&l.o)?,
            attn_sub_norm: self.opt_norm(&l.attn_sub_norm)?,
            post_attention_norm: self.norm(&l.post_attention_norm)?,
            gate: self.projection(&l.gate)?,
            up: self.projection(&l.up)?,
            down: self.row_parallel(&l.down)?,
            ffn_sub_norm: self.opt_norm(&l.ffn_sub_norm)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::ShardPlan;
    use crate::SyntheticSpec;

    #[test]
    fn models_the_kernels_cannot_run_are_refused_by_family() {
        let mut config = SyntheticSpec::demo(64).config();
        let layout = ShardPlan::single().layout(&config).unwrap();
        check_supported(&config, &layout).unwrap();
        config.head_dim = 320;
        let msg = check_supported(&config, &layout).unwrap_err().to_string();
        assert!(msg.contains("head_dim 320"), "{msg}");
        assert!(msg.contains(config.family.name()), "{msg}");
    }
}
