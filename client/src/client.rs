//! [`Client`]: a cloneable handle on one connection to a `bitnet.v1.Serving` endpoint (the
//! coordinator), with one method per RPC.

use crate::error::ClientError;
use crate::events::{Choice, GenerateEvent, GenerateOutput, ModelInfo, ServerInfo};
use crate::options::{self, ClientOptions};
use crate::params::GenerateParams;
use crate::stream::GenerateStream;
use crate::wire;
use bitnet_proto::serving as pb;
use bitnet_proto::serving::serving_client::ServingClient;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_stream::StreamExt;
use tonic::transport::Channel;

/// A client of the public serving API. Cheap to clone; clones share the connection.
#[derive(Debug, Clone)]
pub struct Client {
    inner: ServingClient<Channel>,
    options: ClientOptions,
}

impl Client {
    /// Connects to `addr` (`"host:port"` or `"http://host:port"`), failing after
    /// `options.connect_timeout`.
    pub async fn connect(addr: &str, options: ClientOptions) -> Result<Self, ClientError> {
        let endpoint = options::endpoint(addr, &options)?;
        let channel = match tokio::time::timeout(options.connect_timeout, endpoint.connect()).await
        {
            Ok(Ok(channel)) => channel,
            Ok(Err(source)) => {
                return Err(ClientError::Connect {
                    addr: addr.to_string(),
                    source,
                })
            }
            Err(_) => {
                return Err(ClientError::Timeout {
                    op: "connect",
                    after: options.connect_timeout,
                })
            }
        };
        Ok(Self::from_channel(channel, options))
    }

    /// Wraps an existing channel (an in-process transport, a load-balanced channel...).
    pub fn from_channel(channel: Channel, options: ClientOptions) -> Self {
        Self {
            inner: ServingClient::new(channel),
            options,
        }
    }

    /// The options this client was made with.
    pub fn options(&self) -> &ClientOptions {
        &self.options
    }

    /// Starts a generation and streams its events. Errors (including `INVALID_ARGUMENT` for a
    /// bad request) arrive as the stream's item; dropping the stream cancels the request.
    pub fn generate(&self, params: GenerateParams) -> GenerateStream {
        let request_id = params.request_id.clone().unwrap_or_else(new_request_id);
        let samples = params.sampling.n.unwrap_or(1);
        let request = self.request(wire::generate_request(&params, request_id.clone()));
        let mut inner = self.inner.clone();
        let start = Box::pin(async move { inner.generate(request).await });
        GenerateStream::new(request_id, start, self.options.request_timeout, samples)
    }

    /// Runs a generation to the end and collects every sample's text, ids and logprobs.
    pub async fn generate_text(
        &self,
        params: GenerateParams,
    ) -> Result<GenerateOutput, ClientError> {
        let mut stream = self.generate(params);
        let mut choices: Vec<Choice> = Vec::new();
        while let Some(event) = stream.next().await {
            match event? {
                GenerateEvent::Chunk {
                    index,
                    text,
                    logprobs,
                    usage,
                    ..
                } => {
                    let choice = choice_mut(&mut choices, index);
                    choice.text.push_str(&text);
                    choice.logprobs.extend(logprobs);
                    choice.usage = usage;
                }
                GenerateEvent::Complete {
                    index,
                    output_ids,
                    finish_reason,
                    usage,
                    matched_stop,
                } => {
                    let choice = choice_mut(&mut choices, index);
                    choice.output_ids = output_ids;
                    choice.finish_reason = finish_reason;
                    choice.usage = usage;
                    choice.matched_stop = matched_stop;
                }
            }
        }
        choices.sort_by_key(|c| c.index);
        Ok(GenerateOutput {
            request_id: stream.request_id().to_string(),
            choices,
        })
    }

    /// Aborts requests by id; returns how many were running or waiting (unknown ids are ignored).
    pub async fn abort<I, S>(&self, request_ids: I) -> Result<u32, ClientError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let request = pb::AbortRequest {
            request_ids: request_ids.into_iter().map(Into::into).collect(),
        };
        let mut inner = self.inner.clone();
        let req = self.request(request);
        let reply = self
            .unary("abort", async move { inner.abort(req).await })
            .await?;
        Ok(reply.aborted)
    }

    /// The served model.
    pub async fn model_info(&self) -> Result<ModelInfo, ClientError> {
        let mut inner = self.inner.clone();
        let req = self.request(pb::GetModelInfoRequest {});
        let reply = self
            .unary("model_info", async move { inner.get_model_info(req).await })
            .await?;
        Ok(wire::model_info(reply))
    }

    /// Load and state of the server (running, waiting, KV usage, uptime).
    pub async fn server_info(&self) -> Result<ServerInfo, ClientError> {
        let mut inner = self.inner.clone();
        let req = self.request(pb::GetServerInfoRequest {});
        let reply = self
            .unary(
                "server_info",
                async move { inner.get_server_info(req).await },
            )
            .await?;
        Ok(wire::server_info(reply))
    }

    /// Token ids of `text` with the server's tokenizer.
    pub async fn tokenize(
        &self,
        text: impl Into<String>,
        add_special_tokens: bool,
    ) -> Result<Vec<u32>, ClientError> {
        let mut inner = self.inner.clone();
        let req = self.request(pb::TokenizeRequest {
            text: text.into(),
            add_special_tokens,
        });
        let reply = self
            .unary("tokenize", async move { inner.tokenize(req).await })
            .await?;
        Ok(reply.ids)
    }

    /// Text of `ids` with the server's tokenizer.
    pub async fn detokenize(
        &self,
        ids: impl Into<Vec<u32>>,
        skip_special_tokens: bool,
    ) -> Result<String, ClientError> {
        let mut inner = self.inner.clone();
        let req = self.request(pb::DetokenizeRequest {
            ids: ids.into(),
            skip_special_tokens,
        });
        let reply = self
            .unary("detokenize", async move { inner.detokenize(req).await })
            .await?;
        Ok(reply.text)
    }

    /// Wraps a message, with the request deadline sent as `grpc-timeout`.
    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(timeout) = self.options.request_timeout {
            request.set_timeout(timeout);
        }
        request
    }

    /// Runs a unary call under the request deadline (also enforced here, in case the server or
    /// the connection never answers).
    async fn unary<T>(
        &self,
        op: &'static str,
        call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, ClientError> {
        let timeout = self.options.request_timeout;
        let result = match timeout {
            Some(after) => tokio::time::timeout(after, call)
                .await
                .map_err(|_| ClientError::Timeout { op, after })?,
            None => call.await,
        };
        result
            .map(tonic::Response::into_inner)
            .map_err(|status| ClientError::from_status(op, status, timeout))
    }
}

fn choice_mut(choices: &mut Vec<Choice>, index: u32) -> &mut Choice {
    let pos = match choices.iter().position(|c| c.index == index) {
        Some(pos) => pos,
        None => {
            choices.push(Choice {
                index,
                text: String::new(),
                output_ids: Vec::new(),
                finish_reason: crate::FinishReason::Error,
                matched_stop: None,
                usage: Default::default(),
                logprobs: Vec::new(),
            });
            choices.len() - 1
        }
    };
    &mut choices[pos]
}

/// A request id unique across clients and processes: `cli-<pid>-<unix nanos>-<counter>`.
fn new_request_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_nanos();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("cli-{}-{nanos:x}-{n}", std::process::id())
}
