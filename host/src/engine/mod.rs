//! Everything that touches wasmtime: one [`WasmEngine`] per process compiles handler
//! modules into [`Handler`]s and runs tasks in fresh, limited instances.
//!
//! The engine is built once, with the pooling allocator sized for the host's concurrency,
//! epoch interruption driven by an [`EpochTicker`], and a linker holding a deny-by-default
//! WASI and the toolkit. A [`Handler`] is compiled and linked once (`InstancePre`); each
//! task then gets its own `Store` with its own memory cap, deadline and abort flag.

pub(crate) mod bindings;
mod cache;
mod epoch;
mod handler;
mod limits;
mod stdio;
mod task;

use wasmtime::component::Linker;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

pub use cache::{ArtifactCache, CacheError};
pub use epoch::{EpochTicker, TICK};
pub use handler::{CacheStatus, Digest, Handler, LoadError, LoadedHandler};
pub use limits::MemoryLimiter;
pub use stdio::{GuestOutput, MAX_LINE_BYTES, MAX_LOGGED_BYTES, Stream};
pub use task::{TaskControl, TaskLimits, TaskReport, TaskRequest};

use task::TaskState;

/// How to size the engine. One engine serves every handler of the process.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The most tasks that run at once (the sum of all pools' workers). Sizes the pool of
    /// pre-reserved instance slots.
    pub max_concurrent_tasks: u32,
    /// The largest memory cap any task will have, in bytes. Sizes each memory slot.
    pub max_memory_bytes: u64,
    /// Reserve instance slots up front (fast per-task setup) rather than allocating
    /// each instance's memory on demand.
    pub pooling: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_concurrent_tasks: 16,
            max_memory_bytes: 128 << 20,
            pooling: true,
        }
    }
}

/// Why the engine could not be built.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// wasmtime refused the configuration.
    #[error("cannot configure the WebAssembly engine: {0:#}")]
    Config(wasmtime::Error),
    /// The epoch thread could not be started.
    #[error("cannot start the epoch thread: {0}")]
    Thread(#[from] std::io::Error),
}

// Per component, the slots a handler may use. Rust guests use 1 memory and a handful of
// core instances; guests from other languages use more.
const MEMORIES_PER_COMPONENT: u32 = 4;
const TABLES_PER_COMPONENT: u32 = 8;
const CORE_INSTANCES_PER_COMPONENT: u32 = 32;
// Spare slots so that a hot-swapped handler's first tasks can start while the previous
// version's last tasks finish.
const SPARE_INSTANCES: u32 = 4;

/// The process's wasmtime engine, linker and epoch clock.
pub struct WasmEngine {
    engine: Engine,
    linker: Linker<TaskState>,
    config: EngineConfig,
    _ticker: EpochTicker,
}

impl WasmEngine {
    /// Builds the engine and starts its epoch thread.
    ///
    /// # Errors
    /// When wasmtime rejects the configuration (for example a pool too large for the
    /// address space) or the epoch thread cannot start.
    pub fn new(config: EngineConfig) -> Result<Self, EngineError> {
        let mut wasm = Config::new();
        wasm.epoch_interruption(true);
        wasm.wasm_component_model(true);
        if config.pooling {
            wasm.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling_config(&config)));
        }
        let engine = Engine::new(&wasm).map_err(EngineError::Config)?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(EngineError::Config)?;
        bindings::Handler::add_to_linker::<_, wasmtime::component::HasSelf<crate::toolkit::Toolkit>>(
            &mut linker,
            |state: &mut TaskState| &mut state.toolkit,
        )
        .map_err(EngineError::Config)?;

        let ticker = EpochTicker::start(engine.clone())?;
        Ok(Self {
            engine,
            linker,
            config,
            _ticker: ticker,
        })
    }

    /// The underlying wasmtime engine.
    pub fn wasmtime(&self) -> &Engine {
        &self.engine
    }

    /// The configuration the engine was built with.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }
}

fn pooling_config(config: &EngineConfig) -> PoolingAllocationConfig {
    let instances = config.max_concurrent_tasks.saturating_add(SPARE_INSTANCES);
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(instances)
        .total_core_instances(instances.saturating_mul(CORE_INSTANCES_PER_COMPONENT))
        .total_memories(instances.saturating_mul(MEMORIES_PER_COMPONENT))
        .total_tables(instances.saturating_mul(TABLES_PER_COMPONENT))
        .max_memories_per_component(MEMORIES_PER_COMPONENT)
        .max_tables_per_component(TABLES_PER_COMPONENT)
        .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
        .max_memory_size(usize::try_from(config.max_memory_bytes).unwrap_or(usize::MAX))
        // Keep the first pages of each slot mapped between tasks instead of returning
        // them to the kernel: a fresh instance then costs no page faults for its stack
        // and small heap, which is most of a trivial task's cost.
        .linear_memory_keep_resident(1 << 20)
        .table_keep_resident(64 << 10);
    pool
}
