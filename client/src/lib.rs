//! `bitnet-client`: the Rust client SDK over the public `bitnet.v1.Serving` gRPC API served by
//! the coordinator (`bitnet-cluster up`). Wire types come from `bitnet-proto`; this crate turns
//! them into typed requests ([`GenerateParams`], [`SamplingParams`]), events
//! ([`GenerateEvent`]) and errors ([`ClientError`]).
//!
//! # Example
//!
//! ```no_run
//! use bitnet_client::{Client, ClientOptions, GenerateEvent, GenerateParams, SamplingParams};
//! use tokio_stream::StreamExt;
//! use std::time::Duration;
//!
//! # async fn run() -> Result<(), bitnet_client::ClientError> {
//! let options = ClientOptions::default().with_request_timeout(Duration::from_secs(60));
//! let client = Client::connect("127.0.0.1:50051", options).await?;
//!
//! // Streamed: print text deltas as they arrive.
//! let params = GenerateParams::text("Hello")
//!     .with_sampling(SamplingParams::greedy().max_tokens(32));
//! let mut stream = client.generate(params.clone());
//! while let Some(event) = stream.next().await {
//!     match event? {
//!         GenerateEvent::Chunk { text, .. } => print!("{text}"),
//!         GenerateEvent::Complete { finish_reason, usage, .. } => {
//!             println!("\n[{finish_reason}, {} tokens]", usage.completion_tokens)
//!         }
//!     }
//! }
//!
//! // Collected.
//! let output = client.generate_text(params).await?;
//! println!("{}", output.text());
//! # Ok(()) }
//! ```
//!
//! A runnable version is `client/examples/generate.rs`:
//!
//! ```text
//! cargo run -p bitnet-client --example generate -- --server 127.0.0.1:50051 --prompt "Hello"
//! ```
//!
//! # Errors and cancellation
//!
//! Bad parameters come back as [`ClientError::Status`] with `INVALID_ARGUMENT`
//! ([`ClientError::is_invalid_argument`]); a full server as `RESOURCE_EXHAUSTED`; an engine
//! failure in the middle of a stream as [`ClientError::Stream`]; deadlines as
//! [`ClientError::Timeout`]. Dropping a [`GenerateStream`] cancels the request on the server;
//! [`Client::abort`] cancels by id from anywhere (the stream then ends with
//! [`FinishReason::Abort`]).

mod client;
mod error;
mod events;
mod options;
mod params;
mod stream;
mod wire;

pub use client::Client;
pub use error::{code_from_name, ClientError};
pub use events::{
    Choice, FinishReason, GenerateEvent, GenerateOutput, ModelInfo, ServerInfo, TokenLogprob,
    TokenLogprobs, Usage,
};
pub use options::ClientOptions;
pub use params::{GenerateParams, Prompt, SamplingParams};
pub use stream::GenerateStream;

/// The API package this client speaks.
pub use bitnet_proto::SERVING_PACKAGE as API_PACKAGE;
/// The gRPC status code type used in [`ClientError`].
pub use tonic::Code;
