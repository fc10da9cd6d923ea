//! The library's one tokio runtime: built lazily, sized once, kept for the
//! life of the VM (the library stays mapped, see the NIF's `pin`).

use once_cell::sync::OnceCell;
use tokio::runtime::{Handle, Runtime};

static RUNTIME: OnceCell<Runtime> = OnceCell::new();

/// How the runtime's threads are made (the application environment's
/// `runtime_threads` and `runtime_sched_batch`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Threads {
    /// Worker threads; 0: one per core.
    pub count: usize,
    /// Run them under Linux's `SCHED_BATCH` policy: a thread woken by a
    /// socket or a submitted request no longer preempts the VM's scheduler
    /// on its core. On a saturated machine that hands work over in larger
    /// batches with fewer context switches; below saturation a woken thread
    /// waits for the running one, which adds latency. Off by default (the
    /// README's Benchmarks give both sides).
    pub sched_batch: bool,
}

/// Starts the runtime. Later calls return the running runtime's handle.
pub fn start(threads: Threads) -> std::io::Result<Handle> {
    let rt = RUNTIME.get_or_try_init(|| {
        let count = match threads.count {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        let sched_batch = threads.sched_batch;
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(count)
            .thread_name("mongoose_native")
            .on_thread_start(move || {
                if sched_batch {
                    batch_policy();
                }
            })
            .enable_all()
            .build()
    })?;
    Ok(rt.handle().clone())
}

/// Puts the calling thread under `SCHED_BATCH`; any user may, so a refusal
/// is only logged.
#[cfg(target_os = "linux")]
fn batch_policy() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread; `param` outlives the call.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) } != 0 {
        let e = std::io::Error::last_os_error();
        log::warn!("runtime thread left under the default policy: SCHED_BATCH refused: {e}");
    }
}

#[cfg(not(target_os = "linux"))]
fn batch_policy() {}

/// The running runtime; starts one with defaults if nothing did yet.
pub fn handle() -> Handle {
    match RUNTIME.get() {
        Some(rt) => rt.handle().clone(),
        None => start(Threads::default())
            .unwrap_or_else(|e| panic!("cannot start the tokio runtime: {e}")),
    }
}

/// Where the engine spawns: the caller's runtime when it runs on one (in
/// the library that is always this one; a `#[tokio::test]` thereby keeps
/// the pools it starts on its own runtime and paused clock), else the library's.
pub fn current() -> Handle {
    Handle::try_current().unwrap_or_else(|_| handle())
}
