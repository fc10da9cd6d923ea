//! One server over one multiplexed connection per worker: `mode =
//! "single"`, and the master (or replica) a sentinel names. Over plain TCP
//! the connection is our own ([`link`](super::link)), which callers write
//! to from their own thread; over TLS it is the redis crate's.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, RedisConnectionInfo, Value};
use rustls_pki_types::ServerName;
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;

use super::link::{self, To};
use super::{describe, reply, RedisRequest};
use crate::engine::pool::Outcome;
use crate::error::{Error, Result};
use crate::runtime;
use crate::term::Term;

/// A TLS connector from the shared `tls` module and the name to check.
pub type Tls = (TlsConnector, ServerName<'static>);

/// A worker's connection.
#[derive(Clone)]
pub enum Conn {
    Plain(link::Conn),
    /// With the signal that its I/O task has ended (the server closed it,
    /// or the network did).
    Tls {
        conn: MultiplexedConnection,
        closed: CancellationToken,
    },
}

impl Conn {
    /// Cancelled once the connection has ended.
    pub fn closed(&self) -> CancellationToken {
        match self {
            Conn::Plain(c) => c.closed().clone(),
            Conn::Tls { closed, .. } => closed.clone(),
        }
    }

    /// Writes `request` from the caller's thread (plain TCP only); gives
    /// `to` back when that cannot be done.
    pub fn write<T: Into<To>>(&self, request: &RedisRequest, to: T) -> std::result::Result<(), T> {
        match self {
            Conn::Plain(c) => c.write(request, to),
            Conn::Tls { .. } => Err(to),
        }
    }
}

pub async fn open(
    host: String,
    port: u16,
    settings: RedisConnectionInfo,
    tls: Option<Tls>,
) -> std::result::Result<Conn, String> {
    let tcp = crate::drivers::tcp::connect(&host, port).await?;
    let config = AsyncConnectionConfig::new().set_response_timeout(None);
    match tls {
        None => plain(&settings, tcp).await,
        Some((connector, name)) => {
            let stream = connector
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS handshake: {e}"))?;
            handshake(&settings, stream, config).await
        }
    }
}

fn noauth(detail: &str) -> String {
    format!("the server requires a password: set connection.password ({detail})")
}

fn refused_password(detail: &str) -> String {
    format!("the server refused the password given in connection.password: {detail}")
}

/// AUTH, SELECT and PING over plain TCP, as `handshake` does over TLS.
async fn plain(
    settings: &RedisConnectionInfo,
    mut tcp: tokio::net::TcpStream,
) -> std::result::Result<Conn, String> {
    let mut commands = Vec::new();
    if let Some(password) = settings.password() {
        commands.push(redis::cmd("AUTH").arg(password).clone());
    }
    if settings.db() != 0 {
        commands.push(redis::cmd("SELECT").arg(settings.db()).clone());
    }
    commands.push(redis::cmd("PING"));
    let replies = link::exchange(&mut tcp, &commands)
        .await
        .map_err(|e| e.to_string())?;
    let auth = settings.password().is_some();
    for (i, reply) in replies.iter().enumerate() {
        let Some(message) = refusal(reply) else {
            continue;
        };
        return Err(match (i, message.split_once(' ')) {
            (0, _) if auth => refused_password(&message),
            (_, Some(("NOAUTH", detail))) => noauth(detail),
            _ => message,
        });
    }
    Ok(Conn::Plain(link::Conn::start(tcp)))
}

/// The message of an `{error, Message}` reply.
fn refusal(reply: &Term) -> Option<String> {
    match reply {
        Term::Tuple(t) if t.len() == 2 && t[0].as_atom() == Some("error") => match &t[1] {
            Term::Bin(b) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        },
        _ => None,
    }
}

/// AUTH and SELECT over `stream`; its I/O then runs in a task of its own.
/// A PING checks that the server takes commands from us: a server that
/// requires a password answers NOAUTH to a client that gave none.
async fn handshake<S>(
    settings: &RedisConnectionInfo,
    stream: S,
    config: AsyncConnectionConfig,
) -> std::result::Result<Conn, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut conn, io) = MultiplexedConnection::new_with_config(settings, stream, config)
        .await
        .map_err(|e| match e.kind() {
            redis::ErrorKind::AuthenticationFailed => refused_password(&describe(&e)),
            _ => describe(&e),
        })?;
    let closed = CancellationToken::new();
    let on_end = closed.clone();
    runtime::handle().spawn(async move {
        io.await;
        on_end.cancel();
    });
    match conn.send_packed_command(&redis::cmd("PING")).await {
        Ok(Value::ServerError(e)) if e.code() == "NOAUTH" => Err(noauth(e.details().unwrap_or(""))),
        Err(e) if e.code() == Some("NOAUTH") => Err(noauth(e.detail().unwrap_or(""))),
        Err(e) => Err(describe(&e)),
        Ok(_) => Ok(Conn::Tls { conn, closed }),
    }
}

/// Carries a request over one server's connection.
pub async fn run(conn: Conn, request: RedisRequest) -> Outcome {
    match (conn, request) {
        (Conn::Tls { mut conn, .. }, RedisRequest::Single(cmd)) => {
            reply(conn.send_packed_command(&cmd).await).into()
        }
        (conn, request) => {
            let mut outcomes = run_many(conn, vec![request]).await;
            outcomes.pop().unwrap_or_else(|| {
                Outcome::failed(Error::Internal("redis: a request had no outcome".into()))
            })
        }
    }
}

/// Carries requests queued together as one pipeline: one write, one
/// answer for all; each request gets its own replies back (a `q` its
/// reply, a `qp` the list of its commands' replies).
pub async fn run_many(conn: Conn, requests: Vec<RedisRequest>) -> Vec<Outcome> {
    let mut conn = match conn {
        Conn::Plain(c) => return c.run_many(requests).await,
        Conn::Tls { conn, .. } => conn,
    };
    // For each request: `None` a single command, `Some(n)` a qp of n.
    let shapes: Vec<Option<usize>> = requests
        .iter()
        .map(|r| match r {
            RedisRequest::Single(_) => None,
            RedisRequest::Pipeline { cmds, .. } => Some(cmds.len()),
        })
        .collect();
    let total = shapes.iter().map(|s| s.unwrap_or(1)).sum();
    let mut all = redis::Pipeline::with_capacity(total);
    for request in requests {
        match request {
            RedisRequest::Single(cmd) => {
                all.add_command(cmd);
            }
            RedisRequest::Pipeline { cmds, .. } => cmds.into_iter().for_each(|c| {
                all.add_command(c);
            }),
        }
    }
    let shaped = |shape: Option<usize>, replies: Result<Vec<Term>>| -> Outcome {
        match shape {
            None => replies.map(|mut r| r.pop().unwrap_or_else(|| Term::atom("undefined"))),
            Some(_) => replies.map(Term::List),
        }
        .into()
    };
    match conn.send_packed_commands(&all, 0, total).await {
        Ok(values) if values.len() == total => {
            let mut values = values.into_iter();
            shapes
                .into_iter()
                .map(|shape| {
                    let mine = values.by_ref().take(shape.unwrap_or(1));
                    shaped(shape, mine.map(|v| reply(Ok(v))).collect())
                })
                .collect()
        }
        Ok(_) => {
            let e = Error::ConnectionLost("redis: a pipeline came back short".into());
            shapes.iter().map(|_| Outcome::failed(e.clone())).collect()
        }
        // Every command of the batch gets the error, as each of a qp's does.
        Err(e) => shapes
            .into_iter()
            .map(|shape| {
                let each = reply(Err(e.clone()));
                shaped(shape, each.map(|t| vec![t; shape.unwrap_or(1)]))
            })
            .collect(),
    }
}

/// `open` within `timeout`, its error naming `target`.
pub async fn connect(
    target: &str,
    timeout: Duration,
    opening: impl std::future::Future<Output = std::result::Result<Conn, String>>,
) -> Result<Conn> {
    match tokio::time::timeout(timeout, opening).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(Error::Connect(format!("redis {target}: {e}"))),
        Err(_) => Err(Error::Connect(format!(
            "redis {target}: no connection within {timeout:?}"
        ))),
    }
}
