//! A stand-in for an OpenTelemetry collector: OTLP/HTTP's `POST /v1/traces` with a protobuf
//! `ExportTraceServiceRequest` (gzip refused with 415, as a collector without that encoding
//! would), answered with an empty `ExportTraceServiceResponse`. Every span received is kept.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A span as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedSpan {
    pub name: String,
    /// String, integer and boolean attributes, written as strings.
    pub attributes: BTreeMap<String, String>,
    /// The resource's `service.name`.
    pub service: String,
    pub trace_id: Vec<u8>,
    pub span_id: Vec<u8>,
    /// Empty for a root span.
    pub parent_span_id: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct FakeCollector {
    url: String,
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
}

impl FakeCollector {
    pub async fn start() -> FakeCollector {
        let spans = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new()
            .route("/v1/traces", post(traces))
            .with_state(spans.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the collector");
        let url = format!("http://{}", listener.local_addr().expect("an address"));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeCollector { url, spans }
    }

    /// What `OTEL_EXPORTER_OTLP_ENDPOINT` should be.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans.lock().expect("spans lock").clone()
    }

    /// Waits until a span satisfies `pred`; panics after `timeout`.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        pred: impl Fn(&ReceivedSpan) -> bool,
    ) -> ReceivedSpan {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(span) = self.spans().into_iter().find(|s| pred(s)) {
                return span;
            }
            if tokio::time::Instant::now() > deadline {
                let names: Vec<String> = self.spans().into_iter().map(|s| s.name).collect();
                panic!("FakeCollector: no such span within {timeout:?}; got {names:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn traces(
    State(spans): State<Arc<Mutex<Vec<ReceivedSpan>>>>,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    if headers
        .get(header::CONTENT_ENCODING)
        .is_some_and(|e| e != "identity")
    {
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, Vec::new());
    }
    if headers
        .get(header::CONTENT_TYPE)
        .is_none_or(|t| t != "application/x-protobuf")
    {
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, Vec::new());
    }
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return (StatusCode::BAD_REQUEST, Vec::new());
    };
    let mut received = Vec::new();
    for resource_spans in request.resource_spans {
        let service = resource_spans
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| text(kv.value.as_ref()?.value.as_ref()?))
            .unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                let attributes = span
                    .attributes
                    .iter()
                    .filter_map(|kv| {
                        Some((kv.key.clone(), text(kv.value.as_ref()?.value.as_ref()?)?))
                    })
                    .collect();
                received.push(ReceivedSpan {
                    name: span.name,
                    attributes,
                    service: service.clone(),
                    trace_id: span.trace_id,
                    span_id: span.span_id,
                    parent_span_id: span.parent_span_id,
                });
            }
        }
    }
    spans.lock().expect("spans lock").extend(received);
    (
        StatusCode::OK,
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
}

fn text(value: &AnyValue) -> Option<String> {
    match value {
        AnyValue::StringValue(s) => Some(s.clone()),
        AnyValue::IntValue(i) => Some(i.to_string()),
        AnyValue::BoolValue(b) => Some(b.to_string()),
        AnyValue::DoubleValue(d) => Some(d.to_string()),
        _ => None,
    }
}
