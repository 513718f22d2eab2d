//! `bitnet-cluster generate`: one prompt through an in-process model — load (or build the demo
//! model), tokenize (optionally through the chat template), prefill, decode, detokenize, on the
//! device of [`GenerateOptions::device`].

use crate::chat::{ChatMessage, ChatTemplate, BITNET_CHAT_TEMPLATE};
use crate::demo;
use crate::device::Device;
use crate::error::CoordinatorError;
use crate::tokenizer::TextTokenizer;
use bitnet_checkpoints::{Family, ModelWeights};
use bitnet_client::{TokenLogprob, TokenLogprobs};
use bitnet_kernels::Backend;
use bitnet_worker::{Generation, GenerationRequest, Generator, Model, SamplingParams};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// The prompt, as text or as token ids.
#[derive(Clone, Debug)]
pub enum Prompt {
    Text(String),
    Ids(Vec<u32>),
}

/// Everything `generate` needs.
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    /// Model directory; `None` runs the built-in demo model.
    pub model_dir: Option<PathBuf>,
    pub prompt: Prompt,
    pub max_new_tokens: usize,
    pub sampling: SamplingParams,
    /// Wrap a text prompt in the model's chat template as one user message.
    pub chat: bool,
    /// Return each token's logprob and this many top alternatives.
    pub logprobs: Option<u32>,
    /// Write the prompt logits (`prompt_len × vocab`, f32) to this safetensors file.
    pub dump_logits: Option<PathBuf>,
    /// Replace the LM head by an int8 copy with per-row scales (a numerics change).
    pub lm_head_int8: bool,
    /// Where the model runs.
    pub device: Device,
    /// CPU compute threads (unused on CUDA).
    pub threads: usize,
}

/// What `generate --json` prints.
#[derive(Clone, Debug, Serialize)]
pub struct GenerateOutput {
    pub prompt_ids: Vec<u32>,
    pub token_ids: Vec<u32>,
    pub text: String,
    pub finish_reason: String,
    pub prefill_tokens_per_s: f64,
    pub decode_tokens_per_s: f64,
    /// Per generated token, when asked (`--logprobs N`): the sampled token's logprob and the
    /// top N (log-softmax of the raw logits).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<Vec<TokenLogprobs>>,
}

/// The client SDK's form of a worker's logprobs (what `--json` prints, offline or served).
pub fn client_logprobs(lp: &bitnet_worker::TokenLogprobs) -> TokenLogprobs {
    let entry = |token_id, logprob| TokenLogprob { token_id, logprob };
    TokenLogprobs {
        sampled: entry(lp.token_id, lp.logprob),
        top: lp.top.iter().map(|&(id, l)| entry(id, l)).collect(),
    }
}

/// Loads the model (or the demo), runs one generation and writes the logits dump if asked.
pub fn run_generate(opts: &GenerateOptions) -> Result<GenerateOutput, CoordinatorError> {
    let (mut weights, tokenizer) = match &opts.model_dir {
        Some(dir) => {
            let weights = bitnet_checkpoints::load_model(dir)?;
            (weights, TextTokenizer::from_dir(dir)?)
        }
        None => {
            let tokenizer = demo::tokenizer()?;
            (demo::weights(&tokenizer), Some(tokenizer))
        }
    };
    let prompt_ids = prompt_ids(opts, &weights, tokenizer.as_ref())?;
    if opts.lm_head_int8 {
        weights.lm_head = Some(weights.lm_head().to_int8());
    }
    match opts.device {
        Device::Cpu => {
            let backend = crate::device::cpu_backend(opts.threads)?;
            generate_on(opts, weights, tokenizer, prompt_ids, backend)
        }
        #[cfg(feature = "cuda")]
        Device::Cuda => {
            let max_positions = weights.config.max_position_embeddings;
            let stop_ids = stop_ids(opts, &weights, tokenizer.as_ref());
            let model = crate::device::cuda_model(weights)?;
            let request = generation_request(opts, &prompt_ids, stop_ids);
            let generation = bitnet_worker::generate_paged(&model, max_positions, &request)?;
            finish(
                opts,
                &generation,
                tokenizer.as_ref(),
                prompt_ids,
                model.vocab_size(),
            )
        }
        #[cfg(not(feature = "cuda"))]
        Device::Cuda => Err(crate::device::DeviceError::NotBuilt.into()),
    }
}

/// The ids that end generation: the model's eos ids, plus `<|eot_id|>` for a chat prompt.
fn stop_ids(
    opts: &GenerateOptions,
    weights: &ModelWeights,
    tokenizer: Option<&TextTokenizer>,
) -> Vec<u32> {
    let mut stop_ids = weights.config.eos_token_ids.clone();
    if let Some(eot) = tokenizer.and_then(|t| t.token_to_id("<|eot_id|>")) {
        if opts.chat && !stop_ids.contains(&eot) {
            stop_ids.push(eot);
        }
    }
    stop_ids
}

/// The generation job of `opts`.
fn generation_request(
    opts: &GenerateOptions,
    prompt_ids: &[u32],
    stop_ids: Vec<u32>,
) -> GenerationRequest {
    GenerationRequest {
        prompt_ids: prompt_ids.to_vec(),
        max_new_tokens: opts.max_new_tokens,
        sampling: opts.sampling,
        stop_ids,
        keep_prompt_logits: opts.dump_logits.is_some(),
        logprobs: opts.logprobs.map(|n| n as usize),
    }
}

/// The generation itself on a host `backend`.
fn generate_on<B: Backend>(
    opts: &GenerateOptions,
    weights: ModelWeights,
    tokenizer: Option<TextTokenizer>,
    prompt_ids: Vec<u32>,
    backend: B,
) -> Result<GenerateOutput, CoordinatorError> {
    let stop_ids = stop_ids(opts, &weights, tokenizer.as_ref());
    let model = Model::new(weights, backend);
    let request = generation_request(opts, &prompt_ids, stop_ids);
    let generation = Generator::new(&model).run(&request)?;
    finish(
        opts,
        &generation,
        tokenizer.as_ref(),
        prompt_ids,
        model.vocab_size(),
    )
}

/// Writes the logits dump when asked and builds the output of a finished generation.
fn finish(
    opts: &GenerateOptions,
    generation: &Generation,
    tokenizer: Option<&TextTokenizer>,
    prompt_ids: Vec<u32>,
    vocab: usize,
) -> Result<GenerateOutput, CoordinatorError> {
    if let (Some(path), Some(logits)) = (&opts.dump_logits, &generation.prompt_logits) {
        write_logits(path, logits, prompt_ids.len(), vocab)?;
    }
    let text = match tokenizer {
        Some(t) => t.decode(&generation.token_ids)?,
        None => String::new(),
    };
    Ok(GenerateOutput {
        prefill_tokens_per_s: generation.prefill_tokens_per_s(prompt_ids.len()),
        decode_tokens_per_s: generation.decode_tokens_per_s(),
        prompt_ids,
        token_ids: generation.token_ids.clone(),
        text,
        finish_reason: generation.finish_reason.as_str().to_string(),
        logprobs: opts
            .logprobs
            .map(|_| generation.logprobs.iter().map(client_logprobs).collect()),
    })
}

/// Turns the prompt into validated token ids.
fn prompt_ids(
    opts: &GenerateOptions,
    weights: &ModelWeights,
    tokenizer: Option<&TextTokenizer>,
) -> Result<Vec<u32>, CoordinatorError> {
    let config = &weights.config;
    let ids = match &opts.prompt {
        Prompt::Ids(ids) => {
            if opts.chat {
                return Err(CoordinatorError::InvalidRequest(
                    "--chat needs a text prompt (--prompt), not --prompt-ids".into(),
                ));
            }
            ids.clone()
        }
        Prompt::Text(text) => {
            let tokenizer = tokenizer.ok_or_else(|| {
                CoordinatorError::InvalidRequest(
                    "the model directory has no tokenizer.json; pass --prompt-ids instead of --prompt"
                        .into(),
                )
            })?;
            if opts.chat {
                let template = match tokenizer.chat_template() {
                    Some(t) => t.clone(),
                    None if config.family == Family::BitNet => {
                        ChatTemplate::new(BITNET_CHAT_TEMPLATE, "<|begin_of_text|>", "")
                    }
                    None => {
                        return Err(CoordinatorError::InvalidRequest(
                            "--chat: tokenizer_config.json has no chat_template".into(),
                        ))
                    }
                };
                let rendered = template.render(
                    &[ChatMessage {
                        role: "user".into(),
                        content: text.clone(),
                    }],
                    true,
                )?;
                tokenizer.encode(&rendered, false)?
            } else {
                tokenizer.encode(text, true)?
            }
        }
    };
    let vocab = weights.embedding.rows();
    if ids.is_empty() {
        return Err(CoordinatorError::InvalidRequest(
            "the prompt is empty".into(),
        ));
    }
    if let Some((pos, id)) = ids.iter().enumerate().find(|(_, &id)| id as usize >= vocab) {
        return Err(CoordinatorError::InvalidRequest(format!(
            "prompt token {id} at position {pos} is outside the vocabulary (size {vocab})"
        )));
    }
    if ids.len() > config.max_position_embeddings {
        return Err(CoordinatorError::InvalidRequest(format!(
            "the prompt has {} tokens, more than max_position_embeddings = {}",
            ids.len(),
            config.max_position_embeddings
        )));
    }
    Ok(ids)
}

/// Writes `logits` (`rows × vocab`, f32) as tensor `logits` of a safetensors file, through a
/// temporary file renamed into place so a failed write leaves no partial file.
fn write_logits(
    path: &Path,
    logits: &[f32],
    rows: usize,
    vocab: usize,
) -> Result<(), CoordinatorError> {
    let bytes: Vec<u8> = logits.iter().flat_map(|v| v.to_le_bytes()).collect();
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![rows, vocab], &bytes)
            .map_err(|e| CoordinatorError::InvalidRequest(format!("logits tensor: {e}")))?;
    let data = safetensors::serialize([("logits", view)], None)
        .map_err(|e| CoordinatorError::InvalidRequest(format!("logits tensor: {e}")))?;
    let io = |source| CoordinatorError::Io {
        path: path.display().to_string(),
        source,
    };
    let tmp = path.with_extension("safetensors.partial");
    std::fs::write(&tmp, data).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}
