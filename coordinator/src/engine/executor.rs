//! [`Executor`]: how a scheduled step reaches the model. [`InProcessExecutor`] runs it on a
//! model in this process (a host [`bitnet_worker::Model`], or the device-resident CUDA model:
//! any [`PagedModel`]; tests, single-rank serving); `super::grpc_executor` fans the same steps
//! out to worker processes.
//!
//! The in-process executor is a worker without the process: it turns each `SchedulerOutput`
//! into the worker proto's `StepRequest` (`crate::cluster::wire`) and runs it on a
//! [`StepRunner`] over its own paged KV pool — the same code a `bitnet-cluster worker` runs, so
//! both follow the worker protocol identically (new sequences with prompt and block table,
//! running ones as deltas, resumed ones recomputed, a token only at the end of what a sequence
//! knows).

use crate::cluster::wire;
use crate::scheduler::{SchedulerOutput, SeqId, StepOutput};
use bitnet_proto::worker::SamplingState;
use bitnet_worker::{PagedModel, StepRunner, WorkerError};
use std::collections::HashMap;
use thiserror::Error;

/// A step could not be executed.
#[derive(Debug, Error)]
pub enum ExecutorError {
    #[error("step {step}: sequence {seq}: {what}")]
    Protocol { step: u64, seq: SeqId, what: String },
    /// A worker rank failed the step, or the ranks disagreed (the gRPC executor).
    #[error("step {step}: {message}")]
    Rank { step: u64, message: String },
    #[error("step {step}: {source}")]
    Worker {
        step: u64,
        source: bitnet_worker::WorkerError,
    },
}

/// Runs scheduled steps.
pub trait Executor: Send {
    /// Registers the sampling settings of a sequence (seed already settled, so every rank
    /// draws the same stream) before it is first scheduled.
    fn register(&mut self, seq: SeqId, sampling: SamplingState) -> Result<(), ExecutorError>;
    /// Runs one step and returns the sampled tokens.
    fn step(&mut self, out: &SchedulerOutput) -> Result<StepOutput, ExecutorError>;
    /// Milliseconds of compute the workers reported for the last step (forward, collectives
    /// and sampling of the slowest rank); 0 when unknown.
    fn last_worker_ms(&self) -> f64 {
        0.0
    }
}

/// Checks the sampling settings of a sequence as a worker will read them.
pub fn check_sampling(sampling: &SamplingState) -> Result<(), ExecutorError> {
    wire::sampling_params(Some(sampling))
        .validate()
        .map_err(|source| ExecutorError::Worker { step: 0, source })
}

/// Executes steps on an in-process model with its own KV pool (on the model's device).
pub struct InProcessExecutor<M: PagedModel> {
    model: M,
    runner: StepRunner,
    sampling: HashMap<SeqId, SamplingState>,
    last_worker_ms: f64,
}

impl<M: PagedModel> InProcessExecutor<M> {
    /// An executor over `model` with a pool of `num_blocks` KV blocks, whose sequences never
    /// exceed `max_model_len` tokens.
    pub fn new(model: M, max_model_len: usize, num_blocks: usize) -> Result<Self, WorkerError> {
        let pool = model.new_pool(num_blocks)?;
        Ok(Self {
            model,
            runner: StepRunner::new(pool, max_model_len),
            sampling: HashMap::new(),
            last_worker_ms: 0.0,
        })
    }

    /// The model.
    pub fn model(&self) -> &M {
        &self.model
    }

    /// Sequences the runner holds (dropped when a step lists them as finished).
    pub fn num_seqs(&self) -> usize {
        self.runner.num_seqs()
    }
}

impl<M: PagedModel + Send> Executor for InProcessExecutor<M> {
    fn register(&mut self, seq: SeqId, sampling: SamplingState) -> Result<(), ExecutorError> {
        check_sampling(&sampling)?;
        self.sampling.insert(seq, sampling);
        Ok(())
    }

    fn step(&mut self, out: &SchedulerOutput) -> Result<StepOutput, ExecutorError> {
        let step = out.step_id;
        if let Some(r) = out
            .new_requests
            .iter()
            .find(|r| !self.sampling.contains_key(&r.seq_id))
        {
            return Err(ExecutorError::Protocol {
                step,
                seq: r.seq_id,
                what: "scheduled before its sampling settings were registered".into(),
            });
        }
        let req = wire::step_request(out, &self.sampling, 0);
        for seq in &out.finished_seq_ids {
            self.sampling.remove(seq);
        }
        let reply = self
            .runner
            .step(&self.model, &req)
            .map_err(|source| match source {
                WorkerError::Protocol { seq, what, .. } => {
                    ExecutorError::Protocol { step, seq, what }
                }
                source => ExecutorError::Worker { step, source },
            })?;
        let t = &reply.timings;
        self.last_worker_ms = t.forward_ms + t.collective_ms + t.sample_ms;
        Ok(wire::tokens_output(step, &reply.tokens))
    }

    fn last_worker_ms(&self) -> f64 {
        self.last_worker_ms
    }
}
