//! Builds the guest components once per test run and finds them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The workspace root.
pub fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent")
}

/// The path of guest `name` (a crate name with `-` as `_`), built if needed.
///
/// The guests are built with the same command as `scripts/build-guests.sh`; cargo makes
/// that a no-op when they are up to date, so tests never run a stale guest.
pub fn guest(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let status = Command::new(workspace().join("scripts/build-guests.sh"))
            .arg("--quiet")
            .status()
            .expect("run scripts/build-guests.sh");
        assert!(status.success(), "building the guests failed: {status}");
    });
    let path = workspace()
        .join("target/wasm32-wasip2/release")
        .join(format!("{name}.wasm"));
    assert!(path.exists(), "{} was not built", path.display());
    path
}
