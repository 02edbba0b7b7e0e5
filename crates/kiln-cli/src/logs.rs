//! Where kiln's logs and traces go: logs to stderr as text or JSON lines (`--log-format`,
//! level from `KILN_LOG`), and, when an OTLP endpoint is configured (the standard
//! `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`), OpenTelemetry traces
//! over OTLP/HTTP: a span per prompt, model request, tool call and image build, each carrying
//! its session (or repo). The traces have their own level (`info` for kiln's crates) whatever
//! `KILN_LOG` says, so quiet logs do not mean missing traces.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

/// The format chosen for this process's logs, for messages written outside `tracing` (what
/// `kiln up` says at start and stop).
static LOG_FORMAT: std::sync::OnceLock<LogFormat> = std::sync::OnceLock::new();

/// Kiln's crates whose spans are traced.
const TRACED: [&str; 5] = [
    "kiln_engine",
    "kiln_agent",
    "kiln_server",
    "kiln_fleet",
    "kiln_webhooks",
];

/// Installs the logs (and traces, when configured). Keep what it returns until the end of
/// `main`, then call [`Traces::shutdown`]: it sends the spans still buffered.
pub(crate) fn init(format: LogFormat) -> Traces {
    let _ = LOG_FORMAT.set(format);
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("KILN_LOG").unwrap_or_else(|_| "warn".into());
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = match format {
        // One JSON object per line, the event's fields flattened, with its span (the
        // request's method and path, the session).
        LogFormat::Json => fmt
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_filter(filter)
            .boxed(),
        // Colours for a person at a terminal; plain text for service logs and files.
        LogFormat::Text => fmt
            .with_ansi(crate::log_colour(
                std::io::IsTerminal::is_terminal(&std::io::stderr()),
                std::env::var_os("NO_COLOR"),
            ))
            .with_filter(filter)
            .boxed(),
    };
    let (provider, problem) = match otlp_configured() {
        false => (None, None),
        true => match tracer_provider() {
            Ok(provider) => (Some(provider), None),
            Err(e) => (None, Some(e)),
        },
    };
    let traces = provider.as_ref().map(|provider| {
        let targets = TRACED.iter().fold(
            tracing_subscriber::filter::Targets::new(),
            |targets, target| targets.with_target(*target, tracing::Level::INFO),
        );
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("kiln"))
            .with_filter(targets)
    });
    tracing_subscriber::registry()
        .with(logs)
        .with(traces)
        .init();
    if let Some(problem) = problem {
        tracing::warn!("OpenTelemetry traces are off: {problem}");
    }
    Traces { provider }
}

fn otlp_configured() -> bool {
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|key| std::env::var(key).is_ok_and(|v| !v.trim().is_empty()))
}

/// Spans batched and sent over OTLP/HTTP in protobuf to the endpoint the standard variables
/// name; the service is `kiln` unless `OTEL_SERVICE_NAME` says otherwise.
fn tracer_provider() -> Result<SdkTracerProvider, String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .map_err(|e| format!("the OTLP exporter cannot be built: {e}"))?;
    let service = std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "kiln".to_string());
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(service)
                .build(),
        )
        .build())
}

/// The trace pipeline, if any.
pub(crate) struct Traces {
    provider: Option<SdkTracerProvider>,
}

impl Traces {
    /// Sends what is buffered and stops (bounded by the exporter's own timeout).
    pub(crate) fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(e) = provider.shutdown()
        {
            eprintln!("kiln: the last traces could not be sent: {e}");
        }
    }
}

/// Says something to the person or the log collector running kiln: a line of text, or with
/// `--log-format json` a JSON object shaped like the log's own lines.
pub(crate) fn announce(message: &str) {
    if LOG_FORMAT.get() == Some(&LogFormat::Json) {
        let line = serde_json::json!({
            "timestamp": time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            "level": "INFO",
            "message": message,
            "target": "kiln",
        });
        eprintln!("{line}");
    } else {
        eprintln!("{message}");
    }
}
