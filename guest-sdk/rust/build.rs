//! Checks that the WIT this crate carries (`wit/handler.wit`, so that the published crate
//! builds on its own) is the repository's `wit/handler.wit`, the world the host serves.
//! Outside the repository (a packaged or downloaded crate, or the copy `sfn-wasm-host new`
//! writes into a project's `vendor/`) there is nothing to compare with, and the vendored
//! copy is the world.

use std::path::Path;

fn main() {
    let vendored = Path::new("wit/handler.wit");
    let source = Path::new("../../wit/handler.wit");
    println!("cargo::rerun-if-changed={}", vendored.display());
    println!("cargo::rerun-if-changed={}", source.display());
    // In the repository this crate is `guest-sdk/rust`; elsewhere `../../wit` is someone
    // else's folder (a project's own WIT), not the world to compare with.
    if !Path::new("../../guest-sdk/rust/build.rs").is_file() {
        return;
    }
    let Ok(want) = std::fs::read(source) else {
        return;
    };
    let have = std::fs::read(vendored).unwrap_or_default();
    if have != want {
        panic!(
            "guest-sdk/rust/wit/handler.wit differs from wit/handler.wit: \
             run scripts/vendor-wit.sh to copy the world into the SDKs"
        );
    }
}
