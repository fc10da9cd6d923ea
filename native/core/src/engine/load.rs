//! What a worker and the pool share about it, and the answer to a request
//! that a driver carries without the worker ([`Driver::direct`]).
//!
//! [`Driver::direct`]: super::pool::Driver::direct

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::metrics::PoolMetrics;
use super::pool::Outcome;
use super::reply::Reply;
use crate::error::Error;

pub(super) struct Load {
    /// The worker's position, passed to `Driver::connect`.
    pub index: usize,
    /// Requests admitted and not yet answered (queued + running).
    pub pending: AtomicUsize,
    pub running: AtomicUsize,
    pub connected: AtomicBool,
    /// The pool's: woken whenever a worker becomes idle (`available_worker`).
    pub idle: Arc<Notify>,
    pub metrics: Arc<PoolMetrics>,
}

impl Load {
    pub fn new(index: usize, idle: Arc<Notify>, metrics: Arc<PoolMetrics>) -> Load {
        Load {
            index,
            pending: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
            connected: AtomicBool::new(true),
            idle,
            metrics,
        }
    }

    /// A running request was answered: counted done before the caller
    /// hears back, so its next call sees this worker idle again.
    pub fn finish(&self) {
        self.running.fetch_sub(1, Ordering::AcqRel);
        if self.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle.notify_waiters();
        }
    }
}

/// The way back to the caller of a request written by the caller's own
/// thread (`Driver::direct`): the worker's counts, the metrics and the
/// reply, as for a request the worker ran. One that is dropped unanswered
/// answers an error, so the caller and the counts are never left waiting.
pub struct Answer {
    reply: Option<Reply>,
    admitted: Instant,
    load: Arc<Load>,
}

impl Answer {
    /// Counted running; the caller of `direct` takes the count back if the
    /// driver hands the request back.
    pub(super) fn new(reply: Reply, admitted: Instant, load: Arc<Load>) -> Answer {
        load.running.fetch_add(1, Ordering::AcqRel);
        Answer {
            reply: Some(reply),
            admitted,
            load,
        }
    }

    /// Undoes `new`: the reply, for the request to go the worker's way.
    pub(super) fn back(mut self) -> Reply {
        self.load.running.fetch_sub(1, Ordering::AcqRel);
        self.reply.take().unwrap_or_else(Reply::none)
    }

    /// Sends the answer. A broken connection is the driver's to notice (its
    /// `closed`); only the answer counts here.
    pub fn send(mut self, outcome: Outcome) {
        if let Some(reply) = self.reply.take() {
            self.answer(reply, outcome);
        }
    }

    fn answer(&self, reply: Reply, outcome: Outcome) {
        let took = self.admitted.elapsed();
        let metrics = &self.load.metrics;
        metrics.answered(&outcome.answer, took, reply.is_cancelled());
        self.load.finish();
        reply.send(outcome.answer);
    }
}

impl Drop for Answer {
    fn drop(&mut self) {
        if let Some(reply) = self.reply.take() {
            let lost = Error::Internal("the request was dropped before it was answered".into());
            self.answer(reply, Outcome::failed(lost));
        }
    }
}
