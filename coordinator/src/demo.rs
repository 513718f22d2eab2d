//! The built-in demo model: what `bitnet-cluster generate` runs when no `--model` is given.
//!
//! A tiny 2B-4T-style BitNet with random (seeded) weights and a small byte-level BPE tokenizer
//! (`assets/demo-tokenizer.json`, made by `scripts/make_demo_tokenizer.py`). Its text is
//! gibberish by construction; it exists so the whole path runs on a fresh machine with no files.

use crate::error::CoordinatorError;
use crate::tokenizer::TextTokenizer;
use bitnet_checkpoints::ModelWeights;
use bitnet_worker::SyntheticSpec;

const DEMO_TOKENIZER: &[u8] = include_bytes!("../assets/demo-tokenizer.json");

/// The demo tokenizer, with the 2B-4T chat format.
pub fn tokenizer() -> Result<TextTokenizer, CoordinatorError> {
    let config = serde_json::json!({
        "bos_token": "<|begin_of_text|>",
        "eos_token": "<|end_of_text|>",
        "chat_template": crate::chat::BITNET_CHAT_TEMPLATE,
    });
    TextTokenizer::from_bytes(DEMO_TOKENIZER, Some(&config))
}

/// The demo weights, sized for the demo tokenizer, stopping on its end-of-text token.
pub fn weights(tokenizer: &TextTokenizer) -> ModelWeights {
    let mut weights = SyntheticSpec::demo(tokenizer.vocab_size()).build();
    weights.config.bos_token_id = tokenizer.token_to_id("<|begin_of_text|>");
    weights.config.eos_token_ids = ["<|end_of_text|>", "<|eot_id|>"]
        .iter()
        .filter_map(|t| tokenizer.token_to_id(t))
        .collect();
    weights
}
