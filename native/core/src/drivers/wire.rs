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
use std::future::Future;
use std::io::ErrorKind::WouldBlock;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use futures::task::AtomicWaker;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// What a read asks of the socket at least, so a large reply comes in few reads.
const READ_CHUNK: usize = 64 * 1024;

/// What the I/O is woken for, beside the socket's readiness (`Link::events`).
const UNSENT: u8 = 1;
const ENDED: u8 = 2;
const RELEASED: u8 = 4;

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
    /// Tells the I/O when the last clone is dropped.
    _release: Arc<Release<P>>,
}

impl<P: Protocol> Clone for Conn<P> {
    fn clone(&self) -> Self {
        Conn {
            link: self.link.clone(),
            _release: self._release.clone(),
        }
    }
}

struct Release<P: Protocol>(Arc<Link<P>>);

impl<P: Protocol> Drop for Release<P> {
    fn drop(&mut self) {
        self.0.signal(RELEASED);
    }
}

struct Link<P: Protocol> {
    stream: TcpStream,
    state: Mutex<State<P::Waiter>>,
    /// `UNSENT`: bytes wait in `out` for the socket; `ENDED`; `RELEASED`:
    /// no handle is left. Flags and one waker instead of a `Notify` and
    /// tokens: polling those on every wake-up took a lock each (profile).
    events: AtomicU8,
    io: AtomicWaker,
    /// Cancelled when the connection ended (the server closed it, an I/O
    /// error, a stream that is not the protocol): its owner replaces it.
    closed: CancellationToken,
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
            events: AtomicU8::new(0),
            io: AtomicWaker::new(),
            closed: CancellationToken::new(),
        });
        let io = Io {
            link: link.clone(),
            buf: Vec::with_capacity(READ_CHUNK),
            start: 0,
            need: 1,
            sending: false,
            released: false,
        };
        let conn = Conn {
            _release: Arc::new(Release(link.clone())),
            link,
        };
        (conn, Box::pin(io))
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

impl<P: Protocol> Link<P> {
    /// The state; a poisoned lock (a panic while holding it) ends the
    /// connection as far as writers go.
    fn lock(&self) -> Option<MutexGuard<'_, State<P::Waiter>>> {
        self.state.lock().ok()
    }

    /// Wakes the I/O for `event`.
    fn signal(&self, event: u8) {
        self.events.fetch_or(event, Ordering::AcqRel);
        self.io.wake();
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

    /// Sends `out` now, or as the socket takes it (the I/O); a failed
    /// write ends the connection and every waiter is answered.
    fn flush(&self, state: &mut State<P::Waiter>) {
        match self.send(state) {
            Ok(true) => {}
            Ok(false) => self.signal(UNSENT),
            Err(e) => self.end(state, &format!("writing: {e}")),
        }
    }

    /// Marks the connection ended (the first reason stays).
    fn end(&self, state: &mut State<P::Waiter>, why: &str) {
        state.ended.get_or_insert_with(|| why.to_string());
        self.closed.cancel();
        self.signal(ENDED);
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

    fn idle(&self) -> bool {
        self.lock().is_none_or(|s| s.waiting.is_empty())
    }
}

/// The connection's I/O, one future for both directions: it sends what
/// waits in `out` as the socket takes it, reads replies and answers their
/// waiters in order, until the connection ends or, once no handle is left,
/// nothing waits. Dropped (ended or not), it answers the waiters left.
struct Io<P: Protocol> {
    link: Arc<Link<P>>,
    buf: Vec<u8>,
    /// Where the unparsed bytes of `buf` start.
    start: usize,
    /// Bytes from `start` needed before a reply can be whole.
    need: usize,
    /// `out` waits for the socket to become writable.
    sending: bool,
    released: bool,
}

impl<P: Protocol> Future for Io<P> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let io = self.get_mut();
        io.link.io.register(cx.waker());
        let events = io.link.events.swap(0, Ordering::AcqRel);
        match io.turn(cx, events) {
            Some(why) => {
                io.ended(&why);
                Poll::Ready(())
            }
            None => Poll::Pending,
        }
    }
}

impl<P: Protocol> Io<P> {
    /// Does what `events` and the socket allow: why the connection ends, or
    /// `None` with the waker registered for what comes next.
    fn turn(&mut self, cx: &mut Context<'_>, events: u8) -> Option<String> {
        // `end` is the only way `closed` gets cancelled, and it signals.
        if events & ENDED != 0 {
            return Some("the connection ended".into());
        }
        if events & RELEASED != 0 {
            self.released = true;
            if self.link.idle() {
                return Some("closed".into());
            }
        }
        if events & UNSENT != 0 || self.sending {
            if let Err(why) = self.write(cx) {
                return Some(why);
            }
        }
        self.read(cx).err()
    }

    /// Sends what waits in `out`; when the socket is full, `sending` until
    /// it is writable again.
    fn write(&mut self, cx: &mut Context<'_>) -> Result<(), String> {
        let link = &self.link;
        loop {
            let Some(mut state) = link.lock() else {
                return Err("a poisoned lock".into());
            };
            match link.send(&mut state) {
                Ok(true) => {
                    self.sending = false;
                    return Ok(());
                }
                Ok(false) => {}
                Err(e) => {
                    let why = format!("writing: {e}");
                    link.end(&mut state, &why);
                    return Err(why);
                }
            }
            drop(state);
            match link.stream.poll_write_ready(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Err(format!("writing: {e}")),
                Poll::Pending => {
                    self.sending = true;
                    return Ok(());
                }
            }
        }
    }

    /// Reads and answers replies until the socket has no more for now.
    fn read(&mut self, cx: &mut Context<'_>) -> Result<(), String> {
        loop {
            match self.link.stream.poll_read_ready(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Err(format!("reading: {e}")),
                Poll::Pending => return Ok(()),
            }
            if self.buf.len() == self.start {
                self.buf.clear();
                self.start = 0;
            }
            let unread = self.buf.len() - self.start;
            self.buf
                .reserve(READ_CHUNK.max(self.need.saturating_sub(unread)));
            match self.link.stream.try_read_buf(&mut self.buf) {
                Ok(0) => return Err("closed by the server".into()),
                Ok(_) => {}
                Err(e) if e.kind() == WouldBlock => continue,
                Err(e) => return Err(format!("reading: {e}")),
            }
            if self.buf.len() - self.start < self.need {
                continue;
            }
            let mut replies = Vec::new();
            let (used, parsed) = P::parse(&self.buf[self.start..], &mut replies);
            self.start += used;
            let idle = self.link.answer(replies)?;
            self.need = parsed?;
            if self.released && idle {
                return Err("closed".into());
            }
            // Keep the buffer from growing with what was read already.
            if self.start > READ_CHUNK && self.start * 2 > self.buf.len() {
                self.buf.drain(..self.start);
                self.start = 0;
            }
        }
    }

    /// The connection ends: marked so (the first reason stays) and logged
    /// unless its handles were all dropped.
    fn ended(&self, why: &str) {
        let link = &self.link;
        if let Some(mut state) = link.lock() {
            link.end(&mut state, why);
            if !self.released {
                let why = state.ended.as_deref().unwrap_or(why);
                log::warn!("{} connection ended: {why}", P::NAME);
            }
        }
    }
}

/// Answers the waiters left when the I/O ends or is dropped.
impl<P: Protocol> Drop for Io<P> {
    fn drop(&mut self) {
        let link = &self.link;
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

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
