//! A handler module, compiled and linked once, ready to instantiate per task.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use wasmtime::component::Component;

use crate::WasmEngine;
use crate::bindings::{v0_1, v0_2};
use crate::cache::ArtifactCache;
use crate::digest::Digest;
use crate::task::{HandlerPre, TaskReport, TaskRequest};
use crate::toolkit::AnswerSink;

/// Why a handler could not be loaded. Each names the file and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read handler {}: {source}", path.display())]
    Read {
        /// The handler file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is not a WebAssembly component.
    #[error("{} is not a WebAssembly component: {reason}", path.display())]
    NotComponent {
        /// The handler file.
        path: PathBuf,
        /// What it is instead, and how to make a component.
        reason: String,
    },
    /// The component does not compile.
    #[error("{} is not a valid WebAssembly component: {reason}", path.display())]
    Invalid {
        /// The handler file.
        path: PathBuf,
        /// The compiler's message.
        reason: String,
    },
    /// The component does not implement a version of the `sfn:activity/handler` world
    /// the host serves (0.1.0, 0.2.0).
    #[error(
        "{} does not implement the sfn:activity/handler world (0.1.0 or 0.2.0): {reason}. \
         Build it against wit/handler.wit (for Rust, with the sfn-wasm-guest crate)",
        path.display()
    )]
    WrongWorld {
        /// The handler file.
        path: PathBuf,
        /// What is missing or mismatched.
        reason: String,
    },
    /// The component has more linear memories than the host gives each task.
    #[error(
        "{} has {memories} linear memories per instance, but with this many tasks at once \
         the host holds {allowed} per task: lower `max_concurrent_tasks` (or `workers`), \
         or run more hosts",
        path.display()
    )]
    TooManyMemories {
        /// The handler file.
        path: PathBuf,
        /// How many the component's instances have.
        memories: u32,
        /// How many each task may have ([`WasmEngine::memories_per_task`]).
        allowed: u32,
    },
    /// A precompiled artifact could not be loaded.
    #[error("cannot load precompiled handler {}: {reason}", path.display())]
    Precompiled {
        /// The artifact.
        path: PathBuf,
        /// wasmtime's message.
        reason: String,
    },
}

const WASM_MAGIC: &[u8; 4] = b"\0asm";
const CORE_MODULE_VERSION: [u8; 4] = [1, 0, 0, 0];

/// Where a loaded handler's machine code came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheStatus {
    /// No cache is configured; the module was compiled.
    Disabled,
    /// Loaded from a cache entry, without compiling.
    Hit,
    /// Compiled, and stored in the cache.
    Miss,
    /// The cache entry was bad (corrupt, or from an incompatible build); it was
    /// replaced by a fresh compile. The text says what was wrong.
    Rebuilt(String),
}

impl CacheStatus {
    /// `disabled`, `hit`, `miss` or `rebuilt`, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            CacheStatus::Disabled => "disabled",
            CacheStatus::Hit => "hit",
            CacheStatus::Miss => "miss",
            CacheStatus::Rebuilt(_) => "rebuilt",
        }
    }
}

/// A handler read from a file, with how it was made ready.
#[derive(Clone)]
pub struct LoadedHandler {
    /// The handler.
    pub handler: Handler,
    /// Compiled or from the cache.
    pub cache: CacheStatus,
    /// Reading, checking and compiling or deserializing, together.
    pub elapsed: Duration,
}

/// The version of the `sfn:activity` world a handler was built against. The host serves
/// every one of them: a handler built for an older world keeps running on newer hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WorldVersion {
    /// `sfn:activity@0.1.0`: `success`, `failure`, `heartbeat`, `cancelled`.
    V0_1,
    /// `sfn:activity@0.2.0`: 0.1.0 plus `checkpoint` and `last-checkpoint`.
    V0_2,
}

impl WorldVersion {
    /// The version as WIT writes it: `0.1.0`, `0.2.0`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V0_1 => "0.1.0",
            Self::V0_2 => "0.2.0",
        }
    }

    /// The version a component was built against, from the `sfn:activity` interfaces it
    /// imports; a component that imports none of them (it cannot answer by itself) is
    /// taken as the current world's.
    fn of(component: &Component, engine: &wasmtime::Engine) -> Self {
        let imports_v0_1 = component
            .component_type()
            .imports(engine)
            .any(|(name, _)| name.starts_with("sfn:activity/") && name.ends_with("@0.1.0"));
        if imports_v0_1 { Self::V0_1 } else { Self::V0_2 }
    }
}

impl fmt::Display for WorldVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A handler version: its `InstancePre` and the digest that names it. Cheap to clone.
#[derive(Clone)]
pub struct Handler {
    pre: HandlerPre,
    digest: Digest,
}

impl Handler {
    /// Reads and compiles the handler at `path`.
    ///
    /// # Errors
    /// [`LoadError`] naming `path`: unreadable, not a component, invalid, or another world.
    pub fn load_file(engine: &WasmEngine, path: &Path) -> Result<Self, LoadError> {
        Self::load(engine, path, None).map(|loaded| loaded.handler)
    }

    /// Reads the handler at `path` and makes it ready, from `cache` when it holds a
    /// verified artifact for these bytes, else by compiling (and filling the cache).
    ///
    /// # Errors
    /// As [`Handler::load_file`]. Cache problems are not errors: a bad entry is deleted
    /// and rebuilt ([`CacheStatus::Rebuilt`]), a failed write is logged.
    pub fn load(
        engine: &WasmEngine,
        path: &Path,
        cache: Option<&ArtifactCache>,
    ) -> Result<LoadedHandler, LoadError> {
        let started = Instant::now();
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
            path: path.to_owned(),
            source,
        })?;
        let digest = Digest::of(&bytes);
        let mut loaded = Self::prepare(engine, path, &bytes, digest, cache)?;
        loaded.elapsed = started.elapsed();
        Ok(loaded)
    }

    /// [`Handler::load`] for bytes already read, whose digest is `digest`.
    ///
    /// # Errors
    /// As [`Handler::load`].
    pub fn prepare(
        engine: &WasmEngine,
        path: &Path,
        bytes: &[u8],
        digest: Digest,
        cache: Option<&ArtifactCache>,
    ) -> Result<LoadedHandler, LoadError> {
        let started = Instant::now();
        check_is_component(path, bytes)?;
        let loaded = |handler, cache| {
            Ok(LoadedHandler {
                handler,
                cache,
                elapsed: started.elapsed(),
            })
        };
        let Some(cache) = cache else {
            announce_compile(path, bytes, false);
            let component = Component::new(engine.wasmtime(), bytes).map_err(invalid(path))?;
            return loaded(
                Self::link(engine, path, component, digest)?,
                CacheStatus::Disabled,
            );
        };
        let status = match cache.get(&digest) {
            Ok(None) => CacheStatus::Miss,
            // SAFETY: `get` only returns the payload of an entry whose checksum matches,
            // in this host's private cache folder: an artifact this host wrote.
            Ok(Some(artifact)) => {
                match unsafe { Self::load_precompiled(engine, path, &artifact, digest.clone()) } {
                    Ok(handler) => return loaded(handler, CacheStatus::Hit),
                    Err(LoadError::Precompiled { reason, .. }) => CacheStatus::Rebuilt(reason),
                    Err(other) => return Err(other),
                }
            }
            Err(err) => CacheStatus::Rebuilt(err.to_string()),
        };
        if let CacheStatus::Rebuilt(reason) = &status {
            tracing::warn!(handler = %path.display(), %reason, "ignoring a bad cache entry; rebuilding it");
            cache.remove(&digest);
        }
        announce_compile(path, bytes, true);
        let artifact = Self::precompile(engine, path, bytes)?;
        if let Err(err) = cache.put(&digest, &artifact) {
            tracing::warn!(cache = %cache.dir().display(), error = %err, "cannot write to the handler cache");
        }
        // SAFETY: the artifact was produced just above by this engine.
        let handler = unsafe { Self::load_precompiled(engine, path, &artifact, digest) }?;
        loaded(handler, status)
    }

    /// Compiles a handler from its `.wasm` bytes; `path` names it in errors and logs.
    ///
    /// # Errors
    /// As [`Handler::load_file`], except for reading.
    pub fn load_bytes(engine: &WasmEngine, path: &Path, bytes: &[u8]) -> Result<Self, LoadError> {
        Self::prepare(engine, path, bytes, Digest::of(bytes), None).map(|loaded| loaded.handler)
    }

    /// Loads a handler from an artifact written by [`Handler::precompile`] with an engine
    /// of the same configuration; `digest` is that of the original `.wasm`.
    ///
    /// # Safety
    /// wasmtime trusts the artifact's machine code: pass only bytes this host wrote with
    /// [`Handler::precompile`], never a file someone else could have changed.
    ///
    /// # Errors
    /// When the artifact was made by another engine configuration or wasmtime version, or
    /// does not implement the world.
    pub unsafe fn load_precompiled(
        engine: &WasmEngine,
        path: &Path,
        artifact: &[u8],
        digest: Digest,
    ) -> Result<Self, LoadError> {
        // SAFETY: the caller promises the artifact was written by `precompile`.
        let component =
            unsafe { Component::deserialize(engine.wasmtime(), artifact) }.map_err(|err| {
                LoadError::Precompiled {
                    path: path.to_owned(),
                    reason: format!("{err:#}"),
                }
            })?;
        Self::link(engine, path, component, digest)
    }

    /// Compiles `bytes` into an artifact that [`Handler::load_precompiled`] loads without
    /// compiling, with an engine of the same configuration.
    ///
    /// # Errors
    /// As [`Handler::load_bytes`].
    pub fn precompile(
        engine: &WasmEngine,
        path: &Path,
        bytes: &[u8],
    ) -> Result<Vec<u8>, LoadError> {
        check_is_component(path, bytes)?;
        engine
            .wasmtime()
            .precompile_component(bytes)
            .map_err(invalid(path))
    }

    fn link(
        engine: &WasmEngine,
        path: &Path,
        component: Component,
        digest: Digest,
    ) -> Result<Self, LoadError> {
        let wrong_world = |err: wasmtime::Error| LoadError::WrongWorld {
            path: path.to_owned(),
            reason: format!("{err:#}"),
        };
        // Checked here rather than left to the pool, which would refuse tasks one at a
        // time (`SfnWasmHost.Capacity`) once the memory slots ran out. A component that
        // instantiates modules dynamically has no static count; the pool's per-component
        // cap then decides.
        if let Some(required) = component.resources_required() {
            let allowed = engine.memories_per_task();
            if required.num_memories > allowed {
                return Err(LoadError::TooManyMemories {
                    path: path.to_owned(),
                    memories: required.num_memories,
                    allowed,
                });
            }
        }
        let imports_http = component
            .component_type()
            .imports(engine.wasmtime())
            .any(|(name, _)| name.starts_with("wasi:http/"));
        let linker = if imports_http {
            &engine.http_linker
        } else {
            &engine.linker
        };
        let pre = linker.instantiate_pre(&component).map_err(wrong_world)?;
        let pre = match WorldVersion::of(&component, engine.wasmtime()) {
            WorldVersion::V0_1 => {
                HandlerPre::V0_1(v0_1::HandlerPre::new(pre).map_err(wrong_world)?)
            }
            WorldVersion::V0_2 => {
                HandlerPre::V0_2(v0_2::HandlerPre::new(pre).map_err(wrong_world)?)
            }
        };
        Ok(Self { pre, digest })
    }

    /// The digest of the `.wasm` this handler was compiled from.
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// The world version the handler was built against.
    pub fn world(&self) -> WorldVersion {
        match self.pre {
            HandlerPre::V0_1(_) => WorldVersion::V0_1,
            HandlerPre::V0_2(_) => WorldVersion::V0_2,
        }
    }

    /// Runs one task in a fresh instance and makes sure it gets an answer: the guest's,
    /// through the toolkit, or else the host's failure, both handed to `sink`. Returns
    /// when the guest has stopped; the answer may still be on its way.
    ///
    /// Never fails and never panics because of the guest or the input: every way a guest
    /// can go wrong ends in the report.
    pub async fn run(
        &self,
        engine: &WasmEngine,
        request: TaskRequest,
        sink: impl AnswerSink,
    ) -> TaskReport {
        engine.run_task(self.pre.clone(), request, sink).await
    }
}

/// Maps a compile error for the handler at `path`.
fn invalid(path: &Path) -> impl FnOnce(wasmtime::Error) -> LoadError + '_ {
    move |err| LoadError::Invalid {
        path: path.to_owned(),
        reason: format!("{err:#}"),
    }
}

fn check_is_component(path: &Path, bytes: &[u8]) -> Result<(), LoadError> {
    let not_component = |reason: &str| LoadError::NotComponent {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    if bytes.len() < 8 || &bytes[..4] != WASM_MAGIC {
        return Err(not_component(
            "the file does not start with the WebAssembly magic number; \
             build the handler with `cargo build --release --target wasm32-wasip2`",
        ));
    }
    if bytes[4..8] == CORE_MODULE_VERSION {
        return Err(not_component(
            "it is a core WebAssembly module; build for `--target wasm32-wasip2`, \
             or wrap it with `wasm-tools component new`",
        ));
    }
    Ok(())
}

/// Components this large take seconds to compile (a JavaScript or Python handler, with
/// its interpreter, ~10 MiB: ~30 s on 2 cores): say so before the wait, not after.
const ANNOUNCED_COMPILE_BYTES: usize = 4 << 20;

/// Logs (info) that a large component is being compiled, and whether the result is kept.
fn announce_compile(path: &Path, bytes: &[u8], cached: bool) {
    if bytes.len() >= ANNOUNCED_COMPILE_BYTES {
        tracing::info!(
            event = "handler:compiling",
            handler = %path.display(),
            bytes = bytes.len(),
            "handler:compiling: {} ({:.1} MiB) is being compiled; a large component takes up to a minute{}",
            path.display(),
            bytes.len() as f64 / f64::from(1u32 << 20),
            if cached { ", once: the result is cached" } else { " (no cache: every run)" }
        );
    }
}
