//! Single mode over plain TCP: a connection that callers write to from
//! their own thread, so that a request reaches the socket without waking a
//! runtime thread (on this 2-core machine that hand-over cost as much as
//! the rest of a GET; the README's Benchmarks say how it was measured).
//!
//! Every write is non-blocking, under the connection's lock, in the order
//! of the replies' waiters: what the socket does not take at once waits in
//! `out` for the writer task, and later writes queue behind it. A reader
//! task reads the replies in order and answers each request's waiter from
//! the runtime. A NIF call therefore never waits on the socket.

use std::collections::VecDeque;
use std::io::ErrorKind::WouldBlock;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, Notify};
use tokio_util::sync::{CancellationToken, DropGuard};

use super::resp;
use super::RedisRequest;
use crate::engine::load::Answer;
use crate::engine::pool::Outcome;
use crate::error::Error;
use crate::runtime;
use crate::term::Term;

/// What a read asks of the socket at least, so a large reply comes in few reads.
const READ_CHUNK: usize = 64 * 1024;

/// A worker's handle on the connection; when the last one goes, the reader
/// answers what was written and closes the socket.
#[derive(Clone)]
pub struct Conn {
    link: Arc<Link>,
    /// Cancels `released` when the last clone is dropped.
    _release: Arc<DropGuard>,
}

struct Link {
    stream: TcpStream,
    state: Mutex<State>,
    /// Bytes wait in `out` for the socket to take them.
    unsent: Notify,
    /// Cancelled when the connection ended (the server closed it, an I/O
    /// error, a stream that is not RESP): the worker then replaces it.
    closed: CancellationToken,
    /// Cancelled when no handle is left.
    released: CancellationToken,
}

#[derive(Default)]
struct State {
    /// Why the connection ended, set with `closed`; nothing is written after it.
    ended: Option<String>,
    /// Encoded commands the socket has not taken yet, in order.
    out: Vec<u8>,
    /// One per request written, in the order of their replies.
    waiting: VecDeque<Waiter>,
}

/// Who waits for a request's replies: a `q` for one, a `qp` for as many as
/// its commands, given back as a list.
struct Waiter {
    /// `None` for a `q`; the replies so far of a `qp`, and how many it has.
    many: Option<(Vec<Term>, usize)>,
    to: To,
}

/// Where a request's outcome goes: a caller answered from the runtime, or
/// the worker's future that carries the request.
pub enum To {
    Caller(Answer),
    Worker(oneshot::Sender<Outcome>),
}

impl From<Answer> for To {
    fn from(answer: Answer) -> To {
        To::Caller(answer)
    }
}

impl To {
    fn send(self, outcome: Outcome) {
        match self {
            To::Caller(answer) => answer.send(outcome),
            To::Worker(tx) => {
                let _ = tx.send(outcome);
            }
        }
    }
}

impl Conn {
    /// Takes over `stream` (connected, handshake done): starts its reader
    /// and writer tasks.
    pub fn start(stream: TcpStream) -> Conn {
        let link = Arc::new(Link {
            stream,
            state: Mutex::default(),
            unsent: Notify::new(),
            closed: CancellationToken::new(),
            released: CancellationToken::new(),
        });
        runtime::handle().spawn(link.clone().read());
        runtime::handle().spawn(link.clone().write());
        let release = Arc::new(link.released.clone().drop_guard());
        Conn {
            link,
            _release: release,
        }
    }

    /// Cancelled when the connection has ended.
    pub fn closed(&self) -> &CancellationToken {
        &self.link.closed
    }

    /// Writes `request` now, from whatever thread calls (it never waits);
    /// `to` gets its outcome from the runtime. A connection that has ended
    /// gives `to` back.
    pub fn write<T: Into<To>>(&self, request: &RedisRequest, to: T) -> Result<(), T> {
        let mut to = Some(to);
        self.link.writing(|state| {
            if let Some(to) = to.take() {
                state.add(request, to.into());
            }
        });
        to.map_or(Ok(()), Err)
    }

    /// Carries requests a worker took together: one write for all.
    pub async fn run_many(&self, requests: Vec<RedisRequest>) -> Vec<Outcome> {
        let waiting = self.link.writing(|state| {
            let waiter = |request| {
                let (tx, rx) = oneshot::channel();
                state.add(request, To::Worker(tx));
                rx
            };
            requests.iter().map(waiter).collect::<Vec<_>>()
        });
        let Some(answers) = waiting else {
            return requests
                .iter()
                .map(|_| lost("the connection has ended"))
                .collect();
        };
        let mut outcomes = Vec::with_capacity(answers.len());
        for rx in answers {
            outcomes.push(rx.await.unwrap_or_else(|_| lost("the connection ended")));
        }
        outcomes
    }
}

impl State {
    /// Encodes `request` into `out` and queues its waiter.
    fn add(&mut self, request: &RedisRequest, to: To) {
        let many = match request {
            RedisRequest::Single(cmd) => {
                cmd.write_packed_command(&mut self.out);
                None
            }
            RedisRequest::Pipeline { cmds, .. } => {
                cmds.iter()
                    .for_each(|cmd| cmd.write_packed_command(&mut self.out));
                Some((Vec::with_capacity(cmds.len()), cmds.len()))
            }
        };
        self.waiting.push_back(Waiter { many, to });
    }
}

fn lost(why: &str) -> Outcome {
    Outcome::failed(Error::ConnectionLost(format!("redis: {why}")))
}

impl Link {
    /// The state; a poisoned lock (a panic while holding it) ends the
    /// connection as far as writers go.
    fn lock(&self) -> Option<MutexGuard<'_, State>> {
        self.state.lock().ok()
    }

    /// Runs `add` (which queues requests) and sends what it queued: `None`,
    /// without running it, once the connection has ended.
    fn writing<R>(&self, add: impl FnOnce(&mut State) -> R) -> Option<R> {
        let mut state = self.lock().filter(|s| s.ended.is_none())?;
        let queued = !state.out.is_empty();
        let added = add(&mut state);
        // Behind bytes still waiting, the writer task sends these too.
        if !queued {
            self.flush(&mut state);
        }
        Some(added)
    }

    /// Gives the socket what it takes of `out` now: `true` once all is sent.
    fn send(&self, state: &mut State) -> std::io::Result<bool> {
        while !state.out.is_empty() {
            match self.stream.try_write(&state.out) {
                Ok(n) => {
                    state.out.drain(..n);
                }
                Err(e) if e.kind() == WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Sends `out` now, or as the socket takes it (the writer task); a
    /// failed write ends the connection and the reader answers every
    /// waiter.
    fn flush(&self, state: &mut State) {
        match self.send(state) {
            Ok(true) => {}
            Ok(false) => self.unsent.notify_one(),
            Err(e) => self.end(state, &format!("writing: {e}")),
        }
    }

    /// Marks the connection ended (the first reason stays); the reader
    /// answers the waiters.
    fn end(&self, state: &mut State, why: &str) {
        state.ended.get_or_insert_with(|| why.to_string());
        self.closed.cancel();
    }

    /// Sends what waits in `out` as the socket takes it.
    async fn write(self: Arc<Self>) {
        loop {
            tokio::select! {
                _ = self.closed.cancelled() => return,
                _ = self.unsent.notified() => {}
            }
            loop {
                let sent = match self.lock() {
                    Some(mut state) => self.send(&mut state).inspect_err(|e| {
                        self.end(&mut state, &format!("writing: {e}"));
                    }),
                    None => return,
                };
                match sent {
                    Ok(true) => break,
                    Ok(false) => {}
                    Err(_) => return,
                }
                tokio::select! {
                    _ = self.closed.cancelled() => return,
                    ready = self.stream.writable() => if let Err(e) = ready {
                        if let Some(mut state) = self.lock() {
                            self.end(&mut state, &format!("writing: {e}"));
                        }
                        return;
                    }
                }
            }
        }
    }

    /// Reads replies and answers their waiters in order, until the
    /// connection ends or, once no handle is left, nothing waits.
    async fn read(self: Arc<Self>) {
        let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK);
        let mut start = 0;
        // Bytes from `start` needed before a reply can be whole.
        let mut need: usize = 1;
        let mut released = false;
        // Made once: a fresh `cancelled()` per read would register with the
        // token again each time (a lock in its tree, seen in the profile).
        let closed = self.closed.cancelled();
        let released_now = self.released.cancelled();
        tokio::pin!(closed, released_now);
        let why = loop {
            tokio::select! {
                biased;
                _ = &mut closed => break "the connection ended".to_string(),
                _ = &mut released_now, if !released => {
                    released = true;
                    match self.lock() {
                        Some(state) if !state.waiting.is_empty() => continue,
                        _ => break "closed".to_string(),
                    }
                }
                ready = self.stream.readable() => if let Err(e) = ready {
                    break format!("reading: {e}");
                }
            }
            if buf.len() == start {
                buf.clear();
                start = 0;
            }
            buf.reserve(READ_CHUNK.max(need.saturating_sub(buf.len() - start)));
            match self.stream.try_read_buf(&mut buf) {
                Ok(0) => break "closed by the server".to_string(),
                Ok(_) => {}
                Err(e) if e.kind() == WouldBlock => continue,
                Err(e) => break format!("reading: {e}"),
            }
            if buf.len() - start < need {
                continue;
            }
            let mut replies = Vec::new();
            let (used, read) = resp::read_all(&buf[start..], &mut replies);
            start += used;
            let done = self.answer(replies);
            match (read, done) {
                (Err(e), _) | (_, Err(e)) => break e,
                (Ok(_), Ok(idle)) if released && idle => break "closed".to_string(),
                (Ok(at_least), Ok(_)) => need = at_least,
            }
            // Keep the buffer from growing with what was read already.
            if start > READ_CHUNK && start * 2 > buf.len() {
                buf.drain(..start);
                start = 0;
            }
        };
        let (why, waiting) = match self.lock() {
            Some(mut state) => {
                self.end(&mut state, &why);
                let why = state.ended.clone().unwrap_or(why);
                (why, std::mem::take(&mut state.waiting))
            }
            None => (why, VecDeque::new()),
        };
        if !released {
            log::warn!("redis connection ended: {why}");
        }
        // The socket closes when the last handle on it goes.
        for waiter in waiting {
            waiter.to.send(lost(&why));
        }
    }

    /// Hands `replies` to the waiters in order and answers those that are
    /// complete (after unlocking): `Ok(true)` when nothing waits any more.
    fn answer(&self, replies: Vec<Term>) -> Result<bool, String> {
        let mut done = Vec::new();
        let idle = {
            let Some(mut state) = self.lock() else {
                return Err("a poisoned lock".into());
            };
            for reply in replies {
                let Some(front) = state.waiting.front_mut() else {
                    return Err("a reply that no request asked for".into());
                };
                let complete = match &mut front.many {
                    None => Some(reply),
                    Some((got, n)) => {
                        got.push(reply);
                        (got.len() == *n).then(|| Term::List(std::mem::take(got)))
                    }
                };
                if let Some(answer) = complete {
                    if let Some(waiter) = state.waiting.pop_front() {
                        done.push((waiter.to, answer));
                    }
                }
            }
            state.waiting.is_empty()
        };
        for (to, answer) in done {
            to.send(Outcome::answer(answer));
        }
        Ok(idle)
    }
}

/// Writes `commands` on a fresh stream and reads one reply each.
pub async fn exchange(
    stream: &mut TcpStream,
    commands: &[redis::Cmd],
) -> std::io::Result<Vec<Term>> {
    let mut out = Vec::new();
    commands
        .iter()
        .for_each(|c| c.write_packed_command(&mut out));
    stream.write_all(&out).await?;
    let mut buf = Vec::new();
    let mut replies = Vec::with_capacity(commands.len());
    let mut start = 0;
    loop {
        let (used, next) = resp::read_all(&buf[start..], &mut replies);
        start += used;
        next.map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        if replies.len() >= commands.len() {
            return Ok(replies);
        }
        if stream.read_buf(&mut buf).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
}
