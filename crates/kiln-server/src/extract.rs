//! Extractors whose rejections are [`Error`]s, so a malformed body, path or query gets the same
//! JSON error shape as everything else, with serde's message saying what is wrong.
//!
//! Every JSON request body goes through [`Json`] (or [`OptionalJson`]): it must be a JSON
//! object (serde would take `["demo","prompt"]` for a struct), and it is checked against the
//! field limits of [`Validate`] before a handler sees it.

use crate::error::Error;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use kiln_protocol::api::Validate;
use serde::de::DeserializeOwned;

/// A request body: a JSON object, deserialized, within its limits. Rejections are 400s naming
/// the problem ("unknown field `x`", "`title` is longer than 200 characters"), 413 for a body
/// over the server's limit and 415 without a JSON content type.
#[derive(Debug)]
pub(crate) struct Json<T>(pub(crate) T);

impl<S, T> FromRequest<S> for Json<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Validate,
{
    type Rejection = Error;

    async fn from_request(request: Request, state: &S) -> Result<Self, Error> {
        let axum::Json(value) =
            axum::Json::<serde_json::Value>::from_request(request, state).await?;
        from_value(value).map(Json)
    }
}

/// A request body that may be left out (empty): then `T::default()`.
#[derive(Debug)]
pub(crate) struct OptionalJson<T>(pub(crate) T);

impl<S, T> FromRequest<S> for OptionalJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Validate + Default,
{
    type Rejection = Error;

    async fn from_request(request: Request, state: &S) -> Result<Self, Error> {
        let bytes = axum::body::Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                body_error(&rejection, rejection.status(), rejection.body_text())
            })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(T::default()));
        }
        let value = serde_json::from_slice(&bytes)
            .map_err(|e| Error::BadRequest(format!("the request body is not valid JSON: {e}")))?;
        from_value(value).map(OptionalJson)
    }
}

/// The one path from a parsed body to a request type.
fn from_value<T: DeserializeOwned + Validate>(value: serde_json::Value) -> Result<T, Error> {
    if !value.is_object() {
        return Err(Error::BadRequest(format!(
            "the request body must be a JSON object, not {}",
            kind(&value)
        )));
    }
    let body: T = serde_json::from_value(value)
        .map_err(|e| Error::BadRequest(format!("invalid request body: {e}")))?;
    body.validate().map_err(|e| Error::BadRequest(e.0))?;
    Ok(body)
}

fn kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// A body that could not be read: too large is a 413, one that stopped arriving a 408
/// ([`crate::ServeConfig::body_idle_timeout`]), anything else a 400.
fn body_error(
    rejection: &(dyn std::error::Error + 'static),
    status: StatusCode,
    text: String,
) -> Error {
    let mut cause = Some(rejection);
    while let Some(error) = cause {
        if error.is::<tower_http::timeout::TimeoutError>() {
            return Error::BodyTimeout;
        }
        cause = error.source();
    }
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        Error::PayloadTooLarge
    } else if status == StatusCode::UNSUPPORTED_MEDIA_TYPE {
        Error::UnsupportedMediaType
    } else {
        Error::BadRequest(text)
    }
}

/// `Path<T>`; a path that does not parse names nothing that exists, so it is a 404.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(Error))]
pub(crate) struct Path<T>(pub(crate) T);

#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(Error))]
pub(crate) struct Query<T>(pub(crate) T);

impl From<JsonRejection> for Error {
    fn from(rejection: JsonRejection) -> Self {
        body_error(&rejection, rejection.status(), rejection.body_text())
    }
}

impl From<PathRejection> for Error {
    fn from(rejection: PathRejection) -> Self {
        Error::NotFound(format!("{} ({})", "resource", rejection.body_text()))
    }
}

impl From<QueryRejection> for Error {
    fn from(rejection: QueryRejection) -> Self {
        Error::BadRequest(rejection.body_text())
    }
}

impl<T: serde::Serialize> axum::response::IntoResponse for Json<T> {
    fn into_response(self) -> axum::response::Response {
        axum::Json(self.0).into_response()
    }
}
