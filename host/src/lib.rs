//! sfn-wasm-host runs AWS Step Functions activity handlers as sandboxed WebAssembly
//! components.
//!
//! The data flows one way: a task comes in, the [`engine`] runs its handler in a fresh
//! instance, and the handler's answer leaves through the [`toolkit`]'s [`Responder`]
//! (Step Functions in `serve`, the terminal in `invoke`). Whatever the guest does, the
//! task ends with exactly one [`Answer`](outcome::Answer).
//!
//! [`Responder`]: toolkit::Responder
#![warn(missing_docs)]

pub mod engine;
pub mod outcome;
pub mod toolkit;
