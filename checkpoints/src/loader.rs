//! Builds [`ModelWeights`] from the tensors of a [`SafetensorsDir`] for every family
//! (FORMATS.md §2), strictly: a missing tensor, a leftover tensor, a wrong shape or dtype is an
//! error naming it.
//!
//! Packed family-B weights are converted to the kernels' [`TernaryMatrix`] layout, latent
//! weights (A, B online, F) are ternarized with the reference rule, dense ones (C) keep their
//! dtype, OneBit sign bits (E) are kept as stored. Our native layout ([`Storage::Native`]) holds
//! the kernels' layout directly; the BitBLAS layout ([`Storage::BitBlas`]) fuses q;k;v and
//! gate;up. A rank file of a pre-sharded native checkpoint is read with the rank's local sizes
//! ([`RankShapes`]). [`ModelReader`] reads one part at a time (the compression tool streams
//! layer by layer); [`load_weights`] reads everything. Called by [`crate::load_model`].

use crate::bitblas::{beta_of_block, qweight_cols, unpack_qweight};
use crate::config::{Family, ModelConfig};
use crate::error::CheckpointError;
use crate::native_format::RankShapes;
use crate::packed::{packed_rows, unpack_bitnet};
use crate::safetensors_dir::{SafetensorsDir, TensorRef, FLOAT_DTYPES};
use crate::storage::Storage;
use crate::weights::{LayerWeights, ModelWeights, Norm, Projection};
use bitnet_kernels::packing::{BLOCK_BYTES, BLOCK_COLS, ROW_GROUP};
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
    /// Native: the kernels' layout, U8 `[padded_rows, blocks · 32]`, F32 `weight_scale` `[1]` = β.
    Native,
    /// BitBLAS: `qweight` `[out, in/4]` codes `t + 2`, `sw` `[out]` = 1/β; q;k;v and gate;up fused.
    BitBlas,
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
    /// The layout of `config`'s family, with the ternary projections stored as `storage` says.
    fn with_storage(config: &ModelConfig, storage: &Storage) -> Self {
        let mut layout = Self::of(config);
        let ternary = matches!(
            layout.format,
            ProjectionFormat::Latent | ProjectionFormat::Packed { .. }
        );
        match storage {
            Storage::Native(_) if ternary => layout.format = ProjectionFormat::Native,
            Storage::BitBlas if ternary => layout.format = ProjectionFormat::BitBlas,
            _ => {}
        }
        layout
    }

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

    /// A float vector of shape `[len]` as f64 (F64 read exactly, other floats widened).
    fn vector_f64(&self, name: &str, len: usize) -> Result<Vec<f64>, CheckpointError> {
        let t = self.take(name)?;
        t.expect_shape(&[len])?;
        if t.dtype == Dtype::F64 {
            return Ok(t
                .data
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect());
        }
        t.expect_dtype(&[Dtype::F64, Dtype::F32, Dtype::F16, Dtype::BF16])?;
        Ok(t.to_f32()?.into_iter().map(f64::from).collect())
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
        self.dense_or_int8(name, rows, cols, false)
    }

    /// Like [`Reader::dense`]; with `int8_scales`, an I8 matrix with F32 per-row scales in
    /// `<name>_scale` (e.g. `lm_head.weight_scale`) is accepted too.
    fn dense_or_int8(
        &self,
        name: &str,
        rows: usize,
        cols: usize,
        int8_scales: bool,
    ) -> Result<DenseMatrix, CheckpointError> {
        let t = self.take(name)?;
        if int8_scales && t.dtype == Dtype::I8 {
            t.expect_shape(&[rows, cols])?;
            let sname = format!("{}_scale", name);
            let scales = self.vector(&sname, rows)?;
            let data = DenseData::I8 {
                values: t.to_i8()?,
                scales,
            };
            return DenseMatrix::new(rows, cols, data).map_err(|source| CheckpointError::Kernel {
                name: name.to_string(),
                source,
            });
        }
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

    /// The positive finite scalar `name` (shape `[1]` or `[]`).
    fn scalar_scale(&self, name: &str) -> Result<f32, CheckpointError> {
        let s = self.take(name)?;
        s.expect_dtype(&FLOAT_DTYPES)?;
        if s.shape != [1] && !s.shape.is_empty() {
            s.expect_shape(&[1])?;
        }
        let scale = s.to_f32()?.first().copied().unwrap_or(f32::NAN);
        if !(scale.is_finite() && scale > 0.0) {
            return Err(CheckpointError::Value {
                name: name.to_string(),
                path: s.path.to_path_buf(),
                message: format!("weight_scale {scale} is not a positive finite number"),
            });
        }
        Ok(scale)
    }

    /// The input RMSNorm of projection `prefix` over `len` features, when the family has one.
    fn projection_norm(
        &self,
        layout: &Layout,
        prefix: &str,
        len: usize,
    ) -> Result<Option<Norm>, CheckpointError> {
        layout
            .projection_norm
            .map(|n| {
                let name = format!("{prefix}.rms_norm.weight");
                let weight = if n.weight_required {
                    Some(self.vector(&name, len)?)
                } else {
                    self.take_optional(&name)
                        .map(|t| self.vector_of(t, len))
                        .transpose()?
                };
                Ok::<_, CheckpointError>(Norm { weight, eps: n.eps })
            })
            .transpose()
    }

    /// One projection `prefix` (e.g. `model.layers.3.self_attn.q_proj`) of shape `out × in`;
    /// its input RMSNorm (if any) spans `norm_len` features (the whole input, also on a rank
    /// that holds only some of the input columns).
    fn projection(
        &self,
        layout: &Layout,
        prefix: &str,
        (out, inp): (usize, usize),
        norm_len: usize,
    ) -> Result<Projection, CheckpointError> {
        let wname = format!("{prefix}.weight");
        let kernel = |source| CheckpointError::Kernel {
            name: wname.clone(),
            source,
        };
        let input_norm = self.projection_norm(layout, prefix, norm_len)?;
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
                let scale = self.scalar_scale(&format!("{prefix}.weight_scale"))?;
                let beta = if divide { 1.0 / scale } else { scale };
                let weight =
                    TernaryMatrix::from_ternary(out, inp, &values, beta).map_err(kernel)?;
                Ok(Projection::Ternary { weight, input_norm })
            }
            ProjectionFormat::Native => {
                let t = self.take(&wname)?;
                t.expect_dtype(&[Dtype::U8])?;
                let blocks = inp.div_ceil(BLOCK_COLS);
                t.expect_shape(&[out.next_multiple_of(ROW_GROUP), blocks * BLOCK_BYTES])?;
                let beta = self.scalar_scale(&format!("{prefix}.weight_scale"))?;
                let weight =
                    TernaryMatrix::from_packed(out, inp, t.data.to_vec(), beta).map_err(kernel)?;
                Ok(Projection::Ternary { weight, input_norm })
            }
            ProjectionFormat::BitBlas => {
                let mut parts = self.bitblas(prefix, &[out], inp)?;
                Ok(parts.remove(0))
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

    /// The BitBLAS projection `prefix` (`qweight`, `sw`) whose rows are the sub-matrices of
    /// `parts` rows each (one part for o/down; q;k;v and gate;up fused), split back.
    fn bitblas(
        &self,
        prefix: &str,
        parts: &[usize],
        inp: usize,
    ) -> Result<Vec<Projection>, CheckpointError> {
        let out: usize = parts.iter().sum();
        let qname = format!("{prefix}.qweight");
        let t = self.take(&qname)?;
        t.expect_dtype(&[Dtype::I8, Dtype::U8])?;
        let unpermuted = [out, qweight_cols(inp)];
        if t.shape != unpermuted {
            return Err(CheckpointError::Value {
                name: qname,
                path: t.path.to_path_buf(),
                message: format!(
                    "shape {:?} is not the unpermuted BitBLAS layout {unpermuted:?}; permuted \
                     (tuned) layouts are not supported: re-export without weight propagation",
                    t.shape
                ),
            });
        }
        let values = unpack_qweight(&qname, t.bytes_u8()?, out, inp).map_err(|e| match e {
            CheckpointError::Value { name, message, .. } => CheckpointError::Value {
                name,
                path: t.path.to_path_buf(),
                message,
            },
            other => other,
        })?;
        let sw = self.vector_f64(&format!("{prefix}.sw"), out)?;
        let mut start = 0;
        let mut projections = Vec::with_capacity(parts.len());
        for &rows in parts {
            let beta = beta_of_block(&format!("{prefix}.sw"), &sw, start, rows)?;
            let weight = TernaryMatrix::from_ternary(
                rows,
                inp,
                &values[start * inp..(start + rows) * inp],
                beta,
            )
            .map_err(|source| CheckpointError::Kernel {
                name: qname.clone(),
                source,
            })?;
            projections.push(Projection::Ternary {
                weight,
                input_norm: None,
            });
            start += rows;
        }
        Ok(projections)
    }

    fn layer(
        &self,
        c: &ModelConfig,
        layout: &Layout,
        shapes: &Shapes,
        i: usize,
    ) -> Result<LayerWeights, CheckpointError> {
        let p = format!("model.layers.{i}");
        let s = shapes;
        let eps = c.rms_norm_eps;
        let proj = |name: &str, dims, norm_len| {
            self.projection(layout, &format!("{p}.{name}"), dims, norm_len)
        };
        let input_name = format!("{p}.input_layernorm.weight");
        let input_norm = if layout.input_norm_required {
            Some(self.norm(&input_name, s.h, eps)?)
        } else {
            self.optional_norm(&input_name, s.h, eps)?
        };
        let (attn_sub_norm, ffn_sub_norm) = match layout.sub_norms {
            Some((attn, ffn)) => (
                Some(self.norm(&format!("{p}.{attn}.weight"), s.q_full, eps)?),
                Some(self.norm(&format!("{p}.{ffn}.weight"), s.ffn_full, eps)?),
            ),
            None => (None, None),
        };
        let post_attention_norm =
            self.norm(&format!("{p}.post_attention_layernorm.weight"), s.h, eps)?;
        if layout.format == ProjectionFormat::BitBlas {
            if layout.projection_norm.is_some() {
                return Err(CheckpointError::config(
                    self.st.source(),
                    "BitBLAS checkpoints with per-projection RMSNorms are not supported",
                ));
            }
            let mut qkv = self.bitblas(
                &format!("{p}.self_attn.qkv_proj"),
                &[s.q_out, s.kv_out, s.kv_out],
                s.h,
            )?;
            let mut gate_up =
                self.bitblas(&format!("{p}.mlp.gate_up_proj"), &[s.ffn, s.ffn], s.h)?;
            let (v, k, q) = (qkv.remove(2), qkv.remove(1), qkv.remove(0));
            let (up, gate) = (gate_up.remove(1), gate_up.remove(0));
            let mut o = self.bitblas(&format!("{p}.self_attn.o_proj"), &[s.h], s.o_in)?;
            let mut down = self.bitblas(&format!("{p}.mlp.down_proj"), &[s.h], s.down_in)?;
            return Ok(LayerWeights {
                input_norm,
                q,
                k,
                v,
                o: o.remove(0),
                attn_sub_norm,
                post_attention_norm,
                gate,
                up,
                down: down.remove(0),
                ffn_sub_norm,
            });
        }
        Ok(LayerWeights {
            input_norm,
            q: proj("self_attn.q_proj", (s.q_out, s.h), s.h)?,
            k: proj("self_attn.k_proj", (s.kv_out, s.h), s.h)?,
            v: proj("self_attn.v_proj", (s.kv_out, s.h), s.h)?,
            o: proj("self_attn.o_proj", (s.h, s.o_in), s.q_full)?,
            attn_sub_norm,
            post_attention_norm,
            gate: proj("mlp.gate_proj", (s.ffn, s.h), s.h)?,
            up: proj("mlp.up_proj", (s.ffn, s.h), s.h)?,
            down: proj("mlp.down_proj", (s.h, s.down_in), s.ffn_full)?,
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

/// Every width a layer's tensors are checked against.
#[derive(Clone, Copy, Debug)]
struct Shapes {
    h: usize,
    q_out: usize,
    kv_out: usize,
    ffn: usize,
    o_in: usize,
    down_in: usize,
    q_full: usize,
    ffn_full: usize,
}

impl Shapes {
    fn of(c: &ModelConfig, layout: &Layout, rank: Option<RankShapes>) -> Self {
        let q_full = c.num_heads * c.head_dim;
        let kv_full = c.num_kv_heads * c.head_dim;
        let r = rank.unwrap_or(RankShapes {
            q_features: q_full,
            kv_features: kv_full,
            ffn_features: c.intermediate_size,
        });
        // OneBit row-parallel projections are replicated whole on every rank.
        let whole_rows = layout.format == ProjectionFormat::OneBit;
        Self {
            h: c.hidden_size,
            q_out: r.q_features,
            kv_out: r.kv_features,
            ffn: r.ffn_features,
            o_in: if whole_rows { q_full } else { r.q_features },
            down_in: if whole_rows {
                c.intermediate_size
            } else {
                r.ffn_features
            },
            q_full,
            ffn_full: c.intermediate_size,
        }
    }
}

/// Reads a model part by part (embedding, one layer, final norm, LM head), then checks that
/// every stored tensor was used ([`ModelReader::finish`]).
pub struct ModelReader<'a> {
    reader: Reader<'a>,
    config: ModelConfig,
    layout: Layout,
    shapes: Shapes,
    /// Native storage: the LM head is read when stored, also for a tied model (`--lm-head
    /// int8` writes one), and may be I8 with per-row scales.
    native: bool,
}

impl<'a> ModelReader<'a> {
    /// A reader of `st` for `config`, stored as `storage`; `rank` gives the local sizes of one
    /// rank's file of a pre-sharded checkpoint.
    pub fn new(
        st: &'a SafetensorsDir,
        config: ModelConfig,
        storage: &Storage,
        rank: Option<RankShapes>,
    ) -> Self {
        let layout = Layout::with_storage(&config, storage);
        let shapes = Shapes::of(&config, &layout, rank);
        Self {
            reader: Reader {
                st,
                used: RefCell::new(BTreeSet::new()),
            },
            config,
            layout,
            shapes,
            native: matches!(storage, Storage::Native(_)),
        }
    }

    /// The model's configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The names of the attention and FFN sub-norms of this family (`None`: it has none).
    pub fn sub_norm_names(&self) -> Option<(&'static str, &'static str)> {
        self.layout.sub_norms
    }

    /// `model.embed_tokens.weight`.
    pub fn embedding(&self) -> Result<DenseMatrix, CheckpointError> {
        let c = &self.config;
        self.reader
            .dense("model.embed_tokens.weight", c.vocab_size, c.hidden_size)
    }

    /// Layer `i`.
    pub fn layer(&self, i: usize) -> Result<LayerWeights, CheckpointError> {
        self.reader
            .layer(&self.config, &self.layout, &self.shapes, i)
    }

    /// `model.norm`.
    pub fn final_norm(&self) -> Result<Norm, CheckpointError> {
        let c = &self.config;
        self.reader
            .norm("model.norm.weight", c.hidden_size, c.rms_norm_eps)
    }

    /// `lm_head.weight`, or `None` when tied to the embedding.
    pub fn lm_head(&self) -> Result<Option<DenseMatrix>, CheckpointError> {
        let c = &self.config;
        let name = "lm_head.weight";
        if self.native && self.reader.st.contains(name) {
            return self
                .reader
                .dense_or_int8(name, c.vocab_size, c.hidden_size, true)
                .map(Some);
        }
        if c.tie_word_embeddings {
            return Ok(None);
        }
        self.reader
            .dense(name, c.vocab_size, c.hidden_size)
            .map(Some)
    }

    /// Fails when a stored tensor was not read.
    pub fn finish(&self) -> Result<(), CheckpointError> {
        self.reader.check_all_used(self.config.tie_word_embeddings)
    }

    /// Reads every part and checks that nothing is left over.
    pub fn read_all(self) -> Result<ModelWeights, CheckpointError> {
        let embedding = self.embedding()?;
        let mut layers = Vec::with_capacity(self.config.num_layers);
        for i in 0..self.config.num_layers {
            layers.push(self.layer(i)?);
            tracing::debug!(layer = i, "layer loaded");
        }
        let final_norm = self.final_norm()?;
        let lm_head = self.lm_head()?;
        self.finish()?;
        Ok(ModelWeights {
            config: self.config,
            embedding,
            layers,
            final_norm,
            lm_head,
        })
    }
}

/// Loads every weight the configuration describes from `st`, stored as `storage` (`rank`: the
/// local sizes of a pre-sharded rank file).
pub fn load_weights(
    st: &SafetensorsDir,
    config: ModelConfig,
    storage: &Storage,
    rank: Option<RankShapes>,
) -> Result<ModelWeights, CheckpointError> {
    tracing::info!(
        family = config.family.name(),
        layers = config.num_layers,
        storage = %storage.name(),
        source = %st.source().display(),
        "loading weights"
    );
    ModelReader::new(st, config, storage, rank).read_all()
}
