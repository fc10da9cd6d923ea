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
use tokio_util::sync::CancellationToken;

use crate::config::{Node, Secret};
use crate::engine::pool::{Driver, Outcome};
use crate::error::{Error, Result};
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
    /// Blocking commands must give up before the caller does.
    call_timeout: Duration,
}

impl RedisDriver {
    pub fn new(config: RedisConfig, call_timeout_ms: u64) -> Result<RedisDriver> {
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
            call_timeout: Duration::from_millis(call_timeout_ms),
        })
    }
}

/// A worker's connection, and the signal that its I/O task has ended (the
/// server closed it, or the network did).
#[derive(Clone)]
pub struct RedisConn {
    conn: MultiplexedConnection,
    closed: CancellationToken,
}

/// TCP keepalive on idle connections, so one that died silently (no FIN: a
/// partition, a host gone) is found and replaced within about a minute.
const TCP_KEEPALIVE: socket2::TcpKeepalive = socket2::TcpKeepalive::new()
    .with_time(Duration::from_secs(30))
    .with_interval(Duration::from_secs(10));

async fn open(
    host: String,
    port: u16,
    settings: RedisConnectionInfo,
    tls: Option<(TlsConnector, ServerName<'static>)>,
) -> std::result::Result<RedisConn, String> {
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| e.to_string())?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    socket2::SockRef::from(&tcp)
        .set_tcp_keepalive(&TCP_KEEPALIVE)
        .map_err(|e| e.to_string())?;
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
) -> std::result::Result<RedisConn, String>
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
        Ok(_) => Ok(RedisConn { conn, closed }),
    }
}

pub enum RedisRequest {
    Single(redis::Cmd),
    Pipeline(redis::Pipeline),
}

impl Driver for RedisDriver {
    type Conn = RedisConn;
    type Request = RedisRequest;

    fn concurrency(&self) -> usize {
        PIPELINE_DEPTH
    }

    fn parse(&self, request: Term) -> Result<RedisRequest> {
        let shared = |args: &[Term]| check_shared(args, self.call_timeout);
        match request {
            Term::Tuple(t) if t.len() == 2 && t[0].as_atom() == Some("q") => {
                let args = arguments(&t[1])?;
                shared(args)?;
                Ok(RedisRequest::Single(command(args)?))
            }
            Term::Tuple(t) if t.len() == 2 && t[0].as_atom() == Some("qp") => match &t[1] {
                Term::List(cmds) if !cmds.is_empty() => {
                    let cmds = cmds.iter().map(arguments).collect::<Result<Vec<_>>>()?;
                    // MULTI ... EXEC (or DISCARD) as one pipeline reaches the
                    // server in one piece, so it is atomic and isolated.
                    let inner = match (cmds.first(), cmds.last()) {
                        (Some(first), Some(last))
                            if cmds.len() > 1
                                && name_is(first, "MULTI")
                                && (name_is(last, "EXEC") || name_is(last, "DISCARD")) =>
                        {
                            &cmds[1..cmds.len() - 1]
                        }
                        _ => &cmds[..],
                    };
                    inner.iter().try_for_each(|args| shared(args))?;
                    let mut pipeline = redis::Pipeline::with_capacity(cmds.len());
                    for args in cmds {
                        pipeline.add_command(command(args)?);
                    }
                    Ok(RedisRequest::Pipeline(pipeline))
                }
                _ => Err(Error::BadRequest(
                    "qp expects a non-empty list of commands".into(),
                )),
            },
            other => Err(Error::BadRequest(format!(
                "expected {{q, Command}} or {{qp, [Command]}}, got {}",
                other.describe()
            ))),
        }
    }

    fn connect(&self, _worker: usize) -> BoxFuture<'static, Result<RedisConn>> {
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

    fn execute(&self, conn: RedisConn, request: RedisRequest) -> BoxFuture<'static, Outcome> {
        let mut conn = conn.conn;
        Box::pin(async move {
            let answer = match request {
                RedisRequest::Single(cmd) => single(conn.send_packed_command(&cmd).await),
                RedisRequest::Pipeline(pipeline) => {
                    // One write, so no other caller's command lands in between.
                    let n = pipeline.len();
                    let replies = conn.send_packed_commands(&pipeline, 0, n).await;
                    match replies {
                        Ok(values) => values
                            .into_iter()
                            .map(|v| single(Ok(v)))
                            .collect::<Result<Vec<_>>>()
                            .map(Term::List),
                        Err(e) => single(Err(e)).map(|t| Term::List(vec![t; n])),
                    }
                }
            };
            answer.into()
        })
    }

    fn closed(&self, conn: &RedisConn) -> BoxFuture<'static, ()> {
        Box::pin(conn.closed.clone().cancelled_owned())
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

/// An eredis command's arguments: a non-empty list.
fn arguments(term: &Term) -> Result<&[Term]> {
    match term {
        Term::List(args) if !args.is_empty() => Ok(args),
        Term::List(_) => Err(Error::BadRequest("empty command".into())),
        _ => Err(Error::BadRequest(format!(
            "a command is a list of arguments, got {}",
            term.describe()
        ))),
    }
}

/// An eredis command: each argument an iolist, binary, atom or integer.
fn command(args: &[Term]) -> Result<redis::Cmd> {
    let mut cmd = redis::Cmd::new();
    let mut buf = Vec::new();
    for arg in args {
        buf.clear();
        if !arg.to_iodata(&mut buf) {
            return Err(Error::BadRequest(format!(
                "cannot send {} as a Redis argument",
                arg.describe()
            )));
        }
        cmd.arg(buf.as_slice());
    }
    Ok(cmd)
}

/// Argument `i` as upper-case text, for recognising commands and options.
fn word(args: &[Term], i: usize) -> String {
    let mut buf = Vec::new();
    match args.get(i) {
        Some(t) if t.to_iodata(&mut buf) => String::from_utf8_lossy(&buf).to_ascii_uppercase(),
        _ => String::new(),
    }
}

fn name_is(args: &[Term], name: &str) -> bool {
    word(args, 0) == name
}

/// Commands that change the state of the connection they run on. Callers
/// share connections (their commands pipeline on one), so such a command
/// would change it for everyone else: a MULTI makes their commands answer
/// QUEUED, a SELECT makes them read another database, a SUBSCRIBE takes the
/// connection from them.
const CONNECTION_STATE: [&str; 22] = [
    "MULTI",
    "EXEC",
    "DISCARD",
    "WATCH",
    "UNWATCH",
    "SELECT",
    "SUBSCRIBE",
    "PSUBSCRIBE",
    "SSUBSCRIBE",
    "UNSUBSCRIBE",
    "PUNSUBSCRIBE",
    "SUNSUBSCRIBE",
    "MONITOR",
    "QUIT",
    "RESET",
    "AUTH",
    "HELLO",
    "READONLY",
    "READWRITE",
    "SYNC",
    "PSYNC",
    "REPLCONF",
];
/// `CLIENT` subcommands of the same kind.
const CLIENT_STATE: [&str; 2] = ["REPLY", "TRACKING"];

/// Refuses what a shared connection cannot carry: connection-state commands,
/// and blocking commands that could hold the connection past the caller's
/// deadline (a timeout of 0 waits forever).
fn check_shared(args: &[Term], call_timeout: Duration) -> Result<()> {
    let name = word(args, 0);
    if CONNECTION_STATE.contains(&name.as_str())
        || (name == "CLIENT" && CLIENT_STATE.contains(&word(args, 1).as_str()))
    {
        return Err(Error::BadRequest(format!(
            "{name} changes the state of a connection that other callers share; \
             it is refused (a transaction is sent as one qp: MULTI, the commands, EXEC)"
        )));
    }
    let last = args.len().saturating_sub(1);
    let timeout_ms = |i: usize, seconds: bool| {
        let t: f64 = word(args, i).parse().ok()?;
        Some(if seconds { t * 1000.0 } else { t })
    };
    let blocks_for = match name.as_str() {
        "BLPOP" | "BRPOP" | "BRPOPLPUSH" | "BLMOVE" | "BZPOPMIN" | "BZPOPMAX" => {
            timeout_ms(last, true)
        }
        "BLMPOP" | "BZMPOP" => timeout_ms(1, true),
        "WAIT" | "WAITAOF" => timeout_ms(last, false),
        "XREAD" | "XREADGROUP" => match (1..last).find(|&i| word(args, i) == "BLOCK") {
            Some(i) => timeout_ms(i + 1, false),
            None => return Ok(()),
        },
        _ => return Ok(()),
    };
    match blocks_for {
        Some(ms) if ms > 0.0 && ms < call_timeout.as_millis() as f64 => Ok(()),
        _ => Err(Error::BadRequest(format!(
            "{name} could block a connection that other callers share past call_timeout \
             ({} ms); give it a timeout above 0 and below that",
            call_timeout.as_millis()
        ))),
    }
}

#[cfg(test)]
#[path = "redis_tests.rs"]
mod tests;
