//! The one `bindgen!` over `wit/`: host-side types for the `sfn:activity/handler` world.
#![allow(missing_docs)]

wasmtime::component::bindgen!({
    path: "../wit",
    world: "sfn:activity/handler",
    imports: { default: async },
    exports: { default: async },
    additional_derives: [PartialEq, Eq],
});
