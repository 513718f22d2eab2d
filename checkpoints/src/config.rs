//! Typed model configuration read from `config.json` (plus `generation_config.json`), with
//! family detection. Accepts the spellings of every transformers version (FORMATS.md §2).

/// The checkpoint families of FORMATS.md §2 that this engine loads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Family {
    /// A: 1bitLLM reproduction, f32 latent weights, SiLU, sub-norms `inner_attn_ln`/`ffn_layernorm`.
    OneBitLlm,
    /// B: Microsoft BitNet b1.58 2B-4T, packed (offline) or bf16 latent (online), ReLU².
    BitNet,
    /// C: full-precision LLaMA (the FP16 baseline).
    Llama,
    /// E: OneBit W1A16 (sign matrices, input factors, output scales, LN0).
    OneBit,
    /// F: Llama-BitNet: latent BitLinear with its own RMSNorm, no `input_layernorm`.
    LlamaBitNet,
}

impl Family {
    /// A short stable name ("1bitllm", "bitnet", "llama", "onebit", "llama-bitnet").
    pub fn name(&self) -> &'static str {
        match self {
            Family::OneBitLlm => "1bitllm",
            Family::BitNet => "bitnet",
            Family::Llama => "llama",
            Family::OneBit => "onebit",
            Family::LlamaBitNet => "llama-bitnet",
        }
    }
}

/// The MLP activation: `act(gate) · up`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Activation {
    /// `silu(gate) · up` (`hidden_act: "silu"`).
    Silu,
    /// `relu(gate)² · up` (`hidden_act: "relu2"`).
    Relu2,
}

/// How a family-B checkpoint stores its BitLinear weights (`quantization_config`).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct BitNetQuantization {
    /// `linear_class`: `"autobitlinear"` (weight_scale = β, multiply) or `"bitlinear"`
    /// (the default when absent: weight_scale = 1/β, divide).
    pub linear_class: String,
    /// `quantization_mode`: `"offline"` (packed uint8) or `"online"` (latent weights).
    pub mode: String,
    /// `use_rms_norm`: an RMSNorm with a learnable gain on the input of every BitLinear.
    pub use_rms_norm: bool,
    /// eps of that RMSNorm (default 1e-6).
    pub rms_norm_eps: f32,
}

/// Everything the engine needs from `config.json` and `generation_config.json`.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ModelConfig {
    pub family: Family,
    /// `architectures[0]`.
    pub architecture: String,
    pub model_type: String,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    pub max_position_embeddings: usize,
    pub rms_norm_eps: f32,
    pub rope_theta: f32,
    pub activation: Activation,
    pub tie_word_embeddings: bool,
    /// `torch_dtype` or `dtype`, as written.
    pub dtype: Option<String>,
    pub bos_token_id: Option<u32>,
    /// Every id that ends generation: `eos_token_id` of `generation_config.json` when present,
    /// else of `config.json` (a number or a list).
    pub eos_token_ids: Vec<u32>,
    pub pad_token_id: Option<u32>,
    /// `quantization_config`: family B (defaults when absent), and a llama checkpoint carrying
    /// a BitNet `quantization_config` (family F); `None` otherwise.
    pub quantization: Option<BitNetQuantization>,
}
