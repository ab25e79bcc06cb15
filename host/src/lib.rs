//! sfn-wasm-host runs AWS Step Functions activity handlers as sandboxed WebAssembly
//! components.
//!
//! The data flows one way: [`config`] → [`consumer`] (one [`pool`] per activity) →
//! [`worker`]s that long-poll [`sfn`] and hand each task to its [`lifecycle`] → the
//! [`engine`] runs the task's handler in a fresh instance → the handler answers through
//! its toolkit (the engine's `toolkit.rs`) into an answer sink → the task's [`delivery`] owns
//! the answer from then on and sends it, retrying, through a [`Transport`] (here
//! [`sfn_transport::SfnTransport`]) to Step Functions, and tells one observer what became
//! of it (here [`answer_events::AnswerEvents`], the `task:*` events). Whatever the guest
//! does, the task ends with exactly one [`Answer`](outcome::Answer). Every step emits
//! [`events`].
//!
//! The modules form layers, lowest first, listed in `ARCHITECTURE.md`; a module imports
//! only from its own layer or below, which a test checks.
//!
//! [`Transport`]: delivery::Transport
#![warn(missing_docs)]
// No function over 80 lines (`clippy.toml`): a long one is several steps that want names.
#![warn(clippy::too_many_lines)]

/// The engine, a crate of its own (`crates/sfn-wasm-engine`: wasmtime, the world's
/// bindings, instances and their limits), under the name the host has always given it.
pub use sfn_wasm_engine as engine;
/// Outbound HTTP for guests, a crate of its own (`crates/sfn-wasm-outbound`: the
/// allow-list, the address checks, SigV4 signing, the connection pool), under the name
/// the host has always given it.
pub use sfn_wasm_outbound as outbound;

pub mod admin;
pub mod answer_events;
pub mod aws;
pub mod callback;
pub mod config;
pub mod consumer;
pub mod delivery;
pub mod error_chain;
pub mod events;
pub mod gauges;
pub mod grants;
pub mod idempotency;
pub mod ids;
pub mod lifecycle;
pub mod load;
pub mod metrics;
pub mod outbox;
pub mod outcome;
pub mod pool;
pub mod progress;
pub mod record;
pub mod reload;
pub mod remote;
pub mod rollout;
pub mod runtime;
pub mod secrets;
pub mod sfn;
pub mod sfn_transport;
pub mod source;
pub mod sqs;
pub mod status;
pub mod store;
pub mod traces;
pub mod worker;
