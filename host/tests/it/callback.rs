//! Callback tasks: Step Functions' `sqs:sendMessage.waitForTaskToken` tasks, received from
//! an SQS queue in LocalStack by a served host (`[[callback]]`), with the same answer
//! guarantees as an activity's: one answer accepted per task, the message deleted only
//! then, never more messages held than free slots, poison messages left for the
//! dead-letter queue, a FIFO group kept in order, a host killed mid-task replaced by the
//! next.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aws_sdk_sfn::types::ExecutionStatus;
use serde_json::{Value, json};

use crate::support::admin::{get, parse_metrics};
use crate::support::emulator::{
    self, Ended, callback_machine, drained, held, queue, sqs, take_a_look,
};
use crate::support::guests::guest;
use crate::support::served::Served;

/// `dir/config.toml`: one `[[callback]]` on `queue_url` running the scenarios handler,
/// with `lines` after its `handler`, and `more` tables after it.
fn config(dir: &Path, queue_url: &str, lines: &str, more: &str) -> PathBuf {
    let file = dir.join("config.toml");
    std::fs::write(
        &file,
        format!(
            "[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\n[host]\nshutdown_grace_seconds = 1\nadmin_listen = \"127.0.0.1:0\"\n\
             [[callback]]\nqueue_url = \"{queue_url}\"\nhandler = \"{}\"\nwait_seconds = 1\n{lines}\n{more}\n",
            emulator::endpoint(),
            guest("scenarios").display()
        ),
    )
    .unwrap();
    file
}

/// What a test of one callback queue starts from: a runtime for its own calls, a Step
/// Functions and an SQS client of the emulator, a fresh queue (its dead-letter queue
/// after `max_receives` receives) and a state machine that sends its tasks there.
struct Emulated {
    runtime: tokio::runtime::Runtime,
    client: aws_sdk_sfn::Client,
    sqs: aws_sdk_sqs::Client,
    url: String,
    dlq: String,
    machine: String,
}

/// [`Emulated`], the state with `HeartbeatSeconds` = `heartbeat_seconds`, on a FIFO queue
/// when `fifo`.
fn emulated(max_receives: u32, heartbeat_seconds: u32, fifo: bool) -> Emulated {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (client, sqs, (url, dlq), machine) = runtime.block_on(async {
        let client = emulator::client().await;
        let sqs = sqs().await;
        let (url, dlq) = queue(&sqs, fifo, max_receives).await;
        let machine = callback_machine(&client, &url, heartbeat_seconds, fifo).await;
        (client, sqs, (url, dlq), machine)
    });
    Emulated {
        runtime,
        client,
        sqs,
        url,
        dlq,
        machine,
    }
}

/// The admin server's address, from the host's first lines.
fn admin(host: &mut Served) -> std::net::SocketAddr {
    let listening = host.wait_line(|line| line["admin"].is_string());
    listening["admin"].as_str().unwrap().parse().unwrap()
}

fn ended(runtime: &tokio::runtime::Runtime, client: &aws_sdk_sfn::Client, exec: &str) -> Ended {
    runtime.block_on(emulator::wait(client, exec, Duration::from_secs(60)))
}

#[test]
fn a_callback_task_is_answered_and_its_message_deleted() {
    let Emulated {
        runtime,
        client,
        sqs,
        url,
        machine,
        ..
    } = emulated(3, 60, false);
    let dir = tempfile::tempdir().unwrap();
    let mut host = Served::start(&config(dir.path(), &url, "workers = 2", ""));
    let running = host.wait_for("worker:running");
    assert_eq!(running["task_source"], "callback", "{running}");
    assert_eq!(running["activity"], url.as_str(), "{running}");

    let success = runtime.block_on(emulator::start(
        &client,
        &machine,
        json!({"hello": "World", "ms": 0}),
    ));
    let failure = runtime.block_on(emulator::start(
        &client,
        &machine,
        json!({"hello": "Failure", "ms": 0}),
    ));
    let succeeded = ended(&runtime, &client, &success);
    assert_eq!(
        succeeded.status,
        ExecutionStatus::Succeeded,
        "{succeeded:?}"
    );
    assert_eq!(succeeded.output, Some(json!({"greeting": "Hello, World"})));
    // The handler's failure reaches the state machine's Catch.
    let caught = ended(&runtime, &client, &failure);
    assert_eq!(caught.status, ExecutionStatus::Succeeded, "{caught:?}");
    assert_eq!(
        caught.output.as_ref().unwrap()["Error"],
        "InvalidName",
        "{caught:?}"
    );
    // Both messages are deleted once their answers were accepted.
    runtime.block_on(drained(&sqs, &url));
    // The two tasks end in either order (two workers): one success, one failure.
    let dones = [host.wait_for("task:done"), host.wait_for("task:done")];
    let done = dones
        .iter()
        .find(|l| l["outcome"] == "success")
        .unwrap_or_else(|| panic!("no task:done with outcome success: {dones:?}"));
    assert!(
        dones.iter().any(|l| l["outcome"] == "failure"),
        "no task:done with outcome failure: {dones:?}"
    );
    assert_eq!(done["task_source"], "callback", "{done}");
    // A task's id is its message's id (an SQS message id, not a token's digest).
    assert_eq!(done["task_id"].as_str().unwrap().len(), 36, "{done}");
    assert!(
        !host.events().iter().any(|e| e.starts_with("callback:")),
        "{:?}",
        host.events()
    );
}

#[test]
fn heartbeats_keep_a_long_task_past_its_visibility_timeout() {
    // The state times out after 3 s without a heartbeat; the message reappears after
    // 2 s unless kept hidden; the task takes 7 s.
    let Emulated {
        runtime,
        client,
        sqs,
        url,
        machine,
        ..
    } = emulated(5, 3, false);
    let dir = tempfile::tempdir().unwrap();
    let mut host = Served::start(&config(
        dir.path(),
        &url,
        "workers = 2\nheartbeat_seconds = 1\nvisibility_timeout_seconds = 2",
        "",
    ));
    host.wait_for("worker:running");
    let exec = runtime.block_on(emulator::start(
        &client,
        &machine,
        json!({"hello": "Sleep", "ms": 7000}),
    ));
    let result = ended(&runtime, &client, &exec);
    assert_eq!(result.status, ExecutionStatus::Succeeded, "{result:?}");
    runtime.block_on(drained(&sqs, &url));
    host.wait_for("task:done");
    host.wait_quiet(Duration::from_millis(1500));
    let started = host.events().iter().filter(|e| *e == "task:start").count();
    assert_eq!(
        started,
        1,
        "the message was received again: {:?}",
        host.events()
    );
}

#[test]
fn a_message_delivered_twice_is_answered_once() {
    let Emulated {
        runtime,
        client,
        sqs,
        url,
        machine,
        ..
    } = emulated(2, 60, false);
    let exec = runtime.block_on(emulator::start(
        &client,
        &machine,
        json!({"hello": "World", "ms": 0}),
    ));
    // The state machine's message, copied: the queue now holds the same task twice,
    // as SQS's at-least-once delivery may hand it out.
    runtime.block_on(async {
        let body = take_a_look(&sqs, &url).await;
        sqs.send_message()
            .queue_url(&url)
            .message_body(body)
            .send()
            .await
            .unwrap();
    });
    let dir = tempfile::tempdir().unwrap();
    // One slot: the copies are taken one after the other.
    let mut host = Served::start(&config(
        dir.path(),
        &url,
        "workers = 1\nvisibility_timeout_seconds = 1",
        "",
    ));
    let result = ended(&runtime, &client, &exec);
    assert_eq!(result.status, ExecutionStatus::Succeeded, "{result:?}");
    assert_eq!(result.output, Some(json!({"greeting": "Hello, World"})));
    runtime.block_on(drained(&sqs, &url));
    host.wait_quiet(Duration::from_millis(1500));
    // One run, one answer accepted; the other copy's token check found its task over
    // and it never ran: deleted as closed (AWS: TaskTimedOut), or (LocalStack, which
    // answers InvalidToken for an ended execution's token) left for the dead-letter
    // queue.
    let events = host.events();
    let count = |name: &str| events.iter().filter(|e| *e == name).count();
    assert_eq!(count("task:start"), 1, "{events:?}");
    assert_eq!(count("task:success"), 1, "{events:?}");
    assert!(
        count("callback:closed") + count("callback:rejected") >= 1,
        "{events:?}"
    );
}

/// With `[callback.idempotency]`, a copy of a running task's message finds its key held:
/// it is left (no `SfnWasmHost.Duplicate` for the very task the first copy answers), and
/// once that answer is in, the copy's token check finds the task over.
#[test]
fn a_copy_of_a_running_tasks_message_is_left_not_failed_under_idempotency() {
    let Emulated {
        runtime,
        client,
        sqs,
        url,
        machine,
        ..
    } = emulated(3, 60, false);
    let exec = runtime.block_on(emulator::start(
        &client,
        &machine,
        json!({"hello": "Sleep", "ms": 2000}),
    ));
    let dir = tempfile::tempdir().unwrap();
    let mut host = Served::start(&config(
        dir.path(),
        &url,
        "workers = 2\nvisibility_timeout_seconds = 1\n[callback.idempotency]\nkey = \"/hello\"\nstore = \"answers\"",
        "",
    ));
    host.wait_for("task:start");
    // While it runs, a copy of its message arrives.
    runtime.block_on(async {
        // The host holds the original hidden: its body is in the execution's history.
        let body = emulator::scheduled_message(&client, &exec).await;
        sqs.send_message()
            .queue_url(&url)
            .message_body(body)
            .send()
            .await
            .unwrap();
    });
    let result = ended(&runtime, &client, &exec);
    assert_eq!(result.status, ExecutionStatus::Succeeded, "{result:?}");
    assert_eq!(result.output, Some(json!({"slept_ms": 2000})));
    runtime.block_on(drained(&sqs, &url));
    host.wait_quiet(Duration::from_millis(1500));
    let events = host.events();
    let count = |name: &str| events.iter().filter(|e| *e == name).count();
    assert_eq!(count("task:start"), 1, "{events:?}");
    assert!(!host.text().contains("SfnWasmHost.Duplicate"), "{events:?}");
    // The copy was taken while the first ran, and left unanswered.
    assert!(
        host.lines()
            .iter()
            .any(|l| l["event"] == "task:done" && l["outcome"] == "undelivered"),
        "{events:?}"
    );
}

#[test]
fn a_redelivered_message_whose_task_is_closed_is_never_run() {
    let Emulated {
        runtime,
        client,
        sqs,
        url,
        machine,
        ..
    } = emulated(2, 60, false);
    let exec = runtime.block_on(emulator::start(
        &client,
        &machine,
        json!({"hello": "World", "ms": 0}),
    ));
    // Another worker received the message and answered, but its delete was lost: the
    // message comes back (its second receive) for a task that is closed.
    runtime.block_on(async {
        let body: Value = serde_json::from_str(&take_a_look(&sqs, &url).await).unwrap();
        client
            .send_task_success()
            .task_token(body["TaskToken"].as_str().unwrap())
            .output(r#"{"answered": "elsewhere"}"#)
            .send()
            .await
            .unwrap();
    });
    let result = ended(&runtime, &client, &exec);
    assert_eq!(result.output, Some(json!({"answered": "elsewhere"})));
    let dir = tempfile::tempdir().unwrap();
    let mut host = Served::start(&config(
        dir.path(),
        &url,
        "workers = 1\nvisibility_timeout_seconds = 1",
        "",
    ));
    // Deleted as closed (AWS: TaskTimedOut), or left for the dead-letter queue
    // (LocalStack: InvalidToken for an ended execution's token); never run.
    let skipped =
        host.wait_line(|l| l["event"] == "callback:closed" || l["event"] == "callback:rejected");
    assert!(skipped["message_id"].is_string(), "{skipped}");
    runtime.block_on(drained(&sqs, &url));
    host.wait_quiet(Duration::from_millis(1000));
    assert!(
        !host.events().iter().any(|e| e.starts_with("task:")),
        "{:?}",
        host.events()
    );
}

#[test]
fn a_host_killed_mid_task_leaves_the_message_for_the_next() {
    let Emulated {
        runtime,
        client,
        sqs,
        url,
        machine,
        ..
    } = emulated(5, 60, false);
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &url, "visibility_timeout_seconds = 2", "");
    let mut first = Served::start(&config);
    first.wait_for("worker:running");
    let exec = runtime.block_on(emulator::start(
        &client,
        &machine,
        json!({"hello": "Sleep", "ms": 3000}),
    ));
    first.wait_for("task:start");
    first.signal(rustix::process::Signal::KILL);
    let _ = first.child_wait();
    // The message reappears after its visibility timeout; the next host answers it.
    let mut second = Served::start(&config);
    let result = ended(&runtime, &client, &exec);
    assert_eq!(result.status, ExecutionStatus::Succeeded, "{result:?}");
    assert_eq!(result.output, Some(json!({"slept_ms": 3000})));
    let done = second.wait_for("task:done");
    assert_eq!(done["outcome"], "success", "{done}");
    runtime.block_on(drained(&sqs, &url));
}

#[test]
fn a_message_that_is_not_a_task_is_never_run_and_goes_to_the_dead_letter_queue() {
    let Emulated {
        runtime,
        sqs,
        url,
        dlq,
        ..
    } = emulated(2, 60, false);
    // Not JSON; no token; a token that is not a string; a made-up token Step Functions
    // knows nothing of (anyone who may send to the queue could try one).
    let bodies = [
        "not json",
        r#"{"hello": "World"}"#,
        r#"{"TaskToken": 7}"#,
        r#"{"TaskToken": "made-up", "hello": "World"}"#,
    ];
    for body in bodies {
        runtime
            .block_on(sqs.send_message().queue_url(&url).message_body(body).send())
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let mut host = Served::start(&config(
        dir.path(),
        &url,
        "workers = 3\nvisibility_timeout_seconds = 1",
        "",
    ));
    let addr = admin(&mut host);
    let rejected = host.wait_for("callback:rejected");
    assert!(rejected["message_id"].is_string(), "{rejected}");
    assert!(rejected["reason"].is_string(), "{rejected}");
    // After two receives each, the queue's redrive policy moves them.
    runtime.block_on(async {
        let started = Instant::now();
        while held(&sqs, &dlq).await.0 < 4 {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the dead-letter queue holds {:?}",
                held(&sqs, &dlq).await
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    runtime.block_on(drained(&sqs, &url));
    let events = host.events();
    assert!(!events.iter().any(|e| e.starts_with("task:")), "{events:?}");
    let (_, text) = get(addr, "/metrics");
    let metrics = parse_metrics(&text);
    let rejected =
        format!(r#"sfn_wasm_host_callback_messages_total{{activity="{url}",result="rejected"}}"#);
    assert!(metrics[&rejected] >= 4.0, "{text}");
    let bodies = host.text();
    assert!(!bodies.contains("not json"), "a body was logged");
}

#[test]
fn a_fifo_queue_keeps_each_groups_order() {
    let Emulated {
        runtime,
        client,
        sqs,
        url,
        machine,
        ..
    } = emulated(5, 60, true);
    // Three tasks of one group, sent in order before the host starts.
    let mut executions = Vec::new();
    for ms in [600, 400, 200] {
        executions.push(runtime.block_on(emulator::start(
            &client,
            &machine,
            json!({"hello": "Sleep", "ms": ms}),
        )));
        runtime.block_on(async {
            let started = Instant::now();
            while held(&sqs, &url).await.0 < executions.len() as u64 {
                assert!(started.elapsed() < Duration::from_secs(20), "no message");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
    }
    let dir = tempfile::tempdir().unwrap();
    // Room for all three at once: only the queue's order keeps them apart.
    let mut host = Served::start(&config(dir.path(), &url, "workers = 3", ""));
    let stops: Vec<_> = executions
        .iter()
        .map(|exec| {
            let result = ended(&runtime, &client, exec);
            assert_eq!(result.status, ExecutionStatus::Succeeded, "{result:?}");
            runtime
                .block_on(client.describe_execution().execution_arn(exec).send())
                .unwrap()
                .stop_date
                .unwrap()
        })
        .collect();
    // Shorter tasks sent later still end later: each waited for the one before it.
    assert!(stops.windows(2).all(|w| w[0] < w[1]), "{stops:?}");
    host.wait_quiet(Duration::from_millis(1000));
    let order: Vec<String> = host
        .events()
        .into_iter()
        .filter(|e| e == "task:start" || e == "task:done")
        .collect();
    assert_eq!(order, ["task:start", "task:done"].repeat(3), "{order:?}");
    runtime.block_on(drained(&sqs, &url));
}

#[test]
fn an_activity_and_a_callback_are_served_by_one_host() {
    let Emulated {
        runtime,
        client,
        sqs,
        url,
        machine: callback_machine,
        ..
    } = emulated(5, 60, false);
    let activity = runtime.block_on(emulator::activity(&client, "beside-callback"));
    let activity_machine = runtime.block_on(emulator::state_machine(&client, &activity, None));
    let dir = tempfile::tempdir().unwrap();
    let activity_table = format!(
        "[[activity]]\narn = \"{activity}\"\nhandler = \"{}\"",
        guest("scenarios").display()
    );
    let mut host = Served::start(&config(dir.path(), &url, "", &activity_table));
    let by_activity = runtime.block_on(emulator::start(
        &client,
        &activity_machine,
        json!({"hello": "World"}),
    ));
    let by_callback = runtime.block_on(emulator::start(
        &client,
        &callback_machine,
        json!({"hello": "World", "ms": 0}),
    ));
    for exec in [&by_activity, &by_callback] {
        let result = ended(&runtime, &client, exec);
        assert_eq!(result.status, ExecutionStatus::Succeeded, "{result:?}");
        assert_eq!(result.output, Some(json!({"greeting": "Hello, World"})));
    }
    let from_activity = host.wait_until("task:done", |l| l["task_source"] == "activity");
    assert_eq!(
        from_activity["activity"],
        activity.as_str(),
        "{from_activity}"
    );
    let from_queue = host.wait_until("task:done", |l| l["task_source"] == "callback");
    assert_eq!(from_queue["activity"], url.as_str(), "{from_queue}");
    runtime.block_on(drained(&sqs, &url));
}

#[test]
fn the_host_never_holds_more_messages_than_free_slots() {
    let Emulated {
        runtime,
        client,
        sqs,
        url,
        machine,
        ..
    } = emulated(5, 60, false);
    let executions: Vec<String> = (0..5)
        .map(|_| {
            runtime.block_on(emulator::start(
                &client,
                &machine,
                json!({"hello": "Sleep", "ms": 1500}),
            ))
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let mut host = Served::start(&config(
        dir.path(),
        &url,
        "pollers = 2\nmax_concurrent_tasks = 2",
        "",
    ));
    host.wait_for("task:start");
    let most = runtime.block_on(async {
        let mut most = 0;
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(5) {
            most = most.max(held(&sqs, &url).await.1);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        most
    });
    assert!(most <= 2, "{most} messages in flight with 2 task slots");
    assert!(most >= 1, "no message was ever in flight");
    for exec in &executions {
        let result = ended(&runtime, &client, exec);
        assert_eq!(result.status, ExecutionStatus::Succeeded, "{result:?}");
    }
    runtime.block_on(drained(&sqs, &url));
}

#[test]
fn check_remote_reads_each_callbacks_queue() {
    let Emulated {
        runtime, sqs, url, ..
    } = emulated(5, 60, false);
    let bare = runtime
        .block_on(
            sqs.create_queue()
                .queue_name(format!("bare-{:08x}", fastrand::u32(..)))
                .send(),
        )
        .unwrap()
        .queue_url
        .unwrap();
    let missing = format!(
        "{}/000000000000/missing-{:08x}",
        emulator::endpoint(),
        fastrand::u32(..)
    );
    let dir = tempfile::tempdir().unwrap();
    let check = |queue: &str| {
        let file = config(dir.path(), queue, "", "");
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_sfn-wasm-host"))
            .args(["check", "--remote"])
            .arg(&file)
            .output()
            .unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (ok, said) = check(&url);
    assert!(ok, "{said}");
    let (ok, said) = check(&missing);
    assert!(!ok);
    assert!(
        said.contains("`callback[0].queue_url`") && said.contains("does not exist"),
        "{said}"
    );
    let (ok, said) = check(&bare);
    assert!(!ok);
    assert!(
        said.contains("`callback[0].queue_url`") && said.contains("redrive policy"),
        "{said}"
    );
}

#[test]
fn a_missing_queue_makes_the_host_not_ready_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let missing = format!(
        "{}/000000000000/missing-{:08x}",
        emulator::endpoint(),
        fastrand::u32(..)
    );
    let mut host = Served::start(&config(dir.path(), &missing, "", ""));
    let addr = admin(&mut host);
    let error = host.wait_until("polling:error", |l| l["blocked"] == true);
    assert_eq!(error["task_source"], "callback", "{error}");
    let (status, why) = get(addr, "/readyz");
    assert_eq!(status, 503, "{why}");
    assert!(
        why.contains(&missing) && why.contains("polls are refused") && why.contains("queue_url"),
        "{why}"
    );
    let (_, page) = get(addr, "/status");
    let page: Value = serde_json::from_str(&page).unwrap();
    assert_eq!(page["activities"][0]["task_source"], "callback", "{page}");
    assert_eq!(page["activities"][0]["arn"], missing.as_str(), "{page}");
}
