//! [`CudaModel`]: one rank's model resident on one GPU — weights uploaded once, a paged KV pool
//! on the device ([`DeviceKv`] inside a [`KvPool::on_device`]), activations and logits kept on
//! the device between ops — driven by the [`StepRunner`](crate::StepRunner) through
//! [`PagedModel`] like the host models. Only token ids, positions and block tables go up; only
//! sampled ids (and requested logprobs, or the logits when a caller asks for them through
//! [`PagedModel::forward_paged`]) come down.
//!
//! The graph is [`crate::ShardedModel`]'s (which at world 1 is [`crate::Model`]'s): a whole model
//! runs as the shard of a group of one ([`ModelShard::whole`]). Tensor parallelism reduces
//! device buffers through a [`DeviceCollective`]: `NcclCollective` on the GPUs, or
//! `HostStaged` (device → host → any collective → device) where NCCL is absent or two ranks
//! share a GPU.

use super::forward::Pass;
use super::kv::DeviceKv;
use super::plan::BatchPlan;
use super::weights::{check_supported, DeviceLayer, DeviceNorm, Uploader};
use crate::collective::{DeviceCollective, HostStaged};
use crate::error::WorkerError;
use crate::kv_pool::{KvPool, BLOCK_SIZE};
use crate::logprobs::TokenLogprobs;
use crate::model::{ForwardOptions, ForwardOutput, PagedChunk};
use crate::shard::{ModelShard, ShardError, ShardLayout, ShardPlan, Span};
use crate::step_runner::{PagedModel, SampleRequest, Sampled, StepSamples};
use crate::SingleRank;
use bitnet_checkpoints::{ModelConfig, ModelWeights};
use bitnet_kernels::cuda::{CudaBackend, CudaError, DeviceDenseMatrix, SampleRow};
use cudarc::driver::CudaSlice;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Distinguishes the pools of different models (a pool only runs on the model that made it).
static NEXT_MODEL_ID: AtomicU64 = AtomicU64::new(1);

/// How every rank's columns of one gathered activation line up (tensor parallelism): the ranks'
/// widths in rank order, as `ShardedModel::gather_columns` concatenates them.
pub(crate) struct Gather {
    /// `starts[p] .. starts[p + 1]`: rank p's columns of the whole row.
    pub starts: Vec<usize>,
    /// The same on the device (u32).
    pub starts_dev: CudaSlice<u32>,
    /// The widest rank's width (the padded stride of the all-gather).
    pub max_width: usize,
}

impl Gather {
    /// Width of the whole (gathered) row.
    pub fn width(&self) -> usize {
        self.starts.last().copied().unwrap_or(0)
    }

    /// This rank's columns of the whole row.
    pub fn local(&self, rank: usize) -> Span {
        Span::new(self.starts[rank], self.starts[rank + 1])
    }
}

/// The gathers of the graph: query features (attention output), key/value features (OneBit's
/// k and v), intermediate features (MLP).
pub(crate) struct Gathers {
    pub q: Gather,
    pub kv: Gather,
    pub ffn: Gather,
}

/// One rank's model on one GPU (see the module docs).
pub struct CudaModel {
    pub(crate) backend: CudaBackend,
    pub(crate) id: u64,
    pub(crate) config: ModelConfig,
    pub(crate) layout: ShardLayout,
    pub(crate) gathers: Gathers,
    pub(crate) embedding: DeviceDenseMatrix,
    /// `None` when tied to the embedding.
    pub(crate) head: Option<DeviceDenseMatrix>,
    pub(crate) layers: Vec<DeviceLayer>,
    pub(crate) final_norm: DeviceNorm,
    /// RoPE `theta^(-2i / head_dim)`, as the reference computes it.
    pub(crate) inv_freq: CudaSlice<f32>,
    pub(crate) collective: Box<dyn DeviceCollective>,
    weight_bytes: u64,
}

impl CudaModel {
    /// A whole model on `backend`'s GPU (a group of one). Fails, naming the family, for a model
    /// the device kernels cannot run, and on any device error (out of memory included).
    pub fn new(weights: ModelWeights, backend: CudaBackend) -> Result<Self, WorkerError> {
        let shard = ModelShard::whole(weights)?;
        let collective = HostStaged::new(Box::new(SingleRank), backend.stream().clone());
        Self::from_shard(shard, backend, Box::new(collective))
    }

    /// One rank's shard on `backend`'s GPU, reducing over `collective` (whose rank and size
    /// must be the shard's; NCCL must run on `backend`'s stream).
    pub fn from_shard(
        shard: ModelShard,
        backend: CudaBackend,
        collective: Box<dyn DeviceCollective>,
    ) -> Result<Self, WorkerError> {
        let l = shard.layout;
        if l.rank != collective.rank() || l.world != collective.world_size() {
            return Err(ShardError::GroupMismatch {
                expected: l.rank,
                expected_world: l.world,
                got: collective.rank(),
                got_world: collective.world_size(),
            }
            .into());
        }
        check_supported(&shard.config, &l)?;
        let gathers = gathers(&shard.config, l.world, &backend)?;
        let mut up = Uploader {
            backend: Some(&backend),
            bytes: 0,
        };
        let embedding = up.dense(&shard.embedding)?;
        let head = shard.lm_head.as_ref().map(|h| up.dense(h)).transpose()?;
        let layers = shard
            .layers
            .iter()
            .map(|layer| up.layer(layer))
            .collect::<Result<Vec<_>, _>>()?;
        let final_norm = up.norm(&shard.final_norm)?;
        let weight_bytes = up.bytes;
        let c = &shard.config;
        let inv_freq = backend.upload(&bitnet_kernels::reference::rope_inv_freq(
            c.head_dim,
            c.rope_theta,
        ))?;
        backend.synchronize()?;
        Ok(Self {
            backend,
            id: NEXT_MODEL_ID.fetch_add(1, Ordering::Relaxed),
            config: shard.config,
            layout: l,
            gathers,
            embedding,
            head,
            layers,
            final_norm,
            inv_freq,
            collective,
            weight_bytes,
        })
    }

    /// The whole model's configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// What this rank owns.
    pub fn layout(&self) -> &ShardLayout {
        &self.layout
    }

    /// The GPU backend (device name, stream, kernels).
    pub fn backend(&self) -> &CudaBackend {
        &self.backend
    }

    /// The group this rank reduces over.
    pub fn collective(&self) -> &dyn DeviceCollective {
        self.collective.as_ref()
    }

    /// Rows of the LM head.
    pub fn vocab_size(&self) -> usize {
        self.head.as_ref().unwrap_or(&self.embedding).rows
    }

    /// Bytes of device memory the weights take.
    pub fn weight_bytes(&self) -> u64 {
        self.weight_bytes
    }

    /// Floats per KV row of this rank (`local kv heads · head_dim`).
    pub fn kv_dim(&self) -> usize {
        self.layout.local_kv_heads() * self.layout.head_dim
    }

    /// Runs `batch` over the device pool of `pool`; the logits of the rows of `wanted` (given
    /// by the plan) stay on the device.
    fn pass(
        &self,
        pool: &mut KvPool,
        batch: &[PagedChunk<'_>],
        wanted: impl FnOnce(&BatchPlan) -> Result<Vec<u32>, WorkerError>,
        trace: bool,
    ) -> Result<(BatchPlan, Pass), WorkerError> {
        let plan = BatchPlan::new(batch, pool, self.embedding.rows)?;
        let wanted = wanted(&plan)?;
        let (id, layers, dim) = (self.id, self.layers.len(), self.kv_dim());
        let kv = pool
            .device_storage_mut::<DeviceKv>()
            .filter(|kv| kv.owner == id && kv.keys.len() == layers && kv.kv_dim == dim)
            .ok_or_else(|| {
                WorkerError::KvLayout(
                    "the KV pool was not made by this CUDA model (use its new_pool)".into(),
                )
            })?;
        let pass = self.forward(kv, &plan, &wanted, trace)?;
        Ok((plan, pass))
    }
}

/// Every rank's widths of the gathered activations.
fn gathers(config: &ModelConfig, world: usize, b: &CudaBackend) -> Result<Gathers, WorkerError> {
    let layouts = (0..world)
        .map(|r| ShardPlan::new(r, world)?.layout(config))
        .collect::<Result<Vec<_>, ShardError>>()?;
    let make = |width: &dyn Fn(&ShardLayout) -> usize| -> Result<Gather, WorkerError> {
        let mut starts = vec![0usize];
        for l in &layouts {
            starts.push(starts[starts.len() - 1] + width(l));
        }
        let max_width = layouts.iter().map(width).max().unwrap_or(0);
        let host: Vec<u32> = starts.iter().map(|&s| s as u32).collect();
        Ok(Gather {
            starts,
            starts_dev: b.upload(&host)?,
            max_width,
        })
    };
    Ok(Gathers {
        q: make(&|l| l.q_features().len())?,
        kv: make(&|l| l.kv_features().len())?,
        ffn: make(&|l| l.ffn.len())?,
    })
}

impl From<CudaError> for WorkerError {
    fn from(e: CudaError) -> Self {
        WorkerError::Kernel(e.into_kernel("cuda"))
    }
}

impl PagedModel for CudaModel {
    /// Downloads the logits of every row (`all_logits`) or of each sequence's last row.
    fn forward_paged(
        &self,
        pool: &mut KvPool,
        batch: &[PagedChunk<'_>],
        options: ForwardOptions,
    ) -> Result<Vec<ForwardOutput>, WorkerError> {
        let all = options.all_logits;
        let (plan, pass) = self.pass(
            pool,
            batch,
            |p| Ok(p.wanted_rows(all)),
            options.trace_first_layer,
        )?;
        let vocab = self.vocab_size();
        let logits = match &pass.logits {
            Some(l) => self.backend.ops().download(l)?,
            None => Vec::new(),
        };
        let mut outputs = Vec::with_capacity(plan.seqs.len());
        let mut offset = 0;
        for &(start, end) in &plan.seqs {
            let rows = if all { end - start } else { 1 };
            let trace = pass.trace.as_ref().map(|t| {
                let cols = t.q.len() / plan.len().max(1);
                crate::model::QuantTrace {
                    scales: t.scales[start..end].to_vec(),
                    q: t.q[start * cols..end * cols].to_vec(),
                }
            });
            outputs.push(ForwardOutput {
                logits: logits[offset * vocab..(offset + rows) * vocab].to_vec(),
                first_layer_q: trace,
            });
            offset += rows;
        }
        Ok(outputs)
    }

    fn vocab(&self) -> usize {
        self.vocab_size()
    }

    /// A pool whose blocks live on this GPU (zeroed device memory, `2 · layers` buffers).
    fn new_pool(&self, num_blocks: usize) -> Result<KvPool, WorkerError> {
        let dim = self.kv_dim();
        let len = KvPool::layer_len(dim, BLOCK_SIZE, num_blocks)?;
        if num_blocks * BLOCK_SIZE > u32::MAX as usize {
            return Err(WorkerError::KvLayout(format!(
                "{num_blocks} blocks: rows must be addressable as u32"
            )));
        }
        let layers = self.layers.len();
        let mut keys = Vec::with_capacity(layers);
        let mut values = Vec::with_capacity(layers);
        for _ in 0..layers {
            keys.push(self.backend.zeros::<f32>(len.max(1))?);
            values.push(self.backend.zeros::<f32>(len.max(1))?);
        }
        self.backend.synchronize()?;
        let storage = DeviceKv {
            owner: self.id,
            kv_dim: dim,
            keys,
            values,
        };
        KvPool::on_device(layers, dim, BLOCK_SIZE, num_blocks, Box::new(storage))
    }

    /// Runs the batch, then samples on the device: only the ids (and logprobs asked for) come
    /// back. Each request's uniform draw comes from its own ChaCha8 stream (the draw the CPU
    /// sampler makes), so seeded streams are the CPU's.
    fn forward_sample(
        &self,
        pool: &mut KvPool,
        batch: &[PagedChunk<'_>],
        picks: &mut [SampleRequest<'_>],
    ) -> Result<StepSamples, WorkerError> {
        let (_, pass) = self.pass(
            pool,
            batch,
            |plan| picks.iter().map(|p| plan.last_row(p.index)).collect(),
            false,
        )?;
        let started = Instant::now();
        let Some(logits) = pass.logits else {
            return Ok(StepSamples::default());
        };
        let rows: Vec<SampleRow> = picks
            .iter_mut()
            .map(|p| {
                let params = *p.sampler.params();
                SampleRow {
                    temperature: params.temperature,
                    top_k: params.top_k.min(u32::MAX as usize) as u32,
                    top_p: params.top_p,
                    r: p.sampler.next_uniform().unwrap_or(0.0),
                    logprobs: p.logprobs.map(|n| n.min(u32::MAX as usize) as u32),
                }
            })
            .collect();
        let picked = self
            .backend
            .ops()
            .sample_rows(&logits, self.vocab_size(), &rows)?;
        let sampled = picked
            .into_iter()
            .zip(&rows)
            .map(|(s, row)| Sampled {
                token: s.token,
                logprobs: row.logprobs.map(|_| TokenLogprobs {
                    token_id: s.token,
                    logprob: s.logprob.unwrap_or(f32::NAN),
                    top: s.top,
                }),
            })
            .collect();
        Ok(StepSamples {
            sampled,
            sample_ms: started.elapsed().as_secs_f64() * 1e3,
        })
    }

    fn agree(&self, tokens: &mut [u32]) -> Result<(), WorkerError> {
        Ok(self.collective.broadcast_u32(tokens, 0)?)
    }
}
