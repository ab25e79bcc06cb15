//! The seam between the engine and what the host lets a task's instance use.
//!
//! The engine builds every instance deny-by-default: no environment, no folders, no
//! sockets, every wasi:http request refused, no checkpoint store. A task's
//! [`TaskRequest`](crate::TaskRequest) carries the [`Capability`]s the host grants it;
//! before the instance starts, each one [`prepare`](Capability::prepare)s its part of
//! the [`InstanceBuilder`] (environment variables and preopened folders in the WASI
//! context, the hooks that decide and send outbound HTTP, the task's checkpoint store).
//! The engine never names a capability: adding one is a module that implements this
//! trait and one line where the host lists a task's capabilities. (Spin's factors, in
//! small: each capability prepares its own part of an instance through one seam.)

use std::sync::Arc;

use async_trait::async_trait;
use http_body_util::BodyExt as _;
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi_http::p2::bindings::http::types::ErrorCode;
use wasmtime_wasi_http::{RequestOptions, WasiBody, WasiHttpHooks};

use crate::budget::LineBudget;

/// Something the host lets one task's instance use: it adds its part to the instance
/// before the guest starts.
pub trait Capability: Send + Sync + 'static {
    /// Adds this capability to the instance `instance` is building, for the task it
    /// describes.
    ///
    /// # Errors
    /// Why the instance cannot have it (a granted folder removed since the host
    /// started, ...): the task is then answered `SfnWasmHost.Internal` with this
    /// message, which must name what to fix and hold no secret.
    fn prepare(&self, instance: &mut InstanceBuilder<'_>) -> Result<(), String>;

    /// What to call the capability in debug output: its type's name by default.
    fn name(&self) -> &'static str {
        std::any::type_name::<Self>()
    }
}

/// The capabilities one task's instance gets, in the order they prepare it (a later
/// one's outbound hooks or checkpoint store replaces an earlier one's). Clones share the
/// capabilities themselves.
#[derive(Clone, Default)]
pub struct Capabilities(Vec<Arc<dyn Capability>>);

impl Capabilities {
    /// No capability: the sandbox alone.
    pub fn none() -> Self {
        Self::default()
    }

    /// These, and `capability` after them.
    #[must_use]
    pub fn with(mut self, capability: Arc<dyn Capability>) -> Self {
        self.0.push(capability);
        self
    }

    /// Has each capability prepare `instance`, in order.
    pub(crate) fn prepare(&self, instance: &mut InstanceBuilder<'_>) -> Result<(), String> {
        self.0
            .iter()
            .try_for_each(|capability| capability.prepare(instance))
    }
}

impl std::fmt::Debug for Capabilities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|capability| capability.name()))
            .finish()
    }
}

/// What a task's guest may reach over wasi:http, and how: the hooks wasmtime-wasi-http
/// calls for each request (`send_request` decides and sends), and the names of the
/// errors they make.
pub trait OutboundHooks: WasiHttpHooks + Send + 'static {
    /// The wasi:http `error-code` of `err`, an error the guest read from a body stream
    /// (`http-error-code`); `None` when it has none. By default wasmtime-wasi-http's own
    /// codes; hooks whose bodies fail with errors of their own name them here.
    fn error_code(&self, err: &wasmtime::Error) -> Option<ErrorCode> {
        err.downcast_ref::<ErrorCode>().cloned()
    }
}

/// Where a task's checkpoints are kept: behind the toolkit's `checkpoint` and
/// `last-checkpoint` (world 0.2).
#[async_trait]
pub trait Checkpoints: Send + Sync + 'static {
    /// Saves `data` (at most [`MAX_CHECKPOINT_BYTES`](crate::MAX_CHECKPOINT_BYTES)) as
    /// the task's checkpoint, durably, before it returns.
    ///
    /// # Errors
    /// Why it was not saved, for the guest (`unavailable`); the previous checkpoint
    /// stands.
    async fn save(&self, data: &str) -> Result<(), String>;
    /// The last checkpoint saved for the task's key, if any.
    ///
    /// # Errors
    /// Why it could not be read, for the host's log (the guest sees none).
    async fn load(&self) -> Result<Option<String>, String>;
}

/// The task an instance is being built for, as its capabilities see it.
#[derive(Debug, Clone, Copy)]
pub struct TaskInfo<'a> {
    /// The activity the task came from.
    pub activity_arn: &'a Arc<str>,
    /// The task's short id, for logs (never its token).
    pub task_id: &'a Arc<str>,
    /// The task input (JSON, checked).
    pub input: &'a str,
}

/// One task's instance, before it starts: what capabilities add to.
pub struct InstanceBuilder<'a> {
    task: TaskInfo<'a>,
    wasi: &'a mut WasiCtxBuilder,
    lines: &'a Arc<LineBudget>,
    pub(crate) outbound: Option<Box<dyn OutboundHooks>>,
    pub(crate) checkpoints: Option<Arc<dyn Checkpoints>>,
}

impl<'a> InstanceBuilder<'a> {
    /// The builder of the instance for `task`, over `wasi` (the engine's, with the
    /// task's output and sockets set), whose host log lines count against `lines`. The
    /// engine makes one per task; public for benchmarks and tests that prepare a
    /// capability without running a guest.
    pub fn new(
        task: TaskInfo<'a>,
        wasi: &'a mut WasiCtxBuilder,
        lines: &'a Arc<LineBudget>,
    ) -> Self {
        Self {
            task,
            wasi,
            lines,
            outbound: None,
            checkpoints: None,
        }
    }

    /// The task the instance is for.
    pub fn task(&self) -> TaskInfo<'a> {
        self.task
    }

    /// The task's WASI context: add environment variables and preopened folders here.
    /// Its output, its sockets (denied) and its random reads are the engine's, set after
    /// every capability has prepared the instance.
    pub fn wasi(&mut self) -> &mut WasiCtxBuilder {
        self.wasi
    }

    /// The task's log-line budget: a line the host logs about the task (an outbound
    /// request refused, ...) takes from it as the guest's own lines do.
    pub fn log_lines(&self) -> &Arc<LineBudget> {
        self.lines
    }

    /// Lets the guest's wasi:http requests through `hooks` (without, every request is
    /// refused `HTTP-request-denied`). A second call replaces the first.
    pub fn set_outbound(&mut self, hooks: impl OutboundHooks) {
        self.outbound = Some(Box::new(hooks));
    }

    /// Keeps the task's checkpoints in `store` (without, `checkpoint` is
    /// `unavailable` and `last-checkpoint` has none).
    pub fn set_checkpoints(&mut self, store: Arc<dyn Checkpoints>) {
        self.checkpoints = Some(store);
    }
}

/// The outbound hooks of a task no capability granted HTTP: every request is refused
/// `HTTP-request-denied`, its body read to its end first (so that the guest's writes
/// do not fail with a closed stream before it hears why).
pub(crate) struct NoOutbound;

impl WasiHttpHooks for NoOutbound {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        _options: Option<RequestOptions>,
        _done: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> Box<
        dyn Future<
                Output = wasmtime_wasi_http::Result<(
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
                )>,
            > + Send,
    > {
        Box::new(async move {
            let mut body = request.into_body();
            while let Some(Ok(_)) = body.frame().await {}
            Err(wasmtime_wasi_http::Error::HttpRequestDenied)
        })
    }
}

impl OutboundHooks for NoOutbound {}
