//! [`Rank`]: the compute state of one worker process — its ring listener, its collective, its
//! [`ShardedModel`] and the sequences it holds. Every method is synchronous and CPU-bound: the
//! gRPC service ([`super::service`]) calls them on tokio's blocking pool, never on a runtime
//! worker thread.
//!
//! `Profile` allocates the rank's paged KV pool; [`Rank::step`] hands each step to the pool's
//! [`StepRunner`] (the same worker protocol the in-process executor runs,
//! `crate::engine::executor`): every rank samples (so seeded random streams stay in step) and
//! rank 0's tokens are then broadcast over the collective, so all ranks feed the same tokens to
//! the next step.
//!
//! The model runs on the worker's [`Device`]: a `ShardedModel<CpuBackend>` or, in a build with
//! the `cuda` feature, the device-resident `CudaModel` ([`RankModel`]: weights, KV pool and
//! activations on the GPU, sampling there). The group is a TCP ring, or with
//! `CollectiveKind::Nccl` (feature `nccl`, device cuda) an `NcclCollective` on the CUDA
//! backend's stream, joined with the unique id rank 0 made ([`Rank::nccl_unique_id`]); a CUDA
//! rank on the TCP ring reduces its device buffers through it host-staged (`HostStaged`).

use super::error::ClusterError;
use crate::device::Device;
use bitnet_checkpoints::{ModelConfig, ModelWeights};
use bitnet_kernels::{Backend, CpuBackend};
use bitnet_proto::worker::{
    CollectiveKind, InitCollectiveRequest, LoadModelRequest, LoadModelResponse, ModelShape,
    SampledToken, StepRequest, StepTimings,
};
use bitnet_worker::shard::{load_presharded, ModelShard, PreshardedError, RowParallel};
use bitnet_worker::{
    Collective, KvPool, PagedModel, ShardLayout, ShardPlan, ShardedModel, SingleRank, StepRunner,
    TcpRing, TcpRingConfig,
};
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

/// KV block size of the workers' pools (tokens).
pub const BLOCK_SIZE: u32 = bitnet_worker::BLOCK_SIZE as u32;
/// KV memory a worker offers when `Profile` gives no budget.
pub const DEFAULT_KV_BUDGET: u64 = 4 << 30;
/// Why a build without the `nccl` feature refuses an NCCL group.
#[cfg(not(feature = "nccl"))]
const NO_NCCL: &str =
    "this worker has no NCCL support: rebuild with --features nccl (or use the TCP ring)";

/// A loaded shard on the rank's device.
// One per worker process: the size difference between the variants does not matter.
#[allow(clippy::large_enum_variant)]
pub enum RankModel {
    Cpu(ShardedModel<CpuBackend>),
    #[cfg(feature = "cuda")]
    Cuda(bitnet_worker::cuda::CudaModel),
}

/// The group a rank joined: host collectives (single rank, TCP ring) or, for NCCL, a device
/// collective on the CUDA stream.
enum RankCollective {
    Host(Box<dyn Collective>),
    #[cfg(feature = "cuda")]
    Device(Box<dyn bitnet_worker::collective::DeviceCollective>),
}

/// Runs `$body` with `$m` bound to the [`ShardedModel`] of whichever backend `$model` holds.
macro_rules! on_model {
    ($model:expr, $m:ident => $body:expr) => {
        match $model {
            RankModel::Cpu($m) => $body,
            #[cfg(feature = "cuda")]
            RankModel::Cuda($m) => $body,
        }
    };
}

impl RankModel {
    /// The whole model's configuration.
    pub fn config(&self) -> &ModelConfig {
        on_model!(self, m => m.config())
    }

    /// What this rank owns.
    pub fn layout(&self) -> &ShardLayout {
        on_model!(self, m => m.layout())
    }

    /// The model as the step runner drives it.
    pub fn paged(&self) -> &dyn PagedModel {
        on_model!(self, m => m)
    }

    /// An empty KV pool of `num_blocks` blocks (on the GPU for a CUDA rank).
    pub fn new_pool(&self, num_blocks: usize) -> Result<KvPool, ClusterError> {
        Ok(on_model!(self, m => PagedModel::new_pool(m, num_blocks))?)
    }

    /// Bytes of the shard's matrices.
    pub fn weight_bytes(&self) -> u64 {
        match self {
            RankModel::Cpu(m) => shard_bytes(m),
            #[cfg(feature = "cuda")]
            RankModel::Cuda(m) => m.weight_bytes(),
        }
    }

    /// The shape reported by `Info` and `LoadModel`.
    pub fn shape(&self, max_context: usize) -> ModelShape {
        let vocab = on_model!(self, m => m.vocab_size());
        shape_of(self.config(), self.layout(), vocab, max_context)
    }
}

/// One rank of the tensor-parallel group, as a worker process holds it.
pub struct Rank {
    threads: usize,
    device: Device,
    ring_listener: Option<TcpListener>,
    ring_address: SocketAddr,
    collective: Option<RankCollective>,
    /// The CUDA backend, opened by an NCCL join (which needs its stream) or by `LoadModel`.
    #[cfg(feature = "cuda")]
    cuda: Option<bitnet_kernels::cuda::CudaBackend>,
    model: Option<RankModel>,
    max_model_len: usize,
    /// The KV pool and sequences, from `Profile` on.
    runner: Option<StepRunner>,
}

impl Rank {
    /// A CPU rank with its ring listener already bound (so its address can be reported by
    /// `Info`).
    pub fn new(threads: usize, ring_listener: TcpListener) -> Result<Self, ClusterError> {
        Self::on_device(threads, Device::Cpu, ring_listener)
    }

    /// A rank whose model will run on `device` (opened by `LoadModel` or an NCCL join; a build
    /// without the device fails here).
    pub fn on_device(
        threads: usize,
        device: Device,
        ring_listener: TcpListener,
    ) -> Result<Self, ClusterError> {
        device.check_built()?;
        let ring_address = ring_listener
            .local_addr()
            .map_err(|source| ClusterError::Io {
                what: "ring listener address".into(),
                source,
            })?;
        Ok(Self {
            threads,
            device,
            ring_listener: Some(ring_listener),
            ring_address,
            collective: None,
            #[cfg(feature = "cuda")]
            cuda: None,
            model: None,
            max_model_len: 0,
            runner: None,
        })
    }

    /// Compute threads.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Where the ring listener is bound.
    pub fn ring_address(&self) -> SocketAddr {
        self.ring_address
    }

    /// Where the model runs.
    pub fn device(&self) -> Device {
        self.device
    }

    /// The loaded model, if any.
    pub fn model(&self) -> Option<&RankModel> {
        self.model.as_ref()
    }

    /// A fresh NCCL unique id for the group this rank will lead (rank 0); fails on a build
    /// without the `nccl` feature or a machine without libnccl.
    pub fn nccl_unique_id(&self) -> Result<Vec<u8>, ClusterError> {
        #[cfg(feature = "nccl")]
        {
            Ok(bitnet_worker::collective::NcclCollective::unique_id()?)
        }
        #[cfg(not(feature = "nccl"))]
        {
            Err(ClusterError::State(NO_NCCL.into()))
        }
    }

    /// Joins the group: NCCL with the id of `req.nccl_unique_id` for `CollectiveKind::Nccl`,
    /// else a TCP ring over `peer_addresses` (this rank's own address must be its ring
    /// listener's, or a free one it can bind), or a single rank for world size 1.
    pub fn init_collective(&mut self, req: &InitCollectiveRequest) -> Result<(), ClusterError> {
        if self.model.is_some() || self.collective.is_some() {
            return Err(ClusterError::State(
                "the collective is already joined".into(),
            ));
        }
        let (rank, world) = (req.rank as usize, req.world_size as usize);
        if req.kind() == CollectiveKind::Nccl {
            self.collective = Some(self.join_nccl(req)?);
            return Ok(());
        }
        let host = |c: Box<dyn Collective>| Some(RankCollective::Host(c));
        if world <= 1 {
            if rank != 0 {
                return Err(ClusterError::State(format!(
                    "rank {rank} in a group of one"
                )));
            }
            self.collective = host(Box::new(SingleRank));
            return Ok(());
        }
        let addresses = req
            .peer_addresses
            .iter()
            .map(|a| {
                a.parse::<SocketAddr>()
                    .map_err(|e| ClusterError::State(format!("peer address {a:?}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if addresses.len() != world {
            return Err(ClusterError::State(format!(
                "{} peer addresses for a world of {world}",
                addresses.len()
            )));
        }
        let mut config = TcpRingConfig::new(rank, addresses.clone());
        if req.timeout_ms > 0 {
            config.connect_timeout = Duration::from_millis(req.timeout_ms as u64);
        }
        let ring = if addresses.get(rank) == Some(&self.ring_address) {
            let listener = self
                .ring_listener
                .take()
                .ok_or_else(|| ClusterError::State("the ring listener is gone".into()))?;
            TcpRing::with_listener(listener, config)?
        } else {
            TcpRing::connect(config)?
        };
        self.collective = host(Box::new(ring));
        Ok(())
    }

    /// An NCCL communicator on the CUDA backend's stream.
    #[cfg(feature = "nccl")]
    fn join_nccl(&mut self, req: &InitCollectiveRequest) -> Result<RankCollective, ClusterError> {
        if self.device != Device::Cuda {
            return Err(ClusterError::State(
                "an NCCL group needs a worker started with --device cuda".into(),
            ));
        }
        let timeout = match req.timeout_ms {
            0 => bitnet_worker::collective::DEFAULT_TIMEOUT,
            ms => Duration::from_millis(ms as u64),
        };
        let stream = self.cuda_backend()?.stream().clone();
        let nccl = bitnet_worker::collective::NcclCollective::join(
            stream,
            req.rank as usize,
            req.world_size as usize,
            &req.nccl_unique_id,
            timeout,
        )?;
        Ok(RankCollective::Device(Box::new(nccl)))
    }

    /// Without the `nccl` feature an NCCL group is refused.
    #[cfg(not(feature = "nccl"))]
    fn join_nccl(&mut self, _req: &InitCollectiveRequest) -> Result<RankCollective, ClusterError> {
        Err(ClusterError::State(NO_NCCL.into()))
    }

    /// The CUDA backend, opened on first use (visible device 0).
    #[cfg(feature = "cuda")]
    fn cuda_backend(&mut self) -> Result<&bitnet_kernels::cuda::CudaBackend, ClusterError> {
        let backend = match self.cuda.take() {
            Some(b) => b,
            None => crate::device::cuda_backend()?,
        };
        Ok(self.cuda.insert(backend))
    }

    /// Loads the checkpoint (or the demo model for an empty `model_dir`) and keeps this rank's
    /// shard. Joins a group of one first when `InitCollective` was not called and `tp_size` is 1.
    pub fn load_model(
        &mut self,
        req: &LoadModelRequest,
    ) -> Result<LoadModelResponse, ClusterError> {
        if self.model.is_some() {
            return Err(ClusterError::State("a model is already loaded".into()));
        }
        let started = Instant::now();
        let (rank, world) = (req.tp_rank as usize, req.tp_size.max(1) as usize);
        let mut shard = load_shard(&req.model_dir, rank, world)?;
        if req.lm_head_int8 {
            // Per-row scales: the int8 copy of a replicated head is the same on every rank and
            // the same as the whole model's (`generate --lm-head int8`).
            shard.lm_head = Some(shard.lm_head().to_int8());
        }
        if self.collective.is_none() && world == 1 {
            self.collective = Some(RankCollective::Host(Box::new(SingleRank)));
        }
        let collective = self.collective.take().ok_or_else(|| {
            ClusterError::State("InitCollective must come before LoadModel".into())
        })?;
        let model = match (self.device, collective) {
            (Device::Cpu, RankCollective::Host(collective)) => {
                let backend = crate::device::cpu_backend(self.threads)?;
                RankModel::Cpu(ShardedModel::new(shard, backend, collective)?)
            }
            #[cfg(feature = "cuda")]
            (Device::Cpu, RankCollective::Device(_)) => {
                return Err(ClusterError::State(
                    "a device collective needs a worker started with --device cuda".into(),
                ))
            }
            #[cfg(feature = "cuda")]
            (Device::Cuda, collective) => {
                let backend = match self.cuda.take() {
                    Some(b) => b,
                    None => crate::device::cuda_backend()?,
                };
                let collective = match collective {
                    RankCollective::Device(c) => c,
                    RankCollective::Host(inner) => Box::new(
                        bitnet_worker::collective::HostStaged::new(inner, backend.stream().clone()),
                    ),
                };
                let model = bitnet_worker::cuda::CudaModel::from_shard(shard, backend, collective)?;
                RankModel::Cuda(model)
            }
            #[cfg(not(feature = "cuda"))]
            (Device::Cuda, _) => return Err(crate::device::DeviceError::NotBuilt.into()),
        };
        let max_ctx = model.config().max_position_embeddings;
        self.max_model_len = match req.max_model_len as usize {
            0 => max_ctx,
            n => n.min(max_ctx),
        }
        .max(2);
        let weight_bytes = model.weight_bytes();
        let shape = model.shape(self.max_model_len);
        self.model = Some(model);
        Ok(LoadModelResponse {
            weight_bytes,
            load_seconds: started.elapsed().as_secs_f64(),
            shape: Some(shape),
        })
    }

    /// Allocates the KV pool: as many blocks of `block_size` tokens as fit `budget` bytes (0:
    /// [`DEFAULT_KV_BUDGET`]), at most `max_blocks` (0: no cap); returns how many it holds.
    /// Sequences held from an earlier `Profile` are dropped.
    pub fn profile(
        &mut self,
        block_size: u32,
        budget: u64,
        max_blocks: u64,
    ) -> Result<u64, ClusterError> {
        if block_size != BLOCK_SIZE {
            return Err(ClusterError::State(format!(
                "block size {block_size}: the workers' pools use blocks of {BLOCK_SIZE}"
            )));
        }
        let model = self.loaded()?;
        let l = model.layout();
        let per_block = KvPool::bytes_per_block(
            model.config().num_layers,
            l.local_kv_heads() * l.head_dim,
            BLOCK_SIZE as usize,
        ) as u64;
        let budget = if budget == 0 {
            DEFAULT_KV_BUDGET
        } else {
            budget
        };
        let mut blocks = budget / per_block.max(1);
        if max_blocks > 0 {
            blocks = blocks.min(max_blocks);
        }
        let pool = model.new_pool(blocks as usize)?;
        self.runner = Some(StepRunner::new(pool, self.max_model_len));
        Ok(blocks)
    }

    fn loaded(&self) -> Result<&RankModel, ClusterError> {
        self.model
            .as_ref()
            .ok_or_else(|| ClusterError::State("no model is loaded".into()))
    }

    /// Runs one step on the pool (rank 0's tokens win). Every rank of the group must run the
    /// same step.
    pub fn step(
        &mut self,
        req: &StepRequest,
    ) -> Result<(Vec<SampledToken>, StepTimings), ClusterError> {
        let model = self
            .model
            .as_ref()
            .ok_or_else(|| ClusterError::State("no model is loaded".into()))?;
        let runner = self
            .runner
            .as_mut()
            .ok_or_else(|| ClusterError::State("Profile must come before Step".into()))?;
        let reply = runner.step(model.paged(), req)?;
        Ok((reply.tokens, reply.timings))
    }
}

/// This rank's shard: read from its own file when the checkpoint is pre-sharded (the rank
/// count must match), else cut from the whole model.
fn load_shard(model_dir: &str, rank: usize, world: usize) -> Result<ModelShard, ClusterError> {
    let plan = ShardPlan::new(rank, world).map_err(bitnet_worker::WorkerError::from)?;
    if !model_dir.is_empty() {
        let dir = std::path::Path::new(model_dir);
        if bitnet_worker::shard::presharded_world(dir)?.is_some() {
            return load_presharded(dir, plan).map_err(|e| match e {
                PreshardedError::Checkpoint(c) => ClusterError::Checkpoint(c),
                PreshardedError::Shard(s) => bitnet_worker::WorkerError::from(s).into(),
            });
        }
    }
    let weights = load_weights(model_dir)?;
    Ok(plan
        .shard(&weights)
        .map_err(bitnet_worker::WorkerError::from)?)
}

fn load_weights(model_dir: &str) -> Result<ModelWeights, ClusterError> {
    if model_dir.is_empty() {
        let tokenizer = crate::demo::tokenizer().map_err(|e| ClusterError::Load(e.to_string()))?;
        return Ok(crate::demo::weights(&tokenizer));
    }
    Ok(bitnet_checkpoints::load_model(std::path::Path::new(
        model_dir,
    ))?)
}

/// Bytes of a shard's matrices (embedding, projections, LM head; norms and scales aside).
fn shard_bytes<B: Backend>(model: &ShardedModel<B>) -> u64 {
    let s = model.shard();
    let row = |p: &RowParallel| match p {
        RowParallel::Ternary { weight, .. } => weight.memory_bytes(),
        RowParallel::Dense(m) => m.memory_bytes(),
        RowParallel::Replicated(p) => p.memory_bytes(),
    };
    let layers: usize = s
        .layers
        .iter()
        .map(|l| {
            [&l.q, &l.k, &l.v, &l.gate, &l.up]
                .iter()
                .map(|p| p.memory_bytes())
                .sum::<usize>()
                + row(&l.o)
                + row(&l.down)
        })
        .sum();
    let head = s.lm_head.as_ref().map_or(0, |h| h.memory_bytes());
    (s.embedding.memory_bytes() + layers + head) as u64
}

/// The shape reported by `Info` and `LoadModel`.
pub fn shape_of(c: &ModelConfig, l: &ShardLayout, vocab: usize, max_context: usize) -> ModelShape {
    ModelShape {
        vocab_size: vocab as u32,
        hidden_size: c.hidden_size as u32,
        num_layers: c.num_layers as u32,
        num_heads: c.num_heads as u32,
        num_kv_heads: c.num_kv_heads as u32,
        head_dim: c.head_dim as u32,
        intermediate_size: c.intermediate_size as u32,
        max_context: max_context as u32,
        local_num_heads: l.local_heads() as u32,
        local_num_kv_heads: l.local_kv_heads() as u32,
        local_intermediate_size: l.ffn.len() as u32,
    }
}
