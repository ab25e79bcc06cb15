//! What the benchmarks share: building and finding the guests, and a task request.
#![allow(dead_code)] // each benchmark uses a part

use std::path::{Path, PathBuf};
use std::time::Duration;

use std::sync::Arc;

use sfn_wasm_host::delivery::{Delivery, DeliveryOptions};
use sfn_wasm_host::engine::{TaskControl, TaskLimits, TaskRequest};
use sfn_wasm_host::toolkit::LocalResponder;

/// The workspace root.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent")
}

/// Builds the guest components (plus the packages in `extra`, as `-p NAME`).
pub fn build_guests(extra: &[&str]) {
    let status = std::process::Command::new(root().join("scripts/build-guests.sh"))
        .arg("--quiet")
        .args(extra)
        .status()
        .expect("run scripts/build-guests.sh");
    assert!(status.success(), "building the guests failed");
}

/// The built guest `name` (`-` as `_`).
pub fn guest(name: &str) -> PathBuf {
    root()
        .join("target/wasm32-wasip2/release")
        .join(format!("{name}.wasm"))
}

/// A task with `input` and a 10 s deadline.
pub fn request(input: &str, memory_mb: u64) -> TaskRequest {
    TaskRequest {
        input: input.to_owned(),
        activity_arn: "arn:aws:states:us-east-1:000000000000:activity:bench".to_owned(),
        worker_name: "bench:1".to_owned(),
        task_id: "bench".to_owned(),
        limits: TaskLimits {
            memory_bytes: memory_mb << 20,
            timeout: Duration::from_secs(10),
        },
        control: TaskControl::default(),
        grants: Default::default(),
    }
}

/// A delivery that accepts every answer, for `request`.
pub fn local_delivery(request: &TaskRequest) -> Delivery {
    Delivery::new(
        Arc::new(LocalResponder),
        request.control.clone(),
        DeliveryOptions::default(),
    )
}
