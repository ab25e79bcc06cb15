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

use crate::emulator;
use crate::guests::guest;
use crate::served::Served;

/// What the collector received: every span, with its resource's `service.name`.
type Received = Arc<Mutex<Vec<(String, Span)>>>;

/// An OTLP/HTTP collector on a free port: answers every POST with 200 and keeps the spans.
fn collector() -> (String, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let received: Received = Arc::default();
    let keep = received.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let (mut path, mut length) = (String::new(), 0usize);
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if let Some(target) = line.split_whitespace().nth(1) {
                path = target.to_owned();
            }
            loop {
                line.clear();
                reader.read_line(&mut line).unwrap();
                if line.trim().is_empty() {
                    break;
                }
                if let Some((name, value)) = line.split_once(':')
                    && name.eq_ignore_ascii_case("content-length")
                {
                    length = value.trim().parse().unwrap();
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
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    (url, received)
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
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\n[host]\ncache = false\n\
             [host.otel]\nendpoint = \"{endpoint}\"\n\
             [[activity]]\narn = \"{activity}\"\nhandler = \"{}\"\nworkers = 2\n",
            emulator::endpoint(),
            guest("scenarios").display()
        ),
    )
    .unwrap();
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
