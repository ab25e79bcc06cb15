//! Who answered a task and who asked for a heartbeat: what the delivery and the events
//! say of an answer, beside the engine's own vocabulary of answers and failures
//! ([`sfn_wasm_engine::outcome`], re-exported here so that the host names one module).

pub use sfn_wasm_engine::outcome::*;

/// Who gave a task's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answerer {
    /// The handler, through its toolkit (`success` or `failure`).
    Guest,
    /// The host, with a failure of this kind.
    Host(FailureKind),
    /// A host before this one, which kept the answer in its outbox and stopped before it
    /// was settled (the answer is the host's, of no kind this host made).
    Recovered,
}

/// Who asked for a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeartbeatSource {
    /// The guest called `heartbeat()`.
    Guest,
    /// The host's automatic heartbeat (`heartbeat_seconds`).
    Auto,
}

impl HeartbeatSource {
    /// `guest` or `auto`, the `source` field of `task:heartbeat`.
    pub fn name(self) -> &'static str {
        match self {
            HeartbeatSource::Guest => "guest",
            HeartbeatSource::Auto => "auto",
        }
    }
}
