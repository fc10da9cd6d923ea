//! PostgreSQL over TLS on tokio-postgres (plain TCP is `pg_wire`'s), and
//! what both share: the session's settings, parameters encoded from Erlang
//! terms for the type the server described, values decoded, errors sorted.
//! The simple protocol gives values as text, prepared statements typed
//! values; the executes of one batch are pipelined: all are sent before
//! the first answer is read, on the one connection.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures::future::{join_all, BoxFuture};
use futures::{FutureExt, StreamExt, TryStreamExt};
use tokio_postgres::config::SslMode;
use tokio_postgres::error::{Severity, SqlState};
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type};
use tokio_postgres::{Client, Config, SimpleQueryMessage, Statement};

use super::backend::{answer, param_bytes, Backend, Failure, Io, Item, Outcome};
use super::pg_tls::MakeRustls;
use super::shape::null;
use super::{Engine, RdbmsConfig, RdbmsTls};
use crate::term::Term;

/// `statement_timeout` is the request deadline plus this, so a caller
/// waiting exactly `call_timeout` times out first (and cancels) and the
/// server then cancels the statement, keeping the connection.
const SERVER_MARGIN: Duration = Duration::from_millis(100);

pub(super) struct Pgsql {
    config: Config,
    tls: MakeRustls,
}

/// The session's settings, sent at startup: MongooseIM's escaping writes
/// backslash escapes in plain literals, and `op_timeout` is the deadline
/// of one request.
pub(super) fn session_options(op_timeout: Duration) -> String {
    format!(
        "-c standard_conforming_strings=off -c escape_string_warning=off \
         -c client_min_messages=error -c statement_timeout={}",
        (op_timeout + SERVER_MARGIN).as_millis()
    )
}

impl Pgsql {
    /// `options`: see [`session_options`].
    pub(super) fn new(
        config: &RdbmsConfig,
        tls: &RdbmsTls,
        options: String,
    ) -> crate::error::Result<Pgsql> {
        let mut c = Config::new();
        c.host(&config.host)
            .port(config.port)
            .user(&config.username)
            .dbname(&config.database)
            .application_name("mongooseim")
            .options(options);
        if let Some(p) = &config.password {
            c.password(p.expose());
        }
        c.ssl_mode(match tls.required || tls.verify_peer {
            true => SslMode::Require,
            false => SslMode::Prefer,
        });
        let tls = MakeRustls::new(Arc::new(tls.rustls()?));
        Ok(Pgsql { config: c, tls })
    }
}

impl Backend for Pgsql {
    const ENGINE: Engine = Engine::Pgsql;
    const PIPELINES: bool = true;
    type Conn = Arc<Client>;
    type Statement = Statement;

    async fn connect(&self) -> Result<(Arc<Client>, Option<Io>), String> {
        let (client, connection) = self
            .config
            .connect(self.tls.clone())
            .await
            .map_err(|e| connect_error(&e))?;
        // Ends with an error (logged by the worker as a lost connection) or
        // once the client is dropped.
        let io = connection.map(|_| ());
        Ok((Arc::new(client), Some(Box::pin(io))))
    }

    async fn query(conn: &mut Arc<Client>, sql: &str) -> Outcome<Vec<Item>> {
        let stream = conn.simple_query_raw(sql).await.map_err(failure)?;
        let items = stream.try_filter_map(|m| async move {
            Ok(match m {
                SimpleQueryMessage::Row(row) => Some(Item::Row(Term::Tuple(
                    (0..row.len())
                        .map(|i| row.get(i).map_or_else(null, |v| Term::bin(v.as_bytes())))
                        .collect(),
                ))),
                SimpleQueryMessage::CommandComplete(n) => Some(Item::Done(n)),
                _ => None,
            })
        });
        items.try_collect().await.map_err(failure)
    }

    async fn prepare(conn: &mut Arc<Client>, sql: &str) -> Outcome<(Statement, usize, bool)> {
        let statement = conn.prepare(&pg_placeholders(sql)).await.map_err(failure)?;
        let params = statement.params().len();
        let columns = !statement.columns().is_empty();
        Ok((statement, params, columns))
    }

    async fn execute(
        conn: &mut Arc<Client>,
        statement: &Statement,
        name: &str,
        params: &[Term],
    ) -> Outcome<Vec<Item>> {
        run(conn, statement, name, params).await
    }

    fn pipeline(
        conn: &Arc<Client>,
        runs: Vec<(Statement, String, Vec<Term>)>,
    ) -> BoxFuture<'static, Vec<Outcome<Vec<Item>>>> {
        let conn = conn.clone();
        Box::pin(async move {
            let runs = runs
                .iter()
                .map(|(statement, name, params)| run(&conn, statement, name, params));
            join_all(runs).await
        })
    }
}

/// Binds and runs one prepared statement; several of these polled together
/// share the connection's pipeline.
async fn run(
    conn: &Client,
    statement: &Statement,
    name: &str,
    params: &[Term],
) -> Outcome<Vec<Item>> {
    let mut args = Vec::with_capacity(params.len());
    for (i, (ty, value)) in statement.params().iter().zip(params).enumerate() {
        let param = encode_param(ty, value)
            .map_err(|why| answer(&format!("statement {name}, parameter {}: {why}", i + 1)))?;
        args.push(PgParam(param));
    }
    let rows = conn.query_raw(statement, args).await.map_err(failure)?;
    futures::pin_mut!(rows);
    let mut items = Vec::new();
    while let Some(row) = rows.next().await {
        items.push(Item::Row(typed_row(&row.map_err(failure)?)));
    }
    items.push(Item::Done(rows.rows_affected().unwrap_or(0)));
    Ok(items)
}

fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => db.message().to_string(),
        None => e.to_string(),
    }
}

/// A failed connect: a refused login names the options to look at
/// (SQLSTATE class 28: 28P01 and 28000).
fn connect_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) if db.code().code().starts_with("28") => login_refused(db.message()),
        _ => describe(e),
    }
}

/// A refused login (SQLSTATE class 28), naming the options to look at.
pub(super) fn login_refused(message: &str) -> String {
    format!(
        "the server refused the login given in connection.username and \
         connection.password: {message}"
    )
}

/// Anything that is not the server's error (I/O, TLS, protocol, closed)
/// ends the connection.
fn failure(e: tokio_postgres::Error) -> Failure {
    match e.as_db_error() {
        Some(db) => {
            let fatal = matches!(
                db.parsed_severity(),
                Some(Severity::Fatal | Severity::Panic)
            );
            classify(fatal, db.code().code(), db.message())
        }
        None => Failure::Broken(describe(&e)),
    }
}

/// A server error by whether it is FATAL or PANIC, its SQLSTATE and its
/// message: those errors, connection exceptions (08) and operator
/// intervention (57P: terminated, shutting down) end the connection. A
/// unique-key violation is `{error, duplicate_key}`.
pub(super) fn classify(fatal: bool, code: &str, message: &str) -> Failure {
    if fatal || code.starts_with("08") || code.starts_with("57P") {
        Failure::Broken(message.to_string())
    } else if code == SqlState::UNIQUE_VIOLATION.code() {
        Failure::Answer(Term::error(Term::atom("duplicate_key")))
    } else {
        answer(message)
    }
}

/// `?` placeholders become `$1`, `$2`, ... (every `?`, as MongooseIM does).
pub(super) fn pg_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(c);
        }
    }
    out
}

/// A parameter encoded for the type the server described, in binary format.
#[derive(Debug)]
struct PgParam(Option<Vec<u8>>);

fn param_int(value: &Term) -> Result<i64, String> {
    match value {
        Term::Int(i) => Ok(*i),
        Term::Atom(a) if a == "true" => Ok(1),
        Term::Atom(a) if a == "false" => Ok(0),
        v => param_bytes(v)
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| format!("expected an integer, got {}", v.describe())),
    }
}

fn param_float(value: &Term) -> Result<f64, String> {
    match value {
        Term::Float(f) => Ok(*f),
        Term::Int(i) => Ok(*i as f64),
        v => param_bytes(v)
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| format!("expected a number, got {}", v.describe())),
    }
}

fn param_bool(value: &Term) -> Result<bool, String> {
    match value {
        Term::Atom(a) if a == "true" => Ok(true),
        Term::Atom(a) if a == "false" => Ok(false),
        Term::Int(i) => Ok(*i != 0),
        v => match param_bytes(v).as_deref() {
            Some(b"t" | b"true" | b"1") => Ok(true),
            Some(b"f" | b"false" | b"0") => Ok(false),
            _ => Err(format!("expected a boolean, got {}", v.describe())),
        },
    }
}

fn text_of(value: &Term) -> Result<Vec<u8>, String> {
    match value {
        Term::Int(i) => Ok(i.to_string().into_bytes()),
        Term::Float(f) => Ok(f.to_string().into_bytes()),
        Term::Atom(a) if a == "true" || a == "false" => Ok(a.clone().into_bytes()),
        v => param_bytes(v)
            .ok_or_else(|| format!("expected a binary or iodata, got {}", v.describe())),
    }
}

/// `value` encoded in binary format for type `ty`; `None` for SQL NULL.
pub(super) fn encode_param(ty: &Type, value: &Term) -> Result<Option<Vec<u8>>, String> {
    let is_null = matches!(value, Term::Atom(a) if a == "null" || a == "undefined");
    let bytes = if is_null {
        None
    } else {
        Some(match *ty {
            Type::INT2 => i16::try_from(param_int(value)?)
                .map_err(|_| "out of range for smallint".to_string())?
                .to_be_bytes()
                .to_vec(),
            Type::INT4 => i32::try_from(param_int(value)?)
                .map_err(|_| "out of range for integer".to_string())?
                .to_be_bytes()
                .to_vec(),
            Type::INT8 => param_int(value)?.to_be_bytes().to_vec(),
            Type::OID => u32::try_from(param_int(value)?)
                .map_err(|_| "out of range for oid".to_string())?
                .to_be_bytes()
                .to_vec(),
            Type::BOOL => vec![u8::from(param_bool(value)?)],
            Type::FLOAT4 => (param_float(value)? as f32).to_be_bytes().to_vec(),
            Type::FLOAT8 => param_float(value)?.to_be_bytes().to_vec(),
            Type::NUMERIC => numeric_from_int(param_int(value)?),
            Type::JSONB => {
                let mut b = vec![1];
                b.extend(text_of(value)?);
                b
            }
            Type::TEXT
            | Type::VARCHAR
            | Type::BPCHAR
            | Type::NAME
            | Type::UNKNOWN
            | Type::JSON
            | Type::XML
            | Type::CHAR
            | Type::BYTEA => text_of(value)?,
            _ if ty.name() == "citext" => text_of(value)?,
            _ => {
                return Err(format!(
                    "parameters of type {} are not supported; cast it in SQL (?::text)",
                    ty.name().to_uppercase()
                ))
            }
        })
    };
    Ok(bytes)
}

/// An integer in NUMERIC's binary format (base-10000 digits).
pub(super) fn numeric_from_int(i: i64) -> Vec<u8> {
    let negative = i < 0;
    let mut n = i.unsigned_abs();
    let mut digits = vec![];
    while n > 0 {
        digits.push((n % 10_000) as i16);
        n /= 10_000;
    }
    digits.reverse();
    let weight = digits.len() as i16 - 1;
    let mut out = Vec::with_capacity(8 + digits.len() * 2);
    out.extend((digits.len() as i16).to_be_bytes());
    out.extend((if digits.is_empty() { 0 } else { weight }).to_be_bytes());
    out.extend((if negative { 0x4000u16 } else { 0 }).to_be_bytes());
    out.extend(0u16.to_be_bytes());
    for d in digits {
        out.extend(d.to_be_bytes());
    }
    out
}

impl ToSql for PgParam {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match &self.0 {
            None => Ok(IsNull::Yes),
            Some(b) => {
                out.extend_from_slice(b);
                Ok(IsNull::No)
            }
        }
    }

    /// Encoded for the type the server described.
    fn accepts(_ty: &Type) -> bool {
        true
    }

    tokio_postgres::types::to_sql_checked!();
}

/// A value's bytes as the server sent them, whatever its type.
struct Raw<'a>(&'a [u8]);

impl<'a> FromSql<'a> for Raw<'a> {
    fn from_sql(
        _ty: &Type,
        raw: &'a [u8],
    ) -> Result<Raw<'a>, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(raw))
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }
}

fn be<const N: usize>(b: &[u8]) -> Option<[u8; N]> {
    b.try_into().ok()
}

fn typed_row(row: &tokio_postgres::Row) -> Term {
    let values = row
        .columns()
        .iter()
        .enumerate()
        .map(|(i, col)| match row.try_get::<_, Option<Raw>>(i) {
            Ok(Some(Raw(b))) => decode(col.type_(), b),
            _ => null(),
        })
        .collect();
    Term::Tuple(values)
}

/// A value in binary format of type `ty`: numbers and booleans as such,
/// anything else as its bytes.
pub(super) fn decode(ty: &Type, b: &[u8]) -> Term {
    let decoded = match *ty {
        Type::INT2 => be::<2>(b).map(|a| Term::Int(i64::from(i16::from_be_bytes(a)))),
        Type::INT4 => be::<4>(b).map(|a| Term::Int(i64::from(i32::from_be_bytes(a)))),
        Type::INT8 => be::<8>(b).map(|a| Term::Int(i64::from_be_bytes(a))),
        Type::OID => be::<4>(b).map(|a| Term::Int(i64::from(u32::from_be_bytes(a)))),
        Type::BOOL => b.first().map(|x| Term::from(*x != 0)),
        Type::FLOAT4 => be::<4>(b).map(|a| Term::Float(f64::from(f32::from_be_bytes(a)))),
        Type::FLOAT8 => be::<8>(b).map(|a| Term::Float(f64::from_be_bytes(a))),
        Type::NUMERIC => numeric_to_term(b),
        Type::JSONB => b.split_first().map(|(_, rest)| Term::bin(rest)),
        _ => None,
    };
    decoded.unwrap_or_else(|| Term::bin(b))
}

/// NUMERIC in binary format: an integer when it has no fraction, else a float.
pub(super) fn numeric_to_term(b: &[u8]) -> Option<Term> {
    let word = |i: usize| be::<2>(b.get(i..i + 2)?).map(i16::from_be_bytes);
    let ndigits = word(0)?;
    let weight = i32::from(word(2)?);
    let sign = word(4)? as u16;
    let dscale = word(6)?;
    if sign == 0xC000 {
        return Some(Term::atom("nan"));
    }
    let digits: Vec<i16> = (0..ndigits.max(0) as usize)
        .map(|k| word(8 + 2 * k))
        .collect::<Option<_>>()?;
    let negative = sign == 0x4000;
    let has_fraction = digits
        .iter()
        .enumerate()
        .any(|(k, d)| *d != 0 && weight - (k as i32) < 0);
    if dscale == 0 || !has_fraction {
        let mut acc: i128 = 0;
        for (k, d) in digits.iter().enumerate() {
            let power = weight - k as i32;
            if power < 0 {
                break;
            }
            acc = acc
                .checked_add(i128::from(*d).checked_mul(10_000i128.checked_pow(power as u32)?)?)?;
        }
        let acc = if negative { -acc } else { acc };
        return i64::try_from(acc).ok().map(Term::Int);
    }
    let mut f = 0.0f64;
    for (k, d) in digits.iter().enumerate() {
        f += f64::from(*d) * 10_000f64.powi(weight - k as i32);
    }
    Some(Term::Float(if negative { -f } else { f }))
}
