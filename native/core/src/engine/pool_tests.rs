//! Tests of `pool`: the engine alone, with a fake driver on tokio's paused
//! clock, so no server is needed and every wait is exact and instant.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::oneshot;
use tokio::time::{sleep, Instant};

use super::*;
use crate::config::PoolType;
use crate::engine::reply::{self, ReplySink};

/// What a fake request does on its connection.
enum Op {
    /// Answers `{Worker, ConnectionSerial}` after the delay.
    Who(Duration),
    /// Fails with the error after the delay.
    Fail(Duration, Error),
    /// Answers `ok` but says the connection broke (a verdict apart from the answer).
    Broken,
    /// Streams the parts 1..=N, then answers `done`.
    Count(i64),
    Panic,
}

const PING_OK: usize = 0;
const PING_FAILS: usize = 1;
const PING_HANGS: usize = 2;

/// A driver whose connections are numbered in the order they were opened.
#[derive(Default)]
struct Fake {
    concurrency: usize,
    keepalive: Option<Duration>,
    /// Connects that fail before one succeeds again.
    failing_connects: AtomicUsize,
    /// When each connect was attempted, the ones at start included.
    connects: Mutex<Vec<Instant>>,
    /// Requests handed to `execute`.
    executed: AtomicUsize,
    pings: AtomicUsize,
    ping: AtomicUsize,
    /// How long each connect takes.
    connect_delay: Duration,
    resets: AtomicUsize,
    reset_fails: AtomicBool,
    /// Parts a stream produced.
    parts: Arc<AtomicUsize>,
    /// Takes requests queued together as one batch (`execute_many`).
    pipelines: bool,
    /// The size of each batch `execute_many` got.
    batches: Mutex<Vec<usize>>,
    /// `Some`: the connections reopen by themselves; which are up, and the
    /// reopenings (`connected`, `reconnects`).
    own_state: Option<(Vec<AtomicBool>, AtomicUsize)>,
    /// Takes `who` requests the direct way (`direct`); drops a `panic`'s answer.
    direct: bool,
    /// Requests taken by `direct`.
    directs: AtomicUsize,
    /// Connections whose `closed` panics 10 ms after it is first polled.
    closed_panics: AtomicUsize,
}

impl Fake {
    fn connects(&self) -> Vec<Instant> {
        self.connects.lock().unwrap().clone()
    }
}

impl Driver for Fake {
    type Conn = (usize, usize);
    type Request = Op;

    fn concurrency(&self) -> usize {
        self.concurrency.max(1)
    }

    /// `who`, `panic`, or `{who | lost | server_error, DelayMs}`.
    fn parse(&self, request: Term) -> Result<Op> {
        let bad = || Error::BadRequest(format!("not a fake request: {request:?}"));
        let (name, ms) = match &request {
            Term::Atom(name) => (name.as_str(), 0),
            Term::Tuple(t) => match t.as_slice() {
                [Term::Atom(name), Term::Int(ms)] => (name.as_str(), *ms),
                _ => return Err(bad()),
            },
            _ => return Err(bad()),
        };
        let after = Duration::from_millis(u64::try_from(ms).map_err(|_| bad())?);
        Ok(match name {
            "who" => Op::Who(after),
            "lost" => Op::Fail(after, Error::ConnectionLost("fake loss".into())),
            "server_error" => Op::Fail(after, Error::Server("fake error".into())),
            "broken" => Op::Broken,
            "count" => Op::Count(ms),
            "panic" => Op::Panic,
            _ => return Err(bad()),
        })
    }

    fn connect(&self, worker: usize) -> BoxFuture<'static, Result<(usize, usize)>> {
        let serial = {
            let mut log = self.connects.lock().unwrap();
            log.push(Instant::now());
            log.len()
        };
        let fails = self
            .failing_connects
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok();
        let delay = self.connect_delay;
        Box::pin(async move {
            sleep(delay).await;
            if fails {
                Err(Error::Connect("fake refusal".into()))
            } else {
                Ok((worker, serial))
            }
        })
    }

    fn execute(&self, (worker, serial): (usize, usize), op: Op) -> BoxFuture<'static, Outcome> {
        self.executed.fetch_add(1, Ordering::AcqRel);
        Box::pin(async move {
            match op {
                Op::Who(after) => {
                    sleep(after).await;
                    Outcome::answer(Term::tuple(vec![
                        Term::Int(worker as i64),
                        Term::Int(serial as i64),
                    ]))
                }
                Op::Fail(after, e) => {
                    sleep(after).await;
                    Outcome::failed(e)
                }
                Op::Broken => Outcome {
                    answer: Term::atom("ok"),
                    broken: Some(Error::ConnectionLost("fake verdict".into())),
                },
                Op::Panic => panic!("boom"),
                Op::Count(_) => Outcome::answer(Term::atom("streams only")),
            }
        })
    }

    fn direct(
        &self,
        &(worker, serial): &(usize, usize),
        op: Op,
        answer: Answer,
    ) -> std::result::Result<(), (Op, Answer)> {
        match op {
            Op::Who(after) if self.direct => {
                self.directs.fetch_add(1, Ordering::AcqRel);
                tokio::spawn(async move {
                    sleep(after).await;
                    let who = vec![Term::Int(worker as i64), Term::Int(serial as i64)];
                    answer.send(Outcome::answer(Term::tuple(who)));
                });
                Ok(())
            }
            Op::Panic if self.direct => {
                self.directs.fetch_add(1, Ordering::AcqRel);
                drop(answer);
                Ok(())
            }
            op => Err((op, answer)),
        }
    }

    fn closed(&self, _conn: &(usize, usize)) -> BoxFuture<'static, ()> {
        let panics = self
            .closed_panics
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok();
        Box::pin(async move {
            if panics {
                sleep(Duration::from_millis(10)).await;
                panic!("closed boom");
            }
            std::future::pending().await
        })
    }

    fn execute_many(
        &self,
        conn: &(usize, usize),
        ops: Vec<Op>,
    ) -> std::result::Result<BoxFuture<'static, Vec<Outcome>>, Vec<Op>> {
        if !self.pipelines {
            return Err(ops);
        }
        self.batches.lock().unwrap().push(ops.len());
        let each: Vec<_> = ops.into_iter().map(|op| self.execute(*conn, op)).collect();
        Ok(Box::pin(futures::future::join_all(each)))
    }

    fn connected(&self, worker: usize) -> Option<bool> {
        let (up, _) = self.own_state.as_ref()?;
        Some(up[worker].load(Ordering::Acquire))
    }

    fn reconnects(&self) -> Option<u64> {
        let (_, n) = self.own_state.as_ref()?;
        Some(n.load(Ordering::Acquire) as u64)
    }

    fn stream(&self, _conn: (usize, usize), op: Op, parts: Parts) -> BoxFuture<'static, Outcome> {
        let Op::Count(n) = op else {
            return Box::pin(std::future::ready(Outcome::answer(Term::atom(
                "not a count",
            ))));
        };
        let sent = self.parts.clone();
        Box::pin(async move {
            for i in 1..=n {
                sent.fetch_add(1, Ordering::AcqRel);
                if !parts.send(Term::Int(i)).await {
                    return Outcome::answer(Term::atom("stopped"));
                }
            }
            Outcome::answer(Term::atom("done"))
        })
    }

    fn reset(&self, _conn: (usize, usize)) -> BoxFuture<'static, Result<()>> {
        self.resets.fetch_add(1, Ordering::AcqRel);
        let fails = self.reset_fails.load(Ordering::Acquire);
        Box::pin(async move {
            match fails {
                true => Err(Error::ConnectionLost("fake reset failure".into())),
                false => Ok(()),
            }
        })
    }

    fn keepalive(&self) -> Option<Duration> {
        self.keepalive
    }

    fn ping(&self, _conn: (usize, usize)) -> BoxFuture<'static, Result<()>> {
        self.pings.fetch_add(1, Ordering::AcqRel);
        let mode = self.ping.load(Ordering::Acquire);
        Box::pin(async move {
            match mode {
                PING_OK => Ok(()),
                PING_FAILS => Err(Error::ConnectionLost("fake ping failure".into())),
                _ => std::future::pending().await,
            }
        })
    }
}

fn settings(workers: usize, strategy: Strategy) -> PoolSettings {
    PoolSettings {
        kind: PoolType::Generic,
        workers,
        strategy,
        call_timeout_ms: 1000,
        max_worker_queue_len: None,
    }
}

async fn start(fake: Fake, settings: PoolSettings) -> Arc<Pool<Fake>> {
    Pool::start(fake, settings)
        .await
        .expect("the fake connects")
}

fn req(name: &str, ms: i64) -> Term {
    Term::tuple(vec![Term::atom(name), Term::Int(ms)])
}

fn who_now() -> Term {
    Term::atom("who")
}

fn submit_to(pool: &Arc<Pool<Fake>>, choice: Choice, request: Term) -> oneshot::Receiver<Term> {
    let (reply, rx) = reply::oneshot();
    pool.submit(choice, request, reply).expect("admitted");
    rx
}

fn submit(pool: &Arc<Pool<Fake>>, request: Term) -> oneshot::Receiver<Term> {
    submit_to(pool, Choice::Strategy, request)
}

async fn call(pool: &Arc<Pool<Fake>>, request: Term) -> Term {
    submit(pool, request).await.expect("answered")
}

/// `(worker, connection serial)` of a `who` answer.
async fn who(rx: oneshot::Receiver<Term>) -> (i64, i64) {
    let answer = rx.await.expect("answered");
    match &answer {
        Term::Tuple(t) => match t.as_slice() {
            [Term::Int(w), Term::Int(c)] => (*w, *c),
            _ => panic!("not {{Worker, Conn}}: {answer:?}"),
        },
        _ => panic!("not {{Worker, Conn}}: {answer:?}"),
    }
}

/// The `Kind` of an `{error, {Kind, Message}}` answer.
fn error_kind(answer: &Term) -> Option<String> {
    match answer {
        Term::Tuple(t) => match t.as_slice() {
            [Term::Atom(e), Term::Tuple(r)] if e == "error" => r.first()?.as_atom().map(Into::into),
            _ => None,
        },
        _ => None,
    }
}

fn refused(
    pool: &Arc<Pool<Fake>>,
    choice: Choice,
    request: Term,
) -> (Error, oneshot::Receiver<Term>) {
    let (reply, rx) = reply::oneshot();
    let err = pool
        .submit(choice, request, reply)
        .expect_err("refused at admission");
    (err, rx)
}

fn assert_between(elapsed: Duration, from_ms: u64, to_ms: u64) {
    let ms = elapsed.as_millis() as u64;
    assert!(
        (from_ms..=to_ms).contains(&ms),
        "{ms} ms, expected {from_ms}..={to_ms}"
    );
}

/// One worker carrying 8 requests at once, whose driver pipelines or not.
async fn one_worker(pipelines: bool) -> Arc<Pool<Fake>> {
    let fake = Fake {
        pipelines,
        concurrency: 8,
        ..Fake::default()
    };
    start(fake, settings(1, Strategy::Best)).await
}

#[tokio::test(start_paused = true)]
async fn queued_requests_reach_a_pipelining_driver_in_batches_up_to_its_concurrency() {
    let pool = one_worker(true).await;
    // Queued before the worker runs: it takes them in one go.
    let answers: Vec<_> = (0..12).map(|_| submit(&pool, who_now())).collect();
    for rx in answers {
        assert_eq!(who(rx).await, (0, 1));
    }
    assert_eq!(*pool.driver.batches.lock().unwrap(), vec![8, 4]);
    assert_eq!(pool.driver.executed.load(Ordering::Acquire), 12);
}

#[tokio::test(start_paused = true)]
async fn a_driver_that_does_not_pipeline_gets_its_requests_one_by_one() {
    let pool = one_worker(false).await;
    let answers: Vec<_> = (0..5).map(|_| submit(&pool, who_now())).collect();
    for rx in answers {
        assert_eq!(who(rx).await, (0, 1));
    }
    assert!(pool.driver.batches.lock().unwrap().is_empty());
    assert_eq!(pool.driver.executed.load(Ordering::Acquire), 5);
}

#[tokio::test(start_paused = true)]
async fn each_request_of_a_batch_gets_its_own_answer_and_a_broken_one_reconnects() {
    let pool = one_worker(true).await;
    let first = submit(&pool, who_now());
    let failed = submit(&pool, req("server_error", 0));
    let broken = submit(&pool, Term::atom("broken"));
    assert_eq!(who(first).await, (0, 1));
    assert_eq!(
        error_kind(&failed.await.unwrap()).as_deref(),
        Some("server_error")
    );
    assert_eq!(broken.await.unwrap(), Term::atom("ok"));
    assert_eq!(*pool.driver.batches.lock().unwrap(), vec![3]);
    // The broken verdict replaced the connection once.
    assert_eq!(who(submit(&pool, who_now())).await, (0, 2));
}

#[tokio::test(start_paused = true)]
async fn a_lease_in_a_batch_waits_for_the_requests_before_it_and_holds_back_those_after() {
    let pool = one_worker(true).await;
    // All three queued before the worker runs, so it takes them in one go.
    let before = submit(&pool, req("who", 50));
    let lease_rx = lease_of(&pool);
    let mut after = submit(&pool, who_now());
    let t0 = Instant::now();
    let lease = lease::testing::taken(lease_rx.await.expect("granted"));
    assert_between(t0.elapsed(), 50, 55);
    assert!(before.await.is_ok());
    sleep(Duration::from_secs(1)).await;
    assert!(after.try_recv().is_err());
    lease.release(false);
    assert_eq!(who(after).await, (0, 1));
    assert_eq!(*pool.driver.batches.lock().unwrap(), vec![1, 1]);
}

#[tokio::test(start_paused = true)]
async fn best_worker_prefers_the_least_loaded() {
    let pool = start(Fake::default(), settings(3, Strategy::Best)).await;
    // A request counts against its worker from admission on, queued or running.
    let long: Vec<_> = (0..4).map(|_| submit(&pool, req("who", 1000))).collect();
    let short = submit(&pool, who_now());
    let mut workers = vec![];
    for rx in long {
        workers.push(who(rx).await.0);
    }
    // Ties go to the first worker; loads were then 2, 1, 1.
    assert_eq!(workers, [0, 1, 2, 0]);
    assert_eq!(who(short).await.0, 1);
}

#[tokio::test(start_paused = true)]
async fn random_worker_reaches_every_worker() {
    let pool = start(Fake::default(), settings(4, Strategy::Random)).await;
    let mut seen = [0; 4];
    for _ in 0..200 {
        seen[who(submit(&pool, who_now())).await.0 as usize] += 1;
    }
    assert!(seen.iter().all(|&n| n > 0), "{seen:?}");
}

#[tokio::test(start_paused = true)]
async fn next_worker_is_round_robin_whatever_the_load() {
    let pool = start(Fake::default(), settings(3, Strategy::Next)).await;
    let rxs: Vec<_> = (0..6).map(|_| submit(&pool, req("who", 100))).collect();
    let mut workers = vec![];
    for rx in rxs {
        workers.push(who(rx).await.0);
    }
    assert_eq!(workers, [0, 1, 2, 0, 1, 2]);
}

#[tokio::test(start_paused = true)]
async fn available_worker_waits_for_an_idle_worker_up_to_call_timeout() {
    let pool = start(Fake::default(), settings(1, Strategy::Available)).await;
    let t0 = Instant::now();
    let busy = submit(&pool, req("who", 300));
    let waiting = submit(&pool, who_now());
    assert_eq!(who(waiting).await, (0, 1));
    assert_between(t0.elapsed(), 300, 305);
    who(busy).await;

    let busy = submit(&pool, req("who", 5000));
    let t1 = Instant::now();
    let waiting = submit(&pool, who_now());
    assert_eq!(waiting.await.unwrap(), Error::WorkerWaitTimeout.to_term());
    assert_between(t1.elapsed(), 1000, 1005);
    who(busy).await;
    // The request that timed out waiting never ran.
    assert_eq!(pool.driver.executed.load(Ordering::Acquire), 3);
}

#[tokio::test(start_paused = true)]
async fn next_available_worker_fails_at_once_when_none_is_idle() {
    let pool = start(Fake::default(), settings(2, Strategy::NextAvailable)).await;
    // Idle workers are taken in turn.
    let mut workers = vec![];
    for _ in 0..4 {
        workers.push(who(submit(&pool, who_now())).await.0);
    }
    assert_eq!(workers, [0, 1, 0, 1]);
    let a = submit(&pool, req("who", 500));
    let b = submit(&pool, req("who", 500));
    let (err, rx) = refused(&pool, Choice::Strategy, who_now());
    assert_eq!(err, Error::NoAvailableWorkers);
    assert!(
        rx.await.is_err(),
        "a refused request is answered by submit only"
    );
    who(a).await;
    who(b).await;
    who(submit(&pool, who_now())).await;
}

#[tokio::test(start_paused = true)]
async fn hash_picks_key_modulo_workers_whatever_the_strategy() {
    let pool = start(Fake::default(), settings(3, Strategy::Next)).await;
    let busy = submit_to(&pool, Choice::Hash(1), req("who", 1000));
    for (key, worker) in [(4, 1), (2, 2), (4, 1), (3, 0), (7, 1)] {
        assert_eq!(
            who(submit_to(&pool, Choice::Hash(key), who_now())).await.0,
            worker
        );
    }
    assert_eq!(who(busy).await.0, 1);
}

#[tokio::test(start_paused = true)]
async fn admission_stops_at_the_queue_bound() {
    for strategy in [Strategy::Best, Strategy::Next, Strategy::Random] {
        for choice in [Choice::Strategy, Choice::Hash(0)] {
            let mut s = settings(1, strategy);
            s.max_worker_queue_len = Some(2);
            let pool = start(Fake::default(), s).await;
            let first = submit_to(&pool, choice, req("who", 100));
            let second = submit_to(&pool, choice, req("who", 100));
            let (err, rx) = refused(&pool, choice, who_now());
            assert_eq!(err, Error::NoAvailableWorkers, "{strategy:?} {choice:?}");
            assert!(rx.await.is_err());
            who(first).await;
            who(second).await;
            // Room again once the queue drained.
            who(submit_to(&pool, choice, who_now())).await;
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_broken_connection_is_reopened_with_capped_backoff() {
    let pool = start(Fake::default(), settings(1, Strategy::Best)).await;
    let fake = &pool.driver;
    fake.failing_connects.store(7, Ordering::Release);
    let answer = call(&pool, req("lost", 0)).await;
    assert_eq!(answer, Error::ConnectionLost("fake loss".into()).to_term());
    // While it waits to retry, calls fail fast instead of waiting.
    let t0 = Instant::now();
    let down = call(&pool, who_now()).await;
    assert_eq!(error_kind(&down).as_deref(), Some("no_connection"));
    assert_eq!(t0.elapsed(), Duration::ZERO);
    assert_eq!(connected(&pool), [false]);

    sleep(Duration::from_secs(20)).await;
    let attempts = fake.connects();
    assert_eq!(attempts.len(), 1 + 8);
    let gaps: Vec<u64> = attempts[1..]
        .windows(2)
        .map(|w| (w[1] - w[0]).as_millis() as u64)
        .collect();
    // Each wait is jittered between half the backoff and all of it.
    for (gap, expected) in gaps.iter().zip([100, 200, 400, 800, 1600, 3200, 5000]) {
        assert!((expected / 2..=expected + 5).contains(gap), "gaps {gaps:?}");
    }
    assert_eq!(who(submit(&pool, who_now())).await, (0, 9));
    assert_eq!(connected(&pool), [true]);

    // A success resets the backoff.
    fake.failing_connects.store(1, Ordering::Release);
    call(&pool, req("lost", 0)).await;
    sleep(Duration::from_secs(1)).await;
    let attempts = fake.connects();
    assert_eq!(attempts.len(), 11);
    assert_between(attempts[10] - attempts[9], 50, 105);

    // A server error leaves the connection alone.
    let answer = call(&pool, req("server_error", 0)).await;
    assert_eq!(error_kind(&answer).as_deref(), Some("server_error"));
    assert_eq!(who(submit(&pool, who_now())).await, (0, 11));
}

#[tokio::test(start_paused = true)]
async fn a_late_failure_of_an_old_connection_spares_the_new_one() {
    let fake = Fake {
        concurrency: 2,
        ..Fake::default()
    };
    let pool = start(fake, settings(1, Strategy::Best)).await;
    let late = submit(&pool, req("lost", 500));
    let early = submit(&pool, req("lost", 0));
    assert_eq!(
        error_kind(&early.await.unwrap()).as_deref(),
        Some("connection_lost")
    );
    // Reopened at once; the first connection's second loss comes later.
    assert_eq!(who(submit(&pool, who_now())).await, (0, 2));
    assert_eq!(
        error_kind(&late.await.unwrap()).as_deref(),
        Some("connection_lost")
    );
    assert_eq!(who(submit(&pool, who_now())).await, (0, 2));
    assert_eq!(pool.driver.connects().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn keepalive_pings_idle_connections_and_replaces_a_failed_one() {
    let fake = Fake {
        keepalive: Some(Duration::from_secs(10)),
        ..Fake::default()
    };
    let pool = start(fake, settings(1, Strategy::Best)).await;
    let fake = &pool.driver;
    sleep(Duration::from_secs(35)).await;
    assert_eq!(fake.pings.load(Ordering::Acquire), 3);
    // A request counts as activity: the next ping is 10 s after it.
    who(submit(&pool, who_now())).await;
    sleep(Duration::from_secs(9)).await;
    assert_eq!(fake.pings.load(Ordering::Acquire), 3);
    sleep(Duration::from_secs(2)).await;
    assert_eq!(fake.pings.load(Ordering::Acquire), 4);

    fake.ping.store(PING_FAILS, Ordering::Release);
    sleep(Duration::from_secs(10)).await;
    assert_eq!(fake.pings.load(Ordering::Acquire), 5);
    assert_eq!(fake.connects().len(), 2);
    fake.ping.store(PING_HANGS, Ordering::Release);
    // A ping with no answer is given up after PING_TIMEOUT.
    sleep(Duration::from_secs(10) + PING_TIMEOUT + Duration::from_millis(10)).await;
    assert_eq!(fake.pings.load(Ordering::Acquire), 6);
    assert_eq!(fake.connects().len(), 3);
    fake.ping.store(PING_OK, Ordering::Release);
    assert_eq!(who(submit(&pool, who_now())).await, (0, 3));
}

/// A caller that can give up, and records what reached it.
#[derive(Default)]
struct Caller {
    gave_up: AtomicBool,
    answers: Mutex<Vec<Term>>,
}

impl ReplySink for Caller {
    fn deliver(&self, result: Term) {
        self.answers.lock().unwrap().push(result);
    }
    fn is_cancelled(&self) -> bool {
        self.gave_up.load(Ordering::Acquire)
    }
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_request_is_neither_run_nor_answered() {
    for strategy in [Strategy::Best, Strategy::Available] {
        let pool = start(Fake::default(), settings(1, strategy)).await;
        let busy = submit(&pool, req("who", 100));
        let caller = Arc::new(Caller::default());
        pool.submit(Choice::Strategy, who_now(), Reply::new(caller.clone()))
            .unwrap();
        // It gave up while its request was queued (or waiting for a worker).
        caller.gave_up.store(true, Ordering::Release);
        who(busy).await;
        sleep(Duration::from_secs(2)).await;
        who(submit(&pool, who_now())).await;
        assert_eq!(
            pool.driver.executed.load(Ordering::Acquire),
            2,
            "{strategy:?}"
        );
        assert!(caller.answers.lock().unwrap().is_empty(), "{strategy:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_panic_in_execute_is_an_error_and_the_worker_goes_on() {
    let pool = start(Fake::default(), settings(1, Strategy::Best)).await;
    let answer = call(&pool, Term::atom("panic")).await;
    assert_eq!(
        answer,
        Error::Internal("the request panicked: boom".into()).to_term()
    );
    assert_eq!(who(submit(&pool, who_now())).await, (0, 1));
}

#[tokio::test(start_paused = true)]
async fn a_panic_in_closed_ends_the_connection_not_the_worker() {
    let fake = Fake {
        closed_panics: AtomicUsize::new(1),
        ..Fake::default()
    };
    let pool = start(fake, settings(1, Strategy::Best)).await;
    sleep(Duration::from_millis(50)).await;
    // Connection 2: the worker replaced the first and carries requests.
    let answered = tokio::time::timeout(Duration::from_secs(5), who(submit(&pool, who_now())));
    assert_eq!(answered.await.expect("the worker answers"), (0, 2));
}

#[tokio::test(start_paused = true)]
async fn a_bad_request_is_refused_by_submit() {
    let pool = start(Fake::default(), settings(1, Strategy::Best)).await;
    let (err, rx) = refused(&pool, Choice::Strategy, Term::atom("dance"));
    assert!(matches!(err, Error::BadRequest(_)), "{err:?}");
    assert!(rx.await.is_err());
}

fn kv(k: &str, v: Term) -> Term {
    Term::tuple(vec![Term::atom(k), v])
}

/// Each worker's `connected` flag, from `stats`.
fn connected(pool: &Arc<Pool<Fake>>) -> Vec<bool> {
    let Some(Term::List(workers)) = pool.stats().get("workers").cloned() else {
        panic!("no workers in the stats");
    };
    workers
        .iter()
        .map(|w| match w {
            Term::Tuple(t) => t[1].get("connected") == Some(&Term::atom("true")),
            _ => panic!("bad worker entry {w:?}"),
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn stats_count_queued_and_running_requests() {
    let pool = start(Fake::default(), settings(2, Strategy::Best)).await;
    let rxs: Vec<_> = (0..3).map(|_| submit(&pool, req("who", 1000))).collect();
    sleep(Duration::from_millis(1)).await;
    let worker = |i: i64, queued: i64, running: i64| {
        Term::tuple(vec![
            Term::Int(i),
            Term::List(vec![
                kv("message_queue_len", Term::Int(queued)),
                kv("in_flight", Term::Int(running)),
                kv("connected", Term::atom("true")),
            ]),
        ])
    };
    let expected = |queued: i64, running: i64, workers: Vec<Term>| {
        Term::List(vec![
            kv("size", Term::Int(2)),
            kv("strategy", Term::atom("best_worker")),
            kv("next_worker", Term::Int(1)),
            kv("total_message_queue_len", Term::Int(queued)),
            kv("total_in_flight", Term::Int(running)),
            kv("workers", Term::List(workers)),
        ])
    };
    assert_eq!(
        pool.stats(),
        expected(1, 2, vec![worker(1, 1, 1), worker(2, 0, 1)])
    );
    for rx in rxs {
        who(rx).await;
    }
    assert_eq!(
        pool.stats(),
        expected(0, 0, vec![worker(1, 0, 0), worker(2, 0, 0)])
    );
}

#[tokio::test(start_paused = true)]
async fn stop_refuses_new_requests_and_answers_queued_ones() {
    let pool = start(Fake::default(), settings(1, Strategy::Best)).await;
    let running = submit(&pool, req("who", 100));
    let queued = submit(&pool, who_now());
    pool.stop();
    let (err, _) = refused(&pool, Choice::Strategy, who_now());
    assert_eq!(err, Error::PoolStopped);
    assert_eq!(who(running).await, (0, 1));
    assert_eq!(who(queued).await, (0, 1));
}

#[tokio::test(start_paused = true)]
async fn a_verdict_apart_from_the_answer_replaces_the_connection() {
    let pool = start(Fake::default(), settings(1, Strategy::Best)).await;
    assert_eq!(call(&pool, req("broken", 0)).await, Term::atom("ok"));
    assert_eq!(who(submit(&pool, who_now())).await, (0, 2));
}

#[tokio::test(start_paused = true)]
async fn requests_wait_while_a_connection_is_being_opened() {
    let fake = Fake {
        connect_delay: Duration::from_millis(50),
        ..Fake::default()
    };
    let pool = start(fake, settings(1, Strategy::Best)).await;
    call(&pool, req("lost", 0)).await;
    let t0 = Instant::now();
    // Queued behind the reconnect instead of failing: a blip is not an outage.
    assert_eq!(who(submit(&pool, who_now())).await, (0, 2));
    assert_between(t0.elapsed(), 50, 55);
}

fn lease_of(pool: &Arc<Pool<Fake>>) -> oneshot::Receiver<Term> {
    let (reply, rx) = reply::oneshot();
    pool.lease(Choice::Strategy, lease::testing::keep, reply)
        .expect("admitted");
    rx
}

async fn leased(pool: &Arc<Pool<Fake>>) -> Arc<dyn lease::AnyLease> {
    lease::testing::taken(lease_of(pool).await.expect("granted"))
}

#[tokio::test(start_paused = true)]
async fn a_lease_has_the_connection_alone_until_released() {
    let fake = Fake {
        concurrency: 4,
        ..Fake::default()
    };
    let pool = start(fake, settings(1, Strategy::Best)).await;
    // Granted once the request running before it is done.
    let before = submit(&pool, req("who", 100));
    let t0 = Instant::now();
    let lease = leased(&pool).await;
    assert_between(t0.elapsed(), 100, 105);
    assert!(before.await.is_ok());
    // Nothing else runs on the connection meanwhile, though it pipelines.
    let mut waiting = submit(&pool, who_now());
    assert_eq!(lease::testing::call(&lease, who_now()).await, tuple2(0, 1));
    sleep(Duration::from_secs(1)).await;
    assert!(waiting.try_recv().is_err());
    lease.release(false);
    assert_eq!(who(waiting).await, (0, 1));
    assert_eq!(pool.driver.resets.load(Ordering::Acquire), 0);
    let (reply, _) = reply::oneshot();
    assert!(matches!(
        lease.submit(who_now(), reply),
        Err(Error::BadRequest(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn a_dropped_lease_is_reset_and_comes_back() {
    let pool = start(Fake::default(), settings(1, Strategy::Best)).await;
    let lease = leased(&pool).await;
    lease::testing::call(&lease, who_now()).await;
    drop(lease);
    assert_eq!(who(submit(&pool, who_now())).await, (0, 1));
    assert_eq!(pool.driver.resets.load(Ordering::Acquire), 1);
    // A reset that fails replaces the connection.
    pool.driver.reset_fails.store(true, Ordering::Release);
    drop(leased(&pool).await);
    assert_eq!(who(submit(&pool, who_now())).await, (0, 2));
}

#[tokio::test(start_paused = true)]
async fn a_broken_lease_answers_errors_and_its_connection_is_replaced() {
    let pool = start(Fake::default(), settings(1, Strategy::Best)).await;
    let lease = leased(&pool).await;
    let lost = lease::testing::call(&lease, req("lost", 0)).await;
    assert_eq!(error_kind(&lost).as_deref(), Some("connection_lost"));
    let executed = pool.driver.executed.load(Ordering::Acquire);
    let after = lease::testing::call(&lease, who_now()).await;
    assert_eq!(error_kind(&after).as_deref(), Some("connection_lost"));
    assert_eq!(pool.driver.executed.load(Ordering::Acquire), executed);
    lease.release(false);
    assert_eq!(who(submit(&pool, who_now())).await, (0, 2));
    assert_eq!(pool.driver.resets.load(Ordering::Acquire), 0);
}

#[tokio::test(start_paused = true)]
async fn a_lease_nobody_waits_for_is_not_granted() {
    let pool = start(Fake::default(), settings(1, Strategy::Best)).await;
    let busy = submit(&pool, req("who", 100));
    drop(lease_of(&pool));
    assert!(busy.await.is_ok());
    assert_eq!(who(submit(&pool, who_now())).await, (0, 1));
    assert_eq!(pool.driver.resets.load(Ordering::Acquire), 0);
    assert_eq!(connected(&pool), [true]);
}

#[tokio::test(start_paused = true)]
async fn leases_queue_and_count_like_requests() {
    let pool = start(Fake::default(), settings(2, Strategy::Best)).await;
    let first = leased(&pool).await;
    let second = leased(&pool).await;
    // Both workers are leased: the third waits in a queue like a request.
    let mut third = lease_of(&pool);
    sleep(Duration::from_secs(1)).await;
    assert!(third.try_recv().is_err());
    first.release(false);
    let third = lease::testing::taken(third.await.expect("granted"));
    assert_eq!(lease::testing::call(&third, who_now()).await, tuple2(0, 1));
    drop((second, third));
}

fn tuple2(a: i64, b: i64) -> Term {
    Term::tuple(vec![Term::Int(a), Term::Int(b)])
}

/// A caller of a streamed request: it keeps the parts, and asks for the
/// next one with `more`.
struct Streamed {
    parts: Mutex<Vec<Term>>,
    answer: Mutex<Option<Term>>,
    credit: Arc<tokio::sync::Semaphore>,
    gone: AtomicBool,
}

impl Streamed {
    fn new() -> Streamed {
        Streamed {
            parts: Mutex::default(),
            answer: Mutex::default(),
            credit: Arc::new(tokio::sync::Semaphore::new(0)),
            gone: AtomicBool::new(false),
        }
    }
    fn more(&self) {
        self.credit.add_permits(1);
    }
    fn leave(&self) {
        self.gone.store(true, Ordering::Release);
        self.credit.close();
    }
    fn parts(&self) -> Vec<Term> {
        self.parts.lock().unwrap().clone()
    }
    fn answer(&self) -> Option<Term> {
        self.answer.lock().unwrap().clone()
    }
}

impl ReplySink for Streamed {
    fn deliver(&self, result: Term) {
        *self.answer.lock().unwrap() = Some(result);
    }
    fn is_cancelled(&self) -> bool {
        self.gone.load(Ordering::Acquire)
    }
    fn part(&self, part: Term) -> BoxFuture<'static, bool> {
        self.parts.lock().unwrap().push(part);
        let credit = self.credit.clone();
        Box::pin(async move { credit.acquire().await.map(|p| p.forget()).is_ok() })
    }
}

fn stream(pool: &Arc<Pool<Fake>>, n: i64) -> Arc<Streamed> {
    let caller = Arc::new(Streamed::new());
    let reply = Reply::new(caller.clone());
    pool.stream(Choice::Strategy, req("count", n), reply)
        .expect("admitted");
    caller
}

#[tokio::test(start_paused = true)]
async fn parts_are_produced_as_the_caller_asks_for_them() {
    let pool = start(Fake::default(), settings(1, Strategy::Best)).await;
    let caller = stream(&pool, 3);
    sleep(Duration::from_secs(1)).await;
    assert_eq!(caller.parts(), [Term::Int(1)]);
    assert_eq!(pool.driver.parts.load(Ordering::Acquire), 1);
    caller.more();
    sleep(Duration::from_millis(1)).await;
    assert_eq!(caller.parts(), [Term::Int(1), Term::Int(2)]);
    assert_eq!(caller.answer(), None);
    caller.more();
    caller.more();
    sleep(Duration::from_millis(1)).await;
    assert_eq!(caller.parts().len(), 3);
    assert_eq!(caller.answer(), Some(Term::atom("done")));
    // The worker is free again.
    assert_eq!(who(submit(&pool, who_now())).await, (0, 1));
}

#[tokio::test(start_paused = true)]
async fn a_caller_that_leaves_stops_the_stream() {
    let pool = start(Fake::default(), settings(1, Strategy::Best)).await;
    let caller = stream(&pool, 1000);
    sleep(Duration::from_millis(1)).await;
    caller.more();
    sleep(Duration::from_millis(1)).await;
    caller.leave();
    assert_eq!(who(submit(&pool, who_now())).await, (0, 1));
    assert_eq!(pool.driver.parts.load(Ordering::Acquire), 2);
    assert_eq!(caller.answer(), Some(Term::atom("stopped")));
}

#[tokio::test(start_paused = true)]
async fn a_caller_that_cannot_take_parts_stops_the_stream_at_once() {
    let pool = start(Fake::default(), settings(1, Strategy::Best)).await;
    let answer = {
        let (reply, rx) = reply::oneshot();
        pool.stream(Choice::Strategy, req("count", 5), reply)
            .unwrap();
        rx.await.unwrap()
    };
    assert_eq!(answer, Term::atom("stopped"));
    assert_eq!(pool.driver.parts.load(Ordering::Acquire), 1);
}

/// The counters the metrics endpoint reads move with what the engine did.
#[tokio::test(start_paused = true)]
async fn figures_count_what_the_engine_did() {
    let pool = start(Fake::default(), settings(2, Strategy::Next)).await;
    let kind = |f: &Figures, k: &str| f.errors[Error::KINDS.iter().position(|x| *x == k).unwrap()];
    for _ in 0..3 {
        call(&pool, req("who", 10)).await;
    }
    call(&pool, req("server_error", 0)).await;
    let (e, _rx) = refused(&pool, Choice::Strategy, Term::atom("nonsense"));
    assert_eq!(e.kind(), "bad_request");
    let f = pool.figures().unwrap();
    assert_eq!(
        (f.workers, f.connected, f.queued, f.in_flight),
        (2, 2, 0, 0)
    );
    assert_eq!(f.requests, 5);
    assert_eq!(kind(&f, "server_error"), 1);
    assert_eq!(kind(&f, "bad_request"), 1);
    // Four answers: three took 10 ms (the 10 ms bucket), one none.
    assert_eq!(f.latency_buckets[0], 1);
    assert_eq!(f.latency_buckets[5], 1);
    assert_eq!(f.latency_buckets[6], 4);
    assert_eq!(f.latency_sum_us, 30_000);
    // A request in flight and one queued behind it on the same worker.
    let slow = submit_to(&pool, Choice::Hash(0), req("who", 1000));
    let behind = submit_to(&pool, Choice::Hash(0), req("who", 0));
    sleep(Duration::from_millis(1)).await;
    let f = pool.figures().unwrap();
    assert_eq!((f.queued, f.in_flight), (1, 1));
    // Their callers give up: one was running, one never ran.
    drop((slow, behind));
    sleep(Duration::from_millis(1100)).await;
    let f = pool.figures().unwrap();
    assert_eq!(f.timeouts, 2);
    // A broken connection is reopened: counted, and connected again.
    call(&pool, req("lost", 0)).await;
    sleep(Duration::from_millis(200)).await;
    let f = pool.figures().unwrap();
    assert_eq!(kind(&f, "connection_lost"), 1);
    assert_eq!((f.reconnects, f.connect_failures, f.connected), (1, 0, 2));
}

/// A driver whose connections reopen by themselves is believed about them,
/// in `stats/3` and in the figures, where the engine saw nothing break.
#[tokio::test(start_paused = true)]
async fn a_self_reconnecting_driver_tells_its_connections_state() {
    let fake = Fake {
        own_state: Some((
            vec![AtomicBool::new(true), AtomicBool::new(true)],
            AtomicUsize::new(0),
        )),
        ..Fake::default()
    };
    let pool = start(fake, settings(2, Strategy::Next)).await;
    assert_eq!(connected(&pool), vec![true, true]);
    let (up, reconnects) = pool.driver.own_state.as_ref().unwrap();
    up[1].store(false, Ordering::Release);
    reconnects.store(3, Ordering::Release);
    assert_eq!(connected(&pool), vec![true, false]);
    let f = pool.figures().unwrap();
    assert_eq!((f.connected, f.reconnects), (1, 3));
}

#[tokio::test(start_paused = true)]
async fn a_request_for_an_idle_worker_goes_the_direct_way_and_counts_as_running() {
    let fake = Fake {
        direct: true,
        concurrency: 8,
        ..Fake::default()
    };
    let pool = start(fake, settings(1, Strategy::Best)).await;
    let first = submit(&pool, req("who", 100));
    // The worker is busy with the first now: the queue, then `execute`.
    let second = submit(&pool, req("who", 100));
    sleep(Duration::from_millis(1)).await;
    let in_flight = |pool: &Arc<Pool<Fake>>| {
        let Term::List(stats) = pool.stats() else {
            panic!("stats are a list")
        };
        stats
            .into_iter()
            .find_map(|kv| match kv {
                Term::Tuple(t) if t[0].as_atom() == Some("total_in_flight") => Some(t[1].clone()),
                _ => None,
            })
            .expect("total_in_flight")
    };
    assert_eq!(in_flight(&pool), Term::Int(2));
    assert_eq!(who(first).await, (0, 1));
    assert_eq!(who(second).await, (0, 1));
    assert_eq!(pool.driver.directs.load(Ordering::Acquire), 1);
    assert_eq!(pool.driver.executed.load(Ordering::Acquire), 1);
    assert_eq!(in_flight(&pool), Term::Int(0));
    // A request the driver gives back goes to the worker.
    let lost = call(&pool, req("server_error", 0)).await;
    assert_eq!(error_kind(&lost).as_deref(), Some("server_error"));
    assert_eq!(pool.driver.executed.load(Ordering::Acquire), 2);
    // An answer dropped unsent answers an error and frees its place.
    let dropped = call(&pool, Term::atom("panic")).await;
    assert_eq!(error_kind(&dropped).as_deref(), Some("internal"));
    assert_eq!(in_flight(&pool), Term::Int(0));
    assert_eq!(who(submit(&pool, who_now())).await, (0, 1));
    assert_eq!(pool.driver.directs.load(Ordering::Acquire), 3);
}

#[tokio::test(start_paused = true)]
async fn a_leased_connection_takes_nothing_the_direct_way() {
    let fake = Fake {
        direct: true,
        ..Fake::default()
    };
    let pool = start(fake, settings(1, Strategy::Best)).await;
    let lease = leased(&pool).await;
    let waiting = submit(&pool, who_now());
    sleep(Duration::from_millis(10)).await;
    assert_eq!(pool.driver.directs.load(Ordering::Acquire), 0);
    lease.release(false);
    assert_eq!(who(waiting).await, (0, 1));
    assert_eq!(pool.driver.executed.load(Ordering::Acquire), 1);
    assert_eq!(who(submit(&pool, who_now())).await, (0, 1));
    assert_eq!(pool.driver.directs.load(Ordering::Acquire), 1);
}
