//! The one error type of the client. Callers (the CLI above all) decide what to tell a person and
//! which exit code to use from the variant, so the variants follow what a person can do about
//! them: start the server, fix the token, fix the request, or report a bug.

/// What went wrong talking to a kiln server. Messages are lowercase, name the server URL where
/// it helps, say what to do, and never contain a token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The base URL given to [`crate::Client::new`] cannot be used.
    #[error("invalid server URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },

    /// Nothing answered at the server's address (refused, unreachable, DNS, TLS, timeout).
    #[error(
        "cannot reach the kiln server at {url}: {reason}; start it with `kiln up`, or point \
         --url / KILN_URL at a running server"
    )]
    Connect { url: String, reason: String },

    /// The server refused the token (401), or there was none.
    #[error(
        "the kiln server at {url} refused the request: {message}; set KILN_TOKEN (or --token) to \
         a valid API token, or run kiln on the server machine with --data-dir DIR (or \
         KILN_DATA_DIR=DIR) naming its data directory, where it reads the admin token"
    )]
    Unauthorized { url: String, message: String },

    /// The thing asked for does not exist, or the caller may not see it (the API answers 404
    /// for both so that ids cannot be probed).
    /// The server's message already says what was not found ("repo \"x\" not found"), so it
    /// is shown as it is.
    #[error("{message}")]
    NotFound { message: String },

    /// Any other error status, with the server's own message.
    #[error("the server said: {message} (HTTP {status})")]
    Api { status: u16, message: String },

    /// The server answered with something that is not what the API promises.
    #[error("unexpected response from the kiln server: {0}")]
    Protocol(String),

    /// A subscription lost its connection and could not get it back in the time it was given.
    #[error("lost the connection to {url} and could not reconnect within {secs}s: {reason}")]
    GaveUp {
        url: String,
        secs: u64,
        reason: String,
    },
}

/// Shorthand used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// True when the cause is reaching or authenticating to the server rather than the request:
    /// the CLI exits 3 for these.
    pub fn is_connection(&self) -> bool {
        matches!(
            self,
            Error::Connect { .. }
                | Error::Unauthorized { .. }
                | Error::GaveUp { .. }
                | Error::InvalidUrl { .. }
        )
    }

    /// Maps an error status and its body to the variant a caller acts on. The body is the
    /// server's `ApiError` JSON; anything else (a proxy's HTML page) is summarised, not dumped.
    pub(crate) fn from_status(url: &str, status: u16, body: &[u8]) -> Error {
        let message = match serde_json::from_slice::<kiln_protocol::api::ApiError>(body) {
            Ok(api) => api.error,
            Err(_) => {
                let text = String::from_utf8_lossy(body);
                let text = text.trim();
                if text.is_empty() || text.len() > 200 || text.starts_with('<') {
                    format!("HTTP {status} without an error message")
                } else {
                    text.to_string()
                }
            }
        };
        match status {
            401 => Error::Unauthorized {
                url: url.to_string(),
                message,
            },
            404 => Error::NotFound { message },
            _ => Error::Api { status, message },
        }
    }

    /// Turns a transport error into `Connect` with its innermost cause ("connection refused"),
    /// which is what a person needs; reqwest's own message is mostly the URL again.
    pub(crate) fn transport(url: &str, err: &(dyn std::error::Error + 'static)) -> Error {
        Error::Connect {
            url: url.to_string(),
            reason: root_cause(err),
        }
    }
}

/// The deepest error in a source chain, as text.
pub(crate) fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = err;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_what_a_caller_acts_on() {
        let url = "http://127.0.0.1:7800";
        let body = br#"{"error":"session s-0123456789abcdef not found"}"#;
        let err = Error::from_status(url, 404, body);
        assert!(matches!(&err, Error::NotFound { message } if message.contains("s-0123")));
        // Said once, not "not found: session … not found".
        assert_eq!(err.to_string(), "session s-0123456789abcdef not found");

        let err = Error::from_status(url, 401, br#"{"error":"missing bearer token"}"#);
        assert!(err.is_connection());
        let text = err.to_string();
        assert!(
            text.contains("missing bearer token") && text.contains("KILN_TOKEN"),
            "{text}"
        );

        let err = Error::from_status(url, 400, br#"{"error":"bad repo name"}"#);
        assert!(
            matches!(err, Error::Api { status: 400, ref message } if message == "bad repo name")
        );
        assert!(!err.is_connection());

        let err = Error::from_status(url, 502, b"<html>Bad Gateway</html>");
        assert_eq!(
            err.to_string(),
            "the server said: HTTP 502 without an error message (HTTP 502)"
        );
        let err = Error::from_status(url, 500, b"plain words");
        assert!(err.to_string().contains("plain words"));
    }
}
