//! Host-side types for every version of the `sfn:activity/handler` world the host serves:
//! the current one (`wit/`, 0.2.0, re-exported at this module's root) and 0.1.0
//! (`wit/v0.1/`), so that handlers built against an older world keep running.
#![allow(missing_docs)]

/// `sfn:activity@0.2.0`: 0.1.0 plus `checkpoint` and `last-checkpoint`.
pub mod v0_2 {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "sfn:activity/handler",
        imports: { default: async },
        exports: { default: async },
        additional_derives: [PartialEq, Eq],
    });
}

/// `sfn:activity@0.1.0`: `success`, `failure`, `heartbeat`, `cancelled`.
pub mod v0_1 {
    wasmtime::component::bindgen!({
        path: "../../wit/v0.1",
        world: "sfn:activity/handler",
        imports: { default: async },
        exports: { default: async },
        additional_derives: [PartialEq, Eq],
    });
}

pub use v0_2::*;
