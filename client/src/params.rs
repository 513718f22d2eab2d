//! What a caller asks for: [`GenerateParams`] (the prompt, as text or token ids) and the typed
//! [`SamplingParams`] builder, whose unset fields leave the server default (proto3 `optional`).

use serde::Serialize;

/// The prompt of a generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Prompt {
    /// Text, tokenized by the server.
    Text(String),
    /// Pre-tokenized input.
    TokenIds(Vec<u32>),
}

/// Sampling settings. Every field is optional: `None` means the server default, never zero.
///
/// ```
/// use bitnet_client::SamplingParams;
/// let greedy = SamplingParams::greedy().max_tokens(32).stop("\n\n");
/// assert_eq!(greedy.temperature, Some(0.0));
/// assert_eq!(greedy.top_p, None);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SamplingParams {
    /// Softmax temperature; 0 is greedy (server default 1.0).
    pub temperature: Option<f32>,
    /// Nucleus sampling mass, in (0, 1].
    pub top_p: Option<f32>,
    /// Keep the k most likely tokens; 0 turns it off.
    pub top_k: Option<u32>,
    /// Drop tokens below `min_p` × the top probability, in [0, 1].
    pub min_p: Option<f32>,
    /// Multiplicative penalty on tokens already in prompt or output (1 = off).
    pub repetition_penalty: Option<f32>,
    /// Additive penalty per occurrence in the output.
    pub frequency_penalty: Option<f32>,
    /// Additive penalty once a token occurs in the output.
    pub presence_penalty: Option<f32>,
    /// Seed of the sampler (same seed, same settings → same tokens).
    pub seed: Option<u64>,
    /// Maximum number of generated tokens.
    pub max_tokens: Option<u32>,
    /// Generate at least this many tokens before EOS or stop ids can end the request.
    pub min_tokens: Option<u32>,
    /// Stop strings (not included in the output text).
    pub stop: Vec<String>,
    /// Token ids that end the request.
    pub stop_token_ids: Vec<u32>,
    /// Keep generating past EOS.
    pub ignore_eos: Option<bool>,
    /// Return the top-n log probabilities of every generated token.
    pub logprobs: Option<u32>,
    /// Number of parallel samples.
    pub n: Option<u32>,
}

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty),* $(,)?) => {
        $(
            $(#[$doc])*
            pub fn $name(mut self, value: $ty) -> Self {
                self.$name = Some(value);
                self
            }
        )*
    };
}

impl SamplingParams {
    /// All defaults (every field unset).
    pub fn new() -> Self {
        Self::default()
    }

    /// Greedy decoding: temperature 0.
    pub fn greedy() -> Self {
        Self::default().temperature(0.0)
    }

    setters! {
        /// Sets the temperature.
        temperature: f32,
        /// Sets top-p.
        top_p: f32,
        /// Sets top-k.
        top_k: u32,
        /// Sets min-p.
        min_p: f32,
        /// Sets the repetition penalty.
        repetition_penalty: f32,
        /// Sets the frequency penalty.
        frequency_penalty: f32,
        /// Sets the presence penalty.
        presence_penalty: f32,
        /// Sets the seed.
        seed: u64,
        /// Sets the maximum number of generated tokens.
        max_tokens: u32,
        /// Sets the minimum number of generated tokens.
        min_tokens: u32,
        /// Sets `ignore_eos`.
        ignore_eos: bool,
        /// Requests top-n logprobs.
        logprobs: u32,
        /// Sets the number of parallel samples.
        n: u32,
    }

    /// Adds a stop string.
    pub fn stop(mut self, stop: impl Into<String>) -> Self {
        self.stop.push(stop.into());
        self
    }

    /// Adds a stop token id.
    pub fn stop_token_id(mut self, id: u32) -> Self {
        self.stop_token_ids.push(id);
        self
    }
}

/// One generation request.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GenerateParams {
    /// Request id, used by [`crate::Client::abort`]. `None`: the client makes a unique one
    /// (read it back with [`crate::GenerateStream::request_id`]).
    pub request_id: Option<String>,
    /// The prompt.
    pub prompt: Prompt,
    /// Sampling settings.
    pub sampling: SamplingParams,
    /// Wrap a text prompt as one user message in the model's chat template.
    pub chat: bool,
}

impl GenerateParams {
    /// A request for a text prompt, with default sampling.
    pub fn text(prompt: impl Into<String>) -> Self {
        Self::new(Prompt::Text(prompt.into()))
    }

    /// A request for pre-tokenized input, with default sampling.
    pub fn token_ids(ids: impl Into<Vec<u32>>) -> Self {
        Self::new(Prompt::TokenIds(ids.into()))
    }

    fn new(prompt: Prompt) -> Self {
        Self {
            request_id: None,
            prompt,
            sampling: SamplingParams::default(),
            chat: false,
        }
    }

    /// Sets the sampling settings.
    pub fn with_sampling(mut self, sampling: SamplingParams) -> Self {
        self.sampling = sampling;
        self
    }

    /// Sets the request id.
    pub fn with_request_id(mut self, id: impl Into<String>) -> Self {
        self.request_id = Some(id.into());
        self
    }

    /// Applies the chat template to a text prompt.
    pub fn with_chat(mut self, chat: bool) -> Self {
        self.chat = chat;
        self
    }
}
