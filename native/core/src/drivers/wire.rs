//! A connection that callers write to from their own thread, so that a
//! request reaches the socket without waking a runtime thread (on this
//! 2-core machine that hand-over cost as much as the rest of a Redis GET;
//! the README's Benchmarks say how it was measured). The [`Protocol`]
//! (Redis's RESP, PostgreSQL's messages) says how the server's bytes split
//! into replies and when a request has its whole answer.
//!
//! Every write is non-blocking, under the connection's lock, in the order
//! of the replies' waiters: what the socket does not take at once waits in
//! `out` for the connection's I/O, and later writes queue behind it. The
//! I/O (the future [`Conn::start`] returns) reads the replies in order and
//! answers each request's waiter. A NIF call therefore never waits on the
//! socket.

use std::collections::VecDeque;
use std::io::ErrorKind::WouldBlock;
use std::sync::{Arc, Mutex, MutexGuard};

use futures::future::BoxFuture;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_util::sync::{CancellationToken, DropGuard};

/// What a read asks of the socket at least, so a large reply comes in few reads.
const READ_CHUNK: usize = 64 * 1024;

/// How one protocol's replies answer its requests.
pub trait Protocol: 'static {
    /// For the log: `redis`, `pgsql`.
    const NAME: &'static str;
    /// Who waits for one request's answer, with what has come of it so far.
    type Waiter: Send + 'static;
    /// One whole message from the server.
    type Reply: Send + 'static;

    /// Splits the whole messages at the start of `buf` off into `replies`
    /// (run unlocked): the bytes they took, and at least how many bytes from
    /// there the next one needs, or why the stream is not this protocol.
    fn parse(buf: &[u8], replies: &mut Vec<Self::Reply>) -> (usize, Result<usize, String>);

    /// Hands `reply` to the oldest waiter: whether it has its whole answer now.
    fn take(waiter: &mut Self::Waiter, reply: Self::Reply) -> bool;

    /// Why the connection ends on a reply that no request asked for.
    fn unasked(reply: Self::Reply) -> String;

    /// Answers a waiter that has its whole answer (run unlocked); `Err`
    /// says why the connection cannot go on after it (an answer that breaks
    /// the protocol), which then ends as the worker's way would end it.
    fn finish(waiter: Self::Waiter) -> Result<(), String>;

    /// Answers a waiter whose connection ended.
    fn lost(waiter: Self::Waiter, why: &str);
}

/// A handle on the connection; when the last one goes, the I/O answers
/// what was written and ends, which closes the socket.
pub struct Conn<P: Protocol> {
    link: Arc<Link<P>>,
    /// Cancels `released` when the last clone is dropped.
    _release: Arc<DropGuard>,
}

impl<P: Protocol> Clone for Conn<P> {
    fn clone(&self) -> Self {
        Conn {
            link: self.link.clone(),
            _release: self._release.clone(),
        }
    }
}

struct Link<P: Protocol> {
    stream: TcpStream,
    state: Mutex<State<P::Waiter>>,
    /// Bytes wait in `out` for the socket to take them.
    unsent: Notify,
    /// Cancelled when the connection ended (the server closed it, an I/O
    /// error, a stream that is not the protocol): its owner replaces it.
    closed: CancellationToken,
    /// Cancelled when no handle is left.
    released: CancellationToken,
}

struct State<W> {
    /// Why the connection ended, set with `closed`; nothing is written after it.
    ended: Option<String>,
    /// Encoded requests the socket has not taken yet, in order.
    out: Vec<u8>,
    /// One per request written, in the order of their replies.
    waiting: VecDeque<W>,
}

impl<P: Protocol> Conn<P> {
    /// Takes over `stream` (connected, handshake done). The future is the
    /// connection's I/O: it must be polled (spawned, or by the connection's
    /// owner) for replies to be read and queued bytes sent, and ends when
    /// the connection does. Dropped early, it answers every waiter as lost.
    pub fn start(stream: TcpStream) -> (Conn<P>, BoxFuture<'static, ()>) {
        let link = Arc::new(Link {
            stream,
            state: Mutex::new(State {
                ended: None,
                out: Vec::new(),
                waiting: VecDeque::new(),
            }),
            unsent: Notify::new(),
            closed: CancellationToken::new(),
            released: CancellationToken::new(),
        });
        let release = Arc::new(link.released.clone().drop_guard());
        let io_link = link.clone();
        let io = Box::pin(async move {
            let _answers_the_rest = Ending(io_link.clone());
            futures::join!(io_link.read(), io_link.write());
        });
        let conn = Conn {
            link,
            _release: release,
        };
        (conn, io)
    }

    /// Cancelled when the connection has ended.
    pub fn closed(&self) -> &CancellationToken {
        &self.link.closed
    }

    /// Runs `add`, which encodes requests into the buffer it gets and
    /// queues their waiters in the same order, and sends what it encoded
    /// now, from whatever thread calls (it never waits). `None`, without
    /// running `add`, once the connection has ended.
    pub fn writing<R>(
        &self,
        add: impl FnOnce(&mut Vec<u8>, &mut VecDeque<P::Waiter>) -> R,
    ) -> Option<R> {
        self.link.writing(add)
    }
}

/// Answers the waiters left when the I/O ends or is dropped.
struct Ending<P: Protocol>(Arc<Link<P>>);

impl<P: Protocol> Drop for Ending<P> {
    fn drop(&mut self) {
        let link = &self.0;
        let Some(mut state) = link.lock() else {
            return;
        };
        link.end(&mut state, "the connection was closed");
        let why = state.ended.clone().unwrap_or_default();
        let waiting = std::mem::take(&mut state.waiting);
        drop(state);
        for waiter in waiting {
            P::lost(waiter, &why);
        }
    }
}

impl<P: Protocol> Link<P> {
    /// The state; a poisoned lock (a panic while holding it) ends the
    /// connection as far as writers go.
    fn lock(&self) -> Option<MutexGuard<'_, State<P::Waiter>>> {
        self.state.lock().ok()
    }

    fn writing<R>(
        &self,
        add: impl FnOnce(&mut Vec<u8>, &mut VecDeque<P::Waiter>) -> R,
    ) -> Option<R> {
        let mut state = self.lock().filter(|s| s.ended.is_none())?;
        let queued = !state.out.is_empty();
        let State { out, waiting, .. } = &mut *state;
        let added = add(out, waiting);
        // Behind bytes still waiting, the I/O sends these too.
        if !queued {
            self.flush(&mut state);
        }
        Some(added)
    }

    /// Gives the socket what it takes of `out` now: `true` once all is sent.
    fn send(&self, state: &mut State<P::Waiter>) -> std::io::Result<bool> {
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

    /// Sends `out` now, or as the socket takes it (the I/O's writer); a
    /// failed write ends the connection and every waiter is answered.
    fn flush(&self, state: &mut State<P::Waiter>) {
        match self.send(state) {
            Ok(true) => {}
            Ok(false) => self.unsent.notify_one(),
            Err(e) => self.end(state, &format!("writing: {e}")),
        }
    }

    /// Marks the connection ended (the first reason stays).
    fn end(&self, state: &mut State<P::Waiter>, why: &str) {
        state.ended.get_or_insert_with(|| why.to_string());
        self.closed.cancel();
    }

    /// Sends what waits in `out` as the socket takes it.
    async fn write(&self) {
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
    async fn read(&self) {
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
            let (used, read) = P::parse(&buf[start..], &mut replies);
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
        if let Some(mut state) = self.lock() {
            self.end(&mut state, &why);
            if !released {
                let why = state.ended.as_deref().unwrap_or(&why);
                log::warn!("{} connection ended: {why}", P::NAME);
            }
        }
    }

    /// Hands `replies` to the waiters in order and answers those that are
    /// complete (after unlocking): `Ok(true)` when nothing waits any more.
    fn answer(&self, replies: Vec<P::Reply>) -> Result<bool, String> {
        let mut done = Vec::new();
        let mut unasked = None;
        let idle = {
            let Some(mut state) = self.lock() else {
                return Err("a poisoned lock".into());
            };
            for reply in replies {
                let Some(front) = state.waiting.front_mut() else {
                    unasked = Some(P::unasked(reply));
                    break;
                };
                if P::take(front, reply) {
                    done.extend(state.waiting.pop_front());
                }
            }
            state.waiting.is_empty()
        };
        let mut broken = None;
        for waiter in done {
            if let Err(why) = P::finish(waiter) {
                broken.get_or_insert(why);
            }
        }
        unasked.or(broken).map_or(Ok(idle), Err)
    }
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
