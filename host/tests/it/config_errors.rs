//! Config errors as data: each `tests/config-errors/NAME.toml` is a config that must be
//! refused, and `NAME.err` beside it is the exact message a user reads (file, key, what
//! to do), with the folder written as `<dir>`. One test runs them all, so a message that
//! drifts, or a bad config that starts being accepted, fails here by name.
//!
//! A new case: add `NAME.toml`, run this test with `BLESS_CONFIG_ERRORS=1` to write
//! `NAME.err`, read it, and commit both.

use std::path::{Path, PathBuf};

use sfn_wasm_host::config::Config;

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/config-errors")
}

/// The message `Config::load` gives for `file`, with the folder replaced by `<dir>`.
fn message_for(file: &Path, dir: &Path) -> Result<String, String> {
    match Config::load(file) {
        Ok(_) => Err(format!("{} was accepted", file.display())),
        Err(err) => Ok(err.to_string().replace(&dir.display().to_string(), "<dir>")),
    }
}

#[test]
fn every_bad_config_gets_its_exact_message() {
    let dir = cases_dir();
    let bless = std::env::var_os("BLESS_CONFIG_ERRORS").is_some();
    let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("the cases folder")
        .map(|entry| entry.expect("a folder entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    names.sort();
    assert!(names.len() >= 40, "only {} cases found", names.len());
    let mut failures = Vec::new();
    for toml in &names {
        let expected_file = toml.with_extension("err");
        let actual = match message_for(toml, &dir) {
            Ok(message) => message,
            Err(accepted) => {
                failures.push(accepted);
                continue;
            }
        };
        if bless {
            std::fs::write(&expected_file, format!("{actual}\n")).expect("write the .err file");
            continue;
        }
        let expected = std::fs::read_to_string(&expected_file)
            .unwrap_or_else(|_| panic!("{} is missing", expected_file.display()));
        if expected.trim_end() != actual {
            failures.push(format!(
                "{}:\n  expected: {}\n  actual:   {actual}",
                toml.display(),
                expected.trim_end()
            ));
        }
    }
    // An orphaned .err file is a case that was deleted by mistake.
    for entry in std::fs::read_dir(&dir).expect("the cases folder") {
        let path = entry.expect("a folder entry").path();
        if path.extension().is_some_and(|ext| ext == "err") && !path.with_extension("toml").exists()
        {
            failures.push(format!("{} has no .toml beside it", path.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
