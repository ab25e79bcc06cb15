//! What the integration tests share; the topic modules keep only their tests.
//!
//! - [`guests`]: the guest components, built once per run; [`polyglot`]: the JavaScript
//!   and Python ones, precompiled into a shared cache.
//! - [`invoke`]: the one runner of `sfn-wasm-host invoke` (every test that runs it).
//! - [`served`]: a `serve` process with its JSON log lines; [`harness`]: the runtime in
//!   process (one consumer, one fresh activity) with its events.
//! - [`emulator`]: LocalStack (`scripts/test.sh` starts it): activities, state
//!   machines, executions, S3 buckets; [`proxy`]: a proxy in front of it whose network
//!   the test cuts or throttles.
//! - [`standin`]: the scriptable Step Functions stand-in (faults LocalStack cannot
//!   make), on [`http1`], the request side of HTTP/1.1 for the tests' own servers.
//! - [`registry`]: a real OCI registry on loopback (Debian's `docker-registry`), and
//!   components pushed and signed as `wkg oci push` and `cosign sign` do.
//! - [`admin`]: reading a host's admin server (`GET`, `/metrics` parsed); [`tls`]: a
//!   TLS server and the test certificates (`host/tests/tls/`).
//!
//! The other test binaries (`host/tests/fairness.rs`, `host/tests/authoring.rs`) include
//! this module as it is (`#[path = "it/support/mod.rs"]`), so its files name each other
//! through `super::`, never `crate::`.

pub mod admin;
pub mod emulator;
pub mod guests;
pub mod harness;
pub mod http1;
pub mod invoke;
pub mod polyglot;
pub mod proxy;
pub mod registry;
pub mod served;
pub mod standin;
#[path = "../../tls/server.rs"]
pub mod tls;
