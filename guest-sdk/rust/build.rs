//! Checks that the WIT this crate carries (`wit/handler.wit`, so that the published crate
//! builds on its own) is the repository's `wit/handler.wit`, the world the host serves.
//! Outside the repository (a packaged or downloaded crate) there is nothing to compare
//! with, and the vendored copy is the world.

use std::path::Path;

fn main() {
    let vendored = Path::new("wit/handler.wit");
    let source = Path::new("../../wit/handler.wit");
    println!("cargo::rerun-if-changed={}", vendored.display());
    println!("cargo::rerun-if-changed={}", source.display());
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
