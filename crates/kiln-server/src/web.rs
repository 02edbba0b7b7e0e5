//! The web UI's files, embedded at build time (`build.rs` reads `web/dist`) and served from the
//! same port as the API. The UI is a single page: every page URL (`/`, `/new`,
//! `/sessions/{id}`, `/repos`, `/repos/{name}`, `/join/{code}`, `/stats`) answers with `index.html`, so a
//! deep link works on reload, and the page's router draws the rest. The UI is a client of the
//! public API only; nothing here knows of sessions or users.
//!
//! Every page and file goes out with a strict Content-Security-Policy (scripts and styles only
//! from this origin, no inline script, no framing), `nosniff`, and caching that fits: hashed
//! files under `/assets/` are immutable for a year, `index.html` is revalidated every time so
//! a new build is picked up at once.

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// One embedded file.
pub(crate) struct Asset {
    /// Its URL path (`/index.html`, `/assets/index-3f2a.js`).
    pub(crate) path: &'static str,
    pub(crate) bytes: &'static [u8],
    /// The same, gzipped by the build, when it is worth it.
    pub(crate) gzip: Option<&'static [u8]>,
}

include!(concat!(env!("OUT_DIR"), "/web_assets.rs"));

/// The policy every page and file is sent with. `connect-src 'self'` covers the API and its
/// WebSockets on the same origin; `style-src 'self'` keeps out `<style>` and `style=""` in
/// markup (the UI sets styles through the DOM only when it must).
pub(crate) const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; font-src 'self'; connect-src 'self'; object-src 'none'; \
    base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The page shown when the binary was built without the web UI.
const NOT_BUILT: &str = "<!doctype html><html lang=\"en\"><meta charset=\"utf-8\">\
    <title>kiln: web UI not built</title><h1>The web UI was not built</h1>\
    <p>This kiln binary was compiled without its web UI. Run <code>scripts/build-web</code>, \
    then build kiln again (<code>cargo build --release --bins</code>).</p>\
    <p>The API is at <a href=\"/api/openapi.json\">/api/openapi.json</a>; the \
    <code>kiln</code> CLI works without the UI.</p></html>";

/// The page routes and the files.
pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(page))
        .route("/new", get(page))
        .route("/sessions/{id}", get(page))
        .route("/repos", get(page))
        .route("/repos/{name}", get(page))
        .route("/join/{code}", get(page))
        .route("/stats", get(page))
        .route("/assets/{*file}", get(file))
        .route("/favicon.svg", get(file))
}

/// Whether the binary carries a web UI build.
pub fn built() -> bool {
    find("/index.html").is_some()
}

fn find(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|asset| asset.path == path)
}

async fn page(headers: HeaderMap) -> Response {
    match find("/index.html") {
        Some(index) => serve(index, &headers, "no-cache"),
        None => {
            let mut response = (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                NOT_BUILT,
            )
                .into_response();
            secure(response.headers_mut(), "no-cache");
            response
        }
    }
}

async fn file(uri: Uri, headers: HeaderMap) -> Response {
    let path = uri.path();
    match find(path) {
        // Names under /assets/ carry a hash of their content: they never change.
        Some(asset) if path.starts_with("/assets/") => {
            serve(asset, &headers, "public, max-age=31536000, immutable")
        }
        Some(asset) => serve(asset, &headers, "public, max-age=3600"),
        None => crate::Error::NotFound(format!("file {path}")).into_response(),
    }
}

fn serve(asset: &Asset, request: &HeaderMap, cache: &'static str) -> Response {
    let accepts_gzip = request
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|e| e.trim().starts_with("gzip")));
    let (bytes, gzipped) = match asset.gzip {
        Some(gz) if accepts_gzip => (gz, true),
        _ => (asset.bytes, false),
    };
    let mut response = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, content_type(asset.path))],
        bytes,
    )
        .into_response();
    let headers = response.headers_mut();
    if gzipped {
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    if asset.gzip.is_some() {
        headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
    secure(headers, cache);
    response
}

fn secure(headers: &mut HeaderMap, cache: &'static str) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "json" | "map" => "application/json",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::content_type;

    #[test]
    fn types_by_extension() {
        assert_eq!(
            content_type("/assets/index-1.js"),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(content_type("/favicon.svg"), "image/svg+xml");
        assert_eq!(content_type("/x"), "application/octet-stream");
    }
}
