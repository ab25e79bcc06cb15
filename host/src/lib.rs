//! sfn-wasm-host runs AWS Step Functions activity handlers as sandboxed WebAssembly
//! components.
//!
//! The data flows one way: [`config`] → [`consumer`] (one [`pool`] per activity) →
//! [`worker`]s that long-poll [`sfn`] → the [`engine`] runs the task's handler in a fresh
//! instance → the handler answers through the [`toolkit`] → the task's [`delivery`] owns
//! the answer from then on and sends it, retrying, through a [`Responder`] (here
//! [`responder::SfnResponder`]) to Step Functions. Whatever the guest does, the task ends
//! with exactly one [`Answer`](outcome::Answer). Every step emits [`events`].
//!
//! [`Responder`]: toolkit::Responder
#![warn(missing_docs)]

pub mod admin;
pub mod config;
pub mod consumer;
pub mod delivery;
pub mod engine;
pub mod events;
pub mod grants;
pub mod metrics;
pub mod outbound;
pub mod outcome;
pub mod pool;
pub mod record;
pub mod reload;
pub mod responder;
pub mod rollout;
pub mod runtime;
pub mod sfn;
pub mod source;
pub mod status;
pub mod toolkit;
pub mod traces;
pub mod worker;
