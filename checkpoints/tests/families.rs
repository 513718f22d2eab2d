//! Every family loads from a synthetic checkpoint with the right projection variants and values.

mod common;

use bitnet_checkpoints::{
    load_model, read_config, Activation, Family, ModelWeights, Norm, Projection,
};
use bitnet_kernels::{DenseData, TernaryMatrix};
use common::*;
use safetensors::Dtype;

fn ternary_of(p: &Projection) -> (&TernaryMatrix, &Option<Norm>) {
    match p {
        Projection::Ternary { weight, input_norm } => (weight, input_norm),
        other => panic!("expected a ternary projection, found {other:?}"),
    }
}

fn layer_projection<'a>(w: &'a ModelWeights, i: usize, name: &str) -> &'a Projection {
    w.layers[i]
        .projections()
        .into_iter()
        .find(|(n, _)| *n == name)
        .map(|(_, p)| p)
        .unwrap()
}

#[test]
fn family_a_ternarizes_latent_weights_with_the_reference_rule() {
    let mut fx = Fixture::one_bit_llm();
    // A hand-checked q_proj: mean |W| = (0.1 + 0.5 + 1.0 + 0.4) / 4 = 0.5, W/β = 0.2, -1, 2, 0.8.
    let q: Vec<f32> = [0.1f32, -0.5, 1.0, 0.4].repeat(HEADS * HEAD_DIM * HIDDEN / 4);
    fx.set_floats(
        "model.layers.0.self_attn.q_proj.weight",
        Dtype::F32,
        &[HEADS * HEAD_DIM, HIDDEN],
        &q,
    );
    let dir = fx.tempdir();
    let w = load_model(dir.path()).unwrap();
    assert_eq!(w.config.family, Family::OneBitLlm);
    assert_eq!(w.config.activation, Activation::Silu);
    assert!(w.config.tie_word_embeddings);
    assert!(w.lm_head.is_none());
    let (qw, norm) = ternary_of(&w.layers[0].q);
    assert!(norm.is_none());
    assert_eq!(qw.beta(), 0.5);
    assert_eq!(
        qw.to_ternary(),
        [0i8, -1, 1, 1].repeat(HEADS * HEAD_DIM * HIDDEN / 4)
    );
    // Every other projection matches the reference ternarization of what was written.
    for i in 0..LAYERS {
        for (name, _, inp) in projections() {
            if i == 0 && name == "self_attn.q_proj" {
                continue;
            }
            let key = format!("model.layers.{i}.{name}.weight");
            let latent = fx.floats(&key);
            let expected = TernaryMatrix::from_latent(latent.len() / inp, inp, &latent).unwrap();
            assert_eq!(
                ternary_of(layer_projection(&w, i, name)).0,
                &expected,
                "{key}"
            );
        }
    }
    let sub = w.layers[1].attn_sub_norm.as_ref().unwrap();
    assert_eq!(
        sub.weight.as_ref().unwrap(),
        &fx.floats("model.layers.1.self_attn.inner_attn_ln.weight")
    );
    assert_eq!(sub.eps, 1e-5);
    let ffn = w.layers[0].ffn_sub_norm.as_ref().unwrap();
    assert_eq!(
        ffn.weight.as_ref().unwrap(),
        &fx.floats("model.layers.0.mlp.ffn_layernorm.weight")
    );
    assert_eq!(w.embedding.data().dtype_name(), "F32");
}

#[test]
fn family_b_packed_bytes_decode_to_the_documented_rows() {
    let mut fx = Fixture::bitnet_packed(Some("autobitlinear"), 0.25);
    // up_proj: out 24, in 16, R = 6. Byte P[0, 0] = codes (k = 0..3) 2, 0, 1, 2 -> rows 0, 6,
    // 12, 18 of column 0 are +1, -1, 0, +1; every other byte all zeros (code 1).
    let mut packed = vec![0x55u8; 6 * HIDDEN];
    packed[0] = 0b1001_0010;
    fx.set(
        "model.layers.0.mlp.up_proj.weight",
        Dtype::U8,
        &[6, HIDDEN],
        packed,
    );
    let dir = fx.tempdir();
    let w = load_model(dir.path()).unwrap();
    let (up, _) = ternary_of(&w.layers[0].up);
    let col0: Vec<i8> = (0..INTER).map(|r| up.get(r, 0)).collect();
    let mut expected = vec![0i8; INTER];
    expected[0] = 1;
    expected[6] = -1;
    expected[18] = 1;
    assert_eq!(col0, expected);
    let h = up.histogram();
    assert_eq!(
        (h.minus, h.zero, h.plus),
        (1, (INTER * HIDDEN - 3) as u64, 2)
    );
}

#[test]
fn family_b_autobitlinear_multiplies_and_bitlinear_divides() {
    for (class, beta) in [
        (Some("autobitlinear"), 0.25f32),
        (Some("bitlinear"), 4.0),
        (None, 4.0),
    ] {
        let fx = Fixture::bitnet_packed(class, 0.25);
        let dir = fx.tempdir();
        let w = load_model(dir.path()).unwrap();
        assert_eq!(w.config.family, Family::BitNet);
        assert_eq!(w.config.activation, Activation::Relu2);
        let q = w.config.quantization.as_ref().unwrap();
        assert_eq!(q.linear_class, class.unwrap_or("bitlinear"));
        assert_eq!(q.mode, "offline");
        for i in 0..LAYERS {
            for (name, out, inp) in projections() {
                let (t, norm) = ternary_of(layer_projection(&w, i, name));
                assert_eq!(t.beta(), beta, "{class:?} {name}");
                assert!(norm.is_none());
                let key = format!("model.layers.{i}.{name}");
                assert_eq!(t.to_ternary(), ternary(&key, out * inp), "{key}");
            }
        }
        let sub = w.layers[0].ffn_sub_norm.as_ref().unwrap();
        assert_eq!(
            sub.weight.as_ref().unwrap(),
            &fx.floats("model.layers.0.mlp.ffn_sub_norm.weight")
        );
        assert!(matches!(w.embedding.data(), DenseData::BF16(_)));
        assert!(w.lm_head.is_none());
    }
}

#[test]
fn family_b_online_latent_with_and_without_rms_norm() {
    for use_rms_norm in [false, true] {
        let fx = Fixture::bitnet_online(use_rms_norm);
        let dir = fx.tempdir();
        let w = load_model(dir.path()).unwrap();
        let key = "model.layers.1.mlp.down_proj";
        let latent = fx.floats(&format!("{key}.weight"));
        let (t, norm) = ternary_of(&w.layers[1].down);
        assert_eq!(
            t,
            &TernaryMatrix::from_latent(HIDDEN, INTER, &latent).unwrap()
        );
        if use_rms_norm {
            let n = norm.as_ref().unwrap();
            assert_eq!(n.eps, 1e-5);
            assert_eq!(
                n.weight.as_ref().unwrap(),
                &fx.floats(&format!("{key}.rms_norm.weight"))
            );
        } else {
            assert!(norm.is_none());
        }
    }
}

#[test]
fn family_c_keeps_the_file_dtype_and_values() {
    for dtype in [Dtype::F16, Dtype::BF16, Dtype::F32] {
        let fx = Fixture::llama(dtype);
        let dir = fx.tempdir();
        let w = load_model(dir.path()).unwrap();
        assert_eq!(w.config.family, Family::Llama);
        let Projection::Dense(k) = &w.layers[1].k else {
            panic!("expected dense k_proj");
        };
        assert_eq!(k.data().dtype_name(), dtype.to_string());
        assert_eq!((k.rows(), k.cols()), (KV_HEADS * HEAD_DIM, HIDDEN));
        let expected = fx.floats("model.layers.1.self_attn.k_proj.weight");
        let mut row = vec![0.0f32; HIDDEN];
        k.row_into(3, &mut row);
        assert_eq!(row, expected[3 * HIDDEN..4 * HIDDEN]);
        let head = w.lm_head.as_ref().unwrap();
        head.row_into(VOCAB - 1, &mut row);
        assert_eq!(row, fx.floats("lm_head.weight")[(VOCAB - 1) * HIDDEN..]);
        assert!(w.layers[0].attn_sub_norm.is_none());
        assert!(w.layers[0].input_norm.is_some());
    }
}

#[test]
fn family_e_keeps_sign_bits_scales_and_input_factors() {
    let mut fx = Fixture::onebit();
    // gate_proj row 0, byte 0 = 0b0000_0101: columns 0 and 2 are -1, the rest of the byte +1.
    let key = "model.layers.0.mlp.gate_proj";
    let mut bits = fx.tensors[&format!("{key}.weight")].bytes.clone();
    bits[0] = 0b0000_0101;
    fx.set(
        &format!("{key}.weight"),
        Dtype::I8,
        &[INTER, HIDDEN / 8],
        bits.clone(),
    );
    let dir = fx.tempdir();
    let w = load_model(dir.path()).unwrap();
    assert_eq!(w.config.family, Family::OneBit);
    let Projection::OneBit {
        signs,
        input_factor,
        weight_scale,
    } = &w.layers[0].gate
    else {
        panic!("expected a OneBit projection");
    };
    let row0: Vec<i8> = (0..8).map(|c| signs.get(0, c)).collect();
    assert_eq!(row0, vec![-1, 1, -1, 1, 1, 1, 1, 1]);
    // A later byte, decoded by hand.
    let b = bits[INTER * HIDDEN / 8 - 1];
    for k in 0..8 {
        let expected = if b >> k & 1 == 1 { -1 } else { 1 };
        assert_eq!(signs.get(INTER - 1, HIDDEN - 8 + k), expected);
    }
    assert_eq!(input_factor, &fx.floats(&format!("{key}.input_factor")));
    assert_eq!(weight_scale, &fx.floats(&format!("{key}.weight_scale")));
    assert!(w.lm_head.is_some());
}

#[test]
fn family_e_is_detected_by_tensors_under_a_llama_config() {
    let mut fx = Fixture::onebit();
    fx.config["architectures"] = serde_json::json!(["LlamaForCausalLM"]);
    fx.config["model_type"] = serde_json::json!("llama");
    let dir = fx.tempdir();
    assert_eq!(
        load_model(dir.path()).unwrap().config.family,
        Family::OneBit
    );
}

#[test]
fn family_f_has_per_projection_norms_and_no_input_layernorm() {
    for with_weights in [false, true] {
        let fx = Fixture::llama_bitnet(with_weights);
        let dir = fx.tempdir();
        assert_eq!(read_config(dir.path()).unwrap().family, Family::LlamaBitNet);
        let w = load_model(dir.path()).unwrap();
        assert_eq!(w.config.family, Family::LlamaBitNet);
        assert!(w.config.quantization.is_none());
        assert!(w.layers.iter().all(|l| l.input_norm.is_none()));
        let key = "model.layers.0.self_attn.v_proj";
        let (t, norm) = ternary_of(&w.layers[0].v);
        let latent = fx.floats(&format!("{key}.weight"));
        assert_eq!(
            t,
            &TernaryMatrix::from_latent(KV_HEADS * HEAD_DIM, HIDDEN, &latent).unwrap()
        );
        let norm = norm.as_ref().unwrap();
        assert_eq!(norm.eps, 1e-6);
        if with_weights {
            assert_eq!(
                norm.weight.as_ref().unwrap(),
                &fx.floats(&format!("{key}.rms_norm.weight"))
            );
        } else {
            assert!(norm.weight.is_none());
        }
        assert!(w.lm_head.is_some());
    }
}

#[test]
fn sharded_checkpoint_loads_the_same_model() {
    let fx = Fixture::bitnet_packed(Some("autobitlinear"), 0.5);
    let single = fx.tempdir();
    let sharded = tempfile::tempdir().unwrap();
    fx.write_sharded(sharded.path(), 3);
    // An unrelated safetensors file beside the shards is ignored.
    std::fs::write(sharded.path().join("junk.safetensors"), b"not a model").unwrap();
    let a = load_model(single.path()).unwrap();
    let b = load_model(sharded.path()).unwrap();
    assert_eq!(a, b);
    assert_eq!(b.layers.len(), LAYERS);
}

#[test]
fn tied_model_ignores_a_redundant_lm_head_and_inv_freq() {
    let mut fx = Fixture::one_bit_llm();
    fx.random("lm_head.weight", Dtype::F32, &[VOCAB, HIDDEN]);
    let dir = fx.tempdir();
    let w = load_model(dir.path()).unwrap();
    assert!(w.lm_head.is_none());
    assert_eq!(w.lm_head(), &w.embedding);
}

#[test]
fn memory_bytes_counts_packed_ternary_weights() {
    let fx = Fixture::bitnet_packed(Some("autobitlinear"), 0.5);
    let dir = fx.tempdir();
    let w = load_model(dir.path()).unwrap();
    let per_layer_proj: usize = projections()
        .iter()
        // The kernels' layout: rows padded to groups of 4, columns to blocks of 128 (32 bytes).
        .map(|(_, out, inp)| out.next_multiple_of(4) * inp.div_ceil(128) * 32 + 4)
        .sum();
    let norms = HIDDEN * 2 + HEADS * HEAD_DIM + INTER;
    let expected = VOCAB * HIDDEN * 2 + HIDDEN * 4 + LAYERS * (per_layer_proj + norms * 4);
    assert_eq!(w.memory_bytes(), expected);
}
