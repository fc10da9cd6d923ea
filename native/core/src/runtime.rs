//! The library's one tokio runtime: built lazily, sized once, shut down on unload.

use std::sync::Mutex;
use std::time::Duration;

use once_cell::sync::OnceCell;
use tokio::runtime::{Handle, Runtime};

struct Shared {
    handle: Handle,
    runtime: Mutex<Option<Runtime>>,
}

static RUNTIME: OnceCell<Shared> = OnceCell::new();

/// Starts the runtime with `threads` workers (0: one per core). Later calls
/// return the running runtime's handle.
pub fn start(threads: usize) -> std::io::Result<Handle> {
    let shared = RUNTIME.get_or_try_init(|| {
        let threads = if threads == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            threads
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("mongoose_native")
            .enable_all()
            .build()?;
        Ok::<_, std::io::Error>(Shared {
            handle: rt.handle().clone(),
            runtime: Mutex::new(Some(rt)),
        })
    })?;
    Ok(shared.handle.clone())
}

/// The running runtime; starts one with defaults if nothing did yet.
pub fn handle() -> Handle {
    match RUNTIME.get() {
        Some(s) => s.handle.clone(),
        None => start(0).unwrap_or_else(|e| panic!("cannot start the tokio runtime: {e}")),
    }
}

/// Where the engine spawns: the caller's runtime when it runs on one (in
/// the library that is always this one; a `#[tokio::test]` thereby keeps
/// the pools it starts on its own runtime and paused clock), else the library's.
pub fn current() -> Handle {
    Handle::try_current().unwrap_or_else(|_| handle())
}

/// Stops every task, waiting at most `grace` for them; used on NIF unload.
pub fn shutdown(grace: Duration) {
    if let Some(shared) = RUNTIME.get() {
        if let Some(rt) = shared.runtime.lock().ok().and_then(|mut s| s.take()) {
            rt.shutdown_timeout(grace);
        }
    }
}
