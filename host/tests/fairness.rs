//! Guests share the host's threads with its polls, answers and timers, and with each
//! other: CPU-bound guests (four times as many as cores) must not delay a quick task's
//! start, a deadline, or a heartbeat by more than the bounds the README gives. `serve`
//! runs as its own process (its runtime sized as in production) against the scriptable
//! stand-in for Step Functions, which notes when it handed each task out and when each
//! request arrived; the guests read the same wall clock.
//!
//! A test binary of its own, its tests one at a time: cargo runs test binaries one after
//! another, so no other test competes for the cores these bounds are about.

#[path = "it/support/mod.rs"]
#[allow(dead_code)] // shared with the `it` binary, which uses all of it
mod support;

use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use sfn_wasm_host::engine::TICK;

use crate::support::guests::guest;
use crate::support::served::Served;
use crate::support::standin::StandIn;

/// Held by each test: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const ARN: &str = "arn:aws:states:us-east-1:000000000000:activity:standin";
/// The README's bound on a ready task's wait behind spinning guests.
const BOUND: Duration = Duration::from_millis(50);

/// Four times as many spinning guests as the machine has cores.
fn spinners() -> usize {
    4 * std::thread::available_parallelism().map_or(2, usize::from)
}

/// `serve` of the `pushy` guest against `standin`, with `extra` lines in its activity.
fn serve(standin: &StandIn, extra: &str) -> (Served, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\n[host]\ncache = false\nshutdown_grace_seconds = 1\n\
             [[activity]]\narn = \"{ARN}\"\nhandler = \"{}\"\npollers = 2\n{extra}\n",
            standin.endpoint,
            guest("pushy").display(),
        ),
    )
    .unwrap();
    let served = Served::start_with_env(
        &config,
        &[
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
        ],
    );
    (served, dir)
}

/// Waits (on this thread) until `done` holds, for at most `limit`.
fn wait(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    while !done() {
        assert!(std::time::Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The answer `standin` received for `token` (`SendTaskSuccess` or `SendTaskFailure`),
/// and when.
fn answer(standin: &StandIn, token: &str) -> Option<(&'static str, Value, SystemTime)> {
    ["SendTaskSuccess", "SendTaskFailure"]
        .into_iter()
        .find_map(|action| {
            standin
                .received_at(action)
                .into_iter()
                .find(|(body, _)| body["taskToken"] == token)
                .map(|(body, at)| (action, body, at))
        })
}

fn since(later: SystemTime, earlier: SystemTime) -> Duration {
    later.duration_since(earlier).unwrap_or_default()
}

/// Queues `spinners()` guests that spin for `ms`, each telling when it started, and
/// waits until every one has.
fn start_spinners(standin: &StandIn, served: &mut Served, ms: u64) -> usize {
    let n = spinners();
    for i in 0..n {
        standin.task(
            &format!("spin-{i}"),
            json!({"push": "spin", "ms": ms, "tell": format!("spin-{i}")}),
        );
    }
    for _ in 0..n {
        served.wait_line(|line| {
            line["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("started spin-"))
        });
    }
    n
}

/// The wall-clock times the spinners logged as their start, by token.
fn started(served: &Served) -> Vec<(String, SystemTime)> {
    served
        .lines()
        .iter()
        .filter_map(|line| {
            let message = line["message"].as_str()?;
            let mut words = message.strip_prefix("started ")?.split(' ');
            let token = words.next()?.to_owned();
            let ns: u64 = words.next()?.parse().ok()?;
            Some((token, SystemTime::UNIX_EPOCH + Duration::from_nanos(ns)))
        })
        .collect()
}

/// A spinner that ran to its answer: when it started (its own clock) and its answer.
struct Spun {
    token: String,
    started: SystemTime,
    action: &'static str,
    body: Value,
    answered: SystemTime,
}

/// Starts `spinners()` guests spinning for `ms` and waits until every one is answered.
fn spin_to_the_end(standin: &StandIn, served: &mut Served, ms: u64) -> Vec<Spun> {
    let n = start_spinners(standin, served, ms);
    wait(Duration::from_secs(10), "every spinner is answered", || {
        (0..n).all(|i| answer(standin, &format!("spin-{i}")).is_some())
    });
    let spun: Vec<Spun> = started(served)
        .into_iter()
        .map(|(token, started)| {
            let (action, body, answered) = answer(standin, &token).unwrap();
            Spun {
                token,
                started,
                action,
                body,
                answered,
            }
        })
        .collect();
    assert_eq!(spun.len(), n, "every spinner told when it started");
    spun
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quick_task_starts_within_50_ms_behind_spinning_guests() {
    let _serial = SERIAL.lock().await;
    let standin = StandIn::start().await;
    let n = spinners();
    let (mut served, _dir) = serve(
        &standin,
        &format!(
            "max_concurrent_tasks = {}\ntask_timeout_seconds = 60",
            n + 1
        ),
    );
    tokio::task::block_in_place(|| {
        served.wait_for("worker:running");
        start_spinners(&standin, &mut served, 8_000);
        // One at a time, each behind every spinner: from the moment the stand-in handed
        // it out to the moment the guest read the clock.
        let mut waits = Vec::new();
        for i in 0..5 {
            let token = format!("quick-{i}");
            standin.task(&token, json!({"push": "clock"}));
            wait(Duration::from_secs(5), "the quick task is answered", || {
                answer(&standin, &token).is_some()
            });
            let (action, body, _) = answer(&standin, &token).unwrap();
            assert_eq!(action, "SendTaskSuccess", "{body}");
            let output: Value = serde_json::from_str(body["output"].as_str().unwrap()).unwrap();
            let started = SystemTime::UNIX_EPOCH
                + Duration::from_nanos(output["started_unix_ns"].as_u64().unwrap());
            waits.push(since(started, standin.handed_out_at(&token).unwrap()));
        }
        eprintln!("quick tasks behind {n} spinning guests waited {waits:?} to start");
        assert!(
            waits.iter().all(|wait| *wait <= BOUND),
            "behind {n} spinning guests, quick tasks waited {waits:?} to start"
        );
        // The spinners were still spinning the whole time.
        assert!(answer(&standin, "spin-0").is_none());
    });
    drop(served);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_hold_within_a_tick_and_50_ms_whatever_other_guests_do() {
    let _serial = SERIAL.lock().await;
    let standin = StandIn::start().await;
    let n = spinners();
    let (mut served, _dir) = serve(
        &standin,
        &format!("max_concurrent_tasks = {n}\ntask_timeout_seconds = 1"),
    );
    tokio::task::block_in_place(|| {
        served.wait_for("worker:running");
        let mut overshoots = Vec::new();
        for spun in spin_to_the_end(&standin, &mut served, 5_000) {
            let body = &spun.body;
            assert_eq!(spun.action, "SendTaskFailure", "{body}");
            assert_eq!(body["error"], "SfnWasmHost.Timeout", "{body}");
            overshoots
                .push(since(spun.answered, spun.started).saturating_sub(Duration::from_secs(1)));
        }
        eprintln!("1 s deadlines of {n} spinning guests, answered this long after: {overshoots:?}");
        assert!(
            overshoots.iter().all(|over| *over <= TICK + BOUND),
            "{n} spinning guests with a 1 s deadline were answered this long after it: {overshoots:?}"
        );
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_keep_their_time_behind_spinning_guests() {
    let _serial = SERIAL.lock().await;
    let standin = StandIn::start().await;
    let n = spinners();
    let (mut served, _dir) = serve(
        &standin,
        &format!("max_concurrent_tasks = {n}\ntask_timeout_seconds = 60\nheartbeat_seconds = 0.5"),
    );
    tokio::task::block_in_place(|| {
        served.wait_for("worker:running");
        let spun = spin_to_the_end(&standin, &mut served, 3_000);
        let heartbeats = standin.received_at("SendTaskHeartbeat");
        for Spun {
            token,
            started,
            answered,
            ..
        } in spun
        {
            let mut beats: Vec<SystemTime> = heartbeats
                .iter()
                .filter(|(body, _)| body["taskToken"] == token.as_str())
                .map(|(_, at)| *at)
                .collect();
            beats.sort();
            // Every half second from the start, each within the bound of its time.
            let mut last = started;
            let mut gaps = Vec::new();
            for beat in beats.iter().chain([&answered]) {
                gaps.push(since(*beat, last));
                last = *beat;
            }
            eprintln!("{token}: heartbeat gaps {gaps:?}");
            assert!(
                beats.len() >= 5,
                "{token}: {} heartbeats in 3 s",
                beats.len()
            );
            // Each heartbeat is one I/O step behind its timer; the first of each task
            // also opens a connection (every task's at once), a second step.
            let every = Duration::from_millis(500);
            assert!(
                gaps[0] <= every + 2 * BOUND && gaps[1..].iter().all(|gap| *gap <= every + BOUND),
                "{token}: heartbeats (and the answer) came this far apart: {gaps:?}"
            );
        }
    });
}
