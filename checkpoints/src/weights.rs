//! The loaded model: one family-independent description of every weight the forward pass reads.
//!
//! Readers of every checkpoint family (see [`crate::load_model`]) produce a [`ModelWeights`];
//! the model forward in `bitnet-worker` consumes it. Packed layouts are already converted to
//! the kernels' own layout ([`TernaryMatrix`]); latent weights are already ternarized.

use crate::config::ModelConfig;
use bitnet_kernels::{DenseMatrix, SignMatrix, TernaryMatrix};

/// An RMSNorm: `x · rsqrt(mean(x²) + eps) · weight` (unit gain when `weight` is `None`).
#[derive(Clone, Debug, PartialEq)]
pub struct Norm {
    pub weight: Option<Vec<f32>>,
    pub eps: f32,
}

/// One linear projection, in whichever arithmetic its family uses.
#[derive(Clone, Debug, PartialEq)]
pub enum Projection {
    /// BitLinear W1.58A8 (families A, B, F): optional RMSNorm on the input (family F, and B with
    /// `use_rms_norm`), per-token int8 activations, exact i32 products, `· β / s`.
    Ternary {
        weight: TernaryMatrix,
        input_norm: Option<Norm>,
    },
    /// Full-precision projection (family C, the FP16 LLaMA baseline), f32 accumulation.
    Dense(DenseMatrix),
    /// OneBit W1A16 (family E): `LN0(((x ⊙ input_factor) · Sᵀ) ⊙ weight_scale)`, LN0 eps 1e-5.
    OneBit {
        signs: SignMatrix,
        input_factor: Vec<f32>,
        weight_scale: Vec<f32>,
    },
}

impl Projection {
    /// Output features.
    pub fn out_features(&self) -> usize {
        match self {
            Projection::Ternary { weight, .. } => weight.rows(),
            Projection::Dense(m) => m.rows(),
            Projection::OneBit { signs, .. } => signs.rows(),
        }
    }

    /// Input features.
    pub fn in_features(&self) -> usize {
        match self {
            Projection::Ternary { weight, .. } => weight.cols(),
            Projection::Dense(m) => m.cols(),
            Projection::OneBit { signs, .. } => signs.cols(),
        }
    }

    /// Bytes held in memory.
    pub fn memory_bytes(&self) -> usize {
        match self {
            Projection::Ternary { weight, input_norm } => {
                weight.memory_bytes()
                    + input_norm
                        .as_ref()
                        .and_then(|n| n.weight.as_ref())
                        .map_or(0, |w| w.len() * 4)
            }
            Projection::Dense(m) => m.memory_bytes(),
            Projection::OneBit {
                signs,
                input_factor,
                weight_scale,
            } => signs.memory_bytes() + (input_factor.len() + weight_scale.len()) * 4,
        }
    }
}

/// The weights of one decoder layer.
///
/// `h += o(attn_sub_norm(Attn(input_norm(h))))`; `x = post_attention_norm(h)`;
/// `h += down(ffn_sub_norm(act(gate(x)) · up(x)))`. Absent norms are the identity.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerWeights {
    /// `input_layernorm` (absent in family F).
    pub input_norm: Option<Norm>,
    pub q: Projection,
    pub k: Projection,
    pub v: Projection,
    pub o: Projection,
    /// `attn_sub_norm` / `inner_attn_ln` (families A and B).
    pub attn_sub_norm: Option<Norm>,
    /// `post_attention_layernorm`.
    pub post_attention_norm: Norm,
    pub gate: Projection,
    pub up: Projection,
    pub down: Projection,
    /// `ffn_sub_norm` / `ffn_layernorm` (families A and B).
    pub ffn_sub_norm: Option<Norm>,
}

impl LayerWeights {
    /// The seven projections with their checkpoint names, in file order.
    pub fn projections(&self) -> [(&'static str, &Projection); 7] {
        [
            ("self_attn.q_proj", &self.q),
            ("self_attn.k_proj", &self.k),
            ("self_attn.v_proj", &self.v),
            ("self_attn.o_proj", &self.o),
            ("mlp.gate_proj", &self.gate),
            ("mlp.up_proj", &self.up),
            ("mlp.down_proj", &self.down),
        ]
    }
}

/// Every weight of a model plus its configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelWeights {
    pub config: ModelConfig,
    /// `model.embed_tokens.weight`, `vocab × hidden`.
    pub embedding: DenseMatrix,
    pub layers: Vec<LayerWeights>,
    /// `model.norm`.
    pub final_norm: Norm,
    /// `lm_head.weight`; `None` when tied to the embedding.
    pub lm_head: Option<DenseMatrix>,
}

impl ModelWeights {
    /// The LM head matrix (the embedding when tied).
    pub fn lm_head(&self) -> &DenseMatrix {
        self.lm_head.as_ref().unwrap_or(&self.embedding)
    }

    /// Bytes the loaded weights hold in memory.
    pub fn memory_bytes(&self) -> usize {
        let norm = |n: &Norm| n.weight.as_ref().map_or(0, |w| w.len() * 4);
        let opt = |n: &Option<Norm>| n.as_ref().map_or(0, norm);
        self.embedding.memory_bytes()
            + self.lm_head.as_ref().map_or(0, |m| m.memory_bytes())
            + norm(&self.final_norm)
            + self
                .layers
                .iter()
                .map(|l| {
                    l.projections()
                        .iter()
                        .map(|(_, p)| p.memory_bytes())
                        .sum::<usize>()
                        + opt(&l.input_norm)
                        + opt(&l.attn_sub_norm)
                        + norm(&l.post_attention_norm)
                        + opt(&l.ffn_sub_norm)
                })
                .sum::<usize>()
    }
}
