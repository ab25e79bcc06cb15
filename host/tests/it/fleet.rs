//! Running a fleet: the scaling signals of a served host under load (`/metrics` and
//! `/status`), `max_tasks_per_second` spacing task starts, and the deploy files for a
//! fleet checked the way their users' tools read them: the alert rules by `promtool`
//! (`check rules`, and `test rules` with a case per alert) and by a real Prometheus
//! scraping a served host; the dashboard's, the rules' and the KEDA ScaledObject's
//! metric names against a scrape.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::admin::{get, parse_metrics, test_tools_python};
use crate::support::emulator;
use crate::support::guests::{guest, workspace};
use crate::support::served::Served;

/// A served host of `handler` with an admin server on a free port: the process and the
/// admin address, once `/readyz` says ready.
fn served_with_admin(
    dir: &Path,
    activity: &str,
    handler: &str,
    activity_lines: &str,
) -> (Served, SocketAddr) {
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\n[host]\nadmin_listen = \"127.0.0.1:0\"\ncache = false\n\
             [[activity]]\narn = \"{activity}\"\nhandler = \"{}\"\n{activity_lines}\n",
            emulator::endpoint(),
            guest(handler).display()
        ),
    )
    .unwrap();
    let mut served = Served::start(&config);
    let listening = served.wait_line(|line| line["admin"].is_string());
    let addr: SocketAddr = listening["admin"].as_str().unwrap().parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(addr, "/readyz").0 != 200 {
        assert!(Instant::now() < deadline, "never ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    (served, addr)
}

fn scrape(addr: SocketAddr) -> HashMap<String, f64> {
    let (status, text) = get(addr, "/metrics");
    assert_eq!(status, 200);
    parse_metrics(&text)
}

fn sample(samples: &HashMap<String, f64>, key: &str) -> f64 {
    *samples
        .get(key)
        .unwrap_or_else(|| panic!("no sample {key}; have: {:#?}", samples.keys()))
}

fn status_of(addr: SocketAddr) -> Value {
    let (status, body) = get(addr, "/status");
    assert_eq!(status, 200);
    let document: Value = serde_json::from_str(&body).unwrap();
    document["activities"][0].clone()
}

#[test]
fn the_scaling_signals_follow_the_tasks_in_flight() {
    let (runtime, client, activity, machine) = emulator::emulated("fleet-signals");
    let dir = tempfile::tempdir().unwrap();
    let (mut served, addr) = served_with_admin(dir.path(), &activity, "scenarios", "workers = 4");
    let slots = format!("sfn_wasm_host_task_slots{{activity=\"{activity}\"}}");
    let used = format!("sfn_wasm_host_task_slots_used{{activity=\"{activity}\"}}");
    let polls = format!("sfn_wasm_host_polls_in_flight{{activity=\"{activity}\"}}");
    let waits = format!("sfn_wasm_host_task_wait_seconds_count{{activity=\"{activity}\"}}");
    let idle = scrape(addr);
    assert_eq!(sample(&idle, &slots), 4.0);
    assert_eq!(sample(&idle, &used), 0.0);
    assert_eq!(sample(&idle, "sfn_wasm_host_ready{}"), 1.0);

    // Three tasks that sleep: three slots used, the fourth slot's poller polling.
    let executions: Vec<String> = (0..3)
        .map(|_| {
            runtime.block_on(emulator::start(
                &client,
                &machine,
                json!({"hello": "Sleep", "ms": 4000}),
            ))
        })
        .collect();
    for _ in 0..3 {
        served.wait_for("task:start");
    }
    let busy = scrape(addr);
    assert_eq!(sample(&busy, &slots), 4.0);
    assert_eq!(sample(&busy, &used), 3.0);
    assert_eq!(
        sample(&busy, &polls),
        1.0,
        "only the free slot's poller polls"
    );
    assert_eq!(sample(&busy, &waits), 3.0);
    let status = status_of(addr);
    assert_eq!(status["task_slots"], 4);
    assert_eq!(status["task_slots_used"], 3);
    assert_eq!(status["polls_in_flight"], 1);
    assert_eq!(status["task_wait_seconds"]["count"], 3);
    assert!(status["task_wait_seconds"]["sum"].as_f64().unwrap() > 0.0);

    for execution in &executions {
        let ended = runtime.block_on(emulator::wait(&client, execution, Duration::from_secs(60)));
        assert_eq!(ended.status, aws_sdk_sfn::types::ExecutionStatus::Succeeded);
    }
    // Every slot free again, and every poller back to polling.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let after = scrape(addr);
        if sample(&after, &used) == 0.0 && sample(&after, &polls) == 4.0 {
            assert_eq!(sample(&after, &waits), 3.0);
            break;
        }
        assert!(Instant::now() < deadline, "slots not freed: {after:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = status_of(addr);
    assert_eq!(status["task_slots_used"], 0);
    assert_eq!(status["polls_in_flight"], 4);
    let (_, code) = served.terminate();
    assert_eq!(code, 0);
}

/// Seconds since the Unix epoch of an RFC 3339 UTC timestamp as the JSON log writes it
/// (`2026-11-30T13:20:01.123456Z`).
fn unix_seconds(timestamp: &str) -> f64 {
    let (date, time) = timestamp.trim_end_matches('Z').split_once('T').unwrap();
    let mut ymd = date.split('-').map(|p| p.parse::<i64>().unwrap());
    let (y, m, d) = (
        ymd.next().unwrap(),
        ymd.next().unwrap(),
        ymd.next().unwrap(),
    );
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let mut hms = time.split(':');
    let h: f64 = hms.next().unwrap().parse().unwrap();
    let min: f64 = hms.next().unwrap().parse().unwrap();
    let s: f64 = hms.next().unwrap().parse().unwrap();
    #[allow(clippy::cast_precision_loss)]
    let day_seconds = days as f64 * 86_400.0;
    day_seconds + h * 3600.0 + min * 60.0 + s
}

#[test]
fn unix_seconds_reads_the_log_timestamps() {
    assert_eq!(unix_seconds("1970-01-01T00:00:01.5Z"), 1.5);
    assert_eq!(unix_seconds("2026-11-30T13:20:01Z"), 1_796_044_801.0);
}

#[test]
fn max_tasks_per_second_spaces_task_starts() {
    let (runtime, client, activity, machine) = emulator::emulated("fleet-rate");
    // 40 tasks queued before the host starts.
    let executions: Vec<String> = (0..40)
        .map(|i| {
            runtime.block_on(emulator::start(
                &client,
                &machine,
                json!({"hello": format!("n{i}")}),
            ))
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let config = crate::support::served::config(
        dir.path(),
        &emulator::endpoint(),
        &activity,
        &guest("greet"),
        "workers = 8\nmax_tasks_per_second = 5",
        "",
    );
    // `polling:starting` is a debug event.
    let mut served =
        Served::start_with_env(&config, &[("RUST_LOG", "info,sfn_wasm_host::events=debug")]);
    let running = served.wait_for("worker:running");
    let first_worker = unix_seconds(running["timestamp"].as_str().unwrap());
    let mut starts: Vec<f64> = (0..40)
        .map(|_| unix_seconds(served.wait_for("task:start")["timestamp"].as_str().unwrap()))
        .collect();
    starts.sort_by(f64::total_cmp);
    for execution in &executions {
        let ended = runtime.block_on(emulator::wait(&client, execution, Duration::from_secs(60)));
        assert_eq!(ended.status, aws_sdk_sfn::types::ExecutionStatus::Succeeded);
    }
    let (_, code) = served.terminate();
    assert_eq!(code, 0);
    // A second's worth (5) at once, then 5 a second: the 40th token comes 7 s after the
    // first, which no worker could take before it ran.
    let last = starts[39];
    assert!(
        last - first_worker >= 7.0,
        "40 starts in {:.2} s: {starts:?}",
        last - first_worker
    );
    // No second holds more polls than the rate plus the burst. The bucket gates polls (a
    // poller takes its token before it polls, so that no fetched task waits for one), and
    // a poll is the host's own act; a task's start follows its poll by the emulator's
    // answer time, which varies (a loaded CI machine answered the first polls 0.3 s late,
    // and their tasks started together with the next token's), so starts are bounded
    // through their polls.
    let mut polls: Vec<f64> = served
        .values("polling:starting", "timestamp")
        .iter()
        .map(|t| unix_seconds(t))
        .collect();
    polls.sort_by(f64::total_cmp);
    assert!(polls.len() >= 40, "{} polls for 40 tasks", polls.len());
    for (i, from) in polls.iter().enumerate() {
        let within = polls[i..].iter().take_while(|t| **t < from + 1.0).count();
        assert!(
            within <= 10,
            "{within} polls in the second from {from}: {polls:?}"
        );
    }
}

/// The deploy file `name`'s text.
fn deploy(name: &str) -> String {
    std::fs::read_to_string(workspace().join("deploy").join(name))
        .unwrap_or_else(|e| panic!("deploy/{name}: {e}"))
}

/// Every YAML document of `text`, as JSON (PyYAML, from the test tools).
fn yaml_documents(text: &str) -> Vec<Value> {
    let script = "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(sys.stdin))))";
    serde_json::from_slice(&test_tools_python(script, text, "not YAML")).unwrap()
}

/// The `sfn_wasm_host_*` names a PromQL expression mentions.
fn metric_names(expression: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expression;
    while let Some(at) = rest.find("sfn_wasm_host_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

/// The sample names a host exports, by family, from the `# TYPE` lines of a scrape (which
/// list every family, also those with no sample yet): a counter's `_total`, a
/// histogram's `_bucket`, `_sum` and `_count`, a gauge's own name.
fn exported(addr: SocketAddr) -> HashMap<String, Vec<String>> {
    let (_, text) = get(addr, "/metrics");
    text.lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .map(|line| {
            let (family, kind) = line.split_once(' ').unwrap();
            let samples = match kind {
                // Text format 0.0.4 names a counter's family with its `_total`.
                "counter" if family.ends_with("_total") => vec![family.to_owned()],
                "counter" => vec![format!("{family}_total")],
                "histogram" => ["_bucket", "_sum", "_count"]
                    .iter()
                    .map(|s| format!("{family}{s}"))
                    .collect(),
                _ => vec![family.to_owned()],
            };
            (family.to_owned(), samples)
        })
        .collect()
}

#[test]
fn the_deploy_files_name_only_what_a_host_exports() {
    let (runtime, client, activity, machine) = emulator::emulated("fleet-names");
    let dir = tempfile::tempdir().unwrap();
    let (mut served, addr) = served_with_admin(dir.path(), &activity, "greet", "");
    // One task, so that the families labelled by what happened have samples too.
    let execution = runtime.block_on(emulator::start(&client, &machine, json!({"hello": "X"})));
    let ended = runtime.block_on(emulator::wait(&client, &execution, Duration::from_secs(30)));
    assert_eq!(ended.status, aws_sdk_sfn::types::ExecutionStatus::Succeeded);
    served.wait_for("task:done");
    let families = exported(addr);
    let (_, code) = served.terminate();
    assert_eq!(code, 0);
    let samples: BTreeSet<&String> = families.values().flatten().collect();
    for family in [
        "sfn_wasm_host_task_slots",
        "sfn_wasm_host_task_slots_used",
        "sfn_wasm_host_polls_in_flight",
        "sfn_wasm_host_task_wait_seconds",
    ] {
        assert!(families.contains_key(family), "no {family} in a scrape");
    }
    let known = |what: &str, expression: &str| {
        for name in metric_names(expression) {
            assert!(
                samples.contains(&name),
                "{what}: {name} is not exported ({expression})"
            );
        }
    };

    // The dashboard: every query names exported samples, and every family has a panel.
    let dashboard: Value = serde_json::from_str(&deploy("grafana-dashboard.json")).unwrap();
    let mut named = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expression = target["expr"].as_str().unwrap();
            known(&format!("dashboard panel {:?}", panel["title"]), expression);
            named.extend(metric_names(expression));
        }
    }
    for (family, family_samples) in &families {
        assert!(
            family_samples.iter().any(|s| named.contains(s)),
            "the dashboard has no panel on {family}"
        );
    }
    let activity_variable = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "activity")
        .expect("templated by activity");
    known(
        "dashboard variable",
        activity_variable["definition"].as_str().unwrap(),
    );

    // The alert rules.
    let rules = &yaml_documents(&deploy("prometheus-rules.yaml"))[0];
    let mut alerts = BTreeSet::new();
    for rule in rules["groups"][0]["rules"].as_array().unwrap() {
        let alert = rule["alert"].as_str().unwrap();
        known(&format!("alert {alert}"), rule["expr"].as_str().unwrap());
        alerts.insert(alert.to_owned());
    }
    assert_eq!(
        alerts,
        [
            "SfnWasmHostAnswersRefused",
            "SfnWasmHostAnswersUndelivered",
            "SfnWasmHostCanaryRolledBack",
            "SfnWasmHostHostFailureRate",
            "SfnWasmHostNotReady",
            "SfnWasmHostPollsFailing",
            "SfnWasmHostSlotsSaturated",
        ]
        .map(str::to_owned)
        .into(),
    );
    // Every alert has a unit test.
    let tests = deploy("prometheus-rules.test.yaml");
    for alert in &alerts {
        assert!(
            tests.contains(&format!("alertname: {alert}")),
            "no promtool test for {alert}"
        );
    }

    // The ScaledObject scales the manifest's Deployment on exported metrics, for the
    // ConfigMap's activity, cools down longer than a host drains, and stays under the
    // ARN's 1,000 pollers.
    let manifest = yaml_documents(&deploy("kubernetes.yaml"));
    let deployment = manifest.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let config_map = manifest.iter().find(|d| d["kind"] == "ConfigMap").unwrap();
    let config: toml::Value =
        toml::from_str(config_map["data"]["config.toml"].as_str().unwrap()).unwrap();
    let arn = config["activity"][0]["arn"].as_str().unwrap();
    let pollers = config["activity"][0]["workers"].as_integer().unwrap();
    let grace = config["host"]["shutdown_grace_seconds"]
        .as_integer()
        .unwrap();
    let keda = yaml_documents(&deploy("keda-scaledobject.yaml"));
    let scaled = keda.iter().find(|d| d["kind"] == "ScaledObject").unwrap();
    let spec = &scaled["spec"];
    assert_eq!(
        spec["scaleTargetRef"]["name"],
        deployment["metadata"]["name"]
    );
    assert!(
        spec["cooldownPeriod"].as_i64().unwrap()
            > deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
                .as_i64()
                .unwrap()
                .max(grace)
    );
    assert!(spec["maxReplicaCount"].as_i64().unwrap() * pollers <= 1000);
    let triggers = spec["triggers"].as_array().unwrap();
    let prometheus = triggers.iter().find(|t| t["type"] == "prometheus").unwrap();
    let query = prometheus["metadata"]["query"].as_str().unwrap();
    known("the ScaledObject's query", query);
    assert!(metric_names(query).contains("sfn_wasm_host_task_slots_used"));
    assert!(query.contains(&format!("activity=\"{arn}\"")), "{query}");
    let cloudwatch = triggers
        .iter()
        .find(|t| t["type"] == "aws-cloudwatch")
        .unwrap();
    assert_eq!(cloudwatch["metadata"]["namespace"], "AWS/States");
    assert_eq!(cloudwatch["metadata"]["dimensionName"], "ActivityArn");
    assert_eq!(cloudwatch["metadata"]["dimensionValue"], arn);
}

#[test]
fn promtool_checks_and_unit_tests_the_alert_rules() {
    let deploy_dir = workspace().join("deploy");
    let check = Command::new("promtool")
        .args(["check", "rules", "prometheus-rules.yaml"])
        .current_dir(&deploy_dir)
        .output()
        .expect("promtool (Debian's prometheus package; scripts/test.sh installs it)");
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(text.contains("SUCCESS: 7 rules found"), "{text}");
    let test = Command::new("promtool")
        .args(["test", "rules", "prometheus-rules.test.yaml"])
        .current_dir(&deploy_dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&test.stdout);
    assert!(
        test.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&test.stderr)
    );
    assert!(text.contains("SUCCESS"), "{text}");
}

/// A Prometheus server on loopback; killed when dropped.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Scrapes `target` every second and evaluates `rules` every second.
    fn start(target: SocketAddr, rules: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("rules.yaml"), rules).unwrap();
        std::fs::write(
            dir.path().join("prometheus.yml"),
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 rule_files: [rules.yaml]\n\
                 scrape_configs:\n  - job_name: sfn-wasm-host\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let addr = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap()
        };
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (Debian's prometheus package; scripts/test.sh installs it)");
        let server = Self {
            child,
            addr,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(addr).is_err() || get(addr, "/-/ready").0 != 200 {
            assert!(Instant::now() < deadline, "prometheus did not start");
            std::thread::sleep(Duration::from_millis(200));
        }
        server
    }

    /// The alerts now: (name, state, labels).
    fn alerts(&self) -> Vec<Value> {
        let (status, body) = get(self.addr, "/api/v1/alerts");
        assert_eq!(status, 200, "{body}");
        let document: Value = serde_json::from_str(&body).unwrap();
        document["data"]["alerts"].as_array().unwrap().clone()
    }
}

#[test]
fn a_real_prometheus_fires_the_host_failure_alert_after_failing_tasks() {
    let (runtime, client, activity, machine) = emulator::emulated("fleet-alert");
    let dir = tempfile::tempdir().unwrap();
    let (mut served, addr) = served_with_admin(dir.path(), &activity, "scenarios", "workers = 2");
    // The shipped rules, with every `for:` at 0 so that the test need not wait minutes:
    // the expressions are what this checks against a real scrape; the durations are
    // promtool's unit tests'.
    let rules: String = deploy("prometheus-rules.yaml")
        .lines()
        .map(|line| {
            if line.trim_start().starts_with("for:") {
                let indent = line.len() - line.trim_start().len();
                format!("{}for: 0s\n", " ".repeat(indent))
            } else {
                format!("{line}\n")
            }
        })
        .collect();
    let prometheus = Prometheus::start(addr, &rules);
    // Healthy first: nothing fires.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(prometheus.alerts(), Vec::<Value>::new());
    // A trap a second, for a few seconds: the host-failure rate rises.
    for _ in 0..6 {
        let execution = runtime.block_on(emulator::start(
            &client,
            &machine,
            json!({"hello": "Error"}),
        ));
        let ended = runtime.block_on(emulator::wait(&client, &execution, Duration::from_secs(30)));
        assert_eq!(ended.error.as_deref(), Some("SfnWasmHost.Trap"));
        std::thread::sleep(Duration::from_millis(700));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let fired = loop {
        let alerts = prometheus.alerts();
        if let Some(alert) = alerts.iter().find(|a| {
            a["labels"]["alertname"] == "SfnWasmHostHostFailureRate" && a["state"] == "firing"
        }) {
            break alert.clone();
        }
        assert!(
            Instant::now() < deadline,
            "SfnWasmHostHostFailureRate never fired: {alerts:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(fired["labels"]["activity"], activity.as_str());
    assert_eq!(fired["labels"]["severity"], "warning");
    // Nothing else fired: the host is ready, its polls and answers fine.
    let others: Vec<Value> = prometheus
        .alerts()
        .into_iter()
        .filter(|a| a["labels"]["alertname"] != "SfnWasmHostHostFailureRate")
        .collect();
    assert_eq!(others, Vec::<Value>::new());
    let (_, code) = served.terminate();
    assert_eq!(code, 0);
}
