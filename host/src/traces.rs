//! OpenTelemetry traces (`[host.otel] endpoint`, or `OTEL_EXPORTER_OTLP_ENDPOINT`): one
//! `task` span per task, with a child span for each Step Functions call made for it,
//! exported over OTLP/HTTP (protobuf) in batches.
//!
//! Spans are made from what the host already reports, so no task code knows about
//! tracing: [`TaskTraces`] observes every Step Functions call (through
//! [`ObservedSfn`](crate::sfn::ObservedSfn): the poll that brings a task opens its span;
//! each answer or heartbeat attempt becomes a child) and `task:done` (which fills in the
//! outcome and costs and ends the span). Ending a span
//! hands it to the SDK's batch processor, which exports from a thread of its own and drops
//! spans when its queue is full: a slow or absent collector never holds a task up.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{
    Span as _, SpanKind, Status, TraceContextExt as _, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider};
use sfn_wasm_outbound::{read_ca_file, tls_client_config};

use crate::aws::Api;
use crate::config::OtelHeaders;
use crate::events::{Event, EventKind, Observer, TaskEvent, TaskOutcome};
use crate::ids::task_id;
use crate::sfn::{ActivityTask, CallObserver, SfnError, result_name};

/// The environment variable the OpenTelemetry specification names for the OTLP endpoint
/// (the host appends `/v1/traces`).
pub const ENDPOINT_ENV: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// How often ended spans are exported.
const EXPORT_EVERY: Duration = Duration::from_secs(1);
/// How long one export may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the last export may take at shutdown before it is abandoned: with the
/// consumer's final answers (0.4 s), a SIGTERM still exits within grace + 0.5 s.
const FINAL_EXPORT: Duration = Duration::from_millis(100);

/// Why traces cannot be exported.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up the OTLP exporter for {endpoint}: {message}")]
pub struct TracesError {
    /// The traces URL, without userinfo, query or fragment.
    pub endpoint: String,
    /// What the exporter said.
    pub message: String,
}

/// The tracer provider and the spans of tasks in flight.
pub struct TaskTraces {
    provider: SdkTracerProvider,
    tracer: opentelemetry_sdk::trace::SdkTracer,
    open: Mutex<HashMap<String, Context>>,
}

impl TaskTraces {
    /// An exporter to `endpoint` (the collector's base URL, like
    /// `https://collector:4318`; `/v1/traces` is appended unless it is there), sending
    /// `headers` with every export; an `https://` collector is trusted by Mozilla's roots
    /// and those in `ca_file` (PEM).
    ///
    /// # Errors
    /// When the exporter cannot be built (a malformed URL, an unreadable `ca_file`).
    pub fn new(
        endpoint: &str,
        headers: &OtelHeaders,
        ca_file: Option<&Path>,
    ) -> Result<Self, TracesError> {
        let endpoint = traces_url(endpoint);
        // Shown without userinfo or query: a collector URL can carry a token.
        let failed = |message: String| TracesError {
            endpoint: crate::source::redact_url(&endpoint),
            message,
        };
        let roots = match ca_file {
            Some(path) => read_ca_file(path).map_err(&failed)?,
            None => Vec::new(),
        };
        let tls = tls_client_config(roots).map_err(|err| failed(err.to_string()))?;
        let client = http_client(tls).map_err(&failed)?;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(endpoint.clone())
            .with_http_client(client)
            .with_headers(
                headers
                    .iter()
                    .map(|(name, value)| (name.to_owned(), value.to_owned()))
                    .collect(),
            )
            .build()
            .map_err(|err| failed(err.to_string()))?;
        let processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(
                BatchConfigBuilder::default()
                    .with_scheduled_delay(EXPORT_EVERY)
                    .build(),
            )
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name("sfn-wasm-host")
                    .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
                    .build(),
            )
            .build();
        let tracer = provider.tracer("sfn-wasm-host");
        Ok(Self {
            provider,
            tracer,
            open: Mutex::new(HashMap::new()),
        })
    }

    fn open(&self) -> MutexGuard<'_, HashMap<String, Context>> {
        // A plain map, consistent even if a holder panicked.
        self.open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Opens the span of a task that a poll started at `polled_at` brought, with the
    /// poll as its first child.
    fn task_arrived(&self, token: &str, arn: &str, polled_at: SystemTime) {
        let now = SystemTime::now();
        let task_id = task_id(token);
        let span = self
            .tracer
            .span_builder("task")
            .with_kind(SpanKind::Consumer)
            .with_start_time(now)
            .with_attributes([
                KeyValue::new("activity", arn.to_owned()),
                KeyValue::new("task_id", task_id.clone()),
            ])
            .start(&self.tracer);
        let context = Context::new().with_span(span);
        self.call_span(&context, Api::GetActivityTask, polled_at, now, None);
        self.open().insert(task_id, context);
    }

    /// Records a Step Functions call made for the task of `token`, if its span is open.
    fn call(&self, token: &str, api: Api, started: SystemTime, error: Option<&SfnError>) {
        let context = self.open().get(&task_id(token)).cloned();
        if let Some(context) = context {
            self.call_span(&context, api, started, SystemTime::now(), error);
        }
    }

    fn call_span(
        &self,
        parent: &Context,
        api: Api,
        started: SystemTime,
        ended: SystemTime,
        error: Option<&SfnError>,
    ) {
        let mut span = self
            .tracer
            .span_builder(api.name())
            .with_kind(SpanKind::Client)
            .with_start_time(started)
            .with_attributes([
                KeyValue::new("rpc.system", "aws-api"),
                KeyValue::new("rpc.service", "AWSStepFunctions"),
                KeyValue::new("rpc.method", api.name()),
                KeyValue::new("result", result_name(error)),
            ])
            .start_with_context(&self.tracer, parent);
        if let Some(error) = error {
            span.set_status(Status::error(error.to_string()));
        }
        span.end_with_timestamp(ended);
    }

    /// Exports what is left, waiting at most [`FINAL_EXPORT`]; call once, at the end.
    /// Blocks the calling thread.
    pub fn shutdown(&self) {
        if let Err(err) = self.provider.shutdown_with_timeout(FINAL_EXPORT) {
            tracing::warn!(error = %err, "the last traces were not exported");
        }
    }
}

impl Observer for TaskTraces {
    fn observe(&self, event: &Event) {
        let EventKind::Task {
            task,
            event: TaskEvent::Done(done),
            ..
        } = &event.kind
        else {
            return;
        };
        let Some(context) = self.open().remove(&*task.task_id) else {
            return;
        };
        let span = context.span();
        span.set_attributes([
            KeyValue::new("handler_digest", task.handler_digest.to_string()),
            KeyValue::new("outcome", done.outcome.name()),
            KeyValue::new("error", done.error.name()),
            KeyValue::new("elapsed_ms", millis(done.elapsed)),
            KeyValue::new("cpu_ms", done.cpu.as_secs_f64() * 1e3),
            KeyValue::new(
                "memory_peak_bytes",
                i64::try_from(done.memory_peak_bytes).unwrap_or(i64::MAX),
            ),
        ]);
        if done.outcome != TaskOutcome::Success {
            span.set_status(Status::error(done.error.name()));
        }
        span.end();
    }
}

fn millis(elapsed: Duration) -> i64 {
    i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
}

/// `base` with `/v1/traces` appended, unless it already ends so.
fn traces_url(base: &str) -> String {
    let base = base.trim_end_matches('/');
    if base.ends_with("/v1/traces") {
        base.to_owned()
    } else {
        format!("{base}/v1/traces")
    }
}

impl CallObserver for TaskTraces {
    fn polled(
        &self,
        arn: &str,
        started: SystemTime,
        _elapsed: Duration,
        polled: &Result<Option<ActivityTask>, SfnError>,
    ) {
        if let Ok(Some(task)) = polled {
            self.task_arrived(&task.token, arn, started);
        }
    }

    fn called(
        &self,
        api: Api,
        token: &str,
        started: SystemTime,
        _elapsed: Duration,
        error: Option<&SfnError>,
    ) {
        self.call(token, api, started, error);
    }
}

/// The exporter's blocking HTTP client over the host's TLS settings. Built on a thread
/// of its own, as the exporter builds its default one: reqwest's blocking client owns a
/// runtime, which must not be made (or dropped) on the host's.
fn http_client(tls: rustls::ClientConfig) -> Result<reqwest::blocking::Client, String> {
    std::thread::Builder::new()
        .name("otlp-client".into())
        .spawn(move || {
            reqwest::blocking::Client::builder()
                .timeout(EXPORT_TIMEOUT)
                .tls_backend_preconfigured(tls)
                .build()
        })
        .map_err(|err| format!("cannot start a thread for the HTTP client: {err}"))?
        .join()
        .map_err(|_| "the HTTP client's thread panicked".to_owned())?
        .map_err(|err| format!("cannot build the HTTP client: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_traces_path_is_appended_once() {
        assert_eq!(
            traces_url("http://127.0.0.1:4318"),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(traces_url("http://c:4318/"), "http://c:4318/v1/traces");
        assert_eq!(
            traces_url("http://c:4318/v1/traces"),
            "http://c:4318/v1/traces"
        );
    }
}
