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

/// A TOML error names the file, the line and column, and the key; never the text of the
/// line (`toml` prints it under a caret) nor a value serde quotes.
#[test]
fn a_toml_error_names_the_key_and_never_a_value() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.toml");
    let secret = "SECRET-VALUE-123";
    let cases = [
        // A syntax error on the line that holds the API key.
        (
            format!("headers = {{ \"x-api-key\" = \"{secret}\" oops }}"),
            3,
            "host.otel.headers",
        ),
        // An unterminated string: the inline table goes on, to the next table.
        (
            format!("headers = {{ \"x-api-key\" = \"{secret} }}"),
            5,
            "host.otel.headers",
        ),
        // A type error on the value itself: serde would quote it.
        (format!("headers = \"{secret}\""), 3, "host.otel.headers"),
        (
            format!("headers = {{ \"x-api-key\" = [\"{secret}\"] }}"),
            3,
            "host.otel.headers.x-api-key",
        ),
    ];
    for (lines, line, key) in cases {
        let text = format!(
            "[host.otel]\nendpoint = \"http://127.0.0.1:4318\"\n{lines}\n\n\
             [[activity]]\narn = \"arn:aws:states:us-east-1:000000000000:activity:a\"\nhandler = \"h.wasm\"\n"
        );
        std::fs::write(&file, &text).unwrap();
        let message = Config::load(&file).expect_err(&text).to_string();
        assert!(!message.contains(secret), "{message}");
        assert!(
            message.starts_with(&format!("{}:{line}:", file.display())),
            "{message}"
        );
        assert!(message.ends_with(&format!("(key `{key}`)")), "{message}");
    }
    // serde's own words for a value: the type, never the value.
    std::fs::write(
        &file,
        format!("[host]\nlog_format = \"{secret}\"\ncache_max_mb = 1\n"),
    )
    .unwrap();
    let message = Config::load(&file).unwrap_err().to_string();
    assert!(!message.contains(secret), "{message}");
    assert!(message.contains("unknown variant"), "{message}");
    assert!(message.ends_with("(key `host.log_format`)"), "{message}");
    std::fs::write(&file, format!("[host]\ncache_max_mb = \"{secret}\"\n")).unwrap();
    let message = Config::load(&file).unwrap_err().to_string();
    assert_eq!(
        message,
        format!(
            "{}:2:16: invalid type: string, expected u64 (key `host.cache_max_mb`)",
            file.display()
        )
    );
}

/// A URL in a config error is shown without its userinfo and query.
#[test]
fn a_url_in_a_config_error_is_shown_without_its_password_or_token() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.toml");
    for (table, line) in [
        (
            "[aws]",
            "endpoint_url = \"ftp://user:hunter2@example.com/?X-Amz-Signature=abc\"",
        ),
        (
            "[host.otel]",
            "endpoint = \"grpc://user:hunter2@example.com/?X-Amz-Signature=abc\"",
        ),
    ] {
        std::fs::write(
            &file,
            format!(
                "{table}\n{line}\n[[activity]]\narn = \"arn:aws:states:us-east-1:000000000000:activity:a\"\n\
                 handler = \"http://user:hunter2@example.com/h.wasm?X-Amz-Signature=abc\"\n"
            ),
        )
        .unwrap();
        let message = Config::load(&file).unwrap_err().to_string();
        assert!(
            !message.contains("hunter2") && !message.contains("X-Amz-Signature"),
            "{message}"
        );
        assert!(message.contains("example.com"), "{message}");
    }
    std::fs::write(
        &file,
        "[[activity]]\narn = \"arn:aws:states:us-east-1:000000000000:activity:a\"\n\
         handler = \"http://user:hunter2@example.com/h.wasm?X-Amz-Signature=abc\"\n",
    )
    .unwrap();
    let message = Config::load(&file).unwrap_err().to_string();
    assert!(
        message.contains("`activity[0].handler`")
            && message.contains("\"http://example.com/h.wasm\"")
            && !message.contains("hunter2")
            && !message.contains("X-Amz-Signature"),
        "{message}"
    );
}
