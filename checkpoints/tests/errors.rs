//! Every way a checkpoint can be wrong gives a one-line error naming the file or tensor and
//! what was expected.

mod common;

use bitnet_checkpoints::{load_model, CheckpointError};
use common::*;
use safetensors::Dtype;

fn load_err(fx: &Fixture) -> CheckpointError {
    let dir = fx.tempdir();
    let err = load_model(dir.path()).unwrap_err();
    let msg = err.to_string();
    assert!(!msg.contains('\n'), "multi-line error: {msg}");
    err
}

#[test]
fn missing_tensor_names_it_and_the_file() {
    let mut fx = Fixture::bitnet_packed(Some("autobitlinear"), 1.0);
    fx.remove("model.layers.1.mlp.down_proj.weight_scale");
    match load_err(&fx) {
        CheckpointError::MissingTensor { name, path } => {
            assert_eq!(name, "model.layers.1.mlp.down_proj.weight_scale");
            assert!(path.ends_with("model.safetensors"), "{}", path.display());
        }
        other => panic!("unexpected {other}"),
    }
    let mut fx = Fixture::llama(Dtype::F16);
    fx.remove("lm_head.weight");
    let err = load_err(&fx);
    assert!(
        err.to_string()
            .starts_with("tensor lm_head.weight is missing from "),
        "{err}"
    );
}

#[test]
fn missing_tensor_of_a_sharded_checkpoint_names_the_index() {
    let mut fx = Fixture::one_bit_llm();
    fx.remove("model.layers.0.self_attn.inner_attn_ln.weight");
    let dir = tempfile::tempdir().unwrap();
    fx.write_sharded(dir.path(), 2);
    let err = load_model(dir.path()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "tensor model.layers.0.self_attn.inner_attn_ln.weight is missing from {}",
            dir.path().join("model.safetensors.index.json").display()
        )
    );
}

#[test]
fn extra_tensors_are_listed() {
    let mut fx = Fixture::llama(Dtype::BF16);
    for i in 0..7 {
        fx.random(
            &format!("model.layers.0.self_attn.q_proj.bias{i}"),
            Dtype::BF16,
            &[4],
        );
    }
    match load_err(&fx) {
        CheckpointError::UnexpectedTensors { names, count, .. } => {
            assert_eq!(count, 7);
            assert_eq!(names.len(), 5);
            assert_eq!(names[0], "model.layers.0.self_attn.q_proj.bias0");
        }
        other => panic!("unexpected {other}"),
    }
    // A family-B checkpoint under a plain llama config (read as C) is caught by its leftovers.
    let mut fx = Fixture::bitnet_online(false);
    fx.config["architectures"] = serde_json::json!(["LlamaForCausalLM"]);
    fx.config["model_type"] = serde_json::json!("llama");
    fx.config["hidden_act"] = serde_json::json!("silu");
    fx.config
        .as_object_mut()
        .unwrap()
        .remove("quantization_config");
    let err = load_err(&fx);
    let msg = err.to_string();
    assert!(
        msg.contains("unexpected tensor(s) for this family"),
        "{msg}"
    );
    assert!(msg.contains("attn_sub_norm"), "{msg}");
}

#[test]
fn shape_mismatch_gives_expected_and_found() {
    let mut fx = Fixture::bitnet_packed(Some("autobitlinear"), 1.0);
    let name = "model.layers.0.self_attn.k_proj.weight";
    // Unpacked-size uint8 instead of [out/4, in].
    fx.set(
        name,
        Dtype::U8,
        &[KV_HEADS * HEAD_DIM, HIDDEN],
        vec![0x55; KV_HEADS * HEAD_DIM * HIDDEN],
    );
    match load_err(&fx) {
        CheckpointError::Shape {
            name: n,
            expected,
            found,
            ..
        } => {
            assert_eq!(n, name);
            assert_eq!(expected, vec![KV_HEADS * HEAD_DIM / 4, HIDDEN]);
            assert_eq!(found, vec![KV_HEADS * HEAD_DIM, HIDDEN]);
        }
        other => panic!("unexpected {other}"),
    }
    let mut fx = Fixture::llama(Dtype::F16);
    fx.random("model.norm.weight", Dtype::F16, &[HIDDEN + 1]);
    let msg = load_err(&fx).to_string();
    assert!(msg.contains("tensor model.norm.weight in "), "{msg}");
    assert!(msg.ends_with(": shape [17], expected [16]"), "{msg}");
}

#[test]
fn dtype_mismatch_gives_expected_set_and_found() {
    // Latent bf16 weights where the config says offline packed.
    let mut fx = Fixture::bitnet_online(false);
    fx.config["quantization_config"]["quantization_mode"] = serde_json::json!("offline");
    match load_err(&fx) {
        CheckpointError::Dtype {
            name,
            expected,
            found,
            ..
        } => {
            assert_eq!(name, "model.layers.0.self_attn.q_proj.weight");
            assert_eq!(expected, "U8");
            assert_eq!(found, "BF16");
        }
        other => panic!("unexpected {other}"),
    }
    let mut fx = Fixture::llama(Dtype::F32);
    fx.set(
        "model.embed_tokens.weight",
        Dtype::I32,
        &[VOCAB, HIDDEN],
        vec![0; VOCAB * HIDDEN * 4],
    );
    let msg = load_err(&fx).to_string();
    assert!(
        msg.ends_with(": dtype I32, expected one of F32/F16/BF16"),
        "{msg}"
    );
}

#[test]
fn packed_code_three_names_tensor_row_and_column() {
    let mut fx = Fixture::bitnet_packed(Some("bitlinear"), 1.0);
    let name = "model.layers.1.mlp.gate_proj.weight";
    // gate: out 24 (R = 6), in 16. Code 3 in pair k = 1 of byte [2, 5] -> weight row 6 + 2 = 8.
    let mut packed = vec![0x55u8; 6 * HIDDEN];
    packed[2 * HIDDEN + 5] = 0b0101_1101;
    fx.set(name, Dtype::U8, &[6, HIDDEN], packed);
    match load_err(&fx) {
        CheckpointError::PackedCode3 {
            name: n,
            packed_row,
            row,
            col,
        } => {
            assert_eq!(n, name);
            assert_eq!((packed_row, row, col), (2, 8, 5));
        }
        other => panic!("unexpected {other}"),
    }
}

#[test]
fn non_positive_weight_scale_is_refused() {
    let fx = Fixture::bitnet_packed(Some("bitlinear"), 0.0);
    let msg = load_err(&fx).to_string();
    assert!(
        msg.contains("weight_scale 0 is not a positive finite number"),
        "{msg}"
    );
}

#[test]
fn pickle_only_directory_is_refused_with_the_conversion_hint() {
    let fx = Fixture::llama(Dtype::F16);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), fx.config.to_string()).unwrap();
    std::fs::write(dir.path().join("pytorch_model.bin"), b"\x80\x02pickle").unwrap();
    let err = load_model(dir.path()).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, CheckpointError::PickleRefused { .. }),
        "{msg}"
    );
    assert!(
        msg.starts_with(&format!(
            "{}: refused: not a zip-format torch.save file",
            dir.path().join("pytorch_model.bin").display()
        )),
        "{msg}"
    );
    assert!(msg.contains("nothing is executed"), "{msg}");
    assert!(
        msg.contains(
            "save_file(torch.load('pytorch_model.bin', weights_only=True), 'model.safetensors')"
        ),
        "{msg}"
    );
    assert!(!msg.contains('\n'), "{msg}");
}

#[test]
fn pickle_beside_safetensors_is_ignored() {
    let fx = Fixture::llama(Dtype::F16);
    let dir = fx.tempdir();
    std::fs::write(dir.path().join("pytorch_model.bin"), b"\x80\x02pickle").unwrap();
    let w = load_model(dir.path()).unwrap();
    assert_eq!(w.layers.len(), LAYERS);
}

#[test]
fn truncated_safetensors_names_the_file() {
    let fx = Fixture::llama(Dtype::F16);
    let dir = fx.tempdir();
    let path = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = load_model(dir.path()).unwrap_err();
    assert!(matches!(err, CheckpointError::Safetensors { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!(
            "{}: not a valid safetensors file: ",
            path.display()
        )),
        "{msg}"
    );
}

#[test]
fn truncated_shard_names_the_shard() {
    let fx = Fixture::one_bit_llm();
    let dir = tempfile::tempdir().unwrap();
    fx.write_sharded(dir.path(), 2);
    let path = dir.path().join("model-00002-of-00002.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
    let msg = load_model(dir.path()).unwrap_err().to_string();
    assert!(msg.starts_with(&path.display().to_string()), "{msg}");
}

#[test]
fn missing_directory_or_config() {
    let dir = tempfile::tempdir().unwrap();
    let err = load_model(&dir.path().join("nope")).unwrap_err();
    assert!(
        err.to_string().ends_with("nope: model directory not found"),
        "{err}"
    );
    let fx = Fixture::llama(Dtype::F16);
    let dir = fx.tempdir();
    std::fs::remove_file(dir.path().join("config.json")).unwrap();
    let err = load_model(dir.path()).unwrap_err();
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
}

#[test]
fn directory_without_weights() {
    let fx = Fixture::llama(Dtype::F16);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), fx.config.to_string()).unwrap();
    std::fs::write(dir.path().join("adapter.safetensors"), b"x").unwrap();
    let err = load_model(dir.path()).unwrap_err();
    assert!(matches!(err, CheckpointError::NoWeights { .. }), "{err}");
    assert!(
        err.to_string().ends_with("(found: adapter.safetensors)"),
        "{err}"
    );
}

#[test]
fn onebit_sign_tensor_in_the_wrong_dtype_or_shape() {
    let mut fx = Fixture::onebit();
    let name = "model.layers.0.mlp.down_proj.weight";
    fx.random(name, Dtype::F32, &[HIDDEN, INTER]);
    match load_err(&fx) {
        CheckpointError::Dtype {
            name: n,
            expected,
            found,
            ..
        } => {
            assert_eq!(n, name);
            assert_eq!(expected, "I8/U8");
            assert_eq!(found, "F32");
        }
        other => panic!("unexpected {other}"),
    }
    let mut fx = Fixture::onebit();
    fx.set(name, Dtype::I8, &[HIDDEN, INTER], vec![0; HIDDEN * INTER]);
    match load_err(&fx) {
        CheckpointError::Shape { expected, .. } => assert_eq!(expected, vec![HIDDEN, INTER / 8]),
        other => panic!("unexpected {other}"),
    }
}
