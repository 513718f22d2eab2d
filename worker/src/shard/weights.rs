//! [`ModelShard`]: the weights one rank of a tensor-parallel group holds, cut from a full
//! [`ModelWeights`] by a [`ShardPlan`].
//!
//! q, k, v, gate and up are column-parallel (the rank's output rows); o and down are
//! row-parallel ([`RowParallel`]: the rank's input columns, β of the whole tensor). Norms stay
//! whole: the sharded forward (`crate::sharded_model`) gathers the full input row of a
//! row-parallel layer before its sub-norm, so every rank normalizes and quantizes exactly as a
//! single rank does. The embedding and the LM head are replicated.

use super::error::ShardError;
use super::layout::{ShardLayout, ShardPlan, Span};
use super::slice::{dense_block, sign_rows, ternary_cols, ternary_rows};
use bitnet_checkpoints::{LayerWeights, ModelConfig, ModelWeights, Norm, Projection};
use bitnet_kernels::{DenseMatrix, KernelError, TernaryMatrix};

/// The local part of a row-parallel projection (o, down).
#[derive(Clone, Debug, PartialEq)]
pub enum RowParallel {
    /// BitLinear: the local input columns of the ternary weight (whole-tensor β) and the
    /// projection's own input RMSNorm over the whole input (families F, B with `use_rms_norm`).
    /// Partial i32 sums are all-reduced before scaling.
    Ternary {
        weight: TernaryMatrix,
        input_norm: Option<Norm>,
    },
    /// Dense: the local input columns; partial f32 sums are all-reduced.
    Dense(DenseMatrix),
    /// Kept whole on every rank (OneBit, whose output LayerNorm and input factors make a
    /// partial sum inexact): the input is gathered and the full projection computed.
    Replicated(Projection),
}

impl RowParallel {
    /// Output features (whole).
    pub fn out_features(&self) -> usize {
        match self {
            RowParallel::Ternary { weight, .. } => weight.rows(),
            RowParallel::Dense(m) => m.rows(),
            RowParallel::Replicated(p) => p.out_features(),
        }
    }
}

/// The local weights of one decoder layer (see [`bitnet_checkpoints::LayerWeights`]).
#[derive(Clone, Debug, PartialEq)]
pub struct LayerShard {
    pub input_norm: Option<Norm>,
    /// Local query heads' rows.
    pub q: Projection,
    /// Local key/value heads' rows.
    pub k: Projection,
    pub v: Projection,
    pub o: RowParallel,
    /// Whole (applied to the gathered attention output).
    pub attn_sub_norm: Option<Norm>,
    pub post_attention_norm: Norm,
    /// Local intermediate rows.
    pub gate: Projection,
    pub up: Projection,
    pub down: RowParallel,
    /// Whole (applied to the gathered MLP activations).
    pub ffn_sub_norm: Option<Norm>,
}

/// Everything one rank holds.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelShard {
    /// The whole model's configuration.
    pub config: ModelConfig,
    pub layout: ShardLayout,
    pub embedding: DenseMatrix,
    pub layers: Vec<LayerShard>,
    pub final_norm: Norm,
    pub lm_head: Option<DenseMatrix>,
}

impl ModelShard {
    /// The whole model as the shard of a group of one, without copying a weight (what a
    /// single-rank device model runs: the sharded graph at world 1 is the model's graph).
    pub fn whole(weights: ModelWeights) -> Result<Self, ShardError> {
        let layout = ShardPlan::single().layout(&weights.config)?;
        Ok(ModelShard {
            config: weights.config,
            layout,
            embedding: weights.embedding,
            layers: weights
                .layers
                .into_iter()
                .map(LayerShard::from_local_layer)
                .collect(),
            final_norm: weights.final_norm,
            lm_head: weights.lm_head,
        })
    }

    /// The LM head matrix (the embedding when tied).
    pub fn lm_head(&self) -> &DenseMatrix {
        self.lm_head.as_ref().unwrap_or(&self.embedding)
    }
}

impl ShardPlan {
    /// This rank's shard of `weights`.
    pub fn shard(&self, weights: &ModelWeights) -> Result<ModelShard, ShardError> {
        let layout = self.layout(&weights.config)?;
        let layers = weights
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| shard_layer(&layout, i, l))
            .collect::<Result<Vec<_>, ShardError>>()?;
        Ok(ModelShard {
            config: weights.config.clone(),
            layout,
            embedding: weights.embedding.clone(),
            layers,
            final_norm: weights.final_norm.clone(),
            lm_head: weights.lm_head.clone(),
        })
    }
}

/// The part of layer `i` that the rank of `layout` holds (the compression tool shards one
/// layer at a time with it).
pub fn shard_layer(
    layout: &ShardLayout,
    i: usize,
    l: &LayerWeights,
) -> Result<LayerShard, ShardError> {
    let (q_rows, kv_rows, ffn) = (layout.q_features(), layout.kv_features(), layout.ffn);
    let err = |name: &'static str| move |e: KernelError| shape(i, name, e.to_string());
    Ok(LayerShard {
        input_norm: l.input_norm.clone(),
        q: column_parallel(&l.q, q_rows, i, "q_proj")?,
        k: column_parallel(&l.k, kv_rows, i, "k_proj")?,
        v: column_parallel(&l.v, kv_rows, i, "v_proj")?,
        o: row_parallel(&l.o, q_rows, i, "o_proj").map_err(err("o_proj"))?,
        attn_sub_norm: l.attn_sub_norm.clone(),
        post_attention_norm: l.post_attention_norm.clone(),
        gate: column_parallel(&l.gate, ffn, i, "gate_proj")?,
        up: column_parallel(&l.up, ffn, i, "up_proj")?,
        down: row_parallel(&l.down, ffn, i, "down_proj").map_err(err("down_proj"))?,
        ffn_sub_norm: l.ffn_sub_norm.clone(),
    })
}

impl RowParallel {
    /// As a plain projection over the local input columns (what a rank file stores).
    pub fn to_projection(&self) -> Projection {
        match self {
            RowParallel::Ternary { weight, input_norm } => Projection::Ternary {
                weight: weight.clone(),
                input_norm: input_norm.clone(),
            },
            RowParallel::Dense(m) => Projection::Dense(m.clone()),
            RowParallel::Replicated(p) => p.clone(),
        }
    }

    /// The inverse of [`RowParallel::to_projection`] (OneBit is replicated whole).
    pub fn from_projection(p: Projection) -> Self {
        match p {
            Projection::Ternary { weight, input_norm } => {
                RowParallel::Ternary { weight, input_norm }
            }
            Projection::Dense(m) => RowParallel::Dense(m),
            p @ Projection::OneBit { .. } => RowParallel::Replicated(p),
        }
    }
}

impl LayerShard {
    /// The shard as a [`LayerWeights`] of local sizes (o and down over the local input columns):
    /// what a rank's file of a pre-sharded checkpoint holds.
    pub fn to_local_layer(&self) -> LayerWeights {
        LayerWeights {
            input_norm: self.input_norm.clone(),
            q: self.q.clone(),
            k: self.k.clone(),
            v: self.v.clone(),
            o: self.o.to_projection(),
            attn_sub_norm: self.attn_sub_norm.clone(),
            post_attention_norm: self.post_attention_norm.clone(),
            gate: self.gate.clone(),
            up: self.up.clone(),
            down: self.down.to_projection(),
            ffn_sub_norm: self.ffn_sub_norm.clone(),
        }
    }

    /// The inverse of [`LayerShard::to_local_layer`].
    pub fn from_local_layer(l: LayerWeights) -> Self {
        LayerShard {
            input_norm: l.input_norm,
            q: l.q,
            k: l.k,
            v: l.v,
            o: RowParallel::from_projection(l.o),
            attn_sub_norm: l.attn_sub_norm,
            post_attention_norm: l.post_attention_norm,
            gate: l.gate,
            up: l.up,
            down: RowParallel::from_projection(l.down),
            ffn_sub_norm: l.ffn_sub_norm,
        }
    }
}

fn shape(layer: usize, name: &'static str, reason: String) -> ShardError {
    ShardError::Shape {
        layer,
        name,
        reason,
    }
}

/// Output rows `rows` of a projection (its input side stays whole).
fn column_parallel(
    p: &Projection,
    rows: Span,
    layer: usize,
    name: &'static str,
) -> Result<Projection, ShardError> {
    if rows.end > p.out_features() {
        return Err(shape(
            layer,
            name,
            format!("{} output features, rows {rows:?} wanted", p.out_features()),
        ));
    }
    let err = |e: KernelError| shape(layer, name, e.to_string());
    Ok(match p {
        Projection::Ternary { weight, input_norm } => Projection::Ternary {
            weight: ternary_rows(weight, rows).map_err(err)?,
            input_norm: input_norm.clone(),
        },
        Projection::Dense(m) => {
            Projection::Dense(dense_block(m, rows, Span::new(0, m.cols())).map_err(err)?)
        }
        Projection::OneBit {
            signs,
            input_factor,
            weight_scale,
        } => Projection::OneBit {
            signs: sign_rows(signs, rows).map_err(err)?,
            input_factor: input_factor.clone(),
            weight_scale: weight_scale[rows.start..rows.end].to_vec(),
        },
    })
}

/// Input columns `cols` of a projection (OneBit stays whole).
fn row_parallel(
    p: &Projection,
    cols: Span,
    layer: usize,
    name: &'static str,
) -> Result<RowParallel, KernelError> {
    if cols.end > p.in_features() {
        return Err(KernelError::Shape {
            op: "row_parallel",
            reason: format!(
                "layer {layer} {name}: {} input features, columns {cols:?} wanted",
                p.in_features()
            ),
        });
    }
    Ok(match p {
        Projection::Ternary { weight, input_norm } => RowParallel::Ternary {
            weight: ternary_cols(weight, cols)?,
            input_norm: input_norm.clone(),
        },
        Projection::Dense(m) => RowParallel::Dense(dense_block(m, Span::new(0, m.rows()), cols)?),
        Projection::OneBit { .. } => RowParallel::Replicated(p.clone()),
    })
}
