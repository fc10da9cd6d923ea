//! The `redis` pool type: eredis's request forms and result shapes on a
//! multiplexed connection per worker, so concurrent callers pipeline.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, RedisConnectionInfo, Value};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::config::{Node, Secret};
use crate::error::{Error, Result};
use crate::pool::Driver;
use crate::runtime;
use crate::term::Term;
use crate::tls::read_tls;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Commands one connection carries at once before the worker queues more.
const PIPELINE_DEPTH: usize = 256;

#[derive(Debug, Clone)]
pub struct RedisConfig {
    pub host: String,
    pub port: u16,
    pub database: i64,
    pub password: Option<Secret>,
    /// Set when the `tls` section is: the connection is then TLS only.
    pub tls: Option<Arc<ClientConfig>>,
}

impl RedisConfig {
    pub const OPTIONS: [&'static str; 5] = ["host", "port", "database", "password", "tls"];

    pub fn read(conn: &Node) -> Result<RedisConfig> {
        conn.only_keys(&Self::OPTIONS)?;
        let tls = match conn.at("tls") {
            tls if tls.is_set() => Some(Arc::new(read_tls(&tls)?)),
            _ => None,
        };
        let password = conn
            .at("password")
            .secret()?
            .filter(|p| !p.expose().is_empty());
        Ok(RedisConfig {
            host: conn.at("host").string_or("127.0.0.1")?,
            port: conn.at("port").int_or(1, 65534, 6379)? as u16,
            database: conn.at("database").int_or(0, i64::from(i32::MAX), 0)?,
            password,
            tls,
        })
    }
}

/// Opens its own TCP (and TLS) stream so that TLS comes from the shared
/// `tls` module and sockets get TCP_NODELAY; the redis crate then speaks
/// RESP over it, authenticating and selecting the database.
pub struct RedisDriver {
    host: String,
    port: u16,
    settings: RedisConnectionInfo,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    target: String,
}

impl RedisDriver {
    pub fn new(config: RedisConfig) -> Result<RedisDriver> {
        let mut settings = RedisConnectionInfo::default().set_db(config.database);
        if let Some(p) = &config.password {
            settings = settings.set_password(p.expose());
        }
        let target = format!("{}:{}/{}", config.host, config.port, config.database);
        let tls = match config.tls {
            Some(tls) => {
                let name = ServerName::try_from(config.host.clone())
                    .map_err(|_| Error::Config(format!("redis {target}: not a TLS server name")))?;
                Some((TlsConnector::from(tls), name))
            }
            None => None,
        };
        Ok(RedisDriver {
            host: config.host,
            port: config.port,
            settings,
            tls,
            target,
        })
    }
}

async fn open(
    host: String,
    port: u16,
    settings: RedisConnectionInfo,
    tls: Option<(TlsConnector, ServerName<'static>)>,
) -> std::result::Result<MultiplexedConnection, String> {
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| e.to_string())?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
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
async fn handshake<S>(
    settings: &RedisConnectionInfo,
    stream: S,
    config: AsyncConnectionConfig,
) -> std::result::Result<MultiplexedConnection, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (conn, io) = MultiplexedConnection::new_with_config(settings, stream, config)
        .await
        .map_err(|e| describe(&e))?;
    runtime::handle().spawn(io);
    Ok(conn)
}

pub enum RedisRequest {
    Single(redis::Cmd),
    Pipeline(Vec<redis::Cmd>),
}

impl Driver for RedisDriver {
    type Conn = MultiplexedConnection;
    type Request = RedisRequest;

    fn concurrency(&self) -> usize {
        PIPELINE_DEPTH
    }

    fn parse(&self, request: Term) -> Result<RedisRequest> {
        match request {
            Term::Tuple(mut t) if t.len() == 2 && t[0].as_atom() == Some("q") => Ok(
                RedisRequest::Single(command(&t.pop().unwrap_or(Term::List(vec![])))?),
            ),
            Term::Tuple(t) if t.len() == 2 && t[0].as_atom() == Some("qp") => match &t[1] {
                Term::List(cmds) if !cmds.is_empty() => Ok(RedisRequest::Pipeline(
                    cmds.iter().map(command).collect::<Result<_>>()?,
                )),
                _ => Err(Error::BadRequest(
                    "qp expects a non-empty list of commands".into(),
                )),
            },
            other => Err(Error::BadRequest(format!(
                "expected {{q, Command}} or {{qp, [Command]}}, got {other:?}"
            ))),
        }
    }

    fn connect(&self, _worker: usize) -> BoxFuture<'static, Result<MultiplexedConnection>> {
        let opening = open(
            self.host.clone(),
            self.port,
            self.settings.clone(),
            self.tls.clone(),
        );
        let target = self.target.clone();
        Box::pin(async move {
            match tokio::time::timeout(CONNECT_TIMEOUT, opening).await {
                Ok(Ok(conn)) => Ok(conn),
                Ok(Err(e)) => Err(Error::Connect(format!("redis {target}: {e}"))),
                Err(_) => Err(Error::Connect(format!(
                    "redis {target}: no connection within {CONNECT_TIMEOUT:?}"
                ))),
            }
        })
    }

    fn execute(
        &self,
        mut conn: MultiplexedConnection,
        request: RedisRequest,
    ) -> BoxFuture<'static, Result<Term>> {
        Box::pin(async move {
            match request {
                RedisRequest::Single(cmd) => single(conn.send_packed_command(&cmd).await),
                RedisRequest::Pipeline(cmds) => {
                    // Sent back to back on one connection, so they pipeline in order.
                    let replies = futures::future::join_all(cmds.iter().map(|cmd| {
                        let mut conn = conn.clone();
                        async move { conn.send_packed_command(cmd).await }
                    }))
                    .await;
                    let mut out = Vec::with_capacity(replies.len());
                    for reply in replies {
                        out.push(single(reply)?);
                    }
                    Ok(Term::List(out))
                }
            }
        })
    }
}

/// One eredis reply: `{ok, Value}` or `{error, Message}`; a broken
/// connection is an `Err` so the worker replaces it.
fn single(reply: redis::RedisResult<Value>) -> Result<Term> {
    match reply {
        Ok(Value::ServerError(e)) => Ok(Term::error(Term::from(server_message(
            e.code(),
            e.details(),
        )))),
        Ok(v) => Ok(Term::ok(value(v))),
        Err(e) if e.is_timeout() => Err(Error::Timeout(format!("redis: {}", describe(&e)))),
        Err(e) if e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error() => {
            Err(Error::ConnectionLost(format!("redis: {}", describe(&e))))
        }
        Err(e) => match e.code() {
            Some(code) => Ok(Term::error(Term::from(server_message(code, e.detail())))),
            None => Err(Error::ConnectionLost(format!("redis: {}", describe(&e)))),
        },
    }
}

fn server_message(code: &str, detail: Option<&str>) -> String {
    match detail {
        Some(d) => format!("{code} {d}"),
        None => code.to_string(),
    }
}

fn describe(e: &redis::RedisError) -> String {
    e.to_string()
}

/// Values as eredis gives them: integers and status replies as binaries,
/// nil as `undefined`, arrays as lists.
fn value(v: Value) -> Term {
    match v {
        Value::Nil => Term::atom("undefined"),
        Value::Int(i) => Term::from(i.to_string()),
        Value::BulkString(b) => Term::Bin(b),
        Value::SimpleString(s) => Term::from(s),
        Value::Okay => Term::from("OK"),
        Value::Array(items) | Value::Set(items) => {
            Term::List(items.into_iter().map(value).collect())
        }
        Value::Map(pairs) => Term::List(
            pairs
                .into_iter()
                .flat_map(|(k, v)| [value(k), value(v)])
                .collect(),
        ),
        Value::Attribute { data, .. } => value(*data),
        Value::Double(d) => Term::from(d.to_string()),
        Value::Boolean(b) => Term::from(if b { "1" } else { "0" }),
        Value::VerbatimString { text, .. } => Term::from(text),
        Value::BigNumber(n) => Term::Bin(n),
        Value::Push { data, .. } => Term::List(data.into_iter().map(value).collect()),
        Value::ServerError(e) => Term::error(Term::from(server_message(e.code(), e.details()))),
        other => Term::from(format!("{other:?}")),
    }
}

/// An eredis command: a list of arguments, each an iolist, binary, atom or integer.
fn command(term: &Term) -> Result<redis::Cmd> {
    let Term::List(args) = term else {
        return Err(Error::BadRequest(format!(
            "a command is a list of arguments, got {term:?}"
        )));
    };
    if args.is_empty() {
        return Err(Error::BadRequest("empty command".into()));
    }
    let mut cmd = redis::Cmd::new();
    let mut buf = Vec::new();
    for arg in args {
        buf.clear();
        if !arg.to_iodata(&mut buf) {
            return Err(Error::BadRequest(format!(
                "cannot send {arg:?} as a Redis argument"
            )));
        }
        cmd.arg(buf.as_slice());
    }
    Ok(cmd)
}

#[cfg(test)]
#[path = "redis_tests.rs"]
mod tests;
