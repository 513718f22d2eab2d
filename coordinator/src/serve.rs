//! Serving: [`build`] loads the model (or the built-in demo) and starts the engine thread over an
//! in-process executor; [`assemble`] does the same over any `Executor` (the launcher in
//! `crate::cluster::launcher` passes the gRPC executor of its worker processes); [`serve_on`]
//! serves `bitnet.v1.Serving` with `grpc.health.v1` and server reflection until the shutdown
//! signal.

use crate::cluster::rank::DEFAULT_KV_BUDGET;
use crate::demo;
use crate::device::Device;
use crate::engine::{self, EngineHandle, Executor, InProcessExecutor};
use crate::error::CoordinatorError;
use crate::scheduler::{Scheduler, SchedulerConfig};
use crate::server::ServingService;
use crate::tokenizer::TextTokenizer;
use crate::validation::ValidationLimits;
use bitnet_checkpoints::ModelConfig;
use bitnet_proto::serving::serving_server::ServingServer;
use bitnet_proto::serving::ModelInfo;
use bitnet_worker::{KvPool, Model, PagedModel, BLOCK_SIZE};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// What `up` serves and how.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Model directory; `None` serves the demo model (random weights).
    pub model_dir: Option<PathBuf>,
    pub max_num_seqs: usize,
    pub max_batched_tokens: usize,
    /// Context length served (at most the model's `max_position_embeddings`).
    pub max_model_len: usize,
    /// KV blocks of 16 tokens; default: enough for every sequence at full length.
    pub num_kv_blocks: Option<usize>,
    /// Requests admitted (running + waiting) before `RESOURCE_EXHAUSTED`.
    pub max_admitted: usize,
    /// Where the model runs (in process, or in every worker with `--tp`).
    pub device: Device,
    /// CPU compute threads (per worker with `--tp`).
    pub threads: usize,
    /// Serve with an int8 copy of the LM head (per-row scales, W8A8): a numerics change that
    /// reads half the bytes of an f16 head per token (`up --lm-head int8`).
    pub lm_head_int8: bool,
}

/// A built service and its engine.
pub struct Served {
    pub service: ServingService,
    pub engine: EngineHandle,
    pub engine_thread: std::thread::JoinHandle<()>,
    pub description: String,
}

/// Loads the model and starts the engine over an in-process executor (one rank).
pub fn build(opts: &ServeOptions) -> Result<Served, CoordinatorError> {
    let (weights, tokenizer, name) = match &opts.model_dir {
        Some(dir) => (
            bitnet_checkpoints::load_model(dir)?,
            TextTokenizer::from_dir(dir)?,
            dir.display().to_string(),
        ),
        None => {
            let tok = demo::tokenizer()?;
            (
                demo::weights(&tok),
                Some(tok),
                "built-in demo model (RANDOM weights)".into(),
            )
        }
    };
    build_from_weights(opts, weights, tokenizer, name)
}

/// Starts the engine over an in-process executor (one rank) for weights already in memory
/// (`build` after loading; benchmarks serve random preset weights this way).
pub fn build_from_weights(
    opts: &ServeOptions,
    weights: bitnet_checkpoints::ModelWeights,
    tokenizer: Option<TextTokenizer>,
    name: String,
) -> Result<Served, CoordinatorError> {
    let mut weights = weights;
    if opts.lm_head_int8 {
        weights.lm_head = Some(weights.lm_head().to_int8());
    }
    let config = weights.config.clone();
    let max_model_len = served_len(opts, &config);
    let vocab = weights.embedding.rows();
    let c = &weights.config;
    let per_block = KvPool::bytes_per_block(c.num_layers, c.num_kv_heads * c.head_dim, BLOCK_SIZE);
    let budget_blocks = (DEFAULT_KV_BUDGET as usize / per_block.max(1)).max(1);
    let num_blocks = wanted_kv_blocks(opts, max_model_len).min(budget_blocks);
    let executor = match opts.device {
        Device::Cpu => {
            let backend = crate::device::cpu_backend(opts.threads)?;
            in_process(Model::new(weights, backend), max_model_len, num_blocks)?
        }
        // The device-resident model: weights, KV pool, activations and logits on the GPU.
        #[cfg(feature = "cuda")]
        Device::Cuda => {
            let model = crate::device::cuda_model(weights)?;
            in_process(model, max_model_len, num_blocks)?
        }
        #[cfg(not(feature = "cuda"))]
        Device::Cuda => return Err(crate::device::DeviceError::NotBuilt.into()),
    };
    let frontend = Frontend {
        config,
        tokenizer,
        name,
    };
    assemble(opts, frontend, vocab, executor, Some(num_blocks), 1)
}

/// An in-process executor over `model`.
fn in_process<M: PagedModel + Send + 'static>(
    model: M,
    max_model_len: usize,
    num_blocks: usize,
) -> Result<Box<dyn Executor>, CoordinatorError> {
    let executor = InProcessExecutor::new(model, max_model_len, num_blocks)
        .map_err(|e| CoordinatorError::InvalidRequest(format!("KV pool: {e}")))?;
    Ok(Box::new(executor))
}

/// KV blocks the scheduler will use at most: `--num-kv-blocks`, or enough for every sequence
/// at full length; the workers allocate no more than this (and less when their memory budget
/// says so).
pub fn wanted_kv_blocks(opts: &ServeOptions, max_model_len: usize) -> usize {
    opts.num_kv_blocks
        .unwrap_or(opts.max_num_seqs * max_model_len.div_ceil(BLOCK_SIZE))
        .max(1)
}

/// What the coordinator needs of a model besides its weights.
pub struct Frontend {
    pub config: ModelConfig,
    pub tokenizer: Option<TextTokenizer>,
    /// How the model is named in logs and `GetModelInfo`.
    pub name: String,
}

impl Frontend {
    /// The configuration and tokenizer of `model_dir` (the demo model's for `None`), without
    /// loading the weights (the demo's are built: they are tiny).
    pub fn load(model_dir: Option<&Path>) -> Result<Self, CoordinatorError> {
        Ok(match model_dir {
            Some(dir) => Self {
                config: bitnet_checkpoints::read_config(dir)?,
                tokenizer: TextTokenizer::from_dir(dir)?,
                name: dir.display().to_string(),
            },
            None => {
                let tok = demo::tokenizer()?;
                Self {
                    config: demo::weights(&tok).config,
                    tokenizer: Some(tok),
                    name: "built-in demo model (RANDOM weights)".into(),
                }
            }
        })
    }
}

/// The context length served: `opts.max_model_len` capped by the model's.
pub fn served_len(opts: &ServeOptions, config: &ModelConfig) -> usize {
    opts.max_model_len
        .min(config.max_position_embeddings)
        .max(2)
}

/// Builds the scheduler and starts the engine over `executor`. `worker_blocks` is the KV
/// capacity the workers reported (the minimum over ranks), if any.
pub fn assemble(
    opts: &ServeOptions,
    frontend: Frontend,
    vocab: usize,
    executor: Box<dyn Executor>,
    worker_blocks: Option<usize>,
    tensor_parallel: u32,
) -> Result<Served, CoordinatorError> {
    let Frontend {
        config,
        tokenizer,
        name,
    } = frontend;
    let max_model_len = served_len(opts, &config);
    let block_size = BLOCK_SIZE;
    let mut num_blocks = wanted_kv_blocks(opts, max_model_len);
    if let Some(cap) = worker_blocks {
        num_blocks = num_blocks.min(cap);
    }
    let scheduler = Scheduler::new(SchedulerConfig {
        block_size,
        num_blocks,
        max_num_seqs: opts.max_num_seqs,
        max_batched_tokens: opts.max_batched_tokens,
        max_model_len,
        eos_token_ids: config.eos_token_ids.clone(),
    })
    .map_err(|e| CoordinatorError::InvalidRequest(e.to_string()))?;
    let tokenizer = tokenizer.map(Arc::new);
    let chat = tokenizer.as_ref().and_then(|t| t.chat_template().cloned());
    let (engine, engine_thread) = engine::spawn(scheduler, executor, tokenizer.clone());
    let model_info = ModelInfo {
        model_path: name.clone(),
        family: config.family.name().into(),
        architecture: config.architecture.clone(),
        vocab_size: vocab as u32,
        max_context: max_model_len as u32,
        hidden_size: config.hidden_size as u32,
        num_layers: config.num_layers as u32,
        tensor_parallel,
        eos_token_ids: config.eos_token_ids.clone(),
        block_size: block_size as u32,
        device: "cpu".into(),
    };
    let service = ServingService {
        engine: engine.clone(),
        tokenizer,
        chat,
        limits: ValidationLimits::new(vocab, max_model_len),
        model_info,
        admission: Arc::new(Semaphore::new(opts.max_admitted)),
        max_admitted: opts.max_admitted as u32,
        started: Instant::now(),
        next_id: AtomicU64::new(1),
    };
    Ok(Served {
        service,
        engine,
        engine_thread,
        description: name,
    })
}

/// Serves on an already bound listener until `shutdown` resolves, then stops the engine.
pub async fn serve_on(
    listener: TcpListener,
    served: Served,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), CoordinatorError> {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_serving::<ServingServer<ServingService>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(bitnet_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| CoordinatorError::InvalidRequest(format!("reflection: {e}")))?;
    let engine = served.engine.clone();
    let result = tonic::transport::Server::builder()
        .add_service(health)
        .add_service(reflection)
        .add_service(served.service.into_server())
        .serve_with_incoming_shutdown(
            // Streamed tokens must not wait for Nagle's algorithm (≈ 40 ms per chunk).
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            async move {
                shutdown.await;
                // Draining (or a worker died): health checks see it before the socket closes.
                reporter
                    .set_not_serving::<ServingServer<ServingService>>()
                    .await;
            },
        )
        .await;
    engine.shutdown();
    let _ = served.engine_thread.join();
    result.map_err(|e| CoordinatorError::InvalidRequest(format!("gRPC server: {e}")))
}
