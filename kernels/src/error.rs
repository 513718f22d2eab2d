//! Errors of the kernels crate: shape and value checks on the inputs of ops and layouts.

use thiserror::Error;

/// An op or a layout constructor was given inputs it cannot work on.
#[derive(Debug, Error, PartialEq)]
pub enum KernelError {
    /// A buffer does not have the length the shape implies.
    #[error("{op}: {what} has {got} elements, expected {expected}")]
    Length {
        op: &'static str,
        what: &'static str,
        expected: usize,
        got: usize,
    },
    /// A ternary value outside {-1, 0, +1}.
    #[error("{op}: value {value} at index {index} is not ternary (-1, 0, +1)")]
    NotTernary {
        op: &'static str,
        index: usize,
        value: i8,
    },
    /// A packed 2-bit code of 3, which no writer produces.
    #[error("{op}: packed code 3 at row {row}, column {col} (codes must be 0, 1 or 2)")]
    PackedCode3 {
        op: &'static str,
        row: usize,
        col: usize,
    },
    /// A shape that the layout cannot represent.
    #[error("{op}: {reason}")]
    Shape { op: &'static str, reason: String },
    /// A device (GPU) failure inside an op: a launch, a copy or a library call failed.
    #[error("{op}: device error: {reason}")]
    Device { op: &'static str, reason: String },
    /// A token id outside the embedding table.
    #[error("{op}: token id {id} is outside the vocabulary (size {vocab})")]
    TokenOutOfRange {
        op: &'static str,
        id: u32,
        vocab: usize,
    },
}

/// Returns a [`KernelError::Length`] unless `got == expected`.
pub fn check_len(
    op: &'static str,
    what: &'static str,
    expected: usize,
    got: usize,
) -> Result<(), KernelError> {
    if expected == got {
        Ok(())
    } else {
        Err(KernelError::Length {
            op,
            what,
            expected,
            got,
        })
    }
}
