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
use crate::error::Error;
use crate::term::Term;

/// What a request gives, in order: rows, and the end of each statement with
/// the number of rows it affected.
pub(super) enum Item {
    Row(Term),
    Done(u64),
}

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

/// One database engine. A connection serves one request at a time and is
/// neither cloned nor shared, so a blocking driver fits too (run on
/// blocking threads inside the futures).
pub(super) trait Backend: Send + Sync + 'static {
    const ENGINE: Engine;
    type Conn: Send + 'static;
    type Statement: Send + Sync + 'static;

    /// Opens a connection; `Err` says why not (without the password).
    fn connect(&self) -> impl Future<Output = Result<Self::Conn, String>> + Send;

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

    /// The server behind a driver that reaches several (odbc): `pgsql`,
    /// `mysql` or `other`.
    fn server(_conn: &Self::Conn) -> Option<&'static str> {
        None
    }
}

/// A backend whose types are erased: what the driver holds.
pub(super) trait Connector: Send + Sync {
    fn open(&self) -> BoxFuture<'_, Result<Box<dyn Session>, String>>;
}

/// An open connection, whatever its engine.
pub(super) trait Session: Send {
    /// Runs a query or an execute.
    fn run<'a>(&'a mut self, request: &'a RdbmsRequest) -> BoxFuture<'a, Outcome<Term>>;

    /// See [`Backend::server`].
    fn server(&self) -> Option<&'static str>;
}

impl<B: Backend> Connector for B {
    fn open(&self) -> BoxFuture<'_, Result<Box<dyn Session>, String>> {
        Box::pin(async move {
            let conn = self.connect().await?;
            let session: Box<dyn Session> = Box::new(Open::<B> {
                conn,
                prepared: HashMap::new(),
            });
            Ok(session)
        })
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

    fn server(&self) -> Option<&'static str> {
        B::server(&self.conn)
    }
}

impl<B: Backend> Open<B> {
    async fn execute(&mut self, name: &str, sql: &str, params: &[Term]) -> Outcome<Term> {
        let prepared = match self.prepared.remove(name) {
            Some(p) if p.sql == sql => p,
            _ => {
                let (statement, arity, columns) = B::prepare(&mut self.conn, sql).await?;
                Prepared {
                    sql: sql.to_string(),
                    statement,
                    params: arity,
                    kind: prepared_kind(B::ENGINE, sql, columns),
                }
            }
        };
        let prepared = self.prepared.entry(name.to_string()).or_insert(prepared);
        if prepared.params != params.len() {
            return Err(answer(&format!(
                "statement {name} takes {} parameters, got {}",
                prepared.params,
                params.len()
            )));
        }
        let items = B::execute(&mut self.conn, &prepared.statement, name, params).await?;
        Ok(shape_prepared(B::ENGINE, prepared.kind, items))
    }
}
