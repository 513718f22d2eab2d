//! What the scheduler knows about one request: its admission form ([`SchedRequest`]), its
//! mutable state while queued or running ([`SeqState`]), and why it ended ([`FinishReason`]).
//!
//! Upstream, validation turns a wire request into a `ValidRequest`; the engine turns that into a
//! [`SchedRequest`] (sampling parameters stay with the engine, keyed by [`SeqId`]). Downstream,
//! the [`Scheduler`](super::Scheduler) moves [`SeqState`]s between its waiting queue and running
//! list and reports [`FinishReason`]s in [`RequestUpdate`](super::RequestUpdate)s.

/// The coordinator's id of one sequence (`seq_id` on the worker wire).
pub type SeqId = u64;

/// A validated request as the scheduler takes it.
#[derive(Debug, Clone, PartialEq)]
pub struct SchedRequest {
    pub id: SeqId,
    /// Prompt token ids (non-empty, inside the vocabulary: validation checked).
    pub prompt_ids: Vec<u32>,
    /// Output tokens at most (at least 1).
    pub max_tokens: u32,
    /// Stop and EOS tokens are ignored until this many output tokens exist.
    pub min_tokens: u32,
    /// Tokens that end the request (included in its output), even with `ignore_eos`.
    pub stop_token_ids: Vec<u32>,
    /// Keep generating past the model's EOS tokens.
    pub ignore_eos: bool,
    /// When the request arrived, in the engine's clock (seconds); gives the queue time.
    pub arrival: f64,
    /// Another sample of the same prompt (`n > 1`): this sequence waits until that one has
    /// computed the prompt, then starts on its full prompt blocks (shared, reference-counted)
    /// and computes only the rest.
    pub fork_of: Option<SeqId>,
}

impl SchedRequest {
    /// A request with no stop tokens, `min_tokens` 0 and EOS honoured.
    pub fn new(id: SeqId, prompt_ids: Vec<u32>, max_tokens: u32, arrival: f64) -> Self {
        Self {
            id,
            prompt_ids,
            max_tokens,
            min_tokens: 0,
            stop_token_ids: Vec::new(),
            ignore_eos: false,
            arrival,
            fork_of: None,
        }
    }
}

/// Why a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FinishReason {
    /// The model produced one of its EOS tokens.
    Eos(u32),
    /// The model produced one of the request's `stop_token_ids`.
    StopToken(u32),
    /// `max_tokens` output tokens were produced.
    MaxTokens,
    /// The sequence reached the context limit (model length or the whole KV pool).
    ContextFull,
    /// `abort` was called.
    Abort,
}

impl FinishReason {
    /// The public finish reason: `"stop"`, `"length"` or `"abort"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Eos(_) | Self::StopToken(_) => "stop",
            Self::MaxTokens | Self::ContextFull => "length",
            Self::Abort => "abort",
        }
    }
}

/// Where a sequence is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SeqStatus {
    /// A fork waiting for its parent to compute the prompt (not in the waiting queue).
    Held,
    Waiting,
    Running,
}

/// Blocks a fork may start on: its parent's first full prompt blocks, valid while the parent
/// runs without having been preempted since (a preempted parent lost them).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PrefixHint {
    pub parent: SeqId,
    pub parent_preemptions: u32,
    pub blocks: Vec<u32>,
}

/// A request's mutable state inside the scheduler.
#[derive(Debug, Clone)]
pub(crate) struct SeqState {
    pub req: SchedRequest,
    /// Prompt followed by every output token so far.
    pub tokens: Vec<u32>,
    /// Tokens of `tokens` whose KV is computed (or scheduled in the step in flight).
    pub num_computed: usize,
    pub status: SeqStatus,
    /// The workers hold state for this sequence (it was in a step's new requests).
    pub known_to_workers: bool,
    /// Preempted since the workers last ran it: its next scheduling carries `resumed`.
    pub preempted: bool,
    /// When the request was first scheduled (engine clock).
    pub first_scheduled: Option<f64>,
    pub num_preemptions: u32,
    /// Held forks of this sequence, released when it samples (its prompt is then computed).
    pub forks: Vec<SeqId>,
    /// For a released fork: the parent's blocks to start on.
    pub prefix: Option<PrefixHint>,
}

impl SeqState {
    pub fn new(req: SchedRequest) -> Self {
        Self {
            tokens: req.prompt_ids.clone(),
            req,
            num_computed: 0,
            status: SeqStatus::Waiting,
            known_to_workers: false,
            preempted: false,
            first_scheduled: None,
            num_preemptions: 0,
            forks: Vec::new(),
            prefix: None,
        }
    }

    pub fn prompt_len(&self) -> usize {
        self.req.prompt_ids.len()
    }

    pub fn num_output(&self) -> usize {
        self.tokens.len() - self.prompt_len()
    }

    /// Tokens known but not yet in the KV cache (the prompt rest, or the last sampled token).
    pub fn num_uncomputed(&self) -> usize {
        self.tokens.len() - self.num_computed
    }

    /// Whether the next step that runs this sequence ends with a sampled token: every known
    /// token is computed (or scheduled in the step in flight).
    pub fn awaits_token(&self) -> bool {
        self.num_computed == self.tokens.len()
    }

    /// The finish reason after appending the last token, if the request is done.
    ///
    /// Order as vLLM: nothing before `min_tokens`; then EOS (unless ignored) and stop tokens;
    /// then the length limits.
    pub fn check_finish(
        &self,
        eos_token_ids: &[u32],
        context_limit: usize,
    ) -> Option<FinishReason> {
        let n_out = self.num_output();
        if n_out < self.req.min_tokens as usize {
            // Validation keeps min_tokens <= max_tokens; the context limit still applies.
            return (self.tokens.len() >= context_limit).then_some(FinishReason::ContextFull);
        }
        let last = *self.tokens.last()?;
        if n_out > 0 {
            if !self.req.ignore_eos && eos_token_ids.contains(&last) {
                return Some(FinishReason::Eos(last));
            }
            if self.req.stop_token_ids.contains(&last) {
                return Some(FinishReason::StopToken(last));
            }
        }
        if n_out >= self.req.max_tokens as usize {
            return Some(FinishReason::MaxTokens);
        }
        if self.tokens.len() >= context_limit {
            return Some(FinishReason::ContextFull);
        }
        None
    }
}
