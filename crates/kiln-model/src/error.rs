//! The one error type of this crate, and which of its cases are worth retrying.

/// A failed model call. Messages are meant for the person running kiln.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    /// The HTTP client could not be built (bad base URL, TLS setup).
    #[error("cannot set up the model client: {0}")]
    Client(String),
    /// No response: DNS, TCP, TLS or the request could not be sent.
    #[error("cannot reach the model provider: {0}; check the base URL and the network")]
    Connect(String),
    /// A non-2xx answer; `message` is the provider's own error message (with a hint for 401).
    #[error("the model provider answered HTTP {status}: {message}")]
    Http { status: u16, message: String },
    /// An error event inside a 2xx stream, e.g. Anthropic's `overloaded_error`.
    #[error("the model provider reported {kind} mid-stream: {message}")]
    Api { kind: String, message: String },
    /// The body ended before `message_stop` / `data: [DONE]`.
    #[error("the model response was cut off before it finished; retry the request")]
    StreamCut,
    /// A chunk that is not valid SSE or JSON, or does not fit the stream so far.
    #[error("the model provider sent a malformed stream: {0}")]
    Malformed(String),
    /// Nothing arrived for `idle_timeout` (waiting for headers or between chunks).
    #[error("the model provider went silent for longer than the idle timeout; retry, or raise it")]
    IdleTimeout,
}

impl ModelError {
    /// A short fixed word for the kind of failure (metrics label it): `client`, `connect`,
    /// `http_4xx`, `http_5xx`, `http_other`, `api`, `stream_cut`, `malformed`, `idle_timeout`.
    pub fn kind(&self) -> &'static str {
        match self {
            ModelError::Client(_) => "client",
            ModelError::Connect(_) => "connect",
            ModelError::Http { status, .. } => match status / 100 {
                4 => "http_4xx",
                5 => "http_5xx",
                _ => "http_other",
            },
            ModelError::Api { .. } => "api",
            ModelError::StreamCut => "stream_cut",
            ModelError::Malformed(_) => "malformed",
            ModelError::IdleTimeout => "idle_timeout",
        }
    }

    /// Whether sending the same request again may succeed: connection problems, cut or stalled
    /// streams, 408/409/429/5xx (including Anthropic's 529) and overload/server errors mid-stream.
    pub fn is_retryable(&self) -> bool {
        match self {
            ModelError::Connect(_) | ModelError::StreamCut | ModelError::IdleTimeout => true,
            ModelError::Http { status, .. } => is_retryable_status(*status),
            ModelError::Api { kind, .. } => matches!(
                kind.as_str(),
                "overloaded_error" | "api_error" | "rate_limit_error" | "server_error" | "timeout"
            ),
            ModelError::Client(_) | ModelError::Malformed(_) => false,
        }
    }
}

pub(crate) fn is_retryable_status(status: u16) -> bool {
    matches!(status, 408 | 409 | 429 | 500..=599)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_statuses() {
        for status in [408, 409, 429, 500, 502, 503, 529] {
            assert!(is_retryable_status(status), "{status}");
        }
        for status in [400, 401, 403, 404, 413, 422] {
            assert!(!is_retryable_status(status), "{status}");
        }
    }

    #[test]
    fn mid_stream_overload_is_retryable_but_invalid_request_is_not() {
        let api = |kind: &str| ModelError::Api {
            kind: kind.into(),
            message: String::new(),
        };
        assert!(api("overloaded_error").is_retryable());
        assert!(!api("invalid_request_error").is_retryable());
        assert!(!ModelError::Malformed("x".into()).is_retryable());
    }

    #[test]
    fn kinds_name_the_status_class() {
        let http = |status| ModelError::Http {
            status,
            message: String::new(),
        };
        assert_eq!(http(429).kind(), "http_4xx");
        assert_eq!(http(529).kind(), "http_5xx");
        assert_eq!(ModelError::StreamCut.kind(), "stream_cut");
    }
}
