//! The one place this crate builds its HTTP client and turns a forge's error statuses into
//! [`ForgeError`]s. Bodies of errors are read for the forge's `message` only, cut short; tokens
//! travel in sensitive headers and never appear in a message.

use crate::error::ForgeError;
use kiln_core::{Secret, human_duration, now_ms};
use reqwest::header::{HeaderMap, HeaderValue};
use std::time::Duration;

/// Every request gives up after this long; a forge that hangs fails the call, not the server.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Error bodies are read up to this many bytes for their message.
const MAX_ERROR_BODY: usize = 64 * 1024;

pub(crate) fn client(base: &str) -> Result<reqwest::Client, ForgeError> {
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none());
    if kiln_core::url_host(base)
        .is_some_and(|h| h == "localhost" || h.starts_with("127.") || h == "::1")
    {
        builder = builder.no_proxy();
    }
    builder.build().map_err(|e| ForgeError::Unreachable {
        forge: "GitHub",
        what: "a client".into(),
        message: e.to_string(),
    })
}

/// `Authorization: Bearer TOKEN`, marked sensitive so no debug output of the request shows it.
pub(crate) fn bearer(token: &Secret<String>) -> Result<HeaderValue, ForgeError> {
    let mut value = HeaderValue::from_str(&format!("Bearer {}", token.expose())).map_err(|_| {
        ForgeError::Protocol {
            forge: "GitHub",
            what: "a token".into(),
            message: "the token holds characters not allowed in a header".into(),
        }
    })?;
    value.set_sensitive(true);
    Ok(value)
}

/// Sends `request`; a success status comes back as the response, any other as an error named
/// after `what`.
pub(crate) async fn send(
    forge: &'static str,
    what: &str,
    request: reqwest::RequestBuilder,
) -> Result<reqwest::Response, ForgeError> {
    let response = request.send().await.map_err(|e| ForgeError::Unreachable {
        forge,
        what: what.to_string(),
        message: describe(&e),
    })?;
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let headers = response.headers().clone();
    let message = error_message(response).await;
    Err(status_error(
        forge,
        what,
        status.as_u16(),
        &headers,
        message,
    ))
}

pub(crate) fn status_error(
    forge: &'static str,
    what: &str,
    status: u16,
    headers: &HeaderMap,
    message: String,
) -> ForgeError {
    let what = what.to_string();
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let exhausted = header("x-ratelimit-remaining") == Some("0");
    let retry_after = header("retry-after").and_then(|v| v.trim().parse::<u64>().ok());
    if status == 429 || (status == 403 && (exhausted || retry_after.is_some())) {
        let reset_at_ms = header("x-ratelimit-reset")
            .and_then(|v| v.trim().parse::<i64>().ok())
            .map(|s| s * 1000)
            .or_else(|| retry_after.map(|s| now_ms() + s as i64 * 1000));
        let retry_in = match reset_at_ms {
            Some(at) => human_duration(Duration::from_millis((at - now_ms()).max(0) as u64)),
            None => "a minute".to_string(),
        };
        return ForgeError::RateLimited {
            forge,
            what,
            reset_at_ms,
            retry_in,
        };
    }
    match status {
        401 => ForgeError::Unauthorized { forge, what },
        403 => ForgeError::Forbidden {
            forge,
            what,
            message,
        },
        404 => ForgeError::NotFound { forge, what },
        422 => ForgeError::Invalid {
            forge,
            what,
            message,
        },
        _ => ForgeError::Protocol {
            forge,
            what,
            message: format!("status {status}: {message}"),
        },
    }
}

/// The forge's `message` (and the `errors[].message`s GitHub adds on 422), cut short.
async fn error_message(response: reqwest::Response) -> String {
    let bytes = match response.bytes().await {
        Ok(b) => b,
        Err(_) => return "no readable body".into(),
    };
    let bytes = &bytes[..bytes.len().min(MAX_ERROR_BODY)];
    let mut parts = Vec::new();
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(bytes) {
        if let Some(m) = value.get("message").and_then(|m| m.as_str()) {
            parts.push(m.to_string());
        }
        for e in value
            .get("errors")
            .and_then(|e| e.as_array())
            .into_iter()
            .flatten()
        {
            if let Some(m) = e.get("message").and_then(|m| m.as_str()) {
                parts.push(m.to_string());
            }
        }
    }
    let text = if parts.is_empty() {
        "no message".to_string()
    } else {
        parts.join("; ")
    };
    kiln_core::redact_urls(&text.chars().take(300).collect::<String>())
}

/// A transport error with its causes, without the URL's query (which never holds a token here,
/// but may hold a code).
fn describe(error: &reqwest::Error) -> String {
    let mut text = if error.is_timeout() {
        "timed out".to_string()
    } else if error.is_connect() {
        "connection failed".to_string()
    } else {
        "request failed".to_string()
    };
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    kiln_core::redact_urls(&text)
}
