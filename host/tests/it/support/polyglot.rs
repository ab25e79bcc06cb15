//! Handlers written in JavaScript (ComponentizeJS) and Python (componentize-py), built by
//! `scripts/build-polyglot.sh`: 12–18 MB components that take seconds to compile, so
//! they are compiled once into a shared cache ([`cache_dir`]) and every test loads them
//! precompiled.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use super::guests::workspace;
use super::invoke::Invoke;

pub const LANGUAGES: [&str; 2] = ["js", "py"];

/// The cache the tests share, which `scripts/test.sh` fills with these components.
pub fn cache_dir() -> PathBuf {
    workspace().join("target/test-cache")
}

/// Builds the components (once per run) and fills the cache with them, one at a time.
pub fn component(name: &str) -> PathBuf {
    static READY: OnceLock<()> = OnceLock::new();
    READY.get_or_init(|| {
        let status = Command::new(workspace().join("scripts/build-polyglot.sh"))
            .status()
            .unwrap();
        assert!(status.success(), "scripts/build-polyglot.sh failed");
        for language in LANGUAGES {
            for handler in ["greet", "scenarios"] {
                let line = invoke(
                    &polyglot(&format!("{handler}-{language}")),
                    r#"{"hello": "World"}"#,
                )
                .run()
                .line;
                assert_eq!(line["status"], "success", "{handler}-{language}: {line}");
            }
        }
    });
    polyglot(name)
}

fn polyglot(name: &str) -> PathBuf {
    workspace()
        .join("target/polyglot")
        .join(format!("{name}.wasm"))
}

/// `invoke HANDLER --input INPUT` as the polyglot tests run it (the shared runner):
/// 256 MiB, and the shared cache.
pub fn invoke(handler: &Path, input: &str) -> Invoke {
    super::invoke::invoke(handler)
        .input(input)
        .args(["--memory-limit-mb", "256", "--cache-dir"])
        .arg(cache_dir())
}
