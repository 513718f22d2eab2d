//! `read_config` accepts the spellings of every transformers version and refuses what the
//! engine cannot run.

mod common;

use bitnet_checkpoints::{read_config, CheckpointError, Family};
use common::*;
use serde_json::json;

#[test]
fn old_spellings_of_transformers_4() {
    let mut fx = Fixture::bitnet_packed(Some("autobitlinear"), 1.0);
    fx.config["rope_theta"] = json!(500000.0);
    fx.config["torch_dtype"] = json!("bfloat16");
    fx.config["rope_scaling"] = json!(null);
    fx.config["eos_token_id"] = json!([2, 9, 2]);
    fx.config["pad_token_id"] = json!(null);
    let dir = fx.tempdir();
    let c = read_config(dir.path()).unwrap();
    assert_eq!(c.family, Family::BitNet);
    assert_eq!(c.rope_theta, 500000.0);
    assert_eq!(c.dtype.as_deref(), Some("bfloat16"));
    assert_eq!(c.eos_token_ids, vec![2, 9]);
    assert_eq!(c.bos_token_id, Some(1));
    assert_eq!(c.pad_token_id, None);
    assert_eq!(c.head_dim, HIDDEN / HEADS);
    assert_eq!(c.num_kv_heads, KV_HEADS);
    assert_eq!(c.max_position_embeddings, 64);
    assert_eq!(c.rms_norm_eps, 1e-5);
    let q = c.quantization.unwrap();
    assert_eq!(
        (q.linear_class.as_str(), q.mode.as_str()),
        ("autobitlinear", "offline")
    );
    assert!(!q.use_rms_norm);
    assert_eq!(q.rms_norm_eps, 1e-6);
}

#[test]
fn new_spellings_of_transformers_5() {
    let mut fx = Fixture::llama(safetensors::Dtype::BF16);
    let obj = fx.config.as_object_mut().unwrap();
    obj.remove("rope_theta");
    obj.remove("torch_dtype");
    obj.remove("num_key_value_heads");
    obj.insert(
        "rope_parameters".into(),
        json!({"rope_type": "default", "rope_theta": 250000.0}),
    );
    obj.insert("dtype".into(), json!("bfloat16"));
    obj.insert("head_dim".into(), json!(HEAD_DIM));
    let dir = fx.tempdir();
    let c = read_config(dir.path()).unwrap();
    assert_eq!(c.family, Family::Llama);
    assert_eq!(c.rope_theta, 250000.0);
    assert_eq!(c.dtype.as_deref(), Some("bfloat16"));
    assert_eq!(c.num_kv_heads, HEADS);
    assert_eq!(c.head_dim, HEAD_DIM);
    assert!(!c.tie_word_embeddings);
}

#[test]
fn defaults_when_keys_are_absent() {
    let mut fx = Fixture::one_bit_llm();
    let obj = fx.config.as_object_mut().unwrap();
    for key in [
        "rope_theta",
        "tie_word_embeddings",
        "rms_norm_eps",
        "torch_dtype",
    ] {
        obj.remove(key);
    }
    let dir = fx.tempdir();
    let c = read_config(dir.path()).unwrap();
    assert_eq!(c.rope_theta, 10000.0);
    assert!(c.tie_word_embeddings, "no lm_head.weight: tied");
    assert_eq!(c.rms_norm_eps, 1e-6);
    assert_eq!(c.dtype, None);
    assert_eq!(c.eos_token_ids, vec![2]);
}

#[test]
fn absent_tie_follows_the_weights() {
    let mut fx = Fixture::llama(safetensors::Dtype::F32);
    fx.config
        .as_object_mut()
        .unwrap()
        .remove("tie_word_embeddings");
    let dir = fx.tempdir();
    assert!(!read_config(dir.path()).unwrap().tie_word_embeddings);
    fx.remove("lm_head.weight");
    let dir = fx.tempdir();
    assert!(read_config(dir.path()).unwrap().tie_word_embeddings);
}

#[test]
fn generation_config_overrides_eos_and_bos() {
    let mut fx = Fixture::bitnet_packed(None, 1.0);
    fx.generation = Some(json!({"bos_token_id": 7, "eos_token_id": [3, 5], "do_sample": false}));
    let dir = fx.tempdir();
    let c = read_config(dir.path()).unwrap();
    assert_eq!(c.bos_token_id, Some(7));
    assert_eq!(c.eos_token_ids, vec![3, 5]);
    fx.generation = Some(json!({"eos_token_id": 4}));
    let dir = fx.tempdir();
    let c = read_config(dir.path()).unwrap();
    assert_eq!((c.bos_token_id, c.eos_token_ids), (Some(1), vec![4]));
}

#[test]
fn b_quantization_defaults_and_use_rms_norm() {
    let mut fx = Fixture::bitnet_online(true);
    let dir = fx.tempdir();
    let q = read_config(dir.path()).unwrap().quantization.unwrap();
    assert!(q.use_rms_norm);
    assert_eq!(q.rms_norm_eps, 1e-5);
    assert_eq!(q.mode, "online");
    fx.config
        .as_object_mut()
        .unwrap()
        .remove("quantization_config");
    let dir = fx.tempdir();
    let q = read_config(dir.path()).unwrap().quantization.unwrap();
    assert_eq!(
        (q.linear_class.as_str(), q.mode.as_str()),
        ("bitlinear", "offline")
    );
}

#[test]
fn rope_scaling_is_refused() {
    for (key, value) in [
        ("rope_scaling", json!({"type": "linear", "factor": 2.0})),
        (
            "rope_scaling",
            json!({"rope_type": "llama3", "factor": 8.0}),
        ),
        (
            "rope_parameters",
            json!({"rope_type": "yarn", "rope_theta": 10000.0}),
        ),
    ] {
        let mut fx = Fixture::llama(safetensors::Dtype::F16);
        fx.config[key] = value;
        let dir = fx.tempdir();
        let err = read_config(dir.path()).unwrap_err();
        assert!(
            matches!(err, CheckpointError::UnsupportedRopeScaling { .. }),
            "{err}"
        );
        let msg = err.to_string();
        assert!(msg.contains("unsupported rope_scaling"), "{msg}");
        assert!(msg.contains(key), "{msg}");
    }
}

#[test]
fn unknown_architecture_and_activation_are_refused() {
    let mut fx = Fixture::llama(safetensors::Dtype::F16);
    fx.config["architectures"] = json!(["GPT2LMHeadModel"]);
    fx.config["model_type"] = json!("gpt2");
    let dir = fx.tempdir();
    let err = read_config(dir.path()).unwrap_err();
    match &err {
        CheckpointError::UnknownArchitecture {
            found, supported, ..
        } => {
            assert!(found.contains("GPT2LMHeadModel"), "{found}");
            assert_eq!(supported.len(), 5);
        }
        other => panic!("unexpected {other}"),
    }
    let mut fx = Fixture::llama(safetensors::Dtype::F16);
    fx.config["hidden_act"] = json!("gelu");
    let dir = fx.tempdir();
    let msg = read_config(dir.path()).unwrap_err().to_string();
    assert!(
        msg.ends_with(
            "config.json: unsupported hidden_act \"gelu\" (supported: \"silu\", \"relu2\")"
        ),
        "{msg}"
    );
}

#[test]
fn bad_fields_name_the_field() {
    let mut fx = Fixture::llama(safetensors::Dtype::F16);
    fx.config.as_object_mut().unwrap().remove("hidden_size");
    let dir = fx.tempdir();
    let msg = read_config(dir.path()).unwrap_err().to_string();
    assert!(
        msg.ends_with("config.json: missing required field hidden_size"),
        "{msg}"
    );

    let mut fx = Fixture::llama(safetensors::Dtype::F16);
    fx.config["num_key_value_heads"] = json!(3);
    let dir = fx.tempdir();
    let msg = read_config(dir.path()).unwrap_err().to_string();
    assert!(
        msg.contains("not a multiple of num_key_value_heads 3"),
        "{msg}"
    );

    let mut fx = Fixture::llama(safetensors::Dtype::F16);
    fx.config["vocab_size"] = json!("ten");
    let dir = fx.tempdir();
    let msg = read_config(dir.path()).unwrap_err().to_string();
    assert!(
        msg.contains("vocab_size must be a non-negative integer, found \"ten\""),
        "{msg}"
    );
}

#[test]
fn missing_directory_config_and_bad_json() {
    let dir = tempfile::tempdir().unwrap();
    let err = read_config(&dir.path().join("absent")).unwrap_err();
    assert!(
        matches!(
            err,
            CheckpointError::NotFound {
                what: "model directory",
                ..
            }
        ),
        "{err}"
    );
    let err = read_config(dir.path()).unwrap_err();
    assert!(
        matches!(
            err,
            CheckpointError::NotFound {
                what: "config.json",
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .ends_with("config.json: config.json not found"),
        "{err}"
    );
    std::fs::write(dir.path().join("config.json"), "{\"hidden_size\": 16,").unwrap();
    let err = read_config(dir.path()).unwrap_err();
    assert!(matches!(err, CheckpointError::Json { .. }), "{err}");
    assert!(
        err.to_string().contains("config.json: invalid JSON"),
        "{err}"
    );
}

#[test]
fn config_reads_without_weights_and_from_a_pickle_only_directory() {
    let fx = Fixture::onebit();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), fx.config.to_string()).unwrap();
    std::fs::write(dir.path().join("pytorch_model.bin"), b"pickle").unwrap();
    let c = read_config(dir.path()).unwrap();
    assert_eq!(c.family, Family::OneBit);
    assert!(!c.tie_word_embeddings);
}

#[test]
fn unfused_bitblas_format_is_refused() {
    let fx = Fixture::one_bit_llm();
    let dir = fx.tempdir();
    std::fs::write(
        dir.path().join("quantize_config.json"),
        r#"{"bits": 2, "checkpoint_format": "bitblas", "fuse_qkv": true}"#,
    )
    .unwrap();
    let msg = read_config(dir.path()).unwrap_err().to_string();
    assert!(
        msg.contains("quantize_config.json: checkpoint_format \"bitblas\" is read only with fuse_qkv and fuse_gateup"),
        "{msg}"
    );
    std::fs::write(
        dir.path().join("quantize_config.json"),
        r#"{"bits": 2, "checkpoint_format": "bitnet", "quant_method": "bitnet"}"#,
    )
    .unwrap();
    assert_eq!(read_config(dir.path()).unwrap().family, Family::OneBitLlm);
}
