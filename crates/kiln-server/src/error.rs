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
            other => Error::Internal(other.to_string()),
        }
    }
}

impl From<kiln_engine::Error> for Error {
    fn from(e: kiln_engine::Error) -> Self {
        match e {
            kiln_engine::Error::NotFound(what) => Error::NotFound(what),
            kiln_engine::Error::Invalid(msg) => Error::BadRequest(msg),
            kiln_engine::Error::Conflict(msg) => Error::Conflict(msg),
            kiln_engine::Error::Store(e) => e.into(),
            kiln_engine::Error::LimitReached(msg) => Error::TooManyRequests(msg),
            kiln_engine::Error::ShuttingDown => Error::Unavailable(e.to_string()),
            other => Error::Internal(other.to_string()),
        }
    }
}
