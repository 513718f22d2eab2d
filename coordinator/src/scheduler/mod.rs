//! The pure scheduling core of the engine: which sequences run in the next step, with which
//! KV blocks, and what each request gained from the step.
//!
//! Neighbours: the engine task (upstream) owns one [`Scheduler`], feeds it validated requests
//! as [`SchedRequest`]s and aborts, and calls `schedule(now)` → executor → `update` in a loop;
//! the wire conversion (downstream) turns a [`SchedulerOutput`] into the worker proto's
//! `StepRequest` and a `StepResponse` into a [`StepOutput`]; output processing turns
//! [`RequestUpdate`]s into stream events. Nothing here does I/O, awaits, or reads a clock.
//!
//! Files: [`block_manager`] (paged KV allocation with reference counts), [`request`] (a
//! request's state and finish reasons), [`output`] (the step's data), `scheduler` (the
//! planner), [`fake_worker`] (a deterministic in-process worker for tests).

pub mod block_manager;
pub mod fake_worker;
pub mod output;
pub mod request;
#[allow(clippy::module_inception)]
mod scheduler;
#[cfg(test)]
mod tests;

pub use block_manager::{BlockError, BlockId, BlockManager};
pub use fake_worker::{FakeWorker, FakeWorkerError};
pub use output::{
    NewSeq, RequestUpdate, RunningSeq, SampledToken, SchedulerOutput, SchedulerStats, StepOutput,
};
pub use request::{FinishReason, SchedRequest, SeqId};
pub use scheduler::{Scheduler, SchedulerConfig, SchedulerError};
