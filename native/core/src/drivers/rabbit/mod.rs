//! The `rabbit` pool type on lapin: MongooseIM's rabbit worker requests.
//!
//! `{amqp_call, Method}` answers `{ok, MethodOk}` (amqp_client's `_ok`
//! record as a tuple, `ok` for a `nowait` method), `{exit, {shutdown,
//! {server_initiated_close, Code, Text}}}` when the broker refuses it, or
//! `{error, {Kind, Message}}`. `{amqp_publish, #'basic.publish'{},
//! #amqp_msg{}}` is MongooseIM's cast; called, it answers `ok`, `{error,
//! nack}`, `{error, confirm_timeout}` or the refusal. Requests on one worker
//! run in order over its one connection and channel; see `lane` for
//! reconnection, re-declaration and `max_worker_queue_len`.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;

use crate::config::PoolSettings;
use crate::engine::pool::{Driver, Outcome};
use crate::error::{Error, Result};
use crate::registry::Opening;
use crate::term::Term;

mod config;
mod lane;
mod methods;
mod tls;

pub use config::RabbitConfig;
use lane::{Lane, LaneHandle, Shared, CONFIRM_WINDOW};
use methods::{parse_request, RabbitRequest};

pub struct RabbitDriver {
    shared: Arc<Shared>,
    lanes: Arc<Mutex<Vec<Arc<Lane>>>>,
}

impl RabbitDriver {
    /// How many requests the engine hands a worker at once: all it may
    /// hold, so the lane, not the engine's queue, decides what is dropped.
    fn depth(&self) -> usize {
        self.shared.config.max_queue_len + CONFIRM_WINDOW + 1
    }
}

/// Starts a `rabbit` pool. The engine admits twice what the lanes hold (at
/// least 10,000) unless `max_worker_queue_len` is also set among the pool
/// options, so that the connection's `max_worker_queue_len` decides what
/// is dropped: the oldest.
pub fn open(config: RabbitConfig, mut settings: PoolSettings) -> Result<Opening> {
    let shared = Arc::new(Shared::new(
        config,
        Duration::from_millis(settings.call_timeout_ms),
    ));
    let driver = RabbitDriver {
        shared,
        lanes: Arc::new(Mutex::new(Vec::new())),
    };
    // Room for a burst to reach the lanes, which drop the oldest.
    let admitted = (2 * driver.depth()).max(10 * crate::config::DEFAULT_QUEUE_BOUND);
    settings.max_worker_queue_len = settings.max_worker_queue_len.or(Some(admitted));
    Ok(crate::registry::opening(driver, settings))
}

impl Driver for RabbitDriver {
    type Conn = LaneHandle;
    type Request = RabbitRequest;

    fn concurrency(&self) -> usize {
        self.depth()
    }

    fn parse(&self, request: Term) -> Result<RabbitRequest> {
        parse_request(request)
    }

    fn connect(&self, worker: usize) -> BoxFuture<'static, Result<LaneHandle>> {
        let shared = self.shared.clone();
        let lanes = self.lanes.clone();
        Box::pin(async move {
            let (handle, lane) = LaneHandle::open(shared, worker).await?;
            if let Ok(mut lanes) = lanes.lock() {
                lanes.retain(|l| l.index != worker);
                lanes.push(lane);
                lanes.sort_by_key(|l| l.index);
            }
            Ok(handle)
        })
    }

    fn execute(&self, conn: LaneHandle, request: RabbitRequest) -> BoxFuture<'static, Outcome> {
        let target = self.shared.target.clone();
        let answer = match request {
            RabbitRequest::Call(method) => conn.call(method),
            RabbitRequest::Publish(msg) => Some(conn.publish(msg)),
        };
        Box::pin(async move {
            // The handle lives until the answer, so the lane does too.
            let _conn = conn;
            // The lane reconnects by itself (see the module doc): no
            // answer breaks the engine's connection.
            let answer = match answer {
                Some(rx) => rx.await.unwrap_or_else(|_| Err(Error::PoolStopped)),
                None => Err(Error::NoConnection(format!(
                    "rabbit {target}: the connection is down; reconnecting"
                ))),
            };
            Outcome::answer(answer.unwrap_or_else(|e| e.to_term()))
        })
    }

    /// The lane's word: it reopens its connection by itself.
    fn connected(&self, worker: usize) -> Option<bool> {
        let lanes = self.lanes.lock().ok()?;
        // Kept sorted by index as lanes start.
        let at = lanes.binary_search_by_key(&worker, |l| l.index).ok()?;
        Some(lanes[at].connected.load(Ordering::Acquire))
    }

    fn reconnects(&self) -> Option<u64> {
        Some(self.shared.counters.reconnects.load(Ordering::Relaxed))
    }

    /// A `rabbit` section: the pool's counters and each lane's state.
    fn stats(&self) -> Vec<Term> {
        let lanes = self.lanes.lock().map(|l| l.clone()).unwrap_or_default();
        let kv = |k: &str, v: Term| Term::tuple(vec![Term::atom(k), v]);
        let c = &self.shared.counters;
        let n = |a: &std::sync::atomic::AtomicU64| Term::Int(a.load(Ordering::Relaxed) as i64);
        let per_worker = lanes
            .iter()
            .map(|l| {
                Term::tuple(vec![
                    Term::Int(l.index as i64 + 1),
                    Term::List(vec![
                        kv("queued", Term::Int(l.queued() as i64)),
                        kv("unconfirmed", n(&l.unconfirmed)),
                        kv("blocked", Term::from(l.blocked.load(Ordering::Acquire))),
                    ]),
                ])
            })
            .collect();
        vec![kv(
            "rabbit",
            Term::List(vec![
                kv("published", n(&c.published)),
                kv("nacked", n(&c.nacked)),
                kv("confirm_timeouts", n(&c.confirm_timeouts)),
                kv("failed", n(&c.failed)),
                kv("dropped", n(&c.dropped)),
                kv("resent", n(&c.resent)),
                kv("reconnects", n(&c.reconnects)),
                kv("workers", Term::List(per_worker)),
            ]),
        )]
    }
}

#[cfg(test)]
mod tests;
