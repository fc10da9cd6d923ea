//! Flow control between the listeners and a consumer (an Erlang worker):
//! frames handed over and not yet acknowledged are counted, and a reader
//! stops taking frames from its socket while its consumer is `limit` behind,
//! so a slow consumer slows its senders (TCP backpressure) instead of
//! growing a mailbox without bound.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

/// How long a reader waits without a single acknowledgement before it
/// takes the consumer for gone (a dead process never acknowledges) and
/// forgets what it owed.
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

    /// Returns once the consumer is less than `limit` frames behind.
    pub async fn wait_for_room(&self) {
        loop {
            let notified = self.room.notified();
            let before = self.outstanding();
            if before < self.limit {
                return;
            }
            if tokio::time::timeout(STALL, notified).await.is_err() && self.outstanding() >= before
            {
                log::warn!(
                    "global distribution worker acknowledged nothing for {STALL:?} \
                     ({before} frames outstanding); taken for gone"
                );
                self.forget();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn a_reader_waits_while_its_consumer_is_behind() {
        let credit = Arc::new(Credit::new(10));
        credit.take(9);
        tokio::time::timeout(Duration::from_millis(50), credit.wait_for_room())
            .await
            .expect("room below the limit");
        credit.take(1);
        let waiting = tokio::spawn({
            let credit = credit.clone();
            async move { credit.wait_for_room().await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "must wait at the limit");
        credit.give_back(1);
        tokio::time::timeout(Duration::from_millis(500), waiting)
            .await
            .expect("woken by the acknowledgement")
            .expect("the waiting task ended without a panic");
        assert_eq!(credit.outstanding(), 9);
    }

    #[tokio::test(start_paused = true)]
    async fn a_consumer_that_never_answers_is_forgotten() {
        let credit = Credit::new(1);
        credit.take(3);
        credit.wait_for_room().await;
        assert_eq!(credit.outstanding(), 0);
    }
}
