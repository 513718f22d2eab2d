//! An in-process fake `bitnet.v1.Serving` server for the client tests, served over a real
//! localhost TCP listener (port 0) next to `grpc.health.v1` and server reflection, registered
//! exactly as the `bitnet-proto` crate docs tell the coordinator to.
//!
//! Prompts steer it: `""` → INVALID_ARGUMENT; `"fail"` → one chunk then an in-band error;
//! `"truncated"` → one chunk then the stream ends; `"slow"` → one chunk, then waits for an
//! abort (→ Complete with ABORT) or for the client to drop the stream; anything else → two
//! chunks and a Complete per sample.

#![allow(dead_code)]

use bitnet_proto::serving as pb;
use bitnet_proto::serving::serving_server::{Serving, ServingServer};
use pb::generate_response::Response;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response as TonicResponse, Status};

/// What the mock saw, shared with the test.
#[derive(Debug, Default)]
pub struct Seen {
    pub last_request: Option<pb::GenerateRequest>,
    pub running: HashSet<String>,
    pub aborted: Vec<String>,
    /// Requests whose client went away before they finished.
    pub cancelled: Vec<String>,
    /// The `grpc-timeout` header of the last generate call, if any.
    pub last_grpc_timeout: Option<String>,
}

#[derive(Clone, Default)]
pub struct Mock {
    pub seen: Arc<Mutex<Seen>>,
}

fn usage(prompt: u32, completion: u32) -> Option<pb::Usage> {
    Some(pb::Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        cached_tokens: 0,
    })
}

fn msg(id: &str, response: Response) -> Result<pb::GenerateResponse, Status> {
    Ok(pb::GenerateResponse {
        request_id: id.to_string(),
        response: Some(response),
    })
}

fn chunk(index: u32, ids: &[u32], text: &str, prompt: u32, done: u32, lp: bool) -> Response {
    let logprobs = if lp {
        ids.iter()
            .map(|&id| pb::TopLogprobs {
                entries: vec![
                    pb::TokenLogprob {
                        token_id: id,
                        logprob: -0.5,
                    },
                    pb::TokenLogprob {
                        token_id: id + 100,
                        logprob: -1.5,
                    },
                ],
            })
            .collect()
    } else {
        Vec::new()
    };
    Response::Chunk(pb::GenerateChunk {
        index,
        token_ids: ids.to_vec(),
        text: text.to_string(),
        logprobs,
        usage: usage(prompt, done),
    })
}

fn complete(index: u32, ids: Vec<u32>, reason: pb::FinishReason, prompt: u32) -> Response {
    let n = ids.len() as u32;
    Response::Complete(pb::GenerateComplete {
        index,
        output_ids: ids,
        finish_reason: reason as i32,
        matched_stop: if reason == pb::FinishReason::Stop {
            "\n".into()
        } else {
            String::new()
        },
        usage: usage(prompt, n),
    })
}

#[tonic::async_trait]
impl Serving for Mock {
    type GenerateStream = ReceiverStream<Result<pb::GenerateResponse, Status>>;

    async fn generate(
        &self,
        request: Request<pb::GenerateRequest>,
    ) -> Result<TonicResponse<Self::GenerateStream>, Status> {
        let timeout = request
            .metadata()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let req = request.into_inner();
        let prompt_len = match &req.input {
            Some(pb::generate_request::Input::Text(t)) => t.split_whitespace().count() as u32,
            Some(pb::generate_request::Input::TokenIds(ids)) => ids.ids.len() as u32,
            None => 0,
        };
        let text = match &req.input {
            Some(pb::generate_request::Input::Text(t)) => t.clone(),
            _ => String::new(),
        };
        {
            let mut seen = self.seen.lock().unwrap();
            seen.last_request = Some(req.clone());
            seen.last_grpc_timeout = timeout;
        }
        if prompt_len == 0 {
            return Err(Status::invalid_argument("prompt is empty"));
        }
        let sampling = req.sampling.clone().unwrap_or_default();
        let lp = sampling.logprobs.unwrap_or(0) > 0;
        let id = req.request_id.clone();
        self.seen.lock().unwrap().running.insert(id.clone());
        let (tx, rx) = mpsc::channel(8);
        let seen = self.seen.clone();
        tokio::spawn(async move {
            let send = |r: Response| {
                let tx = tx.clone();
                let id = id.clone();
                async move { tx.send(msg(&id, r)).await.is_ok() }
            };
            match text.as_str() {
                "fail" => {
                    send(chunk(0, &[7], "x", prompt_len, 1, false)).await;
                    send(Response::Error(pb::GenerateError {
                        message: "worker rank 1 died".into(),
                        code: "INTERNAL".into(),
                        details: "rank=1".into(),
                    }))
                    .await;
                }
                "truncated" => {
                    send(chunk(0, &[7], "x", prompt_len, 1, false)).await;
                }
                "slow" => {
                    send(chunk(0, &[7], "x", prompt_len, 1, false)).await;
                    for _ in 0..500 {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        if tx.is_closed() {
                            seen.lock().unwrap().cancelled.push(id.clone());
                            break;
                        }
                        if seen.lock().unwrap().aborted.contains(&id) {
                            send(complete(0, vec![7], pb::FinishReason::Abort, prompt_len)).await;
                            break;
                        }
                    }
                }
                _ => {
                    for index in 0..sampling.n.unwrap_or(1) {
                        send(chunk(index, &[1, 2], "Hel", prompt_len, 2, lp)).await;
                        send(chunk(index, &[3], "lo", prompt_len, 3, lp)).await;
                        let reason = if sampling.stop.is_empty() {
                            pb::FinishReason::Length
                        } else {
                            pb::FinishReason::Stop
                        };
                        send(complete(index, vec![1, 2, 3], reason, prompt_len)).await;
                    }
                }
            }
            seen.lock().unwrap().running.remove(&id);
        });
        Ok(TonicResponse::new(ReceiverStream::new(rx)))
    }

    async fn abort(
        &self,
        request: Request<pb::AbortRequest>,
    ) -> Result<TonicResponse<pb::AbortResponse>, Status> {
        let mut seen = self.seen.lock().unwrap();
        let mut aborted = 0;
        for id in request.into_inner().request_ids {
            if seen.running.contains(&id) {
                aborted += 1;
            }
            seen.aborted.push(id);
        }
        Ok(TonicResponse::new(pb::AbortResponse { aborted }))
    }

    async fn get_model_info(
        &self,
        _: Request<pb::GetModelInfoRequest>,
    ) -> Result<TonicResponse<pb::ModelInfo>, Status> {
        Ok(TonicResponse::new(pb::ModelInfo {
            model_path: "/models/demo".into(),
            family: "bitnet".into(),
            architecture: "BitNetForCausalLM".into(),
            vocab_size: 512,
            max_context: 256,
            hidden_size: 64,
            num_layers: 2,
            tensor_parallel: 2,
            eos_token_ids: vec![2],
            block_size: 16,
            device: "cpu".into(),
        }))
    }

    async fn get_server_info(
        &self,
        _: Request<pb::GetServerInfoRequest>,
    ) -> Result<TonicResponse<pb::ServerInfo>, Status> {
        // A slow answer, for the request-timeout test.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let running = self.seen.lock().unwrap().running.len() as u32;
        Ok(TonicResponse::new(pb::ServerInfo {
            running,
            waiting: 0,
            kv_usage: 0.25,
            kv_blocks_total: 64,
            kv_blocks_used: 16,
            uptime_seconds: 12.5,
            requests_finished: 3,
            version: "test".into(),
            max_num_seqs: 32,
            serving: true,
            num_preemptions: 0,
            steps_timed: 7,
            step_wall_ms_total: 70.0,
            step_worker_ms_total: 63.0,
        }))
    }

    async fn tokenize(
        &self,
        request: Request<pb::TokenizeRequest>,
    ) -> Result<TonicResponse<pb::TokenizeResponse>, Status> {
        let ids = request.into_inner().text.bytes().map(u32::from).collect();
        Ok(TonicResponse::new(pb::TokenizeResponse { ids }))
    }

    async fn detokenize(
        &self,
        request: Request<pb::DetokenizeRequest>,
    ) -> Result<TonicResponse<pb::DetokenizeResponse>, Status> {
        let bytes: Result<Vec<u8>, _> = request
            .into_inner()
            .ids
            .into_iter()
            .map(u8::try_from)
            .collect();
        let bytes =
            bytes.map_err(|_| Status::invalid_argument("token id outside the vocabulary"))?;
        Ok(TonicResponse::new(pb::DetokenizeResponse {
            text: String::from_utf8_lossy(&bytes).into_owned(),
        }))
    }
}

/// Serves `mock` (plus health and reflection) on 127.0.0.1:0; returns the bound address.
pub async fn spawn(mock: Mock) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().unwrap();
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter.set_serving::<ServingServer<Mock>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(bitnet_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("reflection service");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health_service)
            .add_service(reflection)
            .add_service(ServingServer::new(mock))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    addr
}

/// A TCP listener that accepts connections and never answers (for deadline tests).
pub async fn spawn_silent() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    addr
}

/// A port on which nothing listens (bound, then released).
pub async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().unwrap()
}
