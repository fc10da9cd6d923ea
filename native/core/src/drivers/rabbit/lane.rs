//! One worker's lane: its requests in order, and the task that owns its AMQP
//! connection and channel, carries the requests over them, and reopens
//! them when the broker closes them.
//!
//! The lane, not the engine, reconnects (with the engine's `Backoff`), as
//! what it holds outlives a connection: a publish admitted while the
//! connection is down waits for the next one (up to `call_timeout` after
//! it was admitted), and with confirms every publish the broker has not
//! acknowledged when the connection dies is sent again on the next one, so
//! a broker restart loses none (at least once). A call admitted while the
//! connection is down is answered `{error, {no_connection, _}}` at once.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use lapin::options::ConfirmSelectOptions;
use lapin::protocol::AMQPErrorKind;
use lapin::types::ShortString;
use lapin::uri::{AMQPAuthority, AMQPQueryString, AMQPScheme, AMQPUri, AMQPUserInfo};
use lapin::{Channel, Confirmation, Connection, ConnectionProperties, ErrorKind, Event};
use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::config::RabbitConfig;
use super::methods::{self, Method, Publish};
use crate::engine::backoff::Backoff;
use crate::error::{Error, Result};
use crate::term::Term;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Publishes one channel may have sent and not yet seen confirmed.
pub const CONFIRM_WINDOW: usize = 256;

/// What every lane of a pool shares.
pub struct Shared {
    pub config: RabbitConfig,
    pub call_timeout: Duration,
    /// `host:port/vhost`, for messages (never the credentials).
    pub target: String,
    /// Exchanges declared through the pool, declared again on every new
    /// connection: a broker restart loses non-durable ones.
    declared: Mutex<Vec<Method>>,
    pub counters: Counters,
    drop_log: RateLog,
    fail_log: RateLog,
}

#[derive(Default)]
pub struct Counters {
    /// Sent, and with confirms acknowledged by the broker.
    pub published: AtomicU64,
    pub nacked: AtomicU64,
    pub confirm_timeouts: AtomicU64,
    /// Refused by the broker (a channel error) or not sent within call_timeout.
    pub failed: AtomicU64,
    /// Dropped from a full lane (`max_worker_queue_len`), oldest first.
    pub dropped: AtomicU64,
    /// Publishes sent again on a new connection or channel.
    pub resent: AtomicU64,
    pub reconnects: AtomicU64,
}

impl Counters {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// A warning logged at most once a second, with how many were suppressed.
#[derive(Default)]
struct RateLog {
    last: Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

impl RateLog {
    fn warn(&self, message: impl FnOnce() -> String) {
        let now = Instant::now();
        let Ok(mut last) = self.last.lock() else {
            return;
        };
        if last.is_some_and(|t| now.duration_since(t) < Duration::from_secs(1)) {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        *last = Some(now);
        let more = self.suppressed.swap(0, Ordering::Relaxed);
        log::warn!("{} ({more} more like it in the last second)", message());
    }
}

impl Shared {
    pub fn new(config: RabbitConfig, call_timeout: Duration) -> Shared {
        let target = format!("{}:{}{}", config.host, config.port, vhost_shown(&config));
        Shared {
            config,
            call_timeout,
            target,
            declared: Mutex::new(Vec::new()),
            counters: Counters::default(),
            drop_log: RateLog::default(),
            fail_log: RateLog::default(),
        }
    }

    /// Remembers a successful declaration (the latest per name), or forgets
    /// a deleted exchange.
    fn remember(&self, m: &Method) {
        let Ok(mut declared) = self.declared.lock() else {
            return;
        };
        match m {
            Method::ExchangeDeclare {
                exchange, options, ..
            } if !options.passive => {
                declared.retain(|d| !same_exchange(d, exchange));
                declared.push(m.clone());
            }
            Method::ExchangeDelete { exchange, .. } => {
                declared.retain(|d| !same_exchange(d, exchange))
            }
            _ => {}
        }
    }

    fn declared(&self) -> Vec<Method> {
        self.declared.lock().map(|d| d.clone()).unwrap_or_default()
    }
}

fn same_exchange(m: &Method, name: &ShortString) -> bool {
    matches!(m, Method::ExchangeDeclare { exchange, .. } if exchange == name)
}

fn vhost_shown(config: &RabbitConfig) -> String {
    if config.virtual_host == "/" {
        String::new()
    } else {
        format!(" vhost {}", config.virtual_host)
    }
}

enum Op {
    Call {
        method: Method,
        reply: oneshot::Sender<Result<Term>>,
    },
    Publish {
        msg: Arc<Publish>,
        /// Past it, a publish still waiting for a connection fails.
        deadline: Instant,
        reply: oneshot::Sender<Result<Term>>,
    },
}

/// A publish sent with confirms on, waiting for the broker's answer.
struct Sent {
    msg: Arc<Publish>,
    deadline: Instant,
    reply: oneshot::Sender<Result<Term>>,
    confirm: Pin<Box<lapin::PublisherConfirm>>,
}

pub struct Lane {
    pub index: usize,
    shared: Arc<Shared>,
    queue: Mutex<VecDeque<Op>>,
    wake: Notify,
    pub connected: AtomicBool,
    pub blocked: AtomicBool,
    pub unconfirmed: AtomicU64,
    stop: CancellationToken,
}

/// The engine's connection handle: the lane stops, closing its AMQP
/// connection, once the engine has dropped every handle.
#[derive(Clone)]
pub struct LaneHandle {
    lane: Arc<Lane>,
    /// Cancels the lane's `stop` when the last clone is dropped.
    _stop: Arc<DropGuard>,
}

impl LaneHandle {
    /// Opens the first connection (failing the start with a clear error),
    /// then starts the lane's task.
    pub async fn open(shared: Arc<Shared>, index: usize) -> Result<(LaneHandle, Arc<Lane>)> {
        let config = &shared.config;
        let mut tries = 0;
        let link = loop {
            match Link::open(&shared).await {
                Ok(link) => break link,
                Err(e) if tries < config.start_attempts => {
                    tries += 1;
                    log::warn!(
                        "{e}; try {tries} of {} in {:?}",
                        config.start_attempts,
                        config.start_delay
                    );
                    tokio::time::sleep(config.start_delay).await;
                }
                Err(e) => return Err(e),
            }
        };
        let lane = Arc::new(Lane {
            index,
            shared,
            queue: Mutex::new(VecDeque::new()),
            wake: Notify::new(),
            connected: AtomicBool::new(true),
            blocked: AtomicBool::new(false),
            unconfirmed: AtomicU64::new(0),
            stop: CancellationToken::new(),
        });
        crate::runtime::handle().spawn(lane.clone().run(link));
        let handle = LaneHandle {
            lane: lane.clone(),
            _stop: Arc::new(lane.stop.clone().drop_guard()),
        };
        Ok((handle, lane))
    }

    pub fn call(&self, method: Method) -> Option<oneshot::Receiver<Result<Term>>> {
        let lane = &self.lane;
        if !lane.connected.load(Ordering::Acquire) {
            return None;
        }
        let (reply, rx) = oneshot::channel();
        lane.push(Op::Call { method, reply });
        Some(rx)
    }

    pub fn publish(&self, msg: Arc<Publish>) -> oneshot::Receiver<Result<Term>> {
        let lane = &self.lane;
        let (reply, rx) = oneshot::channel();
        let deadline = Instant::now() + lane.shared.call_timeout;
        lane.push(Op::Publish {
            msg,
            deadline,
            reply,
        });
        rx
    }
}

fn request_dropped() -> Result<Term> {
    Ok(Term::atom("request_dropped"))
}

fn no_connection(target: &str) -> Result<Term> {
    Err(Error::NoConnection(format!(
        "rabbit {target}: the connection is down; reconnecting"
    )))
}

impl Lane {
    pub fn queued(&self) -> usize {
        self.queue.lock().map(|q| q.len()).unwrap_or(0)
    }

    /// Queues `op`; a full lane drops its oldest request first, as
    /// MongooseIM's worker drops from the head of its mailbox.
    fn push(&self, op: Op) {
        let dropped = match self.queue.lock() {
            Ok(mut q) => {
                let old = (q.len() >= self.shared.config.max_queue_len)
                    .then(|| q.pop_front())
                    .flatten();
                q.push_back(op);
                old
            }
            Err(_) => Some(op),
        };
        self.wake.notify_one();
        if let Some(old) = dropped {
            Counters::bump(&self.shared.counters.dropped);
            let limit = self.shared.config.max_queue_len;
            self.shared.drop_log.warn(|| {
                format!(
                    "rabbit {}: worker {} dropped its oldest request: max_worker_queue_len ({limit}) reached",
                    self.shared.target,
                    self.index + 1
                )
            });
            match old {
                Op::Call { reply, .. } | Op::Publish { reply, .. } => {
                    let _ = reply.send(request_dropped());
                }
            }
        }
    }

    fn pop(&self) -> Option<Op> {
        self.queue.lock().ok().and_then(|mut q| q.pop_front())
    }

    /// Puts publishes back at the head, in their order, to be sent again.
    fn requeue(&self, sent: impl DoubleEndedIterator<Item = Op>) {
        if let Ok(mut q) = self.queue.lock() {
            for op in sent.rev() {
                q.push_front(op);
            }
        }
    }

    fn fail(&self, msg: &Publish, why: String) {
        Counters::bump(&self.shared.counters.failed);
        self.shared.fail_log.warn(|| {
            format!(
                "rabbit {}: publish to exchange {:?} with routing key {:?} failed: {why}",
                self.shared.target,
                msg.exchange.as_str(),
                msg.routing_key.as_str()
            )
        });
    }

    /// While the connection is down: calls are answered at once, publishes
    /// wait until their deadline.
    fn sweep_while_down(&self) {
        let now = Instant::now();
        let mut failed = Vec::new();
        if let Ok(mut q) = self.queue.lock() {
            let mut kept = VecDeque::with_capacity(q.len());
            for op in q.drain(..) {
                match op {
                    Op::Publish { deadline, .. } if deadline > now => kept.push_back(op),
                    other => failed.push(other),
                }
            }
            *q = kept;
        }
        for op in failed {
            match op {
                Op::Call { reply, .. } => {
                    let _ = reply.send(no_connection(&self.shared.target));
                }
                Op::Publish { msg, reply, .. } => {
                    self.fail(&msg, "no connection within call_timeout".into());
                    let _ = reply.send(no_connection(&self.shared.target));
                }
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let q = self.queue.lock().ok()?;
        q.iter()
            .filter_map(|op| match op {
                Op::Publish { deadline, .. } => Some(*deadline),
                Op::Call { .. } => None,
            })
            .min()
    }

    async fn run(self: Arc<Lane>, first: Link) {
        let mut link = Some(first);
        let mut sent: VecDeque<Sent> = VecDeque::new();
        let mut backoff = Backoff::default();
        // The next reconnection attempt: at once after a loss, then backing off.
        let mut retry_at = Instant::now();
        loop {
            let Some(current) = link.as_mut() else {
                self.connected.store(false, Ordering::Release);
                self.sweep_while_down();
                if self.stop.is_cancelled() && self.queued() == 0 {
                    return;
                }
                if Instant::now() < retry_at {
                    // Publishes arriving meanwhile do not hasten the next try.
                    let until = self.next_deadline().map_or(retry_at, |d| d.min(retry_at));
                    tokio::select! {
                        _ = tokio::time::sleep_until(until) => {}
                        _ = self.wake.notified() => {}
                        _ = self.stop.cancelled(), if self.queued() == 0 => {}
                    }
                    continue;
                }
                match Link::open(&self.shared).await {
                    Ok(mut new) => {
                        self.redeclare(&mut new).await;
                        link = Some(new);
                        backoff.reset();
                        Counters::bump(&self.shared.counters.reconnects);
                        self.blocked.store(false, Ordering::Release);
                        self.connected.store(true, Ordering::Release);
                        log::info!(
                            "rabbit {}: worker {} reconnected",
                            self.shared.target,
                            self.index + 1
                        );
                    }
                    Err(e) => {
                        let wait = backoff.failed();
                        log::warn!(
                            "rabbit worker {} reconnect failed, next try in {wait:?}: {e}",
                            self.index + 1
                        );
                        retry_at = Instant::now() + wait;
                    }
                }
                continue;
            };
            self.unconfirmed.store(sent.len() as u64, Ordering::Relaxed);
            let step = if sent.len() < CONFIRM_WINDOW {
                self.pop()
            } else {
                None
            };
            let outcome = match step {
                Some(op) => self.carry(current, op, &mut sent).await,
                None => self.wait(current, &mut sent).await,
            };
            match outcome {
                Flow::Go => {}
                Flow::ChannelClosed => {
                    // Whatever the channel still had unconfirmed never
                    // reached a queue: send it again on a new channel.
                    self.resend(&mut sent);
                    if let Err(e) = current.reopen_channel(&self.shared).await {
                        log::warn!(
                            "rabbit {}: reopening the channel failed: {e}",
                            self.shared.target
                        );
                        self.lose(&mut link, &mut sent);
                    }
                }
                Flow::Lost(why) => {
                    log::warn!(
                        "rabbit {}: worker {} lost its connection: {why}",
                        self.shared.target,
                        self.index + 1
                    );
                    self.lose(&mut link, &mut sent);
                }
                Flow::Stop => {
                    if let Some(l) = link.take() {
                        l.close().await;
                    }
                    self.connected.store(false, Ordering::Release);
                    return;
                }
            }
        }
    }

    /// Sends again what the broker has not confirmed; a confirm that
    /// already arrived (before the channel closed) counts as usual.
    fn resend(&self, sent: &mut VecDeque<Sent>) {
        let mut again = Vec::with_capacity(sent.len());
        for mut s in sent.drain(..) {
            match s.confirm.as_mut().now_or_never() {
                Some(Ok(Confirmation::Ack(_))) => {
                    Counters::bump(&self.shared.counters.published);
                    let _ = s.reply.send(Ok(Term::atom("ok")));
                }
                _ => {
                    Counters::bump(&self.shared.counters.resent);
                    again.push(Op::Publish {
                        msg: s.msg,
                        deadline: Instant::now() + self.shared.call_timeout,
                        reply: s.reply,
                    });
                }
            }
        }
        self.requeue(again.into_iter());
    }

    fn lose(&self, link: &mut Option<Link>, sent: &mut VecDeque<Sent>) {
        *link = None;
        self.connected.store(false, Ordering::Release);
        self.resend(sent);
    }

    async fn redeclare(&self, link: &mut Link) {
        for m in self.shared.declared() {
            let done =
                tokio::time::timeout(self.shared.call_timeout, methods::run(&link.channel, &m));
            match done.await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    log::warn!(
                        "rabbit {}: declaring an exchange again failed: {e}",
                        self.shared.target
                    );
                    if let Err(e) = link.reopen_channel(&self.shared).await {
                        log::warn!(
                            "rabbit {}: reopening the channel failed: {e}",
                            self.shared.target
                        );
                    }
                }
                Err(_) => log::warn!(
                    "rabbit {}: declaring an exchange again timed out",
                    self.shared.target
                ),
            }
        }
    }

    /// Nothing to send: waits for a request, a confirm, or the connection's end.
    async fn wait(&self, link: &mut Link, sent: &mut VecDeque<Sent>) -> Flow {
        let idle = sent.is_empty();
        let head = sent.front_mut().map(|s| (s.deadline, &mut s.confirm));
        let stop = self.stop.cancelled();
        let step = tokio::select! {
            biased;
            event = link.events.next() => Step::Event(event),
            confirm = async {
                match head {
                    Some((deadline, confirm)) => tokio::time::timeout_at(deadline, confirm).await.ok(),
                    None => std::future::pending().await,
                }
            } => Step::Confirm(Box::new(confirm)),
            _ = self.wake.notified() => Step::Wake,
            _ = stop, if idle && self.queued() == 0 => Step::Stop,
        };
        match step {
            Step::Wake => Flow::Go,
            Step::Stop => Flow::Stop,
            Step::Event(Some(Event::ConnectionBlocked(reason))) => {
                log::warn!(
                    "rabbit {}: the broker blocked publishing: {reason}",
                    self.shared.target
                );
                self.blocked.store(true, Ordering::Release);
                Flow::Go
            }
            Step::Event(Some(Event::ConnectionUnblocked)) => {
                self.blocked.store(false, Ordering::Release);
                Flow::Go
            }
            // A channel's error is reported here too; the request that
            // meets the closed channel reopens it.
            Step::Event(Some(Event::Error(_))) if link.conn.status().connected() => Flow::Go,
            Step::Event(Some(Event::Error(e))) => Flow::Lost(describe(&e)),
            Step::Event(None) => Flow::Lost("the connection's events ended".into()),
            Step::Event(Some(_)) => Flow::Go,
            Step::Confirm(outcome) => self.confirmed(link, sent, *outcome),
        }
    }

    fn confirmed(
        &self,
        link: &Link,
        sent: &mut VecDeque<Sent>,
        outcome: Option<lapin::Result<Confirmation>>,
    ) -> Flow {
        let Some(head) = sent.pop_front() else {
            return Flow::Go;
        };
        let c = &self.shared.counters;
        match outcome {
            None => {
                Counters::bump(&c.confirm_timeouts);
                self.shared.fail_log.warn(|| {
                    format!(
                        "rabbit {}: no confirm for a publish to {:?} within call_timeout",
                        self.shared.target,
                        head.msg.exchange.as_str()
                    )
                });
                let _ = head
                    .reply
                    .send(Ok(Term::error(Term::atom("confirm_timeout"))));
                Flow::Go
            }
            Some(Ok(Confirmation::Nack(_))) => {
                Counters::bump(&c.nacked);
                self.shared.fail_log.warn(|| {
                    format!(
                        "rabbit {}: the broker refused (nack) a publish to {:?}",
                        self.shared.target,
                        head.msg.exchange.as_str()
                    )
                });
                let _ = head.reply.send(Ok(Term::error(Term::atom("nack"))));
                Flow::Go
            }
            Some(Ok(_)) => {
                Counters::bump(&c.published);
                let _ = head.reply.send(Ok(Term::atom("ok")));
                Flow::Go
            }
            Some(Err(e)) => match fault(&e, link) {
                Fault::Channel(code, text) => {
                    // The broker processes a channel in order, so the oldest
                    // unconfirmed publish is the one it refused.
                    self.fail(&head.msg, format!("{code} {text}"));
                    let _ = head.reply.send(Ok(closed_by_server(code, &text)));
                    Flow::ChannelClosed
                }
                Fault::Connection(why) => {
                    sent.push_front(head);
                    Flow::Lost(why)
                }
            },
        }
    }

    /// Sends one request.
    async fn carry(&self, link: &mut Link, op: Op, sent: &mut VecDeque<Sent>) -> Flow {
        match op {
            Op::Call { method, reply } => {
                let run = methods::run(&link.channel, &method);
                match tokio::time::timeout(self.shared.call_timeout, run).await {
                    Ok(Ok(answer)) => {
                        self.shared.remember(&method);
                        let _ = reply.send(Ok(Term::ok(answer)));
                        Flow::Go
                    }
                    Ok(Err(e)) => match fault(&e, link) {
                        Fault::Channel(code, text) => {
                            let _ = reply.send(Ok(closed_by_server(code, &text)));
                            Flow::ChannelClosed
                        }
                        Fault::Connection(why) => {
                            let _ = reply.send(
                                Err(Error::ConnectionLost(format!(
                                    "rabbit {}: {why}",
                                    self.shared.target
                                )))
                                .or_else(|e| Ok(e.to_term())),
                            );
                            Flow::Lost(why)
                        }
                    },
                    Err(_) => {
                        let _ = reply.send(
                            Err(Error::Timeout(format!(
                                "rabbit {}: no answer within call_timeout",
                                self.shared.target
                            )))
                            .or_else(|e| Ok(e.to_term())),
                        );
                        Flow::Go
                    }
                }
            }
            Op::Publish { msg, reply, .. } => {
                let p = &msg;
                let publishing = link.channel.basic_publish(
                    p.exchange.clone(),
                    p.routing_key.clone(),
                    p.options,
                    &p.payload,
                    p.properties.clone(),
                );
                match publishing.await {
                    Ok(confirm) if self.shared.config.confirms => {
                        sent.push_back(Sent {
                            msg,
                            deadline: Instant::now() + self.shared.call_timeout,
                            reply,
                            confirm: Box::pin(confirm),
                        });
                        Flow::Go
                    }
                    Ok(_) => {
                        Counters::bump(&self.shared.counters.published);
                        let _ = reply.send(Ok(Term::atom("ok")));
                        Flow::Go
                    }
                    Err(e) => {
                        // Not sent: it goes first on the next channel.
                        let flow = match fault(&e, link) {
                            Fault::Channel(..) => Flow::ChannelClosed,
                            Fault::Connection(why) => Flow::Lost(why),
                        };
                        let deadline = Instant::now() + self.shared.call_timeout;
                        self.requeue(std::iter::once(Op::Publish {
                            msg,
                            deadline,
                            reply,
                        }));
                        flow
                    }
                }
            }
        }
    }
}

enum Step {
    Event(Option<Event>),
    Confirm(Box<Option<lapin::Result<Confirmation>>>),
    Wake,
    Stop,
}

enum Flow {
    Go,
    ChannelClosed,
    Lost(String),
    Stop,
}

enum Fault {
    /// The broker closed the channel (a soft error): the connection stays.
    Channel(u16, String),
    Connection(String),
}

fn fault(e: &lapin::Error, link: &Link) -> Fault {
    match e.kind() {
        ErrorKind::ProtocolError(amqp) => match amqp.kind() {
            AMQPErrorKind::Soft(_) => Fault::Channel(amqp.get_id(), amqp.get_message().to_string()),
            AMQPErrorKind::Hard(_) => Fault::Connection(describe(e)),
        },
        ErrorKind::InvalidChannelState(..) if link.conn.status().connected() => {
            Fault::Channel(0, "the channel is closed".into())
        }
        _ => Fault::Connection(describe(e)),
    }
}

/// What amqp_channel:call exits with when the broker closes the channel,
/// as MongooseIM's worker answers it: `{exit, {shutdown, {server_initiated_close, Code, Text}}}`.
fn closed_by_server(code: u16, text: &str) -> Term {
    Term::tuple(vec![
        Term::atom("exit"),
        Term::tuple(vec![
            Term::atom("shutdown"),
            Term::tuple(vec![
                Term::atom("server_initiated_close"),
                Term::Int(code.into()),
                Term::from(text),
            ]),
        ]),
    ])
}

pub fn describe(e: &lapin::Error) -> String {
    e.to_string()
}

/// One AMQP connection and its channel.
struct Link {
    conn: Connection,
    channel: Channel,
    events: BoxStream<'static, Event>,
}

impl Link {
    async fn open(shared: &Shared) -> Result<Link> {
        let target = &shared.target;
        match tokio::time::timeout(CONNECT_TIMEOUT, Link::connect(shared)).await {
            Ok(Ok(link)) => Ok(link),
            Ok(Err(e)) => Err(Error::Connect(format!(
                "rabbit {target}: {}",
                explain(&e, &shared.config)
            ))),
            Err(_) => Err(Error::Connect(format!(
                "rabbit {target}: no connection within {CONNECT_TIMEOUT:?}"
            ))),
        }
    }

    async fn connect(shared: &Shared) -> lapin::Result<Link> {
        let c = &shared.config;
        let uri = AMQPUri {
            scheme: if c.tls.is_some() {
                AMQPScheme::AMQPS
            } else {
                AMQPScheme::AMQP
            },
            authority: AMQPAuthority {
                userinfo: AMQPUserInfo {
                    username: c.username.clone(),
                    password: c
                        .password
                        .as_ref()
                        .map_or("guest", |p| p.expose())
                        .to_string(),
                },
                host: c.host.clone(),
                port: c.port,
            },
            vhost: c.virtual_host.clone(),
            query: AMQPQueryString::default(),
        };
        let props = ConnectionProperties::default().with_connection_name("mongoose_native".into());
        let conn = match &c.tls {
            None => Connection::connect_uri(uri, props).await?,
            Some(tls) => super::tls::connect(uri, props, tls.clone()).await?,
        };
        let events = conn.events_listener().boxed();
        let channel = open_channel(&conn, c.confirms).await?;
        Ok(Link {
            conn,
            channel,
            events,
        })
    }

    /// A new channel on the same connection, after the broker closed one.
    async fn reopen_channel(&mut self, shared: &Shared) -> lapin::Result<()> {
        self.channel = open_channel(&self.conn, shared.config.confirms).await?;
        Ok(())
    }

    /// A clean close, so the broker logs no abrupt disconnection.
    async fn close(self) {
        let closing = async {
            let _ = self.channel.close(200, "OK".into()).await;
            let _ = self.conn.close(200, "OK".into()).await;
        };
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, closing).await;
    }
}

async fn open_channel(conn: &Connection, confirms: bool) -> lapin::Result<Channel> {
    let channel = conn.create_channel().await?;
    if confirms {
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
    }
    Ok(channel)
}

/// A failed start, naming the options to check; never the password.
fn explain(e: &lapin::Error, c: &RabbitConfig) -> String {
    let names = &c.names;
    if let ErrorKind::ProtocolError(amqp) = e.kind() {
        match amqp.get_id() {
            403 => {
                return format!(
                    "the broker refused the login: check {} and {} ({})",
                    names.username,
                    names.password,
                    amqp.get_message()
                )
            }
            530 => {
                return format!(
                    "the broker refused the virtual host {:?}: check {} ({})",
                    c.virtual_host,
                    names.virtual_host,
                    amqp.get_message()
                )
            }
            _ => {}
        }
    }
    format!("{} (check {} and its port)", describe(e), names.host)
}
