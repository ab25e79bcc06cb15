//! The one runner of `sfn-wasm-host invoke` the tests share: a builder for the command
//! (handler, input, flags, environment, working folder), and what the run printed — the
//! answer line parsed, the exit code, stderr (the host's and guest's logs, at `info`).
//!
//! ```ignore
//! let run = invoke(&guest("greet")).input(r#"{"hello": "X"}"#).args(["--no-cache"]).run();
//! assert_eq!(run.line["output"]["greeting"], "Hello, X");
//! assert_eq!(run.code, 0);
//! ```
//!
//! Every run checks what every test relies on: the process exited (was not killed), its
//! stdout and stderr are UTF-8, and stdout is one JSON line — or, for a run that may end
//! before any answer (a usage error, [`Invoke::may_print_nothing`]), empty.

use std::ffi::OsStr;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

/// `sfn-wasm-host invoke HANDLER`, to be given its input and flags.
pub fn invoke(handler: impl AsRef<Path>) -> Invoke {
    let handler = handler.as_ref().to_owned();
    let mut command = Command::new(env!("CARGO_BIN_EXE_sfn-wasm-host"));
    command.arg("invoke").arg(&handler).env("RUST_LOG", "info");
    Invoke {
        command,
        handler,
        may_print_nothing: false,
        sample_memory: false,
    }
}

/// A run of `invoke` being set up.
pub struct Invoke {
    command: Command,
    handler: PathBuf,
    may_print_nothing: bool,
    sample_memory: bool,
}

/// What one run of `invoke` printed.
#[derive(Debug)]
pub struct Invoked {
    /// The answer line (`{"status": ...}`), or `Null` when stdout was empty (allowed only
    /// with [`Invoke::may_print_nothing`]).
    pub line: Value,
    /// The exit code: 0 success, 1 failure, 2 usage error.
    pub code: i32,
    pub stderr: String,
    /// The most memory the process held (VmHWM, KiB), with [`Invoke::sample_memory`].
    pub peak_kib: u64,
}

impl Invoke {
    /// `--input JSON`.
    pub fn input(self, json: &str) -> Self {
        self.args(["--input", json])
    }

    /// `--input-file FILE`.
    pub fn input_file(self, file: impl AsRef<OsStr>) -> Self {
        self.arg("--input-file").arg(file)
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.command.arg(arg);
        self
    }

    pub fn args(mut self, args: impl IntoIterator<Item = impl AsRef<OsStr>>) -> Self {
        self.command.args(args);
        self
    }

    pub fn env(mut self, key: &str, value: impl AsRef<OsStr>) -> Self {
        self.command.env(key, value);
        self
    }

    pub fn env_remove(mut self, key: &str) -> Self {
        self.command.env_remove(key);
        self
    }

    /// Runs it in `dir`, as a user who `cd`s there would.
    #[allow(dead_code)] // used by the authoring tests (host/tests/authoring.rs)
    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.command.current_dir(dir);
        self
    }

    /// Stdout may be empty (a usage error prints nothing there); else it must be one JSON
    /// line.
    pub fn may_print_nothing(mut self) -> Self {
        self.may_print_nothing = true;
        self
    }

    /// Samples the process's peak resident memory (VmHWM) every 20 ms while it runs.
    pub fn sample_memory(mut self) -> Self {
        self.sample_memory = true;
        self
    }

    /// Runs it to its end.
    pub fn run(mut self) -> Invoked {
        let mut child = self
            .command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run sfn-wasm-host invoke");
        let drain = |mut pipe: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut bytes = Vec::new();
                let _ = pipe.read_to_end(&mut bytes);
                bytes
            })
        };
        let stdout = drain(Box::new(child.stdout.take().expect("stdout")));
        let stderr = drain(Box::new(child.stderr.take().expect("stderr")));
        let mut peak_kib = 0;
        let status = if self.sample_memory {
            let proc_status = format!("/proc/{}/status", child.id());
            loop {
                if let Some(status) = child.try_wait().expect("wait") {
                    break status;
                }
                if let Ok(text) = std::fs::read_to_string(&proc_status)
                    && let Some(line) = text.lines().find(|l| l.starts_with("VmHWM:"))
                {
                    let kib: u64 = line
                        .split_whitespace()
                        .nth(1)
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(0);
                    peak_kib = peak_kib.max(kib);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        } else {
            child.wait().expect("wait")
        };
        let stdout =
            String::from_utf8(stdout.join().expect("stdout reader")).expect("stdout is UTF-8");
        let stderr =
            String::from_utf8(stderr.join().expect("stderr reader")).expect("stderr is UTF-8");
        let handler = self.handler.display();
        let line = if stdout.is_empty() && self.may_print_nothing {
            Value::Null
        } else {
            serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
                panic!("{handler}: stdout is not one JSON line ({e}): {stdout:?} / {stderr}")
            })
        };
        assert!(
            stdout.lines().count() <= 1,
            "{handler}: more than one line on stdout: {stdout:?}"
        );
        Invoked {
            line,
            code: status.code().expect("exited normally"),
            stderr,
            peak_kib,
        }
    }
}
