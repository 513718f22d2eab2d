//! Measurement helper for `ckpt compress` (not part of the product):
//!
//! - `write PRESET DIR`: writes a random-weight latent checkpoint of a preset shape, streamed
//!   tensor by tensor — `bitnet-3b` as a 1bitLLM checkpoint (f32 latent, tied), `bitnet-2b4t`
//!   as a 2B-4T `-bf16` master (bf16 latent, `quantization_mode: online`, tied);
//! - `load DIR [N]`: times `load_model(DIR)` N times (default 3) and prints each.
//!
//! `cargo run --release -p bitnet-checkpoints --example latent_preset -- write bitnet-3b /tmp/3b`

use bitnet_checkpoints::tensor_writer::TensorFileWriter;
use half::bf16;
use safetensors::Dtype;
use serde_json::json;
use std::path::Path;
use std::time::Instant;

struct Preset {
    hidden: usize,
    inter: usize,
    layers: usize,
    heads: usize,
    kv_heads: usize,
    vocab: usize,
    bf16: bool,
}

fn preset(name: &str) -> Preset {
    match name {
        "bitnet-3b" => Preset {
            hidden: 3200,
            inter: 8640,
            layers: 26,
            heads: 32,
            kv_heads: 32,
            vocab: 32002,
            bf16: false,
        },
        "bitnet-2b4t" => Preset {
            hidden: 2560,
            inter: 6912,
            layers: 30,
            heads: 20,
            kv_heads: 5,
            vocab: 128256,
            bf16: true,
        },
        other => panic!("unknown preset {other} (bitnet-3b, bitnet-2b4t)"),
    }
}

/// Uniform values in [-scale, scale) from xorshift64*.
fn fill(state: &mut u64, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| {
            *state ^= *state >> 12;
            *state ^= *state << 25;
            *state ^= *state >> 27;
            let r = state.wrapping_mul(0x2545_F491_4F6C_DD1D);
            ((r >> 40) as f32 / (1u64 << 23) as f32 - 1.0) * scale
        })
        .collect()
}

fn bytes(v: &[f32], bf: bool) -> (Dtype, Vec<u8>) {
    if bf {
        (
            Dtype::BF16,
            v.iter()
                .flat_map(|&x| bf16::from_f32(x).to_le_bytes())
                .collect(),
        )
    } else {
        (Dtype::F32, v.iter().flat_map(|x| x.to_le_bytes()).collect())
    }
}

fn write(name: &str, dir: &Path) {
    let p = preset(name);
    std::fs::create_dir_all(dir).unwrap();
    let hd = p.hidden / p.heads;
    let (q, kv) = (p.heads * hd, p.kv_heads * hd);
    let config = if p.bf16 {
        json!({"architectures": ["BitNetForCausalLM"], "model_type": "bitnet", "hidden_act": "relu2",
               "rope_theta": 500000.0, "max_position_embeddings": 4096, "torch_dtype": "bfloat16",
               "quantization_config": {"quant_method": "bitnet", "linear_class": "autobitlinear",
                                       "quantization_mode": "online"}})
    } else {
        json!({"architectures": ["BitnetForCausalLM"], "model_type": "llama", "hidden_act": "silu",
               "rope_theta": 10000.0, "max_position_embeddings": 2048, "torch_dtype": "float16",
               "weight_bits": 1, "input_bits": 8})
    };
    let mut config = config;
    let obj = config.as_object_mut().unwrap();
    for (k, v) in [
        ("hidden_size", p.hidden),
        ("intermediate_size", p.inter),
        ("num_hidden_layers", p.layers),
        ("num_attention_heads", p.heads),
        ("num_key_value_heads", p.kv_heads),
        ("vocab_size", p.vocab),
    ] {
        obj.insert(k.into(), json!(v));
    }
    obj.insert("rms_norm_eps".into(), json!(1e-5));
    obj.insert("tie_word_embeddings".into(), json!(true));
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(&config).unwrap(),
    )
    .unwrap();
    let (attn, ffn) = if p.bf16 {
        ("self_attn.attn_sub_norm", "mlp.ffn_sub_norm")
    } else {
        ("self_attn.inner_attn_ln", "mlp.ffn_layernorm")
    };
    let mut w =
        TensorFileWriter::create(&dir.join("model.safetensors"), 16 + p.layers * 16).unwrap();
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let started = Instant::now();
    let mut add = |w: &mut TensorFileWriter, n: &str, shape: &[usize], scale: f32, ones: bool| {
        let numel: usize = shape.iter().product();
        let v = if ones {
            vec![1.0; numel]
        } else {
            fill(&mut state, numel, scale)
        };
        let (dt, b) = bytes(&v, p.bf16);
        w.add(n, dt, shape, &b).unwrap();
    };
    add(
        &mut w,
        "model.embed_tokens.weight",
        &[p.vocab, p.hidden],
        0.05,
        false,
    );
    add(&mut w, "model.norm.weight", &[p.hidden], 0.0, true);
    for i in 0..p.layers {
        let l = format!("model.layers.{i}");
        add(
            &mut w,
            &format!("{l}.input_layernorm.weight"),
            &[p.hidden],
            0.0,
            true,
        );
        add(
            &mut w,
            &format!("{l}.post_attention_layernorm.weight"),
            &[p.hidden],
            0.0,
            true,
        );
        add(&mut w, &format!("{l}.{attn}.weight"), &[q], 0.0, true);
        add(&mut w, &format!("{l}.{ffn}.weight"), &[p.inter], 0.0, true);
        for (n, o, inp) in [
            ("self_attn.q_proj", q, p.hidden),
            ("self_attn.k_proj", kv, p.hidden),
            ("self_attn.v_proj", kv, p.hidden),
            ("self_attn.o_proj", p.hidden, q),
            ("mlp.gate_proj", p.inter, p.hidden),
            ("mlp.up_proj", p.inter, p.hidden),
            ("mlp.down_proj", p.hidden, p.inter),
        ] {
            add(&mut w, &format!("{l}.{n}.weight"), &[o, inp], 0.02, false);
        }
        eprintln!(
            "layer {}/{} written ({:.1} s)",
            i + 1,
            p.layers,
            started.elapsed().as_secs_f64()
        );
    }
    let size = w.finish().unwrap();
    println!(
        "wrote {} ({size} bytes) in {:.1} s",
        dir.display(),
        started.elapsed().as_secs_f64()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("write") => write(&args[1], Path::new(&args[2])),
        Some("load") => {
            let n: usize = args.get(2).map_or(3, |s| s.parse().unwrap());
            for i in 0..n {
                let t = Instant::now();
                let w = bitnet_checkpoints::load_model(Path::new(&args[1])).unwrap();
                println!(
                    "load {} : {:.3} s ({} bytes in memory)",
                    i + 1,
                    t.elapsed().as_secs_f64(),
                    w.memory_bytes()
                );
            }
        }
        _ => eprintln!("usage: latent_preset write PRESET DIR | load DIR [N]"),
    }
}
