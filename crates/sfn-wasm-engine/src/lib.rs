//! Everything that touches wasmtime: one [`WasmEngine`] per process compiles handler
//! modules into [`Handler`]s and runs tasks in fresh, limited instances.
//!
//! The engine is built once, with the pooling allocator sized for the host's concurrency,
//! epoch interruption driven by an [`EpochTicker`], and a linker holding a deny-by-default
//! WASI and the toolkit. A [`Handler`] is compiled and linked once (`InstancePre`); each
//! task then gets its own `Store` with its own memory cap, deadline and abort flag.
//!
//! The engine hands a task's answers to an [`AnswerSink`] and knows nothing of how they
//! reach Step Functions: it sits below the answer path. Nor does it know any
//! capability: an instance starts with nothing (no environment, folders, sockets,
//! outbound HTTP or checkpoint store) but what the task's [`Capabilities`] prepare in it
//! through the one seam of [`capability`] (Spin's factors, in small). This crate depends
//! on no AWS SDK, TLS or store and has no HTTP client of its own; the host
//! (`sfn-wasm-host`) plugs those in.
#![warn(missing_docs)]
// No function over 80 lines (`clippy.toml`): a long one is several steps that want names.
#![warn(clippy::too_many_lines)]

pub mod bindings;
pub mod budget;
mod cache;
pub mod capability;
pub mod control;
mod cpu;
mod digest;
mod epoch;
mod guest_threads;
mod handler;
pub mod host_folder;
mod limits;
pub mod outcome;
mod stdio;
mod task;
mod toolkit;

use std::sync::Arc;

use wasmtime::component::Linker;
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

pub use cache::{ArtifactCache, CacheError, DEFAULT_MAX_BYTES, OpenError};
pub use capability::{
    Capabilities, Capability, Checkpoints, InstanceBuilder, OutboundHooks, TaskInfo,
};
pub use digest::{Digest, extend_hex, sha256_hex};
pub use epoch::{EpochTicker, Paused, Running, TICK};
pub use guest_threads::THREAD_NAME as GUEST_THREAD_NAME;
pub use handler::{CacheStatus, Handler, LoadError, LoadedHandler, WorldVersion};
pub use limits::MemoryLimiter;
pub use stdio::{GuestOutput, MAX_LINE_BYTES, MAX_LOGGED_BYTES, Stream};
pub use task::{TaskLimits, TaskReport, TaskRequest};
pub use toolkit::{
    AnswerSink, MAX_CHECKPOINT_BYTES, MAX_CHECKPOINT_BYTES_PER_TASK, MAX_CHECKPOINTS_PER_TASK,
    Toolkit,
};

/// Re-exported: a [`TaskRequest`] carries one.
pub use crate::control::TaskControl;

use guest_threads::GuestThreads;
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
    /// How much of each memory slot stays resident between tasks; `None` for the default
    /// budget rule ([`keep_resident_bytes`]). Benchmarks set `Some(0)` as a baseline.
    pub keep_resident_bytes: Option<usize>,
    /// Find the pages a task dirtied with Linux's `PAGEMAP_SCAN` (6.7+) and reset only
    /// those, instead of zeroing the first `keep_resident_bytes` of the slot whether the
    /// guest touched them or not. Ignored where the kernel lacks it. Benchmarks turn it
    /// off to compare.
    pub scan_dirty_pages: bool,
    /// Threads for the guests that compute: a guest an epoch tick finds computing (half
    /// a tick of CPU without a wait, or two ticks' in all) moves to them for the rest of
    /// its task (`0`: every guest stays on the thread its task runs on). See
    /// [`GUEST_THREAD_NAME`].
    pub guest_threads: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_concurrent_tasks: 16,
            max_memory_bytes: 128 << 20,
            pooling: true,
            keep_resident_bytes: None,
            scan_dirty_pages: true,
            guest_threads: 0,
        }
    }
}

impl EngineConfig {
    /// The pooled engine for `max_concurrent_tasks` tasks at once whose memory caps are
    /// at most `max_memory_bytes`: the sizing every host, `invoke` and `replay` use.
    pub fn sized(max_concurrent_tasks: u32, max_memory_bytes: u64) -> Self {
        Self {
            max_concurrent_tasks,
            max_memory_bytes,
            pooling: true,
            ..Self::default()
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
    /// More tasks at once than the pool's address space can hold.
    #[error(
        "{asked} tasks at once (the task slots of all activities together) is more than one host can hold: at most {MAX_CONCURRENT_TASKS}; lower `max_concurrent_tasks` (or `workers`) or run more hosts"
    )]
    TooManyTasks {
        /// What was asked for.
        asked: u32,
    },
}

// Per component, the slots a handler may use. Rust, JavaScript (StarlingMonkey) and
// Python (componentize-py) guests all use one linear memory; core instances and tables
// vary by language.
const MEMORIES_PER_COMPONENT: u32 = 4;
const TABLES_PER_COMPONENT: u32 = 8;
const CORE_INSTANCES_PER_COMPONENT: u32 = 32;
// Spare slots so that a hot-swapped handler's first tasks can start while the previous
// version's last tasks finish.
const SPARE_INSTANCES: u32 = 4;
/// Virtual address space one memory slot reserves: wasmtime's 4 GiB reservation and its
/// 32 MiB guard.
const SLOT_RESERVATION: u64 = (4 << 30) + (32 << 20);
/// The share of a 47-bit (128 TiB) user address space the pool may reserve.
const POOL_ADDRESS_SPACE: u64 = 64 << 40;
/// The most memory slots the pool's address space holds (16,256).
const MAX_MEMORY_SLOTS: u32 = (POOL_ADDRESS_SPACE / SLOT_RESERVATION) as u32;
/// The most tasks one engine runs at once: what the pool's address space can hold, with
/// one linear memory per task (what every guest toolchain we know of produces).
pub const MAX_CONCURRENT_TASKS: u32 = MAX_MEMORY_SLOTS - SPARE_INSTANCES;

/// The memory slots a pool of `instances` instance slots gets: up to
/// [`MEMORIES_PER_COMPONENT`] per instance, fewer when that would not fit the address
/// space. Each slot reserves 4 GiB of address space (so guests need no bounds checks)
/// but costs no memory until used, so the pool is as generous as the address space lets
/// it be; past ~4,060 tasks, handlers with more than one memory no longer fit, and
/// [`Handler`]s say so when they load.
fn memory_slots(instances: u32) -> u32 {
    instances
        .saturating_mul(MEMORIES_PER_COMPONENT)
        .clamp(MEMORIES_PER_COMPONENT, MAX_MEMORY_SLOTS)
}

/// The process's wasmtime engine, linkers and epoch clock.
pub struct WasmEngine {
    engine: Engine,
    /// WASI (deny by default) and the toolkit: what every handler may import.
    linker: Linker<TaskState>,
    /// The same, and wasi:http, for handlers that import it: a handler that does not
    /// pays nothing for it.
    http_linker: Linker<TaskState>,
    ticker: EpochTicker,
    /// The most linear memories one task's instance may have: every task slot must be
    /// able to run at once.
    memories_per_task: u32,
    /// Where guests that compute past a tick go.
    guests: GuestThreads,
}

impl WasmEngine {
    /// Builds the engine and starts its epoch thread.
    ///
    /// # Errors
    /// When wasmtime rejects the configuration (for example a pool too large for the
    /// address space) or the epoch thread cannot start.
    pub fn new(config: EngineConfig) -> Result<Self, EngineError> {
        if config.pooling && config.max_concurrent_tasks > MAX_CONCURRENT_TASKS {
            return Err(EngineError::TooManyTasks {
                asked: config.max_concurrent_tasks,
            });
        }
        let engine = if config.pooling && config.scan_dirty_pages {
            // `Yes` fails where the kernel has no `PAGEMAP_SCAN`; there, zeroing the start
            // of every slot costs more than the page faults it saves (see
            // `keep_resident_bytes`), so nothing is kept.
            build_engine(&config, Enabled::Yes).or_else(|_| {
                build_engine(
                    &EngineConfig {
                        keep_resident_bytes: Some(config.keep_resident_bytes.unwrap_or(0)),
                        ..config.clone()
                    },
                    Enabled::No,
                )
            })?
        } else {
            build_engine(&config, Enabled::No)?
        };

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(EngineError::Config)?;
        // Every world version the host serves: their interfaces differ in version, so
        // a handler links against the one it was built for.
        bindings::v0_2::Handler::add_to_linker::<_, wasmtime::component::HasSelf<Toolkit>>(
            &mut linker,
            |state: &mut TaskState| &mut state.toolkit,
        )
        .map_err(EngineError::Config)?;
        bindings::v0_1::Handler::add_to_linker::<_, wasmtime::component::HasSelf<Toolkit>>(
            &mut linker,
            |state: &mut TaskState| &mut state.toolkit,
        )
        .map_err(EngineError::Config)?;
        let mut http_linker = linker.clone();
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut http_linker)
            .map_err(EngineError::Config)?;
        task::override_http_error_code(&mut http_linker).map_err(EngineError::Config)?;

        let ticker = EpochTicker::start(engine.clone())?;
        let memories_per_task = if config.pooling {
            (memory_slots(instance_slots(&config)) / config.max_concurrent_tasks.max(1))
                .min(MEMORIES_PER_COMPONENT)
        } else {
            MEMORIES_PER_COMPONENT
        };
        Ok(Self {
            engine,
            linker,
            http_linker,
            ticker,
            memories_per_task,
            guests: GuestThreads::new(config.guest_threads),
        })
    }

    /// The underlying wasmtime engine.
    pub fn wasmtime(&self) -> &Engine {
        &self.engine
    }

    /// The most linear memories a handler's instance may have, so that every task slot
    /// can run at once: 4 up to ~4,060 tasks at once, then fewer (1 at 10,000).
    pub fn memories_per_task(&self) -> u32 {
        self.memories_per_task
    }

    /// Keeps the epoch clock ticking while the guard lives; held by each running task.
    pub(crate) fn running(&self) -> Running {
        self.ticker.running()
    }

    /// How many guests have moved to the guest threads so far
    /// ([`EngineConfig::guest_threads`]).
    pub fn guests_moved(&self) -> u64 {
        self.guests.moved()
    }

    /// Runs one task of `pre` (see [`Handler::run`]): where the caller runs, until an
    /// epoch tick finds its guest computing, then on the guest threads.
    pub(crate) async fn run_task(
        &self,
        pre: task::HandlerPre,
        request: TaskRequest,
        sink: impl AnswerSink,
    ) -> TaskReport {
        let cpu = Arc::new(cpu::CpuMeter::default());
        let task = task::run(
            pre,
            self.engine.clone(),
            self.running(),
            cpu.clone(),
            request,
            Arc::new(sink),
        );
        self.guests.run(cpu, task).await
    }

    /// Whether tasks run and the epoch clock has not ticked for `max` (see
    /// [`EpochTicker::stalled`](epoch::EpochTicker::stalled)).
    pub fn epoch_stalled(&self, max: std::time::Duration) -> bool {
        self.ticker.stalled(max)
    }
}

/// Instance slots: one per task slot, and spares for a hot swap's overlap.
fn instance_slots(config: &EngineConfig) -> u32 {
    config.max_concurrent_tasks.saturating_add(SPARE_INSTANCES)
}

fn build_engine(config: &EngineConfig, scan_dirty_pages: Enabled) -> Result<Engine, EngineError> {
    let mut wasm = Config::new();
    wasm.epoch_interruption(true);
    wasm.wasm_component_model(true);
    if config.pooling {
        wasm.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling_config(
            config,
            scan_dirty_pages,
        )));
    }
    Engine::new(&wasm).map_err(EngineError::Config)
}

fn pooling_config(config: &EngineConfig, scan_dirty_pages: Enabled) -> PoolingAllocationConfig {
    let instances = instance_slots(config);
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(instances)
        .total_core_instances(instances.saturating_mul(CORE_INSTANCES_PER_COMPONENT))
        .total_memories(memory_slots(instances))
        .total_tables(instances.saturating_mul(TABLES_PER_COMPONENT))
        // Each running task's guest runs on its own fiber stack (wasmtime's default
        // pool holds 1,000, which would cap a larger host below its task slots).
        .total_stacks(instances)
        .max_memories_per_component(MEMORIES_PER_COMPONENT)
        .max_tables_per_component(TABLES_PER_COMPONENT)
        .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
        .max_memory_size(usize::try_from(config.max_memory_bytes).unwrap_or(usize::MAX))
        .linear_memory_keep_resident(
            config
                .keep_resident_bytes
                .unwrap_or_else(|| keep_resident_bytes(instances)),
        )
        .table_keep_resident(64 << 10)
        .pagemap_scan(scan_dirty_pages);
    pool
}

/// Resident memory the pool may keep, across all its slots, to make instantiation cheap.
const RESIDENT_BUDGET: usize = 512 << 20;
/// The most one slot keeps resident.
const MAX_KEEP_RESIDENT: usize = 16 << 20;

/// How many of the pages a task dirtied in its memory slot stay mapped between tasks
/// (reset in place) instead of being returned to the kernel. Kept pages cost no page
/// faults at the next instantiation, which is most of a small task's cost and much of a
/// JavaScript or Python task's (their snapshots are tens of MiB). Only the pages a task
/// actually dirtied are reset, found with `PAGEMAP_SCAN`: `scripts/bench.sh` prints the
/// sweep (`greet` 15.6 µs this way, 34.3 µs keeping nothing, 43.8 µs zeroing the first
/// 16 MiB of every slot, wasmtime's way without the scan). Every slot that has run a
/// task keeps up to that much resident, so the amount shrinks as slots grow, within
/// [`RESIDENT_BUDGET`].
pub fn keep_resident_bytes(slots: u32) -> usize {
    let share = RESIDENT_BUDGET / usize::try_from(slots.max(1)).unwrap_or(usize::MAX);
    share.min(MAX_KEEP_RESIDENT) & !0xffff
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_slots_fit_the_address_space_and_every_task() {
        assert_eq!(memory_slots(20), 80);
        assert_eq!(MAX_MEMORY_SLOTS, 16_256);
        assert_eq!(memory_slots(10_004), MAX_MEMORY_SLOTS);
        for instances in [
            1,
            20,
            4_064,
            4_065,
            10_004,
            MAX_CONCURRENT_TASKS + SPARE_INSTANCES,
        ] {
            let slots = u64::from(memory_slots(instances));
            assert!(
                slots * SLOT_RESERVATION <= POOL_ADDRESS_SPACE,
                "{instances}"
            );
            assert!(
                slots >= u64::from(instances),
                "{instances}: a memory for every task"
            );
        }
    }

    #[test]
    fn kept_resident_memory_stays_within_the_budget() {
        assert_eq!(keep_resident_bytes(1), MAX_KEEP_RESIDENT);
        assert_eq!(keep_resident_bytes(20), MAX_KEEP_RESIDENT);
        assert_eq!(keep_resident_bytes(128), 4 << 20);
        assert_eq!(keep_resident_bytes(1004), 512 << 10);
        assert_eq!(keep_resident_bytes(10_004), 0);
        for slots in [1, 7, 33, 100, 255, 256, 257, 5000, 10_004] {
            let kept = keep_resident_bytes(slots);
            assert!(
                kept * slots as usize <= RESIDENT_BUDGET.max(MAX_KEEP_RESIDENT),
                "{slots}"
            );
            assert_eq!(kept % 0x10000, 0, "{slots}: whole wasm pages");
        }
    }
}
