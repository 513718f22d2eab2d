//! The worker-process side of the cluster and the launcher that starts it.
//!
//! - [`service`]: the `bitnet.worker.v1.Worker` gRPC service of one `bitnet-cluster worker`
//!   process, over a [`rank::Rank`] (the rank's sharded model and sequences);
//! - [`launcher`]: `bitnet-cluster up --tp N` — spawns the workers, joins the TCP ring, loads,
//!   profiles and serves over `crate::engine::GrpcExecutor`;
//! - [`wire`]: scheduler step types ↔ worker proto;
//! - [`error`]: [`ClusterError`] and its mapping to `tonic::Status`.

pub mod error;
pub mod launcher;
pub mod rank;
pub mod service;
pub mod wire;

pub use error::ClusterError;
pub use launcher::{launch, serve_cluster, Cluster, LaunchOptions, WorkerProcesses};
pub use service::{run_worker, WorkerService};

#[cfg(test)]
mod tests;
