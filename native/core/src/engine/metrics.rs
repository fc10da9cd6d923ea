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
mod tests {
    use super::*;

    fn kind_count(f: &Figures, kind: &str) -> u64 {
        f.errors[Error::KINDS.iter().position(|k| *k == kind).unwrap()]
    }

    #[test]
    fn server_is_server_error() {
        assert_eq!(Error::KINDS[SERVER], "server_error");
    }

    #[test]
    fn answers_fill_buckets_and_kinds() {
        let m = PoolMetrics::default();
        let ok = Term::atom("ok");
        m.requested();
        m.answered(&ok, Duration::from_micros(100), false);
        m.answered(&ok, Duration::from_micros(101), false);
        m.answered(&ok, Duration::from_secs(60), false);
        m.answered(&Error::Timeout("t".into()).to_term(), Duration::ZERO, true);
        m.answered(&Term::error(Term::from("WRONGTYPE")), Duration::ZERO, false);
        m.answered(
            &Term::error(Term::atom("duplicate_key")),
            Duration::ZERO,
            false,
        );
        m.failed(&Error::NoAvailableWorkers);
        m.gave_up();
        m.reconnected();
        m.connect_failed();
        let f = m.figures(4, 3, 2, 1);
        assert_eq!(
            (f.workers, f.connected, f.queued, f.in_flight),
            (4, 3, 2, 1)
        );
        assert_eq!(f.requests, 1);
        // 0 and 0 and 100 µs in the first bucket, 101 µs in the second,
        // a minute only in the last.
        assert_eq!(f.latency_buckets[0], 4);
        assert_eq!(f.latency_buckets[1], 5);
        assert_eq!(f.latency_buckets[BUCKETS_US.len() - 1], 5);
        assert_eq!(f.latency_buckets[BUCKETS_US.len()], 6);
        assert_eq!(f.latency_sum_us, 60_000_201);
        assert_eq!(kind_count(&f, "timeout"), 1);
        assert_eq!(kind_count(&f, "server_error"), 2);
        assert_eq!(kind_count(&f, "no_available_workers"), 1);
        // The timeout answer counts once though its caller also gave up,
        // and so does the request skipped because its caller had left.
        assert_eq!(f.timeouts, 2);
        assert_eq!((f.reconnects, f.connect_failures), (1, 1));
    }

    #[test]
    fn answers_that_are_not_errors() {
        for t in [
            Term::atom("error"),
            Term::tuple(vec![Term::atom("ok"), Term::atom("error")]),
            Term::tuple(vec![Term::atom("error"), Term::Int(1), Term::Int(2)]),
        ] {
            assert_eq!(error_kind(&t), None, "{t:?}");
        }
    }
}
