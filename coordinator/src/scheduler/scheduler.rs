//! The step planner: continuous batching with a token budget, chunked prefill, FCFS admission
//! and preemption by recompute, in the style of vLLM v1's scheduler.
//!
//! Plain synchronous code owned by the engine task: no I/O, no clock reads (time comes in as an
//! argument). Each engine iteration is `schedule(now)` → [`SchedulerOutput`] → executor →
//! [`StepOutput`] → `update` → [`RequestUpdate`]s. The [`BlockManager`] under it hands out the
//! KV blocks; [`SeqState`](super::request::SeqState) holds each request's tokens.
//!
//! Invariants (tested in `tests/scheduler_props.rs`): every step runs at most
//! `max_batched_tokens` tokens and `max_num_seqs` sequences; no KV block is held by two
//! sequences; every request ends; when all have ended, every block is free.

use std::collections::{HashMap, HashSet, VecDeque};

use thiserror::Error;

use super::block_manager::{BlockError, BlockId, BlockManager};
use super::output::{
    NewSeq, RequestUpdate, RunningSeq, SchedulerOutput, SchedulerStats, StepOutput,
};
use super::request::{PrefixHint, SchedRequest, SeqId, SeqState, SeqStatus};

/// Limits the scheduler plans within.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// Tokens per KV block (16).
    pub block_size: usize,
    /// KV blocks in the pool (the minimum over the workers' `Profile` answers).
    pub num_blocks: usize,
    /// Sequences running at once at most.
    pub max_num_seqs: usize,
    /// Tokens run in one step at most, prefill chunks and decodes together.
    pub max_batched_tokens: usize,
    /// The model's context length: a sequence (prompt + output) never gets longer.
    pub max_model_len: usize,
    /// The model's end-of-sequence tokens (ignored for requests with `ignore_eos`).
    pub eos_token_ids: Vec<u32>,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            block_size: 16,
            num_blocks: 1024,
            max_num_seqs: 64,
            max_batched_tokens: 2048,
            max_model_len: 4096,
            eos_token_ids: Vec::new(),
        }
    }
}

/// A request or step result the scheduler cannot take.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum SchedulerError {
    #[error("invalid scheduler config: {field} must be at least 1")]
    ZeroLimit { field: &'static str },
    #[error("request {id} is already queued or running")]
    DuplicateRequest { id: SeqId },
    #[error("request {id} has an empty prompt")]
    EmptyPrompt { id: SeqId },
    #[error("request {id} has max_tokens 0")]
    ZeroMaxTokens { id: SeqId },
    #[error("request {id}: prompt of {len} tokens leaves no room in a context of {limit}")]
    PromptTooLong { id: SeqId, len: usize, limit: usize },
    #[error("step output for step {got}, but the step in flight is {expected:?}")]
    StepMismatch { expected: Option<u64>, got: u64 },
    #[error("step {step}: sequence {seq} returned a token it was not due to sample")]
    UnexpectedToken { step: u64, seq: SeqId },
    #[error("step {step}: sequence {seq} returned no token although its step ended in a sample")]
    MissingToken { step: u64, seq: SeqId },
    #[error("step {step}: sequence {seq} returned two tokens")]
    DuplicateToken { step: u64, seq: SeqId },
    #[error(transparent)]
    Block(#[from] BlockError),
}

/// The one owner of queue and KV-allocation state (see the module docs).
#[derive(Debug)]
pub struct Scheduler {
    config: SchedulerConfig,
    /// `min(max_model_len, whole pool in tokens)`: a sequence alone can always reach it, so
    /// preemption never leaves a request that can never run again.
    context_limit: usize,
    blocks: BlockManager,
    seqs: HashMap<SeqId, SeqState>,
    /// FCFS; preempted sequences go back to the front.
    waiting: VecDeque<SeqId>,
    /// In admission order; the last one is preempted first.
    running: Vec<SeqId>,
    /// Ended sequences the workers still hold, for the next step's `finished_seq_ids`.
    finished_for_workers: Vec<SeqId>,
    next_step_id: u64,
    in_flight: Option<u64>,
    requests_finished: u64,
    num_preemptions: u64,
    /// Forks waiting for their parent's prompt (counted as waiting in the stats).
    num_held: usize,
}

impl Scheduler {
    pub fn new(config: SchedulerConfig) -> Result<Self, SchedulerError> {
        for (field, value) in [
            ("block_size", config.block_size),
            ("num_blocks", config.num_blocks),
            ("max_num_seqs", config.max_num_seqs),
            ("max_batched_tokens", config.max_batched_tokens),
            ("max_model_len", config.max_model_len),
        ] {
            if value == 0 {
                return Err(SchedulerError::ZeroLimit { field });
            }
        }
        let blocks = BlockManager::new(config.block_size, config.num_blocks)?;
        let context_limit = config
            .max_model_len
            .min(blocks.num_blocks() * config.block_size);
        Ok(Self {
            config,
            context_limit,
            blocks,
            seqs: HashMap::new(),
            waiting: VecDeque::new(),
            running: Vec::new(),
            finished_for_workers: Vec::new(),
            next_step_id: 0,
            in_flight: None,
            requests_finished: 0,
            num_preemptions: 0,
            num_held: 0,
        })
    }

    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    /// The longest a sequence (prompt + output) can get: the model length or the whole pool.
    pub fn context_limit(&self) -> usize {
        self.context_limit
    }

    /// The KV allocation (read-only: for stats and invariant checks).
    pub fn block_manager(&self) -> &BlockManager {
        &self.blocks
    }

    /// Queues a request at the back of the waiting queue.
    pub fn add_request(&mut self, req: SchedRequest) -> Result<(), SchedulerError> {
        let id = req.id;
        if self.seqs.contains_key(&id) {
            return Err(SchedulerError::DuplicateRequest { id });
        }
        if req.prompt_ids.is_empty() {
            return Err(SchedulerError::EmptyPrompt { id });
        }
        if req.max_tokens == 0 {
            return Err(SchedulerError::ZeroMaxTokens { id });
        }
        if req.prompt_ids.len() >= self.context_limit {
            return Err(SchedulerError::PromptTooLong {
                id,
                len: req.prompt_ids.len(),
                limit: self.context_limit,
            });
        }
        let mut state = SeqState::new(req);
        if let Some(parent) = state.req.fork_of {
            let same_prompt = |p: &SeqState| p.req.prompt_ids == state.req.prompt_ids;
            match self.seqs.get_mut(&parent) {
                Some(p) if same_prompt(p) && p.num_output() == 0 => {
                    // The parent's prompt is not computed yet: wait for it.
                    p.forks.push(id);
                    state.status = SeqStatus::Held;
                    self.num_held += 1;
                    self.seqs.insert(id, state);
                    return Ok(());
                }
                Some(p) if same_prompt(p) => state.prefix = self.prefix_hint(parent),
                _ => {}
            }
        }
        self.seqs.insert(id, state);
        self.waiting.push_back(id);
        Ok(())
    }

    /// The full prompt blocks of `parent` a fork can start on (all but the block holding the
    /// last prompt token, which the fork recomputes to get its own first logits), if the
    /// parent runs and has computed its prompt.
    fn prefix_hint(&self, parent: SeqId) -> Option<PrefixHint> {
        let p = self.seqs.get(&parent)?;
        let full = (p.prompt_len() - 1) / self.config.block_size;
        let table = self.blocks.block_table(parent);
        let ready = p.status == SeqStatus::Running && p.num_output() > 0;
        (ready && full > 0 && table.len() >= full).then(|| PrefixHint {
            parent,
            parent_preemptions: p.num_preemptions,
            blocks: table[..full].to_vec(),
        })
    }

    /// Whether a fork may still start on the blocks of `hint`: the parent runs, was not
    /// preempted since (so the blocks still hold its prompt), and still holds them.
    fn hint_valid(&self, hint: &PrefixHint) -> bool {
        self.seqs.get(&hint.parent).is_some_and(|p| {
            p.status == SeqStatus::Running
                && p.num_preemptions == hint.parent_preemptions
                && self
                    .blocks
                    .block_table(hint.parent)
                    .starts_with(&hint.blocks)
        })
    }

    /// Moves the held forks of `id` to the front of the waiting queue (in order), with the
    /// parent's prompt blocks to start on when it can offer them.
    fn release_forks(&mut self, id: SeqId) {
        let Some(state) = self.seqs.get_mut(&id) else {
            return;
        };
        let forks = std::mem::take(&mut state.forks);
        if forks.is_empty() {
            return;
        }
        let hint = self.prefix_hint(id);
        for &f in forks.iter().rev() {
            if let Some(fs) = self
                .seqs
                .get_mut(&f)
                .filter(|s| s.status == SeqStatus::Held)
            {
                fs.status = SeqStatus::Waiting;
                fs.prefix = hint.clone();
                self.num_held -= 1;
                self.waiting.push_front(f);
            }
        }
    }

    /// Ends a request wherever it is and frees its blocks at once; the workers hear of it in
    /// the next step's `finished_seq_ids`. A token for it from the step in flight is dropped.
    /// Returns whether the request was queued or running.
    pub fn abort(&mut self, id: SeqId) -> bool {
        let Some(state) = self.seqs.get(&id) else {
            return false;
        };
        match state.status {
            SeqStatus::Held => {
                let parent = state.req.fork_of;
                if let Some(p) = parent.and_then(|p| self.seqs.get_mut(&p)) {
                    p.forks.retain(|&f| f != id);
                }
                self.num_held -= 1;
            }
            SeqStatus::Waiting => self.waiting.retain(|&w| w != id),
            SeqStatus::Running => self.running.retain(|&r| r != id),
        }
        self.retire(id);
        true
    }

    /// Plans the next step at engine time `now` (seconds).
    ///
    /// Running sequences first, in admission order: each gets the rest of its known tokens (1
    /// in decode, a chunk while prefilling) within the token budget; when the pool is short,
    /// the most recently admitted running sequence is preempted (its blocks freed, back to the
    /// front of the waiting queue) until the current one fits. Then, if nothing was preempted,
    /// waiting sequences are admitted in order while the budget, `max_num_seqs` and the pool
    /// allow; admission stops at the first that does not fit (no overtaking).
    ///
    /// Every call with sequences to run must be followed by [`update`](Self::update) with its
    /// result before the next call (one step in flight).
    pub fn schedule(&mut self, now: f64) -> SchedulerOutput {
        let step_id = self.next_step_id;
        self.next_step_id += 1;
        let mut out = SchedulerOutput {
            step_id,
            ..SchedulerOutput::default()
        };
        let mut budget = self.config.max_batched_tokens;
        let preempted_any = self.schedule_running(&mut budget, &mut out);
        if !preempted_any {
            self.schedule_waiting(now, &mut budget, &mut out);
        }
        out.finished_seq_ids = std::mem::take(&mut self.finished_for_workers);
        if !out.is_empty() {
            self.in_flight = Some(step_id);
        }
        out
    }

    /// The running pass of [`schedule`](Self::schedule); returns whether it preempted.
    fn schedule_running(&mut self, budget: &mut usize, out: &mut SchedulerOutput) -> bool {
        let mut preempted_any = false;
        let mut i = 0;
        while i < self.running.len() && *budget > 0 {
            let id = self.running[i];
            let num_new = self.seqs[&id].num_uncomputed().min(*budget);
            if num_new == 0 {
                // Its token from an earlier step is still due: nothing to run.
                i += 1;
                continue;
            }
            let new_block_ids = loop {
                if self
                    .blocks
                    .can_allocate(self.blocks.blocks_needed(id, num_new))
                {
                    break Some(
                        self.blocks
                            .append_slots(id, num_new)
                            .expect("running sequences hold blocks and the pool was checked"),
                    );
                }
                let victim = self.running.pop().expect("the current sequence is running");
                self.preempt(victim);
                preempted_any = true;
                if victim == id {
                    break None;
                }
            };
            let Some(new_block_ids) = new_block_ids else {
                // Preempted itself: everything after it is gone too.
                break;
            };
            let state = self.seqs.get_mut(&id).expect("running sequences exist");
            state.num_computed += num_new;
            *budget -= num_new;
            out.running.push(RunningSeq {
                seq_id: id,
                num_scheduled: num_new as u32,
                new_block_ids,
                resumed: false,
                resumed_token_ids: Vec::new(),
            });
            i += 1;
        }
        preempted_any
    }

    /// The admission pass of [`schedule`](Self::schedule). A fork whose parent still offers
    /// its prompt blocks starts on them (their reference counts go up) and computes the rest.
    fn schedule_waiting(&mut self, now: f64, budget: &mut usize, out: &mut SchedulerOutput) {
        while let Some(&id) = self.waiting.front() {
            if *budget == 0 || self.running.len() >= self.config.max_num_seqs {
                break;
            }
            let state = &self.seqs[&id];
            let shared: Vec<BlockId> = match &state.prefix {
                Some(h) if !state.known_to_workers && self.hint_valid(h) => h.blocks.clone(),
                _ => Vec::new(),
            };
            let base = shared.len() * self.config.block_size;
            let num_new = (state.tokens.len() - base).min(*budget);
            let needed = self.blocks.blocks_for_tokens(base + num_new) - shared.len();
            if !self.blocks.can_allocate(needed) {
                break;
            }
            let block_ids = self
                .blocks
                .allocate_with_prefix(id, &shared, base + num_new)
                .expect("waiting sequences hold no blocks and the pool was checked");
            self.waiting.pop_front();
            self.running.push(id);
            *budget -= num_new;
            let state = self.seqs.get_mut(&id).expect("waiting sequences exist");
            state.status = SeqStatus::Running;
            state.prefix = None;
            state.num_computed = base + num_new;
            let first_scheduled = *state.first_scheduled.get_or_insert(now);
            if state.known_to_workers {
                debug_assert!(state.preempted);
                state.preempted = false;
                out.running.push(RunningSeq {
                    seq_id: id,
                    num_scheduled: num_new as u32,
                    new_block_ids: block_ids,
                    resumed: true,
                    resumed_token_ids: state.tokens.clone(),
                });
            } else {
                state.known_to_workers = true;
                out.new_requests.push(NewSeq {
                    seq_id: id,
                    prompt_ids: state.req.prompt_ids.clone(),
                    num_computed: base as u32,
                    num_scheduled: num_new as u32,
                    block_ids,
                    queue_time_s: (first_scheduled - state.req.arrival).max(0.0),
                });
            }
        }
    }

    /// Preemption by recompute: free the blocks, forget the KV progress, keep the tokens, and
    /// put the sequence at the front of the waiting queue.
    fn preempt(&mut self, id: SeqId) {
        self.blocks.free(id).expect("running sequences hold blocks");
        let state = self.seqs.get_mut(&id).expect("running sequences exist");
        state.num_computed = 0;
        state.status = SeqStatus::Waiting;
        state.preempted = true;
        state.prefix = None;
        state.num_preemptions += 1;
        self.num_preemptions += 1;
        self.waiting.push_front(id);
    }

    /// Takes the step's sampled tokens: appends them, ends the requests that are done (freeing
    /// their blocks) and says what each request gained.
    ///
    /// `sched` must be the output of the latest [`schedule`](Self::schedule) call. Tokens for
    /// sequences aborted since then are dropped. Nothing changes when an error is returned.
    pub fn update(
        &mut self,
        sched: &SchedulerOutput,
        step: &StepOutput,
    ) -> Result<Vec<RequestUpdate>, SchedulerError> {
        if step.step_id != sched.step_id {
            return Err(SchedulerError::StepMismatch {
                expected: Some(sched.step_id),
                got: step.step_id,
            });
        }
        if sched.is_empty() {
            if let Some(t) = step.tokens.first() {
                return Err(SchedulerError::UnexpectedToken {
                    step: step.step_id,
                    seq: t.seq_id,
                });
            }
            return Ok(Vec::new());
        }
        if self.in_flight != Some(sched.step_id) {
            return Err(SchedulerError::StepMismatch {
                expected: self.in_flight,
                got: sched.step_id,
            });
        }
        let step_id = sched.step_id;
        // Validate everything before changing anything.
        let due: Vec<SeqId> = sched
            .scheduled_ids()
            .filter(|id| self.seqs.get(id).is_some_and(SeqState::awaits_token))
            .collect();
        let due_set: HashSet<SeqId> = due.iter().copied().collect();
        let mut sampled: HashMap<SeqId, u32> = HashMap::with_capacity(step.tokens.len());
        for t in &step.tokens {
            if !self.seqs.contains_key(&t.seq_id) {
                continue; // aborted while the step ran
            }
            if !due_set.contains(&t.seq_id) {
                return Err(SchedulerError::UnexpectedToken {
                    step: step_id,
                    seq: t.seq_id,
                });
            }
            if sampled.insert(t.seq_id, t.token_id).is_some() {
                return Err(SchedulerError::DuplicateToken {
                    step: step_id,
                    seq: t.seq_id,
                });
            }
        }
        if let Some(&seq) = due.iter().find(|id| !sampled.contains_key(id)) {
            return Err(SchedulerError::MissingToken { step: step_id, seq });
        }
        self.in_flight = None;

        let mut updates = Vec::with_capacity(due.len());
        let mut ended = Vec::new();
        for id in due {
            let token = sampled[&id];
            let state = self.seqs.get_mut(&id).expect("validated above");
            state.tokens.push(token);
            let finished = state.check_finish(&self.config.eos_token_ids, self.context_limit);
            // Its prompt is computed: held forks can start on its blocks.
            self.release_forks(id);
            if finished.is_some() {
                ended.push(id);
            }
            updates.push(RequestUpdate {
                id,
                new_token_ids: vec![token],
                finished,
            });
        }
        if !ended.is_empty() {
            let ended_set: HashSet<SeqId> = ended.iter().copied().collect();
            self.running.retain(|id| !ended_set.contains(id));
            for id in ended {
                self.retire(id);
            }
        }
        Ok(updates)
    }

    /// Forgets an ended sequence (already out of `waiting` and `running`) and frees its blocks.
    fn retire(&mut self, id: SeqId) {
        // Forks still held (the parent ends before its prompt is done) start on their own.
        self.release_forks(id);
        let state = self.seqs.remove(&id).expect("retired sequences exist");
        if self.blocks.contains(id) {
            self.blocks.free(id).expect("checked above");
        }
        if state.known_to_workers {
            self.finished_for_workers.push(id);
        }
        self.requests_finished += 1;
    }

    /// Sequences admitted and not ended or preempted.
    pub fn num_running(&self) -> usize {
        self.running.len()
    }

    /// Sequences queued (new or preempted).
    pub fn num_waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Whether any request is queued or running.
    pub fn has_unfinished(&self) -> bool {
        !self.seqs.is_empty()
    }

    /// Whether `id` is queued or running.
    pub fn contains(&self, id: SeqId) -> bool {
        self.seqs.contains_key(&id)
    }

    /// Ids of the running sequences, in admission order.
    pub fn running_ids(&self) -> &[SeqId] {
        &self.running
    }

    /// Ids of the waiting sequences, front first.
    pub fn waiting_ids(&self) -> impl Iterator<Item = SeqId> + '_ {
        self.waiting.iter().copied()
    }

    /// Counts for `GetServerInfo` and the metrics.
    pub fn stats(&self) -> SchedulerStats {
        SchedulerStats {
            running: self.running.len(),
            waiting: self.waiting.len() + self.num_held,
            kv_usage: self.blocks.usage(),
            kv_blocks_used: self.blocks.num_used_blocks(),
            kv_blocks_total: self.blocks.num_blocks(),
            requests_finished: self.requests_finished,
            num_preemptions_total: self.num_preemptions,
            steps: self.next_step_id,
        }
    }
}
