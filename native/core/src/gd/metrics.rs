//! Seed 004's mapping metrics: `mapping_fetches_count`,
//! `mapping_fetches_time` (µs, a histogram) and `mapping_cache_misses_count`,
//! each reported with the `mod_global_distrib_` prefix.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::term::Term;

pub const PREFIX: &str = "mod_global_distrib_";
/// Samples kept for the percentiles (the most recent ones).
const WINDOW: usize = 1024;

#[derive(Default)]
pub struct Histogram {
    inner: Mutex<HistInner>,
}

#[derive(Default)]
struct HistInner {
    count: u64,
    sum: u128,
    min: u64,
    max: u64,
    recent: Vec<u64>,
    next: usize,
}

impl Histogram {
    pub fn record(&self, value: u64) {
        let Ok(mut h) = self.inner.lock() else { return };
        h.min = if h.count == 0 {
            value
        } else {
            h.min.min(value)
        };
        h.max = h.max.max(value);
        h.count += 1;
        h.sum += u128::from(value);
        if h.recent.len() < WINDOW {
            h.recent.push(value);
        } else {
            let i = h.next;
            h.recent[i] = value;
            h.next = (i + 1) % WINDOW;
        }
    }

    pub fn count(&self) -> u64 {
        self.inner.lock().map(|h| h.count).unwrap_or(0)
    }

    /// `#{count, min, max, mean, median, 75, 90, 95, 99, 999}` as exometer
    /// names them (percentiles over the most recent samples), and the `sum`.
    pub fn snapshot(&self) -> Term {
        let (count, sum, min, max, mut recent) = match self.inner.lock() {
            Ok(h) => (h.count, h.sum, h.min, h.max, h.recent.clone()),
            Err(_) => (0, 0, 0, 0, vec![]),
        };
        recent.sort_unstable();
        let pct = |p: f64| -> i64 {
            if recent.is_empty() {
                return 0;
            }
            let i = ((recent.len() as f64 * p).ceil() as usize).clamp(1, recent.len()) - 1;
            recent[i] as i64
        };
        let mean = if count == 0 {
            0
        } else {
            (sum / u128::from(count)) as i64
        };
        let kv = |k: &str, v: i64| (Term::atom(k), Term::Int(v));
        Term::Map(vec![
            kv("count", count as i64),
            kv("min", min as i64),
            kv("max", max as i64),
            kv("mean", mean),
            kv("sum", i64::try_from(sum).unwrap_or(i64::MAX)),
            kv("median", pct(0.5)),
            (Term::Int(75), Term::Int(pct(0.75))),
            (Term::Int(90), Term::Int(pct(0.90))),
            (Term::Int(95), Term::Int(pct(0.95))),
            (Term::Int(99), Term::Int(pct(0.99))),
            (Term::Int(999), Term::Int(pct(0.999))),
        ])
    }
}

#[derive(Default)]
pub struct Metrics {
    pub fetches_count: AtomicU64,
    pub cache_misses_count: AtomicU64,
    pub fetches_time: Histogram,
}

impl Metrics {
    pub fn fetch(&self) {
        self.fetches_count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn miss(&self) {
        self.cache_misses_count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn fetches(&self) -> u64 {
        self.fetches_count.load(Ordering::Relaxed)
    }

    pub fn misses(&self) -> u64 {
        self.cache_misses_count.load(Ordering::Relaxed)
    }

    /// `#{mod_global_distrib_mapping_fetches_count => N, ...}`.
    pub fn to_term(&self) -> Term {
        let name = |n: &str| Term::atom(&format!("{PREFIX}{n}"));
        Term::Map(vec![
            (
                name("mapping_fetches_count"),
                Term::Int(self.fetches() as i64),
            ),
            (
                name("mapping_cache_misses_count"),
                Term::Int(self.misses() as i64),
            ),
            (name("mapping_fetches_time"), self.fetches_time.snapshot()),
        ])
    }
}
