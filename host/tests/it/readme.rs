//! The docs' commands, run: every fenced block marked `sh runnable` in README.md and in
//! the book's chapters (`docs/src/*.md`) is executed with bash in a scratch folder (which
//! sees the repository's `target/`, `scripts/`, `examples/` and `.venv/`, and this build's
//! `sfn-wasm-host` on `PATH`), and must exit 0; a `# {...}` line after a command is the
//! JSON it must print. So neither the README nor the book can drift from the code.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::support::emulator;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent")
        .to_owned()
}

/// The Markdown files whose runnable blocks run, relative to the repository: README.md,
/// then the book's chapters (`docs/src/*.md`, by name).
fn documents() -> Vec<PathBuf> {
    let mut chapters: Vec<PathBuf> = std::fs::read_dir(root().join("docs/src"))
        .expect("the book's chapters are in docs/src/")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "md"))
        .map(|path| path.strip_prefix(root()).unwrap().to_owned())
        .collect();
    chapters.sort();
    let mut documents = vec![PathBuf::from("README.md")];
    documents.extend(chapters);
    documents
}

/// Every runnable block of the README and the book: the file, the line it starts on and
/// the block.
fn all_runnable_blocks() -> Vec<(PathBuf, usize, String)> {
    documents()
        .into_iter()
        .flat_map(|file| {
            let markdown = std::fs::read_to_string(root().join(&file)).unwrap();
            runnable_blocks(&markdown)
                .into_iter()
                .map(move |(line, block)| (file.clone(), line, block))
                .collect::<Vec<_>>()
        })
        .collect()
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
fn every_runnable_block_of_the_docs_runs() {
    let blocks = all_runnable_blocks();
    assert!(blocks.len() >= 3, "only {} runnable blocks", blocks.len());
    let host = Path::new(env!("CARGO_BIN_EXE_sfn-wasm-host"));
    let path = format!(
        "{}:{}",
        host.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for (file, line, block) in blocks {
        let file = file.display();
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
            "{file} line {line}:\n{block}\nexited {:?}\nstdout:\n{stdout}\nstderr:\n{}",
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
                "{file} line {line}: {expected} not printed; stdout:\n{stdout}"
            );
        }
    }
}

#[test]
fn the_block_reader_finds_only_marked_blocks() {
    let text = "a\n```sh\nnot run\n```\n```sh runnable\necho 1\necho 2\n```\n```toml\nx = 1\n```\n";
    assert_eq!(runnable_blocks(text), [(5, "echo 1\necho 2".to_owned())]);
}

/// The book's chapters hold the runnable blocks the README used to (at least three in
/// all), and SUMMARY.md lists exactly the chapters there are: every entry a file in
/// `docs/src/`, every `docs/src/*.md` but SUMMARY.md itself an entry.
#[test]
fn the_book_lists_every_chapter_and_holds_the_runnable_blocks() {
    let blocks = all_runnable_blocks();
    assert!(blocks.len() >= 3, "only {} runnable blocks", blocks.len());
    assert!(
        blocks
            .iter()
            .any(|(file, _, _)| file.starts_with("docs/src")),
        "no runnable block in docs/src/"
    );

    let src = root().join("docs/src");
    let summary = std::fs::read_to_string(src.join("SUMMARY.md")).unwrap();
    let listed = summary_entries(&summary);
    for entry in &listed {
        assert!(
            src.join(entry).is_file(),
            "docs/src/SUMMARY.md lists {entry}, which is not a file in docs/src/"
        );
    }
    for file in documents().iter().skip(1) {
        let name = file.file_name().unwrap().to_str().unwrap();
        assert!(
            name == "SUMMARY.md" || listed.iter().any(|entry| entry == name),
            "docs/src/{name} is not listed in docs/src/SUMMARY.md"
        );
    }
    let book = std::fs::read_to_string(root().join("docs/book.toml")).unwrap();
    assert!(book.contains("src = \"src\""), "docs/book.toml: {book}");
}

/// The link targets of SUMMARY.md's entries (`[Title](file.md)`, numbered or not).
fn summary_entries(summary: &str) -> Vec<String> {
    summary
        .lines()
        .filter_map(|line| {
            let (_, rest) = line.split_once("](")?;
            let (target, _) = rest.split_once(')')?;
            (!target.is_empty()).then(|| target.to_owned())
        })
        .collect()
}

#[test]
fn the_summary_reader_finds_every_entry() {
    let summary = "# Summary\n\n[Introduction](introduction.md)\n\n# Part\n\n- [A `b`](a.md)\n  - [C](c/d.md)\n";
    assert_eq!(
        summary_entries(summary),
        ["introduction.md", "a.md", "c/d.md"]
    );
}
