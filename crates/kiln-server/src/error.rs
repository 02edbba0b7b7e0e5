//! The one place errors become HTTP responses. Clients get a JSON [`ApiError`] saying what is
//! wrong; internal errors are logged in full and reach the client as a generic message.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kiln_protocol::api::ApiError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    BadRequest(String),
    #[error(
        "missing or invalid token: send `Authorization: Bearer <token>` (see DATA/admin.token)"
    )]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// A limit on what one caller may hold or do is reached (429).
    #[error("{0}")]
    TooManyRequests(String),
    #[error("{0}")]
    Unavailable(String),
    /// A forge (GitHub) refused or failed a call made for the caller (502).
    #[error("{0}")]
    BadGateway(String),
    #[error("the request body is larger than the server takes ({} KiB)", crate::BODY_LIMIT / 1024)]
    PayloadTooLarge,
    #[error("send the request body as JSON, with `Content-Type: application/json`")]
    UnsupportedMediaType,
    #[error("this method is not allowed here; /api/openapi.json lists each path's methods")]
    MethodNotAllowed,
    #[error("the request body stopped arriving; send it without pauses")]
    BodyTimeout,
    #[error("internal error: {0}")]
    Internal(String),
}

pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = match &self {
            Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::Unauthorized => StatusCode::UNAUTHORIZED,
            Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::Conflict(_) => StatusCode::CONFLICT,
            Error::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::BadGateway(_) => StatusCode::BAD_GATEWAY,
            Error::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Error::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Error::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let message = match &self {
            Error::Internal(detail) => {
                tracing::error!(error = %detail, "internal error");
                "internal error; the server log has the details".to_string()
            }
            other => other.to_string(),
        };
        (status, Json(ApiError { error: message })).into_response()
    }
}

impl From<kiln_store::Error> for Error {
    fn from(e: kiln_store::Error) -> Self {
        match e {
            kiln_store::Error::NotFound(what) => Error::NotFound(what),
            kiln_store::Error::Conflict(msg) => Error::Conflict(msg),
            kiln_store::Error::Invalid(msg) => Error::BadRequest(msg),
            e @ (kiln_store::Error::Sqlite(_)
            | kiln_store::Error::Io(_)
            | kiln_store::Error::Json(_)
            | kiln_store::Error::Join) => Error::Internal(e.to_string()),
        }
    }
}

impl From<kiln_engine::Error> for Error {
    fn from(e: kiln_engine::Error) -> Self {
        match e {
            kiln_engine::Error::NotFound(what) => Error::NotFound(what),
            kiln_engine::Error::Invalid(msg) => Error::BadRequest(msg),
            kiln_engine::Error::NotRetryable { .. } | kiln_engine::Error::RepoInUse { .. } => {
                Error::Conflict(e.to_string())
            }
            kiln_engine::Error::NotStopped { .. } => Error::Unavailable(e.to_string()),
            kiln_engine::Error::Store(e) => e.into(),
            kiln_engine::Error::LimitReached(msg) => Error::TooManyRequests(msg),
            kiln_engine::Error::ShuttingDown => Error::Unavailable(e.to_string()),
            kiln_engine::Error::Forbidden(msg) => Error::Forbidden(msg),
            kiln_engine::Error::Sandbox(e) => e.into(),
            kiln_engine::Error::Fleet(e) => e.into(),
            kiln_engine::Error::Config(msg) => Error::Internal(msg),
            // The key file or a sealed value: the operator's to fix, logged in full.
            kiln_engine::Error::Vault(e) => Error::Internal(e.to_string()),
            kiln_engine::Error::Forge(e) => e.into(),
            e @ kiln_engine::Error::NoForgeAccount { .. } => Error::Conflict(e.to_string()),
        }
    }
}

/// Forge errors: a rate limit is a 429 saying when to retry, kiln's own configuration a 400
/// (the message names the setting), anything GitHub refused or failed a 502 with its reason.
/// No message holds a token.
impl From<kiln_engine::ForgeError> for Error {
    fn from(e: kiln_engine::ForgeError) -> Self {
        use kiln_engine::ForgeError as F;
        match e {
            F::RateLimited { .. } => Error::TooManyRequests(e.to_string()),
            F::NotConfigured { .. } | F::BadRepo(_) => Error::BadRequest(e.to_string()),
            F::AppKey(_) => Error::Internal(e.to_string()),
            F::Unauthorized { .. }
            | F::Forbidden { .. }
            | F::NotFound { .. }
            | F::Invalid { .. }
            | F::SignIn { .. }
            | F::Unreachable { .. }
            | F::Protocol { .. } => Error::BadGateway(e.to_string()),
        }
    }
}

/// Errors of mirrors, checkouts, builds and the collector: the repo's upstream failing is a
/// 503 with git's message (credentials already cut out), the repo's own environment (its
/// definition, a step, a base of its packages) a 400.
impl From<kiln_engine::FleetError> for Error {
    fn from(e: kiln_engine::FleetError) -> Self {
        use kiln_engine::FleetError as Fleet;
        match e {
            Fleet::Git { .. } | Fleet::GitTimeout { .. } | Fleet::Checkout { .. } => {
                Error::Unavailable(format!(
                    "the repository could not be fetched or read; try again, or ask an admin to \
                     check the repo's URL and credentials: {e}"
                ))
            }
            Fleet::Environment(_) | Fleet::Step { .. } | Fleet::Base { .. } => {
                Error::BadRequest(e.to_string())
            }
            Fleet::BuildRunning { .. } | Fleet::Push(_) => Error::Conflict(e.to_string()),
            Fleet::Store(e) => e.into(),
            Fleet::Sandbox(e) => e.into(),
            Fleet::Io { .. } | Fleet::Snapshots { .. } => Error::Internal(e.to_string()),
        }
    }
}

/// Sandbox errors that reach a route: what the caller can act on keeps its message; the rest
/// is logged in full and generic to the client.
impl From<kiln_engine::SandboxError> for Error {
    fn from(e: kiln_engine::SandboxError) -> Self {
        use kiln_engine::SandboxError as Sandbox;
        match e {
            Sandbox::InvalidSpec(_) | Sandbox::Unsupported(_) => Error::BadRequest(e.to_string()),
            Sandbox::InUse(..) => Error::Conflict(e.to_string()),
            Sandbox::GuestGone(_) | Sandbox::Timeout(..) => {
                Error::Unavailable(format!("the sandbox did not answer ({e}); try again"))
            }
            Sandbox::NotFound(_)
            | Sandbox::SnapshotNotFound(_)
            | Sandbox::Io { .. }
            | Sandbox::Start(_)
            | Sandbox::Guest { .. }
            | Sandbox::Protocol(_) => Error::Internal(e.to_string()),
        }
    }
}

/// The last layer: an error response that is not JSON yet — axum's own 405, a rejection of an
/// extractor that is not ours (a WebSocket upgrade without its headers) — gets the
/// `{"error": …}` body every other error has, with the text it had (or the status's reason).
pub(crate) async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = if status == StatusCode::METHOD_NOT_ALLOWED {
        Error::MethodNotAllowed.to_string()
    } else {
        // Such bodies are a line of text; a larger one is not worth showing.
        axum::body::to_bytes(body, 4096)
            .await
            .ok()
            .map(|bytes| String::from_utf8_lossy(&bytes).trim().to_string())
            .filter(|text| !text.is_empty())
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_lowercase())
    };
    let mut response = (status, Json(ApiError { error: text })).into_response();
    // Keep what the original said about the connection or allowed methods.
    for (name, value) in parts.headers {
        if let Some(name) = name
            && name != axum::http::header::CONTENT_TYPE
            && name != axum::http::header::CONTENT_LENGTH
        {
            response.headers_mut().insert(name, value);
        }
    }
    response
}
