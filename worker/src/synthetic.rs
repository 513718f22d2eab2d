//! Random-weight models built in memory from a shape: the built-in demo model of
//! `bitnet-cluster generate` and, later, the presets of `bitnet-bench model`.
//!
//! Weights are deterministic for a seed: latent values uniform in [-1, 1) ternarized with the
//! reference rule (BitNet), or the same values stored as f16 (the FP16 LLaMA baseline).

use bitnet_checkpoints::{
    Activation, BitNetQuantization, Family, LayerWeights, ModelConfig, ModelWeights, Norm,
    Projection,
};
use bitnet_kernels::{DenseData, DenseMatrix, TernaryMatrix};
use half::f16;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The shape and arithmetic of a synthetic model.
#[derive(Clone, Debug, PartialEq)]
pub struct SyntheticSpec {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub vocab_size: usize,
    pub max_position_embeddings: usize,
    /// Ternary BitLinear projections (2B-4T graph) when true, dense f16 LLaMA when false.
    pub ternary: bool,
    pub seed: u64,
}

impl SyntheticSpec {
    /// The built-in demo: a tiny 2B-4T-style BitNet (ReLU², GQA, sub-norms, tied head) sized
    /// for the demo tokenizer's vocabulary.
    pub fn demo(vocab_size: usize) -> Self {
        Self {
            hidden_size: 256,
            intermediate_size: 512,
            num_layers: 4,
            num_heads: 8,
            num_kv_heads: 2,
            vocab_size,
            max_position_embeddings: 2048,
            ternary: true,
            seed: 0x5eed,
        }
    }

    /// The model configuration this spec describes.
    pub fn config(&self) -> ModelConfig {
        let (family, architecture, model_type, activation) = if self.ternary {
            (
                Family::BitNet,
                "BitNetForCausalLM",
                "bitnet",
                Activation::Relu2,
            )
        } else {
            (Family::Llama, "LlamaForCausalLM", "llama", Activation::Silu)
        };
        ModelConfig {
            family,
            architecture: architecture.into(),
            model_type: model_type.into(),
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_layers: self.num_layers,
            num_heads: self.num_heads,
            num_kv_heads: self.num_kv_heads,
            head_dim: self.hidden_size / self.num_heads,
            vocab_size: self.vocab_size,
            max_position_embeddings: self.max_position_embeddings,
            rms_norm_eps: 1e-5,
            rope_theta: 500_000.0,
            activation,
            tie_word_embeddings: true,
            dtype: Some(if self.ternary { "bfloat16" } else { "float16" }.into()),
            bos_token_id: None,
            eos_token_ids: Vec::new(),
            pad_token_id: None,
            quantization: self.ternary.then(|| BitNetQuantization {
                linear_class: "autobitlinear".into(),
                mode: "offline".into(),
                use_rms_norm: false,
                rms_norm_eps: 1e-6,
            }),
        }
    }

    /// Builds the weights.
    pub fn build(&self) -> ModelWeights {
        let config = self.config();
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let (h, i, hd) = (self.hidden_size, self.intermediate_size, config.head_dim);
        let (q_out, kv_out) = (self.num_heads * hd, self.num_kv_heads * hd);
        let ternary = self.ternary;
        let mut proj = |rows: usize, cols: usize| -> Projection {
            let latent: Vec<f32> = (0..rows * cols)
                .map(|_| rng.random_range(-1.0f32..1.0))
                .collect();
            if ternary {
                Projection::Ternary {
                    weight: TernaryMatrix::from_latent(rows, cols, &latent)
                        .expect("shape matches by construction"),
                    input_norm: None,
                }
            } else {
                let scale = 1.0 / (cols as f32).sqrt();
                let data = latent.iter().map(|v| f16::from_f32(v * scale)).collect();
                Projection::Dense(
                    DenseMatrix::new(rows, cols, DenseData::F16(data))
                        .expect("shape matches by construction"),
                )
            }
        };
        let sub_norm = |width: usize| {
            ternary.then(|| Norm {
                weight: Some(vec![1.0; width]),
                eps: 1e-5,
            })
        };
        let unit = |width: usize| Norm {
            weight: Some(vec![1.0; width]),
            eps: 1e-5,
        };
        let layers = (0..self.num_layers)
            .map(|_| LayerWeights {
                input_norm: Some(unit(h)),
                q: proj(q_out, h),
                k: proj(kv_out, h),
                v: proj(kv_out, h),
                o: proj(h, q_out),
                attn_sub_norm: sub_norm(q_out),
                post_attention_norm: unit(h),
                gate: proj(i, h),
                up: proj(i, h),
                down: proj(h, i),
                ffn_sub_norm: sub_norm(i),
            })
            .collect();
        let embedding: Vec<f16> = (0..self.vocab_size * h)
            .map(|_| f16::from_f32(rng.random_range(-1.0f32..1.0)))
            .collect();
        ModelWeights {
            config,
            embedding: DenseMatrix::new(self.vocab_size, h, DenseData::F16(embedding))
                .expect("shape matches by construction"),
            layers,
            final_norm: unit(h),
            lm_head: None,
        }
    }
}
