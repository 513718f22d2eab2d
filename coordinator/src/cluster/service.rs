//! [`WorkerService`]: the `bitnet.worker.v1.Worker` gRPC service of one worker process
//! (`bitnet-cluster worker`), and [`run_worker`], which serves it.
//!
//! The compute state is a [`Rank`] behind a mutex; every call that touches it (joining the
//! ring, loading, profiling, each step) runs on tokio's blocking pool, so the runtime's worker
//! threads stay free for `Health`, which reads atomics only and never waits behind a step.
//! `Step` is one long-lived bidirectional stream: requests are answered in order, and a failed
//! step is answered with `StepResponse.error` (the worker then reports itself broken on
//! `Health`) rather than by dropping the stream. Neighbours: [`super::launcher`] starts and
//! drives these processes, `crate::engine::grpc_executor` holds their step streams.

use super::error::ClusterError;
use super::rank::{Rank, BLOCK_SIZE};
use crate::device::Device;
use bitnet_proto::worker::worker_server::{Worker, WorkerServer};
use bitnet_proto::worker::{
    HealthRequest, HealthResponse, InfoRequest, InfoResponse, InitCollectiveRequest,
    InitCollectiveResponse, LoadModelRequest, LoadModelResponse, NcclUniqueIdRequest,
    NcclUniqueIdResponse, ProfileRequest, ProfileResponse, ShutdownRequest, ShutdownResponse,
    StepRequest, StepResponse,
};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// Health of a worker, readable without the compute lock.
#[derive(Default)]
struct HealthState {
    ready: AtomicBool,
    steps_done: AtomicU64,
    rank: AtomicU32,
    world: AtomicU32,
    error: Mutex<String>,
}

impl HealthState {
    fn broken(&self, message: &str) {
        if let Ok(mut e) = self.error.lock() {
            if e.is_empty() {
                *e = message.to_string();
            }
        }
    }
}

/// The worker service of one process.
#[derive(Clone)]
pub struct WorkerService {
    rank: Arc<Mutex<Rank>>,
    health: Arc<HealthState>,
    shutdown: watch::Sender<bool>,
}

impl WorkerService {
    /// A service over `rank`; `shutdown` is set to true by the `Shutdown` call.
    pub fn new(rank: Rank, shutdown: watch::Sender<bool>) -> Self {
        Self {
            rank: Arc::new(Mutex::new(rank)),
            health: Arc::new(HealthState::default()),
            shutdown,
        }
    }

    /// Runs `f` on the compute state, on the blocking pool.
    async fn compute<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Rank) -> Result<T, ClusterError> + Send + 'static,
    ) -> Result<T, ClusterError> {
        let rank = self.rank.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = rank.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut guard)
        })
        .await
        .map_err(|e| ClusterError::State(format!("the compute task failed: {e}")))?
    }
}

#[tonic::async_trait]
impl Worker for WorkerService {
    async fn info(&self, _: Request<InfoRequest>) -> Result<Response<InfoResponse>, Status> {
        let info = self
            .compute(|r| {
                Ok(InfoResponse {
                    device: match r.device() {
                        Device::Cpu => "cpu".into(),
                        Device::Cuda => "cuda:0".into(),
                    },
                    dtype: "f32".into(),
                    block_size: BLOCK_SIZE,
                    threads: r.threads() as u32,
                    version: env!("CARGO_PKG_VERSION").into(),
                    ring_address: r.ring_address().to_string(),
                    shape: r.model().map(|m| {
                        let max = m.config().max_position_embeddings;
                        m.shape(max)
                    }),
                    ..Default::default()
                })
            })
            .await?;
        Ok(Response::new(InfoResponse {
            rank: self.health.rank.load(Ordering::Relaxed),
            world_size: self.health.world.load(Ordering::Relaxed),
            ..info
        }))
    }

    async fn init_collective(
        &self,
        request: Request<InitCollectiveRequest>,
    ) -> Result<Response<InitCollectiveResponse>, Status> {
        let req = request.into_inner();
        let (rank, world) = (req.rank, req.world_size.max(1));
        self.compute(move |r| r.init_collective(&req)).await?;
        self.health.rank.store(rank, Ordering::Relaxed);
        self.health.world.store(world, Ordering::Relaxed);
        Ok(Response::new(InitCollectiveResponse {}))
    }

    async fn nccl_unique_id(
        &self,
        _: Request<NcclUniqueIdRequest>,
    ) -> Result<Response<NcclUniqueIdResponse>, Status> {
        let nccl_unique_id = self.compute(|r| r.nccl_unique_id()).await?;
        Ok(Response::new(NcclUniqueIdResponse { nccl_unique_id }))
    }

    async fn load_model(
        &self,
        request: Request<LoadModelRequest>,
    ) -> Result<Response<LoadModelResponse>, Status> {
        let req = request.into_inner();
        let (rank, world) = (req.tp_rank, req.tp_size.max(1));
        let resp = self.compute(move |r| r.load_model(&req)).await?;
        self.health.rank.store(rank, Ordering::Relaxed);
        self.health.world.store(world, Ordering::Relaxed);
        self.health.ready.store(true, Ordering::Release);
        Ok(Response::new(resp))
    }

    async fn profile(
        &self,
        request: Request<ProfileRequest>,
    ) -> Result<Response<ProfileResponse>, Status> {
        let req = request.into_inner();
        let num_blocks = self
            .compute(move |r| r.profile(req.block_size, req.memory_budget_bytes, req.max_blocks))
            .await?;
        Ok(Response::new(ProfileResponse { num_blocks }))
    }

    type StepStream = ReceiverStream<Result<StepResponse, Status>>;

    async fn step(
        &self,
        request: Request<Streaming<StepRequest>>,
    ) -> Result<Response<Self::StepStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let service = self.clone();
        tokio::spawn(async move {
            while let Ok(Some(req)) = inbound.message().await {
                let step_id = req.step_id;
                let rank = service.health.rank.load(Ordering::Relaxed);
                let resp = match service.compute(move |r| r.step(&req)).await {
                    Ok((tokens, timings)) => {
                        service.health.steps_done.fetch_add(1, Ordering::Relaxed);
                        StepResponse {
                            step_id,
                            rank,
                            tokens,
                            timings: Some(timings),
                            error: String::new(),
                        }
                    }
                    Err(e) => {
                        let message = e.to_string();
                        tracing::error!("step {step_id} failed: {message}");
                        if matches!(e, ClusterError::Collective(_) | ClusterError::Worker(_)) {
                            service.health.broken(&message);
                        }
                        StepResponse {
                            step_id,
                            rank,
                            error: message,
                            ..Default::default()
                        }
                    }
                };
                if tx.send(Ok(resp)).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn health(&self, _: Request<HealthRequest>) -> Result<Response<HealthResponse>, Status> {
        let error = self
            .health
            .error
            .lock()
            .map(|e| e.clone())
            .unwrap_or_default();
        Ok(Response::new(HealthResponse {
            ready: self.health.ready.load(Ordering::Acquire) && error.is_empty(),
            steps_done: self.health.steps_done.load(Ordering::Relaxed),
            error,
        }))
    }

    async fn shutdown(
        &self,
        _: Request<ShutdownRequest>,
    ) -> Result<Response<ShutdownResponse>, Status> {
        let _ = self.shutdown.send(true);
        Ok(Response::new(ShutdownResponse {}))
    }
}

/// Ctrl-C and SIGTERM: a worker run by hand stops; one started by the launcher (`watch_stdin`)
/// ignores them, because a terminal's Ctrl-C reaches the whole process group and the launcher
/// stops its workers itself (`Shutdown`, then stdin closing, then a kill).
async fn signals(shutdown: watch::Sender<bool>, ignore: bool) {
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    loop {
        #[cfg(unix)]
        let term_signal = async {
            match term.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let term_signal = std::future::pending::<()>();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term_signal => {}
        }
        if !ignore {
            let _ = shutdown.send(true);
            return;
        }
    }
}

/// Serves the worker service on `host:port` (port 0: any free port) with compute `threads` on
/// `device`, printing `listening <port>` as the first line on stdout. Returns after `Shutdown`, Ctrl-C or
/// SIGTERM (or, with `watch_stdin`, only `Shutdown` or stdin closing: the launcher died), at the
/// latest one second later even if a step stream is still open.
pub fn run_worker(
    host: &str,
    port: u16,
    threads: usize,
    device: Device,
    watch_stdin: bool,
) -> Result<(), ClusterError> {
    let io = |what: &str| {
        let what = what.to_string();
        move |source| ClusterError::Io { what, source }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(io("tokio runtime"))?;
    let ring = std::net::TcpListener::bind((host, 0)).map_err(io("ring listener"))?;
    let rank = Rank::on_device(threads, device, ring)?;
    let result = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind((host, port))
            .await
            .map_err(io("worker listener"))?;
        let bound = listener.local_addr().map_err(io("worker listener"))?;
        {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            writeln!(out, "listening {}", bound.port()).map_err(io("stdout"))?;
            out.flush().map_err(io("stdout"))?;
        }
        let (shutdown_tx, mut shutdown_rx) = watch::channel(false);
        if watch_stdin {
            let tx = shutdown_tx.clone();
            std::thread::spawn(move || {
                let mut sink = Vec::new();
                let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
                let _ = tx.send(true);
            });
        }
        tokio::spawn(signals(shutdown_tx.clone(), watch_stdin));
        let service = WorkerService::new(rank, shutdown_tx);
        let mut stop = shutdown_rx.clone();
        let server = tonic::transport::Server::builder()
            .add_service(WorkerServer::new(service))
            .serve_with_incoming_shutdown(
                // Streamed tokens must not wait for Nagle's algorithm (≈ 40 ms per chunk).
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                async move {
                    let _ = stop.wait_for(|s| *s).await;
                },
            );
        let grace = async move {
            let _ = shutdown_rx.wait_for(|s| *s).await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        };
        tokio::select! {
            result = server => result.map_err(|e| ClusterError::Launch(format!("worker server: {e}"))),
            _ = grace => Ok(()),
        }
    });
    // A step still computing must not keep the process alive.
    runtime.shutdown_timeout(Duration::from_millis(500));
    result
}
