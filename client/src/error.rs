//! `ClientError`: every way a call of [`crate::Client`] can fail, with the one mapping from
//! `tonic::Status` to it.

use std::time::Duration;

/// Errors of the client SDK.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The address is not `host:port` or `http://host:port`.
    #[error("invalid server address {addr:?}: {reason}")]
    InvalidAddress {
        /// The address as given.
        addr: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The connection could not be established (refused, unreachable, handshake failed).
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The address as given.
        addr: String,
        /// The transport error.
        #[source]
        source: tonic::transport::Error,
    },
    /// A connect timeout or a request deadline passed.
    #[error("{op} timed out after {after:?}")]
    Timeout {
        /// What was being done: "connect", "generate", "abort", ...
        op: &'static str,
        /// The limit that passed.
        after: Duration,
    },
    /// The server answered a call with a non-OK gRPC status (`INVALID_ARGUMENT` for a bad
    /// request, `RESOURCE_EXHAUSTED` when the server is full, `UNAVAILABLE` when it is gone...).
    #[error("{op} failed with {code:?}: {message}")]
    Status {
        /// The call: "generate", "abort", ...
        op: &'static str,
        /// The gRPC status code.
        code: tonic::Code,
        /// The server's message.
        message: String,
    },
    /// The server failed a running generation in-band (a `GenerateError` message).
    #[error("request {request_id} failed ({code}): {message}")]
    Stream {
        /// The request that failed.
        request_id: String,
        /// The gRPC code name the server gave, e.g. `"INTERNAL"`.
        code: String,
        /// The server's message.
        message: String,
        /// Extra detail (may be empty).
        details: String,
    },
    /// The server sent something this client cannot interpret (a missing field, an unknown
    /// finish reason, a stream that ended before its final message).
    #[error("protocol error: {message}")]
    Protocol {
        /// What was wrong.
        message: String,
    },
}

impl ClientError {
    /// The gRPC status code behind this error, where there is one (`Stream` parses its code name).
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            ClientError::Status { code, .. } => Some(*code),
            ClientError::Timeout { .. } => Some(tonic::Code::DeadlineExceeded),
            ClientError::Stream { code, .. } => Some(code_from_name(code)),
            _ => None,
        }
    }

    /// True when the server rejected the request's parameters (`INVALID_ARGUMENT`).
    pub fn is_invalid_argument(&self) -> bool {
        self.code() == Some(tonic::Code::InvalidArgument)
    }

    /// Maps a status of call `op` sent with deadline `deadline` (the one mapping of the crate).
    pub(crate) fn from_status(
        op: &'static str,
        status: tonic::Status,
        deadline: Option<Duration>,
    ) -> Self {
        // tonic enforces the `grpc-timeout` it sends too, and reports its own expiry as
        // CANCELLED "Timeout expired"; the server reports DEADLINE_EXCEEDED.
        let local_expiry =
            status.code() == tonic::Code::Cancelled && status.message() == "Timeout expired";
        match (status.code(), deadline) {
            (tonic::Code::DeadlineExceeded, Some(after)) => ClientError::Timeout { op, after },
            (_, Some(after)) if local_expiry => ClientError::Timeout { op, after },
            (code, _) => ClientError::Status {
                op,
                code,
                message: status.message().to_string(),
            },
        }
    }

    pub(crate) fn protocol(message: impl Into<String>) -> Self {
        ClientError::Protocol {
            message: message.into(),
        }
    }
}

/// Parses a gRPC code name such as `"INVALID_ARGUMENT"` (unknown names are `Unknown`).
pub fn code_from_name(name: &str) -> tonic::Code {
    use tonic::Code::*;
    match name.trim().to_ascii_uppercase().as_str() {
        "OK" => Ok,
        "CANCELLED" => Cancelled,
        "INVALID_ARGUMENT" => InvalidArgument,
        "DEADLINE_EXCEEDED" => DeadlineExceeded,
        "NOT_FOUND" => NotFound,
        "ALREADY_EXISTS" => AlreadyExists,
        "PERMISSION_DENIED" => PermissionDenied,
        "RESOURCE_EXHAUSTED" => ResourceExhausted,
        "FAILED_PRECONDITION" => FailedPrecondition,
        "ABORTED" => Aborted,
        "OUT_OF_RANGE" => OutOfRange,
        "UNIMPLEMENTED" => Unimplemented,
        "INTERNAL" => Internal,
        "UNAVAILABLE" => Unavailable,
        "DATA_LOSS" => DataLoss,
        "UNAUTHENTICATED" => Unauthenticated,
        _ => Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_exceeded_with_a_deadline_is_a_timeout() {
        let d = Duration::from_millis(5);
        let e =
            ClientError::from_status("abort", tonic::Status::deadline_exceeded("late"), Some(d));
        assert!(matches!(e, ClientError::Timeout { op: "abort", after } if after == d));
        let e = ClientError::from_status("abort", tonic::Status::deadline_exceeded("late"), None);
        assert_eq!(e.code(), Some(tonic::Code::DeadlineExceeded));
        assert!(matches!(e, ClientError::Status { .. }));
        let e = ClientError::from_status("x", tonic::Status::cancelled("Timeout expired"), Some(d));
        assert!(matches!(e, ClientError::Timeout { op: "x", .. }));
        let e = ClientError::from_status("x", tonic::Status::cancelled("by peer"), Some(d));
        assert_eq!(e.code(), Some(tonic::Code::Cancelled));
    }

    #[test]
    fn code_names_parse() {
        assert_eq!(
            code_from_name("RESOURCE_EXHAUSTED"),
            tonic::Code::ResourceExhausted
        );
        assert_eq!(code_from_name("internal"), tonic::Code::Internal);
        assert_eq!(code_from_name("what"), tonic::Code::Unknown);
    }
}
