//! Single mode over plain TCP: RESP on a connection that callers write to
//! from their own thread ([`wire`](crate::drivers::wire)).

use std::collections::VecDeque;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::resp;
use super::RedisRequest;
use crate::drivers::wire::{self, Protocol};
use crate::engine::load::Answer;
use crate::engine::pool::Outcome;
use crate::error::Error;
use crate::runtime;
use crate::term::Term;

/// A worker's handle on the connection; when the last one goes, the
/// connection answers what was written and closes.
#[derive(Clone)]
pub struct Conn(wire::Conn<Resp>);

/// RESP: one reply per command, in order.
pub struct Resp;

/// Who waits for a request's replies: a `q` for one, a `qp` for as many as
/// its commands, given back as a list.
pub struct Waiter {
    replies: Replies,
    to: To,
}

enum Replies {
    /// A `q`'s reply, once it came.
    One(Option<Term>),
    /// A `qp`'s replies so far, and how many it has.
    Many(Vec<Term>, usize),
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

impl Protocol for Resp {
    const NAME: &'static str = "redis";
    type Waiter = Waiter;
    type Reply = Term;

    fn parse(buf: &[u8], replies: &mut Vec<Term>) -> (usize, Result<usize, String>) {
        resp::read_all(buf, replies)
    }

    fn take(waiter: &mut Waiter, reply: Term) -> bool {
        match &mut waiter.replies {
            Replies::One(got) => {
                *got = Some(reply);
                true
            }
            Replies::Many(got, n) => {
                got.push(reply);
                got.len() == *n
            }
        }
    }

    fn unasked(_reply: Term) -> String {
        "a reply that no request asked for".into()
    }

    fn finish(waiter: Waiter) -> Result<(), String> {
        let answer = match waiter.replies {
            Replies::One(Some(reply)) => Outcome::answer(reply),
            Replies::Many(got, _) => Outcome::answer(Term::List(got)),
            Replies::One(None) => lost("a request finished without its reply"),
        };
        waiter.to.send(answer);
        Ok(())
    }

    fn lost(waiter: Waiter, why: &str) {
        waiter.to.send(lost(why));
    }
}

impl Conn {
    /// Takes over `stream` (connected, handshake done); its I/O runs in a
    /// task of its own.
    pub fn start(stream: TcpStream) -> Conn {
        let (conn, io) = wire::Conn::start(stream);
        runtime::handle().spawn(io);
        Conn(conn)
    }

    /// Cancelled when the connection has ended.
    pub fn closed(&self) -> &CancellationToken {
        self.0.closed()
    }

    /// Writes `request` now, from whatever thread calls (it never waits);
    /// `to` gets its outcome from the runtime. A connection that has ended
    /// gives `to` back.
    pub fn write<T: Into<To>>(&self, request: &RedisRequest, to: T) -> Result<(), T> {
        let mut to = Some(to);
        self.0.writing(|out, waiting| {
            if let Some(to) = to.take() {
                add(out, waiting, request, to.into());
            }
        });
        to.map_or(Ok(()), Err)
    }

    /// Carries requests a worker took together: one write for all.
    pub async fn run_many(&self, requests: Vec<RedisRequest>) -> Vec<Outcome> {
        let waiting = self.0.writing(|out, waiting| {
            let mut waiter = |request| {
                let (tx, rx) = oneshot::channel();
                add(out, waiting, request, To::Worker(tx));
                rx
            };
            requests.iter().map(&mut waiter).collect::<Vec<_>>()
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

/// Encodes `request` into `out` and queues its waiter.
fn add(out: &mut Vec<u8>, waiting: &mut VecDeque<Waiter>, request: &RedisRequest, to: To) {
    let replies = match request {
        RedisRequest::Single(cmd) => {
            cmd.write_packed_command(out);
            Replies::One(None)
        }
        RedisRequest::Pipeline { cmds, .. } => {
            cmds.iter().for_each(|cmd| cmd.write_packed_command(out));
            Replies::Many(Vec::with_capacity(cmds.len()), cmds.len())
        }
    };
    waiting.push_back(Waiter { replies, to });
}

fn lost(why: &str) -> Outcome {
    Outcome::failed(Error::ConnectionLost(format!("redis: {why}")))
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
