//! Nothing secret is echoed: a handler URL's password and presigned token stay out of
//! `check`'s output and the `handler:*` events, whether the URL answers or not.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::support::guests::guest;
use crate::support::served::Served;

const ARN: &str = "arn:aws:states:us-east-1:000000000000:activity:redacted";

/// What must never be printed.
const PASSWORD: &str = "hunter2";
const TOKEN: &str = "X-Amz-Signature=abc";

/// `scheme://user:hunter2@127.0.0.1:PORT/h.wasm?X-Amz-Signature=abc`, and how it may
/// be shown.
fn url(scheme: &str, port: u16) -> (String, String) {
    (
        format!("{scheme}://user:{PASSWORD}@127.0.0.1:{port}/h.wasm?{TOKEN}&X-Amz-Credential=k"),
        format!("{scheme}://127.0.0.1:{port}/h.wasm"),
    )
}

fn config(dir: &Path, handler: &str) -> PathBuf {
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[aws]\nregion = \"us-east-1\"\nendpoint_url = \"http://127.0.0.1:9\"\n\
             [host]\ncache = false\nshutdown_grace_seconds = 1\n\
             [[activity]]\narn = \"{ARN}\"\nhandler = \"{handler}\"\nsource_poll_seconds = 1\n"
        ),
    )
    .unwrap();
    config
}

fn assert_redacted(text: &str) {
    assert!(
        !text.contains(PASSWORD) && !text.contains("X-Amz-Signature") && !text.contains("user:"),
        "a secret is printed: {text}"
    );
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An HTTP server answering every GET with `body`, or `500` once `failing` is set. The
/// `Host` headers it was sent are kept.
struct Server {
    port: u16,
    failing: Arc<AtomicBool>,
    hosts: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn start(body: Vec<u8>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let failing = Arc::new(AtomicBool::new(false));
        let hosts = Arc::new(Mutex::new(Vec::new()));
        let (fail, seen) = (failing.clone(), hosts.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some((name, value)) = line.split_once(':')
                        && name.eq_ignore_ascii_case("host")
                    {
                        seen.lock().unwrap().push(value.trim().to_owned());
                    }
                }
                if fail.load(Ordering::SeqCst) {
                    let _ = write!(
                        stream,
                        "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    );
                } else {
                    let _ = write!(
                        stream,
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = stream.write_all(&body);
                }
            }
        });
        Self {
            port,
            failing,
            hosts,
        }
    }
}

#[test]
fn check_prints_a_handler_url_without_its_password_or_token() {
    let dir = tempfile::tempdir().unwrap();
    let check = |config: &Path| {
        Command::new(env!("CARGO_BIN_EXE_sfn-wasm-host"))
            .arg("check")
            .arg(config)
            .output()
            .unwrap()
    };

    // Unreachable: the error names the URL, redacted.
    let (secret, shown) = url("https", closed_port());
    let output = check(&config(dir.path(), &secret));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("`activity[0].handler`") && stderr.contains(&shown),
        "{stderr}"
    );
    assert_redacted(&stderr);
    assert_redacted(&String::from_utf8_lossy(&output.stdout));

    // Failing: likewise.
    let server = Server::start(std::fs::read(guest("greet")).unwrap());
    server.failing.store(true, Ordering::SeqCst);
    let (secret, shown) = url("http", server.port);
    let output = check(&config(dir.path(), &secret));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&shown) && stderr.contains("500"),
        "{stderr}"
    );
    assert_redacted(&stderr);

    // Served: the `ok:` line shows it redacted too.
    server.failing.store(false, Ordering::SeqCst);
    let output = check(&config(dir.path(), &secret));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains(&format!("{ARN} -> {shown} ")), "{stdout}");
    assert_redacted(&stdout);
    assert_redacted(&String::from_utf8_lossy(&output.stderr));
    // Nor is the userinfo sent in `Host`.
    let hosts = server.hosts.lock().unwrap().clone();
    assert!(!hosts.is_empty());
    for host in hosts {
        assert_eq!(host, format!("127.0.0.1:{}", server.port));
    }
}

#[test]
fn handler_events_show_a_handler_url_without_its_password_or_token() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(std::fs::read(guest("greet")).unwrap());
    let (secret, shown) = url("http", server.port);
    let mut served = Served::start(&config(dir.path(), &secret));
    served.wait_for("handler:loaded");
    server.failing.store(true, Ordering::SeqCst);
    let rejected = served.wait_for("handler:rejected");
    let reason = rejected["reason"].as_str().unwrap();
    assert!(
        reason.contains(&format!("GET {shown} failed: status 500")),
        "{rejected}"
    );
    served.terminate();
    // Every line it wrote, to the last.
    served.wait_quiet(std::time::Duration::from_millis(500));
    assert_redacted(&served.text());
}
