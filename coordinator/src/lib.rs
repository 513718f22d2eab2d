//! `bitnet-coordinator`: everything between the user and the workers.
//!
//! Today: the command line ([`cli`]), the tokenizer ([`tokenizer`]) and chat templates
//! ([`chat`]), the device choice ([`device`]: `--device cpu|cuda`), the in-process generation driver ([`generate`]) and the built-in demo model
//! ([`demo`]); validation ([`validation`]), the scheduler and block manager ([`scheduler`]), the
//! engine thread and its executors ([`engine`]: in process, or the gRPC fan-out to worker
//! processes), the public gRPC server ([`server`], [`serve`]) and the worker processes with
//! their launcher ([`cluster`]: `bitnet-cluster worker` and `up --tp N`); the checkpoint tools
//! ([`ckpt`]: `ckpt compress`, `ckpt verify`, `--verify` on load).

pub mod chat;
pub mod ckpt;
pub mod cli;
pub mod cluster;
pub mod demo;
pub mod device;
pub mod engine;
pub mod error;
pub mod generate;
pub mod remote;
pub mod scheduler;
pub mod serve;
pub mod server;
pub mod tokenizer;
pub mod validation;

pub use error::CoordinatorError;
