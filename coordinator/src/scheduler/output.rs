//! The data that leaves and re-enters the scheduler each step: [`SchedulerOutput`] (what to run),
//! [`StepOutput`] (what the workers sampled) and [`RequestUpdate`] (what each request gained).
//!
//! Data flow: `Scheduler::schedule` → [`SchedulerOutput`] → (wire conversion to the worker
//! proto's `StepRequest`; the fields mirror it one to one) → executor → [`StepOutput`] →
//! `Scheduler::update` → [`RequestUpdate`]s → output processing. Sampling parameters are not
//! here: the engine keeps them per [`SeqId`] and adds them when it builds a `NewRequest`.

use super::block_manager::BlockId;
use super::request::{FinishReason, SeqId};
use bitnet_worker::TokenLogprobs;
use std::collections::HashMap;

/// A sequence the workers have not seen (`NewRequest` on the wire).
#[derive(Debug, Clone, PartialEq)]
pub struct NewSeq {
    pub seq_id: SeqId,
    /// The full prompt, even when only a chunk of it runs this step.
    pub prompt_ids: Vec<u32>,
    /// Prompt tokens already in the KV cache (a prefix hit; 0 without a prefix cache).
    pub num_computed: u32,
    /// Prompt tokens to run this step (chunked prefill: possibly fewer than the prompt).
    pub num_scheduled: u32,
    /// The sequence's whole block table so far.
    pub block_ids: Vec<BlockId>,
    /// Seconds between arrival and this first scheduling (coordinator-only: for the
    /// `request_queue_time_seconds` metric; not sent to workers).
    pub queue_time_s: f64,
}

/// A sequence the workers already hold: only what changed (`RunningRequest` on the wire).
#[derive(Debug, Clone, PartialEq)]
pub struct RunningSeq {
    pub seq_id: SeqId,
    /// Tokens to run this step: 1 in decode, a chunk while (re)prefilling.
    pub num_scheduled: u32,
    /// Blocks to append to the table; after a preemption (`resumed`), the whole new table,
    /// which replaces the old one.
    pub new_block_ids: Vec<BlockId>,
    /// The sequence was preempted and restarts from scratch (recompute): the worker drops its
    /// KV state and treats `resumed_token_ids` as the prompt, with nothing computed.
    pub resumed: bool,
    /// With `resumed`: the prompt followed by every token generated before the preemption.
    pub resumed_token_ids: Vec<u32>,
}

/// One step's work (`StepRequest` on the wire).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SchedulerOutput {
    /// Increases by one with every `schedule` call.
    pub step_id: u64,
    pub new_requests: Vec<NewSeq>,
    pub running: Vec<RunningSeq>,
    /// Sequences the workers hold that ended (finished or aborted) since the last step: drop
    /// their state. Their blocks are already free in the coordinator.
    pub finished_seq_ids: Vec<SeqId>,
}

impl SchedulerOutput {
    /// Tokens run this step over all sequences (never above `max_batched_tokens`).
    pub fn num_scheduled_tokens(&self) -> usize {
        let new: usize = self
            .new_requests
            .iter()
            .map(|r| r.num_scheduled as usize)
            .sum();
        let running: usize = self.running.iter().map(|r| r.num_scheduled as usize).sum();
        new + running
    }

    /// Sequences run this step.
    pub fn num_seqs(&self) -> usize {
        self.new_requests.len() + self.running.len()
    }

    /// Ids of the sequences run this step, new ones first.
    pub fn scheduled_ids(&self) -> impl Iterator<Item = SeqId> + '_ {
        self.new_requests
            .iter()
            .map(|r| r.seq_id)
            .chain(self.running.iter().map(|r| r.seq_id))
    }

    /// Nothing to run (there may still be `finished_seq_ids` to tell the workers).
    pub fn is_empty(&self) -> bool {
        self.num_seqs() == 0
    }
}

/// One sampled token (`SampledToken` on the wire, without logprobs: those go straight to
/// output processing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SampledToken {
    pub seq_id: SeqId,
    pub token_id: u32,
}

/// What the workers produced for one step: a token for every sequence whose scheduled tokens
/// reached the end of what it knows (a sequence mid-prefill produces none).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StepOutput {
    pub step_id: u64,
    pub tokens: Vec<SampledToken>,
    /// Logprobs of each sampled token, by sequence (only meaningful for sequences that asked;
    /// the scheduler ignores them, output processing streams them).
    pub logprobs: HashMap<SeqId, TokenLogprobs>,
}

/// What one request gained in a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestUpdate {
    pub id: SeqId,
    /// New output token ids (a stop or EOS token that ended the request included).
    pub new_token_ids: Vec<u32>,
    /// Set when the request ended this step; its blocks are already free.
    pub finished: Option<FinishReason>,
}

/// Counts for `GetServerInfo` and the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SchedulerStats {
    pub running: usize,
    pub waiting: usize,
    /// Fraction of KV blocks in use, `[0, 1]`.
    pub kv_usage: f64,
    pub kv_blocks_used: usize,
    pub kv_blocks_total: usize,
    pub requests_finished: u64,
    pub num_preemptions_total: u64,
    pub steps: u64,
}
