//! Random-weight models built in memory from a shape: the built-in demo model of
//! `bitnet-cluster generate` and the presets of `bitnet-bench model`.
//!
//! Weights are deterministic for a seed. Ternary families get ternary values drawn uniformly
//! from {-1, 0, +1} with β = 1/√in (so activations keep their scale); the FP16 LLaMA baseline
//! gets uniform f16 values scaled by 1/√in. Values are drawn with a small xorshift generator so
//! that even a 70B shape builds in reasonable time.

use bitnet_checkpoints::{
    Activation, BitNetQuantization, Family, LayerWeights, ModelConfig, ModelWeights, Norm,
    Projection,
};
use bitnet_kernels::{DenseData, DenseMatrix, TernaryMatrix};
use half::f16;

/// The shape and arithmetic of a synthetic model.
#[derive(Clone, Debug, PartialEq)]
pub struct SyntheticSpec {
    /// `BitNet` (2B-4T graph), `OneBitLlm` (1bitLLM graph) or `Llama` (dense f16 baseline).
    pub family: Family,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub vocab_size: usize,
    pub max_position_embeddings: usize,
    pub activation: Activation,
    pub tie_word_embeddings: bool,
    pub seed: u64,
}

/// A fast deterministic generator (xorshift64*); quality is irrelevant for random weights.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

impl SyntheticSpec {
    /// The built-in demo: a tiny 2B-4T-style BitNet (ReLU², GQA, sub-norms, tied head) sized
    /// for the demo tokenizer's vocabulary.
    pub fn demo(vocab_size: usize) -> Self {
        Self {
            family: Family::BitNet,
            hidden_size: 256,
            intermediate_size: 512,
            num_layers: 4,
            num_heads: 8,
            num_kv_heads: 2,
            vocab_size,
            max_position_embeddings: 2048,
            activation: Activation::Relu2,
            tie_word_embeddings: true,
            seed: 0x5eed,
        }
    }

    /// True when the projections are ternary.
    pub fn is_ternary(&self) -> bool {
        self.family != Family::Llama
    }

    /// The same shape as a dense FP16 LLaMA (the baseline of the BitNet paper).
    pub fn as_llama(&self) -> Self {
        Self {
            family: Family::Llama,
            activation: Activation::Silu,
            ..self.clone()
        }
    }

    /// The model configuration this spec describes.
    pub fn config(&self) -> ModelConfig {
        let (architecture, model_type) = match self.family {
            Family::BitNet => ("BitNetForCausalLM", "bitnet"),
            Family::OneBitLlm => ("BitnetForCausalLM", "llama"),
            _ => ("LlamaForCausalLM", "llama"),
        };
        ModelConfig {
            family: self.family,
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
            activation: self.activation,
            tie_word_embeddings: self.tie_word_embeddings,
            dtype: Some("float16".into()),
            bos_token_id: None,
            eos_token_ids: Vec::new(),
            pad_token_id: None,
            quantization: (self.family == Family::BitNet).then(|| BitNetQuantization {
                linear_class: "autobitlinear".into(),
                mode: "offline".into(),
                use_rms_norm: false,
                rms_norm_eps: 1e-6,
            }),
        }
    }

    fn projection(&self, rng: &mut XorShift, rows: usize, cols: usize) -> Projection {
        let scale = 1.0 / (cols as f32).sqrt();
        if self.is_ternary() {
            let values: Vec<i8> = (0..rows * cols)
                .map(|_| (rng.next() % 3) as i8 - 1)
                .collect();
            Projection::Ternary {
                weight: TernaryMatrix::from_ternary(rows, cols, &values, scale)
                    .expect("shape matches by construction"),
                input_norm: None,
            }
        } else {
            Projection::Dense(dense(rng, rows, cols, scale))
        }
    }

    /// Builds the weights.
    pub fn build(&self) -> ModelWeights {
        let config = self.config();
        let mut rng = XorShift::new(self.seed);
        let (h, i, hd) = (self.hidden_size, self.intermediate_size, config.head_dim);
        let (q_out, kv_out) = (self.num_heads * hd, self.num_kv_heads * hd);
        let sub_norm = |width: usize| {
            self.is_ternary().then(|| Norm {
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
                q: self.projection(&mut rng, q_out, h),
                k: self.projection(&mut rng, kv_out, h),
                v: self.projection(&mut rng, kv_out, h),
                o: self.projection(&mut rng, h, q_out),
                attn_sub_norm: sub_norm(q_out),
                post_attention_norm: unit(h),
                gate: self.projection(&mut rng, i, h),
                up: self.projection(&mut rng, i, h),
                down: self.projection(&mut rng, h, i),
                ffn_sub_norm: sub_norm(i),
            })
            .collect();
        let embedding = dense(&mut rng, self.vocab_size, h, 1.0);
        let lm_head = (!self.tie_word_embeddings).then(|| dense(&mut rng, self.vocab_size, h, 1.0));
        ModelWeights {
            config,
            embedding,
            layers,
            final_norm: unit(h),
            lm_head,
        }
    }
}

/// A random f16 matrix with values uniform in [-scale, scale).
fn dense(rng: &mut XorShift, rows: usize, cols: usize, scale: f32) -> DenseMatrix {
    let data = (0..rows * cols)
        .map(|_| f16::from_f32(rng.unit() * scale))
        .collect();
    DenseMatrix::new(rows, cols, DenseData::F16(data)).expect("shape matches by construction")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_the_requested_shape_deterministically() {
        let spec = SyntheticSpec {
            hidden_size: 32,
            intermediate_size: 48,
            num_layers: 2,
            num_heads: 4,
            num_kv_heads: 2,
            vocab_size: 10,
            tie_word_embeddings: false,
            ..SyntheticSpec::demo(10)
        };
        let a = spec.build();
        assert_eq!(a, spec.build(), "same seed, same weights");
        assert_eq!(a.layers.len(), 2);
        assert_eq!(a.layers[0].k.out_features(), 16);
        assert_eq!(a.layers[0].down.in_features(), 48);
        assert!(a.lm_head.is_some());
        let Projection::Ternary { weight, .. } = &a.layers[0].q else {
            panic!("ternary expected");
        };
        let h = weight.histogram();
        assert!(h.minus > 0 && h.zero > 0 && h.plus > 0);
        let llama = spec.as_llama().build();
        assert!(matches!(llama.layers[1].up, Projection::Dense(_)));
        assert!(llama.layers[0].attn_sub_norm.is_none());
    }
}
