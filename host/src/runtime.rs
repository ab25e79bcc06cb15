//! `HostRuntime`: the serving host as one object — the consumer and its pools, the
//! hot-swap reloader, and, with `[host] admin_listen`, the metrics, status board and
//! admin server — started from loaded handlers and stopped in order.
//!
//! `sfn-wasm-host serve` is a thin CLI over it (signals in, exit code out); embedders
//! and tests drive the same object.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use sfn_wasm_engine::WasmEngine;
use tokio_util::sync::CancellationToken;

use crate::admin::{AdminError, AdminOptions, AdminServer, AdminState};
use crate::config::Config;
use crate::consumer::{ActivityConsumer, ConsumerError, ShutdownReport};
use crate::events::{Events, Observer};
use crate::load::Loaded;
use crate::metrics::Metrics;
use crate::reload::{ReloadError, Reloader};
use crate::sfn::{CallObserver, ObservedSfn, StepFunctions};
use crate::source::Fetcher;
use crate::status::StatusBoard;
use crate::traces::{ENDPOINT_ENV, TaskTraces, TracesError};

/// How many events a slow broadcast subscriber may fall behind by.
const EVENT_BUFFER: usize = 4096;

/// Why the host could not start.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The consumer could not be built.
    #[error(transparent)]
    Consumer(#[from] ConsumerError),
    /// A handler's folder cannot be watched.
    #[error(transparent)]
    Reload(#[from] ReloadError),
    /// The OTLP exporter cannot be set up.
    #[error("{}: `host.otel.endpoint` (or {ENDPOINT_ENV}): {source}", file.display())]
    Traces {
        /// The config file.
        file: std::path::PathBuf,
        /// What went wrong.
        source: TracesError,
    },
    /// The client for S3 and HTTPS handler sources cannot be set up.
    #[error("{}: `activity[*].handler`: cannot set up the HTTPS client for handler sources: {source}", file.display())]
    Sources {
        /// The config file.
        file: std::path::PathBuf,
        /// What rustls said.
        source: rustls::Error,
    },
    /// The admin server's address cannot be bound.
    #[error("{}: `host.admin_listen` (or --admin-listen): {source}; choose a free port, or remove the key", file.display())]
    Admin {
        /// The config file.
        file: std::path::PathBuf,
        /// What went wrong.
        source: AdminError,
    },
}

/// What the runtime is started with: what loading the config produced, and the Step
/// Functions client.
pub struct RuntimeParts {
    /// The config, engine, cache and handlers ([`crate::load::load`]).
    pub loaded: Loaded,
    /// The Step Functions client.
    pub sfn: Arc<dyn StepFunctions>,
}

/// A running host.
pub struct HostRuntime {
    consumer: ActivityConsumer,
    reloader: Option<Reloader>,
    admin: Option<(AdminServer, Arc<AdminState>)>,
    traces: Option<Arc<TaskTraces>>,
    events: Events,
    config: Config,
}

/// The task traces' exporter, when `[host.otel] endpoint` or `OTEL_EXPORTER_OTLP_ENDPOINT`
/// names a collector.
fn start_traces(config: &Config) -> Result<Option<Arc<TaskTraces>>, RuntimeError> {
    let otel = config.host.otel.as_ref();
    let endpoint = otel.map(|otel| otel.endpoint.clone()).or_else(|| {
        std::env::var(ENDPOINT_ENV)
            .ok()
            .filter(|url| !url.trim().is_empty())
    });
    let Some(endpoint) = endpoint else {
        return Ok(None);
    };
    let traces = TaskTraces::new(
        &endpoint,
        &otel.map(|otel| otel.headers.clone()).unwrap_or_default(),
        otel.and_then(|otel| otel.ca_file.as_deref()),
    )
    .map_err(|source| RuntimeError::Traces {
        file: config.file.clone(),
        source,
    })?;
    tracing::info!(otel = %endpoint, "exporting task traces over OTLP/HTTP");
    Ok(Some(Arc::new(traces)))
}

/// The admin server on `addr`, serving what `metrics` and `status` observe of the
/// consumer's pools.
async fn start_admin(
    config: &Config,
    consumer: &ActivityConsumer,
    engine: &Arc<WasmEngine>,
    addr: std::net::SocketAddr,
    metrics: Arc<Metrics>,
    status: Arc<StatusBoard>,
) -> Result<(AdminServer, Arc<AdminState>), RuntimeError> {
    for pool in consumer.pools() {
        if pool.task_source() == "callback" {
            metrics.add_callback(pool.arn(), pool.gauges().clone());
        } else {
            metrics.add_activity(pool.arn(), pool.gauges().clone());
        }
        status.watch_gauges(pool.arn(), pool.gauges().clone());
        status.watch_desired(pool.arn(), pool.desired_watch());
        status.watch_versions(pool.arn(), pool.versions().clone());
    }
    let state = Arc::new(AdminState {
        metrics,
        status,
        engine: engine.clone(),
        shutting_down: false.into(),
        guest_sockets: consumer.guest_sockets().clone(),
    });
    let options = AdminOptions {
        max_connections: config.host.admin.max_connections,
        status_token_sha256: config.host.admin.token.as_ref().map(|t| t.sha256()),
        ..AdminOptions::default()
    };
    let status_auth = options.status_token_sha256.is_some();
    let server = AdminServer::start_with(addr, state.clone(), options)
        .await
        .map_err(|source| RuntimeError::Admin {
            file: config.file.clone(),
            source,
        })?;
    tracing::info!(admin = %server.local_addr(), status_needs_token = status_auth, "admin server listening: /metrics /healthz /readyz /status");
    Ok((server, state))
}

/// The clients for remote handler sources: only S3 and HTTPS sources need them; files
/// are watched.
async fn start_fetcher(config: &Config) -> Result<Option<Arc<Fetcher>>, RuntimeError> {
    if !config.activities.iter().any(|a| a.handler.is_remote()) {
        return Ok(None);
    }
    let fetcher = Fetcher::new(&config.aws)
        .await
        .map_err(|source| RuntimeError::Sources {
            file: config.file.clone(),
            source,
        })?;
    Ok(Some(Arc::new(fetcher)))
}

impl HostRuntime {
    /// Starts everything: the admin server first (a taken port fails here, before any
    /// poll), then the consumer's workers and the reloader.
    ///
    /// Must be called inside the tokio runtime that will run everything (polls, answers,
    /// heartbeats and guests, which yield it at every epoch tick).
    ///
    /// # Errors
    /// When grants cannot be resolved, a handler's folder cannot be watched, or the admin
    /// address cannot be bound.
    pub async fn start(parts: RuntimeParts) -> Result<Self, RuntimeError> {
        let RuntimeParts {
            loaded:
                Loaded {
                    config,
                    engine,
                    cache,
                    activities,
                    secrets,
                },
            sfn,
        } = parts;
        // Metrics and the status board cost a little per event; only an admin server
        // reads them, so without one they are not kept.
        let observed = config.host.admin.listen.map(|addr| {
            let metrics = Arc::new(Metrics::new());
            let status = Arc::new(StatusBoard::new(
                config
                    .activities
                    .iter()
                    .map(|a| (&*a.name, a.max_concurrent_tasks)),
            ));
            (addr, metrics, status)
        });
        let mut observers: Vec<Arc<dyn Observer>> = Vec::new();
        let mut calls: Vec<Arc<dyn CallObserver>> = Vec::new();
        if let Some((_, metrics, status)) = &observed {
            observers.push(metrics.clone());
            observers.push(status.clone());
            calls.push(metrics.clone());
        }
        let traces = start_traces(&config)?;
        if let Some(traces) = &traces {
            observers.push(traces.clone());
            calls.push(traces.clone());
        }
        let events = Events::with_observers(EVENT_BUFFER, observers);
        // Without observers the workers get the client itself: nothing on the call path.
        let sfn: Arc<dyn StepFunctions> = if calls.is_empty() {
            sfn
        } else {
            Arc::new(ObservedSfn::new(sfn, calls))
        };
        let mut consumer = ActivityConsumer::new(
            &config,
            engine.clone(),
            activities,
            sfn,
            events.clone(),
            secrets,
        )?;
        let admin = match observed {
            Some((addr, metrics, status)) => {
                Some(start_admin(&config, &consumer, &engine, addr, metrics, status).await?)
            }
            None => None,
        };
        let fetcher = start_fetcher(&config).await?;
        let targets = consumer.take_reload_targets();
        let reloader = Reloader::start(targets, engine, cache, fetcher)?;
        consumer.start();
        Ok(Self {
            consumer,
            reloader: Some(reloader),
            admin,
            traces,
            events,
            config,
        })
    }

    /// The events of every activity, to subscribe to.
    pub fn events(&self) -> &Events {
        &self.events
    }

    /// Where the admin server listens, if there is one.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|(server, _)| server.local_addr())
    }

    /// SIGHUP: re-reads every activity's grants and reloads every handler.
    pub fn reload(&self) {
        self.consumer.refresh_grants();
        if let Some(reloader) = &self.reloader {
            reloader.reload_all();
        }
    }

    /// The token that aborts every running task when cancelled (a second signal).
    pub fn abort_token(&self) -> CancellationToken {
        self.consumer.abort_token()
    }

    /// Starts the shutdown at once, idempotently: `/readyz` turns 503, no new poll
    /// starts, running tasks see `cancelled()`, and no reload is started (one still
    /// compiling is left behind, never waited for).
    pub fn initiate_shutdown(&mut self) {
        if let Some((_, state)) = &self.admin {
            state.shutting_down.store(true, Ordering::SeqCst);
        }
        self.consumer.initiate_shutdown();
        if let Some(reloader) = self.reloader.take() {
            reloader.stop();
        }
    }

    /// Shuts down: [`initiate_shutdown`](Self::initiate_shutdown), then the consumer's
    /// grace, abort and final answers (see [`ActivityConsumer::shutdown`]); the admin
    /// server answers (`/readyz` 503) until the end.
    pub async fn shutdown(mut self) -> ShutdownReport {
        self.initiate_shutdown();
        let report = self
            .consumer
            .shutdown(self.config.host.shutdown_grace)
            .await;
        if let Some(traces) = self.traces.take() {
            // The exporter's flush blocks a thread for up to its timeout.
            let _ = tokio::task::spawn_blocking(move || traces.shutdown()).await;
        }
        if let Some((server, _)) = self.admin.take() {
            server.stop().await;
        }
        report
    }
}
