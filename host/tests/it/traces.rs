//! OpenTelemetry traces of a served host against LocalStack, received by a small
//! OTLP/HTTP collector in the test and decoded with the OpenTelemetry project's own
//! protobuf types: one `task` span per task with its attributes, and a child span for
//! each Step Functions call made for it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use rustix::process::Signal;
use serde_json::json;

use crate::support::emulator;
use crate::support::guests::guest;
use crate::support::served::Served;
use crate::support::tls::tls_file;

/// What the collector received: every span, with its resource's `service.name`.
type Received = Arc<Mutex<Vec<(String, Span)>>>;
/// The headers of every export request, names lowercased.
type Headers = Arc<Mutex<Vec<(String, String)>>>;

/// An OTLP/HTTP collector on a free port: answers every POST with 200 and keeps the spans.
fn collector() -> (String, Received) {
    let (url, received, _) = collector_with(None);
    (url, received)
}

/// [`collector`], over TLS when `tls` is given (the URL is then `https://localhost:PORT`,
/// the name the test CA's server certificate holds); also the request headers.
fn collector_with(tls: Option<Arc<rustls::ServerConfig>>) -> (String, Received, Headers) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let url = match tls {
        Some(_) => format!("https://localhost:{port}"),
        None => format!("http://127.0.0.1:{port}"),
    };
    let received: Received = Arc::default();
    let headers: Headers = Arc::default();
    let (keep, keep_headers) = (received.clone(), headers.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            match &tls {
                Some(config) => {
                    let connection = rustls::ServerConnection::new(config.clone()).unwrap();
                    serve_export(
                        rustls::StreamOwned::new(connection, stream),
                        &keep,
                        &keep_headers,
                    );
                }
                None => serve_export(stream, &keep, &keep_headers),
            }
        }
    });
    (url, received, headers)
}

/// Reads one export request from `stream`, keeps its spans and headers, answers 200.
fn serve_export(stream: impl Read + Write, keep: &Received, headers: &Headers) {
    let mut reader = BufReader::new(stream);
    let (mut path, mut length) = (String::new(), 0usize);
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return; // a TLS handshake refused, a probe
    }
    if let Some(target) = line.split_whitespace().nth(1) {
        path = target.to_owned();
    }
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        if line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim().to_owned());
            if name == "content-length" {
                length = value.parse().unwrap();
            }
            headers.lock().unwrap().push((name, value));
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    assert_eq!(path, "/v1/traces");
    let request = ExportTraceServiceRequest::decode(body.as_slice()).unwrap();
    for resource in request.resource_spans {
        let service = resource
            .resource
            .as_ref()
            .and_then(|r| string(&r.attributes, "service.name"))
            .unwrap_or_default();
        for scope in resource.scope_spans {
            for span in scope.spans {
                keep.lock().unwrap().push((service.clone(), span));
            }
        }
    }
    let _ = reader.get_mut().write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    let _ = reader.get_mut().flush();
}

/// `[host.otel]` for `endpoint`.
fn otel(endpoint: &str) -> String {
    format!("[host.otel]\nendpoint = \"{endpoint}\"\n")
}

/// A config serving `handler` on `activity` with `otel_lines` (a `[host.otel]` table).
fn traced(
    dir: &std::path::Path,
    activity: &str,
    handler: &str,
    otel_lines: &str,
    activity_lines: &str,
) -> std::path::PathBuf {
    crate::support::served::config(
        dir,
        &emulator::endpoint(),
        activity,
        &guest(handler),
        activity_lines,
        &format!("cache = false\n{otel_lines}"),
    )
}

fn value<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v: &AnyValue| v.value.as_ref())
}

fn string(attributes: &[KeyValue], key: &str) -> Option<String> {
    match value(attributes, key)? {
        any_value::Value::StringValue(text) => Some(text.clone()),
        _ => None,
    }
}

#[test]
fn every_task_is_a_span_with_its_step_functions_calls() {
    let (endpoint, received) = collector();
    let (runtime, client, activity, machine) = emulator::emulated("traces");
    let dir = tempfile::tempdir().unwrap();
    let config = traced(
        dir.path(),
        &activity,
        "scenarios",
        &otel(&endpoint),
        "workers = 2",
    );
    let mut served = Served::start(&config);
    served.wait_for("worker:running");
    for hello in ["World", "Failure", "Heartbeat"] {
        runtime.block_on(emulator::start(
            &client,
            &machine,
            json!({ "hello": hello }),
        ));
    }
    let done: Vec<_> = (0..3).map(|_| served.wait_for("task:done")).collect();

    // Exported within a second or two of ending; wait for all three.
    let deadline = Instant::now() + Duration::from_secs(15);
    let tasks = loop {
        let spans = received.lock().unwrap().clone();
        let tasks: Vec<(String, Span)> = spans
            .iter()
            .filter(|(_, s)| s.name == "task")
            .cloned()
            .collect();
        if tasks.len() >= 3 {
            break tasks;
        }
        assert!(
            Instant::now() < deadline,
            "{} task spans received: {:?}",
            tasks.len(),
            spans.iter().map(|(_, s)| &s.name).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(tasks.len(), 3, "one span per task");
    let spans = received.lock().unwrap().clone();
    for (service, task) in &tasks {
        assert_eq!(service, "sfn-wasm-host");
        let attributes = &task.attributes;
        assert_eq!(
            string(attributes, "activity").as_deref(),
            Some(activity.as_str())
        );
        let task_id = string(attributes, "task_id").unwrap();
        let event = done
            .iter()
            .find(|d| d["task_id"] == task_id.as_str())
            .unwrap_or_else(|| panic!("no task:done for span {task_id}"));
        assert_eq!(
            string(attributes, "handler_digest").as_deref(),
            event["handler_digest"].as_str()
        );
        assert_eq!(
            string(attributes, "outcome").as_deref(),
            event["outcome"].as_str()
        );
        assert_eq!(
            string(attributes, "error").as_deref(),
            event["error"].as_str()
        );
        assert!(
            matches!(value(attributes, "cpu_ms"), Some(any_value::Value::DoubleValue(ms)) if *ms > 0.0),
            "cpu_ms: {attributes:?}"
        );
        assert!(
            matches!(value(attributes, "memory_peak_bytes"), Some(any_value::Value::IntValue(bytes)) if *bytes > 0),
            "memory_peak_bytes: {attributes:?}"
        );
        let children: Vec<&str> = spans
            .iter()
            .filter(|(_, s)| s.trace_id == task.trace_id && s.parent_span_id == task.span_id)
            .map(|(_, s)| s.name.as_str())
            .collect();
        assert!(children.contains(&"GetActivityTask"), "{children:?}");
        let answer = if event["outcome"] == "success" {
            "SendTaskSuccess"
        } else {
            "SendTaskFailure"
        };
        assert!(children.contains(&answer), "{task_id}: {children:?}");
    }
    let heartbeats = spans
        .iter()
        .filter(|(_, s)| s.name == "SendTaskHeartbeat")
        .count();
    assert_eq!(
        heartbeats, 1,
        "the Heartbeat scenario's call is a child span too"
    );

    served.signal(Signal::TERM);
    assert_eq!(served.wait_exit(), 0);
}

/// The test CA's server certificate (for `localhost`), as a rustls server config.
fn test_server_tls() -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    let certificates = rustls::pki_types::CertificateDer::pem_file_iter(tls_file("server.pem"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(tls_file("server.key")).unwrap();
    Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certificates, key)
        .unwrap(),
    )
}

#[test]
fn traces_reach_an_https_collector_with_its_api_key_never_logged() {
    let (endpoint, received, headers) = collector_with(Some(test_server_tls()));
    let (runtime, client, activity, machine) = emulator::emulated("traces-tls");
    let dir = tempfile::tempdir().unwrap();
    let secret = "k3y-0f-the-c0llector";
    let otel = format!(
        "{}ca_file = \"{}\"\nheaders = {{ \"api-key\" = \"{secret}\" }}\n",
        otel(&endpoint),
        tls_file("ca.pem").display()
    );
    let config = traced(dir.path(), &activity, "greet", &otel, "");
    let mut served = Served::start(&config);
    served.wait_for("worker:running");
    runtime.block_on(emulator::start(&client, &machine, json!({"hello": "TLS"})));
    served.wait_for("task:done");
    let deadline = Instant::now() + Duration::from_secs(15);
    while !received
        .lock()
        .unwrap()
        .iter()
        .any(|(_, s)| s.name == "task")
    {
        assert!(Instant::now() < deadline, "no task span over https");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        headers
            .lock()
            .unwrap()
            .contains(&("api-key".to_owned(), secret.to_owned())),
        "the collector's header: {:?}",
        headers.lock().unwrap()
    );
    served.signal(Signal::TERM);
    assert_eq!(served.wait_exit(), 0);
    assert!(
        !served.text().contains(secret),
        "the API key reached the log"
    );
    // `check` does not print it either.
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_sfn-wasm-host"))
        .arg("check")
        .arg(&config)
        .output()
        .unwrap();
    assert!(check.status.success());
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(!printed.contains(secret), "{printed}");
}

#[test]
fn an_https_collector_the_host_does_not_trust_gets_nothing_and_tasks_still_run() {
    let (endpoint, received, _) = collector_with(Some(test_server_tls()));
    let (runtime, client, activity, machine) = emulator::emulated("traces-untrusted");
    let dir = tempfile::tempdir().unwrap();
    // No ca_file: the test CA is not among Mozilla's roots.
    let config = traced(dir.path(), &activity, "greet", &otel(&endpoint), "");
    let mut served = Served::start(&config);
    served.wait_for("worker:running");
    let execution = runtime.block_on(emulator::start(&client, &machine, json!({"hello": "X"})));
    let ended = runtime.block_on(emulator::wait(&client, &execution, Duration::from_secs(30)));
    assert_eq!(ended.output, Some(json!({"greeting": "Hello, X"})));
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        received.lock().unwrap().is_empty(),
        "exported to an untrusted collector"
    );
    served.signal(Signal::TERM);
    assert_eq!(served.wait_exit(), 0);
}
