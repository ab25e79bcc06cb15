//! Reading a host's admin server: a `GET`, and `/metrics` parsed by the Prometheus
//! project's own Python parser (the test tools' Python).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

/// `GET path` over a fresh connection: the status code and the body.
pub fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

/// Every sample of a Prometheus text exposition, as Python's `prometheus_client` parser
/// reads it: `name{label="value",...}` (labels sorted) → value.
pub fn parse_metrics(text: &str) -> HashMap<String, f64> {
    let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
        out[f"{s.name}{{{labels}}}"] = s.value
print(json.dumps(out))
"#;
    serde_json::from_slice(&test_tools_python(script, text, "the parser refused")).unwrap()
}

/// Runs `script` with the test tools' Python (`scripts/test.sh` installs it) on `input`:
/// its stdout. Panics with `refusal` and the input when the script fails.
pub fn test_tools_python(script: &str, input: &str, refusal: &str) -> Vec<u8> {
    let python = std::env::var("TEST_TOOLS_PYTHON").expect(
        "TEST_TOOLS_PYTHON is not set: run the suite with scripts/test.sh, which installs the test tools",
    );
    let mut child = Command::new(python)
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{refusal}:\n{input}");
    output.stdout
}
