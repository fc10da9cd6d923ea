//! MySQL/MariaDB: the text protocol and prepared statements.

use futures::stream::BoxStream;
use futures::TryStreamExt;
use sqlx::error::ErrorKind;
use sqlx::mysql::{
    MySql, MySqlArguments, MySqlConnectOptions, MySqlConnection, MySqlDatabaseError,
    MySqlQueryResult, MySqlRow, MySqlSslMode, MySqlStatement,
};
use sqlx::{Arguments, Column, ConnectOptions, Connection, Decode, Either, Executor, Row};
use sqlx::{Statement, TypeInfo, ValueRef};

use super::backend::{answer, param_bytes, Backend, Failure, Io, Item, Outcome};
use super::shape::null;
use super::{Engine, RdbmsConfig};
use crate::term::Term;

pub(super) struct Mysql {
    options: MySqlConnectOptions,
}

impl Mysql {
    pub(super) fn new(config: &RdbmsConfig) -> Mysql {
        let mut opts = MySqlConnectOptions::new()
            .host(&config.host)
            .port(config.port)
            .username(&config.username)
            .database(&config.database)
            .charset("utf8mb4")
            .pipes_as_concat(false)
            .timezone(None);
        if let Some(p) = &config.password {
            opts = opts.password(p.expose());
        }
        opts = match &config.tls {
            None => opts.ssl_mode(MySqlSslMode::Disabled),
            Some(tls) => {
                let mode = if tls.verify_peer {
                    MySqlSslMode::VerifyIdentity
                } else {
                    MySqlSslMode::Required
                };
                tls.set_files(
                    opts.ssl_mode(mode),
                    [
                        |o, f| o.ssl_ca(f),
                        |o, f| o.ssl_client_cert(f),
                        |o, f| o.ssl_client_key(f),
                    ],
                )
            }
        };
        Mysql {
            options: opts.disable_statement_logging(),
        }
    }
}

impl Backend for Mysql {
    const ENGINE: Engine = Engine::Mysql;
    type Conn = MySqlConnection;
    type Statement = MySqlStatement<'static>;

    async fn connect(&self) -> Result<(MySqlConnection, Option<Io>), String> {
        let connected = MySqlConnection::connect_with(&self.options).await;
        connected.map(|c| (c, None)).map_err(|e| connect_error(&e))
    }

    async fn query(conn: &mut MySqlConnection, sql: &str) -> Outcome<Vec<Item>> {
        let stream = sqlx::raw_sql(sql).fetch_many(conn);
        collect(stream).await
    }

    async fn prepare(
        conn: &mut MySqlConnection,
        sql: &str,
    ) -> Outcome<(Self::Statement, usize, bool)> {
        let statement = Statement::to_owned(&conn.prepare(sql).await.map_err(failure)?);
        let params = match statement.parameters() {
            Some(Either::Right(n)) => n,
            Some(Either::Left(types)) => types.len(),
            None => 0,
        };
        let columns = !statement.columns().is_empty();
        Ok((statement, params, columns))
    }

    async fn execute(
        conn: &mut MySqlConnection,
        statement: &Self::Statement,
        name: &str,
        params: &[Term],
    ) -> Outcome<Vec<Item>> {
        let mut args = MySqlArguments::default();
        for (i, value) in params.iter().enumerate() {
            let added = match value {
                Term::Int(n) => args.add(*n),
                Term::Float(f) => args.add(*f),
                Term::Atom(a) if a == "true" => args.add(1i64),
                Term::Atom(a) if a == "false" => args.add(0i64),
                Term::Atom(a) if a == "null" || a == "undefined" => args.add(None::<String>),
                v => match param_bytes(v) {
                    Some(bytes) => match String::from_utf8(bytes) {
                        Ok(s) => args.add(s),
                        Err(e) => args.add(e.into_bytes()),
                    },
                    None => {
                        return Err(answer(&format!(
                            "statement {name}, parameter {}: cannot send {}",
                            i + 1,
                            v.describe()
                        )))
                    }
                },
            };
            added.map_err(|e| answer(&e.to_string()))?;
        }
        let stream = conn.fetch_many(statement.query_with(args));
        collect(stream).await
    }
}

/// The items of a result stream: rows, and the end of each statement.
async fn collect(
    stream: BoxStream<'_, sqlx::Result<Either<MySqlQueryResult, MySqlRow>>>,
) -> Outcome<Vec<Item>> {
    let items =
        stream.map_ok(|e| e.either(|d| Item::Done(d.rows_affected()), |r| Item::Row(row(&r))));
    items.try_collect().await.map_err(failure)
}

fn describe(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) => db.message().to_string(),
        other => other.to_string(),
    }
}

/// A failed connect: a refused login (1045, SQLSTATE 28000) names the
/// options to look at.
fn connect_error(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) if db.code().is_some_and(|c| c.starts_with("28")) => format!(
            "the server refused the login given in connection.username and \
             connection.password: {}",
            db.message()
        ),
        other => describe(other),
    }
}

/// ER_SERVER_SHUTDOWN, ER_CONNECTION_KILLED, CR_SERVER_GONE_ERROR and
/// CR_SERVER_LOST end the connection, as network and protocol errors do.
/// A unique-key violation is `{error, duplicate_key}`.
fn failure(e: sqlx::Error) -> Failure {
    let fatal = |db: &MySqlDatabaseError| matches!(db.number(), 1053 | 1927 | 2006 | 2013);
    match &e {
        sqlx::Error::Database(db) if db.try_downcast_ref().is_some_and(fatal) => {
            Failure::Broken(describe(&e))
        }
        sqlx::Error::Database(db) if db.kind() == ErrorKind::UniqueViolation => {
            Failure::Answer(Term::error(Term::atom("duplicate_key")))
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed => Failure::Broken(describe(&e)),
        _ => answer(&describe(&e)),
    }
}

fn row(row: &MySqlRow) -> Term {
    let values = row
        .columns()
        .iter()
        .enumerate()
        .map(|(i, col)| {
            let Ok(v) = row.try_get_raw(i) else {
                return null();
            };
            if v.is_null() {
                return null();
            }
            let name = col.type_info().name().to_string();
            let decoded = match name.as_str() {
                "BOOLEAN" | "TINYINT" | "SMALLINT" | "MEDIUMINT" | "INT" | "BIGINT" => {
                    <i64 as Decode<MySql>>::decode(v.clone())
                        .ok()
                        .map(Term::Int)
                }
                "TINYINT UNSIGNED" | "SMALLINT UNSIGNED" | "MEDIUMINT UNSIGNED"
                | "INT UNSIGNED" | "BIGINT UNSIGNED" | "YEAR" => {
                    <u64 as Decode<MySql>>::decode(v.clone())
                        .ok()
                        .and_then(|u| i64::try_from(u).ok())
                        .map(Term::Int)
                }
                "DOUBLE" | "FLOAT" => <f64 as Decode<MySql>>::decode(v.clone())
                    .ok()
                    .map(Term::Float),
                "DECIMAL" => <&str as Decode<MySql>>::decode(v.clone())
                    .ok()
                    .and_then(|s| {
                        s.parse::<i64>()
                            .map(Term::Int)
                            .ok()
                            .or_else(|| s.parse::<f64>().ok().map(Term::Float))
                    }),
                _ => None,
            };
            decoded.unwrap_or_else(|| {
                <&[u8] as Decode<MySql>>::decode(v)
                    .map(Term::bin)
                    .unwrap_or_else(|_| null())
            })
        })
        .collect();
    Term::Tuple(values)
}
