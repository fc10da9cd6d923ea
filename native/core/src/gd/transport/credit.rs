//! Flow control between the listeners and a consumer (an Erlang worker):
//! frames handed over and not yet acknowledged are counted, and a reader
//! stops taking frames from its socket while its consumer is `limit` behind,
//! so a slow consumer slows its senders (TCP backpressure) instead of
//! growing a mailbox without bound.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

/// How often a reader that has had no acknowledgement asks whether its
/// consumer is still there (a dead process never acknowledges).
const STALL: Duration = Duration::from_secs(5);

pub struct Credit {
    outstanding: AtomicUsize,
    limit: usize,
    room: Notify,
}

impl Credit {
    pub fn new(limit: usize) -> Self {
        Credit {
            outstanding: AtomicUsize::new(0),
            limit: limit.max(1),
            room: Notify::new(),
        }
    }

    /// `n` more frames handed over.
    pub fn take(&self, n: usize) {
        self.outstanding.fetch_add(n, Ordering::AcqRel);
    }

    /// The consumer is done with `n` frames.
    pub fn give_back(&self, n: usize) {
        let _ = self
            .outstanding
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |o| {
                Some(o.saturating_sub(n))
            });
        self.room.notify_waiters();
    }

    /// The consumer was replaced: nothing it was given will be acknowledged.
    pub fn forget(&self) {
        self.outstanding.store(0, Ordering::Release);
        self.room.notify_waiters();
    }

    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Acquire)
    }

    /// Returns once the consumer is less than `limit` frames behind. After
    /// each `STALL` without an acknowledgement, `alive` says whether the
    /// consumer is still there: a dead one is forgotten, a live one however
    /// slow is waited for (its mailbox stays bounded; senders are refused).
    pub async fn wait_for_room(&self, alive: impl Fn() -> bool) {
        loop {
            let notified = self.room.notified();
            let before = self.outstanding();
            if before < self.limit {
                return;
            }
            if tokio::time::timeout(STALL, notified).await.is_err() && self.outstanding() >= before
            {
                if alive() {
                    log::warn!(
                        "global distribution worker acknowledged nothing for {STALL:?} \
                         ({before} frames outstanding); still waiting for it"
                    );
                } else {
                    log::warn!(
                        "global distribution worker gone with {before} frames unacknowledged"
                    );
                    self.forget();
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "credit_tests.rs"]
mod tests;
