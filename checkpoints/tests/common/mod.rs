//! Synthetic tiny checkpoints of every family, written with the `safetensors` crate into temp
//! directories. Shapes are deliberately small and uneven (GQA 2:1, intermediate ≠ hidden).

#![allow(dead_code)]

use half::{bf16, f16};
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;

pub const HIDDEN: usize = 16;
pub const INTER: usize = 24;
pub const LAYERS: usize = 2;
pub const HEADS: usize = 2;
pub const KV_HEADS: usize = 1;
pub const HEAD_DIM: usize = 8;
pub const VOCAB: usize = 10;

/// The seven projections with (out, in).
pub fn projections() -> [(&'static str, usize, usize); 7] {
    let q = HEADS * HEAD_DIM;
    let kv = KV_HEADS * HEAD_DIM;
    [
        ("self_attn.q_proj", q, HIDDEN),
        ("self_attn.k_proj", kv, HIDDEN),
        ("self_attn.v_proj", kv, HIDDEN),
        ("self_attn.o_proj", HIDDEN, q),
        ("mlp.gate_proj", INTER, HIDDEN),
        ("mlp.up_proj", INTER, HIDDEN),
        ("mlp.down_proj", HIDDEN, INTER),
    ]
}

/// A stored tensor: dtype, shape, little-endian bytes.
#[derive(Clone, Debug)]
pub struct Stored {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

/// A checkpoint to write: config.json, optional generation_config.json, tensors.
#[derive(Clone, Debug)]
pub struct Fixture {
    pub config: Value,
    pub generation: Option<Value>,
    pub tensors: BTreeMap<String, Stored>,
}

/// Deterministic pseudo-random values in (-1, 1), different per `seed`.
pub fn values(seed: &str, n: usize) -> Vec<f32> {
    let mut state: u64 = seed.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Deterministic ternary values.
pub fn ternary(seed: &str, n: usize) -> Vec<i8> {
    values(seed, n)
        .into_iter()
        .map(|x| {
            if x < -0.33 {
                -1
            } else if x > 0.33 {
                1
            } else {
                0
            }
        })
        .collect()
}

pub fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub fn f16_bytes(v: &[f32]) -> Vec<u8> {
    v.iter()
        .flat_map(|&x| f16::from_f32(x).to_le_bytes())
        .collect()
}

pub fn bf16_bytes(v: &[f32]) -> Vec<u8> {
    v.iter()
        .flat_map(|&x| bf16::from_f32(x).to_le_bytes())
        .collect()
}

/// Values in `dtype` (rounded through it) and their bytes.
pub fn float_bytes(dtype: Dtype, v: &[f32]) -> Vec<u8> {
    match dtype {
        Dtype::F32 => f32_bytes(v),
        Dtype::F16 => f16_bytes(v),
        Dtype::BF16 => bf16_bytes(v),
        other => panic!("not a float dtype: {other}"),
    }
}

/// Family-B packing written from FORMATS.md §2.B, independent of the crate's own:
/// `P[r, c] |= (T[k·R + r, c] + 1) << 2k`, `R = out / 4`.
pub fn pack_b(t: &[i8], out: usize, cols: usize) -> Vec<u8> {
    assert_eq!(out % 4, 0);
    let r_total = out / 4;
    let mut p = vec![0u8; r_total * cols];
    for k in 0..4 {
        for r in 0..r_total {
            for c in 0..cols {
                let code = (t[(k * r_total + r) * cols + c] + 1) as u8;
                p[r * cols + c] |= code << (2 * k);
            }
        }
    }
    p
}

fn base_config(arch: &str, model_type: &str, act: &str) -> Value {
    json!({
        "architectures": [arch],
        "model_type": model_type,
        "hidden_size": HIDDEN,
        "intermediate_size": INTER,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "vocab_size": VOCAB,
        "max_position_embeddings": 64,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "hidden_act": act,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "torch_dtype": "float32",
    })
}

impl Fixture {
    fn new(config: Value) -> Self {
        Self {
            config,
            generation: None,
            tensors: BTreeMap::new(),
        }
    }

    /// Stores a tensor (replacing any of the same name).
    pub fn set(&mut self, name: &str, dtype: Dtype, shape: &[usize], bytes: Vec<u8>) {
        self.tensors.insert(
            name.to_string(),
            Stored {
                dtype,
                shape: shape.to_vec(),
                bytes,
            },
        );
    }

    /// Stores float values in `dtype`.
    pub fn set_floats(&mut self, name: &str, dtype: Dtype, shape: &[usize], v: &[f32]) {
        self.set(name, dtype, shape, float_bytes(dtype, v));
    }

    /// Random float tensor.
    pub fn random(&mut self, name: &str, dtype: Dtype, shape: &[usize]) {
        let n = shape.iter().product();
        self.set_floats(name, dtype, shape, &values(name, n));
    }

    pub fn remove(&mut self, name: &str) -> Stored {
        self.tensors.remove(name).expect("tensor to remove")
    }

    /// The values of a stored float tensor as f32.
    pub fn floats(&self, name: &str) -> Vec<f32> {
        let s = &self.tensors[name];
        match s.dtype {
            Dtype::F32 => s
                .bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F16 => s
                .bytes
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::BF16 => s
                .bytes
                .chunks_exact(2)
                .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            other => panic!("{name} is {other}"),
        }
    }

    /// Embedding, final norm, per-layer norms in `dtype` (plus sub-norms when named).
    fn common(&mut self, dtype: Dtype, input_norm: bool, sub_norms: Option<(&str, &str)>) {
        self.random("model.embed_tokens.weight", dtype, &[VOCAB, HIDDEN]);
        self.random("model.norm.weight", dtype, &[HIDDEN]);
        for i in 0..LAYERS {
            let p = format!("model.layers.{i}");
            if input_norm {
                self.random(&format!("{p}.input_layernorm.weight"), dtype, &[HIDDEN]);
            }
            self.random(
                &format!("{p}.post_attention_layernorm.weight"),
                dtype,
                &[HIDDEN],
            );
            if let Some((attn, ffn)) = sub_norms {
                self.random(&format!("{p}.{attn}.weight"), dtype, &[HEADS * HEAD_DIM]);
                self.random(&format!("{p}.{ffn}.weight"), dtype, &[INTER]);
            }
        }
    }

    fn each_projection(&mut self, mut f: impl FnMut(&mut Self, String, usize, usize)) {
        for i in 0..LAYERS {
            for (name, out, inp) in projections() {
                f(self, format!("model.layers.{i}.{name}"), out, inp);
            }
        }
    }

    /// Family A: 1bitLLM, f32 latent weights, tied, sub-norms `inner_attn_ln`/`ffn_layernorm`.
    pub fn one_bit_llm() -> Self {
        let mut c = base_config("BitnetForCausalLM", "llama", "silu");
        c["weight_bits"] = json!(1);
        c["input_bits"] = json!(8);
        c["num_key_value_heads"] = json!(HEADS);
        c["tie_word_embeddings"] = json!(true);
        let mut fx = Self::new(c);
        // MHA for family A.
        fx.common(
            Dtype::F32,
            true,
            Some(("self_attn.inner_attn_ln", "mlp.ffn_layernorm")),
        );
        for i in 0..LAYERS {
            for (name, out, inp) in projections() {
                let out = if name == "self_attn.k_proj" || name == "self_attn.v_proj" {
                    HEADS * HEAD_DIM
                } else {
                    out
                };
                fx.random(
                    &format!("model.layers.{i}.{name}.weight"),
                    Dtype::F32,
                    &[out, inp],
                );
            }
            fx.random(
                &format!("model.layers.{i}.self_attn.rotary_emb.inv_freq"),
                Dtype::F32,
                &[HEAD_DIM / 2],
            );
        }
        fx
    }

    /// Family B, packed (`offline`) with the given `linear_class` (None: key absent).
    pub fn bitnet_packed(linear_class: Option<&str>, weight_scale: f32) -> Self {
        let mut c = base_config("BitNetForCausalLM", "bitnet", "relu2");
        c["tie_word_embeddings"] = json!(true);
        c["torch_dtype"] = json!("bfloat16");
        let mut q = json!({"quant_method": "bitnet", "quantization_mode": "offline"});
        if let Some(lc) = linear_class {
            q["linear_class"] = json!(lc);
        }
        c["quantization_config"] = q;
        let mut fx = Self::new(c);
        fx.common(
            Dtype::BF16,
            true,
            Some(("self_attn.attn_sub_norm", "mlp.ffn_sub_norm")),
        );
        fx.each_projection(|fx, p, out, inp| {
            let t = ternary(&p, out * inp);
            fx.set(
                &format!("{p}.weight"),
                Dtype::U8,
                &[out / 4, inp],
                pack_b(&t, out, inp),
            );
            fx.set_floats(
                &format!("{p}.weight_scale"),
                Dtype::BF16,
                &[1],
                &[weight_scale],
            );
        });
        fx
    }

    /// Family B, bf16 latent (`online`), optionally with `use_rms_norm`.
    pub fn bitnet_online(use_rms_norm: bool) -> Self {
        let mut c = base_config("BitNetForCausalLM", "bitnet", "relu2");
        c["quantization_config"] = json!({
            "quant_method": "bitnet", "linear_class": "autobitlinear",
            "quantization_mode": "online", "use_rms_norm": use_rms_norm, "rms_norm_eps": 1e-5,
        });
        c["tie_word_embeddings"] = json!(true);
        let mut fx = Self::new(c);
        fx.common(
            Dtype::BF16,
            true,
            Some(("self_attn.attn_sub_norm", "mlp.ffn_sub_norm")),
        );
        fx.each_projection(|fx, p, out, inp| {
            fx.random(&format!("{p}.weight"), Dtype::BF16, &[out, inp]);
            if use_rms_norm {
                fx.random(&format!("{p}.rms_norm.weight"), Dtype::BF16, &[inp]);
            }
        });
        fx
    }

    /// Family C: dense LLaMA in `dtype`, untied.
    pub fn llama(dtype: Dtype) -> Self {
        let mut c = base_config("LlamaForCausalLM", "llama", "silu");
        c["tie_word_embeddings"] = json!(false);
        let mut fx = Self::new(c);
        fx.common(dtype, true, None);
        fx.each_projection(|fx, p, out, inp| fx.random(&format!("{p}.weight"), dtype, &[out, inp]));
        fx.random("lm_head.weight", dtype, &[VOCAB, HIDDEN]);
        fx
    }

    /// Family E: OneBit, `model_type: "bitllama"`, sign bits, untied.
    pub fn onebit() -> Self {
        let mut c = base_config("BitLlamaForCausalLM", "bitllama", "silu");
        c["tie_word_embeddings"] = json!(false);
        let mut fx = Self::new(c);
        fx.common(Dtype::F32, true, None);
        fx.each_projection(|fx, p, out, inp| {
            let bits: Vec<u8> = values(&p, out * inp / 8)
                .iter()
                .map(|x| ((x + 1.0) * 127.9) as u8)
                .collect();
            fx.set(&format!("{p}.weight"), Dtype::I8, &[out, inp / 8], bits);
            fx.random(&format!("{p}.weight_scale"), Dtype::F32, &[out]);
            fx.random(&format!("{p}.input_factor"), Dtype::F32, &[inp]);
        });
        fx.random("lm_head.weight", Dtype::F32, &[VOCAB, HIDDEN]);
        fx
    }

    /// Family F: Llama-BitNet, f32 latent, no `input_layernorm`, untied; optionally with saved
    /// `*_proj.rms_norm.weight`.
    pub fn llama_bitnet(norm_weights: bool) -> Self {
        let mut c = base_config("LlamaForCausalLM", "llama", "silu");
        c["tie_word_embeddings"] = json!(false);
        let mut fx = Self::new(c);
        fx.common(Dtype::F32, false, None);
        fx.each_projection(|fx, p, out, inp| {
            fx.random(&format!("{p}.weight"), Dtype::F32, &[out, inp]);
            if norm_weights {
                fx.random(&format!("{p}.rms_norm.weight"), Dtype::F32, &[inp]);
            }
        });
        fx.random("lm_head.weight", Dtype::F32, &[VOCAB, HIDDEN]);
        fx
    }

    fn serialize(tensors: &BTreeMap<String, Stored>) -> Vec<u8> {
        let views: Vec<(&str, TensorView<'_>)> = tensors
            .iter()
            .map(|(n, s)| {
                (
                    n.as_str(),
                    TensorView::new(s.dtype, s.shape.clone(), &s.bytes).unwrap(),
                )
            })
            .collect();
        safetensors::serialize(views, None).unwrap()
    }

    fn write_configs(&self, dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(
            dir.join("config.json"),
            serde_json::to_string_pretty(&self.config).unwrap(),
        )
        .unwrap();
        if let Some(g) = &self.generation {
            std::fs::write(dir.join("generation_config.json"), g.to_string()).unwrap();
        }
    }

    /// Writes config(s) and `model.safetensors` into `dir`.
    pub fn write(&self, dir: &Path) {
        self.write_configs(dir);
        std::fs::write(
            dir.join("model.safetensors"),
            Self::serialize(&self.tensors),
        )
        .unwrap();
    }

    /// Writes config(s), `shards` shard files and `model.safetensors.index.json`.
    pub fn write_sharded(&self, dir: &Path, shards: usize) {
        self.write_configs(dir);
        let mut parts: Vec<BTreeMap<String, Stored>> = vec![BTreeMap::new(); shards];
        let mut weight_map = serde_json::Map::new();
        for (i, (name, s)) in self.tensors.iter().enumerate() {
            let file = format!("model-{:05}-of-{:05}.safetensors", i % shards + 1, shards);
            parts[i % shards].insert(name.clone(), s.clone());
            weight_map.insert(name.clone(), json!(file));
        }
        for (i, part) in parts.iter().enumerate() {
            let file = format!("model-{:05}-of-{:05}.safetensors", i + 1, shards);
            std::fs::write(dir.join(file), Self::serialize(part)).unwrap();
        }
        let index = json!({"metadata": {"total_size": 0}, "weight_map": weight_map});
        std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    }

    /// Writes into a fresh temp directory.
    pub fn tempdir(&self) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        self.write(dir.path());
        dir
    }
}
