//! Hot swap: a new handler file replaces the running version without a restart, and
//! without dropping or double-running a task.
//!
//! Triggers are a change to the file (watched with `notify`, debounced), `SIGHUP`
//! ([`Reloader::reload_all`]), or nothing for activities with `watch = false` except
//! SIGHUP. A new file is compiled on a blocking thread, off the async runtime's workers,
//! and must build an `InstancePre` for the `handler` world before it is used. Then the
//! activity's [`VersionChooser`] takes it: tasks already running finish on the version
//! they started with, new tasks get the new one (all, or a canary's share). A file that fails is
//! reported (`handler:rejected`) and the previous version keeps serving.
//!
//! S3 and HTTPS sources are polled every `source_poll_seconds` instead (see
//! [`crate::source`]). Every producer hands its prepared version to the activity's
//! [`VersionChooser`], which swaps it in or makes it a canary.
//!
//! Files are often written in steps (`cp`, editors). Events are debounced for
//! [`DEBOUNCE`], and a file that changed again while it was being compiled is not
//! rejected but read again; an atomic rename, the usual deploy, is one step.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use notify::{RecursiveMode, Watcher};
use sfn_wasm_engine::{ArtifactCache, Digest, WasmEngine};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::events::{Emitter, HandlerEvent};
use crate::load::{self, PrepareError};
use crate::rollout::VersionChooser;
use crate::source::{Fetch, Fetcher, HandlerSource};

/// How long a handler file must stay unchanged before it is read.
pub const DEBOUNCE: Duration = Duration::from_millis(100);

/// One activity's handler, as the reloader sees it.
pub struct ReloadTarget {
    /// Where the handler comes from.
    pub source: HandlerSource,
    /// Whether changes trigger a reload: the file's, or a remote source's seen by polling
    /// it (SIGHUP always does).
    pub watch: bool,
    /// How often an S3 or HTTPS source is asked whether it changed.
    pub poll: Duration,
    /// The only digest accepted, if pinned.
    pub pin: Option<String>,
    /// The largest module read from a remote source.
    pub max_bytes: u64,
    /// Where new versions go.
    pub versions: Arc<VersionChooser>,
    /// The ETag / Last-Modified of the remote version read at start, so that the first
    /// poll does not read it again.
    pub tag: Option<String>,
    /// The activity's emitter, for `handler:*` events.
    pub emitter: Emitter,
}

/// Why the reloader could not start.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The OS file-watching facility (inotify) could not be set up.
    #[error("cannot start watching handler files: {0}")]
    Watcher(notify::Error),
    /// The file watcher could not be set up.
    #[error("cannot watch {}: {source}", path.display())]
    Watch {
        /// The folder that could not be watched.
        path: PathBuf,
        /// What notify said.
        source: notify::Error,
    },
}

/// Watches handler files and swaps new versions in. Stops when dropped or
/// [`stopped`](Reloader::stop).
pub struct Reloader {
    tasks: JoinSet<()>,
    hup: watch::Sender<u64>,
    stop: CancellationToken,
    _watcher: Option<notify::RecommendedWatcher>,
}

impl Reloader {
    /// Starts watching files and polling remote sources (through `fetcher`, which
    /// there must be when any source is remote). `cache` makes swaps back to a known
    /// version instant.
    ///
    /// # Errors
    /// When a handler's folder cannot be watched.
    pub fn start(
        targets: Vec<ReloadTarget>,
        engine: Arc<WasmEngine>,
        cache: Option<ArtifactCache>,
        fetcher: Option<Arc<Fetcher>>,
    ) -> Result<Self, ReloadError> {
        let mut routes: Vec<(PathBuf, mpsc::UnboundedSender<()>)> = Vec::new();
        let mut receivers = Vec::with_capacity(targets.len());
        for target in &targets {
            if let (true, Some(path)) = (target.watch, target.source.file()) {
                let (send, receive) = mpsc::unbounded_channel();
                routes.push((path.to_owned(), send));
                receivers.push(Some(receive));
            } else {
                receivers.push(None);
            }
        }
        let watcher = if routes.is_empty() {
            None
        } else {
            Some(watch_files(routes)?)
        };

        let (hup, _) = watch::channel(0);
        let stop = CancellationToken::new();
        let cache = cache.map(Arc::new);
        let mut tasks = JoinSet::new();
        for (target, files) in targets.into_iter().zip(receivers) {
            let last_tag = target.tag.clone();
            let task = TargetTask {
                target,
                engine: engine.clone(),
                cache: cache.clone(),
                fetcher: fetcher.clone(),
                last_rejected: None,
                last_tag,
                last_error: None,
            };
            tasks.spawn(task.run(files, hup.subscribe(), stop.clone()));
        }
        Ok(Self {
            tasks,
            hup,
            stop,
            _watcher: watcher,
        })
    }

    /// Reloads every handler now (SIGHUP), whether its file is watched or not.
    pub fn reload_all(&self) {
        self.hup.send_modify(|generation| *generation += 1);
    }

    /// Stops watching at once. A reload in progress is abandoned, not waited for: a
    /// compile can take seconds and must not delay a shutdown (the blocking thread
    /// finishes on its own, and its result is dropped).
    pub fn stop(mut self) {
        self.stop.cancel();
        self.tasks.abort_all();
        self.tasks.detach_all();
    }
}

/// Watches the folder of each path (so that atomic renames are seen) and routes events
/// for a path to its sender.
fn watch_files(
    routes: Vec<(PathBuf, mpsc::UnboundedSender<()>)>,
) -> Result<notify::RecommendedWatcher, ReloadError> {
    let folders: Vec<PathBuf> = routes
        .iter()
        .map(|(path, _)| path.parent().unwrap_or(Path::new("/")).to_owned())
        .collect();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if event.kind.is_access() {
            return;
        }
        for (path, send) in &routes {
            if event.paths.iter().any(|changed| changed == path) {
                let _ = send.send(());
            }
        }
    })
    .map_err(ReloadError::Watcher)?;
    for folder in folders {
        watcher
            .watch(&folder, RecursiveMode::NonRecursive)
            .map_err(|source| ReloadError::Watch {
                path: folder.clone(),
                source,
            })?;
    }
    Ok(watcher)
}

struct TargetTask {
    target: ReloadTarget,
    engine: Arc<WasmEngine>,
    cache: Option<Arc<ArtifactCache>>,
    fetcher: Option<Arc<Fetcher>>,
    /// Reported once, not on every event for the same bad module.
    last_rejected: Option<Digest>,
    /// The remote source's ETag / Last-Modified last read.
    last_tag: Option<String>,
    /// The last fetch error, reported once until the source answers again.
    last_error: Option<String>,
}

impl TargetTask {
    async fn run(
        mut self,
        mut files: Option<mpsc::UnboundedReceiver<()>>,
        mut hup: watch::Receiver<u64>,
        stop: CancellationToken,
    ) {
        // A remote source is asked every `poll`; its first check is one period after
        // start (start-up has just read it).
        let remote = self.target.source.is_remote();
        let mut ticks = tokio::time::interval_at(
            tokio::time::Instant::now() + self.target.poll,
            self.target.poll,
        );
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                Ok(()) = hup.changed() => {
                    // SIGHUP reads everything again, and may retry what was refused.
                    self.last_rejected = None;
                    self.last_tag = None;
                    self.last_error = None;
                    self.target.versions.forget_rolled_back();
                }
                _ = ticks.tick(), if remote && self.target.watch => {}
                Some(()) = recv(&mut files) => {
                    // Wait until the file has been quiet for DEBOUNCE.
                    loop {
                        tokio::select! {
                            () = stop.cancelled() => return,
                            Some(()) = recv(&mut files) => {}
                            () = tokio::time::sleep(DEBOUNCE) => break,
                        }
                    }
                }
            }
            match self.target.source.file().map(Path::to_path_buf) {
                Some(path) => self.reload_file(&path).await,
                None => self.reload_remote().await,
            }
        }
    }

    /// Reads the file, and offers it if it is new and valid.
    async fn reload_file(&mut self, path: &Path) {
        loop {
            let before = stamp(path);
            let bytes = match tokio::fs::read(path).await {
                Ok(bytes) => bytes,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                    // Mid-rename or deleted: keep serving; the next write triggers again.
                    tracing::info!(handler = %path.display(), "the handler file is gone; the current version keeps serving");
                    return;
                }
                Err(err) => {
                    return self.reject(
                        Arc::from(""),
                        format!("cannot read {}: {err}", path.display()),
                    );
                }
            };
            if bytes.is_empty() {
                // Truncated by a writer that has not written yet; its write triggers again.
                tracing::debug!(handler = %path.display(), "the handler file is empty; waiting for its contents");
                return;
            }
            match self.prepare(bytes).await {
                Prepared::Done => return,
                Prepared::Failed(digest, reason) if stamp(path) == before => {
                    return self.reject_load(digest, reason);
                }
                Prepared::Failed(_, err) => {
                    // Still being written: read it again.
                    tracing::debug!(handler = %path.display(), error = %err, "the handler file changed while loading; reading it again");
                }
            }
        }
    }

    /// Asks the remote source whether it changed; reads, checks and offers a new version.
    async fn reload_remote(&mut self) {
        let Some(fetcher) = self.fetcher.clone() else {
            return;
        };
        let source = &self.target.source;
        let fetched = fetcher
            .fetch(source, self.last_tag.as_deref(), self.target.max_bytes)
            .await;
        let fetched = match fetched {
            Ok(Fetch::Unchanged) => {
                self.last_error = None;
                return;
            }
            Ok(Fetch::Fetched(fetched)) => fetched,
            Err(err) => {
                let reason = format!("{err}; the current version keeps serving");
                if self.last_error.as_ref() != Some(&reason) {
                    self.last_error = Some(reason.clone());
                    self.reject(Arc::from(""), reason);
                }
                return;
            }
        };
        self.last_error = None;
        // Whatever becomes of these bytes, they are not read again until they change.
        self.last_tag = fetched.tag;
        if let Prepared::Failed(digest, reason) = self.prepare(fetched.bytes).await {
            self.reject_load(digest, reason);
        }
    }

    /// Checks the pin, skips a known version, prepares and offers a new one.
    async fn prepare(&mut self, bytes: Vec<u8>) -> Prepared {
        let digest = Digest::of(&bytes);
        if self.target.versions.knows(&digest) || self.last_rejected.as_ref() == Some(&digest) {
            tracing::debug!(handler = %self.target.source, %digest, "the handler is unchanged");
            return Prepared::Done;
        }
        let (engine, cache, name, task_digest, pin) = (
            self.engine.clone(),
            self.cache.clone(),
            PathBuf::from(self.target.source.to_string()),
            digest.clone(),
            self.target.pin.clone(),
        );
        let prepared = tokio::task::spawn_blocking(move || {
            load::prepare(
                &engine,
                &name,
                &bytes,
                task_digest,
                pin.as_deref(),
                cache.as_deref(),
            )
        })
        .await;
        match prepared {
            Ok(Ok(loaded)) => {
                self.last_rejected = None;
                self.target
                    .versions
                    .offer(loaded.handler, loaded.elapsed, loaded.cache.name());
                Prepared::Done
            }
            Ok(Err(PrepareError::Pin(reason))) => {
                Prepared::Failed(digest, format!("{}: {reason}", self.target.source))
            }
            Ok(Err(PrepareError::Load(err))) => Prepared::Failed(digest, err.to_string()),
            Err(join) => {
                self.reject(digest.hex().clone(), format!("loading panicked: {join}"));
                Prepared::Done
            }
        }
    }

    /// Rejects a module for good (until it changes, or SIGHUP).
    fn reject_load(&mut self, digest: Digest, reason: String) {
        self.last_rejected = Some(digest.clone());
        self.reject(digest.hex().clone(), reason);
    }

    fn reject(&self, digest: Arc<str>, reason: String) {
        self.target
            .emitter
            .emit(HandlerEvent::Rejected { digest, reason });
    }
}

/// What preparing a module came to.
enum Prepared {
    /// Offered, known already, or rejected and reported.
    Done,
    /// It did not load, or is not the pinned module; the caller decides whether that is
    /// final (a file still being written is read again).
    Failed(Digest, String),
}

/// Receives from an optional channel; never completes without one.
async fn recv(files: &mut Option<mpsc::UnboundedReceiver<()>>) -> Option<()> {
    match files {
        Some(files) => files.recv().await,
        None => std::future::pending().await,
    }
}

/// What changes when a file is written to.
fn stamp(path: &Path) -> Option<(u64, SystemTime)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.len(), meta.modified().ok()?))
}
