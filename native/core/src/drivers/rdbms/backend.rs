//! What a database engine implements ([`Backend`]: pgsql, mysql and odbc),
//! and the one query and execute path every engine shares: the
//! prepared-statement cache, the parameter count check and MongooseIM's
//! result shapes.

use std::collections::HashMap;
use std::future::Future;

use futures::future::BoxFuture;

use super::request::RdbmsRequest;
use super::shape::{prepared_kind, shape_prepared, shape_query, Kind};
use super::Engine;
use crate::engine::load::Answer;
use crate::error::Error;
use crate::term::Term;

/// What a request gives, in order: rows, and the end of each statement with
/// the number of rows it affected.
pub(super) enum Item {
    Row(Term),
    Done(u64),
}

/// A connection's own I/O, which must be polled for its requests to make
/// progress, and which ends when the connection does. The worker that owns
/// the connection polls it (`Driver::closed`), so a request, its write and
/// its answer run in one task instead of three handing over to each other.
pub(super) type Io = BoxFuture<'static, ()>;

/// An open session, and its connection's own I/O if it has one.
pub(super) type Opened = (Box<dyn Session>, Option<Io>);

/// A result, or why there is none.
pub(super) type Outcome<T> = Result<T, Failure>;

/// Why a request on a connection gave no result.
pub(super) enum Failure {
    /// An answer for the caller (an SQL error, or a request refused before
    /// it reached the server); the connection stays.
    Answer(Term),
    /// The connection broke: it is dropped and reopened on next use.
    Broken(String),
}

/// `{error, Message}`, the message as a charlist (MongooseIM's SQL errors).
pub(super) fn answer(message: &str) -> Failure {
    Failure::Answer(Term::error(charlist(message)))
}

fn charlist(s: &str) -> Term {
    Term::List(
        s.chars()
            .map(|c| Term::Int(i64::from(u32::from(c))))
            .collect(),
    )
}

/// The bytes of a parameter given as iodata (a number as its text); an atom
/// has none.
pub(super) fn param_bytes(value: &Term) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    match value {
        Term::Atom(_) => None,
        v => v.to_iodata(&mut buf).then_some(buf),
    }
}

/// One database engine. A connection serves one request at a time (behind
/// the session's lock; a pipelining one also carries batches apart from
/// it, see `pipeline`), so a blocking driver fits too (run on
/// blocking threads inside the futures).
pub(super) trait Backend: Send + Sync + 'static {
    const ENGINE: Engine;
    /// Whether `pipeline` carries batches (see there).
    const PIPELINES: bool = false;
    type Conn: Send + 'static;
    type Statement: Clone + Send + Sync + 'static;

    /// Opens a connection; `Err` says why not (without the password). With
    /// it, for a client whose connection does its I/O in a future of its own
    /// (tokio-postgres), that future: the worker polls it (see `Io`).
    fn connect(&self) -> impl Future<Output = Result<(Self::Conn, Option<Io>), String>> + Send;

    /// Runs `sql`, one statement or several, with the text protocol.
    fn query(conn: &mut Self::Conn, sql: &str) -> impl Future<Output = Outcome<Vec<Item>>> + Send;

    /// Prepares `sql` (written with `?` placeholders): the statement, how
    /// many parameters it takes, and whether it returns columns.
    fn prepare(
        conn: &mut Self::Conn,
        sql: &str,
    ) -> impl Future<Output = Outcome<(Self::Statement, usize, bool)>> + Send;

    /// Binds `params` (as many as the statement takes) and runs statement `name`.
    fn execute(
        conn: &mut Self::Conn,
        statement: &Self::Statement,
        name: &str,
        params: &[Term],
    ) -> impl Future<Output = Outcome<Vec<Item>>> + Send;

    /// For a backend whose connection pipelines: runs prepared statements
    /// bound to their parameters apart from the session, all sent before
    /// the first answer is read, so that the next batch goes out behind
    /// them; answers in order. The others never get a batch (their workers
    /// take one request at a time).
    fn pipeline(
        _conn: &Self::Conn,
        runs: Vec<(Self::Statement, String, Vec<Term>)>,
    ) -> BoxFuture<'static, Vec<Outcome<Vec<Item>>>> {
        let refused = runs
            .iter()
            .map(|_| Err(answer("this engine takes one request at a time")))
            .collect();
        Box::pin(std::future::ready(refused))
    }

    /// The server behind a driver that reaches several (odbc): `pgsql`,
    /// `mysql` or `other`.
    fn server(_conn: &Self::Conn) -> Option<&'static str> {
        None
    }

    /// For a connection that callers write to from their own thread: binds
    /// `params` and writes the execute now (it never waits); `answer` gets
    /// the result shaped as `kind` says. Gives `answer` back when it
    /// cannot, which the others always do.
    fn direct(
        _conn: &Self::Conn,
        _statement: &Self::Statement,
        _params: &[Term],
        _kind: Kind,
        answer: Answer,
    ) -> Result<(), Answer> {
        Err(answer)
    }
}

/// A backend whose types are erased: what the driver holds.
pub(super) trait Connector: Send + Sync {
    fn open(&self) -> BoxFuture<'_, Result<Opened, String>>;

    /// See [`Backend::PIPELINES`].
    fn pipelines(&self) -> bool;
}

/// An open connection, whatever its engine.
pub(super) trait Session: Send {
    /// Runs a query or an execute.
    fn run<'a>(&'a mut self, request: &'a RdbmsRequest) -> BoxFuture<'a, Outcome<Term>>;

    /// Prepares what the executes (name, SQL, parameters) need, one at a
    /// time, and returns what runs them apart from the session
    /// ([`Backend::pipeline`]), answers in order.
    fn start_executes(
        &mut self,
        executes: Vec<(String, String, Vec<Term>)>,
    ) -> BoxFuture<'_, BoxFuture<'static, Vec<Outcome<Term>>>>;

    /// See [`Backend::server`].
    fn server(&self) -> Option<&'static str>;

    /// An execute of a statement already prepared the same way, written
    /// from the caller's thread ([`Backend::direct`]); `answer` comes back
    /// for anything else.
    fn direct(&self, request: &RdbmsRequest, answer: Answer) -> Result<(), Answer>;
}

impl<B: Backend> Connector for B {
    fn open(&self) -> BoxFuture<'_, Result<Opened, String>> {
        Box::pin(async move {
            let (conn, io) = self.connect().await?;
            let session: Box<dyn Session> = Box::new(Open::<B> {
                conn,
                prepared: HashMap::new(),
            });
            Ok((session, io))
        })
    }

    fn pipelines(&self) -> bool {
        B::PIPELINES
    }
}

/// A connection and the statements prepared on it, by name.
struct Open<B: Backend> {
    conn: B::Conn,
    prepared: HashMap<String, Prepared<B::Statement>>,
}

struct Prepared<S> {
    sql: String,
    statement: S,
    params: usize,
    kind: Kind,
}

impl<B: Backend> Session for Open<B> {
    fn run<'a>(&'a mut self, request: &'a RdbmsRequest) -> BoxFuture<'a, Outcome<Term>> {
        Box::pin(async move {
            match request {
                RdbmsRequest::Query(sql) => {
                    let items = B::query(&mut self.conn, sql).await?;
                    Ok(shape_query(B::ENGINE, sql, items))
                }
                RdbmsRequest::Execute { name, sql, params } => {
                    self.execute(name, sql, params).await
                }
                _ => Err(Failure::Answer(
                    Error::BadRequest("not a query".into()).to_term(),
                )),
            }
        })
    }

    fn start_executes(
        &mut self,
        executes: Vec<(String, String, Vec<Term>)>,
    ) -> BoxFuture<'_, BoxFuture<'static, Vec<Outcome<Term>>>> {
        Box::pin(self.start_many(executes))
    }

    fn server(&self) -> Option<&'static str> {
        B::server(&self.conn)
    }

    fn direct(&self, request: &RdbmsRequest, answer: Answer) -> Result<(), Answer> {
        let RdbmsRequest::Execute { name, sql, params } = request else {
            return Err(answer);
        };
        match self.prepared.get(name) {
            Some(p) if p.sql == *sql && p.params == params.len() => {
                B::direct(&self.conn, &p.statement, params, p.kind, answer)
            }
            _ => Err(answer),
        }
    }
}

impl<B: Backend> Open<B> {
    async fn execute(&mut self, name: &str, sql: &str, params: &[Term]) -> Outcome<Term> {
        let Open { conn, prepared } = self;
        let p = ready::<B>(conn, prepared, name, sql, params.len()).await?;
        let items = B::execute(conn, &p.statement, name, params).await?;
        Ok(shape_prepared(B::ENGINE, p.kind, items))
    }

    async fn start_many(
        &mut self,
        executes: Vec<(String, String, Vec<Term>)>,
    ) -> BoxFuture<'static, Vec<Outcome<Term>>> {
        let mut early = Vec::with_capacity(executes.len());
        let (mut runs, mut kinds) = (Vec::new(), Vec::new());
        for (name, sql, params) in executes {
            let Open { conn, prepared } = &mut *self;
            match ready::<B>(conn, prepared, &name, &sql, params.len()).await {
                Ok(p) => {
                    kinds.push(p.kind);
                    runs.push((p.statement.clone(), name, params));
                    early.push(None);
                }
                Err(failure) => early.push(Some(Err(failure))),
            }
        }
        let running = B::pipeline(&self.conn, runs);
        Box::pin(async move {
            let mut ran = running.await.into_iter().zip(kinds);
            early
                .into_iter()
                .map(|answered| {
                    answered.unwrap_or_else(|| match ran.next() {
                        Some((items, kind)) => Ok(shape_prepared(B::ENGINE, kind, items?)),
                        None => Err(Failure::Broken("a batch lost an answer".into())),
                    })
                })
                .collect()
        })
    }
}

/// Statement `name` prepared (as `sql`) on `conn`, taking `arity`
/// parameters. One already prepared costs a lookup and no allocation.
async fn ready<'p, B: Backend>(
    conn: &mut B::Conn,
    prepared: &'p mut HashMap<String, Prepared<B::Statement>>,
    name: &str,
    sql: &str,
    arity: usize,
) -> Outcome<&'p Prepared<B::Statement>> {
    if prepared.get(name).is_none_or(|p| p.sql != sql) {
        let (statement, params, columns) = B::prepare(conn, sql).await?;
        let fresh = Prepared {
            sql: sql.to_string(),
            statement,
            params,
            kind: prepared_kind(B::ENGINE, sql, columns),
        };
        prepared.insert(name.to_string(), fresh);
    }
    let p = &prepared[name];
    if p.params != arity {
        return Err(answer(&format!(
            "statement {name} takes {} parameters, got {arity}",
            p.params
        )));
    }
    Ok(p)
}
