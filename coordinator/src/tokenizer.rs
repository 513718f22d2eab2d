//! [`TextTokenizer`]: text ↔ token ids through the `tokenizers` crate (`tokenizer.json`), plus the
//! special tokens and chat template of `tokenizer_config.json`.

use crate::chat::ChatTemplate;
use crate::error::CoordinatorError;
use std::path::Path;

/// A model's tokenizer and its chat template.
pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
    chat: Option<ChatTemplate>,
}

impl TextTokenizer {
    /// Reads `tokenizer.json` (and `tokenizer_config.json` when present) from a model
    /// directory; `Ok(None)` when the directory has no `tokenizer.json`.
    pub fn from_dir(dir: &Path) -> Result<Option<Self>, CoordinatorError> {
        let path = dir.join("tokenizer.json");
        if !path.exists() {
            return Ok(None);
        }
        let bytes = std::fs::read(&path).map_err(|source| CoordinatorError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let config_path = dir.join("tokenizer_config.json");
        let config =
            match std::fs::read_to_string(&config_path) {
                Ok(text) => Some(serde_json::from_str::<serde_json::Value>(&text).map_err(
                    |e| CoordinatorError::TokenizerFile {
                        path: config_path.display().to_string(),
                        message: format!("invalid JSON: {e}"),
                    },
                )?),
                Err(_) => None,
            };
        Self::from_bytes(&bytes, config.as_ref())
            .map(Some)
            .map_err(|e| match e {
                CoordinatorError::Tokenize(message) => CoordinatorError::TokenizerFile {
                    path: path.display().to_string(),
                    message,
                },
                other => other,
            })
    }

    /// Builds a tokenizer from `tokenizer.json` bytes and an optional parsed
    /// `tokenizer_config.json`.
    pub fn from_bytes(
        tokenizer_json: &[u8],
        config: Option<&serde_json::Value>,
    ) -> Result<Self, CoordinatorError> {
        let inner = tokenizers::Tokenizer::from_bytes(tokenizer_json)
            .map_err(|e| CoordinatorError::Tokenize(format!("cannot parse tokenizer.json: {e}")))?;
        let chat = config.and_then(ChatTemplate::from_tokenizer_config);
        Ok(Self { inner, chat })
    }

    /// Encodes text; `add_special_tokens` applies the tokenizer's post-processor (e.g. BOS).
    pub fn encode(
        &self,
        text: &str,
        add_special_tokens: bool,
    ) -> Result<Vec<u32>, CoordinatorError> {
        let enc = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(|e| CoordinatorError::Tokenize(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Decodes ids to text, dropping special tokens.
    pub fn decode(&self, ids: &[u32]) -> Result<String, CoordinatorError> {
        self.inner
            .decode(ids, true)
            .map_err(|e| CoordinatorError::Tokenize(e.to_string()))
    }

    /// Number of ids the tokenizer knows (with added tokens).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The id of a token string, if the vocabulary has it.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The chat template from `tokenizer_config.json`, if any.
    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.chat.as_ref()
    }
}
