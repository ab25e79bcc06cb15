//! A `sfn-wasm-host serve --log-format json` process, with its log lines on a channel.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};
use serde_json::Value;

/// Writes `dir/config.toml`: one activity `activity` of `handler`, against `endpoint`,
/// with `activity_lines` after its `handler` (its own tables included) and `host_lines`
/// in `[host]`.
pub fn config(
    dir: &Path,
    endpoint: &str,
    activity: &str,
    handler: &Path,
    activity_lines: &str,
    host_lines: &str,
) -> std::path::PathBuf {
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{endpoint}\"\n[host]\n{host_lines}\n\
             [[activity]]\narn = \"{activity}\"\nhandler = \"{}\"\n{activity_lines}\n",
            handler.display()
        ),
    )
    .unwrap();
    config
}

pub struct Served {
    child: Child,
    lines: mpsc::Receiver<Value>,
    /// Every line received so far.
    seen: Vec<Value>,
}

impl Served {
    pub fn start(config: &Path) -> Self {
        Self::start_in(None, config)
    }

    /// `serve CONFIG` with `vars` added to its environment.
    pub fn start_with_env(config: &Path, vars: &[(&str, &str)]) -> Self {
        Self::start_command(None, config, vars)
    }

    /// `serve CONFIG` started in the working folder `cwd` (`config` may be relative to
    /// it), as a user who `cd`s there would.
    pub fn start_in(cwd: Option<&Path>, config: &Path) -> Self {
        Self::start_command(cwd, config, &[])
    }

    /// `serve CONFIG` with its open-files limit (soft and hard) set to `files`, as a
    /// small container's would be.
    pub fn start_with_open_files(config: &Path, files: u64) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_sfn-wasm-host"));
        let limit = rustix::process::Rlimit {
            current: Some(files),
            maximum: Some(files),
        };
        // SAFETY: only setrlimit, which is async-signal-safe, runs in the child.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut command, move || {
                rustix::process::setrlimit(rustix::process::Resource::Nofile, limit)
                    .map_err(std::io::Error::from)
            });
        }
        Self::spawn(command, config)
    }

    fn start_command(cwd: Option<&Path>, config: &Path, vars: &[(&str, &str)]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_sfn-wasm-host"));
        if let Some(cwd) = cwd {
            command.current_dir(cwd);
        }
        command.envs(vars.iter().copied());
        Self::spawn(command, config)
    }

    fn spawn(mut command: Command, config: &Path) -> Self {
        let mut child = command
            .args(["serve", "--log-format", "json"])
            .arg(config)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
                if send.send(value).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a log line with `event` = `name` for which `matches` holds.
    pub fn wait_until(&mut self, name: &str, matches: impl Fn(&Value) -> bool) -> Value {
        self.wait_line_named(name, |line| line["event"] == name && matches(line))
    }

    /// Waits for any log line for which `matches` holds.
    pub fn wait_line(&mut self, matches: impl Fn(&Value) -> bool) -> Value {
        self.wait_line_named("matching", matches)
    }

    fn wait_line_named(&mut self, name: &str, matches: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no {name} line; events seen: {:?}", self.events()));
            self.seen.push(line.clone());
            if matches(&line) {
                return line;
            }
        }
    }

    /// Waits for a log line with `event` = `name`.
    pub fn wait_for(&mut self, name: &str) -> Value {
        self.wait_until(name, |_| true)
    }

    /// Takes in lines until none has come for `quiet` (at most 60 s in all).
    pub fn wait_quiet(&mut self, quiet: Duration) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            match self.lines.recv_timeout(quiet) {
                Ok(line) => self.seen.push(line),
                Err(_) => return,
            }
        }
        panic!("the host never went quiet; events: {:?}", self.events());
    }

    /// Every line seen so far.
    #[allow(dead_code)] // used by the fairness tests (host/tests/fairness.rs)
    pub fn lines(&self) -> &[Value] {
        &self.seen
    }

    /// Every line seen so far, as text.
    pub fn text(&self) -> String {
        self.seen
            .iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The event names seen so far.
    pub fn events(&self) -> Vec<String> {
        self.seen
            .iter()
            .filter_map(|l| l["event"].as_str().map(str::to_owned))
            .collect()
    }

    /// The values of `field` in the lines with `event` = `name`, in order.
    pub fn values(&self, name: &str, field: &str) -> Vec<String> {
        self.seen
            .iter()
            .filter(|l| l["event"] == name)
            .filter_map(|l| l[field].as_str().map(str::to_owned))
            .collect()
    }

    pub fn signal(&self, signal: Signal) {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).unwrap()).unwrap();
        rustix::process::kill_process(pid, signal).unwrap();
    }

    /// SIGTERM, then waits: how long the exit took, and the exit code.
    pub fn terminate(&mut self) -> (Duration, i32) {
        let started = Instant::now();
        self.signal(Signal::TERM);
        let code = self.wait_exit();
        (started.elapsed(), code)
    }

    /// Waits for the process to exit, and asserts that it exited 0 within `limit` of
    /// `since` (when it was signalled).
    pub fn exits_cleanly_within(&mut self, since: Instant, limit: Duration) {
        assert_eq!(self.wait_exit(), 0);
        assert!(
            since.elapsed() < limit,
            "exited {:?} after the signal",
            since.elapsed()
        );
    }

    /// Waits for the process to exit; its exit code.
    /// Waits for the process to end, however it ended (a signal included).
    pub fn child_wait(&mut self) -> std::process::ExitStatus {
        self.child.wait().unwrap()
    }

    pub fn wait_exit(&mut self) -> i32 {
        let exit = self.child.wait().unwrap();
        exit.code().expect("exited, not killed")
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
