//! A handler module, compiled and linked once, ready to instantiate per task.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest as _, Sha256};
use wasmtime::component::Component;

use super::WasmEngine;
use super::bindings::HandlerPre;
use super::task::TaskState;

/// The SHA-256 of a handler's `.wasm` bytes, in hex, which names a handler version in
/// logs and events. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Digest(Arc<str>);

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        let hex: String = Sha256::digest(bytes)
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        Self(Arc::from(hex))
    }

    /// The digest in lowercase hex.
    pub fn hex(&self) -> &Arc<str> {
        &self.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

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
    /// The component does not implement the `sfn:activity/handler` world.
    #[error(
        "{} does not implement the sfn:activity/handler world: {reason}. \
         Build it against wit/handler.wit (for Rust, with the sfn-wasm-guest crate)",
        path.display()
    )]
    WrongWorld {
        /// The handler file.
        path: PathBuf,
        /// What is missing or mismatched.
        reason: String,
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

/// A handler version: its `InstancePre` and the digest that names it. Cheap to clone.
#[derive(Clone)]
pub struct Handler {
    pre: HandlerPre<TaskState>,
    digest: Digest,
    source: Arc<Path>,
}

impl Handler {
    /// Reads and compiles the handler at `path`.
    ///
    /// # Errors
    /// [`LoadError`] naming `path`: unreadable, not a component, invalid, or another world.
    pub fn load_file(engine: &WasmEngine, path: &Path) -> Result<Self, LoadError> {
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::load_bytes(engine, path, &bytes)
    }

    /// Compiles a handler from its `.wasm` bytes; `path` names it in errors and logs.
    ///
    /// # Errors
    /// As [`Handler::load_file`], except for reading.
    pub fn load_bytes(engine: &WasmEngine, path: &Path, bytes: &[u8]) -> Result<Self, LoadError> {
        check_is_component(path, bytes)?;
        let component =
            Component::new(engine.wasmtime(), bytes).map_err(|err| LoadError::Invalid {
                path: path.to_owned(),
                reason: format!("{err:#}"),
            })?;
        Self::link(engine, path, component, Digest::of(bytes))
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
            .map_err(|err| LoadError::Invalid {
                path: path.to_owned(),
                reason: format!("{err:#}"),
            })
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
        let pre = engine
            .linker
            .instantiate_pre(&component)
            .map_err(wrong_world)?;
        let pre = HandlerPre::new(pre).map_err(wrong_world)?;
        Ok(Self {
            pre,
            digest,
            source: Arc::from(path),
        })
    }

    /// The digest of the `.wasm` this handler was compiled from.
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// The file this handler was loaded from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    pub(super) fn pre(&self) -> &HandlerPre<TaskState> {
        &self.pre
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
