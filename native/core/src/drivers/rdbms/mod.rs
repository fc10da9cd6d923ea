//! The `rdbms` pool type: PostgreSQL (`driver = "pgsql"`) through a client
//! of our own over plain TCP (`pg_wire`) and tokio-postgres over TLS,
//! MySQL/MariaDB (`driver = "mysql"`) through sqlx, any server with an ODBC
//! driver (`driver = "odbc"`, cargo feature `odbc`) through unixODBC, with
//! MongooseIM's result shapes.
//!
//! Options: see [`RdbmsConfig`] (module `config`); requests: see
//! [`RdbmsRequest`] (module `request`). Each engine implements the `Backend`
//! trait (module `backend`), which gives one query and execute path for all.
//!
//! Answers: `{selected, [tuple()]}`, `{updated, N}`, `{updated, N, [tuple()]}`
//! (pgsql `... RETURNING`), a list of these for several statements in one
//! query (pgsql: in reverse order, as MongooseIM's epgsql backend returns
//! them), `{error, duplicate_key}` for a unique-key violation, `{error,
//! Message}` (a charlist, the server's message) for other SQL errors, and
//! `{error, {Kind, Message}}` for connection problems.
//!
//! # Connections, failures, timeouts
//!
//! Each request on a worker's connection runs under a deadline, the smaller
//! of `query_timeout` and `call_timeout`: pgsql gets it (plus 100 ms) as
//! `statement_timeout`, so the server cancels a slow statement and keeps the
//! connection; the client gives up 500 ms after it and drops the connection.
//! A connection that broke (a network error, a FATAL error such as
//! `pg_terminate_backend`, MariaDB's `KILL`) is dropped too; the engine
//! opens a new one at once, and requests wait in the queue while it does.
//! A pgsql connection's own I/O runs in its worker's task (`Driver::closed`),
//! so one the server closes while idle is replaced before a request finds
//! it dead; mysql and odbc find out at the next request or keepalive.
//!
//! # Transactions
//!
//! `mongoose_rdbms:sql_transaction/2,3` runs its fun in the caller, so every
//! query it makes must reach the connection the transaction began on: it
//! holds an exclusive lease on one worker's connection (`engine::lease`),
//! `BEGIN`, `COMMIT` and `ROLLBACK` among its queries. A lease that comes
//! back without a clean release (its owner died) is rolled back ([`reset`]).
//!
//! [`reset`]: Driver::reset

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::Mutex;

use crate::engine::load::Answer;
use crate::engine::pool::{Driver, Outcome};
use crate::error::{Error, Result};
use crate::term::Term;

mod backend;
mod config;
mod mysql;
#[cfg(feature = "odbc")]
mod odbc;
mod pg_tls;
mod pg_wire;
mod pgsql;
mod request;
mod shape;

use backend::{Connector, Failure, Io, Opened, Session};
pub use config::{Engine, RdbmsConfig, RdbmsTls};
pub use request::{parse_request, RdbmsRequest};
pub use shape::{statement_kinds, Kind};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How many queued executes a worker whose connection pipelines sends
/// together (the engine's batch).
const PIPELINE_DEPTH: usize = 64;
/// The client gives up this long after the deadline (mysql, or a server that
/// does not answer): the connection is then dropped and reopened.
const CLIENT_MARGIN: Duration = Duration::from_millis(500);

/// What every connection of a pool shares.
pub struct Shared {
    engine: Engine,
    backend: Box<dyn Connector>,
    /// The deadline of one request on a connection.
    op_timeout: Duration,
    keepalive: Option<Duration>,
    target: String,
}

impl Shared {
    async fn open(&self) -> Result<Opened> {
        let why = match tokio::time::timeout(CONNECT_TIMEOUT, self.backend.open()).await {
            Ok(Ok(db)) => return Ok(db),
            Ok(Err(why)) => why,
            Err(_) => format!("no connection within {CONNECT_TIMEOUT:?}"),
        };
        Err(Error::Connect(format!(
            "{} {}: {why}",
            self.engine.name(),
            self.target
        )))
    }
}

/// One connection: the lock lets clones of the handle reach the session, one
/// request at a time (a pipelined batch holds it only while it prepares);
/// beside it the connection's own I/O until its worker takes it (`closed`).
#[derive(Clone)]
pub struct Conn {
    session: Arc<Mutex<Box<dyn Session>>>,
    /// Taken once, by the worker.
    io: Arc<std::sync::Mutex<Option<Io>>>,
}

pub struct RdbmsDriver {
    shared: Arc<Shared>,
}

impl RdbmsDriver {
    /// `call_timeout_ms` bounds each request on a connection (with `query_timeout`).
    pub fn new(config: RdbmsConfig, call_timeout_ms: u64) -> Result<RdbmsDriver> {
        let call_timeout = Duration::from_millis(call_timeout_ms.max(1));
        let op_timeout = config
            .query_timeout
            .map_or(call_timeout, |q| q.min(call_timeout));
        let backend: Box<dyn Connector> = match (config.engine, &config.settings) {
            (Engine::Pgsql, _) => {
                let options = pgsql::session_options(op_timeout);
                match &config.tls {
                    None => Box::new(pg_wire::PgWire::new(&config, options)),
                    Some(tls) => Box::new(pgsql::Pgsql::new(&config, tls, options)?),
                }
            }
            (Engine::Mysql, _) => Box::new(mysql::Mysql::new(&config)),
            #[cfg(feature = "odbc")]
            (Engine::Odbc, Some(settings)) => Box::new(odbc::Odbc::new(settings.clone())),
            (Engine::Odbc, _) => {
                return Err(Error::Config(
                    "driver odbc: no connection string, or built without ODBC".into(),
                ))
            }
        };
        Ok(RdbmsDriver {
            shared: Arc::new(Shared {
                engine: config.engine,
                backend,
                op_timeout,
                keepalive: config.keepalive_interval,
                target: config.target(),
            }),
        })
    }
}

impl Driver for RdbmsDriver {
    type Conn = Conn;
    type Request = RdbmsRequest;

    fn parse(&self, request: Term) -> Result<RdbmsRequest> {
        parse_request(request)
    }

    fn connect(&self, _worker: usize) -> BoxFuture<'static, Result<Conn>> {
        let shared = self.shared.clone();
        Box::pin(async move {
            let (session, io) = shared.open().await?;
            let io = Arc::new(std::sync::Mutex::new(io));
            Ok(Conn {
                session: Arc::new(Mutex::new(session)),
                io,
            })
        })
    }

    /// A connection that pipelines takes the executes queued on its worker
    /// as one batch; the others take one request at a time.
    fn concurrency(&self) -> usize {
        match self.shared.backend.pipelines() {
            true => PIPELINE_DEPTH,
            false => 1,
        }
    }

    /// Executes only (queries, leases and `rdbms_engine` each go alone,
    /// through the session's lock), under one deadline.
    fn execute_many(
        &self,
        conn: &Conn,
        requests: Vec<RdbmsRequest>,
    ) -> std::result::Result<BoxFuture<'static, Vec<Outcome>>, Vec<RdbmsRequest>> {
        let all_executes = requests
            .iter()
            .all(|r| matches!(r, RdbmsRequest::Execute { .. }));
        if !all_executes || requests.len() < 2 {
            return Err(requests);
        }
        let executes: Vec<_> = requests
            .into_iter()
            .filter_map(|r| match r {
                RdbmsRequest::Execute { name, sql, params } => Some((name, sql, params)),
                _ => None,
            })
            .collect();
        let (shared, conn) = (self.shared.clone(), conn.clone());
        Ok(Box::pin(async move {
            let n = executes.len();
            let deadline = tokio::time::Instant::now() + shared.op_timeout + CLIENT_MARGIN;
            // The session only while preparing: the next batch may go out
            // behind this one.
            let started = {
                let mut session = conn.session.lock().await;
                tokio::time::timeout_at(deadline, session.start_executes(executes)).await
            };
            let outcomes = match started {
                Ok(running) => tokio::time::timeout_at(deadline, running).await.ok(),
                Err(_) => None,
            };
            match outcomes {
                Some(outcomes) => outcomes
                    .into_iter()
                    .map(|o| settle(&shared, o).into())
                    .collect(),
                None => (0..n)
                    .map(|_| Outcome::failed(timed_out(&shared)))
                    .collect(),
            }
        }))
    }

    fn execute(&self, conn: Conn, request: RdbmsRequest) -> BoxFuture<'static, Outcome> {
        let shared = self.shared.clone();
        Box::pin(async move {
            match request {
                RdbmsRequest::Engine => {
                    let engine = Term::atom(shared.engine.name());
                    // {odbc, Server}: mongoose_rdbms escapes for the server.
                    Outcome::answer(match conn.session.lock().await.server() {
                        Some(server) => Term::tuple(vec![engine, Term::atom(server)]),
                        None => engine,
                    })
                }
                other => run_request(&shared, &mut *conn.session.lock().await, &other)
                    .await
                    .into(),
            }
        })
    }

    /// An execute at an idle pool, written from the caller's thread when
    /// the connection can take it so (pgsql over plain TCP) and no request
    /// holds its session.
    fn direct(
        &self,
        conn: &Conn,
        request: RdbmsRequest,
        answer: Answer,
    ) -> std::result::Result<(), (RdbmsRequest, Answer)> {
        let Ok(session) = conn.session.try_lock() else {
            return Err((request, answer));
        };
        session.direct(&request, answer).map_err(|a| (request, a))
    }

    fn keepalive(&self) -> Option<Duration> {
        self.shared.keepalive
    }

    /// The connection's own I/O (pgsql), which ends when the connection
    /// does: the worker polls it beside the requests it runs on it.
    fn closed(&self, conn: &Conn) -> BoxFuture<'static, ()> {
        let io = conn.io.lock().ok().and_then(|mut io| io.take());
        io.unwrap_or_else(|| Box::pin(std::future::pending()))
    }

    fn ping(&self, conn: Conn) -> BoxFuture<'static, Result<()>> {
        self.check(conn, "SELECT 1")
    }

    /// Rolls back whatever the lease's owner left open.
    fn reset(&self, conn: Conn) -> BoxFuture<'static, Result<()>> {
        self.check(conn, "ROLLBACK")
    }
}

impl RdbmsDriver {
    /// Runs `sql`; anything but a result means the connection is replaced.
    fn check(&self, conn: Conn, sql: &'static str) -> BoxFuture<'static, Result<()>> {
        let shared = self.shared.clone();
        Box::pin(async move {
            let request = RdbmsRequest::Query(sql.into());
            match run_request(&shared, &mut *conn.session.lock().await, &request).await? {
                Term::Tuple(t)
                    if matches!(
                        t.first().and_then(Term::as_atom),
                        Some("selected" | "updated")
                    ) =>
                {
                    Ok(())
                }
                other => Err(Error::ConnectionLost(format!(
                    "{} {}: {sql} answered {}",
                    shared.engine.name(),
                    shared.target,
                    other.describe()
                ))),
            }
        })
    }
}

/// Runs a query or an execute under the connection's deadline. SQL errors
/// are answers; a connection that broke or passed its deadline is an error
/// that breaks it, and the engine reopens it.
async fn run_request(
    shared: &Shared,
    db: &mut Box<dyn Session>,
    request: &RdbmsRequest,
) -> Result<Term> {
    match tokio::time::timeout(shared.op_timeout + CLIENT_MARGIN, db.run(request)).await {
        Ok(outcome) => settle(shared, outcome),
        Err(_) => Err(timed_out(shared)),
    }
}

/// SQL errors are answers; a broken connection is an error that breaks it.
fn settle(shared: &Shared, outcome: backend::Outcome<Term>) -> Result<Term> {
    match outcome {
        Ok(term) | Err(Failure::Answer(term)) => Ok(term),
        Err(Failure::Broken(why)) => {
            Err(Error::ConnectionLost(format!("{}: {why}", shared.target)))
        }
    }
}

fn timed_out(shared: &Shared) -> Error {
    Error::Timeout(format!(
        "{}: no answer within {} ms; the connection is replaced",
        shared.target,
        shared.op_timeout.as_millis()
    ))
}

#[cfg(test)]
mod tests;
