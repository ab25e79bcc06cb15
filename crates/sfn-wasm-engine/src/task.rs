//! Running one task: a fresh `Store` with its own limits, the guest's `handle`, and the
//! host's answer when the guest did not give one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::ResourceTable;
use wasmtime::{Engine, Store, Trap, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::bindings::{v0_1, v0_2};
use crate::budget::LineBudget;
use crate::capability::{Capabilities, InstanceBuilder, NoOutbound, OutboundHooks, TaskInfo};
use crate::control::TaskControl;
use crate::cpu::{self, CpuMeter};
use crate::epoch::Running;
use crate::limits::MemoryLimiter;
use crate::outcome::{HostFailure, MAX_CAUSE_LEN, truncate_utf16};
use crate::stdio::{GuestOutput, Stream};
use crate::toolkit::{AnswerSink, Toolkit};

/// The name under which the linker holds `http-error-code`: the `wasi:http` version
/// wasmtime-wasi-http implements (guests importing an older 0.2 version are matched to
/// it by semver).
const TYPES_INTERFACE: &str = "wasi:http/types@0.2.12";

/// The most resources (streams, pollables, ...) one task may hold at once: far more
/// than a handler needs, far less than the table's own cap of a million.
pub const MAX_RESOURCES: usize = 1024;
/// The most bytes one `get-random-bytes` call may ask for.
pub const MAX_RANDOM_BYTES: u64 = 1 << 20;

/// What one task may use.
#[derive(Debug, Clone, Copy)]
pub struct TaskLimits {
    /// The cap on the guest's linear memory, in bytes.
    pub memory_bytes: u64,
    /// How long the guest may run, from instantiation to the end of `handle`.
    pub timeout: Duration,
    /// How often the host sends a heartbeat for the task while the guest runs
    /// ([`AnswerSink::auto_heartbeat`]); never when `None`.
    pub heartbeat_every: Option<Duration>,
}

/// One task to run.
#[derive(Debug, Clone)]
pub struct TaskRequest {
    /// The task input; the host checks it is JSON before calling the guest.
    pub input: String,
    /// The activity the task came from (shared by its tasks, not copied per task).
    pub activity_arn: Arc<str>,
    /// The worker that polled it.
    pub worker_name: Arc<str>,
    /// A short id for logs (never the task token).
    pub task_id: Arc<str>,
    /// Memory and time limits.
    pub limits: TaskLimits,
    /// Early-stop handles.
    pub control: TaskControl,
    /// What the instance may use beyond the sandbox (environment, folders, outbound
    /// HTTP, a checkpoint store, ...), each prepared before the guest starts; with none,
    /// the guest reaches nothing.
    pub capabilities: Capabilities,
}

/// How a task's guest ended. What became of the answer is the task's
/// [`AnswerSink`]'s to say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskReport {
    /// What went wrong with the handler, if anything. When the guest had not answered,
    /// the host answered with this failure.
    pub error: Option<HostFailure>,
    /// How long the guest ran, from instantiation to its return or its stop.
    pub elapsed: Duration,
    /// The CPU time spent running the guest (and the host code it called, instantiation
    /// included): the polling threads' CPU clocks around each poll of its future.
    pub cpu: Duration,
    /// The most linear memory the guest held at once, in bytes.
    pub memory_peak_bytes: u64,
    /// Log lines the task caused that its rate limit dropped: its own output and the
    /// host's lines about it (`outbound:denied`, ...).
    pub log_lines_dropped: u64,
}

/// The data of one task's `Store`.
pub struct TaskState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: MemoryLimiter,
    pub(crate) toolkit: Toolkit,
    http: WasiHttpCtx,
    outbound: Box<dyn OutboundHooks>,
}

impl WasiHttpView for TaskState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut *self.outbound,
        }
    }
}

impl WasiView for TaskState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Replaces wasmtime-wasi-http's `http-error-code` with the task's outbound hooks'
/// [`OutboundHooks::error_code`], which may also name the errors of bodies they made.
pub(crate) fn override_http_error_code(
    linker: &mut wasmtime::component::Linker<TaskState>,
) -> wasmtime::Result<()> {
    use wasmtime::component::Resource;
    use wasmtime_wasi_http::p2::bindings::http::types::ErrorCode;
    linker.allow_shadowing(true);
    let defined = linker.instance(TYPES_INTERFACE)?.func_wrap(
        "http-error-code",
        |store: wasmtime::StoreContextMut<'_, TaskState>,
         (err,): (Resource<wasmtime::Error>,)|
         -> wasmtime::Result<(Option<ErrorCode>,)> {
            let state = store.data();
            let err = state.table.get(&err)?;
            Ok((state.outbound.error_code(err),))
        },
    );
    linker.allow_shadowing(false);
    defined
}

/// A guest's turn on its thread is over: let everything else that is ready run first.
///
/// Two steps, because tokio's multi-threaded scheduler polls its I/O and timers only when
/// a thread runs out of work (or every 61 turns): a plain re-wake would put the guest
/// back in the queue before a poll's response or a deadline could be noticed, and guests
/// that all spin would leave them unnoticed for 61 slices. `yield_now` instead waits until
/// the thread has polled I/O and timers (so what they woke is queued), and the second
/// step puts the guest behind that: a waiting poll, answer or timer runs within one
/// round of the guests on its thread.
async fn end_of_slice() {
    tokio::task::yield_now().await;
    BehindTheQueue(false).await;
}

/// Ready on its second poll; the first re-wakes the task, which tokio then queues at the
/// back of its thread's queue (not in its next-to-run slot).
struct BehindTheQueue(bool);

impl Future for BehindTheQueue {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.0 {
            return std::task::Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}

/// Why the epoch callback or the host stopped a guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
enum Interrupt {
    #[error("the task ran past its deadline")]
    Timeout,
    #[error("the host is shutting down")]
    Shutdown,
}

/// A linked handler, by the world version it was built against.
#[derive(Clone)]
pub(super) enum HandlerPre {
    V0_1(v0_1::HandlerPre<TaskState>),
    V0_2(v0_2::HandlerPre<TaskState>),
}

impl HandlerPre {
    /// Instantiates the handler in `store` and calls its `handle` with `task`, in the
    /// types of the world it was built against. The task's `deadline-ms` is what is left
    /// of `deadline` once the instance is made, not the whole timeout: the time spent
    /// before (reading the input, preparing and instantiating) is the guest's too, and a
    /// guest that plans to answer just before its deadline must not count it twice.
    pub(super) async fn handle(
        &self,
        store: &mut wasmtime::Store<TaskState>,
        mut task: v0_2::sfn::activity::types::Task,
        deadline: Instant,
    ) -> wasmtime::Result<Result<(), String>> {
        match self {
            HandlerPre::V0_2(pre) => {
                let instance = pre.instantiate_async(&mut *store).await?;
                task.deadline_ms = Some(millis_left(deadline));
                instance.call_handle(&mut *store, &task).await
            }
            HandlerPre::V0_1(pre) => {
                let instance = pre.instantiate_async(&mut *store).await?;
                let task = v0_1::sfn::activity::types::Task {
                    input: task.input,
                    activity_arn: task.activity_arn,
                    worker_name: task.worker_name,
                    task_id: task.task_id,
                    deadline_ms: Some(millis_left(deadline)),
                };
                instance.call_handle(&mut *store, &task).await
            }
        }
    }
}

/// Whole milliseconds from now to `deadline`, 0 once it has passed.
fn millis_left(deadline: Instant) -> u64 {
    let left = deadline.saturating_duration_since(Instant::now());
    u64::try_from(left.as_millis()).unwrap_or(u64::MAX)
}

/// Runs one task of the handler `pre` in a fresh instance of `engine` (see
/// `Handler::run`), the guest counted as `running` for the epoch clock, its CPU counted
/// in `cpu` (which also notes when a tick finds it computing, see
/// [`interrupt_at_ticks`]). Owns all it uses, so that it can move to the guest threads
/// (`guest_threads`).
pub(super) async fn run(
    pre: HandlerPre,
    engine: Engine,
    running: Running,
    cpu: Arc<CpuMeter>,
    request: TaskRequest,
    sink: Arc<dyn AnswerSink>,
) -> TaskReport {
    let started = Instant::now();

    if let Err(err) = serde_json::from_str::<serde::de::IgnoredAny>(&request.input) {
        let failure = HostFailure::InvalidInput(format!("the task input is not JSON: {err}"));
        return finish(&sink, Some(failure), started, Usage::default());
    }
    let task_id = request.task_id.clone();
    // One rate limit for every log line the task causes: its output and the host's.
    let lines = Arc::new(LineBudget::default());
    let stdout = GuestOutput::new(Stream::Stdout, task_id.clone(), lines.clone());
    let stderr = GuestOutput::new(Stream::Stderr, task_id.clone(), lines.clone());
    let info = TaskInfo {
        activity_arn: &request.activity_arn,
        task_id: &task_id,
        input: &request.input,
    };
    let (wasi, outbound, checkpoints) =
        match prepare(&request.capabilities, info, &lines, &stdout, &stderr) {
            Ok(parts) => parts,
            Err(message) => {
                let failure = HostFailure::Internal(message);
                return finish(&sink, Some(failure), started, Usage::default());
            }
        };
    // The guest counts as running (the epoch clock ticks for it) from its start (the
    // engine took `running` for it) to the end of its `handle`, but for the toolkit calls
    // it waits in.
    let toolkit = Toolkit::new(sink.clone(), checkpoints).with_running(running);
    let mut table = ResourceTable::new();
    table.set_max_capacity(MAX_RESOURCES);
    let memory_bytes = usize::try_from(request.limits.memory_bytes).unwrap_or(usize::MAX);
    let state = TaskState {
        wasi,
        table,
        limiter: MemoryLimiter::new(memory_bytes),
        toolkit,
        http: http_ctx(),
        outbound,
    };
    let mut store = Store::new(&engine, state);
    store.limiter(|state| &mut state.limiter);

    let deadline = started + request.limits.timeout;
    interrupt_at_ticks(
        &mut store,
        request.control.abort.clone(),
        deadline,
        cpu.clone(),
    );

    let task = v0_2::sfn::activity::types::Task {
        input: request.input,
        activity_arn: request.activity_arn.to_string(),
        worker_name: request.worker_name.to_string(),
        task_id: request.task_id.to_string(),
        // Set once the instance is made (see `HandlerPre::handle`).
        deadline_ms: None,
    };
    let outcome = {
        let call = cpu::timed(pre.handle(&mut store, task, deadline), &cpu);
        supervise(call, &request.control, &request.limits, deadline, &sink).await
    };

    stdout.finish();
    let stderr_tail = stderr.finish();
    let TaskState { limiter, .. } = store.into_data();
    let failure = match outcome {
        Ok(Ok(())) => (!sink.answered()).then_some(HostFailure::NoResponse),
        // Reported even after an answer: the answer stands, but the error is heard.
        Ok(Err(mut message)) => {
            truncate_utf16(&mut message, MAX_CAUSE_LEN);
            Some(HostFailure::HandlerError(message))
        }
        Err(err) => Some(classify(
            &err,
            &limiter,
            request.limits.timeout,
            &stderr_tail,
        )),
    };
    let usage = Usage {
        cpu: cpu.spent(),
        memory_peak_bytes: u64::try_from(limiter.peak_bytes()).unwrap_or(u64::MAX),
        log_lines_dropped: lines.dropped(),
    };
    finish(&sink, failure, started, usage)
}

/// Checked on every epoch tick while guest code runs: the guest is interrupted once the
/// task is aborted or past its `deadline`. A guest still running at a tick has had its
/// slice: it yields its thread to the polls, answers, timers and other guests waiting for
/// it (see `end_of_slice`), and goes on at its next turn.
///
/// Each tick is noted in `cpu`, so that a guest it finds computing (half a tick of CPU in
/// this one poll of its future, or two ticks' in all) moves to the guest threads as it
/// yields ([`CpuMeter::note_tick`]).
fn interrupt_at_ticks(
    store: &mut Store<TaskState>,
    abort: tokio_util::sync::CancellationToken,
    deadline: Instant,
    cpu: Arc<CpuMeter>,
) {
    store.epoch_deadline_callback(move |_| {
        if abort.is_cancelled() {
            Err(Interrupt::Shutdown.into())
        } else if Instant::now() >= deadline {
            Err(Interrupt::Timeout.into())
        } else {
            cpu.note_tick();
            Ok(UpdateDeadline::YieldCustom(1, Box::pin(end_of_slice())))
        }
    });
    store.set_epoch_deadline(1);
}

/// The parts of the guest's instance: its WASI context (its output to `stdout` and
/// `stderr`, raw sockets denied whatever is granted: outbound traffic goes through
/// wasi:http, where the hooks decide), its outbound hooks (every request refused unless
/// a capability sets its own) and its checkpoint store, as `capabilities` prepare them.
fn prepare(
    capabilities: &Capabilities,
    task: TaskInfo<'_>,
    lines: &Arc<LineBudget>,
    stdout: &GuestOutput,
    stderr: &GuestOutput,
) -> Result<InstanceParts, String> {
    let mut wasi = WasiCtxBuilder::new();
    let mut instance = InstanceBuilder::new(task, &mut wasi, lines);
    capabilities.prepare(&mut instance)?;
    let outbound = instance
        .outbound
        .take()
        .unwrap_or_else(|| Box::new(NoOutbound));
    let checkpoints = instance.checkpoints.take();
    // Last, once: whatever a capability set on the builder, the output goes through the
    // task's line budget and raw sockets stay denied (the builder's setters replace).
    sandbox(&mut wasi, stdout, stderr);
    Ok((wasi.build(), outbound, checkpoints))
}

/// What no capability may lift: the guest's output to `stdout` and `stderr` (through
/// the task's line budget), no raw socket nor name lookup, bounded random reads.
fn sandbox(wasi: &mut WasiCtxBuilder, stdout: &GuestOutput, stderr: &GuestOutput) {
    wasi.stdout(stdout.clone())
        .stderr(stderr.clone())
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .max_random_size(MAX_RANDOM_BYTES);
}

/// A task's WASI context, outbound hooks and checkpoint store.
type InstanceParts = (
    WasiCtx,
    Box<dyn OutboundHooks>,
    Option<Arc<dyn crate::capability::Checkpoints>>,
);

/// Drives the guest's `call` to its end, beside what the host does while it runs: the
/// shutdown's abort, the deadline, and the automatic heartbeats. The same limits cover
/// the time the guest spends waiting in host calls (sleeps, toolkit calls), where no
/// epoch callback runs.
async fn supervise<T>(
    call: impl std::future::Future<Output = wasmtime::Result<T>>,
    control: &TaskControl,
    limits: &TaskLimits,
    deadline: Instant,
    sink: &Arc<dyn AnswerSink>,
) -> wasmtime::Result<T> {
    let mut call = std::pin::pin!(call);
    let abort = control.abort.cancelled();
    let mut abort = std::pin::pin!(abort);
    // One timer per task, for its deadline and its automatic heartbeats.
    let deadline = tokio::time::Instant::from_std(deadline);
    let mut wakes = TaskTimer::new(limits.heartbeat_every, deadline);
    let timer = tokio::time::sleep_until(wakes.next_wake());
    let mut timer = std::pin::pin!(timer);
    let mut beating = None;
    loop {
        tokio::select! {
            biased;
            () = &mut abort => break Err(Interrupt::Shutdown.into()),
            () = &mut timer => {
                match wakes.wake(tokio::time::Instant::now()) {
                    Wake::Deadline => break Err(Interrupt::Timeout.into()),
                    // Sent beside the guest; a tick while one is still on the wire is
                    // skipped (the delivery would coalesce it anyway).
                    Wake::Heartbeat if beating.is_none() => {
                        beating = Some(sink.auto_heartbeat());
                    }
                    Wake::Heartbeat | Wake::Early => {}
                }
                timer.as_mut().reset(wakes.next_wake());
            }
            () = async {
                match beating.as_mut() {
                    Some(heartbeat) => heartbeat.await,
                    None => std::future::pending().await,
                }
            } => beating = None,
            result = &mut call => break result,
        }
    }
}

/// The largest headers (a `fields` resource) a guest may build, in bytes: the host holds
/// them outside the guest's memory cap, up to one per resource the task may hold
/// (`MAX_RESOURCES`), so wasmtime's 128 KiB default would let a task hold 128 MiB.
const MAX_FIELDS_BYTES: usize = 16 << 10;

fn http_ctx() -> WasiHttpCtx {
    let mut ctx = WasiHttpCtx::new();
    ctx.set_field_size_limit(MAX_FIELDS_BYTES);
    ctx
}

/// When a task's one timer wakes: for each automatic heartbeat, and at the deadline.
struct TaskTimer {
    every: Option<Duration>,
    next: Option<tokio::time::Instant>,
    deadline: tokio::time::Instant,
}

impl TaskTimer {
    fn new(every: Option<Duration>, deadline: tokio::time::Instant) -> Self {
        let next = every.map(|every| tokio::time::Instant::now() + every);
        Self {
            every,
            next,
            deadline,
        }
    }

    /// The next wake: the next heartbeat, unless the deadline comes first.
    fn next_wake(&self) -> tokio::time::Instant {
        self.next
            .map_or(self.deadline, |next| next.min(self.deadline))
    }

    /// What the timer going off at `now` means. After a heartbeat the next one is
    /// planned a whole interval on, so a late wake does not bunch them up.
    fn wake(&mut self, now: tokio::time::Instant) -> Wake {
        if now >= self.deadline {
            return Wake::Deadline;
        }
        match (self.every, self.next) {
            (Some(every), Some(next)) if now >= next => {
                self.next = Some(now + every);
                Wake::Heartbeat
            }
            _ => Wake::Early,
        }
    }
}

/// Why a task's timer went off.
#[derive(Debug, PartialEq, Eq)]
enum Wake {
    /// The deadline has come.
    Deadline,
    /// A heartbeat is due.
    Heartbeat,
    /// Nothing is due yet (a timer may go off a hair early): the same wake is planned
    /// again.
    Early,
}

/// What a task's guest used.
#[derive(Default)]
struct Usage {
    cpu: Duration,
    memory_peak_bytes: u64,
    log_lines_dropped: u64,
}

/// Names what stopped the guest.
fn classify(
    err: &wasmtime::Error,
    limiter: &MemoryLimiter,
    timeout: Duration,
    stderr_tail: &str,
) -> HostFailure {
    match err.downcast_ref::<Interrupt>() {
        Some(Interrupt::Timeout) => {
            return HostFailure::Timeout(format!(
                "the handler did not finish within its {} ms deadline",
                timeout.as_millis()
            ));
        }
        Some(Interrupt::Shutdown) => return HostFailure::Shutdown,
        None => {}
    }
    if let Some(limit) = err.downcast_ref::<wasmtime::PoolConcurrencyLimitError>() {
        return HostFailure::Capacity(format!(
            "no instance slot was free to run the task ({limit}); retry it, or raise the host's capacity"
        ));
    }
    if let Some(asked) = limiter.refused() {
        return HostFailure::OutOfMemory(format!(
            "the handler asked for {} MiB of linear memory; its cap is {} MiB ({err})",
            asked.div_ceil(1 << 20),
            limiter.limit_bytes() >> 20,
        ));
    }
    // The error's chain, `{:#}`, holds the guest's own frames (wasmtime's wasm
    // backtrace is a context of it); never `{:?}`, which adds the host's stack backtrace
    // whenever RUST_BACKTRACE is set, and which Step Functions must not receive.
    let chain = format!("{err:#}");
    let mut parts: Vec<&str> = Vec::with_capacity(3);
    if !stderr_tail.is_empty() {
        parts.push(stderr_tail);
    }
    let trap = err.downcast_ref::<Trap>().map(ToString::to_string);
    if let Some(trap) = &trap
        && *trap != chain
    {
        parts.push(trap);
    }
    parts.push(&chain);
    HostFailure::Trap(parts.join("\n\n"))
}

/// Hands the host's failure, if any, to the sink (which sends it only if the task has
/// no answer yet), and builds the report.
fn finish(
    sink: &Arc<dyn AnswerSink>,
    failure: Option<HostFailure>,
    started: Instant,
    usage: Usage,
) -> TaskReport {
    if let Some(failure) = &failure {
        sink.host_failure(failure);
    }
    TaskReport {
        error: failure,
        elapsed: started.elapsed(),
        cpu: usage.cpu,
        memory_peak_bytes: usage.memory_peak_bytes,
        log_lines_dropped: usage.log_lines_dropped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    #[test]
    fn one_timer_wakes_for_each_heartbeat_then_the_deadline() {
        let second = Duration::from_secs(1);
        let start = Instant::now();
        let mut wakes = TaskTimer::new(Some(second), start + second * 3 + second / 2);
        let first = wakes.next_wake();
        assert!(first >= start + second && first < start + second * 2);
        // Early: nothing due, the same wake again.
        assert_eq!(wakes.wake(first - Duration::from_millis(1)), Wake::Early);
        assert_eq!(wakes.next_wake(), first);
        // A late wake plans the next beat a whole interval on.
        let late = first + Duration::from_millis(300);
        assert_eq!(wakes.wake(late), Wake::Heartbeat);
        assert_eq!(wakes.next_wake(), late + second);
        assert_eq!(wakes.wake(late + second), Wake::Heartbeat);
        assert_eq!(wakes.next_wake(), late + second * 2);
        assert_eq!(wakes.wake(late + second * 2), Wake::Heartbeat);
        // The deadline comes before the next beat would.
        assert_eq!(wakes.next_wake(), start + second * 3 + second / 2);
        assert_eq!(wakes.wake(wakes.next_wake()), Wake::Deadline);
    }

    #[test]
    fn without_heartbeats_the_timer_is_the_deadline() {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut wakes = TaskTimer::new(None, deadline);
        assert_eq!(wakes.next_wake(), deadline);
        assert_eq!(wakes.wake(deadline), Wake::Deadline);
    }
}
