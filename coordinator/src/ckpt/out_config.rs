//! The small files of a compressed checkpoint besides its weights: the `config.json` of the
//! hf-packed format (rewritten as a 2B-4T BitNet config), `quantize_config.json` of the bitblas
//! format, `bitnet_format.json` of the native format, and the copied tokenizer, generation and
//! other side files of the source.

use super::error::CkptError;
use bitnet_checkpoints::native_format::{
    NativeFormat, TensorParallel, TernaryLayout, FORMAT_NAME, FORMAT_VERSION,
};
use bitnet_checkpoints::{CheckpointError, ModelConfig, RankShapes};
use safetensors::Dtype;
use serde_json::{json, Value};
use std::path::Path;

/// Files never copied: weights (rewritten) and the files each format writes itself.
fn is_weight_or_generated(name: &str) -> bool {
    let weights = [
        ".safetensors",
        ".safetensors.index.json",
        ".bin",
        ".bin.index.json",
        ".pt",
        ".pth",
        ".ckpt",
        ".gguf",
    ];
    weights.iter().any(|s| name.ends_with(s))
        || matches!(
            name,
            "config.json" | "manifest.json" | "bitnet_format.json" | "quantize_config.json"
        )
}

/// Copies every other regular file of `input` (tokenizer, generation config, chat template,
/// README, licence...) into `output`; returns their names.
pub fn copy_side_files(input: &Path, output: &Path) -> Result<Vec<String>, CkptError> {
    let mut copied = Vec::new();
    let entries = std::fs::read_dir(input).map_err(|e| CheckpointError::io(input, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| CheckpointError::io(input, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !entry.path().is_file() || is_weight_or_generated(&name) || name.starts_with('.') {
            continue;
        }
        let to = output.join(&name);
        bitnet_checkpoints::test_hook::charge(entry.metadata().map_or(0, |m| m.len() as usize))
            .and_then(|_| std::fs::copy(entry.path(), &to))
            .map_err(|e| CheckpointError::io(&to, e))?;
        copied.push(name);
    }
    copied.sort();
    Ok(copied)
}

/// Writes `value` as pretty JSON to `path`.
pub fn write_json(path: &Path, value: &Value) -> Result<(), CkptError> {
    let text = serde_json::to_string_pretty(value).expect("JSON serializes") + "\n";
    bitnet_checkpoints::test_hook::charge(text.len())
        .and_then(|_| std::fs::write(path, text))
        .map_err(|e| CheckpointError::io(path, e).into())
}

/// torch's name of a float dtype.
pub fn torch_dtype(dtype: Dtype) -> &'static str {
    match dtype {
        Dtype::BF16 => "bfloat16",
        Dtype::F16 => "float16",
        _ => "float32",
    }
}

/// The source `config.json` rewritten as a 2B-4T BitNet config with the packed, multiplying
/// (`autobitlinear`) layout, which both this engine (family B) and transformers load.
pub fn hf_packed_config(source: &Value, c: &ModelConfig, dtype: Dtype) -> Value {
    let mut v = source.clone();
    let obj = v.as_object_mut().expect("config.json is an object");
    for key in ["weight_bits", "input_bits", "auto_map", "dtype"] {
        obj.remove(key);
    }
    let (use_rms_norm, eps) = c
        .quantization
        .as_ref()
        .map_or((false, 1e-6), |q| (q.use_rms_norm, q.rms_norm_eps));
    let act = match c.activation {
        bitnet_checkpoints::Activation::Silu => "silu",
        bitnet_checkpoints::Activation::Relu2 => "relu2",
    };
    let set = [
        ("architectures", json!(["BitNetForCausalLM"])),
        ("model_type", json!("bitnet")),
        ("hidden_act", json!(act)),
        ("hidden_size", json!(c.hidden_size)),
        ("intermediate_size", json!(c.intermediate_size)),
        ("num_hidden_layers", json!(c.num_layers)),
        ("num_attention_heads", json!(c.num_heads)),
        ("num_key_value_heads", json!(c.num_kv_heads)),
        ("head_dim", json!(c.head_dim)),
        ("vocab_size", json!(c.vocab_size)),
        ("max_position_embeddings", json!(c.max_position_embeddings)),
        ("rms_norm_eps", json!(c.rms_norm_eps)),
        ("rope_theta", json!(c.rope_theta)),
        ("tie_word_embeddings", json!(c.tie_word_embeddings)),
        ("torch_dtype", json!(torch_dtype(dtype))),
        (
            "quantization_config",
            json!({
                "quant_method": "bitnet",
                "linear_class": "autobitlinear",
                "quantization_mode": "offline",
                "use_rms_norm": use_rms_norm,
                "rms_norm_eps": eps,
            }),
        ),
    ];
    for (k, value) in set {
        obj.insert(k.to_string(), value);
    }
    v
}

/// `quantize_config.json` of the bitblas output.
pub fn bitblas_quantize_config() -> Value {
    json!({
        "bits": 2,
        "sym": true,
        "quant_method": "bitnet",
        "checkpoint_format": "bitblas",
        "fuse_qkv": true,
        "fuse_gateup": true,
        "lm_head": false,
        "layout": "unpermuted",
        "sw_dtype": "float64",
    })
}

/// `bitnet_format.json` of a native output.
pub fn native_format(
    config: &ModelConfig,
    embedding: Dtype,
    lm_head: String,
    ranks: Option<Vec<RankShapes>>,
) -> NativeFormat {
    NativeFormat {
        format: FORMAT_NAME.into(),
        version: FORMAT_VERSION,
        ternary_layout: TernaryLayout::current(),
        embedding_dtype: embedding.to_string(),
        lm_head,
        norm_dtype: "F32".into(),
        source_family: config.family.name().into(),
        tensor_parallel: ranks.map(|ranks| TensorParallel {
            world: ranks.len(),
            files: (0..ranks.len())
                .map(|r| bitnet_checkpoints::native_format::rank_file_name(r, ranks.len()))
                .collect(),
            ranks,
        }),
    }
}
