//! The library's one tokio runtime: built lazily, sized once, kept for the
//! life of the VM (the library stays mapped, see the NIF's `pin`).

use once_cell::sync::OnceCell;
use tokio::runtime::{Handle, Runtime};

static RUNTIME: OnceCell<Runtime> = OnceCell::new();

/// Starts the runtime with `threads` workers (0: one per core). Later calls
/// return the running runtime's handle.
pub fn start(threads: usize) -> std::io::Result<Handle> {
    let rt = RUNTIME.get_or_try_init(|| {
        let threads = if threads == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            threads
        };
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("mongoose_native")
            .enable_all()
            .build()
    })?;
    Ok(rt.handle().clone())
}

/// The running runtime; starts one with defaults if nothing did yet.
pub fn handle() -> Handle {
    match RUNTIME.get() {
        Some(rt) => rt.handle().clone(),
        None => start(0).unwrap_or_else(|e| panic!("cannot start the tokio runtime: {e}")),
    }
}

/// Where the engine spawns: the caller's runtime when it runs on one (in
/// the library that is always this one; a `#[tokio::test]` thereby keeps
/// the pools it starts on its own runtime and paused clock), else the library's.
pub fn current() -> Handle {
    Handle::try_current().unwrap_or_else(|_| handle())
}
