//! Connection and message counters of seed 004's metric table, for all
//! remote datacenters together and per remote host (under `per_host`).
//! Counters that cannot name a host (`incoming_established_count`, errors
//! before a peer's `gd_start`) are only counted in the totals.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::gd::metrics::Histogram;
use crate::term::Term;

macro_rules! counters {
    ($($name:ident),* $(,)?) => {
        #[derive(Default)]
        pub struct Metrics {
            $(pub $name: AtomicU64,)*
            /// Microseconds a frame waited in its connection's queue.
            pub outgoing_queue_time: Histogram,
            /// Microseconds from the sender's clock in a frame to its
            /// arrival (wall clocks of two machines).
            pub incoming_transfer_time: Histogram,
            hosts: Mutex<HashMap<String, Arc<Metrics>>>,
            /// Each outgoing queue time, per host, kept only while
            /// MongooseIM's instrumentation (one event per stanza) drains
            /// them; see [`Metrics::take_queue_times`].
            sampling: AtomicBool,
            queue_times: Mutex<Vec<u64>>,
        }

        impl Metrics {
            /// `#{mod_global_distrib_NAME => Count | Histogram}`, with
            /// `per_host => #{Host => #{...}}` when any host was seen.
            pub fn to_term(&self) -> Term {
                let mut pairs = vec![$((
                    Term::Atom(concat!("mod_global_distrib_", stringify!($name)).to_string()),
                    Term::Int(self.$name.load(Ordering::Relaxed) as i64),
                ),)* (
                    Term::atom("mod_global_distrib_outgoing_queue_time"),
                    self.outgoing_queue_time.snapshot(),
                ), (
                    Term::atom("mod_global_distrib_incoming_transfer_time"),
                    self.incoming_transfer_time.snapshot(),
                )];
                let hosts: Vec<(Term, Term)> = self
                    .hosts
                    .lock()
                    .map(|h| h.iter().map(|(k, m)| (Term::from(k.as_str()), m.to_term())).collect())
                    .unwrap_or_default();
                if !hosts.is_empty() {
                    pairs.push((Term::atom("per_host"), Term::Map(hosts)));
                }
                Term::Map(pairs)
            }

            /// Each host's outgoing queue times since the last call, and
            /// whether to keep them from now on (totals only).
            pub fn take_queue_times(&self, keep: bool) -> Vec<(String, Vec<u64>)> {
                self.sampling.store(keep, Ordering::Relaxed);
                let hosts: Vec<(String, Arc<Metrics>)> = self
                    .hosts
                    .lock()
                    .map(|h| h.iter().map(|(k, m)| (k.clone(), m.clone())).collect())
                    .unwrap_or_default();
                hosts
                    .into_iter()
                    .filter_map(|(host, m)| {
                        let taken = std::mem::take(&mut *m.queue_times.lock().ok()?);
                        (!taken.is_empty()).then_some((host, taken))
                    })
                    .collect()
            }

            /// The counters of one remote host (created on first use).
            pub fn host(&self, name: &str) -> Arc<Metrics> {
                match self.hosts.lock() {
                    Ok(mut hosts) => hosts.entry(name.to_string()).or_default().clone(),
                    Err(_) => Arc::default(),
                }
            }
        }
    };
}

/// Queue times kept per host between two drains (one a second): past
/// this, stanzas are counted but their times not kept.
const MAX_KEPT: usize = 100_000;

counters!(
    outgoing_messages_count,
    incoming_messages_count,
    incoming_established_count,
    incoming_first_packet_count,
    incoming_closed_count,
    incoming_errored_count,
    outgoing_established_count,
    outgoing_closed_count,
    outgoing_errored_count,
);

/// The totals and, once known, one remote host's counters: every event is
/// counted in both.
#[derive(Clone)]
pub struct Scoped {
    pub all: Arc<Metrics>,
    pub host: Option<Arc<Metrics>>,
}

impl Scoped {
    pub fn bump(&self, counter: fn(&Metrics) -> &AtomicU64) {
        self.add(counter, 1);
    }

    pub fn add(&self, counter: fn(&Metrics) -> &AtomicU64, n: u64) {
        counter(&self.all).fetch_add(n, Ordering::Relaxed);
        if let Some(h) = &self.host {
            counter(h).fetch_add(n, Ordering::Relaxed);
        }
    }

    pub fn queue_time(&self, us: u64) {
        self.record(|m| &m.outgoing_queue_time, us);
        let sampling = self.all.sampling.load(Ordering::Relaxed);
        let host = self.host.as_ref().filter(|_| sampling);
        if let Some(mut kept) = host.and_then(|h| h.queue_times.lock().ok()) {
            if kept.len() < MAX_KEPT {
                kept.push(us);
            }
        }
    }

    pub fn transfer_time(&self, us: u64) {
        self.record(|m| &m.incoming_transfer_time, us);
    }

    fn record(&self, histogram: fn(&Metrics) -> &Histogram, us: u64) {
        histogram(&self.all).record(us);
        if let Some(h) = &self.host {
            histogram(h).record(us);
        }
    }
}
