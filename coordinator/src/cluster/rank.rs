//! [`Rank`]: the compute state of one worker process — its ring listener, its collective, its
//! [`ShardedModel`] and the sequences it holds. Every method is synchronous and CPU-bound: the
//! gRPC service ([`super::service`]) calls them on tokio's blocking pool, never on a runtime
//! worker thread.
//!
//! [`Rank::step`] follows the worker protocol of `SchedulerOutput` exactly like the in-process
//! executor (`crate::engine::executor`): new sequences arrive with their prompt, running ones
//! as deltas, a resumed (preempted) sequence restarts from prompt + output keeping its sampler,
//! and a token is sampled only when a sequence's computed tokens reach the end of what it knows.
//! Every rank samples (so seeded random streams stay in step) and rank 0's tokens are then
//! broadcast over the collective, so all ranks feed the same tokens to the next step.

use super::error::ClusterError;
use super::wire;
use bitnet_checkpoints::ModelWeights;
use bitnet_kernels::CpuBackend;
use bitnet_proto::worker::{
    InitCollectiveRequest, LoadModelRequest, LoadModelResponse, ModelShape, SampledToken,
    StepRequest, StepTimings,
};
use bitnet_worker::shard::{load_presharded, ModelShard, PreshardedError, RowParallel};
use bitnet_worker::{
    Collective, ForwardOptions, KvCache, Sampler, SequenceChunk, ShardPlan, ShardedModel,
    SingleRank, TcpRing, TcpRingConfig,
};
use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

/// KV block size the workers account in (tokens).
pub const BLOCK_SIZE: u32 = 16;
/// KV memory a worker offers when `Profile` gives no budget.
pub const DEFAULT_KV_BUDGET: u64 = 4 << 30;

struct SeqState {
    tokens: Vec<u32>,
    computed: usize,
    cache: KvCache,
    sampler: Sampler,
}

/// One rank of the tensor-parallel group, as a worker process holds it.
pub struct Rank {
    threads: usize,
    ring_listener: Option<TcpListener>,
    ring_address: SocketAddr,
    collective: Option<Box<dyn Collective>>,
    model: Option<ShardedModel<CpuBackend>>,
    max_model_len: usize,
    seqs: HashMap<u64, SeqState>,
}

impl Rank {
    /// A rank with its ring listener already bound (so its address can be reported by `Info`).
    pub fn new(threads: usize, ring_listener: TcpListener) -> Result<Self, ClusterError> {
        let ring_address = ring_listener
            .local_addr()
            .map_err(|source| ClusterError::Io {
                what: "ring listener address".into(),
                source,
            })?;
        Ok(Self {
            threads,
            ring_listener: Some(ring_listener),
            ring_address,
            collective: None,
            model: None,
            max_model_len: 0,
            seqs: HashMap::new(),
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

    /// The loaded model, if any.
    pub fn model(&self) -> Option<&ShardedModel<CpuBackend>> {
        self.model.as_ref()
    }

    /// Joins the group: a TCP ring over `peer_addresses` (this rank's own address must be its
    /// ring listener's, or a free one it can bind), or a single rank for world size 1.
    pub fn init_collective(&mut self, req: &InitCollectiveRequest) -> Result<(), ClusterError> {
        if self.model.is_some() || self.collective.is_some() {
            return Err(ClusterError::State(
                "the collective is already joined".into(),
            ));
        }
        let (rank, world) = (req.rank as usize, req.world_size as usize);
        if world <= 1 {
            if rank != 0 {
                return Err(ClusterError::State(format!(
                    "rank {rank} in a group of one"
                )));
            }
            self.collective = Some(Box::new(SingleRank));
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
        self.collective = Some(Box::new(ring));
        Ok(())
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
        let shard = load_shard(&req.model_dir, rank, world)?;
        if self.collective.is_none() && world == 1 {
            self.collective = Some(Box::new(SingleRank));
        }
        let collective = self.collective.take().ok_or_else(|| {
            ClusterError::State("InitCollective must come before LoadModel".into())
        })?;
        let backend = CpuBackend::from_env(self.threads)
            .map_err(|e| ClusterError::Load(format!("CPU backend: {e}")))?;
        let model = ShardedModel::new(shard, backend, collective)?;
        let max_ctx = model.config().max_position_embeddings;
        self.max_model_len = match req.max_model_len as usize {
            0 => max_ctx,
            n => n.min(max_ctx),
        }
        .max(2);
        let weight_bytes = shard_bytes(&model);
        let shape = shape_of(&model, self.max_model_len);
        self.model = Some(model);
        Ok(LoadModelResponse {
            weight_bytes,
            load_seconds: started.elapsed().as_secs_f64(),
            shape: Some(shape),
        })
    }

    /// KV blocks of `block_size` tokens that fit `budget` bytes (0: [`DEFAULT_KV_BUDGET`]).
    pub fn profile(&self, block_size: u32, budget: u64) -> Result<u64, ClusterError> {
        let model = self.loaded()?;
        let l = model.layout();
        let per_token = 2 * model.config().num_layers * l.local_kv_heads() * l.head_dim * 4;
        let per_block = (per_token as u64 * block_size.max(1) as u64).max(1);
        let budget = if budget == 0 {
            DEFAULT_KV_BUDGET
        } else {
            budget
        };
        Ok(budget / per_block)
    }

    fn loaded(&self) -> Result<&ShardedModel<CpuBackend>, ClusterError> {
        self.model
            .as_ref()
            .ok_or_else(|| ClusterError::State("no model is loaded".into()))
    }

    fn protocol(step: u64, seq: u64, what: impl Into<String>) -> ClusterError {
        ClusterError::Protocol {
            step,
            seq,
            what: what.into(),
        }
    }

    /// Runs one step: applies the deltas, one batched forward pass, samples (rank 0's tokens
    /// win). Every rank of the group must run the same step.
    pub fn step(
        &mut self,
        req: &StepRequest,
    ) -> Result<(Vec<SampledToken>, StepTimings), ClusterError> {
        let step = req.step_id;
        let model = self
            .model
            .as_ref()
            .ok_or_else(|| ClusterError::State("no model is loaded".into()))?;
        for seq in &req.finished_seq_ids {
            self.seqs.remove(seq);
        }
        let new_cache = || model.new_cache(self.max_model_len);
        let mut plan: Vec<(u64, usize)> = Vec::new();
        for r in &req.new_requests {
            let params = wire::sampling_params(r.sampling.as_ref());
            let sampler = Sampler::new(params)?;
            if r.prompt_ids.len() > self.max_model_len {
                return Err(Self::protocol(
                    step,
                    r.seq_id,
                    "prompt longer than max_model_len",
                ));
            }
            self.seqs.insert(
                r.seq_id,
                SeqState {
                    tokens: r.prompt_ids.clone(),
                    computed: 0,
                    cache: new_cache(),
                    sampler,
                },
            );
            plan.push((r.seq_id, r.num_computed as usize + r.num_scheduled as usize));
        }
        for r in &req.running {
            if r.resumed {
                tracing::debug!(
                    step,
                    seq = r.seq_id,
                    "resumed after a preemption: recompute"
                );
                let previous = self.seqs.remove(&r.seq_id).ok_or_else(|| {
                    Self::protocol(step, r.seq_id, "resumed but never sent as new")
                })?;
                self.seqs.insert(
                    r.seq_id,
                    SeqState {
                        tokens: r.resumed_token_ids.clone(),
                        computed: 0,
                        cache: new_cache(),
                        sampler: previous.sampler,
                    },
                );
            }
            let computed = self
                .seqs
                .get(&r.seq_id)
                .ok_or_else(|| Self::protocol(step, r.seq_id, "running but never sent as new"))?
                .computed;
            plan.push((r.seq_id, computed + r.num_scheduled as usize));
        }
        let timings = StepTimings::default();
        if plan.is_empty() {
            return Ok((Vec::new(), timings));
        }
        for &(seq, end) in &plan {
            let s = &self.seqs[&seq];
            if end <= s.computed || end > s.tokens.len() {
                return Err(Self::protocol(
                    step,
                    seq,
                    format!(
                        "asked to compute up to {end} with {} computed of {} known tokens",
                        s.computed,
                        s.tokens.len()
                    ),
                ));
            }
        }
        // One batched forward pass, in plan order (identical on every rank).
        let ends: HashMap<u64, usize> = plan.iter().copied().collect();
        let mut states: Vec<(u64, &mut SeqState)> = self
            .seqs
            .iter_mut()
            .filter(|(seq, _)| ends.contains_key(seq))
            .map(|(&seq, s)| (seq, s))
            .collect();
        states.sort_by_key(|(seq, _)| *seq);
        let started = Instant::now();
        let mut chunks: Vec<SequenceChunk> = states
            .iter_mut()
            .map(|(seq, s)| SequenceChunk {
                tokens: &s.tokens[s.computed..ends[seq]],
                cache: &mut s.cache,
            })
            .collect();
        let outputs = model.forward_batch(&mut chunks, ForwardOptions::default())?;
        drop(chunks);
        let forward_ms = started.elapsed().as_secs_f64() * 1e3;
        let started = Instant::now();
        let vocab = model.vocab_size();
        let mut sampled: Vec<(u64, usize)> = Vec::new();
        let mut ids: Vec<u32> = Vec::new();
        for (i, ((seq, state), output)) in states.iter_mut().zip(&outputs).enumerate() {
            state.computed = ends[seq];
            if state.computed == state.tokens.len() {
                let last = &output.logits[output.logits.len() - vocab..];
                ids.push(state.sampler.sample(last));
                sampled.push((*seq, i));
            }
        }
        let sample_ms = started.elapsed().as_secs_f64() * 1e3;
        let started = Instant::now();
        model.collective().broadcast_u32(&mut ids, 0)?;
        let collective_ms = started.elapsed().as_secs_f64() * 1e3;
        let mut tokens = Vec::with_capacity(ids.len());
        for (&(seq, i), &token_id) in sampled.iter().zip(&ids) {
            states[i].1.tokens.push(token_id);
            tokens.push(SampledToken {
                seq_id: seq,
                token_id,
                ..Default::default()
            });
        }
        Ok((
            tokens,
            StepTimings {
                forward_ms,
                collective_ms,
                sample_ms,
            },
        ))
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
fn shard_bytes(model: &ShardedModel<CpuBackend>) -> u64 {
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
pub fn shape_of(model: &ShardedModel<CpuBackend>, max_context: usize) -> ModelShape {
    let c = model.config();
    let l = model.layout();
    ModelShape {
        vocab_size: model.vocab_size() as u32,
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
