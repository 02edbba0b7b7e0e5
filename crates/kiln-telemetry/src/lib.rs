//! Operations telemetry: the Prometheus metric families kiln exposes on `GET /metrics`.
//!
//! There is no global registry: each server makes its own [`Metrics`] (tests run many servers in
//! one process) and hands it to what records. Values that already exist as state elsewhere
//! (sessions by state, sandboxes, pool sizes) are not mirrored as they change: the server reads
//! them when scraped and passes them to [`Metrics::encode`], which sets them just before encoding.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
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

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabels {
    provider: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelErrorLabels {
    provider: String,
    /// `http_4xx`, `http_5xx`, `connect`, `api`, `stream_cut`, `malformed`, `idle_timeout`, ...
    kind: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    provider: String,
    /// `input` or `output`.
    direction: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Seconds, from 5 ms to about 80 s: HTTP requests.
fn request_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

/// Seconds, from 50 ms to about 7 min: model requests, first tokens.
fn model_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.05, 2.0, 14))
}

/// Seconds, from 1 s to about 4.5 h: image builds.
fn build_buckets() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 15))
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
    model_latency: Histograms<ProviderLabels>,
    model_ttft: Histograms<ProviderLabels>,
    model_errors: Family<ModelErrorLabels, Counter>,
    model_tokens: Family<TokenLabels, Counter>,
    session_starts: Family<SourceLabels, Counter>,
    builds: Histograms<OutcomeLabels>,
    egress_bytes: Family<DirectionLabels, Counter>,
    egress_denied: Counter,
    sandbox_memory: Gauge,
    sandbox_oom_kills: Counter,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    /// `up` (from sandboxes) or `down` (to them).
    direction: String,
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
    /// The egress proxies' totals since start, if known.
    pub egress: Option<Egress>,
    /// The sandboxes' parent cgroup, if it could be read.
    pub memory: Option<SandboxMemory>,
}

/// What the egress proxies passed and refused since the server started.
#[derive(Debug, Clone, Copy, Default)]
pub struct Egress {
    /// Bytes from sandboxes to the outside.
    pub bytes_up: u64,
    /// Bytes from the outside to sandboxes.
    pub bytes_down: u64,
    /// Connections refused by policy or the address rule.
    pub denied: u64,
}

/// The sandboxes' parent cgroup: `memory.current` (v2) or `memory.usage_in_bytes` (v1), and
/// the OOM kills it counted.
#[derive(Debug, Clone, Copy, Default)]
pub struct SandboxMemory {
    pub bytes: u64,
    pub oom_kills: u64,
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
        let model_latency =
            Histograms::<ProviderLabels>::new_with_constructor(model_buckets as fn() -> _);
        registry.register(
            "model_request_duration_seconds",
            "Model requests by provider: from sending the request to the response's headers",
            model_latency.clone(),
        );
        let model_ttft =
            Histograms::<ProviderLabels>::new_with_constructor(model_buckets as fn() -> _);
        registry.register(
            "model_time_to_first_token_seconds",
            "Model requests by provider: from sending the request to the first text",
            model_ttft.clone(),
        );
        let model_errors = Family::<ModelErrorLabels, Counter>::default();
        registry.register(
            "model_errors",
            "Model requests that failed, by provider and kind of error",
            model_errors.clone(),
        );
        let model_tokens = Family::<TokenLabels, Counter>::default();
        registry.register(
            "model_tokens",
            "Tokens the model providers reported, by provider and direction (input, output)",
            model_tokens.clone(),
        );
        let session_starts = Family::<SourceLabels, Counter>::default();
        registry.register(
            "session_sandbox_starts",
            "Sandboxes sessions got, by where they came from (pool, image, snapshot, clone, reattach)",
            session_starts.clone(),
        );
        let builds = Histograms::<OutcomeLabels>::new_with_constructor(build_buckets as fn() -> _);
        registry.register(
            "image_build_duration_seconds",
            "Image builds by outcome (ready, failed), with their duration",
            builds.clone(),
        );
        let egress_bytes = Family::<DirectionLabels, Counter>::default();
        registry.register(
            "egress_bytes",
            "Bytes through the egress proxies since start, by direction (up: from sandboxes)",
            egress_bytes.clone(),
        );
        let egress_denied = Counter::default();
        registry.register(
            "egress_denied_connections",
            "Connections the egress proxies refused since start",
            egress_denied.clone(),
        );
        let sandbox_memory = Gauge::default();
        registry.register(
            "sandbox_memory_bytes",
            "Memory the sandboxes' parent cgroup uses now",
            sandbox_memory.clone(),
        );
        let sandbox_oom_kills = Counter::default();
        registry.register(
            "sandbox_oom_kills",
            "Processes the kernel killed for lack of memory in the sandboxes' cgroup",
            sandbox_oom_kills.clone(),
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
                model_latency,
                model_ttft,
                model_errors,
                model_tokens,
                session_starts,
                builds,
                egress_bytes,
                egress_denied,
                sandbox_memory,
                sandbox_oom_kills,
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

    /// A model request's response headers arrived `took` after it was sent.
    pub fn model_response(&self, provider: &str, took: Duration) {
        self.inner
            .model_latency
            .get_or_create(&provider_labels(provider))
            .observe(took.as_secs_f64());
    }

    /// A model request's first text arrived `took` after it was sent.
    pub fn model_first_token(&self, provider: &str, took: Duration) {
        self.inner
            .model_ttft
            .get_or_create(&provider_labels(provider))
            .observe(took.as_secs_f64());
    }

    /// A model request failed; `kind` is a short fixed word (`http_5xx`, `connect`, ...).
    pub fn model_error(&self, provider: &str, kind: &str) {
        self.inner
            .model_errors
            .get_or_create(&ModelErrorLabels {
                provider: provider.to_string(),
                kind: kind.to_string(),
            })
            .inc();
    }

    /// A model response's usage as its provider reported it.
    pub fn model_tokens(&self, provider: &str, input: u64, output: u64) {
        for (direction, n) in [("input", input), ("output", output)] {
            self.inner
                .model_tokens
                .get_or_create(&TokenLabels {
                    provider: provider.to_string(),
                    direction: direction.to_string(),
                })
                .inc_by(n);
        }
    }

    /// A session got a sandbox from `source` (`pool`, `image`, `snapshot`, `clone`, `reattach`).
    pub fn session_sandbox_start(&self, source: &str) {
        self.inner
            .session_starts
            .get_or_create(&SourceLabels {
                source: source.to_string(),
            })
            .inc();
    }

    /// An image build ended `ready` or `failed` after `took`.
    pub fn image_build(&self, outcome: &str, took: Duration) {
        self.inner
            .builds
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_string(),
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
        if let Some(egress) = state.egress {
            for (direction, n) in [("up", egress.bytes_up), ("down", egress.bytes_down)] {
                catch_up(
                    &inner.egress_bytes.get_or_create(&DirectionLabels {
                        direction: direction.to_string(),
                    }),
                    n,
                );
            }
            catch_up(&inner.egress_denied, egress.denied);
        }
        if let Some(memory) = state.memory {
            inner.sandbox_memory.set(gauge(memory.bytes));
            catch_up(&inner.sandbox_oom_kills, memory.oom_kills);
        }
    }
}

fn provider_labels(provider: &str) -> ProviderLabels {
    ProviderLabels {
        provider: provider.to_string(),
    }
}

/// Raises a counter that mirrors a total kept elsewhere to that total (never lowers it: a
/// total that went back, e.g. a recreated cgroup, leaves the counter where it was).
fn catch_up(counter: &Counter, total: u64) {
    let now = counter.get();
    if total > now {
        counter.inc_by(total - now);
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

    /// The sample of `name` with all of `labels` (a family's samples come in no set order).
    fn value(
        scrape: &prometheus_parse::Scrape,
        name: &str,
        labels: &[(&str, &str)],
    ) -> Option<f64> {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
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
            ..State::default()
        };
        let scrape = parse(&metrics.encode(&first));
        assert_eq!(
            value(&scrape, "kiln_sessions", &[("state", "idle")]),
            Some(5.0)
        );
        assert_eq!(
            value(
                &scrape,
                "kiln_pool_sandboxes",
                &[("repo", "gone"), ("state", "ready")]
            ),
            Some(0.0)
        );
        let second = State {
            sessions: vec![("working", 0), ("idle", 1)],
            sandboxes: vec![],
            pools: vec![("web".into(), [3, 0, 3])],
            ..State::default()
        };
        let scrape = parse(&metrics.encode(&second));
        assert_eq!(
            value(&scrape, "kiln_sessions", &[("state", "idle")]),
            Some(1.0)
        );
        // A repo that is gone leaves no series behind.
        assert_eq!(
            value(&scrape, "kiln_pool_sandboxes", &[("repo", "gone")]),
            None
        );
        assert_eq!(
            value(&scrape, "kiln_sandboxes", &[("kind", "session")]),
            None
        );
    }

    #[test]
    fn totals_read_at_scrape_time_never_go_back() {
        let metrics = Metrics::new();
        let at = |bytes_up, denied, oom_kills| State {
            egress: Some(Egress {
                bytes_up,
                bytes_down: 0,
                denied,
            }),
            memory: Some(SandboxMemory {
                bytes: 4096,
                oom_kills,
            }),
            ..State::default()
        };
        let read = |state: &State| {
            let scrape = parse(&metrics.encode(state));
            (
                value(&scrape, "kiln_egress_bytes_total", &[("direction", "up")]),
                value_of(&scrape, "kiln_egress_denied_connections_total"),
                value_of(&scrape, "kiln_sandbox_oom_kills_total"),
                value_of(&scrape, "kiln_sandbox_memory_bytes"),
            )
        };
        assert_eq!(
            read(&at(100, 2, 1)),
            (Some(100.0), Some(2.0), Some(1.0), Some(4096.0))
        );
        assert_eq!(
            read(&at(250, 3, 1)),
            (Some(250.0), Some(3.0), Some(1.0), Some(4096.0))
        );
        // A cgroup made anew reports fewer kills: the counter stays where it was.
        assert_eq!(
            read(&at(250, 3, 0)),
            (Some(250.0), Some(3.0), Some(1.0), Some(4096.0))
        );
    }

    fn value_of(scrape: &prometheus_parse::Scrape, name: &str) -> Option<f64> {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name)
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
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
