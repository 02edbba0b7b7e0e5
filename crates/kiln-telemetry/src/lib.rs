//! Operations telemetry: the Prometheus metric families kiln exposes on `GET /metrics`.
//!
//! There is no global registry: each server makes its own [`Metrics`] (tests run many servers in
//! one process) and hands it to what records. Values that already exist as state elsewhere
//! (sessions by state, sandboxes, pool sizes) are not mirrored as they change: the server reads
//! them when scraped and passes them to [`Metrics::encode`], which sets them just before encoding.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: String,
    /// The route template (`/api/sessions/{id}`), never the raw path: ids would make a series each.
    route: String,
    /// `2xx`, `4xx`, ...
    status: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    repo: String,
    state: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Seconds, from 5 ms to about 80 s: HTTP requests.
fn request_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

/// What kiln counts, and the registry that encodes it. Cheap to clone (shared inside).
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    /// Scrapes set the state gauges then encode; one at a time, so two scrapes never mix.
    scrape: Mutex<()>,
    http: Histograms<HttpLabels>,
    websocket_clients: Gauge,
    sessions: Family<StateLabels, Gauge>,
    sandboxes: Family<KindLabels, Gauge>,
    pool: Family<PoolLabels, Gauge>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Values read from state at scrape time; see [`Metrics::encode`].
#[derive(Debug, Clone, Default)]
pub struct State {
    /// Open sessions by state (`working`, `idle`).
    pub sessions: Vec<(&'static str, u64)>,
    /// Sandboxes by what they are for (`session`, `pooled`, `build`, `other`).
    pub sandboxes: Vec<(&'static str, u64)>,
    /// Per repo: its pool's `ready`, `reserved` and `target` sandbox counts.
    pub pools: Vec<(String, [u64; 3])>,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("kiln");
        let http = Histograms::<HttpLabels>::new_with_constructor(request_buckets as fn() -> _);
        registry.register(
            "http_request_duration_seconds",
            "HTTP requests by method, route template and status class, with their latency",
            http.clone(),
        );
        let websocket_clients = Gauge::default();
        registry.register(
            "websocket_clients",
            "WebSocket clients connected now",
            websocket_clients.clone(),
        );
        let sessions = Family::<StateLabels, Gauge>::default();
        registry.register(
            "sessions",
            "Sessions open in this server, by state",
            sessions.clone(),
        );
        let sandboxes = Family::<KindLabels, Gauge>::default();
        registry.register(
            "sandboxes",
            "Sandboxes that exist, by what they are for",
            sandboxes.clone(),
        );
        let pool = Family::<PoolLabels, Gauge>::default();
        registry.register(
            "pool_sandboxes",
            "Warm pool sandboxes per repo: ready, reserved, and the target size",
            pool.clone(),
        );
        Metrics {
            inner: Arc::new(Inner {
                registry,
                scrape: Mutex::new(()),
                http,
                websocket_clients,
                sessions,
                sandboxes,
                pool,
            }),
        }
    }

    /// One HTTP request answered: `route` is the matched route's template, `status` its code.
    pub fn http_request(&self, method: &str, route: &str, status: u16, took: Duration) {
        self.inner
            .http
            .get_or_create(&HttpLabels {
                method: method.to_string(),
                route: route.to_string(),
                status: format!("{}xx", status / 100),
            })
            .observe(took.as_secs_f64());
    }

    /// A WebSocket client connected; it counts until the guard is dropped.
    pub fn websocket_client(&self) -> WebSocketGuard {
        self.inner.websocket_clients.inc();
        WebSocketGuard(self.inner.websocket_clients.clone())
    }

    /// The exposition text (Prometheus text format 0.0.4), with the state gauges set to `state`.
    pub fn encode(&self, state: &State) -> String {
        let _one = self.inner.scrape.lock().unwrap_or_else(|e| e.into_inner());
        self.set_state(state);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.inner.registry)
            .expect("writing to a String cannot fail");
        out
    }

    fn set_state(&self, state: &State) {
        let inner = &self.inner;
        inner.sessions.clear();
        for (name, n) in &state.sessions {
            inner
                .sessions
                .get_or_create(&StateLabels {
                    state: name.to_string(),
                })
                .set(gauge(*n));
        }
        inner.sandboxes.clear();
        for (kind, n) in &state.sandboxes {
            inner
                .sandboxes
                .get_or_create(&KindLabels {
                    kind: kind.to_string(),
                })
                .set(gauge(*n));
        }
        inner.pool.clear();
        for (repo, counts) in &state.pools {
            for (name, n) in ["ready", "reserved", "target"].iter().zip(counts) {
                inner
                    .pool
                    .get_or_create(&PoolLabels {
                        repo: repo.clone(),
                        state: name.to_string(),
                    })
                    .set(gauge(*n));
            }
        }
    }
}

fn gauge(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Counts one WebSocket client in `kiln_websocket_clients` while it lives.
#[derive(Debug)]
pub struct WebSocketGuard(Gauge);

impl Drop for WebSocketGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> prometheus_parse::Scrape {
        prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
            .expect("the exposition parses")
    }

    fn value(scrape: &prometheus_parse::Scrape, name: &str, label: (&str, &str)) -> Option<f64> {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && s.labels.get(label.0) == Some(label.1))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
    }

    #[test]
    fn state_gauges_are_replaced_at_each_scrape() {
        let metrics = Metrics::new();
        let first = State {
            sessions: vec![("working", 2), ("idle", 5)],
            sandboxes: vec![("session", 7)],
            pools: vec![("web".into(), [1, 2, 3]), ("gone".into(), [0, 0, 1])],
        };
        let scrape = parse(&metrics.encode(&first));
        assert_eq!(
            value(&scrape, "kiln_sessions", ("state", "idle")),
            Some(5.0)
        );
        assert_eq!(
            value(&scrape, "kiln_pool_sandboxes", ("repo", "gone")),
            Some(0.0)
        );
        let second = State {
            sessions: vec![("working", 0), ("idle", 1)],
            sandboxes: vec![],
            pools: vec![("web".into(), [3, 0, 3])],
        };
        let scrape = parse(&metrics.encode(&second));
        assert_eq!(
            value(&scrape, "kiln_sessions", ("state", "idle")),
            Some(1.0)
        );
        // A repo that is gone leaves no series behind.
        assert_eq!(
            value(&scrape, "kiln_pool_sandboxes", ("repo", "gone")),
            None
        );
        assert_eq!(value(&scrape, "kiln_sandboxes", ("kind", "session")), None);
    }

    #[test]
    fn websocket_clients_count_while_their_guard_lives() {
        let metrics = Metrics::new();
        let a = metrics.websocket_client();
        let b = metrics.websocket_client();
        let scrape = parse(&metrics.encode(&State::default()));
        let clients = |s: &prometheus_parse::Scrape| {
            s.samples
                .iter()
                .find(|s| s.metric == "kiln_websocket_clients")
                .map(|s| s.value.clone())
        };
        assert_eq!(clients(&scrape), Some(prometheus_parse::Value::Gauge(2.0)));
        drop(a);
        drop(b);
        let scrape = parse(&metrics.encode(&State::default()));
        assert_eq!(clients(&scrape), Some(prometheus_parse::Value::Gauge(0.0)));
    }
}
