//! The engine: one OS thread that owns all mutable scheduling state (scheduler, executor,
//! per-request output state). Others talk to it through [`EngineHandle`] (a command channel);
//! it answers each request on that request's own event channel. Each iteration:
//! commands → `scheduler.schedule(now)` → `executor.step` → `scheduler.update` → output
//! processing → [`StreamEvent`]s. A request whose receiver is gone (the client dropped its
//! stream) or whose deadline passed is aborted at the next iteration, which frees its KV
//! blocks.
//!
//! A request with `n > 1` is `n` scheduler sequences (one per output index, seeds derived from
//! the request's): the first computes the prompt; the others are forks of it (see
//! `crate::scheduler`) that share its full prompt blocks. Their events go to the one stream,
//! tagged with their index; the stream ends after the last one finishes.

pub mod executor;
pub mod grpc_executor;
pub mod output;
#[cfg(test)]
mod tests;

use crate::cluster::wire;
use crate::scheduler::{FinishReason, SchedRequest, Scheduler, SchedulerStats, SeqId};
use crate::tokenizer::TextTokenizer;
use crate::validation::ValidRequest;
use bitnet_worker::{SamplingParams, TokenLogprobs};
pub use executor::{Executor, ExecutorError, InProcessExecutor};
pub use grpc_executor::GrpcExecutor;
use output::{Finish, OutputState};
use std::collections::HashMap;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::mpsc::UnboundedSender;

/// Cumulative token counts of a request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenUsage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
}

/// What a request's stream receives (`index`: which of its `n` samples).
#[derive(Clone, Debug, PartialEq)]
pub enum StreamEvent {
    /// New tokens and the text they complete; `logprobs` has one entry per token when the
    /// request asked for logprobs.
    Tokens {
        index: u32,
        token_ids: Vec<u32>,
        text: String,
        logprobs: Vec<TokenLogprobs>,
        usage: TokenUsage,
    },
    /// The sample ended (always its last event).
    Finished {
        index: u32,
        reason: Finish,
        output_ids: Vec<u32>,
        matched_stop: Option<String>,
        usage: TokenUsage,
        message: Option<String>,
    },
}

enum Command {
    Add {
        request: ValidRequest,
        events: UnboundedSender<StreamEvent>,
        deadline: Option<Instant>,
    },
    Abort {
        request_id: String,
    },
    Shutdown,
}

/// A cloneable handle to the engine thread.
#[derive(Clone)]
pub struct EngineHandle {
    commands: Sender<Command>,
    stats: Arc<Mutex<SchedulerStats>>,
    timing: Arc<Mutex<StepTiming>>,
}

/// Wall time and worker compute of every step since start; their difference is the
/// coordinator's overhead (scheduling, the round trip to the workers, output processing).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StepTiming {
    pub steps: u64,
    pub wall_ms: f64,
    pub worker_ms: f64,
}

impl EngineHandle {
    /// Queues a validated request; its events arrive on `events`. Past `deadline` it is
    /// aborted and its samples end with [`Finish::Deadline`].
    pub fn add(
        &self,
        request: ValidRequest,
        events: UnboundedSender<StreamEvent>,
        deadline: Option<Instant>,
    ) -> bool {
        self.commands
            .send(Command::Add {
                request,
                events,
                deadline,
            })
            .is_ok()
    }

    /// Aborts a request by id (unknown ids are ignored).
    pub fn abort(&self, request_id: &str) -> bool {
        self.commands
            .send(Command::Abort {
                request_id: request_id.to_string(),
            })
            .is_ok()
    }

    /// Running/waiting counts and KV usage as of the last iteration.
    pub fn stats(&self) -> SchedulerStats {
        self.stats.lock().map(|s| *s).unwrap_or_default()
    }

    /// Per-step timings since start.
    pub fn step_timing(&self) -> StepTiming {
        self.timing.lock().map(|t| *t).unwrap_or_default()
    }

    /// Asks the engine thread to finish every open request with `abort` and stop.
    pub fn shutdown(&self) {
        let _ = self.commands.send(Command::Shutdown);
    }
}

/// One sample of a request in flight.
struct Active {
    request_id: String,
    index: u32,
    events: UnboundedSender<StreamEvent>,
    output: OutputState,
    logprobs: bool,
    deadline: Option<Instant>,
}

/// The engine's state, run on its own thread by [`spawn`].
struct Engine {
    scheduler: Scheduler,
    executor: Box<dyn Executor>,
    tokenizer: Option<Arc<TextTokenizer>>,
    active: HashMap<SeqId, Active>,
    /// Request id → the sequences of its samples.
    ids: HashMap<String, Vec<SeqId>>,
    next_seq: SeqId,
    started: Instant,
    stats: Arc<Mutex<SchedulerStats>>,
    timing: Arc<Mutex<StepTiming>>,
}

/// Starts the engine thread.
pub fn spawn(
    scheduler: Scheduler,
    executor: Box<dyn Executor>,
    tokenizer: Option<Arc<TextTokenizer>>,
) -> (EngineHandle, std::thread::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel();
    let stats = Arc::new(Mutex::new(scheduler.stats()));
    let timing = Arc::new(Mutex::new(StepTiming::default()));
    let engine = Engine {
        scheduler,
        executor,
        tokenizer,
        active: HashMap::new(),
        ids: HashMap::new(),
        next_seq: 1,
        started: Instant::now(),
        stats: stats.clone(),
        timing: timing.clone(),
    };
    let thread = std::thread::Builder::new()
        .name("bitnet-engine".into())
        .spawn(move || engine.run(rx))
        .expect("spawning the engine thread");
    (
        EngineHandle {
            commands: tx,
            stats,
            timing,
        },
        thread,
    )
}

fn finish_of(reason: FinishReason) -> Finish {
    match reason {
        FinishReason::Eos(_) | FinishReason::StopToken(_) => Finish::Stop,
        FinishReason::MaxTokens | FinishReason::ContextFull => Finish::Length,
        FinishReason::Abort => Finish::Abort,
    }
}

/// The seed of sample `index`: the request's for sample 0, a splitmix64 step away for the
/// others (distinct and reproducible for a given request seed).
pub fn sample_seed(seed: u64, index: u32) -> u64 {
    if index == 0 {
        return seed;
    }
    let mut z = seed.wrapping_add(u64::from(index).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Engine {
    fn run(mut self, rx: Receiver<Command>) {
        loop {
            // Block while idle; otherwise take whatever arrived.
            if !self.scheduler.has_unfinished() {
                match rx.recv() {
                    Ok(cmd) => {
                        if !self.handle(cmd) {
                            return self.close_all("the server is shutting down");
                        }
                    }
                    Err(_) => return self.close_all("the server is shutting down"),
                }
            }
            while let Ok(cmd) = rx.try_recv() {
                if !self.handle(cmd) {
                    return self.close_all("the server is shutting down");
                }
            }
            self.drop_abandoned();
            self.expire();
            if let Err(message) = self.iterate() {
                tracing::error!("engine step failed: {message}");
                self.close_all(&message);
            }
            self.publish_stats();
        }
    }

    /// Makes the scheduler's counts visible to `EngineHandle::stats`.
    fn publish_stats(&self) {
        if let Ok(mut s) = self.stats.lock() {
            *s = self.scheduler.stats();
        }
    }

    /// Applies one command; false on shutdown.
    fn handle(&mut self, cmd: Command) -> bool {
        match cmd {
            Command::Add {
                request,
                events,
                deadline,
            } => self.add(request, events, deadline),
            Command::Abort { request_id } => {
                let seqs = self.ids.get(&request_id).cloned().unwrap_or_default();
                for seq in seqs {
                    self.scheduler.abort(seq);
                    self.finish(seq, Finish::Abort, None, None);
                }
            }
            Command::Shutdown => return false,
        }
        true
    }

    fn add(
        &mut self,
        req: ValidRequest,
        events: UnboundedSender<StreamEvent>,
        deadline: Option<Instant>,
    ) {
        let fail = |message: String| {
            let _ = events.send(StreamEvent::Finished {
                index: 0,
                reason: Finish::Error,
                output_ids: Vec::new(),
                matched_stop: None,
                usage: TokenUsage::default(),
                message: Some(message),
            });
        };
        if self.ids.contains_key(&req.request_id) {
            return fail(format!("request id {} is already running", req.request_id));
        }
        let params = SamplingParams {
            temperature: req.sampling.temperature,
            top_k: req.sampling.top_k as usize,
            top_p: req.sampling.top_p,
            seed: req.sampling.seed,
        };
        // Every rank must draw the same random stream: settle the seed here.
        let seed = req.sampling.seed.unwrap_or_else(rand::random);
        let arrival = self.started.elapsed().as_secs_f64();
        let mut seqs = Vec::with_capacity(req.n as usize);
        for index in 0..req.n.max(1) {
            let seq = self.next_seq;
            self.next_seq += 1;
            let sampling =
                wire::sampling_state(&params, sample_seed(seed, index), req.sampling.logprobs);
            let mut sched = SchedRequest::new(seq, req.prompt_ids.clone(), req.max_tokens, arrival);
            sched.min_tokens = req.min_tokens;
            sched.stop_token_ids = req.stop_token_ids.clone();
            sched.ignore_eos = req.ignore_eos;
            sched.fork_of = seqs.first().copied();
            let added = self
                .executor
                .register(seq, sampling)
                .map_err(|e| e.to_string())
                .and_then(|()| self.scheduler.add_request(sched).map_err(|e| e.to_string()));
            if let Err(message) = added {
                for &s in &seqs {
                    self.scheduler.abort(s);
                }
                return fail(message);
            }
            seqs.push(seq);
        }
        for (index, &seq) in seqs.iter().enumerate() {
            self.active.insert(
                seq,
                Active {
                    request_id: req.request_id.clone(),
                    index: index as u32,
                    events: events.clone(),
                    output: OutputState::new(req.prompt_ids.len() as u32, req.stop.clone()),
                    logprobs: req.sampling.logprobs.is_some(),
                    deadline,
                },
            );
        }
        self.ids.insert(req.request_id, seqs);
    }

    /// Aborts requests whose deadline passed: their samples end with [`Finish::Deadline`].
    fn expire(&mut self) {
        let now = Instant::now();
        let expired: Vec<SeqId> = self
            .active
            .iter()
            .filter(|(_, a)| a.deadline.is_some_and(|d| d <= now))
            .map(|(&seq, _)| seq)
            .collect();
        for seq in expired {
            self.scheduler.abort(seq);
            self.finish(seq, Finish::Deadline, None, None);
        }
    }

    /// Aborts requests whose client went away.
    fn drop_abandoned(&mut self) {
        let gone: Vec<SeqId> = self
            .active
            .iter()
            .filter(|(_, a)| a.events.is_closed())
            .map(|(&seq, _)| seq)
            .collect();
        for seq in gone {
            self.scheduler.abort(seq);
            self.finish(seq, Finish::Abort, None, None);
        }
    }

    /// One schedule → execute → update round.
    fn iterate(&mut self) -> Result<(), String> {
        let started = Instant::now();
        let out = self
            .scheduler
            .schedule(self.started.elapsed().as_secs_f64());
        if out.is_empty() && out.finished_seq_ids.is_empty() {
            return Ok(());
        }
        let step = self.executor.step(&out).map_err(|e| e.to_string())?;
        let updates = self
            .scheduler
            .update(&out, &step)
            .map_err(|e| e.to_string())?;
        let mut step = step;
        for u in updates {
            let Some(active) = self.active.get_mut(&u.id) else {
                continue;
            };
            let delta = active
                .output
                .push(&u.new_token_ids, self.tokenizer.as_deref());
            let usage = TokenUsage {
                prompt_tokens: active.output.prompt_tokens,
                completion_tokens: active.output.completion_tokens(),
            };
            let logprobs = match (active.logprobs, step.logprobs.remove(&u.id)) {
                (true, Some(lp)) => vec![lp],
                _ => Vec::new(),
            };
            if !delta.token_ids.is_empty() || !delta.text.is_empty() {
                let _ = active.events.send(StreamEvent::Tokens {
                    index: active.index,
                    token_ids: delta.token_ids,
                    text: delta.text,
                    logprobs,
                    usage,
                });
            }
            if let Some(stop) = delta.matched_stop {
                self.scheduler.abort(u.id);
                self.finish(u.id, Finish::Stop, Some(stop), None);
            } else if let Some(reason) = u.finished {
                self.finish(u.id, finish_of(reason), None, None);
            }
        }
        if let Ok(mut t) = self.timing.lock() {
            t.steps += 1;
            t.wall_ms += started.elapsed().as_secs_f64() * 1e3;
            t.worker_ms += self.executor.last_worker_ms();
        }
        Ok(())
    }

    /// Sends the final event of a request and forgets it.
    fn finish(
        &mut self,
        seq: SeqId,
        reason: Finish,
        stop: Option<String>,
        message: Option<String>,
    ) {
        if let Some(mut active) = self.active.remove(&seq) {
            // The scheduler has already let the sequence go: publish that before the client
            // can see the final event, so GetServerInfo never reports its blocks afterwards.
            self.publish_stats();
            if let Some(seqs) = self.ids.get_mut(&active.request_id) {
                seqs.retain(|&s| s != seq);
                if seqs.is_empty() {
                    self.ids.remove(&active.request_id);
                }
            }
            let usage = TokenUsage {
                prompt_tokens: active.output.prompt_tokens,
                completion_tokens: active.output.completion_tokens(),
            };
            if stop.is_none() && reason != Finish::Error {
                let rest = active.output.flush(self.tokenizer.as_deref());
                if !rest.is_empty() {
                    let _ = active.events.send(StreamEvent::Tokens {
                        index: active.index,
                        token_ids: Vec::new(),
                        text: rest,
                        logprobs: Vec::new(),
                        usage,
                    });
                }
            }
            let _ = active.events.send(StreamEvent::Finished {
                index: active.index,
                reason,
                usage,
                output_ids: active.output.output_ids,
                matched_stop: stop,
                message,
            });
        }
    }

    /// Ends every open request with an error (engine failure or shutdown).
    fn close_all(&mut self, message: &str) {
        let seqs: Vec<SeqId> = self.active.keys().copied().collect();
        for seq in seqs {
            self.scheduler.abort(seq);
            self.finish(seq, Finish::Error, None, Some(message.to_string()));
        }
    }
}
