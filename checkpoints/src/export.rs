//! The tensors each output format of `bitnet-cluster ckpt compress` stores for a loaded model
//! part ([`OutTensor`]s, handed to [`crate::tensor_writer`]): [`OutputFormat::Native`] (our
//! layout, [`crate::native_format`]), [`OutputFormat::HfPacked`] (the 2B-4T packed layout
//! transformers loads) and [`OutputFormat::BitBlas`] (fused, unpermuted, [`crate::bitblas`]).
//!
//! The inverse of [`crate::loader`]: loading what this module writes gives back the same
//! weights (ternary values, β, norms, dense matrices bit for bit).

use crate::bitblas::{pack_qweight, qweight_cols, sw_for_beta};
use crate::packed::{pack_bitnet, packed_rows};
use crate::weights::{LayerWeights, Norm, Projection};
use bitnet_kernels::{DenseData, DenseMatrix, TernaryMatrix};
use safetensors::Dtype;
use thiserror::Error;

/// The layouts `ckpt compress` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    Native,
    HfPacked,
    BitBlas,
}

impl OutputFormat {
    /// `native`, `hf-packed`, `bitblas`.
    pub fn name(&self) -> &'static str {
        match self {
            OutputFormat::Native => "native",
            OutputFormat::HfPacked => "hf-packed",
            OutputFormat::BitBlas => "bitblas",
        }
    }

    /// Most tensors one layer can produce (for the header room of the writer).
    pub const MAX_TENSORS_PER_LAYER: usize = 4 + 7 * 3;
}

/// A model part the chosen format cannot hold.
#[derive(Debug, Error, PartialEq)]
pub enum ExportError {
    #[error(
        "layer {layer} {name}: the {format} format holds only ternary projections (found {found})"
    )]
    NotTernary {
        layer: usize,
        name: &'static str,
        format: &'static str,
        found: &'static str,
    },
    #[error("layer {layer}: the {format} format has no per-projection RMSNorm")]
    ProjectionNorm { layer: usize, format: &'static str },
}

/// One tensor to write.
#[derive(Clone, Debug, PartialEq)]
pub struct OutTensor {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

impl OutTensor {
    fn f32s(name: String, values: &[f32]) -> Self {
        Self {
            name,
            dtype: Dtype::F32,
            shape: vec![values.len()],
            data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }
}

/// A dense matrix in its dtype; an int8 one as I8 `name` plus F32 per-row `<name>_scale`.
pub fn dense_tensors(name: &str, m: &DenseMatrix) -> Vec<OutTensor> {
    let shape = vec![m.rows(), m.cols()];
    let one = |dtype, data| {
        vec![OutTensor {
            name: name.to_string(),
            dtype,
            shape: shape.clone(),
            data,
        }]
    };
    match m.data() {
        DenseData::F32(v) => one(Dtype::F32, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        DenseData::F16(v) => one(Dtype::F16, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        DenseData::BF16(v) => one(
            Dtype::BF16,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ),
        DenseData::I8 { values, scales } => {
            let mut out = one(Dtype::I8, values.iter().map(|&q| q as u8).collect());
            out.push(OutTensor::f32s(format!("{name}_scale"), scales));
            out
        }
    }
}

/// A norm's weight as F32 `name` (nothing for a unit-gain norm without weights).
pub fn norm_tensor(name: &str, norm: &Norm) -> Option<OutTensor> {
    norm.weight
        .as_ref()
        .map(|w| OutTensor::f32s(name.to_string(), w))
}

/// The tensors of layer `i` in `format`. `sub_norms` names the attention and FFN sub-norms.
pub fn layer_tensors(
    format: OutputFormat,
    i: usize,
    layer: &LayerWeights,
    sub_norms: Option<(&str, &str)>,
) -> Result<Vec<OutTensor>, ExportError> {
    let p = format!("model.layers.{i}");
    let mut out = Vec::new();
    let mut push_norm = |name: String, norm: Option<&Norm>| {
        if let Some(t) = norm.and_then(|n| norm_tensor(&name, n)) {
            out.push(t);
        }
    };
    push_norm(
        format!("{p}.input_layernorm.weight"),
        layer.input_norm.as_ref(),
    );
    push_norm(
        format!("{p}.post_attention_layernorm.weight"),
        Some(&layer.post_attention_norm),
    );
    if let Some((attn, ffn)) = sub_norms {
        push_norm(format!("{p}.{attn}.weight"), layer.attn_sub_norm.as_ref());
        push_norm(format!("{p}.{ffn}.weight"), layer.ffn_sub_norm.as_ref());
    }
    if format == OutputFormat::BitBlas {
        let t = |name: &'static str, proj| ternary_of(format, i, name, proj);
        let fused = [
            (
                "self_attn.qkv_proj",
                vec![
                    t("q_proj", &layer.q)?,
                    t("k_proj", &layer.k)?,
                    t("v_proj", &layer.v)?,
                ],
            ),
            (
                "mlp.gate_up_proj",
                vec![t("gate_proj", &layer.gate)?, t("up_proj", &layer.up)?],
            ),
            ("self_attn.o_proj", vec![t("o_proj", &layer.o)?]),
            ("mlp.down_proj", vec![t("down_proj", &layer.down)?]),
        ];
        for (name, parts) in fused {
            out.extend(bitblas_tensors(&format!("{p}.{name}"), &parts));
        }
        return Ok(out);
    }
    for (name, proj) in layer.projections() {
        out.extend(projection_tensors(format, i, &format!("{p}.{name}"), proj)?);
    }
    Ok(out)
}

/// The weight matrix of a ternary projection (without a projection norm), or why not.
fn ternary_of<'a>(
    format: OutputFormat,
    layer: usize,
    name: &'static str,
    proj: &'a Projection,
) -> Result<&'a TernaryMatrix, ExportError> {
    match proj {
        Projection::Ternary {
            weight,
            input_norm: None,
        } => Ok(weight),
        Projection::Ternary { .. } => Err(ExportError::ProjectionNorm {
            layer,
            format: format.name(),
        }),
        Projection::Dense(_) => Err(not_ternary(format, layer, name, "dense")),
        Projection::OneBit { .. } => Err(not_ternary(format, layer, name, "OneBit")),
    }
}

fn not_ternary(
    format: OutputFormat,
    layer: usize,
    name: &'static str,
    found: &'static str,
) -> ExportError {
    ExportError::NotTernary {
        layer,
        name,
        format: format.name(),
        found,
    }
}

/// One projection `prefix` in the native or hf-packed format.
fn projection_tensors(
    format: OutputFormat,
    layer: usize,
    prefix: &str,
    proj: &Projection,
) -> Result<Vec<OutTensor>, ExportError> {
    let mut out = Vec::new();
    match proj {
        Projection::Ternary { weight, input_norm } => {
            let (shape, data) = match format {
                OutputFormat::HfPacked => (
                    vec![packed_rows(weight.rows()), weight.cols()],
                    pack_bitnet(&weight.to_ternary(), weight.rows(), weight.cols()),
                ),
                _ => (
                    vec![weight.padded_rows(), weight.row_bytes()],
                    weight.packed().to_vec(),
                ),
            };
            out.push(OutTensor {
                name: format!("{prefix}.weight"),
                dtype: Dtype::U8,
                shape,
                data,
            });
            out.push(OutTensor::f32s(
                format!("{prefix}.weight_scale"),
                &[weight.beta()],
            ));
            if let Some(t) = input_norm
                .as_ref()
                .and_then(|n| norm_tensor(&format!("{prefix}.rms_norm.weight"), n))
            {
                out.push(t);
            }
        }
        Projection::Dense(m) if format == OutputFormat::Native => {
            out.extend(dense_tensors(&format!("{prefix}.weight"), m));
        }
        Projection::OneBit {
            signs,
            input_factor,
            weight_scale,
        } if format == OutputFormat::Native => {
            let bits: Vec<u8> = (0..signs.rows())
                .flat_map(|r| signs.row_bits(r).iter().copied())
                .collect();
            out.push(OutTensor {
                name: format!("{prefix}.weight"),
                dtype: Dtype::U8,
                shape: vec![signs.rows(), signs.cols() / 8],
                data: bits,
            });
            out.push(OutTensor::f32s(
                format!("{prefix}.weight_scale"),
                weight_scale,
            ));
            out.push(OutTensor::f32s(
                format!("{prefix}.input_factor"),
                input_factor,
            ));
        }
        Projection::Dense(_) => return Err(not_ternary(format, layer, "projection", "dense")),
        Projection::OneBit { .. } => {
            return Err(not_ternary(format, layer, "projection", "OneBit"))
        }
    }
    Ok(out)
}

/// `qweight` and `sw` of the BitBLAS projection `prefix` fusing `parts` row-wise.
fn bitblas_tensors(prefix: &str, parts: &[&TernaryMatrix]) -> Vec<OutTensor> {
    let cols = parts[0].cols();
    let rows: usize = parts.iter().map(|m| m.rows()).sum();
    let mut qweight = Vec::with_capacity(rows * qweight_cols(cols));
    let mut sw = Vec::with_capacity(rows);
    for m in parts {
        qweight.extend(pack_qweight(&m.to_ternary(), m.rows(), cols));
        sw.extend(std::iter::repeat_n(sw_for_beta(m.beta()), m.rows()));
    }
    vec![
        OutTensor {
            name: format!("{prefix}.qweight"),
            dtype: Dtype::I8,
            shape: vec![rows, qweight_cols(cols)],
            data: qweight,
        },
        OutTensor {
            name: format!("{prefix}.sw"),
            dtype: Dtype::F64,
            shape: vec![rows],
            data: sw.iter().flat_map(|v| v.to_le_bytes()).collect(),
        },
    ]
}
