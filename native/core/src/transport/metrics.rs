//! Connection and message counters of seed 004's metric table.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::gd::metrics::Histogram;
use crate::term::Term;

macro_rules! counters {
    ($($name:ident),* $(,)?) => {
        #[derive(Default)]
        pub struct Metrics {
            $(pub $name: AtomicU64,)*
            /// Microseconds a frame waited in its connection's queue.
            pub outgoing_queue_time: Histogram,
        }

        impl Metrics {
            /// `#{mod_global_distrib_NAME => Count | Histogram}`.
            pub fn to_term(&self) -> Term {
                Term::Map(vec![$((
                    Term::Atom(concat!("mod_global_distrib_", stringify!($name)).to_string()),
                    Term::Int(self.$name.load(Ordering::Relaxed) as i64),
                ),)* (
                    Term::atom("mod_global_distrib_outgoing_queue_time"),
                    self.outgoing_queue_time.snapshot(),
                )])
            }
        }
    };
}

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

pub fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}
