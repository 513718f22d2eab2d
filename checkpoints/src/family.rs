//! Family detection (FORMATS.md §2): from `config.json` and, where the config cannot tell
//! (a plain llama config may be C, E or F), from the tensor names of the weights.
//!
//! Used by [`crate::config_json`] when it builds a [`crate::ModelConfig`].

use crate::config::Family;
use crate::error::CheckpointError;
use serde_json::Value;
use std::path::Path;

/// What [`CheckpointError::UnknownArchitecture`] lists as supported.
pub const SUPPORTED: [&str; 5] = [
    "BitnetForCausalLM (1bitLLM)",
    "BitNetForCausalLM / model_type \"bitnet\" (BitNet b1.58 2B-4T)",
    "LlamaForCausalLM / model_type \"llama\" (FP16 LLaMA)",
    "LlamaForCausalLM without input_layernorm (Llama-BitNet)",
    "model_type \"bitllama\" (OneBit)",
];

/// The tensor whose absence marks a llama checkpoint as Llama-BitNet (family F).
pub const F_MARKER: &str = "model.layers.0.input_layernorm.weight";
/// The tensor whose presence marks a llama checkpoint as OneBit (family E).
pub const E_MARKER: &str = "model.layers.0.self_attn.q_proj.input_factor";

/// Detects the family of a checkpoint from its `config.json` (`config`, read from
/// `config_path`) and, when known, the names of its tensors.
///
/// - `architectures[0] == "BitnetForCausalLM"` (lowercase n) or `weight_bits`/`input_bits`
///   keys → A (1bitLLM);
/// - `model_type "bitnet"` or `BitNetForCausalLM` → B;
/// - `model_type "bitllama"` → E;
/// - `LlamaForCausalLM` / `model_type "llama"`: E when the tensors have an `input_factor`
///   beside the q projection, F when they lack `model.layers.0.input_layernorm.weight` or the
///   config carries a BitNet `quantization_config`, else C. Without tensor names a llama config
///   is C (or F with a BitNet `quantization_config`).
pub fn detect_family(
    config_path: &Path,
    config: &Value,
    tensor_names: Option<&[&str]>,
) -> Result<Family, CheckpointError> {
    let architecture = config
        .get("architectures")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .and_then(Value::as_str)
        .unwrap_or("");
    let model_type = config
        .get("model_type")
        .and_then(Value::as_str)
        .unwrap_or("");
    if architecture == "BitnetForCausalLM"
        || config.get("weight_bits").is_some()
        || config.get("input_bits").is_some()
    {
        return Ok(Family::OneBitLlm);
    }
    if model_type == "bitnet" || architecture == "BitNetForCausalLM" {
        return Ok(Family::BitNet);
    }
    if model_type == "bitllama" || architecture == "BitLlamaForCausalLM" {
        return Ok(Family::OneBit);
    }
    if model_type == "llama" || architecture == "LlamaForCausalLM" {
        let bitnet_quant = config
            .get("quantization_config")
            .and_then(|q| q.get("quant_method"))
            .and_then(Value::as_str)
            == Some("bitnet");
        return Ok(match tensor_names {
            Some(names) if names.contains(&E_MARKER) => Family::OneBit,
            Some(names) if !names.contains(&F_MARKER) => Family::LlamaBitNet,
            _ if bitnet_quant => Family::LlamaBitNet,
            _ => Family::Llama,
        });
    }
    let found = match (architecture, model_type) {
        ("", "") => "(no \"architectures\" or \"model_type\")".to_string(),
        (a, "") => format!("{a:?}"),
        ("", m) => format!("model_type {m:?}"),
        (a, m) => format!("{a:?} (model_type {m:?})"),
    };
    Err(CheckpointError::UnknownArchitecture {
        path: config_path.to_path_buf(),
        found,
        supported: SUPPORTED.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn detect(config: Value, names: Option<&[&str]>) -> Result<Family, CheckpointError> {
        detect_family(Path::new("/m/config.json"), &config, names)
    }

    #[test]
    fn detects_every_family() {
        let a = json!({"architectures": ["BitnetForCausalLM"], "model_type": "llama"});
        assert_eq!(detect(a, None).unwrap(), Family::OneBitLlm);
        let a2 = json!({"architectures": ["LlamaForCausalLM"], "weight_bits": 1});
        assert_eq!(detect(a2, None).unwrap(), Family::OneBitLlm);
        let b = json!({"architectures": ["BitNetForCausalLM"], "model_type": "bitnet"});
        assert_eq!(detect(b, None).unwrap(), Family::BitNet);
        let e = json!({"model_type": "bitllama"});
        assert_eq!(detect(e, None).unwrap(), Family::OneBit);
        let llama = json!({"architectures": ["LlamaForCausalLM"], "model_type": "llama"});
        let c_names = [F_MARKER, "model.embed_tokens.weight"];
        assert_eq!(
            detect(llama.clone(), Some(&c_names)).unwrap(),
            Family::Llama
        );
        assert_eq!(detect(llama.clone(), None).unwrap(), Family::Llama);
        let f_names = ["model.embed_tokens.weight"];
        assert_eq!(
            detect(llama.clone(), Some(&f_names)).unwrap(),
            Family::LlamaBitNet
        );
        let e_names = [F_MARKER, E_MARKER];
        assert_eq!(detect(llama, Some(&e_names)).unwrap(), Family::OneBit);
        let quant =
            json!({"model_type": "llama", "quantization_config": {"quant_method": "bitnet"}});
        assert_eq!(detect(quant, Some(&c_names)).unwrap(), Family::LlamaBitNet);
    }

    #[test]
    fn unknown_architecture_names_it_and_lists_supported() {
        let err = detect(
            json!({"architectures": ["MistralForCausalLM"], "model_type": "mistral"}),
            None,
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with(
                "/m/config.json: unknown architecture \"MistralForCausalLM\" (model_type \"mistral\"); supported: "
            ),
            "{msg}"
        );
        assert!(msg.contains("BitnetForCausalLM (1bitLLM)"), "{msg}");
        assert!(msg.contains("OneBit"), "{msg}");
    }
}
