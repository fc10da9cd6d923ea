//! Rust log records to Erlang's `logger`, through a relay process.
//!
//! Records are sent as `{mongoose_native_log, Level, Message}`; at most
//! `BURST` per second reach the relay, the rest are counted and reported.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use log::{Level, LevelFilter, Log, Metadata, Record};
use mongoose_native::runtime;
use rustler::{Encoder, LocalPid, OwnedEnv};

rustler::atoms! { mongoose_native_log, error, warning, info, debug }

const BURST: u64 = 200;

pub struct ErlangLogger {
    relay: Mutex<Option<LocalPid>>,
    /// Upper 32 bits: the current second; lower 32: records sent in it.
    window: AtomicU64,
    dropped: AtomicU64,
}

pub static LOGGER: ErlangLogger = ErlangLogger {
    relay: Mutex::new(None),
    window: AtomicU64::new(0),
    dropped: AtomicU64::new(0),
};

pub fn install() {
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(LevelFilter::Info);
    }
    route_panics();
}

/// A panic becomes an error record, rate-limited like any other, instead of
/// a backtrace on the VM's stderr. rustler still turns a panic in a NIF call
/// into an exception for its caller; the runtime's tasks catch their own.
fn route_panics() {
    std::panic::set_hook(Box::new(|info| {
        let text = format!("panic: {info}");
        if rustler::thread::is_scheduler_thread() {
            // A scheduler thread cannot send from an owned env; a runtime thread can.
            runtime::handle().spawn(async move { log::error!("{text}") });
        } else {
            log::error!("{text}");
        }
    }));
}

pub fn set_relay(pid: LocalPid) {
    if let Ok(mut relay) = LOGGER.relay.lock() {
        *relay = Some(pid);
    }
}

impl ErlangLogger {
    fn admit(&self) -> bool {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            & 0xffff_ffff;
        let w = self.window.load(Ordering::Relaxed);
        if w >> 32 != now {
            self.window.store(now << 32 | 1, Ordering::Relaxed);
            return true;
        }
        self.window.fetch_add(1, Ordering::Relaxed) & 0xffff_ffff < BURST
    }
}

impl Log for ErlangLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= Level::Info
    }

    fn log(&self, record: &Record) {
        // Scheduler threads cannot send from an owned env; those records are rare.
        if !self.enabled(record.metadata()) || rustler::thread::is_scheduler_thread() {
            return;
        }
        let Some(pid) = self.relay.lock().ok().and_then(|r| *r) else {
            return;
        };
        if !self.admit() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        let mut text = format!("{}: {}", record.target(), record.args());
        if dropped > 0 {
            text.push_str(&format!(
                " ({dropped} earlier records dropped by rate limit)"
            ));
        }
        let level = match record.level() {
            Level::Error => error(),
            Level::Warn => warning(),
            Level::Info => info(),
            _ => debug(),
        };
        let _ = OwnedEnv::new().send_and_clear(&pid, |env| {
            (mongoose_native_log(), level, text.as_str()).encode(env)
        });
    }

    fn flush(&self) {}
}
