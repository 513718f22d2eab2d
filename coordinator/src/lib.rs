//! `bitnet-coordinator`: everything between the user and the workers.
//!
//! Today: the command line ([`cli`]), the tokenizer ([`tokenizer`]) and chat templates
//! ([`chat`]), the in-process generation driver ([`generate`]) and the built-in demo model
//! ([`demo`]). The cluster issue adds validation, the scheduler, the block manager, the executor
//! that drives worker processes, and the public gRPC server.

pub mod chat;
pub mod cli;
pub mod demo;
pub mod engine;
pub mod error;
pub mod generate;
pub mod scheduler;
pub mod serve;
pub mod server;
pub mod tokenizer;
pub mod validation;

pub use error::CoordinatorError;
