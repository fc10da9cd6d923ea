//! One server over one multiplexed connection per worker: `mode =
//! "single"`, and the master (or replica) a sentinel names.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, RedisConnectionInfo, Value};
use rustls_pki_types::ServerName;
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;

use super::{describe, reply, RedisRequest};
use crate::engine::pool::Outcome;
use crate::error::{Error, Result};
use crate::runtime;
use crate::term::Term;

/// A TLS connector from the shared `tls` module and the name to check.
pub type Tls = (TlsConnector, ServerName<'static>);

/// A worker's connection, and the signal that its I/O task has ended (the
/// server closed it, or the network did).
#[derive(Clone)]
pub struct Conn {
    pub conn: MultiplexedConnection,
    pub closed: CancellationToken,
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
        None => handshake(&settings, tcp, config).await,
        Some((connector, name)) => {
            let stream = connector
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS handshake: {e}"))?;
            handshake(&settings, stream, config).await
        }
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
            redis::ErrorKind::AuthenticationFailed => format!(
                "the server refused the password given in connection.password: {}",
                describe(&e)
            ),
            _ => describe(&e),
        })?;
    let closed = CancellationToken::new();
    let on_end = closed.clone();
    runtime::handle().spawn(async move {
        io.await;
        on_end.cancel();
    });
    let noauth = |detail: &str| {
        format!("the server requires a password: set connection.password ({detail})")
    };
    match conn.send_packed_command(&redis::cmd("PING")).await {
        Ok(Value::ServerError(e)) if e.code() == "NOAUTH" => Err(noauth(e.details().unwrap_or(""))),
        Err(e) if e.code() == Some("NOAUTH") => Err(noauth(e.detail().unwrap_or(""))),
        Err(e) => Err(describe(&e)),
        Ok(_) => Ok(Conn { conn, closed }),
    }
}

/// Carries a request over one server's connection.
pub async fn run(mut conn: MultiplexedConnection, request: RedisRequest) -> Outcome {
    match request {
        RedisRequest::Single(cmd) => reply(conn.send_packed_command(&cmd).await).into(),
        qp => {
            let mut outcomes = run_many(conn, vec![qp]).await;
            outcomes.pop().unwrap_or_else(|| {
                Outcome::failed(Error::Internal("redis: a qp had no outcome".into()))
            })
        }
    }
}

/// Carries requests queued together as one pipeline: one write, one
/// answer for all; each request gets its own replies back (a `q` its
/// reply, a `qp` the list of its commands' replies).
pub async fn run_many(
    mut conn: MultiplexedConnection,
    requests: Vec<RedisRequest>,
) -> Vec<Outcome> {
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
