//! Model shapes of `bitnet-bench model --preset NAME`: the 1bitLLM reproductions, Microsoft's
//! 2B-4T, and the LLaMA-2 shapes of the BitNet b1.58 paper (7B, 13B, 70B), each also as a dense
//! FP16 LLaMA of the same shape (`llama-*`), the baseline the paper compares against; `*-tiny`
//! is a few-MB model of the 2B-4T graph for tests.

use bitnet_checkpoints::{Activation, Family};
use bitnet_worker::SyntheticSpec;

/// One named shape.
struct Shape {
    name: &'static str,
    family: Family,
    hidden: usize,
    intermediate: usize,
    layers: usize,
    heads: usize,
    kv_heads: usize,
    vocab: usize,
    activation: Activation,
    tied: bool,
}

const SHAPES: [Shape; 8] = [
    Shape {
        name: "700m",
        family: Family::OneBitLlm,
        hidden: 1536,
        intermediate: 4096,
        layers: 24,
        heads: 16,
        kv_heads: 16,
        vocab: 32002,
        activation: Activation::Silu,
        tied: true,
    },
    Shape {
        name: "1.3b",
        family: Family::OneBitLlm,
        hidden: 2048,
        intermediate: 5460,
        layers: 24,
        heads: 32,
        kv_heads: 32,
        vocab: 32002,
        activation: Activation::Silu,
        tied: true,
    },
    Shape {
        name: "3b",
        family: Family::OneBitLlm,
        hidden: 3200,
        intermediate: 8640,
        layers: 26,
        heads: 32,
        kv_heads: 32,
        vocab: 32002,
        activation: Activation::Silu,
        tied: true,
    },
    Shape {
        name: "2b4t",
        family: Family::BitNet,
        hidden: 2560,
        intermediate: 6912,
        layers: 30,
        heads: 20,
        kv_heads: 5,
        vocab: 128256,
        activation: Activation::Relu2,
        tied: true,
    },
    Shape {
        name: "7b",
        family: Family::BitNet,
        hidden: 4096,
        intermediate: 11008,
        layers: 32,
        heads: 32,
        kv_heads: 32,
        vocab: 32000,
        activation: Activation::Silu,
        tied: false,
    },
    Shape {
        name: "13b",
        family: Family::BitNet,
        hidden: 5120,
        intermediate: 13824,
        layers: 40,
        heads: 40,
        kv_heads: 40,
        vocab: 32000,
        activation: Activation::Silu,
        tied: false,
    },
    Shape {
        name: "70b",
        family: Family::BitNet,
        hidden: 8192,
        intermediate: 28672,
        layers: 80,
        heads: 64,
        kv_heads: 8,
        vocab: 32000,
        activation: Activation::Silu,
        tied: false,
    },
    // A few-MB model of the 2B-4T graph for tests and smoke runs (not a published shape).
    Shape {
        name: "tiny",
        family: Family::BitNet,
        hidden: 128,
        intermediate: 256,
        layers: 2,
        heads: 4,
        kv_heads: 2,
        vocab: 512,
        activation: Activation::Relu2,
        tied: true,
    },
];

/// Every preset name (`bitnet-*` and `llama-*`).
pub fn names() -> Vec<String> {
    SHAPES
        .iter()
        .flat_map(|s| [format!("bitnet-{}", s.name), format!("llama-{}", s.name)])
        .collect()
}

/// The synthetic model of a preset name, or `None` when unknown.
pub fn spec(name: &str) -> Option<SyntheticSpec> {
    let (kind, size) = name.split_once('-')?;
    let shape = SHAPES.iter().find(|s| s.name == size)?;
    let bitnet = SyntheticSpec {
        family: shape.family,
        hidden_size: shape.hidden,
        intermediate_size: shape.intermediate,
        num_layers: shape.layers,
        num_heads: shape.heads,
        num_kv_heads: shape.kv_heads,
        vocab_size: shape.vocab,
        max_position_embeddings: 4096,
        activation: shape.activation,
        tie_word_embeddings: shape.tied,
        seed: 42,
    };
    match kind {
        "bitnet" => Some(bitnet),
        "llama" => Some(bitnet.as_llama()),
        _ => None,
    }
}

/// [`spec`], or an error naming the known presets.
pub fn spec_or_err(name: &str) -> anyhow::Result<SyntheticSpec> {
    spec(name)
        .ok_or_else(|| anyhow::anyhow!("unknown preset {name:?}; known: {}", names().join(", ")))
}

/// Weight bytes of a spec without building it: 2-bit ternary (or f16 dense) projections plus
/// f16 embedding and head, f32 norms.
pub fn weight_bytes(spec: &SyntheticSpec) -> u64 {
    let (h, i) = (spec.hidden_size as u64, spec.intermediate_size as u64);
    let hd = h / spec.num_heads as u64;
    let kv = spec.num_kv_heads as u64 * hd;
    let per_layer = h * h * 2 + 2 * h * kv + 3 * h * i;
    let proj_bytes = if spec.is_ternary() {
        per_layer / 4
    } else {
        per_layer * 2
    };
    let table = spec.vocab_size as u64 * h * 2;
    let tables = if spec.tie_word_embeddings {
        table
    } else {
        2 * table
    };
    spec.num_layers as u64 * proj_bytes + tables
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_resolves_and_pairs_share_a_shape() {
        for name in names() {
            let s = spec(&name).unwrap_or_else(|| panic!("{name}"));
            assert_eq!(s.is_ternary(), name.starts_with("bitnet"));
        }
        let (b, l) = (spec("bitnet-2b4t").unwrap(), spec("llama-2b4t").unwrap());
        assert_eq!(
            (b.hidden_size, b.num_kv_heads),
            (l.hidden_size, l.num_kv_heads)
        );
        assert!(spec("bitnet-9b").is_none() && spec("gpt-3b").is_none());
        // 2B-4T: about 0.52 GB of 2-bit weights + 0.66 GB of tied head (PERFORMANCE.md)
        let gb = weight_bytes(&b) as f64 / 1e9;
        assert!((1.1..1.25).contains(&gb), "{gb}");
    }
}
