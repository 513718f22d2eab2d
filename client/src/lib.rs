//! `bitnet-client`: the Rust client SDK over the public `bitnet.v1` gRPC API.
//!
//! The serving API arrives with the cluster issue; this crate then wraps `Generate`, `Abort`,
//! `GetModelInfo` and friends. For now it only re-exports the API version it will speak.

pub use bitnet_proto::SERVING_PACKAGE as API_PACKAGE;
