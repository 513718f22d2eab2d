//! Builds [`ModelWeights`] from the tensors of a [`SafetensorsDir`] for every family
//! (FORMATS.md §2), strictly: a missing tensor, a leftover tensor, a wrong shape or dtype is an
//! error naming it.
//!
//! Packed family-B weights are converted to the kernels' [`TernaryMatrix`] layout, latent
//! weights (A, B online, F) are ternarized with the reference rule, dense ones (C) keep their
//! dtype, OneBit sign bits (E) are kept as stored. Called by [`crate::load_model`].

use crate::config::{Family, ModelConfig};
use crate::error::CheckpointError;
use crate::packed::{packed_rows, unpack_bitnet};
use crate::safetensors_dir::{SafetensorsDir, TensorRef, FLOAT_DTYPES};
use crate::weights::{LayerWeights, ModelWeights, Norm, Projection};
use bitnet_kernels::{DenseData, DenseMatrix, SignMatrix, TernaryMatrix};
use safetensors::Dtype;
use std::cell::RefCell;
use std::collections::BTreeSet;

/// How many names an [`CheckpointError::UnexpectedTensors`] lists.
const LISTED_EXTRAS: usize = 5;
/// eps of the per-projection RMSNorm of family F (fixed, not saved).
const LLAMA_BITNET_NORM_EPS: f32 = 1e-6;

/// How the seven projections of a layer are stored.
#[derive(Clone, Copy, Debug, PartialEq)]
enum ProjectionFormat {
    /// Float `[out, in]` latent weights, ternarized at load.
    Latent,
    /// uint8 `[out/4, in]` plus `weight_scale` `[1]`; `divide`: β = 1 / weight_scale.
    Packed { divide: bool },
    /// Float `[out, in]`, kept as is.
    Dense,
    /// int8 `[out, in/8]` sign bits, `weight_scale` `[out]`, `input_factor` `[in]`.
    OneBit,
}

/// The RMSNorm on the input of each BitLinear, when the family has one.
#[derive(Clone, Copy, Debug, PartialEq)]
struct ProjectionNorm {
    /// `<proj>.rms_norm.weight` must exist (else: used when present, unit gain otherwise).
    weight_required: bool,
    eps: f32,
}

/// What tensors a family's layers hold.
#[derive(Clone, Copy, Debug)]
struct Layout {
    format: ProjectionFormat,
    projection_norm: Option<ProjectionNorm>,
    /// `input_layernorm` must exist (else: used when present).
    input_norm_required: bool,
    /// Names of the attention and FFN sub-norms (families A and B).
    sub_norms: Option<(&'static str, &'static str)>,
}

impl Layout {
    fn of(config: &ModelConfig) -> Self {
        let quantized = config.quantization.as_ref().map(|q| {
            let format = if q.mode == "online" {
                ProjectionFormat::Latent
            } else {
                ProjectionFormat::Packed {
                    divide: q.linear_class == "bitlinear",
                }
            };
            let norm = q.use_rms_norm.then_some(ProjectionNorm {
                weight_required: true,
                eps: q.rms_norm_eps,
            });
            (format, norm)
        });
        let bitnet_default = (ProjectionFormat::Packed { divide: true }, None);
        match config.family {
            Family::OneBitLlm => Layout {
                format: ProjectionFormat::Latent,
                projection_norm: None,
                input_norm_required: true,
                sub_norms: Some(("self_attn.inner_attn_ln", "mlp.ffn_layernorm")),
            },
            Family::BitNet => {
                let (format, projection_norm) = quantized.unwrap_or(bitnet_default);
                Layout {
                    format,
                    projection_norm,
                    input_norm_required: true,
                    sub_norms: Some(("self_attn.attn_sub_norm", "mlp.ffn_sub_norm")),
                }
            }
            Family::Llama => Layout {
                format: ProjectionFormat::Dense,
                projection_norm: None,
                input_norm_required: true,
                sub_norms: None,
            },
            Family::OneBit => Layout {
                format: ProjectionFormat::OneBit,
                projection_norm: None,
                input_norm_required: true,
                sub_norms: None,
            },
            Family::LlamaBitNet => {
                let (format, projection_norm) = quantized.unwrap_or((
                    ProjectionFormat::Latent,
                    Some(ProjectionNorm {
                        weight_required: false,
                        eps: LLAMA_BITNET_NORM_EPS,
                    }),
                ));
                Layout {
                    format,
                    projection_norm,
                    input_norm_required: false,
                    sub_norms: None,
                }
            }
        }
    }
}

/// Reads tensors by name and remembers which ones were used.
struct Reader<'a> {
    st: &'a SafetensorsDir,
    used: RefCell<BTreeSet<String>>,
}

impl<'a> Reader<'a> {
    fn take(&self, name: &str) -> Result<TensorRef<'a>, CheckpointError> {
        let t = self.st.tensor(name)?;
        self.used.borrow_mut().insert(name.to_string());
        Ok(t)
    }

    fn take_optional(&self, name: &str) -> Option<TensorRef<'a>> {
        let t = self.st.get(name)?;
        self.used.borrow_mut().insert(name.to_string());
        Some(t)
    }

    /// A float vector of shape `[len]` as f32.
    fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>, CheckpointError> {
        self.vector_of(self.take(name)?, len)
    }

    fn vector_of(&self, t: TensorRef<'_>, len: usize) -> Result<Vec<f32>, CheckpointError> {
        t.expect_dtype(&FLOAT_DTYPES)?;
        t.expect_shape(&[len])?;
        t.to_f32()
    }

    fn norm(&self, name: &str, len: usize, eps: f32) -> Result<Norm, CheckpointError> {
        Ok(Norm {
            weight: Some(self.vector(name, len)?),
            eps,
        })
    }

    fn optional_norm(
        &self,
        name: &str,
        len: usize,
        eps: f32,
    ) -> Result<Option<Norm>, CheckpointError> {
        self.take_optional(name)
            .map(|t| {
                Ok(Norm {
                    weight: Some(self.vector_of(t, len)?),
                    eps,
                })
            })
            .transpose()
    }

    /// A float `[rows, cols]` matrix in its stored dtype.
    fn dense(&self, name: &str, rows: usize, cols: usize) -> Result<DenseMatrix, CheckpointError> {
        let t = self.take(name)?;
        t.expect_dtype(&FLOAT_DTYPES)?;
        t.expect_shape(&[rows, cols])?;
        let data = match t.dtype {
            Dtype::F16 => DenseData::F16(t.to_f16()?),
            Dtype::BF16 => DenseData::BF16(t.to_bf16()?),
            _ => DenseData::F32(t.to_f32()?),
        };
        DenseMatrix::new(rows, cols, data).map_err(|source| CheckpointError::Kernel {
            name: name.to_string(),
            source,
        })
    }

    /// One projection `prefix` (e.g. `model.layers.3.self_attn.q_proj`) of shape `out × in`.
    fn projection(
        &self,
        layout: &Layout,
        prefix: &str,
        out: usize,
        inp: usize,
    ) -> Result<Projection, CheckpointError> {
        let wname = format!("{prefix}.weight");
        let kernel = |source| CheckpointError::Kernel {
            name: wname.clone(),
            source,
        };
        let input_norm = layout
            .projection_norm
            .map(|n| {
                let name = format!("{prefix}.rms_norm.weight");
                let weight = if n.weight_required {
                    Some(self.vector(&name, inp)?)
                } else {
                    self.take_optional(&name)
                        .map(|t| self.vector_of(t, inp))
                        .transpose()?
                };
                Ok::<_, CheckpointError>(Norm { weight, eps: n.eps })
            })
            .transpose()?;
        match layout.format {
            ProjectionFormat::Latent => {
                let t = self.take(&wname)?;
                t.expect_dtype(&FLOAT_DTYPES)?;
                t.expect_shape(&[out, inp])?;
                let weight = TernaryMatrix::from_latent(out, inp, &t.to_f32()?).map_err(kernel)?;
                Ok(Projection::Ternary { weight, input_norm })
            }
            ProjectionFormat::Packed { divide } => {
                let t = self.take(&wname)?;
                t.expect_dtype(&[Dtype::U8])?;
                t.expect_shape(&[packed_rows(out), inp])?;
                let values = unpack_bitnet(&wname, t.bytes_u8()?, out, inp)?;
                let sname = format!("{prefix}.weight_scale");
                let s = self.take(&sname)?;
                s.expect_dtype(&FLOAT_DTYPES)?;
                if s.shape != [1] && !s.shape.is_empty() {
                    s.expect_shape(&[1])?;
                }
                let scale = s.to_f32()?.first().copied().unwrap_or(f32::NAN);
                if !(scale.is_finite() && scale > 0.0) {
                    return Err(CheckpointError::Value {
                        name: sname,
                        path: s.path.to_path_buf(),
                        message: format!("weight_scale {scale} is not a positive finite number"),
                    });
                }
                let beta = if divide { 1.0 / scale } else { scale };
                let weight =
                    TernaryMatrix::from_ternary(out, inp, &values, beta).map_err(kernel)?;
                Ok(Projection::Ternary { weight, input_norm })
            }
            ProjectionFormat::Dense => Ok(Projection::Dense(self.dense(&wname, out, inp)?)),
            ProjectionFormat::OneBit => {
                if !inp.is_multiple_of(8) {
                    return Err(CheckpointError::Value {
                        name: wname,
                        path: self.st.source().to_path_buf(),
                        message: format!("OneBit needs input features divisible by 8, found {inp}"),
                    });
                }
                let t = self.take(&wname)?;
                t.expect_dtype(&[Dtype::I8, Dtype::U8])?;
                t.expect_shape(&[out, inp / 8])?;
                let signs =
                    SignMatrix::from_packed(out, inp, t.bytes_u8()?.to_vec()).map_err(kernel)?;
                let weight_scale = self.vector(&format!("{prefix}.weight_scale"), out)?;
                let input_factor = self.vector(&format!("{prefix}.input_factor"), inp)?;
                Ok(Projection::OneBit {
                    signs,
                    input_factor,
                    weight_scale,
                })
            }
        }
    }

    fn layer(
        &self,
        c: &ModelConfig,
        layout: &Layout,
        i: usize,
    ) -> Result<LayerWeights, CheckpointError> {
        let p = format!("model.layers.{i}");
        let (h, inter) = (c.hidden_size, c.intermediate_size);
        let q_out = c.num_heads * c.head_dim;
        let kv_out = c.num_kv_heads * c.head_dim;
        let eps = c.rms_norm_eps;
        let proj = |name: &str, out, inp| self.projection(layout, &format!("{p}.{name}"), out, inp);
        let input_name = format!("{p}.input_layernorm.weight");
        let input_norm = if layout.input_norm_required {
            Some(self.norm(&input_name, h, eps)?)
        } else {
            self.optional_norm(&input_name, h, eps)?
        };
        let (attn_sub_norm, ffn_sub_norm) = match layout.sub_norms {
            Some((attn, ffn)) => (
                Some(self.norm(&format!("{p}.{attn}.weight"), q_out, eps)?),
                Some(self.norm(&format!("{p}.{ffn}.weight"), inter, eps)?),
            ),
            None => (None, None),
        };
        Ok(LayerWeights {
            input_norm,
            q: proj("self_attn.q_proj", q_out, h)?,
            k: proj("self_attn.k_proj", kv_out, h)?,
            v: proj("self_attn.v_proj", kv_out, h)?,
            o: proj("self_attn.o_proj", h, q_out)?,
            attn_sub_norm,
            post_attention_norm: self.norm(
                &format!("{p}.post_attention_layernorm.weight"),
                h,
                eps,
            )?,
            gate: proj("mlp.gate_proj", inter, h)?,
            up: proj("mlp.up_proj", inter, h)?,
            down: proj("mlp.down_proj", h, inter)?,
            ffn_sub_norm,
        })
    }

    /// Fails when a tensor was left unused (ignoring `rotary_emb.inv_freq` buffers and, for a
    /// tied model, a redundant `lm_head.weight`).
    fn check_all_used(&self, tied: bool) -> Result<(), CheckpointError> {
        let used = self.used.borrow();
        let extras: Vec<&str> = self
            .st
            .names()
            .filter(|n| !used.contains(*n))
            .filter(|n| !n.ends_with(".rotary_emb.inv_freq"))
            .filter(|n| !(tied && *n == "lm_head.weight"))
            .collect();
        if extras.is_empty() {
            return Ok(());
        }
        Err(CheckpointError::UnexpectedTensors {
            names: extras
                .iter()
                .take(LISTED_EXTRAS)
                .map(|s| s.to_string())
                .collect(),
            count: extras.len(),
            path: self.st.source().to_path_buf(),
        })
    }
}

/// Loads every weight the configuration describes from `st`.
pub fn load_weights(
    st: &SafetensorsDir,
    config: ModelConfig,
) -> Result<ModelWeights, CheckpointError> {
    let layout = Layout::of(&config);
    tracing::info!(
        family = config.family.name(),
        layers = config.num_layers,
        source = %st.source().display(),
        "loading weights"
    );
    let r = Reader {
        st,
        used: RefCell::new(BTreeSet::new()),
    };
    let (vocab, h) = (config.vocab_size, config.hidden_size);
    let embedding = r.dense("model.embed_tokens.weight", vocab, h)?;
    let mut layers = Vec::with_capacity(config.num_layers);
    for i in 0..config.num_layers {
        layers.push(r.layer(&config, &layout, i)?);
        tracing::debug!(layer = i, "layer loaded");
    }
    let final_norm = r.norm("model.norm.weight", h, config.rms_norm_eps)?;
    let lm_head = if config.tie_word_embeddings {
        None
    } else {
        Some(r.dense("lm_head.weight", vocab, h)?)
    };
    r.check_all_used(config.tie_word_embeddings)?;
    Ok(ModelWeights {
        config,
        embedding,
        layers,
        final_norm,
        lm_head,
    })
}
