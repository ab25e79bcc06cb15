//! The README's commands, run: every fenced block marked `sh runnable` is executed with
//! bash in a scratch folder (which sees the repository's `target/`, `scripts/`,
//! `examples/` and `.venv/`, and this build's `sfn-wasm-host` on `PATH`), and must exit
//! 0; a `# {...}` line after a command is the JSON it must print. So the README cannot
//! drift from the code.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::emulator;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent")
        .to_owned()
}

/// The runnable blocks of `markdown`, with the line each starts on.
fn runnable_blocks(markdown: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(usize, Vec<&str>)> = None;
    for (number, line) in markdown.lines().enumerate() {
        match &mut current {
            None if line.trim() == "```sh runnable" => current = Some((number + 1, Vec::new())),
            None => {}
            Some((start, lines)) if line.trim() == "```" => {
                blocks.push((*start, lines.join("\n")));
                current = None;
            }
            Some((_, lines)) => lines.push(line),
        }
    }
    blocks
}

#[test]
fn every_runnable_block_of_the_readme_runs() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let blocks = runnable_blocks(&readme);
    assert!(blocks.len() >= 3, "only {} runnable blocks", blocks.len());
    let host = Path::new(env!("CARGO_BIN_EXE_sfn-wasm-host"));
    let path = format!(
        "{}:{}",
        host.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for (line, block) in blocks {
        // `scripts/dev.sh` writes `target/dev/`: one run at a time, with the dev tests.
        let _turn = block.contains("scripts/dev.sh").then(|| {
            crate::dev::ONE_AT_A_TIME
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        });
        let scratch = tempfile::tempdir().unwrap();
        for shared in ["target", "scripts", "examples", ".venv"] {
            std::os::unix::fs::symlink(root().join(shared), scratch.path().join(shared)).unwrap();
        }
        let output = Command::new("bash")
            .args(["-euo", "pipefail", "-c", &block])
            .current_dir(scratch.path())
            .env("PATH", &path)
            .env("SFN_WASM_HOST", host)
            .env("LOCALSTACK_ENDPOINT", emulator::endpoint())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "README.md line {line}:\n{block}\nexited {:?}\nstdout:\n{stdout}\nstderr:\n{}",
            output.status.code(),
            String::from_utf8_lossy(&output.stderr)
        );
        // `# {...}` after a command: the JSON line it prints.
        for expected in block.lines().filter_map(|l| l.strip_prefix("# {")) {
            let expected: Value = serde_json::from_str(&format!("{{{expected}")).unwrap();
            assert!(
                stdout
                    .lines()
                    .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                    .any(|printed| printed == expected),
                "README.md line {line}: {expected} not printed; stdout:\n{stdout}"
            );
        }
    }
}

#[test]
fn the_block_reader_finds_only_marked_blocks() {
    let text = "a\n```sh\nnot run\n```\n```sh runnable\necho 1\necho 2\n```\n```toml\nx = 1\n```\n";
    assert_eq!(runnable_blocks(text), [(5, "echo 1\necho 2".to_owned())]);
}
