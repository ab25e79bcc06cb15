//! Prometheus metrics, prefix `sfn_wasm_host_`, for the admin server's `/metrics`.
//!
//! Two feeds, both direct calls that cannot drop anything (unlike the event broadcast):
//! [`Metrics`] is an [`Observer`] of every event (tasks, heartbeats, handler versions)
//! and a [`CallObserver`] of every Step Functions call (polls and answers, with
//! durations, through [`ObservedSfn`](crate::sfn::ObservedSfn)). The live gauges
//! (`workers`, `tasks_in_flight`, `task_slots_used`, `polls_in_flight`) are not derived
//! from events: they are read from each activity's [`Gauges`] when scraped. Labels are
//! bounded: activity ARNs, API names, outcome and error names, handler digests (one live
//! per activity) — never task ids.
//!
//! Updating a metric is an atomic add on a handle looked up in a small map; encoding
//! happens only when scraped.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::aws::Api;
use crate::events::{Event, EventKind, HandlerEvent, Observer, TaskDone, TaskEvent, WorkerEvent};
use crate::gauges::Gauges;
use crate::sfn::{ActivityTask, CallObserver, SfnError, result_name};

/// The `Content-Type` of [`Metrics::encode`]'s output (Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// A label value shared with the rest of the host (an ARN, a digest) without copying it.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct Shared(Arc<str>);

impl EncodeLabelValue for Shared {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, &self.0)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActivityLabels {
    activity: Shared,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TaskLabels {
    activity: Shared,
    outcome: &'static str,
    error: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    activity: Shared,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiLabels {
    api: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiResultLabels {
    api: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandlerLabels {
    activity: Shared,
    digest: Shared,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn seconds() -> Histogram {
    // 1 ms .. ~9 min.
    Histogram::new(exponential_buckets(0.001, 2.0, 20))
}

fn poll_seconds() -> Histogram {
    // 5 ms .. ~82 s: a long poll returns after up to 60 s.
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

fn wait_seconds() -> Histogram {
    // 50 µs .. ~26 s: a task waits microseconds when the host keeps up.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 20))
}

fn cpu_seconds() -> Histogram {
    // 10 µs .. ~42 s, ×4.
    Histogram::new(exponential_buckets(0.000_01, 4.0, 12))
}

fn memory_bytes() -> Histogram {
    // 64 KiB (one wasm page) .. 2 GiB.
    Histogram::new(exponential_buckets(65_536.0, 2.0, 16))
}

/// The host's metrics. One per process, shared by the event observer, the metered
/// client and the admin server.
pub struct Metrics {
    registry: Registry,
    tasks: Family<TaskLabels, Counter>,
    task_duration: Histograms<ActivityLabels>,
    tasks_in_flight: Family<ActivityLabels, Gauge>,
    workers: Family<ActivityLabels, Gauge>,
    polls: Family<ResultLabels, Counter>,
    poll_duration: Histograms<ActivityLabels>,
    sfn_requests: Family<ApiResultLabels, Counter>,
    sfn_request_duration: Histograms<ApiLabels>,
    heartbeats: Family<ActivityLabels, Counter>,
    handler_info: Family<HandlerLabels, Gauge>,
    handler_swaps: Family<ResultLabels, Counter>,
    task_cpu: Histograms<ActivityLabels>,
    task_memory_peak: Histograms<ActivityLabels>,
    task_slots: Family<ActivityLabels, Gauge>,
    task_slots_used: Family<ActivityLabels, Gauge>,
    polls_in_flight: Family<ActivityLabels, Gauge>,
    task_wait: Histograms<ActivityLabels>,
    answers_refused: Family<ActivityLabels, Counter>,
    callback_messages: Family<ResultLabels, Counter>,
    ready: Gauge,
    /// Each activity's live gauges, copied into their families when scraped.
    live: Mutex<Vec<(ActivityLabels, Arc<Gauges>)>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every metric, registered, at zero.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("sfn_wasm_host");
        let metrics = Self {
            tasks: Family::default(),
            task_duration: Family::new_with_constructor(seconds),
            tasks_in_flight: Family::default(),
            workers: Family::default(),
            polls: Family::default(),
            poll_duration: Family::new_with_constructor(poll_seconds),
            sfn_requests: Family::default(),
            sfn_request_duration: Family::new_with_constructor(seconds),
            heartbeats: Family::default(),
            handler_info: Family::default(),
            handler_swaps: Family::default(),
            task_cpu: Family::new_with_constructor(cpu_seconds),
            task_memory_peak: Family::new_with_constructor(memory_bytes),
            task_slots: Family::default(),
            task_slots_used: Family::default(),
            polls_in_flight: Family::default(),
            task_wait: Family::new_with_constructor(wait_seconds),
            answers_refused: Family::default(),
            callback_messages: Family::default(),
            ready: Gauge::default(),
            live: Mutex::default(),
            registry: Registry::default(),
        };
        // Counters get their `_total` suffix from the encoder. The registration order is
        // the order of `/metrics`.
        metrics.register_task_metrics(&mut registry);
        metrics.register_poll_metrics(&mut registry);
        metrics.register_sfn_metrics(&mut registry);
        metrics.register_handler_metrics(&mut registry);
        metrics.register_guest_metrics(&mut registry);
        metrics.register_capacity_metrics(&mut registry);
        metrics.register_health_metrics(&mut registry);
        Self {
            registry,
            ..metrics
        }
    }

    /// Registers the task lifecycle's metrics: tasks finished, their durations, those in flight.
    fn register_task_metrics(&self, registry: &mut Registry) {
        registry.register(
            "tasks",
            "Tasks finished, by outcome (success, failure, host_failure, closed, undelivered: what Step Functions accepted) and error (the SfnWasmHost.* name of a host failure, guest when the handler answered)",
            self.tasks.clone(),
            );
        registry.register(
            "task_duration_seconds",
            "Time from a task's arrival to its answer settled",
            self.task_duration.clone(),
        );
        registry.register(
            "tasks_in_flight",
            "Tasks received and not yet finished",
            self.tasks_in_flight.clone(),
        );
    }

    /// Registers the workers' and their polls' metrics.
    fn register_poll_metrics(&self, registry: &mut Registry) {
        registry.register("workers", "Workers (pollers) running", self.workers.clone());
        registry.register(
            "polls",
            "GetActivityTask polls (a callback's ReceiveMessage calls), by result (task, empty, throttled, error)",
            self.polls.clone(),
        );
        registry.register(
            "callback_messages",
            "A callback queue's messages not run, by result (rejected: not a task, left for the dead-letter queue; closed: its task already closed, deleted)",
            self.callback_messages.clone(),
        );
        registry.register(
            "poll_duration_seconds",
            "Time a GetActivityTask poll took",
            self.poll_duration.clone(),
        );
    }

    /// Registers the Step Functions requests' metrics, and the heartbeats delivered.
    fn register_sfn_metrics(&self, registry: &mut Registry) {
        registry.register(
            "sfn_requests",
            "Step Functions requests, by API and result (ok, throttled, closed, error)",
            self.sfn_requests.clone(),
        );
        registry.register(
            "sfn_request_duration_seconds",
            "Time a Step Functions request took, by API",
            self.sfn_request_duration.clone(),
        );
        registry.register(
            "heartbeats",
            "Heartbeats delivered (the handler's and automatic ones)",
            self.heartbeats.clone(),
        );
    }

    /// Registers the handler versions' metrics.
    fn register_handler_metrics(&self, registry: &mut Registry) {
        registry.register(
            "handler_info",
            "The handler version serving new tasks (1), by digest",
            self.handler_info.clone(),
        );
        registry.register(
            "handler_swaps",
            "New handler versions, by result (swapped, rejected, canary, promoted, rolledback)",
            self.handler_swaps.clone(),
        );
    }

    /// Registers what a task's guest used: CPU time and memory.
    fn register_guest_metrics(&self, registry: &mut Registry) {
        registry.register(
            "task_cpu_seconds",
            "CPU time a task's guest used (instantiation and host calls included)",
            self.task_cpu.clone(),
        );
        registry.register(
            "task_memory_peak_bytes",
            "Most linear memory a task's guest held at once",
            self.task_memory_peak.clone(),
        );
    }

    /// Registers the task slots, the polls open and the tasks' wait: what a scaler reads.
    fn register_capacity_metrics(&self, registry: &mut Registry) {
        registry.register(
            "task_slots",
            "Tasks the activity may run at once on this host (max_concurrent_tasks): with task_slots_used, the autoscaling signal",
            self.task_slots.clone(),
            );
        registry.register(
            "task_slots_used",
            "Task slots taken by tasks received and not yet finished",
            self.task_slots_used.clone(),
        );
        registry.register(
            "polls_in_flight",
            "GetActivityTask long polls (a callback's receives) open now",
            self.polls_in_flight.clone(),
        );
        registry.register(
            "task_wait_seconds",
            "Time from a poll's return to the guest's start: the host's own schedule-to-start",
            self.task_wait.clone(),
        );
    }

    /// Registers the answers refused and readiness.
    fn register_health_metrics(&self, registry: &mut Registry) {
        registry.register(
            "answers_refused",
            "Answers Step Functions refused for good (task:refused: InvalidOutput, KMS errors, ...)",
            self.answers_refused.clone(),
            );
        registry.register(
            "ready",
            "1 when /readyz says ready (a handler loaded, a worker polling, polls not refused), else 0",
            self.ready.clone(),
            );
    }

    /// Adds an activity at start, with its live gauges (read at each scrape), and its
    /// series at zero, so that a scaler sees `task_slots_used` before the first task and
    /// an alert on `increase(...)` sees the first undelivered or refused answer, the
    /// first rollback (a counter that appears at 1 shows no increase).
    pub fn add_activity(&self, arn: &str, gauges: Arc<Gauges>) {
        self.add(arn, gauges, false);
    }

    /// [`add_activity`](Self::add_activity) for a callback (`name`: its queue URL), whose
    /// message counts start at zero too.
    pub fn add_callback(&self, name: &str, gauges: Arc<Gauges>) {
        self.add(name, gauges, true);
    }

    fn add(&self, arn: &str, gauges: Arc<Gauges>, callback: bool) {
        let shared = Shared(Arc::from(arn));
        let activity = ActivityLabels {
            activity: shared.clone(),
        };
        self.copy_gauges(&activity, &gauges);
        self.live
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push((activity.clone(), gauges));
        let _ = self.heartbeats.get_or_create(&activity);
        let _ = self.answers_refused.get_or_create(&activity);
        let _ = self.task_wait.get_or_create(&activity);
        for (outcome, error) in [
            ("success", "guest"),
            ("failure", "guest"),
            ("closed", "closed"),
            ("undelivered", "undelivered"),
        ] {
            let _ = self.tasks.get_or_create(&TaskLabels {
                activity: shared.clone(),
                outcome,
                error,
            });
        }
        for result in ["task", "empty", "throttled", "error"] {
            let _ = self.polls.get_or_create(&ResultLabels {
                activity: shared.clone(),
                result,
            });
        }
        for result in ["swapped", "rejected", "canary", "promoted", "rolledback"] {
            let _ = self.handler_swaps.get_or_create(&ResultLabels {
                activity: shared.clone(),
                result,
            });
        }
        for result in ["rejected", "closed"].into_iter().filter(|_| callback) {
            let _ = self.callback_messages.get_or_create(&ResultLabels {
                activity: shared.clone(),
                result,
            });
        }
    }

    /// Sets `ready`, as `/readyz` would answer now; the admin server calls it before
    /// each scrape.
    pub fn set_ready(&self, ready: bool) {
        self.ready.set(i64::from(ready));
    }

    /// Sets an activity's gauge families to what its live gauges read now.
    fn copy_gauges(&self, activity: &ActivityLabels, gauges: &Gauges) {
        let now = gauges.read();
        for (family, value) in [
            (&self.task_slots, now.task_slots),
            (&self.task_slots_used, now.task_slots_used),
            (&self.polls_in_flight, now.polls_in_flight),
            (&self.tasks_in_flight, now.tasks_in_flight()),
            (&self.workers, now.workers),
        ] {
            family.get_or_create(activity).set(i64::from(value));
        }
    }

    /// The Prometheus text exposition of every metric, the live gauges read now.
    pub fn encode(&self) -> String {
        for (activity, gauges) in self
            .live
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
        {
            self.copy_gauges(activity, gauges);
        }
        let mut text = String::with_capacity(16 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry);
        text
    }

    fn count_swap(&self, activity: Shared, result: &'static str) {
        self.handler_swaps
            .get_or_create(&ResultLabels { activity, result })
            .inc();
    }

    fn activity(event: &Event) -> ActivityLabels {
        ActivityLabels {
            activity: Shared(event.activity.clone()),
        }
    }

    /// A version no longer serves after a canary's judgement (`result`): its
    /// `handler_info` goes, and the swap is counted.
    fn retire(&self, event: &Event, digest: &Arc<str>, result: &'static str) {
        let activity = Shared(event.activity.clone());
        self.handler_info.remove(&HandlerLabels {
            activity: activity.clone(),
            digest: Shared(digest.clone()),
        });
        self.count_swap(activity, result);
    }

    /// Counts a Step Functions request that took `elapsed` and ended in `result`.
    fn request(&self, api: Api, elapsed: Duration, error: Option<&SfnError>) {
        let (api, result) = (api.name(), result_name(error));
        self.sfn_requests
            .get_or_create(&ApiResultLabels { api, result })
            .inc();
        self.sfn_request_duration
            .get_or_create(&ApiLabels { api })
            .observe(elapsed.as_secs_f64());
    }

    /// Counts a task's event: start, heartbeat, refused answer, end.
    fn observe_task(&self, event: &Event, task_event: &TaskEvent) {
        match task_event {
            TaskEvent::Start { wait } => {
                self.task_wait
                    .get_or_create(&Self::activity(event))
                    .observe(wait.as_secs_f64());
            }
            TaskEvent::Refused { .. } => {
                self.answers_refused
                    .get_or_create(&Self::activity(event))
                    .inc();
            }
            TaskEvent::Done(done) => self.count_done(event, done),
            TaskEvent::Heartbeat { .. } => {
                self.heartbeats.get_or_create(&Self::activity(event)).inc();
            }
            _ => {}
        }
    }

    /// Counts a finished task: its outcome, duration, CPU and memory.
    fn count_done(&self, event: &Event, done: &TaskDone) {
        let activity = Self::activity(event);
        self.tasks
            .get_or_create(&TaskLabels {
                activity: activity.activity.clone(),
                outcome: done.outcome.name(),
                error: done.error.name(),
            })
            .inc();
        self.task_duration
            .get_or_create(&activity)
            .observe(done.elapsed.as_secs_f64());
        self.task_cpu
            .get_or_create(&activity)
            .observe(done.cpu.as_secs_f64());
        #[allow(clippy::cast_precision_loss)] // bytes: f64 is exact far past 4 GiB
        self.task_memory_peak
            .get_or_create(&activity)
            .observe(done.memory_peak_bytes as f64);
    }

    /// Counts a callback's receives and the messages it did not run.
    fn observe_receive(&self, event: &Event, worker_event: &WorkerEvent) {
        let (family, result) = match worker_event {
            WorkerEvent::MessageRejected { .. } => (&self.callback_messages, "rejected"),
            WorkerEvent::MessageClosed { .. } => (&self.callback_messages, "closed"),
            _ if event.task_source != "callback" => return,
            WorkerEvent::PollingSuccess { task: true } => (&self.polls, "task"),
            WorkerEvent::PollingSuccess { task: false } => (&self.polls, "empty"),
            WorkerEvent::PollingError {
                throttled: true, ..
            } => (&self.polls, "throttled"),
            WorkerEvent::PollingError { .. } => (&self.polls, "error"),
            _ => return,
        };
        family
            .get_or_create(&ResultLabels {
                activity: Shared(event.activity.clone()),
                result,
            })
            .inc();
    }

    /// Follows the handler versions: which serve (`handler_info`), and each swap.
    fn observe_handler(&self, event: &Event, handler_event: &HandlerEvent) {
        match handler_event {
            HandlerEvent::Loaded { digest, .. } => {
                self.handler_info
                    .get_or_create(&HandlerLabels {
                        activity: Shared(event.activity.clone()),
                        digest: Shared(digest.clone()),
                    })
                    .set(1);
            }
            HandlerEvent::Swapped {
                old_digest,
                new_digest,
                ..
            } => {
                let activity = Shared(event.activity.clone());
                self.handler_info.remove(&HandlerLabels {
                    activity: activity.clone(),
                    digest: Shared(old_digest.clone()),
                });
                self.handler_info
                    .get_or_create(&HandlerLabels {
                        activity: activity.clone(),
                        digest: Shared(new_digest.clone()),
                    })
                    .set(1);
                self.handler_swaps
                    .get_or_create(&ResultLabels {
                        activity,
                        result: "swapped",
                    })
                    .inc();
            }
            HandlerEvent::Canary { new_digest, .. } => {
                let activity = Shared(event.activity.clone());
                // Both versions serve while the canary is judged.
                self.handler_info
                    .get_or_create(&HandlerLabels {
                        activity: activity.clone(),
                        digest: Shared(new_digest.clone()),
                    })
                    .set(1);
                self.count_swap(activity, "canary");
            }
            // The canary's judgement ends one of the two versions.
            HandlerEvent::Promoted { old_digest, .. } => {
                self.retire(event, old_digest, "promoted");
            }
            HandlerEvent::RolledBack { new_digest, .. } => {
                self.retire(event, new_digest, "rolledback");
            }
            HandlerEvent::Rejected { .. } => {
                self.handler_swaps
                    .get_or_create(&ResultLabels {
                        activity: Shared(event.activity.clone()),
                        result: "rejected",
                    })
                    .inc();
            }
        }
    }
}

impl Observer for Metrics {
    fn observe(&self, event: &Event) {
        match &event.kind {
            EventKind::Task {
                event: task_event, ..
            } => self.observe_task(event, task_event),
            // Workers and their polls are live gauges (`copy_gauges`); an activity's
            // polls are counted by the client (`polled`), a callback's receives here.
            EventKind::Worker {
                event: worker_event,
                ..
            } => self.observe_receive(event, worker_event),
            EventKind::Handler(handler_event) => self.observe_handler(event, handler_event),
        }
    }
}

impl CallObserver for Metrics {
    fn polled(
        &self,
        arn: &str,
        _started: SystemTime,
        elapsed: Duration,
        polled: &Result<Option<ActivityTask>, SfnError>,
    ) {
        self.request(Api::GetActivityTask, elapsed, polled.as_ref().err());
        let result = match polled {
            Ok(Some(_)) => "task",
            Ok(None) => "empty",
            Err(SfnError::Throttled(_)) => "throttled",
            Err(_) => "error",
        };
        let activity = Shared(Arc::from(arn));
        self.polls
            .get_or_create(&ResultLabels {
                activity: activity.clone(),
                result,
            })
            .inc();
        self.poll_duration
            .get_or_create(&ActivityLabels { activity })
            .observe(elapsed.as_secs_f64());
    }

    fn called(
        &self,
        api: Api,
        _token: &str,
        _started: SystemTime,
        elapsed: Duration,
        error: Option<&SfnError>,
    ) {
        self.request(api, elapsed, error);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{DoneError, TaskOutcome, TaskRef, WorkerEvent};

    fn sample(text: &str, name: &str) -> Option<String> {
        let key = format!("sfn_wasm_host_{name}{{activity=\"arn:a\"}} ");
        text.lines()
            .find_map(|line| line.strip_prefix(&key).map(str::to_owned))
    }

    fn event(kind: EventKind) -> Event {
        Event {
            kind,
            activity: Arc::from("arn:a"),
            task_source: "activity",
        }
    }

    fn task(event: TaskEvent) -> EventKind {
        EventKind::Task {
            worker: Arc::from("w"),
            task: TaskRef {
                task_id: Arc::from("t1"),
                handler_digest: Arc::from("d1"),
                recovered: false,
            },
            event,
        }
    }

    /// The live gauges are what the activity's `Gauges` read at the scrape: the
    /// lifecycle events alone (a task received and finished, a worker stopped, a
    /// recovered task's `task:done` without its `task:received`) do not move them.
    #[test]
    fn the_live_gauges_are_read_when_scraped_not_derived_from_events() {
        let metrics = Metrics::new();
        let gauges = Arc::new(Gauges::new(3));
        metrics.add_activity("arn:a", gauges.clone());
        let idle = metrics.encode();
        assert_eq!(sample(&idle, "task_slots").as_deref(), Some("3"));
        for name in [
            "task_slots_used",
            "polls_in_flight",
            "tasks_in_flight",
            "workers",
        ] {
            assert_eq!(sample(&idle, name).as_deref(), Some("0"), "{name}");
        }

        let semaphore = Arc::new(tokio::sync::Semaphore::new(3));
        let (worker, poll) = (gauges.worker(), gauges.poll());
        let slot = gauges.task_slot(semaphore.try_acquire_owned().unwrap());
        metrics.observe(&event(task(TaskEvent::Received)));
        metrics.observe(&event(task(TaskEvent::Done(TaskDone::not_run(
            TaskOutcome::Success,
            DoneError::Guest,
            Duration::ZERO,
        )))));
        metrics.observe(&event(EventKind::Worker {
            worker: Arc::from("w"),
            event: WorkerEvent::Stopped { exit_code: 0 },
        }));
        let busy = metrics.encode();
        for name in [
            "task_slots_used",
            "polls_in_flight",
            "tasks_in_flight",
            "workers",
        ] {
            assert_eq!(sample(&busy, name).as_deref(), Some("1"), "{name}");
        }
        assert!(busy.contains("sfn_wasm_host_tasks_total{activity=\"arn:a\",outcome=\"success\",error=\"guest\"} 1"), "{busy}");

        drop((worker, poll, slot));
        let after = metrics.encode();
        for name in [
            "task_slots_used",
            "polls_in_flight",
            "tasks_in_flight",
            "workers",
        ] {
            assert_eq!(sample(&after, name).as_deref(), Some("0"), "{name}");
        }
    }
}
