//! A pool's counters for the Prometheus endpoint (`crate::prometheus`):
//! relaxed atomics bumped where the engine already is (admission, a
//! worker's answer, a reconnection), so a request pays a few uncontended
//! adds and no extra hop. The gauges (workers, connected, queued, in
//! flight) are the engine's own load counters, read at scrape time.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::error::Error;
use crate::term::Term;

/// Upper bounds of the call-latency buckets in microseconds (100 µs to
/// 10 s); one more bucket counts what is slower.
pub const BUCKETS_US: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];
const SLOTS: usize = BUCKETS_US.len() + 1;
const KINDS: usize = Error::KINDS.len();

#[derive(Default)]
pub struct PoolMetrics {
    requests: AtomicU64,
    errors: [AtomicU64; KINDS],
    timeouts: AtomicU64,
    reconnects: AtomicU64,
    connect_failures: AtomicU64,
    /// Per bucket (not cumulative), then the sum and count.
    latency: [AtomicU64; SLOTS],
    latency_sum_us: AtomicU64,
    latency_count: AtomicU64,
}

/// What one scrape reads of a pool.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figures {
    pub workers: u64,
    pub connected: u64,
    /// Requests waiting in the workers' queues.
    pub queued: u64,
    pub in_flight: u64,
    pub requests: u64,
    /// By [`Error::KINDS`].
    pub errors: [u64; KINDS],
    pub timeouts: u64,
    pub reconnects: u64,
    pub connect_failures: u64,
    /// Cumulative, by [`BUCKETS_US`]; the last is every observation.
    pub latency_buckets: [u64; SLOTS],
    pub latency_sum_us: u64,
}

impl PoolMetrics {
    /// A request reached the pool (counted whatever becomes of it).
    pub fn requested(&self) {
        self.requests.fetch_add(1, Relaxed);
    }

    /// A request refused or failed by the engine itself.
    pub fn failed(&self, e: &Error) {
        self.error(e.kind());
    }

    /// A request whose caller had given up before it ran.
    pub fn gave_up(&self) {
        self.timeouts.fetch_add(1, Relaxed);
    }

    /// A request answered after `took` (from admission); `gave_up`: its
    /// caller had stopped waiting (a call that timed out).
    pub fn answered(&self, answer: &Term, took: Duration, gave_up: bool) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let slot = BUCKETS_US.partition_point(|&bound| bound < us);
        self.latency[slot].fetch_add(1, Relaxed);
        self.latency_sum_us.fetch_add(us, Relaxed);
        self.latency_count.fetch_add(1, Relaxed);
        let timed_out = error_kind(answer).is_some_and(|kind| self.error(kind));
        if gave_up && !timed_out {
            self.timeouts.fetch_add(1, Relaxed);
        }
    }

    pub fn reconnected(&self) {
        self.reconnects.fetch_add(1, Relaxed);
    }

    pub fn connect_failed(&self) {
        self.connect_failures.fetch_add(1, Relaxed);
    }

    /// Counts an error of `kind`; `true` when it is a timeout (counted
    /// with the timeouts too).
    fn error(&self, kind: &str) -> bool {
        let i = Error::KINDS
            .iter()
            .position(|k| *k == kind)
            .unwrap_or(SERVER);
        self.errors[i].fetch_add(1, Relaxed);
        let timeout = matches!(kind, "timeout" | "worker_wait_timeout");
        if timeout {
            self.timeouts.fetch_add(1, Relaxed);
        }
        timeout
    }

    /// The counters, with the gauges the caller read from its workers.
    pub fn figures(&self, workers: u64, connected: u64, queued: u64, in_flight: u64) -> Figures {
        let mut latency_buckets = [0; SLOTS];
        let mut seen = 0;
        for (i, slot) in self.latency.iter().enumerate() {
            seen += slot.load(Relaxed);
            latency_buckets[i] = seen;
        }
        Figures {
            workers,
            connected,
            queued,
            in_flight,
            requests: self.requests.load(Relaxed),
            errors: std::array::from_fn(|i| self.errors[i].load(Relaxed)),
            timeouts: self.timeouts.load(Relaxed),
            reconnects: self.reconnects.load(Relaxed),
            connect_failures: self.connect_failures.load(Relaxed),
            latency_buckets,
            latency_sum_us: self.latency_sum_us.load(Relaxed),
        }
    }
}

/// Where error answers that are not the engine's own `{error, {Kind, _}}`
/// are counted: errors the server answered (Redis' `{error, <<"ERR ...">>}`,
/// rdbms' `{error, duplicate_key}`).
const SERVER: usize = 9;

/// The kind of an `{error, _}` answer: the engine's `{error, {Kind, Msg}}`
/// names one of [`Error::KINDS`]; any other is the server's.
fn error_kind(answer: &Term) -> Option<&str> {
    let Term::Tuple(pair) = answer else {
        return None;
    };
    if pair.len() != 2 || pair[0].as_atom() != Some("error") {
        return None;
    }
    let named = match &pair[1] {
        Term::Tuple(reason) if reason.len() == 2 => reason[0].as_atom(),
        _ => None,
    };
    Some(named.unwrap_or(Error::KINDS[SERVER]))
}

#[cfg(test)]
#[path = "metrics_tests.rs"]
mod tests;
