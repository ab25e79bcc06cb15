//! Integration tests: one binary, a module per topic, and what they share in
//! [`support`]. Every test runs real guest components built from `examples/` and
//! `tests/guests/` (see [`support::guests`]); the runtime tests talk to the LocalStack
//! that `scripts/test.sh` starts (see [`support::emulator`]).

mod admin;
mod answers;
mod architecture;
mod aws;
mod callback;
mod config_errors;
mod deploy;
mod dev;
mod engine;
mod fleet;
mod folders;
mod grants;
mod hostile;
mod hotswap;
mod idempotency;
mod invoke;
mod keepalive;
mod oci;
mod outbox;
mod polling;
mod polyglot;
mod progress;
mod readme;
mod redaction;
mod rollout;
mod runtime;
mod secrets;
mod serve;
mod standin;
mod strict;
mod support;
mod traces;
