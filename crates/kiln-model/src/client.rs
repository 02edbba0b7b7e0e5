//! [`ModelClient`]: the one place this crate builds its HTTP client and sends requests. It picks
//! the endpoint and headers for the provider, retries what is worth retrying, and turns error
//! responses into the provider's own message.

use std::error::Error as _;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use reqwest::{StatusCode, Url};

use crate::{
    ModelConfig, ModelError, ModelRequest, ModelStream, ProviderKind, anthropic, openai, retry,
};

/// A client for one configured model. Cheap to clone: clones share the connection pool.
#[derive(Clone, Debug)]
pub struct ModelClient {
    config: Arc<ModelConfig>,
    http: reqwest::Client,
    endpoint: Url,
    /// `scheme://host:port` of the endpoint: all that error messages show of it, since a base URL
    /// may carry credentials.
    origin: String,
    /// The API key header, marked sensitive so it never shows in debug output.
    auth: Option<(HeaderName, HeaderValue)>,
}

/// What one failed attempt leaves for the retry decision.
struct Failure {
    error: ModelError,
    retry_after: Option<Duration>,
    /// The provider's `x-should-retry` header, which overrides the status-based decision.
    should_retry: Option<bool>,
}

impl From<ModelError> for Failure {
    fn from(error: ModelError) -> Self {
        Failure {
            error,
            retry_after: None,
            should_retry: None,
        }
    }
}

impl ModelClient {
    pub fn new(config: ModelConfig) -> Result<ModelClient, ModelError> {
        let base = config.base_url.trim_end_matches('/');
        let path = match config.provider {
            ProviderKind::Anthropic => "/v1/messages",
            ProviderKind::OpenAi => "/chat/completions",
        };
        let endpoint = Url::parse(&format!("{base}{path}")).map_err(|e| {
            ModelError::Client(format!(
                "the model base URL is not a valid URL ({e}); fix it"
            ))
        })?;
        let origin = endpoint.origin().ascii_serialization();
        let auth = match &config.api_key {
            None => None,
            Some(key) => {
                let (name, value) = match config.provider {
                    ProviderKind::Anthropic => {
                        (HeaderName::from_static("x-api-key"), key.expose().clone())
                    }
                    ProviderKind::OpenAi => (
                        reqwest::header::AUTHORIZATION,
                        format!("Bearer {}", key.expose()),
                    ),
                };
                let mut value = HeaderValue::from_str(&value).map_err(|_| {
                    ModelError::Client(format!(
                        "the API key contains characters not allowed in an HTTP header; check {}",
                        config.provider.api_key_var()
                    ))
                })?;
                value.set_sensitive(true);
                Some((name, value))
            }
        };
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(config.connect_timeout);
        // A local server (Ollama, vLLM, a test fake) is never reached through a proxy.
        if is_loopback(&endpoint) {
            builder = builder.no_proxy();
        }
        let http = builder.build().map_err(|e| ModelError::Client(chain(e)))?;
        Ok(ModelClient {
            config: Arc::new(config),
            http,
            endpoint,
            origin,
            auth,
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Sends the request and returns once the response headers arrived with a 2xx. Retries
    /// connection errors, 408, 409, 429, 5xx and Anthropic's 529 with exponential backoff and
    /// jitter, honouring `retry-after` / `retry-after-ms`, up to `retry.max_retries` times. Other
    /// 4xx fail at once with the provider's error message.
    pub async fn stream(&self, request: &ModelRequest) -> Result<ModelStream, ModelError> {
        let config = &*self.config;
        let max_tokens = request.max_tokens.unwrap_or(config.max_tokens);
        let body = match config.provider {
            ProviderKind::Anthropic => anthropic::request_body(&config.model, max_tokens, request),
            ProviderKind::OpenAi => {
                let official = self.endpoint.host_str() == Some("api.openai.com");
                openai::request_body(&config.model, max_tokens, official, request)
            }
        };
        let body = Bytes::from(body.to_string());
        let mut attempt = 0;
        loop {
            let failure = match self.attempt(body.clone()).await {
                Ok(response) => {
                    return Ok(ModelStream::new(
                        response,
                        config.provider,
                        config.idle_timeout,
                    ));
                }
                Err(failure) => failure,
            };
            let retryable = failure
                .should_retry
                .unwrap_or_else(|| failure.error.is_retryable());
            if !retryable || attempt >= config.retry.max_retries {
                return Err(failure.error);
            }
            let delay = retry::delay(&config.retry, attempt, failure.retry_after);
            attempt += 1;
            tracing::warn!(
                model = %config.display_name(),
                attempt,
                max_retries = config.retry.max_retries,
                ?delay,
                error = %failure.error,
                "model request failed; retrying"
            );
            tokio::time::sleep(delay).await;
        }
    }

    async fn attempt(&self, body: Bytes) -> Result<reqwest::Response, Failure> {
        let config = &*self.config;
        let mut request = self
            .http
            .post(self.endpoint.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "text/event-stream")
            .body(body);
        if config.provider == ProviderKind::Anthropic {
            request = request.header("anthropic-version", anthropic::API_VERSION);
        }
        if let Some((name, value)) = &self.auth {
            request = request.header(name, value.clone());
        }
        let response = match tokio::time::timeout(config.idle_timeout, request.send()).await {
            Err(_) => return Err(ModelError::IdleTimeout.into()),
            Ok(Err(e)) => {
                return Err(ModelError::Connect(format!("{}: {}", self.origin, chain(e))).into());
            }
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        let headers = response.headers();
        let should_retry = match headers.get("x-should-retry").map(HeaderValue::as_bytes) {
            Some(b"true") => Some(true),
            Some(b"false") => Some(false),
            _ => None,
        };
        let retry_after = retry::retry_after(headers, SystemTime::now());
        let content_type = header_str(headers, CONTENT_TYPE).to_ascii_lowercase();
        if status.is_success()
            && (content_type.is_empty() || content_type.starts_with("text/event-stream"))
        {
            return Ok(response);
        }
        let text = match tokio::time::timeout(config.idle_timeout, response.text()).await {
            Ok(Ok(text)) => text,
            Ok(Err(e)) => format!("(the error body could not be read: {})", chain(e)),
            Err(_) => "(the error body did not arrive in time)".to_string(),
        };
        let error = if status.is_success() {
            unexpected_body(&content_type, &text)
        } else {
            ModelError::Http {
                status: status.as_u16(),
                message: self.error_message(status, &text),
            }
        };
        Err(Failure {
            error,
            retry_after,
            should_retry,
        })
    }

    /// Checks that the endpoint answers and takes the key, without spending tokens: one
    /// `GET …/models` (documented by Anthropic and OpenAI, and served by compatible servers).
    /// Returns how long the answer took; no retries (a health check reports, it does not insist).
    pub async fn probe(&self, timeout: Duration) -> Result<Duration, ModelError> {
        let mut url = self.endpoint.clone();
        let path = match self.config.provider {
            ProviderKind::Anthropic => "/v1/models",
            // The base URL ends in `/v1` (or the server's equivalent) for chat completions.
            ProviderKind::OpenAi => "/models",
        };
        let base = self.endpoint.path();
        let prefix = base
            .strip_suffix(match self.config.provider {
                ProviderKind::Anthropic => "/v1/messages",
                ProviderKind::OpenAi => "/chat/completions",
            })
            .unwrap_or("");
        url.set_path(&format!("{prefix}{path}"));
        let mut request = self.http.get(url).timeout(timeout);
        if self.config.provider == ProviderKind::Anthropic {
            request = request.header("anthropic-version", anthropic::API_VERSION);
        }
        if let Some((name, value)) = &self.auth {
            request = request.header(name, value.clone());
        }
        let started = std::time::Instant::now();
        let response = request.send().await.map_err(|e| {
            if e.is_timeout() {
                ModelError::IdleTimeout
            } else {
                ModelError::Connect(format!("{}: {}", self.origin, chain(e)))
            }
        })?;
        let elapsed = started.elapsed();
        let status = response.status();
        if status.is_success() {
            return Ok(elapsed);
        }
        let text = response.text().await.unwrap_or_default();
        Err(ModelError::Http {
            status: status.as_u16(),
            message: self.error_message(status, &text),
        })
    }

    /// The provider's message from an error body, with what to do about a rejected key.
    fn error_message(&self, status: StatusCode, body: &str) -> String {
        let mut message = provider_message(body).unwrap_or_else(|| {
            let body = body.trim();
            if body.is_empty() {
                status
                    .canonical_reason()
                    .unwrap_or("no message")
                    .to_string()
            } else {
                truncate(body, 300)
            }
        });
        if status == StatusCode::UNAUTHORIZED {
            let var = self.config.provider.api_key_var();
            message.push_str(&match self.config.api_key {
                None => format!(" (no API key was sent; set {var})"),
                Some(_) => format!(" (the API key was rejected; check {var})"),
            });
        }
        message
    }
}

/// `error.message` (Anthropic, OpenAI), `error` as a string (Ollama), `message` or `detail`
/// (FastAPI-based servers such as vLLM).
fn provider_message(body: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(body).ok()?;
    [
        &value["error"]["message"],
        &value["error"],
        &value["message"],
        &value["detail"],
    ]
    .into_iter()
    .find_map(|v| v.as_str())
    .map(str::to_string)
}

/// A 2xx that is not an event stream: a server ignoring `stream: true`, or an error in JSON.
fn unexpected_body(content_type: &str, body: &str) -> ModelError {
    let value: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    let error = &value["error"];
    if !error.is_null() {
        let kind = error["type"]
            .as_str()
            .or_else(|| error["code"].as_str())
            .unwrap_or("error");
        let message = error["message"]
            .as_str()
            .or_else(|| error.as_str())
            .unwrap_or("no message");
        return ModelError::Api {
            kind: kind.to_string(),
            message: message.to_string(),
        };
    }
    ModelError::Malformed(format!(
        "expected text/event-stream but got {content_type:?} ({}); does the server support streaming?",
        truncate(body.trim(), 200)
    ))
}

fn header_str(headers: &HeaderMap, name: HeaderName) -> &str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &s[..end]),
        None => s.to_string(),
    }
}

/// The error and its causes on one line, without the URL (callers add the origin).
fn chain(error: reqwest::Error) -> String {
    let error = error.without_url();
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

fn is_loopback(url: &Url) -> bool {
    match url.host_str() {
        Some("localhost") => true,
        Some(host) => host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_messages_from_the_usual_error_shapes() {
        let anthropic = r#"{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: too big"}}"#;
        assert_eq!(
            provider_message(anthropic).as_deref(),
            Some("max_tokens: too big")
        );
        let openai =
            r#"{"error":{"message":"model not found","type":"invalid_request_error","code":null}}"#;
        assert_eq!(provider_message(openai).as_deref(), Some("model not found"));
        assert_eq!(
            provider_message(r#"{"error":"no such model"}"#).as_deref(),
            Some("no such model")
        );
        assert_eq!(
            provider_message(r#"{"detail":"Not Found"}"#).as_deref(),
            Some("Not Found")
        );
        assert_eq!(provider_message("<html>bad gateway</html>"), None);
    }

    #[test]
    fn a_2xx_that_is_not_a_stream() {
        let error = unexpected_body(
            "application/json",
            r#"{"error":{"message":"quota","type":"insufficient_quota"}}"#,
        );
        assert_eq!(
            error,
            ModelError::Api {
                kind: "insufficient_quota".into(),
                message: "quota".into()
            }
        );
        let error = unexpected_body("application/json", r#"{"choices":[]}"#);
        assert!(
            matches!(&error, ModelError::Malformed(m) if m.contains("support streaming")),
            "{error}"
        );
    }

    #[test]
    fn local_hosts_skip_the_proxy() {
        for (url, local) in [
            ("http://localhost:11434/v1", true),
            ("http://127.0.0.1:8000/v1", true),
            ("http://[::1]:8000/v1", true),
            ("https://api.anthropic.com", false),
        ] {
            assert_eq!(is_loopback(&Url::parse(url).unwrap()), local, "{url}");
        }
    }

    #[test]
    fn a_key_that_cannot_be_a_header_is_refused_up_front() {
        let mut config = ModelConfig::new(ProviderKind::Anthropic, "m");
        config.api_key = Some("sk-\nbroken".to_string().into());
        let error = ModelClient::new(config).unwrap_err();
        assert!(error.to_string().contains("ANTHROPIC_API_KEY"), "{error}");
    }
}
