//! [`GrpcExecutor`]: the [`Executor`] that fans each step out to every rank of the
//! tensor-parallel group over their `Step` streams (`bitnet.worker.v1`) and checks they agree.
//!
//! The engine thread is synchronous: the executor holds a [`tokio::runtime::Handle`] of the
//! server's runtime and `block_on`s each round trip from the engine thread (never a runtime
//! thread). A step is sent to every rank, then every rank's answer is awaited under one
//! deadline; a rank error, a closed stream, a different step id or different tokens fail the
//! step with an [`ExecutorError`], mark the executor broken (every later step fails at once) and
//! are reported on the failure channel, so the launcher (`crate::cluster::launcher`) stops the
//! cluster. Neighbours: `crate::cluster::wire` converts the step, `crate::cluster::service` is
//! the other end.

use super::executor::{check_sampling, Executor, ExecutorError};
use crate::cluster::wire;
use crate::scheduler::{SchedulerOutput, SeqId, StepOutput};
use bitnet_proto::worker::worker_client::WorkerClient;
use bitnet_proto::worker::{SamplingState, StepRequest, StepResponse};
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::Streaming;

/// One rank's step stream.
struct RankStream {
    requests: mpsc::Sender<StepRequest>,
    responses: Streaming<StepResponse>,
}

/// Drives the ranks of a worker group.
pub struct GrpcExecutor {
    handle: tokio::runtime::Handle,
    ranks: Vec<RankStream>,
    sampling: HashMap<SeqId, SamplingState>,
    timeout: Duration,
    broken: Option<String>,
    failure: watch::Sender<Option<String>>,
    last_worker_ms: f64,
}

impl GrpcExecutor {
    /// Opens a step stream on every client (in rank order). `timeout` bounds each step's round
    /// trip; the first failure is published on `failure`.
    pub async fn connect(
        clients: Vec<WorkerClient<Channel>>,
        timeout: Duration,
        failure: watch::Sender<Option<String>>,
    ) -> Result<Self, tonic::Status> {
        let mut ranks = Vec::with_capacity(clients.len());
        for mut client in clients {
            let (tx, rx) = mpsc::channel(4);
            let responses = client.step(ReceiverStream::new(rx)).await?.into_inner();
            ranks.push(RankStream {
                requests: tx,
                responses,
            });
        }
        Ok(Self {
            handle: tokio::runtime::Handle::current(),
            ranks,
            sampling: HashMap::new(),
            timeout,
            broken: None,
            last_worker_ms: 0.0,
            failure,
        })
    }

    fn fail(&mut self, step: u64, message: String) -> ExecutorError {
        if self.broken.is_none() {
            self.broken = Some(message.clone());
            let _ = self.failure.send(Some(message.clone()));
        }
        ExecutorError::Rank { step, message }
    }

    /// Sends `req` to every rank and collects every answer, in rank order.
    fn round_trip(&mut self, req: StepRequest) -> Result<Vec<StepResponse>, String> {
        let timeout = self.timeout;
        let ranks = &mut self.ranks;
        self.handle.block_on(async move {
            let exchange = async {
                for (rank, r) in ranks.iter().enumerate() {
                    r.requests
                        .send(req.clone())
                        .await
                        .map_err(|_| format!("rank {rank}: the step stream is closed"))?;
                }
                let mut out = Vec::with_capacity(ranks.len());
                for (rank, r) in ranks.iter_mut().enumerate() {
                    match r.responses.message().await {
                        Ok(Some(resp)) => out.push(resp),
                        Ok(None) => return Err(format!("rank {rank}: the step stream ended")),
                        Err(status) => return Err(format!("rank {rank}: {}", status.message())),
                    }
                }
                Ok(out)
            };
            match tokio::time::timeout(timeout, exchange).await {
                Ok(result) => result,
                Err(_) => Err(format!("no answer from every rank within {timeout:?}")),
            }
        })
    }
}

impl Executor for GrpcExecutor {
    fn register(&mut self, seq: SeqId, sampling: SamplingState) -> Result<(), ExecutorError> {
        check_sampling(&sampling)?;
        self.sampling.insert(seq, sampling);
        Ok(())
    }

    fn step(&mut self, out: &SchedulerOutput) -> Result<StepOutput, ExecutorError> {
        let step = out.step_id;
        if let Some(message) = &self.broken {
            return Err(ExecutorError::Rank {
                step,
                message: format!("the worker group is broken: {message}"),
            });
        }
        let timeout_ms = self.timeout.as_millis().min(u32::MAX as u128) as u32;
        let req = wire::step_request(out, &self.sampling, timeout_ms);
        for seq in &out.finished_seq_ids {
            self.sampling.remove(seq);
        }
        let started = std::time::Instant::now();
        let responses = self
            .round_trip(req)
            .map_err(|message| self.fail(step, message))?;
        let round_trip_ms = started.elapsed().as_secs_f64() * 1e3;
        let worker_ms = responses
            .iter()
            .filter_map(|r| r.timings.as_ref())
            .map(|t| t.forward_ms + t.sample_ms + t.collective_ms)
            .fold(0.0, f64::max);
        self.last_worker_ms = worker_ms;
        tracing::debug!(
            step,
            round_trip_ms,
            worker_ms,
            overhead_ms = round_trip_ms - worker_ms,
            "step round trip"
        );
        for (rank, resp) in responses.iter().enumerate() {
            if !resp.error.is_empty() {
                return Err(self.fail(step, format!("rank {rank}: {}", resp.error)));
            }
            if resp.step_id != step {
                return Err(self.fail(
                    step,
                    format!("rank {rank} answered step {} instead", resp.step_id),
                ));
            }
        }
        // Tokens must agree; logprobs are rank 0's (dense families differ in the last bits).
        let first = wire::step_output(&responses[0]);
        for (rank, resp) in responses.iter().enumerate().skip(1) {
            if wire::step_output(resp).tokens != first.tokens {
                return Err(self.fail(
                    step,
                    format!("rank {rank} sampled different tokens than rank 0"),
                ));
            }
        }
        Ok(first)
    }

    fn last_worker_ms(&self) -> f64 {
        self.last_worker_ms
    }
}
