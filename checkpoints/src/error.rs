//! Errors of checkpoint reading: every variant names the file or tensor and what was expected,
//! and prints as one readable line.

use std::path::PathBuf;
use thiserror::Error;

/// A checkpoint could not be read.
#[derive(Debug, Error)]
pub enum CheckpointError {
    /// The model directory or a required file (e.g. `config.json`) does not exist.
    #[error("{}: {what} not found", path.display())]
    NotFound { path: PathBuf, what: &'static str },

    /// A file exists but could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    /// A JSON file (config, generation config, shard index) is not valid JSON.
    #[error("{}: invalid JSON: {source}", path.display())]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },

    /// `config.json` lacks a field, or a field has a value the engine cannot use.
    #[error("{}: {message}", path.display())]
    Config { path: PathBuf, message: String },

    /// `rope_scaling` (or `rope_parameters.rope_type`) asks for a RoPE variant not implemented.
    #[error(
        "{}: unsupported rope_scaling {found} (only null or rope_type \"default\" is implemented)",
        path.display()
    )]
    UnsupportedRopeScaling { path: PathBuf, found: String },

    /// The architecture / model type matches no supported family.
    #[error(
        "{}: unknown architecture {found}; supported: {}",
        path.display(),
        supported.join(", ")
    )]
    UnknownArchitecture {
        path: PathBuf,
        found: String,
        supported: Vec<&'static str>,
    },

    /// The directory holds only PyTorch pickles of a family the pickle reader does not serve.
    #[error(
        "{} is a PyTorch pickle; this engine reads pickles only for OneBit checkpoints (a \
         restricted reader, nothing is executed) — convert it to safetensors, e.g. \
         `python -c \"import torch; from safetensors.torch import save_file; \
         save_file(torch.load('pytorch_model.bin', weights_only=True), 'model.safetensors')\"`",
        path.display()
    )]
    Pickle { path: PathBuf },

    /// The directory has neither `model.safetensors` nor `model.safetensors.index.json`.
    #[error(
        "{}: no model.safetensors or model.safetensors.index.json found{}",
        dir.display(),
        if found.is_empty() { String::new() } else { format!(" (found: {})", found.join(", ")) }
    )]
    NoWeights { dir: PathBuf, found: Vec<String> },

    /// A safetensors file (or the shard index) is truncated, corrupt or inconsistent.
    #[error("{}: {message}", path.display())]
    Safetensors { path: PathBuf, message: String },

    /// A tensor the family requires is absent.
    #[error("tensor {name} is missing from {}", path.display())]
    MissingTensor { name: String, path: PathBuf },

    /// Tensors that no part of the model uses (a sign of a wrongly detected family).
    #[error(
        "{}: {count} unexpected tensor(s) for this family: {}{}",
        path.display(),
        names.join(", "),
        if *count > names.len() { ", ..." } else { "" }
    )]
    UnexpectedTensors {
        /// The first few names (sorted).
        names: Vec<String>,
        /// How many there are in all.
        count: usize,
        path: PathBuf,
    },

    /// A tensor has a shape other than the config implies.
    #[error("tensor {name} in {}: shape {found:?}, expected {expected:?}", path.display())]
    Shape {
        name: String,
        path: PathBuf,
        expected: Vec<usize>,
        found: Vec<usize>,
    },

    /// A tensor is stored in a dtype the family does not allow.
    #[error("tensor {name} in {}: dtype {found}, expected one of {expected}", path.display())]
    Dtype {
        name: String,
        path: PathBuf,
        expected: String,
        found: String,
    },

    /// A packed 2-bit ternary code of 3, which no writer produces.
    #[error(
        "tensor {name}: packed code 3 at byte [{packed_row}, {col}] (weight row {row}, \
         column {col}); codes must be 0, 1 or 2"
    )]
    PackedCode3 {
        name: String,
        packed_row: usize,
        row: usize,
        col: usize,
    },

    /// A tensor's values are unusable (e.g. a non-positive `weight_scale`).
    #[error("tensor {name} in {}: {message}", path.display())]
    Value {
        name: String,
        path: PathBuf,
        message: String,
    },

    /// A pre-sharded checkpoint was opened as a whole model.
    #[error(
        "{}: this checkpoint is pre-sharded for tensor parallelism over {world} ranks (one file \
         per rank); serve it with `up --tp {world}`, or compress the source without --tp",
        dir.display()
    )]
    Presharded { dir: PathBuf, world: usize },

    /// A rank's file was asked for with another tensor-parallel size than it was written for.
    #[error(
        "{}: the checkpoint is pre-sharded for --tp {stored} but --tp {requested} was asked \
         for; use --tp {stored}, or recompress the source with --tp {requested}",
        dir.display()
    )]
    TensorParallelMismatch {
        dir: PathBuf,
        stored: usize,
        requested: usize,
    },

    /// A file's content does not match `manifest.json`, or the manifest is missing or wrong.
    #[error("{}: {message}", path.display())]
    Integrity { path: PathBuf, message: String },

    /// The restricted pickle reader met something other than tensor storage records.
    #[error(
        "{}: refused: {reason}. Only state dicts of tensors are read (nothing is executed); \
         convert it once where you trust it, e.g. `python -c \"import torch; from \
         safetensors.torch import save_file; save_file(torch.load('pytorch_model.bin', \
         weights_only=True), 'model.safetensors')\"`",
        path.display()
    )]
    PickleRefused { path: PathBuf, reason: String },

    /// A kernels-crate layout rejected the converted data.
    #[error("tensor {name}: {source}")]
    Kernel {
        name: String,
        source: bitnet_kernels::KernelError,
    },
}

impl CheckpointError {
    /// Shorthand for a [`CheckpointError::Config`].
    pub(crate) fn config(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        CheckpointError::Config {
            path: path.into(),
            message: message.into(),
        }
    }

    /// Shorthand for a [`CheckpointError::Io`].
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        CheckpointError::Io {
            path: path.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unexpected_tensors_lists_names_and_ellipsis() {
        let e = CheckpointError::UnexpectedTensors {
            names: vec!["a".into(), "b".into()],
            count: 5,
            path: PathBuf::from("/m/model.safetensors"),
        };
        assert_eq!(
            e.to_string(),
            "/m/model.safetensors: 5 unexpected tensor(s) for this family: a, b, ..."
        );
    }

    #[test]
    fn messages_are_one_line() {
        let e = CheckpointError::Pickle {
            path: PathBuf::from("/m/pytorch_model.bin"),
        };
        let s = e.to_string();
        assert!(!s.contains('\n'), "{s}");
        assert!(
            s.starts_with("/m/pytorch_model.bin is a PyTorch pickle"),
            "{s}"
        );
        let e = CheckpointError::NoWeights {
            dir: PathBuf::from("/m"),
            found: vec![],
        };
        assert_eq!(
            e.to_string(),
            "/m: no model.safetensors or model.safetensors.index.json found"
        );
    }
}
