//! `bitnet-proto`: the `.proto` files and generated code of the public serving API (`bitnet.v1`)
//! and the internal coordinator ↔ worker API (`bitnet.worker.v1`).
//!
//! Neighbours: `bitnet-client` speaks [`serving`] as a client; the coordinator serves [`serving`]
//! and drives every worker through [`worker`]; workers serve [`worker`]. Wire types stay here:
//! each crate converts them to its own types in one module (its `wire.rs`).
//!
//! The `.proto` files live in `proto/proto/` and are compiled by `build.rs` with `protox` (pure
//! Rust: no system `protoc`) and `tonic-prost-build`, which emits messages, clients
//! (`serving_client::ServingClient`, `worker_client::WorkerClient`) and servers
//! (`serving_server::{Serving, ServingServer}`, `worker_server::{Worker, WorkerServer}`).
//! Proto3 `optional` fields become `Option<T>`, so "unset" (server default) and zero stay apart.
//!
//! # Health and reflection (so `grpcurl` works)
//!
//! The public endpoint also serves the standard `grpc.health.v1.Health` service (`tonic-health`)
//! and server reflection (`tonic-reflection`, fed with [`FILE_DESCRIPTOR_SET`]). With the
//! workspace dependencies `tonic-health` and `tonic-reflection`, the coordinator does:
//!
//! ```ignore
//! use bitnet_proto::serving::serving_server::ServingServer;
//!
//! let (health_reporter, health_service) = tonic_health::server::health_reporter();
//! health_reporter.set_serving::<ServingServer<MyServing>>().await; // "bitnet.v1.Serving"
//! // ... and `set_not_serving` when a worker dies or while draining.
//! let reflection = tonic_reflection::server::Builder::configure()
//!     .register_encoded_file_descriptor_set(bitnet_proto::FILE_DESCRIPTOR_SET)
//!     .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
//!     .build_v1()?;
//! tonic::transport::Server::builder()
//!     .add_service(health_service)
//!     .add_service(reflection)
//!     .add_service(ServingServer::new(MyServing::new(/* ... */)))
//!     .serve(addr)
//!     .await?;
//! ```
//!
//! after which `grpcurl -plaintext HOST:PORT list` shows `bitnet.v1.Serving`,
//! `grpc.health.v1.Health` and `grpc.reflection.v1.ServerReflection`. The worker descriptor is in
//! the same set; register reflection on worker endpoints the same way if wanted.

/// Package name of the public serving API.
pub const SERVING_PACKAGE: &str = "bitnet.v1";
/// Package name of the internal coordinator ↔ worker API.
pub const WORKER_PACKAGE: &str = "bitnet.worker.v1";
/// Fully qualified name of the public service (the name to use with `grpc.health.v1`).
pub const SERVING_SERVICE: &str = "bitnet.v1.Serving";
/// Fully qualified name of the worker service.
pub const WORKER_SERVICE: &str = "bitnet.worker.v1.Worker";

/// Encoded `google.protobuf.FileDescriptorSet` of both packages, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/bitnet_descriptor.bin"));

/// The public serving API, package `bitnet.v1`.
pub mod serving {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("bitnet.v1");
}

/// The internal coordinator ↔ worker API, package `bitnet.worker.v1`.
pub mod worker {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("bitnet.worker.v1");
}

// Generated code refers to these crates; re-export them so users match versions.
pub use prost;
pub use tonic;

#[cfg(test)]
mod tests;
