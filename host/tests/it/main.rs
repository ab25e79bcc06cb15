//! Integration tests: one binary, a module per topic. Every test runs real guest
//! components built from `examples/` and `tests/guests/` (see [`guests`]); the runtime
//! tests talk to the LocalStack that `scripts/test.sh` starts (see [`emulator`]).

mod admin;
mod answers;
mod architecture;
mod aws;
mod config_errors;
mod deploy;
mod dev;
mod emulator;
mod engine;
mod fleet;
mod folders;
mod grants;
mod guests;
mod hostile;
mod hotswap;
mod http1;
mod idempotency;
mod invoke;
mod keepalive;
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
mod served;
mod sfn_standin;
mod standin;
mod strict;
#[path = "../tls/server.rs"]
mod tls;
mod traces;
