//! The public gRPC server (`bitnet.v1.Serving`, plus `grpc.health.v1` and reflection): turns
//! wire requests into validated ones, takes an admission permit (`RESOURCE_EXHAUSTED` when
//! full, never an unbounded queue), hands them to the engine and streams its events back.
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
    TokenizeRequest, TokenizeResponse, Usage,
};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
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

/// One engine event as a wire response.
fn response(request_id: &str, event: StreamEvent) -> GenerateResponse {
    let body = match event {
        StreamEvent::Tokens {
            token_ids,
            text,
            usage: u,
        } => generate_response::Response::Chunk(GenerateChunk {
            index: 0,
            token_ids,
            text,
            logprobs: Vec::new(),
            usage: usage(u),
        }),
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
            reason,
            output_ids,
            matched_stop,
            usage: u,
            ..
        } => generate_response::Response::Complete(GenerateComplete {
            index: 0,
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
    GenerateResponse {
        request_id: request_id.to_string(),
        response: Some(body),
    }
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<GenerateResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Serving for ServingService {
    type GenerateStream = ResponseStream;

    async fn generate(
        &self,
        request: Request<GenerateRequest>,
    ) -> Result<Response<Self::GenerateStream>, Status> {
        let req = request.into_inner();
        let valid = validate(
            &req,
            &self.limits,
            self.tokenizer.as_deref(),
            self.chat.as_ref(),
            || format!("req-{}", self.next_id.fetch_add(1, Ordering::Relaxed)),
        )
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if valid.n != 1 {
            return Err(Status::invalid_argument("n: only n = 1 is served so far"));
        }
        if valid.sampling.logprobs > 0 {
            return Err(Status::invalid_argument("logprobs: not served yet"));
        }
        let permit = self.admission.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "the server is full ({} requests admitted); retry later",
                self.max_admitted
            ))
        })?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let request_id = valid.request_id.clone();
        if !self.engine.add(valid, tx) {
            return Err(Status::unavailable("the engine has stopped"));
        }
        let stream = UnboundedReceiverStream::new(rx).map(move |event| {
            let _held = &permit; // released when the stream ends or the client drops it
            Ok(response(&request_id, event))
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
