//! Connection options and address parsing for [`crate::Client`]: `"host:port"` or
//! `"http://host:port"` become a tonic `Endpoint` with the connect timeout applied.

use crate::error::ClientError;
use std::time::Duration;
use tonic::transport::Endpoint;

/// How [`crate::Client`] connects and how long it waits for answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientOptions {
    /// Limit on establishing the connection (TCP + HTTP/2), in [`crate::Client::connect`].
    pub connect_timeout: Duration,
    /// Deadline of every call, sent to the server as the gRPC deadline and enforced locally.
    /// For `generate` it covers the whole stream. `None`: no deadline.
    pub request_timeout: Option<Duration>,
}

impl Default for ClientOptions {
    /// 5 s to connect, no request deadline (generations can be long).
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            request_timeout: None,
        }
    }
}

impl ClientOptions {
    /// Sets [`ClientOptions::connect_timeout`].
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets [`ClientOptions::request_timeout`].
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = Some(timeout);
        self
    }
}

/// Normalises `"host:port"` / `"http://host:port"` into an endpoint URI (plaintext HTTP/2).
pub(crate) fn endpoint_uri(addr: &str) -> Result<String, ClientError> {
    let invalid = |reason: &str| ClientError::InvalidAddress {
        addr: addr.to_string(),
        reason: reason.to_string(),
    };
    let trimmed = addr.trim();
    if trimmed.is_empty() {
        return Err(invalid("empty address"));
    }
    let rest = if let Some(rest) = trimmed.strip_prefix("http://") {
        rest
    } else if trimmed.starts_with("https://") {
        return Err(invalid("TLS is not supported; use http://"));
    } else if trimmed.contains("://") {
        return Err(invalid("unknown scheme; use host:port or http://host:port"));
    } else {
        trimmed
    };
    let rest = rest.trim_end_matches('/');
    let port = rest.rsplit_once(':').map(|(_, p)| p).unwrap_or("");
    if port.is_empty() || port.parse::<u16>().is_err() || rest.ends_with(']') {
        return Err(invalid("expected host:port with a numeric port"));
    }
    Ok(format!("http://{rest}"))
}

/// Builds the tonic endpoint for `addr` with the options' timeouts.
pub(crate) fn endpoint(addr: &str, options: &ClientOptions) -> Result<Endpoint, ClientError> {
    let uri = endpoint_uri(addr)?;
    let endpoint = Endpoint::from_shared(uri).map_err(|e| ClientError::InvalidAddress {
        addr: addr.to_string(),
        reason: e.to_string(),
    })?;
    Ok(endpoint
        .connect_timeout(options.connect_timeout)
        .tcp_nodelay(true))
}

#[cfg(test)]
mod tests {
    use super::endpoint_uri;

    #[test]
    fn accepts_host_port_and_http_uris() {
        assert_eq!(
            endpoint_uri("127.0.0.1:50051").unwrap(),
            "http://127.0.0.1:50051"
        );
        assert_eq!(
            endpoint_uri("http://localhost:1/").unwrap(),
            "http://localhost:1"
        );
        assert_eq!(endpoint_uri("[::1]:7").unwrap(), "http://[::1]:7");
    }

    #[test]
    fn rejects_bad_addresses() {
        for bad in [
            "",
            "localhost",
            "host:",
            "host:port",
            "https://h:1",
            "ftp://h:1",
            "[::1]",
        ] {
            assert!(endpoint_uri(bad).is_err(), "{bad:?} accepted");
        }
    }
}
