//! The pool engine: workers, bounded queues, strategies, reconnection.
//!
//! A worker is one task owning one connection (or execution slot) and a
//! bounded queue. Requests are parsed and admitted on the caller's thread in
//! microseconds; everything that waits happens on the runtime.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use futures::FutureExt;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

use crate::config::PoolSettings;
use crate::engine::reply::Reply;
use crate::engine::strategy::{least_loaded, Choice, Strategy};
use crate::error::{Error, Result};
use crate::runtime;
use crate::term::Term;

/// One backend: how to open a connection and carry a request over it.
pub trait Driver: Send + Sync + 'static {
    /// A connection handle; cloned into each request running on it.
    type Conn: Clone + Send + Sync + 'static;
    type Request: Send + 'static;

    /// How many requests one connection carries at once (pipelining).
    fn concurrency(&self) -> usize {
        1
    }

    /// Checks a request on the caller's thread; errors go back at once.
    fn parse(&self, request: Term) -> Result<Self::Request>;

    fn connect(&self, worker: usize) -> BoxFuture<'static, Result<Self::Conn>>;

    fn execute(&self, conn: Self::Conn, request: Self::Request)
        -> BoxFuture<'static, Result<Term>>;

    /// `Some(interval)`: `ping` idle connections at that interval (rdbms keepalive).
    fn keepalive(&self) -> Option<Duration> {
        None
    }

    fn ping(&self, _conn: Self::Conn) -> BoxFuture<'static, Result<()>> {
        Box::pin(async { Ok(()) })
    }

    /// Resolves once `conn` is known to be dead without a request finding
    /// out (the server closed it while idle), so the worker replaces it at
    /// once and `stats/3` does not report a dead connection as connected.
    fn closed(&self, _conn: &Self::Conn) -> BoxFuture<'static, ()> {
        Box::pin(std::future::pending())
    }
}

/// What the registry and the NIF see of a pool, whatever its driver.
pub trait AnyPool: Send + Sync {
    fn submit(&self, choice: Choice, request: Term, reply: Reply) -> Result<()>;
    fn stats(&self) -> Term;
    /// Closes every worker's queue; queued requests still get their answer.
    fn stop(&self);
}

struct Job<R> {
    request: R,
    reply: Reply,
}

/// What a worker and the pool share about it.
struct Load {
    /// The worker's position, passed to `Driver::connect`.
    index: usize,
    /// Requests admitted and not yet answered (queued + running).
    pending: AtomicUsize,
    running: AtomicUsize,
    connected: AtomicBool,
}

struct Worker<R> {
    tx: mpsc::Sender<Job<R>>,
    load: Arc<Load>,
}

pub struct Pool<D: Driver> {
    driver: Arc<D>,
    settings: PoolSettings,
    workers: RwLock<Option<Vec<Worker<D::Request>>>>,
    next: AtomicUsize,
    /// Woken whenever a worker becomes idle (for `available_worker`).
    idle: Arc<Notify>,
}

const RECONNECT_MIN: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(5);
const PING_TIMEOUT: Duration = Duration::from_secs(5);

impl<D: Driver> Pool<D> {
    /// Opens every worker's connection; the pool starts only if all succeed.
    pub async fn start(driver: D, settings: PoolSettings) -> Result<Arc<Pool<D>>> {
        let driver = Arc::new(driver);
        let conns =
            futures::future::join_all((0..settings.workers).map(|i| driver.connect(i))).await;
        let conns = conns.into_iter().collect::<Result<Vec<_>>>()?;
        let idle = Arc::new(Notify::new());
        let workers = conns
            .into_iter()
            .enumerate()
            .map(|(index, conn)| {
                let (tx, rx) = mpsc::channel(settings.queue_bound());
                let load = Arc::new(Load {
                    index,
                    pending: AtomicUsize::new(0),
                    running: AtomicUsize::new(0),
                    connected: AtomicBool::new(true),
                });
                let worker = WorkerState {
                    driver: driver.clone(),
                    load: load.clone(),
                    idle: idle.clone(),
                };
                runtime::current().spawn(async move { worker.run(rx, conn).await });
                Worker { tx, load }
            })
            .collect::<Vec<_>>();
        Ok(Arc::new(Pool {
            driver,
            settings,
            workers: RwLock::new(Some(workers)),
            next: AtomicUsize::new(0),
            idle,
        }))
    }

    fn push(workers: &[Worker<D::Request>], i: usize, job: Job<D::Request>) -> Result<()> {
        let w = &workers[i];
        w.load.pending.fetch_add(1, Ordering::AcqRel);
        Self::send(w, job)
    }

    /// Sends a job whose `pending` count was already taken.
    fn send(w: &Worker<D::Request>, job: Job<D::Request>) -> Result<()> {
        match w.tx.try_send(job) {
            Ok(()) => Ok(()),
            Err(e) => {
                w.load.pending.fetch_sub(1, Ordering::AcqRel);
                let (job, err) = match e {
                    mpsc::error::TrySendError::Full(job) => (job, Error::NoAvailableWorkers),
                    mpsc::error::TrySendError::Closed(job) => (job, Error::PoolStopped),
                };
                job.reply.disarm();
                Err(err)
            }
        }
    }

    /// Claims an idle worker (0 → 1 pending), scanning from `start`.
    fn claim_idle(workers: &[Worker<D::Request>], start: usize) -> Option<usize> {
        let n = workers.len();
        (0..n).map(|k| (start + k) % n).find(|&i| {
            workers[i]
                .load
                .pending
                .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        })
    }

    fn wait_for_idle(self: &Arc<Self>, job: Job<D::Request>) {
        let pool = self.clone();
        let deadline = Instant::now() + Duration::from_millis(self.settings.call_timeout_ms);
        runtime::current().spawn(async move {
            let mut job = Some(job);
            loop {
                let notified = pool.idle.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if let Some(next) = job.take() {
                    match pool.try_hand_to_idle(next) {
                        Ok(()) => return,
                        Err(back) => job = Some(back),
                    }
                }
                tokio::select! {
                    _ = &mut notified => {}
                    _ = tokio::time::sleep_until(deadline) => {
                        if let Some(job) = job.take() {
                            job.reply.send(Error::WorkerWaitTimeout.to_term());
                        }
                        return;
                    }
                }
            }
        });
    }

    /// Gives the job to an idle worker, or hands it back if none is idle.
    fn try_hand_to_idle(&self, job: Job<D::Request>) -> std::result::Result<(), Job<D::Request>> {
        let Ok(guard) = self.workers.read() else {
            job.reply.send(Error::PoolStopped.to_term());
            return Ok(());
        };
        let Some(workers) = guard.as_ref() else {
            job.reply.send(Error::PoolStopped.to_term());
            return Ok(());
        };
        if job.reply.is_cancelled() {
            job.reply.disarm();
            return Ok(());
        }
        match Self::claim_idle(workers, 0) {
            Some(i) => {
                if let Err(e) = Self::send(&workers[i], job) {
                    log::warn!("available_worker hand-off failed: {e}");
                }
                Ok(())
            }
            None => Err(job),
        }
    }
}

impl<D: Driver> AnyPool for Arc<Pool<D>> {
    fn submit(&self, choice: Choice, request: Term, reply: Reply) -> Result<()> {
        let request = match self.driver.parse(request) {
            Ok(r) => r,
            Err(e) => {
                reply.disarm();
                return Err(e);
            }
        };
        let job = Job { request, reply };
        let guard = self.workers.read().map_err(|_| Error::PoolStopped);
        let guard = match guard {
            Ok(g) => g,
            Err(e) => {
                job.reply.disarm();
                return Err(e);
            }
        };
        let Some(workers) = guard.as_ref() else {
            job.reply.disarm();
            return Err(Error::PoolStopped);
        };
        let n = workers.len();
        let strategy = match choice {
            Choice::Hash(i) => return Pool::<D>::push(workers, i % n, job),
            Choice::Strategy => self.settings.strategy,
        };
        match strategy {
            Strategy::Best => {
                let loads = workers
                    .iter()
                    .map(|w| w.load.pending.load(Ordering::Acquire));
                let (i, load) = least_loaded(loads).unwrap_or((0, 0));
                if load >= self.settings.queue_bound() {
                    job.reply.disarm();
                    return Err(Error::NoAvailableWorkers);
                }
                Pool::<D>::push(workers, i, job)
            }
            Strategy::Random => Pool::<D>::push(workers, rand::random_range(0..n), job),
            Strategy::Next => {
                let i = self.next.fetch_add(1, Ordering::Relaxed) % n;
                Pool::<D>::push(workers, i, job)
            }
            Strategy::NextAvailable => {
                let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
                match Pool::<D>::claim_idle(workers, start) {
                    Some(i) => Pool::<D>::send(&workers[i], job),
                    None => {
                        job.reply.disarm();
                        Err(Error::NoAvailableWorkers)
                    }
                }
            }
            Strategy::Available => match Pool::<D>::claim_idle(workers, 0) {
                Some(i) => Pool::<D>::send(&workers[i], job),
                None => {
                    drop(guard);
                    self.wait_for_idle(job);
                    Ok(())
                }
            },
        }
    }

    fn stats(&self) -> Term {
        let guard = self.workers.read().ok();
        let workers = guard.as_ref().and_then(|g| g.as_ref());
        let per_worker: Vec<(usize, usize, bool)> = workers
            .map(|ws| {
                ws.iter()
                    .map(|w| {
                        let pending = w.load.pending.load(Ordering::Acquire);
                        let running = w.load.running.load(Ordering::Acquire);
                        (
                            pending.saturating_sub(running),
                            running,
                            w.load.connected.load(Ordering::Acquire),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let kv = |k: &str, v: Term| Term::tuple(vec![Term::atom(k), v]);
        let total_queue: usize = per_worker.iter().map(|w| w.0).sum();
        let total_running: usize = per_worker.iter().map(|w| w.1).sum();
        let worker_terms = per_worker
            .iter()
            .enumerate()
            .map(|(i, &(queued, running, connected))| {
                Term::tuple(vec![
                    Term::Int(i as i64 + 1),
                    Term::List(vec![
                        kv("message_queue_len", Term::Int(queued as i64)),
                        kv("in_flight", Term::Int(running as i64)),
                        kv("connected", Term::from(connected)),
                    ]),
                ])
            })
            .collect();
        let next = self.next.load(Ordering::Relaxed) % self.settings.workers.max(1);
        Term::List(vec![
            kv("size", Term::Int(self.settings.workers as i64)),
            kv("strategy", Term::atom(self.settings.strategy.name())),
            kv("next_worker", Term::Int(next as i64 + 1)),
            kv("total_message_queue_len", Term::Int(total_queue as i64)),
            kv("total_in_flight", Term::Int(total_running as i64)),
            kv("workers", Term::List(worker_terms)),
        ])
    }

    fn stop(&self) {
        if let Ok(mut guard) = self.workers.write() {
            guard.take();
        }
        self.idle.notify_waiters();
    }
}

type Running = BoxFuture<'static, (Result<Term>, Reply, u64)>;

/// One worker: takes jobs from its queue and carries them over its
/// connection, reopening the connection with capped backoff when it breaks.
struct WorkerState<D: Driver> {
    driver: Arc<D>,
    load: Arc<Load>,
    idle: Arc<Notify>,
}

impl<D: Driver> WorkerState<D> {
    fn finish(&self) {
        self.load.running.fetch_sub(1, Ordering::AcqRel);
        if self.load.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle.notify_waiters();
        }
    }

    async fn run(self, mut rx: mpsc::Receiver<Job<D::Request>>, first: D::Conn) {
        let mut closed = self.driver.closed(&first);
        let mut conn = Some(first);
        // Bumped on every new connection so a late failure of an old one is ignored.
        let mut generation: u64 = 0;
        let mut connecting: Option<BoxFuture<'static, Result<D::Conn>>> = None;
        let mut backoff = RECONNECT_MIN;
        let mut retry_at = Instant::now();
        let mut running: FuturesUnordered<Running> = FuturesUnordered::new();
        let mut open = true;
        let limit = self.driver.concurrency().max(1);
        let keepalive = self.driver.keepalive();
        let mut last_activity = Instant::now();
        loop {
            if !open && running.is_empty() {
                self.load.connected.store(false, Ordering::Release);
                return;
            }
            if conn.is_none() && connecting.is_none() && Instant::now() >= retry_at {
                connecting = Some(self.driver.connect(self.load.index));
            }
            let ping_at = keepalive.map(|k| last_activity + k);
            tokio::select! {
                biased;
                Some((result, reply, gen)) = running.next(), if !running.is_empty() => {
                    if let Err(e) = &result {
                        if e.breaks_connection() && gen == generation && conn.is_some() {
                            log::warn!("worker connection lost: {e}");
                            conn = None;
                            self.load.connected.store(false, Ordering::Release);
                            retry_at = Instant::now();
                        }
                    }
                    let term = match result {
                        Ok(t) => t,
                        Err(e) => e.to_term(),
                    };
                    // Counted done before the caller hears back, so its next
                    // call sees this worker idle again.
                    self.finish();
                    reply.send(term);
                    last_activity = Instant::now();
                }
                result = async {
                    match connecting.as_mut() {
                        Some(connect) => connect.await,
                        None => std::future::pending().await,
                    }
                }, if connecting.is_some() => {
                    connecting = None;
                    match result {
                        Ok(c) => {
                            closed = self.driver.closed(&c);
                            conn = Some(c);
                            generation += 1;
                            backoff = RECONNECT_MIN;
                            self.load.connected.store(true, Ordering::Release);
                            log::info!("worker reconnected");
                        }
                        Err(e) => {
                            log::warn!("worker reconnect failed, next try in {backoff:?}: {e}");
                            retry_at = Instant::now() + backoff;
                            backoff = (backoff * 2).min(RECONNECT_MAX);
                        }
                    }
                }
                job = rx.recv(), if open && running.len() < limit => {
                    let Some(job) = job else { open = false; continue };
                    self.load.running.fetch_add(1, Ordering::AcqRel);
                    if job.reply.is_cancelled() {
                        job.reply.disarm();
                        self.finish();
                        continue;
                    }
                    match &conn {
                        Some(c) => {
                            let fut = self.driver.execute(c.clone(), job.request);
                            let reply = job.reply;
                            let gen = generation;
                            running.push(Box::pin(async move {
                                let result = std::panic::AssertUnwindSafe(fut)
                                    .catch_unwind()
                                    .await
                                    .unwrap_or_else(|panic| Err(panic_error(panic)));
                                (result, reply, gen)
                            }));
                        }
                        None => {
                            self.finish();
                            job.reply.send(
                                Error::NoConnection("the connection is down; reconnecting".into()).to_term(),
                            );
                        }
                    }
                }
                _ = &mut closed, if conn.is_some() => {
                    log::warn!("worker connection closed by the server; reconnecting");
                    conn = None;
                    self.load.connected.store(false, Ordering::Release);
                    retry_at = Instant::now();
                }
                _ = tokio::time::sleep_until(retry_at), if conn.is_none() && connecting.is_none() => {}
                _ = tokio::time::sleep_until(ping_at.unwrap_or(last_activity)), if ping_at.is_some() && conn.is_some() && running.is_empty() => {
                    last_activity = Instant::now();
                    if let Some(c) = &conn {
                        let ping = tokio::time::timeout(PING_TIMEOUT, self.driver.ping(c.clone()));
                        let outcome = ping.await.unwrap_or_else(|_| Err(Error::Timeout("keepalive got no answer".into())));
                        if let Err(e) = outcome {
                            log::warn!("keepalive failed, replacing the connection: {e}");
                            conn = None;
                            self.load.connected.store(false, Ordering::Release);
                            retry_at = Instant::now();
                        }
                    }
                }
            }
        }
    }
}

fn panic_error(panic: Box<dyn std::any::Any + Send>) -> Error {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    log::error!("a request panicked: {what}");
    Error::Internal(format!("the request panicked: {what}"))
}

#[cfg(test)]
#[path = "pool_tests.rs"]
mod tests;
