//! The `rdbms` pool type: PostgreSQL (`driver = "pgsql"`) and MySQL/MariaDB
//! (`driver = "mysql"`) through sqlx, with MongooseIM's result shapes.
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
//! `pg_terminate_backend`, MariaDB's `KILL`) is dropped too; the next
//! request, or the keepalive ping at once, opens a new one first.
//!
//! # Transactions
//!
//! `mongoose_rdbms:sql_transaction/2,3` runs its fun in the caller, so every
//! query it makes must reach the connection the transaction began on. A
//! checkout request goes through a worker like any other (strategy, queue
//! bound), takes the connection's mutex as an owned guard and hands it to the
//! caller at once as a [`Transaction`] (the NIF makes it a resource). The
//! checkout job runs on until the transaction is released, so the worker
//! stays busy, as a MongooseIM worker running a transaction; queries on the
//! handle run on the held connection in call order, `BEGIN`, `COMMIT` and
//! `ROLLBACK` among them. If the caller dies instead (or a checkout answer
//! reaches nobody), the resource's destructor drops the [`Transaction`],
//! which rolls back and then releases the connection.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::Mutex;

use crate::engine::pool::Driver;
use crate::error::{Error, Result};
use crate::term::Term;

mod backend;
mod config;
mod mysql;
mod pgsql;
mod request;
mod shape;
mod sqlx_common;
mod transaction;

use backend::{Connector, Failure, Session};
pub use config::{Engine, RdbmsConfig, RdbmsTls};
pub use request::{parse_request, Checkout, CheckoutCell, RdbmsRequest};
pub use shape::{statement_kinds, Kind};
pub use transaction::Transaction;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
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
    async fn open(&self) -> Result<Box<dyn Session>> {
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

/// One connection; `db` is `None` once it broke.
pub struct ConnState {
    db: Option<Box<dyn Session>>,
}

pub type Conn = Arc<Mutex<ConnState>>;

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
        let backend: Box<dyn Connector> = match config.engine {
            Engine::Pgsql => Box::new(pgsql::Pgsql::new(&config, op_timeout)),
            Engine::Mysql => Box::new(mysql::Mysql::new(&config)),
        };
        Ok(RdbmsDriver {
            shared: Arc::new(Shared {
                engine: config.engine,
                backend,
                op_timeout,
                keepalive: config.keepalive_interval,
                target: format!("{}:{}/{}", config.host, config.port, config.database),
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
            let db = Some(shared.open().await?);
            Ok(Arc::new(Mutex::new(ConnState { db })))
        })
    }

    fn execute(&self, conn: Conn, request: RdbmsRequest) -> BoxFuture<'static, Result<Term>> {
        let shared = self.shared.clone();
        Box::pin(async move {
            match request {
                RdbmsRequest::Engine => Ok(Term::atom(shared.engine.name())),
                RdbmsRequest::Checkout(Checkout { reply, wrap }) => {
                    if reply.is_cancelled() {
                        reply.disarm();
                        return Ok(Term::atom("ok"));
                    }
                    let (tx, released) = Transaction::hold(&shared, conn).await;
                    reply.send(Term::tuple(vec![
                        Term::atom("ok"),
                        wrap(tx),
                        Term::atom(shared.engine.name()),
                    ]));
                    // The worker stays busy until the transaction gives the
                    // connection back (or is dropped, which ends it too).
                    let _ = released.await;
                    Ok(Term::atom("ok"))
                }
                other => {
                    let mut state = conn.lock().await;
                    run_request(&shared, &mut state, &other).await
                }
            }
        })
    }

    fn keepalive(&self) -> Option<Duration> {
        self.shared.keepalive
    }

    fn ping(&self, conn: Conn) -> BoxFuture<'static, Result<()>> {
        let shared = self.shared.clone();
        Box::pin(async move {
            // A connection held by a transaction is in use, hence alive.
            let Ok(mut state) = conn.try_lock() else {
                return Ok(());
            };
            if state.db.is_some() {
                let ok = matches!(
                    run_request(&shared, &mut state, &RdbmsRequest::Query("SELECT 1".into()))
                        .await,
                    Ok(Term::Tuple(ref t)) if t.first() == Some(&Term::atom("selected"))
                );
                if ok {
                    return Ok(());
                }
                log::warn!(
                    "rdbms {} keepalive failed, replacing the connection",
                    shared.target
                );
                state.db = None;
            }
            state.db = Some(shared.open().await?);
            Ok(())
        })
    }
}

/// Runs a query or an execute on the connection, reopening it first if it
/// broke earlier. SQL errors are answers; a connection that broke or passed
/// its deadline is dropped.
async fn run_request(
    shared: &Shared,
    state: &mut ConnState,
    request: &RdbmsRequest,
) -> Result<Term> {
    let mut db = match state.db.take() {
        Some(db) => db,
        None => shared
            .open()
            .await
            .map_err(|e| Error::NoConnection(e.to_string()))?,
    };
    let answer =
        match tokio::time::timeout(shared.op_timeout + CLIENT_MARGIN, db.run(request)).await {
            Ok(Ok(term) | Err(Failure::Answer(term))) => term,
            Ok(Err(Failure::Broken(why))) => {
                log::warn!(
                    "rdbms {} connection lost, reopening on next use: {why}",
                    shared.target
                );
                return Ok(Error::ConnectionLost(format!("{}: {why}", shared.target)).to_term());
            }
            Err(_) => {
                return Ok(Error::Timeout(format!(
                    "{}: no answer within {} ms; the connection is replaced",
                    shared.target,
                    shared.op_timeout.as_millis()
                ))
                .to_term())
            }
        };
    state.db = Some(db);
    Ok(answer)
}

#[cfg(test)]
mod tests;
