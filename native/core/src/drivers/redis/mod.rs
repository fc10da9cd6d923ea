//! The `redis` pool type: eredis's request forms and result shapes on a
//! multiplexed connection per worker, so concurrent callers pipeline.

use std::time::Duration;

use futures::future::BoxFuture;
use redis::cluster_async::ClusterConnection;
use redis::{RedisConnectionInfo, Value};
use rustls_pki_types::ServerName;
use tokio_rustls::TlsConnector;

use crate::engine::load::Answer;
use crate::engine::pool::{Driver, Outcome};
use crate::error::{Error, Result};
use crate::term::Term;

mod cluster;
mod config;
mod link;
mod resp;
mod sentinel;
mod single;

pub(crate) use config::servers;
pub use config::{Mode, RedisConfig, Server};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Commands one connection carries at once before the worker queues more.
const PIPELINE_DEPTH: usize = 256;

/// Single mode opens its own TCP (and TLS) stream so that TLS comes from
/// the shared `tls` module and sockets get TCP_NODELAY; over plain TCP the
/// connection is ours (`link`), over TLS the redis crate speaks RESP on
/// the stream. Cluster and sentinel modes are in their modules.
pub struct RedisDriver {
    backend: Backend,
    /// Blocking commands must give up before the caller does.
    call_timeout: Duration,
}

enum Backend {
    Single {
        host: String,
        port: u16,
        settings: RedisConnectionInfo,
        tls: Option<single::Tls>,
        target: String,
    },
    Cluster(Box<cluster::Cluster>),
    Sentinel(sentinel::Sentinels),
}

impl RedisDriver {
    pub fn new(config: RedisConfig, call_timeout_ms: u64) -> Result<RedisDriver> {
        let mut settings = RedisConnectionInfo::default().set_db(config.database);
        if let Some(p) = &config.password {
            settings = settings.set_password(p.expose());
        }
        let call_timeout = Duration::from_millis(call_timeout_ms);
        let backend = match config.mode {
            Mode::Single { host, port } => {
                let target = format!("{host}:{port}/{}", config.database);
                let tls = match config.tls {
                    Some(tls) => {
                        let name = ServerName::try_from(host.clone()).map_err(|_| {
                            Error::Config(format!("redis {target}: not a TLS server name"))
                        })?;
                        Some((TlsConnector::from(tls), name))
                    }
                    None => None,
                };
                Backend::Single {
                    host,
                    port,
                    settings,
                    tls,
                    target,
                }
            }
            Mode::Cluster { seeds } => Backend::Cluster(Box::new(cluster::Cluster::new(
                &seeds,
                config.password.as_ref(),
                config.read_from_replicas,
                CONNECT_TIMEOUT,
                call_timeout,
            )?)),
            Mode::Sentinel {
                sentinels,
                master_name,
            } => Backend::Sentinel(sentinel::Sentinels::new(
                &sentinels,
                &master_name,
                settings,
                config.read_from_replicas,
            )),
        };
        Ok(RedisDriver {
            backend,
            call_timeout,
        })
    }
}

/// A worker's connection in each mode.
#[derive(Clone)]
pub enum RedisConn {
    Single(single::Conn),
    Cluster(ClusterConnection),
    Sentinel(sentinel::Conn),
}

pub enum RedisRequest {
    Single(redis::Cmd),
    /// A `qp`; `transaction` when it is MULTI, the commands, EXEC (or DISCARD).
    Pipeline {
        cmds: Vec<redis::Cmd>,
        transaction: bool,
    },
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
                    let transaction = match (cmds.first(), cmds.last()) {
                        (Some(first), Some(last)) => {
                            cmds.len() > 1
                                && name_is(first, "MULTI")
                                && (name_is(last, "EXEC") || name_is(last, "DISCARD"))
                        }
                        _ => false,
                    };
                    let inner = match transaction {
                        true => &cmds[1..cmds.len() - 1],
                        false => &cmds[..],
                    };
                    inner.iter().try_for_each(|args| shared(args))?;
                    Ok(RedisRequest::Pipeline {
                        cmds: cmds.into_iter().map(command).collect::<Result<_>>()?,
                        transaction,
                    })
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
        match &self.backend {
            Backend::Single {
                host,
                port,
                settings,
                tls,
                target,
            } => {
                let opening = single::open(host.clone(), *port, settings.clone(), tls.clone());
                let target = target.clone();
                Box::pin(async move {
                    single::connect(&target, CONNECT_TIMEOUT, opening)
                        .await
                        .map(RedisConn::Single)
                })
            }
            Backend::Cluster(c) => {
                let opening = c.connect(CONNECT_TIMEOUT);
                Box::pin(async move { opening.await.map(RedisConn::Cluster) })
            }
            Backend::Sentinel(s) => {
                let opening = s.connect(CONNECT_TIMEOUT);
                Box::pin(async move { opening.await.map(RedisConn::Sentinel) })
            }
        }
    }

    fn execute(&self, conn: RedisConn, request: RedisRequest) -> BoxFuture<'static, Outcome> {
        Box::pin(async move {
            match conn {
                RedisConn::Single(c) => single::run(c, request).await,
                RedisConn::Cluster(c) => Outcome::answer(cluster::run(c, request).await),
                RedisConn::Sentinel(c) => sentinel::run(c, request).await,
            }
        })
    }

    /// Single mode over plain TCP: the caller's thread writes the command.
    fn direct(
        &self,
        conn: &RedisConn,
        request: RedisRequest,
        answer: Answer,
    ) -> std::result::Result<(), (RedisRequest, Answer)> {
        match conn {
            RedisConn::Single(c) => c.write(&request, answer).map_err(|a| (request, a)),
            _ => Err((request, answer)),
        }
    }

    /// Single mode writes the requests queued together as one pipeline.
    fn execute_many(
        &self,
        conn: &RedisConn,
        requests: Vec<RedisRequest>,
    ) -> std::result::Result<BoxFuture<'static, Vec<Outcome>>, Vec<RedisRequest>> {
        match conn {
            RedisConn::Single(c) => Ok(Box::pin(single::run_many(c.clone(), requests))),
            _ => Err(requests),
        }
    }

    fn closed(&self, conn: &RedisConn) -> BoxFuture<'static, ()> {
        match conn {
            RedisConn::Single(c) => Box::pin(c.closed().cancelled_owned()),
            // The cluster connection replaces dead node connections itself.
            RedisConn::Cluster(_) => Box::pin(std::future::pending()),
            RedisConn::Sentinel(c) => sentinel::closed(c),
        }
    }
}

fn pipeline(cmds: Vec<redis::Cmd>) -> redis::Pipeline {
    let mut p = redis::Pipeline::with_capacity(cmds.len());
    for cmd in cmds {
        p.add_command(cmd);
    }
    p
}

/// One eredis reply: `{ok, Value}` or `{error, Message}`; a broken
/// connection is an `Err` so the worker replaces it.
fn reply(result: redis::RedisResult<Value>) -> Result<Term> {
    match result {
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
mod tests;
