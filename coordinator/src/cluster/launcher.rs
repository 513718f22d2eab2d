//! The launcher of `bitnet-cluster up --tp N`: starts N `bitnet-cluster worker` processes,
//! waits until each answers `Health`, joins them into a group, loads the model on every rank,
//! takes the minimum `Profile`, then serves the public API over a [`GrpcExecutor`] until the
//! shutdown signal or the first worker failure.
//!
//! With `--device cuda` worker rank r runs on `CUDA_VISIBLE_DEVICES` =
//! [`crate::device::gpu_for_rank`] (r, or the r-th id the user listed). The group
//! ([`collective_kind`]) is NCCL when the build has the `nccl` feature, the device is cuda and
//! every rank has its own GPU: rank 0 makes the unique id (`NcclUniqueId`) and every rank gets it
//! in `InitCollectiveRequest.nccl_unique_id`. Otherwise it is a TCP ring (`InitCollective` with
//! every rank's `InfoResponse.ring_address`), which also lets several ranks share one GPU.
//!
//! No orphans: the children live in [`WorkerProcesses`], whose `Drop` kills and reaps every one
//! still running, on every path (errors included); each worker also exits when its stdin (a
//! pipe from the launcher) closes, so even a killed launcher does not leave workers behind. A
//! worker that exits or fails a step ends the serving loop: open requests fail with an error
//! and [`serve_cluster`] returns an error (the process exits non-zero).

use super::error::ClusterError;
use crate::device::{distinct_gpus, gpu_for_rank, Device};
use crate::engine::GrpcExecutor;
use crate::error::CoordinatorError;
use crate::serve::{assemble, serve_on, served_len, wanted_kv_blocks, Frontend, ServeOptions};
use bitnet_proto::worker::worker_client::WorkerClient;
use bitnet_proto::worker::{
    CollectiveKind, HealthRequest, InfoRequest, InitCollectiveRequest, LoadModelRequest,
    NcclUniqueIdRequest, ProfileRequest, ShutdownRequest,
};
use std::future::Future;
use std::io::BufRead;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::Channel;

/// How the worker group is started.
#[derive(Clone, Debug)]
pub struct LaunchOptions {
    /// Ranks (worker processes).
    pub tp: usize,
    /// Compute threads per worker.
    pub threads: usize,
    /// Where every worker runs its shard.
    pub device: Device,
    /// Deadline of one step's round trip.
    pub step_timeout: Duration,
    /// Deadline for starting, joining and loading.
    pub startup_timeout: Duration,
    /// Every worker swaps its LM head for an int8 copy (`up --lm-head int8`).
    pub lm_head_int8: bool,
}

impl LaunchOptions {
    /// CPU workers; default deadlines: 120 s per step, 120 s to start.
    pub fn new(tp: usize, threads: usize) -> Self {
        Self {
            tp,
            threads,
            device: Device::Cpu,
            step_timeout: Duration::from_secs(120),
            startup_timeout: Duration::from_secs(120),
            lm_head_int8: false,
        }
    }
}

/// The worker processes; dropping this kills and reaps every one still running.
#[derive(Default)]
pub struct WorkerProcesses {
    children: Vec<Child>,
    /// Closing a worker's stdin tells it the launcher is gone.
    stdins: Vec<ChildStdin>,
}

impl WorkerProcesses {
    /// Process ids, by rank.
    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
    }

    /// A description of the first worker that has exited, if any.
    pub fn exited(&mut self) -> Option<String> {
        self.children
            .iter_mut()
            .enumerate()
            .find_map(|(rank, c)| match c.try_wait() {
                Ok(Some(status)) => Some(format!("worker rank {rank} exited ({status})")),
                Ok(None) => None,
                Err(e) => Some(format!("worker rank {rank}: {e}")),
            })
    }

    /// True once every worker has exited (polls until `timeout`).
    pub fn wait_all(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let running = self
                .children
                .iter_mut()
                .map(|c| matches!(c.try_wait(), Ok(None)))
                .filter(|&alive| alive)
                .count();
            if running == 0 {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for WorkerProcesses {
    fn drop(&mut self) {
        self.stdins.clear();
        for child in &mut self.children {
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}

/// A started, joined and loaded worker group.
pub struct Cluster {
    pub processes: Arc<Mutex<WorkerProcesses>>,
    /// One client per rank, in rank order.
    pub clients: Vec<WorkerClient<Channel>>,
    /// KV blocks every rank can hold (the minimum over ranks).
    pub num_blocks: u64,
    pub vocab: usize,
}

fn rpc(rank: usize, what: &'static str) -> impl FnOnce(tonic::Status) -> ClusterError {
    move |status| ClusterError::Rpc { rank, what, status }
}

/// The collective of a group of `tp` workers on `device`, where the user's
/// `CUDA_VISIBLE_DEVICES` is `visible`: NCCL when this build has it and every rank has its own
/// GPU, else the TCP ring (a single rank for `tp == 1`).
pub fn collective_kind(tp: usize, device: Device, visible: Option<&str>) -> CollectiveKind {
    if tp <= 1 {
        CollectiveKind::Single
    } else if cfg!(feature = "nccl") && device == Device::Cuda && distinct_gpus(tp, visible) {
        CollectiveKind::Nccl
    } else {
        CollectiveKind::TcpRing
    }
}

/// The user's `CUDA_VISIBLE_DEVICES`, if set.
fn user_visible_devices() -> Option<String> {
    std::env::var("CUDA_VISIBLE_DEVICES").ok()
}

/// Spawns worker `rank` and reads the port it listens on.
async fn spawn_worker(
    processes: &Mutex<WorkerProcesses>,
    opts: &LaunchOptions,
    rank: usize,
) -> Result<u16, ClusterError> {
    let exe = std::env::current_exe().map_err(|source| ClusterError::Io {
        what: "locating the bitnet-cluster executable".into(),
        source,
    })?;
    let timeout = opts.startup_timeout;
    let mut command = Command::new(exe);
    command
        .args(["worker", "--port", "0", "--watch-stdin", "--threads"])
        .arg(opts.threads.to_string())
        .args(["--device", opts.device.name()]);
    if opts.device == Device::Cuda {
        let visible = user_visible_devices();
        command.env(
            "CUDA_VISIBLE_DEVICES",
            gpu_for_rank(rank, visible.as_deref()),
        );
    }
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|source| ClusterError::Io {
            what: "spawning a worker".into(),
            source,
        })?;
    let stdout = child.stdout.take();
    {
        let mut p = processes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(stdin) = child.stdin.take() {
            p.stdins.push(stdin);
        }
        p.children.push(child);
    }
    let stdout = stdout.ok_or_else(|| ClusterError::Launch("no worker stdout".into()))?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let read = std::io::BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(read.map(|_| line));
    });
    let line = match tokio::time::timeout(timeout, rx).await {
        Ok(Ok(Ok(line))) => line,
        Ok(Ok(Err(e))) => {
            return Err(ClusterError::Launch(format!(
                "reading a worker's port: {e}"
            )))
        }
        Ok(Err(_)) | Err(_) => {
            return Err(ClusterError::Launch(
                "a worker did not report its port".into(),
            ))
        }
    };
    line.trim()
        .strip_prefix("listening ")
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| ClusterError::Launch(format!("unexpected worker output {line:?}")))
}

/// Connects to a worker, retrying until it answers `Health`.
async fn connect(port: u16, deadline: Instant) -> Result<WorkerClient<Channel>, ClusterError> {
    let addr = format!("http://127.0.0.1:{port}");
    loop {
        let attempt = async {
            let mut client = WorkerClient::connect(addr.clone()).await.ok()?;
            client.health(HealthRequest {}).await.ok()?;
            Some(client)
        };
        if let Some(client) = attempt.await {
            return Ok(client);
        }
        if Instant::now() >= deadline {
            return Err(ClusterError::Launch(format!(
                "the worker on port {port} did not answer Health"
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs one call on every rank at once (joining the ring needs every rank in it).
async fn on_every_rank<T, F, Fut>(
    clients: &[WorkerClient<Channel>],
    call: F,
) -> Result<Vec<T>, ClusterError>
where
    T: Send + 'static,
    F: Fn(usize, WorkerClient<Channel>) -> Fut,
    Fut: Future<Output = Result<T, ClusterError>> + Send + 'static,
{
    let tasks: Vec<_> = clients
        .iter()
        .enumerate()
        .map(|(rank, c)| tokio::spawn(call(rank, c.clone())))
        .collect();
    let mut out = Vec::with_capacity(tasks.len());
    for task in tasks {
        out.push(
            task.await
                .map_err(|e| ClusterError::Launch(e.to_string()))??,
        );
    }
    Ok(out)
}

/// Starts `opts.tp` workers and brings them to the point where they can run steps.
pub async fn launch(
    opts: &LaunchOptions,
    model_dir: String,
    max_model_len: usize,
    max_blocks: u64,
) -> Result<Cluster, ClusterError> {
    let tp = opts.tp.max(1);
    let deadline = Instant::now() + opts.startup_timeout;
    let processes = Arc::new(Mutex::new(WorkerProcesses::default()));
    let mut ports = Vec::with_capacity(tp);
    for rank in 0..tp {
        ports.push(spawn_worker(&processes, opts, rank).await?);
    }
    let mut clients = Vec::with_capacity(tp);
    for &port in &ports {
        clients.push(connect(port, deadline).await?);
    }
    let mut rings = Vec::with_capacity(tp);
    for (rank, client) in clients.iter_mut().enumerate() {
        let info = client
            .info(InfoRequest {})
            .await
            .map_err(rpc(rank, "Info"))?
            .into_inner();
        rings.push(info.ring_address);
    }
    let timeout_ms = opts.startup_timeout.as_millis().min(u32::MAX as u128) as u32;
    let kind = collective_kind(tp, opts.device, user_visible_devices().as_deref());
    let nccl_unique_id = match kind {
        CollectiveKind::Nccl => {
            clients[0]
                .nccl_unique_id(NcclUniqueIdRequest {})
                .await
                .map_err(rpc(0, "NcclUniqueId"))?
                .into_inner()
                .nccl_unique_id
        }
        _ => Vec::new(),
    };
    on_every_rank(&clients, |rank, mut c| {
        let req = InitCollectiveRequest {
            rank: rank as u32,
            world_size: tp as u32,
            peer_addresses: rings.clone(),
            nccl_unique_id: nccl_unique_id.clone(),
            kind: kind as i32,
            timeout_ms,
        };
        async move {
            c.init_collective(req)
                .await
                .map_err(rpc(rank, "InitCollective"))
        }
    })
    .await?;
    let loaded = on_every_rank(&clients, |rank, mut c| {
        let req = LoadModelRequest {
            model_dir: model_dir.clone(),
            tp_rank: rank as u32,
            tp_size: tp as u32,
            verify: false,
            max_model_len: max_model_len as u32,
            lm_head_int8: opts.lm_head_int8,
        };
        async move {
            Ok(c.load_model(req)
                .await
                .map_err(rpc(rank, "LoadModel"))?
                .into_inner())
        }
    })
    .await?;
    let vocab = loaded
        .first()
        .and_then(|l| l.shape.as_ref())
        .map_or(0, |s| s.vocab_size as usize);
    let blocks = on_every_rank(&clients, |rank, mut c| async move {
        Ok(c.profile(ProfileRequest {
            block_size: super::rank::BLOCK_SIZE,
            memory_budget_bytes: 0,
            max_blocks,
        })
        .await
        .map_err(rpc(rank, "Profile"))?
        .into_inner()
        .num_blocks)
    })
    .await?;
    Ok(Cluster {
        processes,
        clients,
        num_blocks: blocks.into_iter().min().unwrap_or(0),
        vocab,
    })
}

/// Asks every worker to exit and waits for them (killing any still running after a grace
/// period, through [`WorkerProcesses`]' `Drop`).
async fn stop(cluster: Cluster) {
    for mut c in cluster.clients {
        let _ = tokio::time::timeout(Duration::from_secs(2), c.shutdown(ShutdownRequest {})).await;
    }
    let processes = cluster.processes;
    let _ = tokio::task::spawn_blocking(move || {
        let mut p = processes.lock().unwrap_or_else(|e| e.into_inner());
        p.wait_all(Duration::from_secs(5));
    })
    .await;
}

/// `up --tp N`: launches the workers and serves on `listener` until `shutdown` resolves (exit
/// 0) or a worker fails (an error).
pub async fn serve_cluster(
    opts: &ServeOptions,
    launch_opts: &LaunchOptions,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), CoordinatorError> {
    let frontend = Frontend::load(opts.model_dir.as_deref())?;
    let max_model_len = served_len(opts, &frontend.config);
    let model_dir = opts
        .model_dir
        .as_ref()
        .map(|d| d.display().to_string())
        .unwrap_or_default();
    let max_blocks = wanted_kv_blocks(opts, max_model_len) as u64;
    let cluster = launch(launch_opts, model_dir, max_model_len, max_blocks).await?;
    let (failure_tx, mut failure_rx) = watch::channel::<Option<String>>(None);
    let served = async {
        let executor = GrpcExecutor::connect(
            cluster.clients.clone(),
            launch_opts.step_timeout,
            failure_tx.clone(),
        )
        .await
        .map_err(rpc(0, "Step"))?;
        assemble(
            opts,
            frontend,
            cluster.vocab,
            Box::new(executor),
            Some(cluster.num_blocks as usize),
            launch_opts.tp as u32,
        )
    }
    .await;
    let served = match served {
        Ok(s) => s,
        Err(e) => {
            stop(cluster).await;
            return Err(e);
        }
    };
    let pids = cluster
        .processes
        .lock()
        .map(|p| p.pids())
        .unwrap_or_default();
    eprintln!(
        "bitnet-cluster: serving {} over {} worker process(es) (pids {pids:?}), {} KV blocks",
        served.description, launch_opts.tp, cluster.num_blocks
    );
    let monitor = {
        let processes = cluster.processes.clone();
        let failure = failure_tx.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let exited = processes.lock().ok().and_then(|mut p| p.exited());
                if let Some(message) = exited {
                    let _ = failure.send(Some(message));
                    return;
                }
            }
        })
    };
    let failed = async move {
        let _ = failure_rx.wait_for(Option::is_some).await;
    };
    let result = serve_on(listener, served, async move {
        tokio::select! {
            _ = shutdown => {}
            _ = failed => {}
        }
    })
    .await;
    monitor.abort();
    let failure = failure_tx.borrow().clone();
    stop(cluster).await;
    match failure {
        Some(message) => Err(ClusterError::Launch(format!("a worker failed: {message}")).into()),
        None => result,
    }
}
