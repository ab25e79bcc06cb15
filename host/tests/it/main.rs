//! Integration tests: one binary, a module per topic. Every test runs real guest
//! components built from `examples/` and `tests/guests/` (see [`guests`]).

mod engine;
mod guests;
mod invoke;
