//! The public gRPC server (`bitnet.v1.Serving`, plus `grpc.health.v1` and reflection): turns
//! wire requests into validated ones, takes an admission permit (`RESOURCE_EXHAUSTED` when
//! full, never an unbounded queue), hands them to the engine with the client's deadline
//! (`grpc-timeout`) and streams its events back (all `n` samples on one stream, by index).
//! Errors become `tonic::Status` here and nowhere else.

use crate::chat::ChatTemplate;
use crate::engine::output::Finish;
use crate::engine::{EngineHandle, StreamEvent, TokenUsage};
use crate::tokenizer::TextTokenizer;
use crate::validation::{validate, ValidationLimits};
use bitnet_proto::serving::serving_server::{Serving, ServingServer};
use bitnet_proto::serving::{
    generate_response, AbortRequest, AbortResponse, DetokenizeRequest, DetokenizeResponse,
    FinishReason, GenerateChunk, GenerateComplete, GenerateError, GenerateRequest,
    GenerateResponse, GetModelInfoRequest, GetServerInfoRequest, ModelInfo, ServerInfo,
    TokenLogprob, TokenizeRequest, TokenizeResponse, TopLogprobs, Usage,
};
use bitnet_worker::TokenLogprobs;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio_stream::{wrappers::UnboundedReceiverStream, Stream, StreamExt};
use tonic::{Request, Response, Status};

/// Everything the service needs.
pub struct ServingService {
    pub engine: EngineHandle,
    pub tokenizer: Option<Arc<TextTokenizer>>,
    pub chat: Option<ChatTemplate>,
    pub limits: ValidationLimits,
    pub model_info: ModelInfo,
    /// Requests admitted (running + waiting) at most.
    pub admission: Arc<Semaphore>,
    pub max_admitted: u32,
    pub started: Instant,
    pub next_id: AtomicU64,
}

impl ServingService {
    /// Wraps the service for tonic.
    pub fn into_server(self) -> ServingServer<Self> {
        ServingServer::new(self)
    }
}

fn usage(u: TokenUsage) -> Option<Usage> {
    Some(Usage {
        prompt_tokens: u.prompt_tokens,
        completion_tokens: u.completion_tokens,
        cached_tokens: 0,
    })
}

/// The wire logprobs of one position: the sampled token first, then the top-n.
fn top_logprobs(lp: TokenLogprobs) -> TopLogprobs {
    let entry = |token_id, logprob| TokenLogprob { token_id, logprob };
    TopLogprobs {
        entries: std::iter::once(entry(lp.token_id, lp.logprob))
            .chain(lp.top.into_iter().map(|(id, l)| entry(id, l)))
            .collect(),
    }
}

/// One engine event as a wire response, or the status that ends the stream (a passed
/// deadline is `DEADLINE_EXCEEDED`).
fn response(request_id: &str, event: StreamEvent) -> Result<GenerateResponse, Status> {
    let body = match event {
        StreamEvent::Tokens {
            index,
            token_ids,
            text,
            logprobs,
            usage: u,
        } => generate_response::Response::Chunk(GenerateChunk {
            index,
            token_ids,
            text,
            logprobs: logprobs.into_iter().map(top_logprobs).collect(),
            usage: usage(u),
        }),
        StreamEvent::Finished {
            reason: Finish::Deadline,
            ..
        } => {
            return Err(Status::deadline_exceeded(format!(
                "request {request_id}: the deadline passed; aborted"
            )))
        }
        StreamEvent::Finished {
            reason: Finish::Error,
            message,
            ..
        } => generate_response::Response::Error(GenerateError {
            message: message.unwrap_or_else(|| "internal error".into()),
            code: "INTERNAL".into(),
            details: String::new(),
        }),
        StreamEvent::Finished {
            index,
            reason,
            output_ids,
            matched_stop,
            usage: u,
            ..
        } => generate_response::Response::Complete(GenerateComplete {
            index,
            output_ids,
            finish_reason: match reason {
                Finish::Stop => FinishReason::Stop,
                Finish::Length => FinishReason::Length,
                _ => FinishReason::Abort,
            } as i32,
            matched_stop: matched_stop.unwrap_or_default(),
            usage: usage(u),
        }),
    };
    Ok(GenerateResponse {
        request_id: request_id.to_string(),
        response: Some(body),
    })
}

/// The deadline a client set with the `grpc-timeout` header (`<digits><H|M|S|m|u|n>`, gRPC
/// over HTTP/2), if any; a malformed header is `INVALID_ARGUMENT`.
pub fn grpc_deadline(metadata: &tonic::metadata::MetadataMap) -> Result<Option<Instant>, Status> {
    let Some(value) = metadata.get("grpc-timeout") else {
        return Ok(None);
    };
    let bad = || Status::invalid_argument(format!("grpc-timeout: malformed value {value:?}"));
    let text = value.to_str().map_err(|_| bad())?;
    if text.len() < 2 || text.len() > 9 {
        return Err(bad());
    }
    let (digits, unit) = text.split_at(text.len() - 1);
    let amount: u64 = digits.parse().map_err(|_| bad())?;
    let timeout = match unit {
        "H" => Duration::from_secs(amount.saturating_mul(3600)),
        "M" => Duration::from_secs(amount.saturating_mul(60)),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return Err(bad()),
    };
    Ok(Some(Instant::now() + timeout))
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<GenerateResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Serving for ServingService {
    type GenerateStream = ResponseStream;

    async fn generate(
        &self,
        request: Request<GenerateRequest>,
    ) -> Result<Response<Self::GenerateStream>, Status> {
        let deadline = grpc_deadline(request.metadata())?;
        let req = request.into_inner();
        let valid = validate(
            &req,
            &self.limits,
            self.tokenizer.as_deref(),
            self.chat.as_ref(),
            || format!("req-{}", self.next_id.fetch_add(1, Ordering::Relaxed)),
        )
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let permit = self.admission.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "the server is full ({} requests admitted); retry later",
                self.max_admitted
            ))
        })?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let request_id = valid.request_id.clone();
        if !self.engine.add(valid, tx, deadline) {
            return Err(Status::unavailable("the engine has stopped"));
        }
        let stream = UnboundedReceiverStream::new(rx).map(move |event| {
            let _held = &permit; // released when the stream ends or the client drops it
            response(&request_id, event)
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn abort(
        &self,
        request: Request<AbortRequest>,
    ) -> Result<Response<AbortResponse>, Status> {
        let ids = request.into_inner().request_ids;
        for id in &ids {
            self.engine.abort(id);
        }
        Ok(Response::new(AbortResponse {
            aborted: ids.len() as u32,
        }))
    }

    async fn get_model_info(
        &self,
        _: Request<GetModelInfoRequest>,
    ) -> Result<Response<ModelInfo>, Status> {
        Ok(Response::new(self.model_info.clone()))
    }

    async fn get_server_info(
        &self,
        _: Request<GetServerInfoRequest>,
    ) -> Result<Response<ServerInfo>, Status> {
        let s = self.engine.stats();
        let t = self.engine.step_timing();
        Ok(Response::new(ServerInfo {
            running: s.running as u32,
            waiting: s.waiting as u32,
            kv_usage: s.kv_usage as f32,
            kv_blocks_total: s.kv_blocks_total as u64,
            uptime_seconds: self.started.elapsed().as_secs_f64(),
            requests_finished: s.requests_finished,
            version: env!("CARGO_PKG_VERSION").into(),
            kv_blocks_used: s.kv_blocks_used as u64,
            max_num_seqs: self.max_admitted,
            serving: true,
            num_preemptions: s.num_preemptions_total,
            steps_timed: t.steps,
            step_wall_ms_total: t.wall_ms,
            step_worker_ms_total: t.worker_ms,
        }))
    }

    async fn tokenize(
        &self,
        request: Request<TokenizeRequest>,
    ) -> Result<Response<TokenizeResponse>, Status> {
        let req = request.into_inner();
        let tok = self
            .tokenizer
            .as_ref()
            .ok_or_else(|| Status::failed_precondition("this model has no tokenizer"))?;
        let ids = tok
            .encode(&req.text, req.add_special_tokens)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok(Response::new(TokenizeResponse { ids }))
    }

    async fn detokenize(
        &self,
        request: Request<DetokenizeRequest>,
    ) -> Result<Response<DetokenizeResponse>, Status> {
        let req = request.into_inner();
        let tok = self
            .tokenizer
            .as_ref()
            .ok_or_else(|| Status::failed_precondition("this model has no tokenizer"))?;
        if let Some(&bad) = req
            .ids
            .iter()
            .find(|&&id| id as usize >= self.limits.vocab_size)
        {
            return Err(Status::invalid_argument(format!(
                "token {bad} is outside the vocabulary (size {})",
                self.limits.vocab_size
            )));
        }
        let text = tok
            .decode(&req.ids)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok(Response::new(DetokenizeResponse { text }))
    }
}
