//! Exclusive leases: one caller holds one worker's connection for a
//! sequence of requests (an rdbms transaction, an LDAP bind and its search).
//!
//! A lease request goes through the pool like any other (strategy, queue
//! bound); the worker waits until its connection is idle, then hands the
//! caller an [`AnyLease`] and serves nothing else until the lease comes
//! back. Requests on the lease run in call order on a task that owns the
//! connection meanwhile. The lease comes back when the caller releases it or
//! drops its last reference (the NIF ties it to a resource, so the owner's
//! death drops it); then the driver's `reset` (an rdbms `ROLLBACK`) runs
//! unless the caller released it clean.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use tokio::sync::mpsc;

use super::pool::{Driver, Outcome};
use super::reply::Reply;
use crate::error::{Error, Result};
use crate::term::Term;

/// What the NIF and the tests see of a lease, whatever its driver.
pub trait AnyLease: Send + Sync {
    /// Parses the request on the caller's thread and queues it on the lease.
    fn submit(&self, request: Term, reply: Reply) -> Result<()>;
    /// Gives the connection back once the requests already submitted are
    /// answered; `reset` puts it back in its neutral state first.
    fn release(&self, reset: bool);
}

/// Turns a granted lease into the term its caller receives (the NIF makes
/// it a resource).
pub type WrapLease = fn(Arc<dyn AnyLease>) -> Term;

/// Requests a caller may have queued on one lease; it waits for each answer.
const LEASE_QUEUE: usize = 64;

type Queue<R> = mpsc::Sender<(R, Reply)>;

struct Handle<D: Driver> {
    driver: Arc<D>,
    /// `None` once released.
    queue: Mutex<Option<Queue<D::Request>>>,
    reset: Arc<AtomicBool>,
}

impl<D: Driver> AnyLease for Handle<D> {
    fn submit(&self, request: Term, reply: Reply) -> Result<()> {
        let released = || Error::BadRequest("the lease was released".into());
        let parsed = self.driver.parse(request).and_then(|request| {
            let queue = self.queue.lock().ok().and_then(|q| q.clone());
            queue.map(|q| (request, q)).ok_or_else(released)
        });
        let (request, queue) = match parsed {
            Ok(p) => p,
            Err(e) => {
                reply.disarm();
                return Err(e);
            }
        };
        queue.try_send((request, reply)).map_err(|e| {
            let (err, (_, reply)) = match e {
                mpsc::error::TrySendError::Full(job) => (Error::NoAvailableWorkers, job),
                mpsc::error::TrySendError::Closed(job) => (released(), job),
            };
            reply.disarm();
            err
        })
    }

    fn release(&self, reset: bool) {
        self.reset.store(reset, Ordering::Release);
        if let Ok(mut queue) = self.queue.lock() {
            queue.take();
        }
    }
}

/// Grants a lease on `conn`: the handle for the caller, and the task that
/// serves it, which ends with the connection's verdict once the lease is back.
pub(super) fn grant<D: Driver>(
    driver: &Arc<D>,
    conn: D::Conn,
) -> (
    Arc<dyn AnyLease>,
    impl std::future::Future<Output = Option<Error>>,
) {
    let (tx, rx) = mpsc::channel(LEASE_QUEUE);
    // A lease dropped without a release is reset.
    let reset = Arc::new(AtomicBool::new(true));
    let handle = Arc::new(Handle {
        driver: driver.clone(),
        queue: Mutex::new(Some(tx)),
        reset: reset.clone(),
    });
    (handle, serve(driver.clone(), conn, rx, reset))
}

async fn serve<D: Driver>(
    driver: Arc<D>,
    conn: D::Conn,
    mut rx: mpsc::Receiver<(D::Request, Reply)>,
    reset: Arc<AtomicBool>,
) -> Option<Error> {
    let mut broken: Option<Error> = None;
    while let Some((request, reply)) = rx.recv().await {
        if reply.is_cancelled() {
            reply.disarm();
            continue;
        }
        if let Some(e) = &broken {
            reply.send(e.to_term());
            continue;
        }
        let outcome = guarded(driver.execute(conn.clone(), request))
            .await
            .unwrap_or_else(Outcome::failed);
        broken = outcome.broken;
        reply.send(outcome.answer);
    }
    if broken.is_none() && reset.load(Ordering::Acquire) {
        if let Err(e) = guarded(driver.reset(conn)).await.and_then(|r| r) {
            log::warn!("a returned lease could not be reset; replacing the connection: {e}");
            broken = Some(e);
        }
    }
    broken
}

/// Runs driver code, turning a panic into an error.
pub(super) async fn guarded<T>(work: impl std::future::Future<Output = T>) -> Result<T> {
    AssertUnwindSafe(work)
        .catch_unwind()
        .await
        .map_err(|panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            log::error!("a request panicked: {what}");
            Error::Internal(format!("the request panicked: {what}"))
        })
}

#[cfg(test)]
pub(crate) mod testing {
    //! Leases for Rust tests: `keep` is the `WrapLease` that puts the lease
    //! itself in the answer, `taken` gets it back out.
    use super::*;

    pub fn keep(lease: Arc<dyn AnyLease>) -> Term {
        Term::Opaque(Arc::new(lease))
    }

    pub fn taken(answer: Term) -> Arc<dyn AnyLease> {
        match answer {
            Term::Opaque(any) => match any.downcast::<Arc<dyn AnyLease>>() {
                Ok(lease) => (*lease).clone(),
                Err(_) => panic!("not a lease"),
            },
            other => panic!("not a lease: {other:?}"),
        }
    }

    /// Runs one request on the lease and waits for its answer.
    pub async fn call(lease: &Arc<dyn AnyLease>, request: Term) -> Term {
        let (reply, answer) = crate::engine::reply::oneshot();
        lease.submit(request, reply).expect("submitted");
        answer.await.expect("answered")
    }
}
