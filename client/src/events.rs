//! What the server sends back, as client types: streamed [`GenerateEvent`]s, the collected
//! [`GenerateOutput`], and [`ModelInfo`] / [`ServerInfo`]. Built from the wire types in `wire.rs`.

use serde::Serialize;
use std::time::Duration;

/// Token counts of a request; cumulative in every chunk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// Tokens of the prompt.
    pub prompt_tokens: u32,
    /// Tokens generated so far.
    pub completion_tokens: u32,
    /// Prompt tokens served from the prefix cache.
    pub cached_tokens: u32,
}

/// Why a sample ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// EOS, a stop string or a stop token id.
    Stop,
    /// `max_tokens` or the context length was reached.
    Length,
    /// Aborted (by `abort` or by the server shutting down).
    Abort,
    /// The engine failed this sample.
    Error,
}

impl FinishReason {
    /// The lower-case name used in JSON output: "stop", "length", "abort", "error".
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Abort => "abort",
            FinishReason::Error => "error",
        }
    }
}

impl std::fmt::Display for FinishReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A token with its log probability.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TokenLogprob {
    /// Token id.
    pub token_id: u32,
    /// Natural-log probability.
    pub logprob: f32,
}

/// Log probabilities at one generated position: the sampled token and the top-n alternatives.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TokenLogprobs {
    /// The token that was sampled.
    pub sampled: TokenLogprob,
    /// The most likely tokens, most likely first.
    pub top: Vec<TokenLogprob>,
}

/// One message of a generation stream.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum GenerateEvent {
    /// New tokens of sample `index`.
    Chunk {
        /// Which of the `n` samples.
        index: u32,
        /// The new token ids.
        token_ids: Vec<u32>,
        /// The text delta.
        text: String,
        /// Cumulative usage.
        usage: Usage,
        /// Logprobs of the new tokens (empty unless requested).
        logprobs: Vec<TokenLogprobs>,
    },
    /// Sample `index` finished.
    Complete {
        /// Which of the `n` samples.
        index: u32,
        /// Every generated token id of the sample.
        output_ids: Vec<u32>,
        /// Why it ended.
        finish_reason: FinishReason,
        /// Final usage.
        usage: Usage,
        /// The stop string that ended it, if one did.
        matched_stop: Option<String>,
    },
}

/// One finished sample of a collected generation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Choice {
    /// Which of the `n` samples.
    pub index: u32,
    /// The concatenated text deltas.
    pub text: String,
    /// Every generated token id (from the final message).
    pub output_ids: Vec<u32>,
    /// Why it ended.
    pub finish_reason: FinishReason,
    /// The stop string that ended it, if one did.
    pub matched_stop: Option<String>,
    /// Final usage.
    pub usage: Usage,
    /// Logprobs of every generated token (empty unless requested).
    pub logprobs: Vec<TokenLogprobs>,
}

/// A whole generation, collected by [`crate::Client::generate_text`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GenerateOutput {
    /// The request id.
    pub request_id: String,
    /// The samples, by index (one unless `n` > 1).
    pub choices: Vec<Choice>,
}

impl GenerateOutput {
    /// Text of the first sample.
    pub fn text(&self) -> &str {
        self.choices.first().map_or("", |c| c.text.as_str())
    }

    /// Usage of the first sample.
    pub fn usage(&self) -> Usage {
        self.choices.first().map(|c| c.usage).unwrap_or_default()
    }
}

/// The served model.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ModelInfo {
    /// Checkpoint path on the server.
    pub model_path: String,
    /// Checkpoint family ("bitnet", "1bitllm", "llama", ...).
    pub family: String,
    /// Architecture name.
    pub architecture: String,
    /// Vocabulary size.
    pub vocab_size: u32,
    /// Longest context (prompt + output) in tokens.
    pub max_context: u32,
    /// Hidden size.
    pub hidden_size: u32,
    /// Number of layers.
    pub num_layers: u32,
    /// Tensor-parallel degree.
    pub tensor_parallel: u32,
    /// End-of-sequence token ids.
    pub eos_token_ids: Vec<u32>,
    /// KV cache block size in tokens.
    pub block_size: u32,
    /// Device kind ("cpu", "cuda", ...).
    pub device: String,
}

/// Load and state of the server.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ServerInfo {
    /// Requests running.
    pub running: u32,
    /// Requests admitted and waiting.
    pub waiting: u32,
    /// Fraction of KV blocks in use, in [0, 1].
    pub kv_usage: f32,
    /// KV blocks in the pool.
    pub kv_blocks_total: u64,
    /// KV blocks in use.
    pub kv_blocks_used: u64,
    /// Time since the server started.
    pub uptime: Duration,
    /// Requests finished since start.
    pub requests_finished: u64,
    /// Server version.
    pub version: String,
    /// Admission limit on running + waiting.
    pub max_num_seqs: u32,
    /// False while draining or after a worker died.
    pub serving: bool,
    /// Sequences preempted (recomputed later) because the KV pool was full, since start.
    pub num_preemptions: u64,
    /// Steps run since start, with their total wall time and the total compute the workers
    /// reported: `(wall − worker) / steps` is the coordinator's overhead per step.
    pub steps_timed: u64,
    pub step_wall_ms_total: f64,
    pub step_worker_ms_total: f64,
}
