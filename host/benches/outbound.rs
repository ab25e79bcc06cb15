//! Per-request overhead of a guest's outbound HTTP GET, against the same GET from native
//! Rust (hyper), in the same run, to the same local server. Prints a table.
//!
//! Run: `cargo bench -p sfn-wasm-host --bench outbound` (after `scripts/build-guests.sh`;
//! `scripts/bench.sh` runs it too).
//!
//! - `native GET`: a hyper HTTP/1.1 client on a new connection per request (the host
//!   opens one per guest request too), reading the whole body.
//! - `guest task, 0 GETs` / `guest task, 10 GETs`: the `probe` test guest, allowed the
//!   server, run as a task (instantiate, `handle`, answer, drop) doing no request or ten.
//!   A guest GET costs (10 GETs − 0 GETs) / 10: the allow-list, the address check, the guest
//!   SDK's wasi:http calls and the body streams, on top of the same connection and request.
//!
//! - `guest task, 10 signed AWS GETs`: the same GETs to `s3.us-east-1.amazonaws.com`,
//!   granted by `[activity.aws]` and sent to the local server as `endpoint_url`: the
//!   endpoint match, header scrub, path-style rewrite and SigV4 signature (credentials
//!   cached after the first task).
//!
//! - https (CPU time of the whole process: host, guest and the local TLS server): a
//!   native hyper client on one pooled TLS connection; the guest's 10 GETs on kept
//!   connections (`pool_idle_seconds = 30`) and on fresh ones (`= 0`, a TLS handshake
//!   each), the server's CA trusted through `ca_file`.
//!
//! Threads, as `serve` has them by default past one task slot: each task (and each
//! native client) runs on a runtime of one worker thread, with the engine's guest
//! threads beside it (the `probe` guest never computes long enough to move); the local
//! servers run on a runtime of their own, as a remote server would. Other shapes, to see
//! what thread hand-offs cost: `OUTBOUND_RUNTIME=two_threads` (two worker threads, as
//! `guest_threads = 0` gives on 2 cores: wasmtime-wasi-http's per-request tasks may
//! run on the other thread), `OUTBOUND_RUNTIME=current_thread` (everything, servers too,
//! on one thread).
//!
//! Rounds alternate the cases three times; medians of each case over all rounds.
//! `OUTBOUND_PROFILE=N` runs only N tasks of ten kept https GETs, for a profiler.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use sfn_wasm_host::engine::{Capabilities, EngineConfig, Handler, WasmEngine};
use sfn_wasm_host::grants::{Grants, GrantsConfig};
use sfn_wasm_host::outbound::{AllowedHost, AwsGrant, OutboundLimits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use wasmtime_wasi_http::io::TokioIo;

mod common;
#[path = "../tests/tls/server.rs"]
mod tls;

const ROUNDS: usize = 3;
const PER_ROUND: usize = 200;
const GETS: usize = 10;

async fn server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = socket
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello",
                    )
                    .await;
                let _ = socket.shutdown().await;
            });
        }
    });
    address
}

async fn native_get(address: SocketAddr) {
    let stream = TcpStream::connect(address).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let driver = tokio::spawn(connection);
    let request = http::Request::get("/hello")
        .header(http::header::HOST, address.to_string())
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"hello");
    let _ = driver.await;
}

/// The process's CPU time (all threads: the host's, the guests' and the local servers').
fn cpu_now() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// CPU per GET of a native hyper client over one pooled https connection.
async fn native_pooled_https(address: SocketAddr, gets: usize) -> Duration {
    let mut roots = rustls::RootCertStore::empty();
    for root in sfn_wasm_host::outbound::read_ca_file(&tls::tls_file("ca.pem")).unwrap() {
        roots.add(root).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(address).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let name = rustls::pki_types::ServerName::IpAddress(address.ip().into());
    let stream = connector.connect(name, tcp).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let started = cpu_now();
    for _ in 0..gets {
        sender.ready().await.unwrap();
        let request = http::Request::get("/hello")
            .header(http::header::HOST, address.to_string())
            .body(Empty::<bytes::Bytes>::new())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"hello");
    }
    (cpu_now() - started) / gets as u32
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn main() {
    // Static credentials for the signed case: the host's chain finds them in the
    // environment (once; the signer caches them).
    // SAFETY: no other thread runs yet.
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", "AKIDBENCHMARK");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "bench-secret");
    }
    common::build_guests(&[]);
    let shape = std::env::var("OUTBOUND_RUNTIME").unwrap_or_default();
    let one_thread = shape == "current_thread";
    let runtime = if one_thread {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(if shape == "two_threads" { 2 } else { 1 });
        builder
    }
    .enable_all()
    .build()
    .unwrap();
    let servers = (!one_thread).then(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap()
    });
    let servers = servers.as_ref().unwrap_or(&runtime);
    // On the runtime's worker threads, as `serve` spawns each task (`block_on` would run
    // it on this thread, and wasmtime-wasi-http's per-request tasks on the workers).
    let on_runtime = |future: std::pin::Pin<Box<dyn Future<Output = Duration> + Send>>| {
        if one_thread {
            runtime.block_on(future)
        } else {
            runtime.block_on(runtime.spawn(future)).unwrap()
        }
    };
    let address = servers.block_on(server());
    let engine = Arc::new(
        WasmEngine::new(EngineConfig {
            max_concurrent_tasks: 4,
            guest_threads: std::thread::available_parallelism().map_or(1, usize::from),
            ..EngineConfig::default()
        })
        .unwrap(),
    );
    let handler = Arc::new(Handler::load_file(&engine, &common::guest("probe")).unwrap());
    let grants = Arc::new(
        Grants::resolve(&GrantsConfig {
            allowed_outbound_hosts: vec![AllowedHost::parse(&format!("http://{address}")).unwrap()],
            ..GrantsConfig::default()
        })
        .unwrap(),
    );
    // The same GET to S3's name, granted by `[activity.aws]` and sent to the local server
    // as its `endpoint_url`: what signing adds.
    let signed_grants = Arc::new(
        Grants::resolve(&GrantsConfig {
            aws: Some(AwsGrant {
                services: vec!["s3".into()],
                regions: vec!["us-east-1".into()],
                role_arn: None,
                external_id: None,
                host_region: Some("us-east-1".into()),
                endpoint_url: Some(format!("http://{address}")),
                allow_credential_apis: false,
                private_endpoints: false,
                service_endpoints: Vec::new(),
            }),
            ..GrantsConfig::default()
        })
        .unwrap(),
    );
    let run = |url: &str, gets: usize, grants: &Arc<Grants>| {
        let mut request = common::request(
            &format!(r#"{{"op": "fetch", "url": "{url}", "times": {gets}}}"#),
            64,
        );
        request.capabilities = Capabilities::none().with(grants.clone());
        let delivery = common::local_delivery(&request);
        let (handler, engine) = (handler.clone(), engine.clone());
        on_runtime(Box::pin(async move {
            let started = Instant::now();
            let report = handler.run(&engine, request, delivery.clone()).await;
            assert_eq!(report.error, None);
            delivery.settled().await;
            started.elapsed()
        }))
    };
    let plain_url = format!("http://{address}/hello");
    let task = |gets: usize| run(&plain_url, gets, &grants);
    let signed = |gets: usize| {
        run(
            "https://s3.us-east-1.amazonaws.com/bench/hello",
            gets,
            &signed_grants,
        )
    };

    // https to a local server whose CA the activity trusts through `ca_file`: ten GETs
    // on kept connections, and ten on fresh ones (`pool_idle_seconds = 0`), in CPU time.
    let tls_address = servers.block_on(tls::https_server());
    let https_grants = |pool_idle_seconds| {
        Arc::new(
            Grants::resolve(&GrantsConfig {
                allowed_outbound_hosts: vec![
                    AllowedHost::parse(&format!("https://{tls_address}")).unwrap(),
                ],
                outbound: OutboundLimits {
                    pool_idle_seconds,
                    ..OutboundLimits::default()
                },
                ca_file: Some(tls::tls_file("ca.pem")),
                ..GrantsConfig::default()
            })
            .unwrap(),
        )
    };
    let (pooled_grants, fresh_grants) = (https_grants(30), https_grants(0));
    let https_url = format!("https://{tls_address}/hello");
    let cpu_of = |run: &dyn Fn()| {
        let started = cpu_now();
        run();
        cpu_now() - started
    };
    let (mut https_zero, mut https_pooled, mut https_fresh, mut https_native) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // `OUTBOUND_PROFILE=N`: only N tasks of ten kept https GETs, for a profiler
    // (`perf record -g`), then exit.
    if let Some(tasks) = std::env::var("OUTBOUND_PROFILE")
        .ok()
        .and_then(|n| n.parse::<usize>().ok())
    {
        for _ in 0..tasks {
            run(&https_url, GETS, &pooled_grants);
        }
        return;
    }

    let (mut native, mut zero, mut ten, mut ten_signed) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        for _ in 0..PER_ROUND {
            native.push(on_runtime(Box::pin(async move {
                let started = Instant::now();
                native_get(address).await;
                started.elapsed()
            })));
        }
        for _ in 0..PER_ROUND {
            zero.push(task(0));
        }
        for _ in 0..PER_ROUND / 4 {
            ten.push(task(GETS));
        }
        for _ in 0..PER_ROUND / 4 {
            ten_signed.push(signed(GETS));
        }
        for _ in 0..PER_ROUND / 4 {
            https_zero.push(cpu_of(&|| {
                run(&https_url, 0, &pooled_grants);
            }));
            https_pooled.push(cpu_of(&|| {
                run(&https_url, GETS, &pooled_grants);
            }));
            https_fresh.push(cpu_of(&|| {
                run(&https_url, GETS, &fresh_grants);
            }));
        }
        https_native.push(on_runtime(Box::pin(native_pooled_https(
            tls_address,
            PER_ROUND,
        ))));
    }
    let native = median(&mut native);
    let zero = median(&mut zero);
    let ten = median(&mut ten);
    let guest_get = ten.saturating_sub(zero) / GETS as u32;
    let ten_signed = median(&mut ten_signed);
    let signed_get = ten_signed.saturating_sub(zero) / GETS as u32;
    println!("| case | median |");
    println!("|---|---|");
    println!("| native GET (hyper, new connection) | {native:.1?} |");
    println!("| guest task, 0 GETs | {zero:.1?} |");
    println!("| guest task, {GETS} GETs | {ten:.1?} |");
    println!("| guest GET ((10 − 0) / 10) | {guest_get:.1?} |");
    println!(
        "| added per request (guest GET − native GET) | {:.1?} |",
        guest_get.saturating_sub(native)
    );
    println!("| guest task, {GETS} signed AWS GETs | {ten_signed:.1?} |");
    let https_zero = median(&mut https_zero);
    let https_pooled = median(&mut https_pooled);
    let https_fresh = median(&mut https_fresh);
    let https_native = median(&mut https_native);
    let pooled_get = https_pooled.saturating_sub(https_zero) / GETS as u32;
    let fresh_get = https_fresh.saturating_sub(https_zero) / GETS as u32;
    println!("| **https, CPU time** (host, guest and the local server) | |");
    println!("| native GET (hyper, one pooled TLS connection) | {https_native:.1?} |");
    println!("| guest task, 0 GETs | {https_zero:.1?} |");
    println!(
        "| guest task, {GETS} GETs, connections kept (pool_idle_seconds = 30) | {https_pooled:.1?} |"
    );
    println!(
        "| guest task, {GETS} GETs, fresh connections (pool_idle_seconds = 0) | {https_fresh:.1?} |"
    );
    println!("| kept GET ((10 − 0) / 10) | {pooled_get:.1?} |");
    println!("| fresh GET ((10 − 0) / 10) | {fresh_get:.1?} |");
    println!(
        "| added per kept GET (kept − native pooled) | {:.1?} |",
        pooled_get.saturating_sub(https_native)
    );
    println!(
        "| fresh / kept, 10 GETs | {:.1}× |",
        fresh_get.as_secs_f64() / pooled_get.as_secs_f64().max(1e-9)
    );
    println!("| signed AWS GET ((10 − 0) / 10) | {signed_get:.1?} |");
    println!(
        "| added by signing (signed GET − guest GET) | {:.1?} |",
        signed_get.saturating_sub(guest_get)
    );
}
