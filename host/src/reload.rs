//! Hot swap: a new handler file replaces the running version without a restart, and
//! without dropping or double-running a task.
//!
//! Triggers are a change to the file (watched with `notify`, debounced), `SIGHUP`
//! ([`Reloader::reload_all`]), or nothing for activities with `watch = false` except
//! SIGHUP. A new file is compiled on a blocking thread, off the async runtime's workers,
//! and must build an `InstancePre` for the `handler` world before it is used. Then the
//! activity's [`HandlerSlot`] switches atomically: tasks already running finish on the
//! version they started with, every task after uses the new one. A file that fails is
//! reported (`handler:rejected`) and the previous version keeps serving.
//!
//! Files are often written in steps (`cp`, editors). Events are debounced for
//! [`DEBOUNCE`], and a file that changed again while it was being compiled is not
//! rejected but read again; an atomic rename, the usual deploy, is one step.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use notify::{RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::engine::{ArtifactCache, Digest, Handler, LoadError, LoadedHandler, WasmEngine};
use crate::events::{Emitter, EventKind};

/// How long a handler file must stay unchanged before it is read.
pub const DEBOUNCE: Duration = Duration::from_millis(100);

/// The handler version an activity's new tasks use. Cheap to clone; all clones share it.
#[derive(Clone)]
pub struct HandlerSlot {
    sender: Arc<watch::Sender<Handler>>,
}

impl HandlerSlot {
    /// A slot serving `handler`.
    pub fn new(handler: Handler) -> Self {
        Self {
            sender: Arc::new(watch::channel(handler).0),
        }
    }

    /// The current version.
    pub fn current(&self) -> Handler {
        self.sender.borrow().clone()
    }

    /// Makes `handler` the current version; returns the one it replaces.
    pub fn swap(&self, handler: Handler) -> Handler {
        self.sender.send_replace(handler)
    }
}

/// One activity's handler, as the reloader sees it.
pub struct ReloadTarget {
    /// The handler file.
    pub path: PathBuf,
    /// Whether changes to the file trigger a reload (SIGHUP always does).
    pub watch: bool,
    /// Where the new version goes.
    pub slot: HandlerSlot,
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
    /// Starts watching. `cache` makes swaps back to a known version instant.
    ///
    /// # Errors
    /// When a handler's folder cannot be watched.
    pub fn start(
        targets: Vec<ReloadTarget>,
        engine: Arc<WasmEngine>,
        cache: Option<ArtifactCache>,
    ) -> Result<Self, ReloadError> {
        let mut routes: Vec<(PathBuf, mpsc::UnboundedSender<()>)> = Vec::new();
        let mut receivers = Vec::with_capacity(targets.len());
        for target in &targets {
            if target.watch {
                let (send, receive) = mpsc::unbounded_channel();
                routes.push((target.path.clone(), send));
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
            let task = TargetTask {
                target,
                engine: engine.clone(),
                cache: cache.clone(),
                last_rejected: None,
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
    /// Reported once, not on every event for the same bad file.
    last_rejected: Option<Digest>,
}

impl TargetTask {
    async fn run(
        mut self,
        mut files: Option<mpsc::UnboundedReceiver<()>>,
        mut hup: watch::Receiver<u64>,
        stop: CancellationToken,
    ) {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                Ok(()) = hup.changed() => self.last_rejected = None,
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
            self.reload().await;
        }
    }

    /// Reads the file, and swaps it in if it is new and valid.
    async fn reload(&mut self) {
        let path = self.target.path.clone();
        loop {
            let before = stamp(&path);
            let bytes = match tokio::fs::read(&path).await {
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
            let digest = Digest::of(&bytes);
            let current = self.target.slot.current();
            if digest == *current.digest() || self.last_rejected.as_ref() == Some(&digest) {
                tracing::debug!(handler = %path.display(), %digest, "the handler file is unchanged");
                return;
            }
            let (engine, cache, task_path, task_digest) = (
                self.engine.clone(),
                self.cache.clone(),
                path.clone(),
                digest.clone(),
            );
            let prepared = tokio::task::spawn_blocking(move || {
                Handler::prepare(&engine, &task_path, &bytes, task_digest, cache.as_deref())
            })
            .await;
            match prepared {
                Ok(Ok(loaded)) => return self.swap(loaded),
                Ok(Err(err)) if stamp(&path) != before => {
                    // Still being written: read it again.
                    tracing::debug!(handler = %path.display(), error = %err, "the handler file changed while loading; reading it again");
                }
                Ok(Err(err)) => return self.reject_load(digest, &err),
                Err(join) => {
                    return self.reject(digest.hex().clone(), format!("loading panicked: {join}"));
                }
            }
        }
    }

    fn swap(&mut self, loaded: LoadedHandler) {
        let new_digest = loaded.handler.digest().hex().clone();
        let old = self.target.slot.swap(loaded.handler);
        self.last_rejected = None;
        self.target.emitter.emit(EventKind::HandlerSwapped {
            old_digest: old.digest().hex().clone(),
            new_digest,
            compile_ms: u64::try_from(loaded.elapsed.as_millis()).unwrap_or(u64::MAX),
            cache: loaded.cache.name(),
        });
    }

    fn reject_load(&mut self, digest: Digest, err: &LoadError) {
        self.last_rejected = Some(digest.clone());
        self.reject(digest.hex().clone(), err.to_string());
    }

    fn reject(&self, digest: Arc<str>, reason: String) {
        self.target
            .emitter
            .emit(EventKind::HandlerRejected { digest, reason });
    }
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
