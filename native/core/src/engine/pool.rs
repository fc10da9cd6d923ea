//! The pool engine: workers, bounded queues, strategies, reconnection.
//!
//! A worker is one task owning one connection (or execution slot) and a
//! bounded queue. Requests are parsed and admitted on the caller's thread in
//! microseconds; everything that waits happens on the runtime.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::task::Poll;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use futures::FutureExt;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

use super::backoff::Backoff;
use super::lease::{self, guarded, WrapLease};
use super::load::{Answer, Load};
use super::metrics::{Figures, PoolMetrics};
use super::reply::{Parts, Reply};
use super::strategy::{least_loaded, Choice, Strategy};
use crate::config::PoolSettings;
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

    /// Carries one request: the caller's answer and, apart from it, the
    /// connection's verdict; only the engine reconnects.
    fn execute(&self, conn: Self::Conn, request: Self::Request) -> BoxFuture<'static, Outcome>;

    /// Carries a request without the worker, from the caller's thread,
    /// when `conn` can take it at once without waiting (a non-blocking
    /// write); the driver then answers through `answer` from the runtime,
    /// and a connection that breaks meanwhile is the driver's `closed` to
    /// report. The engine offers a request only when the whole pool has
    /// nothing else queued or running, and never while a lease waits for
    /// or holds the connection (a lease granted later may still share it
    /// with a reply on its way: for connections that multiplex). Giving it
    /// back (the default) queues it for the worker as usual.
    fn direct(
        &self,
        _conn: &Self::Conn,
        request: Self::Request,
        answer: Answer,
    ) -> std::result::Result<(), (Self::Request, Answer)> {
        Err((request, answer))
    }

    /// Carries requests queued together as one batch (one write, one
    /// wake-up for all their answers), one outcome each, in order; or gives
    /// them back to go one `execute` each, which is the default. For
    /// drivers whose connection pipelines.
    fn execute_many(
        &self,
        _conn: &Self::Conn,
        requests: Vec<Self::Request>,
    ) -> std::result::Result<BoxFuture<'static, Vec<Outcome>>, Vec<Self::Request>> {
        Err(requests)
    }

    /// Carries a request answered in parts (paging, streamed results): each
    /// part goes out through `parts`, which waits until the caller asks for
    /// the next and says when it stopped listening; the outcome is the final
    /// answer. Types without such requests keep this refusal.
    fn stream(
        &self,
        _conn: Self::Conn,
        _request: Self::Request,
        _parts: Parts,
    ) -> BoxFuture<'static, Outcome> {
        let refused = Error::BadRequest("this pool type answers in one part".into());
        Box::pin(std::future::ready(Outcome::failed(refused)))
    }

    /// Entries the pool's `stats/3` shows after the engine's own (what the
    /// driver learnt about its server, say).
    fn stats(&self) -> Vec<Term> {
        vec![]
    }

    /// For a driver whose connections reopen by themselves (rabbit): whether
    /// worker `worker`'s is up now, which `stats/3` and the metrics show
    /// instead of what the engine last saw.
    fn connected(&self, _worker: usize) -> Option<bool> {
        None
    }

    /// With `connected`: the reopenings so far, counted instead of the engine's.
    fn reconnects(&self) -> Option<u64> {
        None
    }

    /// `Some(interval)`: `ping` idle connections at that interval (rdbms keepalive).
    fn keepalive(&self) -> Option<Duration> {
        None
    }

    /// A cheap health check of an idle connection; an error replaces it.
    fn ping(&self, _conn: Self::Conn) -> BoxFuture<'static, Result<()>> {
        Box::pin(async { Ok(()) })
    }

    /// Puts a connection that came back from a lease without a clean
    /// release in its neutral state (rdbms: `ROLLBACK`); an error replaces it.
    fn reset(&self, _conn: Self::Conn) -> BoxFuture<'static, Result<()>> {
        Box::pin(async { Ok(()) })
    }

    /// Resolves once `conn` is known to be dead without a request finding
    /// out (the server closed it while idle), so the worker replaces it at
    /// once and `stats/3` does not report a dead connection as connected.
    /// The worker polls it for as long as the connection is its, beside
    /// every request and lease on it, so a driver may do the connection's
    /// own I/O in it.
    fn closed(&self, _conn: &Self::Conn) -> BoxFuture<'static, ()> {
        Box::pin(std::future::pending())
    }
}

/// What a request did: the caller's answer and whether the connection
/// survived it.
pub struct Outcome {
    pub answer: Term,
    /// `Some`: the connection is dead; the worker replaces it.
    pub broken: Option<Error>,
}

impl Outcome {
    pub fn answer(answer: Term) -> Outcome {
        Outcome {
            answer,
            broken: None,
        }
    }

    /// The caller gets the error; the connection is replaced when the error
    /// says it broke ([`Error::breaks_connection`]).
    pub fn failed(e: Error) -> Outcome {
        Outcome {
            answer: e.to_term(),
            broken: e.breaks_connection().then_some(e),
        }
    }
}

impl From<Result<Term>> for Outcome {
    fn from(result: Result<Term>) -> Outcome {
        result.map_or_else(Outcome::failed, Outcome::answer)
    }
}

/// What the registry and the NIF see of a pool, whatever its driver.
pub trait AnyPool: Send + Sync {
    fn submit(&self, choice: Choice, request: Term, reply: Reply) -> Result<()>;
    /// Submits a request answered in parts (`Driver::stream`).
    fn stream(&self, choice: Choice, request: Term, reply: Reply) -> Result<()>;
    /// Asks for an exclusive lease on one worker's connection (see
    /// [`lease`](super::lease)); `reply` gets `wrap(Lease)` or an error.
    fn lease(&self, choice: Choice, wrap: WrapLease, reply: Reply) -> Result<()>;
    fn stats(&self) -> Term;
    /// What the Prometheus endpoint reads (pools outside the engine: none).
    fn figures(&self) -> Option<Figures> {
        None
    }
    /// Closes every worker's queue; queued requests still get their answer.
    fn stop(&self);
}

enum Work<R> {
    Run(R),
    Stream(R),
    Lease(WrapLease),
}

struct Job<R> {
    work: Work<R>,
    reply: Reply,
    admitted: Instant,
}

/// A worker's connection as its worker publishes it for `Driver::direct`:
/// none while it is down, leased or being closed.
type Published<C> = Arc<RwLock<Option<C>>>;

struct Worker<D: Driver> {
    tx: mpsc::Sender<Job<D::Request>>,
    load: Arc<Load>,
    conn: Published<D::Conn>,
}

pub struct Pool<D: Driver> {
    driver: Arc<D>,
    settings: PoolSettings,
    workers: RwLock<Option<Vec<Worker<D>>>>,
    next: AtomicUsize,
    /// Woken whenever a worker becomes idle (for `available_worker`).
    idle: Arc<Notify>,
    metrics: Arc<PoolMetrics>,
}

const PING_TIMEOUT: Duration = Duration::from_secs(5);
/// Why a connection whose `closed` ended is replaced.
const CLOSED_BY_SERVER: &str = "closed by the server";
/// A deadline that never comes, for the timer with nothing to wait for.
const FAR: Duration = Duration::from_secs(86_400 * 365);

impl<D: Driver> Pool<D> {
    /// Opens every worker's connection; the pool starts only if all succeed.
    pub async fn start(driver: D, settings: PoolSettings) -> Result<Arc<Pool<D>>> {
        let driver = Arc::new(driver);
        let conns =
            futures::future::join_all((0..settings.workers).map(|i| driver.connect(i))).await;
        let conns = conns.into_iter().collect::<Result<Vec<_>>>()?;
        let idle = Arc::new(Notify::new());
        let metrics = Arc::new(PoolMetrics::default());
        let workers = conns
            .into_iter()
            .enumerate()
            .map(|(index, conn)| {
                let (tx, rx) = mpsc::channel(settings.queue_bound());
                let load = Arc::new(Load::new(index, idle.clone(), metrics.clone()));
                let published = Arc::new(RwLock::new(Some(conn.clone())));
                let worker = WorkerState {
                    driver: driver.clone(),
                    load: load.clone(),
                    published: published.clone(),
                };
                runtime::current().spawn(async move { worker.run(rx, conn).await });
                Worker {
                    tx,
                    load,
                    conn: published,
                }
            })
            .collect::<Vec<_>>();
        Ok(Arc::new(Pool {
            driver,
            settings,
            workers: RwLock::new(Some(workers)),
            next: AtomicUsize::new(0),
            idle,
            metrics,
        }))
    }

    /// Whether worker `i`'s connection is up: the driver's word if it keeps
    /// its own, else the engine's.
    fn connected(&self, i: usize, w: &Worker<D>) -> bool {
        let seen = || w.load.connected.load(Ordering::Acquire);
        self.driver.connected(i).unwrap_or_else(seen)
    }

    fn push(&self, workers: &[Worker<D>], i: usize, job: Job<D::Request>) -> Result<()> {
        let w = &workers[i];
        w.load.pending.fetch_add(1, Ordering::AcqRel);
        self.send(workers, i, job)
    }

    /// Sends a job whose `pending` count was already taken: straight onto
    /// the worker's connection if its driver can take it there, else to
    /// the worker's queue.
    fn send(&self, workers: &[Worker<D>], i: usize, job: Job<D::Request>) -> Result<()> {
        let Some(job) = self.direct(workers, i, job) else {
            return Ok(());
        };
        let w = &workers[i];
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

    /// Offers a request to `Driver::direct` when the pool has nothing else
    /// to do (`pending` counts this job already); `Some` gives the job back
    /// for worker `i`'s queue. With other requests in flight the runtime's
    /// threads are awake and handing over costs little, and a worker takes
    /// what queued up meanwhile in one batch; an idle pool's request would
    /// wake a parked thread (README, Benchmarks).
    fn direct(
        &self,
        workers: &[Worker<D>],
        i: usize,
        job: Job<D::Request>,
    ) -> Option<Job<D::Request>> {
        // Worker `i` first, and the scan stops at the first busy worker.
        let pending = |w: &Worker<D>| w.load.pending.load(Ordering::Acquire);
        let mut others = workers.iter().enumerate().filter(|&(k, _)| k != i);
        if pending(&workers[i]) > 1 || others.any(|(_, w)| pending(w) > 0) {
            return Some(job);
        }
        let published = workers[i].conn.read();
        let Some(conn) = published.as_ref().ok().and_then(|c| c.as_ref()) else {
            return Some(job);
        };
        let Job {
            work,
            reply,
            admitted,
        } = job;
        let request = match work {
            Work::Run(request) => request,
            work => {
                return Some(Job {
                    work,
                    reply,
                    admitted,
                })
            }
        };
        let answer = Answer::new(reply, admitted, workers[i].load.clone());
        match self.driver.direct(conn, request, answer) {
            Ok(()) => None,
            Err((request, answer)) => Some(Job {
                work: Work::Run(request),
                reply: answer.back(),
                admitted,
            }),
        }
    }

    /// Claims an idle worker (0 → 1 pending), scanning from `start`.
    fn claim_idle(workers: &[Worker<D>], start: usize) -> Option<usize> {
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
                            pool.metrics.failed(&Error::WorkerWaitTimeout);
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
                if let Err(e) = self.send(workers, i, job) {
                    log::warn!("available_worker hand-off failed: {e}");
                }
                Ok(())
            }
            None => Err(job),
        }
    }
}

impl<D: Driver> Pool<D> {
    /// Parses the request on the caller's thread, then routes it.
    fn admit(
        self: &Arc<Self>,
        choice: Choice,
        request: Term,
        reply: Reply,
        work: fn(D::Request) -> Work<D::Request>,
    ) -> Result<()> {
        match self.driver.parse(request) {
            Ok(request) => {
                let work = work(request);
                let admitted = Instant::now();
                self.route(
                    choice,
                    Job {
                        work,
                        reply,
                        admitted,
                    },
                )
            }
            Err(e) => {
                reply.disarm();
                Err(e)
            }
        }
    }

    /// Hands the job to a worker by `choice` and the pool's strategy.
    fn route(self: &Arc<Self>, choice: Choice, job: Job<D::Request>) -> Result<()> {
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
            Choice::Hash(i) => return self.push(workers, i % n, job),
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
                self.push(workers, i, job)
            }
            Strategy::Random => self.push(workers, rand::random_range(0..n), job),
            Strategy::Next => {
                let i = self.next.fetch_add(1, Ordering::Relaxed) % n;
                self.push(workers, i, job)
            }
            Strategy::NextAvailable => {
                let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
                match Pool::<D>::claim_idle(workers, start) {
                    Some(i) => self.send(workers, i, job),
                    None => {
                        job.reply.disarm();
                        Err(Error::NoAvailableWorkers)
                    }
                }
            }
            Strategy::Available => match Pool::<D>::claim_idle(workers, 0) {
                Some(i) => self.send(workers, i, job),
                None => {
                    drop(guard);
                    self.wait_for_idle(job);
                    Ok(())
                }
            },
        }
    }
}

impl<D: Driver> AnyPool for Arc<Pool<D>> {
    fn submit(&self, choice: Choice, request: Term, reply: Reply) -> Result<()> {
        self.metrics.requested();
        let admitted = self.admit(choice, request, reply, Work::Run);
        admitted.inspect_err(|e| self.metrics.failed(e))
    }

    fn stream(&self, choice: Choice, request: Term, reply: Reply) -> Result<()> {
        self.metrics.requested();
        let admitted = self.admit(choice, request, reply, Work::Stream);
        admitted.inspect_err(|e| self.metrics.failed(e))
    }

    fn lease(&self, choice: Choice, wrap: WrapLease, reply: Reply) -> Result<()> {
        let work = Work::Lease(wrap);
        let admitted = Instant::now();
        let leased = self.route(
            choice,
            Job {
                work,
                reply,
                admitted,
            },
        );
        leased.inspect_err(|e| self.metrics.failed(e))
    }

    fn figures(&self) -> Option<Figures> {
        let guard = self.workers.read().ok();
        let loads = guard.as_ref().and_then(|g| g.as_ref());
        let (mut connected, mut queued, mut in_flight) = (0, 0, 0);
        for (i, w) in loads.into_iter().flatten().enumerate() {
            let pending = w.load.pending.load(Ordering::Acquire);
            let running = w.load.running.load(Ordering::Acquire);
            connected += u64::from(self.connected(i, w));
            queued += pending.saturating_sub(running) as u64;
            in_flight += running as u64;
        }
        let workers = self.settings.workers as u64;
        let mut figures = self.metrics.figures(workers, connected, queued, in_flight);
        figures.reconnects = self.driver.reconnects().unwrap_or(figures.reconnects);
        Some(figures)
    }

    fn stats(&self) -> Term {
        let guard = self.workers.read().ok();
        let workers = guard.as_ref().and_then(|g| g.as_ref());
        let per_worker: Vec<(usize, usize, bool)> = workers
            .map(|ws| {
                ws.iter()
                    .enumerate()
                    .map(|(i, w)| {
                        let pending = w.load.pending.load(Ordering::Acquire);
                        let running = w.load.running.load(Ordering::Acquire);
                        (
                            pending.saturating_sub(running),
                            running,
                            self.connected(i, w),
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
        let mut stats = vec![
            kv("size", Term::Int(self.settings.workers as i64)),
            kv("strategy", Term::atom(self.settings.strategy.name())),
            kv("next_worker", Term::Int(next as i64 + 1)),
            kv("total_message_queue_len", Term::Int(total_queue as i64)),
            kv("total_in_flight", Term::Int(total_running as i64)),
            kv("workers", Term::List(worker_terms)),
        ];
        stats.extend(self.driver.stats());
        Term::List(stats)
    }

    fn stop(&self) {
        if let Ok(mut guard) = self.workers.write() {
            guard.take();
        }
        self.idle.notify_waiters();
    }
}

/// What ended on a worker: requests (one, or a pipelined batch) whose
/// replies go out now, or a lease, whose reply went out when it was granted.
struct Finished {
    ended: Ended,
    /// The first broken verdict among them.
    broken: Option<Error>,
    /// The connection's generation they ran on.
    generation: u64,
}

enum Ended {
    Lease,
    One(Term, Reply),
    Batch(Vec<(Term, Reply)>),
}

impl Ended {
    /// How many of the worker's in-flight places it frees.
    fn count(&self) -> usize {
        match self {
            Ended::Lease | Ended::One(..) => 1,
            Ended::Batch(done) => done.len(),
        }
    }
}

type Running = BoxFuture<'static, Finished>;

/// What happened on a worker's connection: something it ran finished, or
/// the connection ended.
enum Turn {
    Finished(Finished),
    Closed,
}

/// Polls the connection's `closed` (which may carry its I/O, see
/// `Driver::closed`) before the futures running on it, so answers that just
/// arrived reach their requests in the same turn, and again after them when
/// none finished, so the writes they queued go out now rather than after
/// the task's next wake-up.
fn on_connection<'a>(
    running: &'a mut FuturesUnordered<Running>,
    closed: &'a mut BoxFuture<'static, ()>,
    conn_up: bool,
) -> impl std::future::Future<Output = Turn> + 'a {
    std::future::poll_fn(move |cx| {
        let mut ended =
            |cx: &mut std::task::Context<'_>| conn_up && closed.as_mut().poll(cx).is_ready();
        if ended(cx) {
            return Poll::Ready(Turn::Closed);
        }
        if let Poll::Ready(Some(done)) = running.poll_next_unpin(cx) {
            return Poll::Ready(Turn::Finished(done));
        }
        match ended(cx) {
            true => Poll::Ready(Turn::Closed),
            false => Poll::Pending,
        }
    })
}

/// The driver's `closed` for `conn`, a panic in it (it may run the
/// connection's own I/O) taken as the connection's end.
fn closed_of<D: Driver>(driver: &D, conn: &D::Conn) -> BoxFuture<'static, ()> {
    let closed = AssertUnwindSafe(driver.closed(conn)).catch_unwind();
    Box::pin(closed.map(|ended| {
        if ended.is_err() {
            log::error!("a connection's closed future panicked; replacing the connection");
        }
    }))
}

/// One worker: takes jobs from its queue and carries them over its
/// connection, reopening the connection with capped backoff when a verdict,
/// a failed keepalive or the driver's `closed` says it broke.
struct WorkerState<D: Driver> {
    driver: Arc<D>,
    load: Arc<Load>,
    published: Published<D::Conn>,
}

/// The worker's connection and its reopening.
struct Link<D: Driver> {
    conn: Option<D::Conn>,
    /// Bumped on every new connection so a late verdict on an old one is ignored.
    generation: u64,
    connecting: Option<BoxFuture<'static, Result<D::Conn>>>,
    backoff: Backoff,
    retry_at: Instant,
    closed: BoxFuture<'static, ()>,
}

impl<D: Driver> Link<D> {
    fn lost(&mut self, load: &Load, why: &str) {
        log::warn!("worker connection lost, reconnecting: {why}");
        self.conn = None;
        self.closed = Box::pin(std::future::pending());
        load.connected.store(false, Ordering::Release);
        self.retry_at = Instant::now();
    }
}

/// What the worker runs and holds: the futures on its connection, how many
/// requests they carry, and a lease waiting for them to finish.
struct Flight<R> {
    running: FuturesUnordered<Running>,
    /// Requests (a lease counts one) in `running`, against `concurrency`.
    requests: usize,
    waiting_lease: Option<(WrapLease, Reply)>,
    leased: bool,
    /// Jobs taken from the queue in one go and not started yet: still
    /// queued as far as the pool's counts go.
    backlog: Vec<Job<R>>,
    /// The requests of one batch and their replies: kept, so that a driver
    /// that takes no batches costs no allocation per request.
    batch: Vec<R>,
    replies: Vec<(Reply, Instant)>,
}

impl<R> Flight<R> {
    /// How many more requests may start now: none while a lease waits or
    /// holds the connection, or while a connection is being opened (the
    /// requests wait for it; while the worker waits to retry, they fail at
    /// once).
    fn room<D: Driver>(&self, limit: usize, link: &Link<D>) -> usize {
        match self.leased || self.waiting_lease.is_some() || link.connecting.is_some() {
            true => 0,
            false => limit.saturating_sub(self.requests),
        }
    }
}

impl<D: Driver> WorkerState<D> {
    fn finish(&self) {
        self.load.finish();
    }

    /// Publishes the connection for `Driver::direct` while requests may
    /// share it, and withdraws it when it goes, a lease wants it alone, or
    /// the worker closes. `shown` is the generation published, if any.
    fn publish(&self, share: bool, link: &Link<D>, shown: &mut Option<u64>) {
        let want = share
            .then_some(link.generation)
            .filter(|_| link.conn.is_some());
        if want != *shown {
            if let Ok(mut published) = self.published.write() {
                *published = want.and(link.conn.clone());
                *shown = want;
            }
        }
    }

    async fn run(self, mut rx: mpsc::Receiver<Job<D::Request>>, first: D::Conn) {
        let mut link = Link::<D> {
            closed: closed_of(&*self.driver, &first),
            conn: Some(first),
            generation: 0,
            connecting: None,
            backoff: Backoff::default(),
            retry_at: Instant::now(),
        };
        let mut flight = Flight {
            running: FuturesUnordered::new(),
            requests: 0,
            waiting_lease: None,
            leased: false,
            backlog: Vec::new(),
            batch: Vec::new(),
            replies: Vec::new(),
        };
        let mut open = true;
        let limit = self.driver.concurrency().max(1);
        let keepalive = self.driver.keepalive();
        let mut last_activity = Instant::now();
        // With no keepalive, never due.
        let ping_due = |last: Instant| keepalive.map_or(last + FAR, |k| last + k);
        // One timer for the reconnection wait and the keepalive, moved only
        // when its deadline changes: a request does not touch it.
        let mut ping_check = ping_due(last_activity);
        let mut timer = Box::pin(tokio::time::sleep_until(ping_check));
        // Published by `start`.
        let mut shown = Some(link.generation);
        loop {
            if !open
                && flight.running.is_empty()
                && flight.waiting_lease.is_none()
                && flight.backlog.is_empty()
            {
                self.publish(false, &link, &mut shown);
                self.load.connected.store(false, Ordering::Release);
                return;
            }
            if link.conn.is_none() && link.connecting.is_none() && Instant::now() >= link.retry_at {
                link.connecting = Some(self.driver.connect(self.load.index));
            }
            if flight.room(limit, &link) > 0 && !flight.backlog.is_empty() {
                self.start_backlog(flight.room(limit, &link), &link, &mut flight);
            }
            if flight.running.is_empty() {
                if let Some((wrap, reply)) = flight.waiting_lease.take() {
                    self.grant(wrap, reply, &link, &mut flight);
                }
            }
            let shared = open && !flight.leased && flight.waiting_lease.is_none();
            self.publish(shared, &link, &mut shown);
            let take = flight.room(limit, &link);
            let taking = open && flight.backlog.is_empty() && take > 0;
            let wake_at = match (&link.conn, &link.connecting) {
                (None, None) => Some(link.retry_at),
                (Some(_), _)
                    if keepalive.is_some()
                        && flight.running.is_empty()
                        && flight.waiting_lease.is_none() =>
                {
                    Some(ping_check)
                }
                _ => None,
            };
            if let Some(at) = wake_at.filter(|&at| at != timer.deadline()) {
                timer.as_mut().reset(at);
            }
            let conn_up = link.conn.is_some();
            tokio::select! {
                biased;
                turn = on_connection(&mut flight.running, &mut link.closed, conn_up),
                    if conn_up || !flight.running.is_empty() =>
                {
                    let done = match turn {
                        Turn::Closed => {
                            link.lost(&self.load, CLOSED_BY_SERVER);
                            continue;
                        }
                        Turn::Finished(done) => done,
                    };
                    if let Some(e) = &done.broken {
                        if done.generation == link.generation && link.conn.is_some() {
                            link.lost(&self.load, &e.to_string());
                        }
                    }
                    flight.requests -= done.ended.count();
                    match done.ended {
                        Ended::Lease => {
                            self.finish();
                            flight.leased = false;
                        }
                        // Counted done before the caller hears back, so its
                        // next call sees this worker idle again.
                        Ended::One(answer, reply) => {
                            self.finish();
                            reply.send(answer);
                        }
                        Ended::Batch(answered) => {
                            for (answer, reply) in answered {
                                self.finish();
                                reply.send(answer);
                            }
                        }
                    }
                    last_activity = Instant::now();
                }
                result = async {
                    match link.connecting.as_mut() {
                        Some(connect) => connect.await,
                        None => std::future::pending().await,
                    }
                }, if link.connecting.is_some() => {
                    link.connecting = None;
                    match result {
                        Ok(c) => {
                            link.closed = closed_of(&*self.driver, &c);
                            link.conn = Some(c);
                            link.generation += 1;
                            link.backoff.reset();
                            ping_check = ping_due(Instant::now());
                            self.load.connected.store(true, Ordering::Release);
                            self.load.metrics.reconnected();
                            log::info!("worker reconnected");
                        }
                        Err(e) => {
                            self.load.metrics.connect_failed();
                            let wait = link.backoff.failed();
                            log::warn!("worker reconnect failed, next try in {wait:?}: {e}");
                            link.retry_at = Instant::now() + wait;
                        }
                    }
                }
                // Everything queued, up to the room there is, in one go.
                n = rx.recv_many(&mut flight.backlog, take), if taking => {
                    if n == 0 {
                        open = false;
                    }
                }
                _ = &mut timer, if wake_at.is_some() => {
                    if link.conn.is_some() && Instant::now() >= ping_due(last_activity) {
                        last_activity = Instant::now();
                        self.ping(&mut link).await;
                    }
                    ping_check = ping_due(last_activity);
                }
            }
        }
    }

    /// Hands the connection to a lease whose wait for the requests before
    /// it is over.
    fn grant(
        &self,
        wrap: WrapLease,
        reply: Reply,
        link: &Link<D>,
        flight: &mut Flight<D::Request>,
    ) {
        match &link.conn {
            _ if reply.is_cancelled() => {
                reply.disarm();
                self.finish();
            }
            None => self.refuse_down(reply),
            Some(conn) => {
                let (handle, serving) = lease::grant(&self.driver, conn.clone());
                reply.send(wrap(handle));
                let generation = link.generation;
                flight.leased = true;
                flight.requests += 1;
                flight.running.push(Box::pin(async move {
                    Finished {
                        broken: serving.await,
                        ended: Ended::Lease,
                        generation,
                    }
                }));
            }
        }
    }

    /// Starts jobs from the backlog, in order, while there is `room`: a
    /// lease stops it (what follows waits for the lease), and the requests
    /// among them are offered to the driver as one batch.
    fn start_backlog(&self, room: usize, link: &Link<D>, flight: &mut Flight<D::Request>) {
        let mut requests = std::mem::take(&mut flight.batch);
        let mut replies = std::mem::take(&mut flight.replies);
        let mut taken = 0;
        for job in flight.backlog.iter_mut().take(room) {
            taken += 1;
            if matches!(job.work, Work::Lease(_)) {
                break;
            }
        }
        // Taken out for the loop, put back with what is left (and its capacity).
        let mut backlog = std::mem::take(&mut flight.backlog);
        for job in backlog.drain(..taken) {
            self.load.running.fetch_add(1, Ordering::AcqRel);
            if job.reply.is_cancelled() {
                job.reply.disarm();
                self.finish();
                self.load.metrics.gave_up();
                continue;
            }
            match (job.work, &link.conn) {
                (Work::Lease(wrap), _) => flight.waiting_lease = Some((wrap, job.reply)),
                (_, None) => self.refuse_down(job.reply),
                (Work::Run(request), Some(_)) => {
                    requests.push(request);
                    replies.push((job.reply, job.admitted));
                }
                (Work::Stream(request), Some(c)) => {
                    let fut = self.driver.stream(c.clone(), request, job.reply.parts());
                    self.launch(fut, job.reply, job.admitted, link, flight);
                }
            }
        }
        flight.backlog = backlog;
        let (Some(c), false) = (&link.conn, requests.is_empty()) else {
            (flight.batch, flight.replies) = (requests, replies);
            return;
        };
        match self.driver.execute_many(c, requests) {
            Ok(fut) => self.launch_many(fut, replies, link, flight),
            Err(mut requests) => {
                for (request, (reply, admitted)) in requests.drain(..).zip(replies.drain(..)) {
                    let fut = self.driver.execute(c.clone(), request);
                    self.launch(fut, reply, admitted, link, flight);
                }
                (flight.batch, flight.replies) = (requests, replies);
            }
        }
    }

    /// Runs one request's future on the connection.
    fn launch(
        &self,
        fut: BoxFuture<'static, Outcome>,
        reply: Reply,
        admitted: Instant,
        link: &Link<D>,
        flight: &mut Flight<D::Request>,
    ) {
        let generation = link.generation;
        let metrics = self.load.metrics.clone();
        flight.requests += 1;
        flight.running.push(Box::pin(async move {
            let mut outcome = guarded(fut).await.unwrap_or_else(Outcome::failed);
            metrics.answered(&outcome.answer, admitted.elapsed(), reply.is_cancelled());
            Finished {
                broken: outcome.broken.take(),
                ended: Ended::One(outcome.answer, reply),
                generation,
            }
        }));
    }

    /// Runs a future answering `replies` in order (a pipelined batch).
    fn launch_many(
        &self,
        fut: BoxFuture<'static, Vec<Outcome>>,
        replies: Vec<(Reply, Instant)>,
        link: &Link<D>,
        flight: &mut Flight<D::Request>,
    ) {
        let generation = link.generation;
        let metrics = self.load.metrics.clone();
        flight.requests += replies.len();
        flight.running.push(Box::pin(async move {
            let n = replies.len();
            let mut outcomes = match guarded(fut).await {
                Ok(outcomes) if outcomes.len() == n => outcomes,
                Ok(_) => {
                    let e = Error::Internal("a batch came back with another count".into());
                    (0..n).map(|_| Outcome::failed(e.clone())).collect()
                }
                Err(e) => (0..n).map(|_| Outcome::failed(e.clone())).collect(),
            };
            let broken = outcomes.iter_mut().find_map(|o| o.broken.take());
            let answered = outcomes
                .into_iter()
                .zip(replies)
                .map(|(outcome, (reply, admitted))| {
                    metrics.answered(&outcome.answer, admitted.elapsed(), reply.is_cancelled());
                    (outcome.answer, reply)
                })
                .collect();
            Finished {
                ended: Ended::Batch(answered),
                broken,
                generation,
            }
        }));
    }

    /// Pings an idle connection, polling its `closed` meanwhile (which may
    /// be what carries the ping).
    async fn ping(&self, link: &mut Link<D>) {
        if let Some(c) = &link.conn {
            let ping = tokio::time::timeout(PING_TIMEOUT, guarded(self.driver.ping(c.clone())));
            let outcome = tokio::select! {
                answered = ping => answered
                    .unwrap_or_else(|_| Err(Error::Timeout("keepalive got no answer".into())))
                    .and_then(|r| r),
                _ = &mut link.closed => Err(Error::ConnectionLost(CLOSED_BY_SERVER.into())),
            };
            if let Err(e) = outcome {
                link.lost(&self.load, &format!("keepalive failed: {e}"));
            }
        }
    }

    fn refuse_down(&self, reply: Reply) {
        self.finish();
        let down = Error::NoConnection("the connection is down; reconnecting".into());
        self.load.metrics.failed(&down);
        reply.send(down.to_term());
    }
}

#[cfg(test)]
#[path = "pool_tests.rs"]
mod tests;
