//! The version chooser: which handler version each new task of an activity runs.
//!
//! Without `[activity.rollout]` a new version replaces the old at once (a hot swap).
//! With it, a new version becomes the *canary*: it gets `canary_percent` of new tasks
//! (an exact share, interleaved, not a coin toss) while the *stable* version keeps the
//! rest. Each answered task counts towards its version's host-failure rate (traps,
//! timeouts, memory, no answer: the `SfnWasmHost.*` failures; a handler's own
//! `failure` answer is a business outcome, not a regression, and a task Step Functions
//! closed says nothing about either version). The canary is
//!
//! - **rolled back** as soon as it has answered `rollback_min_tasks` tasks and its rate
//!   exceeds stable's (over the same window) by more than `max_failure_rate_increase`;
//! - **promoted** (it becomes stable) once it has answered `promote_after_tasks` tasks
//!   without that.
//!
//! Tasks already running finish on the version they started with whatever is decided.
//! The file watcher, S3/HTTPS polling and SIGHUP are producers: they prepare a version
//! (`Handler::prepare`) and [`offer`](VersionChooser::offer) it here.

use sfn_wasm_engine::{Digest, Handler};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use crate::config::RolloutConfig;
use crate::events::{CanaryJudgement, Emitter, HandlerEvent, TaskOutcome};

/// A handler version as the chooser sees it: something with a digest.
pub trait Version: Clone {
    /// The digest that names the version.
    fn digest(&self) -> &Digest;
}

impl Version for Handler {
    fn digest(&self) -> &Digest {
        Handler::digest(self)
    }
}

/// Which version a task got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arm {
    /// The stable version.
    Stable,
    /// The canary.
    Canary,
}

/// The version chosen for one task; hand it back to [`VersionChooser::report`].
#[derive(Clone)]
pub struct Chosen<H = Handler> {
    /// The version to run.
    pub handler: H,
    /// Stable or canary.
    pub arm: Arm,
    /// Which rollout it belongs to: a report from before the last decision is ignored.
    generation: u64,
}

/// Answered tasks and host failures of one version during a canary.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    answered: u64,
    host_failures: u64,
}

impl Tally {
    fn rate(self) -> f64 {
        if self.answered == 0 {
            0.0
        } else {
            self.host_failures as f64 / self.answered as f64
        }
    }
}

struct Canary<H> {
    handler: H,
    /// Percent points owed to the canary; each 100 is one task.
    owed: u32,
    canary: Tally,
    stable: Tally,
}

struct State<H> {
    stable: H,
    canary: Option<Canary<H>>,
    generation: u64,
    /// The last version rolled back: offered again (the same file, the same object), it
    /// is not retried until SIGHUP.
    rolled_back: Option<Digest>,
}

/// What became of an offered version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offered {
    /// It serves all new tasks now (no rollout).
    Swapped,
    /// It is the canary now.
    Canary,
    /// It is already the stable version or the canary, or was rolled back: nothing changed.
    Known,
    /// It is the stable version, deployed again during a canary: the canary is withdrawn
    /// (`handler:swapped` from the canary back to it).
    Withdrawn,
}

/// One activity's versions and the rules that move between them. Shared by its
/// workers and the producers of new versions.
pub struct VersionChooser<H = Handler> {
    state: Mutex<State<H>>,
    rollout: Option<RolloutConfig>,
    emitter: Emitter,
}

impl<H: Version> VersionChooser<H> {
    /// Serving `handler`; `rollout` decides how new versions come in.
    pub fn new(handler: H, rollout: Option<RolloutConfig>, emitter: Emitter) -> Self {
        Self {
            state: Mutex::new(State {
                stable: handler,
                canary: None,
                generation: 0,
                rolled_back: None,
            }),
            rollout,
            emitter,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<H>> {
        // The state is consistent after every statement; a panic elsewhere leaves it usable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The stable version.
    pub fn stable(&self) -> H {
        self.lock().stable.clone()
    }

    /// The canary being judged, and its share of new tasks in percent.
    pub fn canary(&self) -> Option<(H, u32)> {
        let percent = self.rollout.map_or(0, |r| r.canary_percent);
        self.lock()
            .canary
            .as_ref()
            .map(|canary| (canary.handler.clone(), percent))
    }

    /// Whether `digest` needs no preparing: it is the stable version, the canary, or the
    /// version last rolled back.
    pub fn knows(&self, digest: &Digest) -> bool {
        let state = self.lock();
        state.stable.digest() == digest
            || state
                .canary
                .as_ref()
                .is_some_and(|c| c.handler.digest() == digest)
            || state.rolled_back.as_ref() == Some(digest)
    }

    /// Forgets the version last rolled back, so that it may be offered again (SIGHUP).
    pub fn forget_rolled_back(&self) {
        self.lock().rolled_back = None;
    }

    /// The version for a new task.
    pub fn choose(&self) -> Chosen<H> {
        let mut state = self.lock();
        let generation = state.generation;
        let percent = self.rollout.map_or(0, |r| r.canary_percent);
        if let Some(canary) = &mut state.canary {
            canary.owed += percent;
            if canary.owed >= 100 {
                canary.owed -= 100;
                return Chosen {
                    handler: canary.handler.clone(),
                    arm: Arm::Canary,
                    generation,
                };
            }
        }
        Chosen {
            handler: state.stable.clone(),
            arm: Arm::Stable,
            generation,
        }
    }

    /// Counts what a task came to, and promotes or rolls back the canary when that decides it.
    pub fn report(&self, chosen: &Chosen<H>, outcome: TaskOutcome) {
        let Some(rollout) = self.rollout else { return };
        let event = {
            let mut state = self.lock();
            if state.generation != chosen.generation || !outcome.judges_the_handler() {
                return;
            }
            let Some(canary) = &mut state.canary else {
                return;
            };
            let tally = match chosen.arm {
                Arm::Canary => &mut canary.canary,
                Arm::Stable => &mut canary.stable,
            };
            tally.answered += 1;
            tally.host_failures += u64::from(outcome == TaskOutcome::HostFailure);
            if chosen.arm == Arm::Stable {
                return;
            }
            let (canary_rate, stable_rate) = (canary.canary.rate(), canary.stable.rate());
            let judged = canary.canary.answered
                >= rollout.rollback_min_tasks.min(rollout.promote_after_tasks);
            let regressed = judged && canary_rate - stable_rate > rollout.max_failure_rate_increase;
            let promoted = !regressed && canary.canary.answered >= rollout.promote_after_tasks;
            if !(regressed || promoted) {
                return;
            }
            let Some(canary) = state.canary.take() else {
                return;
            };
            state.generation += 1;
            let old_digest = state.stable.digest().hex().clone();
            let new_digest = canary.handler.digest().hex().clone();
            let judged = CanaryJudgement {
                canary_tasks: canary.canary.answered,
                canary_failure_rate: canary_rate,
                stable_tasks: canary.stable.answered,
                stable_failure_rate: stable_rate,
            };
            if regressed {
                state.rolled_back = Some(canary.handler.digest().clone());
                HandlerEvent::RolledBack {
                    old_digest,
                    new_digest,
                    judged,
                    max_failure_rate_increase: rollout.max_failure_rate_increase,
                }
            } else {
                state.stable = canary.handler;
                HandlerEvent::Promoted {
                    old_digest,
                    new_digest,
                    judged,
                }
            }
        };
        self.emitter.emit(event);
    }

    /// A new version from a producer: swapped in at once without a rollout, else made
    /// the canary (replacing a canary still being judged, whose count starts over).
    /// Offering the stable version again ends a canary in its favour. `compile_ms` and
    /// `cache` say how it was made ready, for `handler:swapped`.
    pub fn offer(&self, handler: H, elapsed: Duration, cache: &'static str) -> Offered {
        let new_digest = handler.digest().hex().clone();
        let (offered, event) = {
            let mut state = self.lock();
            let digest = handler.digest();
            let is_canary = state
                .canary
                .as_ref()
                .is_some_and(|c| c.handler.digest() == digest);
            if is_canary || state.rolled_back.as_ref() == Some(digest) {
                return Offered::Known;
            }
            if state.stable.digest() == digest {
                // A deploy of the stable version again: the canary is withdrawn, and
                // every new task runs the stable version again, a swap back to it.
                let Some(canary) = state.canary.take() else {
                    return Offered::Known;
                };
                state.generation += 1;
                let event = HandlerEvent::Swapped {
                    old_digest: canary.handler.digest().hex().clone(),
                    new_digest,
                    compile_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
                    cache,
                };
                drop(state);
                self.emitter.emit(event);
                return Offered::Withdrawn;
            }
            state.generation += 1;
            let old_digest = state.stable.digest().hex().clone();
            match self.rollout {
                None => {
                    state.stable = handler;
                    (
                        Offered::Swapped,
                        HandlerEvent::Swapped {
                            old_digest,
                            new_digest,
                            compile_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
                            cache,
                        },
                    )
                }
                Some(rollout) => {
                    state.canary = Some(Canary {
                        handler,
                        owed: 0,
                        canary: Tally::default(),
                        stable: Tally::default(),
                    });
                    (
                        Offered::Canary,
                        HandlerEvent::Canary {
                            old_digest,
                            new_digest,
                            percent: rollout.canary_percent,
                        },
                    )
                }
            }
        };
        self.emitter.emit(event);
        offered
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::events::{Event, Events};

    #[derive(Clone)]
    struct V(Digest);

    impl Version for V {
        fn digest(&self) -> &Digest {
            &self.0
        }
    }

    fn v(name: &str) -> V {
        V(Digest::of(name.as_bytes()))
    }

    fn chooser(
        rollout: Option<RolloutConfig>,
    ) -> (VersionChooser<V>, tokio::sync::broadcast::Receiver<Event>) {
        let events = Events::new(1024);
        let receiver = events.subscribe();
        let emitter = Emitter::for_activity(events, Arc::from("arn"));
        (VersionChooser::new(v("old"), rollout, emitter), receiver)
    }

    fn names(receiver: &mut tokio::sync::broadcast::Receiver<Event>) -> Vec<&'static str> {
        std::iter::from_fn(|| receiver.try_recv().ok())
            .map(|event| event.kind.name())
            .collect()
    }

    fn rollout(percent: u32, promote: u64) -> RolloutConfig {
        RolloutConfig {
            canary_percent: percent,
            promote_after_tasks: promote,
            max_failure_rate_increase: 0.05,
            rollback_min_tasks: 10,
        }
    }

    /// Runs `n` tasks; the canary's end in `canary`, stable's in `stable`.
    fn run(
        chooser: &VersionChooser<V>,
        n: usize,
        stable: TaskOutcome,
        canary: TaskOutcome,
    ) -> (usize, usize) {
        let mut got = (0, 0);
        for _ in 0..n {
            let chosen = chooser.choose();
            match chosen.arm {
                Arm::Stable => {
                    got.0 += 1;
                    chooser.report(&chosen, stable);
                }
                Arm::Canary => {
                    got.1 += 1;
                    chooser.report(&chosen, canary);
                }
            }
        }
        got
    }

    #[test]
    fn without_a_rollout_a_new_version_replaces_the_old_at_once() {
        let (chooser, mut events) = chooser(None);
        assert_eq!(
            chooser.offer(v("new"), Duration::ZERO, "miss"),
            Offered::Swapped
        );
        assert_eq!(chooser.choose().handler.0, Digest::of(b"new"));
        assert_eq!(
            chooser.offer(v("new"), Duration::ZERO, "miss"),
            Offered::Known
        );
        assert_eq!(names(&mut events), ["handler:swapped"]);
    }

    #[test]
    fn the_canary_gets_its_exact_share() {
        let (chooser, _) = chooser(Some(rollout(10, 1000)));
        chooser.offer(v("new"), Duration::ZERO, "miss");
        assert_eq!(
            run(&chooser, 1000, TaskOutcome::Success, TaskOutcome::Success),
            (900, 100)
        );
    }

    #[test]
    fn a_good_canary_is_promoted_after_its_tasks() {
        let (chooser, mut events) = chooser(Some(rollout(50, 20)));
        assert_eq!(
            chooser.offer(v("new"), Duration::ZERO, "miss"),
            Offered::Canary
        );
        // Guest failures are the handler's answers, not regressions.
        run(&chooser, 39, TaskOutcome::Success, TaskOutcome::Failure);
        assert_eq!(names(&mut events), ["handler:canary"]);
        run(&chooser, 1, TaskOutcome::Success, TaskOutcome::Failure);
        assert_eq!(names(&mut events), ["handler:promoted"]);
        assert_eq!(
            run(&chooser, 10, TaskOutcome::Success, TaskOutcome::Success),
            (10, 0)
        );
        assert_eq!(chooser.stable().0, Digest::of(b"new"));
    }

    #[test]
    fn a_failing_canary_is_rolled_back_once_judged_and_not_retried() {
        let (chooser, mut events) = chooser(Some(rollout(50, 200)));
        chooser.offer(v("bad"), Duration::ZERO, "miss");
        run(&chooser, 19, TaskOutcome::Success, TaskOutcome::HostFailure);
        assert_eq!(names(&mut events), ["handler:canary"]);
        // The 10th canary task: 100 % against 0 %.
        let chosen = chooser.choose();
        assert_eq!(chosen.arm, Arm::Canary);
        // A stable task that started before the decision still counts nowhere after it.
        let late = chooser.choose();
        chooser.report(&chosen, TaskOutcome::HostFailure);
        chooser.report(&late, TaskOutcome::HostFailure);
        assert_eq!(names(&mut events), ["handler:rolledback"]);
        assert_eq!(
            run(&chooser, 10, TaskOutcome::Success, TaskOutcome::Success),
            (10, 0)
        );
        assert_eq!(chooser.stable().0, Digest::of(b"old"));
        assert_eq!(
            chooser.offer(v("bad"), Duration::ZERO, "miss"),
            Offered::Known
        );
        chooser.forget_rolled_back();
        assert_eq!(
            chooser.offer(v("bad"), Duration::ZERO, "miss"),
            Offered::Canary
        );
    }

    #[test]
    fn a_rate_within_the_allowed_increase_is_not_a_regression() {
        let (chooser, mut events) = chooser(Some(rollout(50, 40)));
        chooser.offer(v("new"), Duration::ZERO, "miss");
        // Both versions fail one task in ten: no increase.
        let mut n = 0;
        for _ in 0..80 {
            let chosen = chooser.choose();
            n += 1;
            let outcome = if n % 20 < 2 {
                TaskOutcome::HostFailure
            } else {
                TaskOutcome::Success
            };
            chooser.report(&chosen, outcome);
        }
        assert_eq!(names(&mut events), ["handler:canary", "handler:promoted"]);
    }

    #[test]
    fn a_newer_version_replaces_the_canary_and_the_stable_one_withdraws_it() {
        let (chooser, mut events) = chooser(Some(rollout(50, 200)));
        chooser.offer(v("one"), Duration::ZERO, "miss");
        run(&chooser, 10, TaskOutcome::Success, TaskOutcome::Success);
        assert_eq!(
            chooser.offer(v("two"), Duration::ZERO, "miss"),
            Offered::Canary
        );
        assert!(chooser.knows(&Digest::of(b"two")));
        assert_eq!(
            chooser.offer(v("old"), Duration::ZERO, "miss"),
            Offered::Withdrawn
        );
        assert!(chooser.canary().is_none());
        assert_eq!(
            run(&chooser, 4, TaskOutcome::Success, TaskOutcome::Success),
            (4, 0)
        );
        assert_eq!(
            names(&mut events),
            ["handler:canary", "handler:canary", "handler:swapped"]
        );
    }
}
