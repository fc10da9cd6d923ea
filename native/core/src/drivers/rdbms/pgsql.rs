//! PostgreSQL: the simple protocol (values as text) and prepared statements
//! (typed values), parameters encoded from Erlang terms.

use std::time::Duration;

use sqlx::error::DatabaseError;
use sqlx::postgres::{
    PgArgumentBuffer, PgArguments, PgConnectOptions, PgConnection, PgDatabaseError, PgQueryResult,
    PgRow, PgSeverity, PgSslMode, PgStatement, PgTypeInfo, Postgres,
};
use sqlx::{Arguments, Column, ConnectOptions, Connection, Either, Executor, Row, Statement};
use sqlx::{TypeInfo, ValueRef};

use super::backend::{answer, Backend, Failure, Item, Outcome};
use super::shape::null;
use super::sqlx_common::{collect, connect_error, param_bytes};
use super::{Engine, RdbmsConfig};
use crate::term::Term;

/// `statement_timeout` is the request deadline plus this, so a caller
/// waiting exactly `call_timeout` times out first (and cancels) and the
/// server then cancels the statement, keeping the connection.
const SERVER_MARGIN: Duration = Duration::from_millis(100);

pub(super) struct Pgsql {
    options: PgConnectOptions,
}

impl Pgsql {
    /// `op_timeout`: the deadline of one request.
    pub(super) fn new(config: &RdbmsConfig, op_timeout: Duration) -> Pgsql {
        let mut opts = PgConnectOptions::new_without_pgpass()
            .host(&config.host)
            .port(config.port)
            .username(&config.username)
            .database(&config.database)
            .application_name("mongooseim")
            .options([
                // MongooseIM's escaping writes backslash escapes in plain literals.
                ("standard_conforming_strings", "off".to_string()),
                ("escape_string_warning", "off".to_string()),
                ("client_min_messages", "error".to_string()),
                (
                    "statement_timeout",
                    (op_timeout + SERVER_MARGIN).as_millis().to_string(),
                ),
            ]);
        if let Some(p) = &config.password {
            opts = opts.password(p.expose());
        }
        opts = match &config.tls {
            None => opts.ssl_mode(PgSslMode::Disable),
            Some(tls) => {
                let mode = if tls.verify_peer {
                    PgSslMode::VerifyFull
                } else if tls.required {
                    PgSslMode::Require
                } else {
                    PgSslMode::Prefer
                };
                tls.set_files(
                    opts.ssl_mode(mode),
                    [
                        |o, f| o.ssl_root_cert(f),
                        |o, f| o.ssl_client_cert(f),
                        |o, f| o.ssl_client_key(f),
                    ],
                )
            }
        };
        Pgsql {
            options: opts.disable_statement_logging(),
        }
    }
}

impl Backend for Pgsql {
    const ENGINE: Engine = Engine::Pgsql;
    type Conn = PgConnection;
    type Statement = PgStatement<'static>;

    async fn connect(&self) -> Result<PgConnection, String> {
        let connected = PgConnection::connect_with(&self.options).await;
        connected.map_err(|e| connect_error(&e))
    }

    async fn query(conn: &mut PgConnection, sql: &str) -> Outcome<Vec<Item>> {
        let stream = sqlx::raw_sql(sql).fetch_many(conn);
        collect(stream, PgQueryResult::rows_affected, text_row, failure).await
    }

    async fn prepare(
        conn: &mut PgConnection,
        sql: &str,
    ) -> Outcome<(Self::Statement, usize, bool)> {
        let converted = pg_placeholders(sql);
        let statement = Statement::to_owned(&conn.prepare(&converted).await.map_err(failure)?);
        let params = param_types(&statement).len();
        let columns = !statement.columns().is_empty();
        Ok((statement, params, columns))
    }

    async fn execute(
        conn: &mut PgConnection,
        statement: &Self::Statement,
        name: &str,
        params: &[Term],
    ) -> Outcome<Vec<Item>> {
        let mut args = PgArguments::default();
        for (i, (ty, value)) in param_types(statement).iter().zip(params).enumerate() {
            let param = PgParam::new(ty, value)
                .map_err(|why| answer(&format!("statement {name}, parameter {}: {why}", i + 1)))?;
            args.add(param).map_err(|e| answer(&e.to_string()))?;
        }
        let stream = conn.fetch_many(statement.query_with(args));
        collect(stream, PgQueryResult::rows_affected, typed_row, failure).await
    }
}

/// FATAL and PANIC errors, connection exceptions (08) and operator
/// intervention (57P: terminated, shutting down) end the connection.
fn failure(e: sqlx::Error) -> Failure {
    super::sqlx_common::failure(e, |db: &dyn DatabaseError| {
        db.try_downcast_ref::<PgDatabaseError>().is_some_and(|pg| {
            matches!(pg.severity(), PgSeverity::Fatal | PgSeverity::Panic)
                || pg.code().starts_with("08")
                || pg.code().starts_with("57P")
        })
    })
}

fn param_types<'a>(statement: &'a PgStatement<'_>) -> &'a [PgTypeInfo] {
    match statement.parameters() {
        Some(Either::Left(types)) => types,
        _ => &[],
    }
}

fn text_row(row: &PgRow) -> Term {
    let values = (0..row.len())
        .map(|i| match row.try_get_raw(i) {
            Ok(v) if v.is_null() => null(),
            Ok(v) => v.as_bytes().map_or_else(|_| null(), Term::bin),
            Err(_) => null(),
        })
        .collect();
    Term::Tuple(values)
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
struct PgParam {
    ty: PgTypeInfo,
    bytes: Option<Vec<u8>>,
}

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

impl PgParam {
    fn new(ty: &PgTypeInfo, value: &Term) -> Result<PgParam, String> {
        let is_null = matches!(value, Term::Atom(a) if a == "null" || a == "undefined");
        let bytes = if is_null {
            None
        } else {
            Some(match ty.name() {
                "INT2" => i16::try_from(param_int(value)?)
                    .map_err(|_| "out of range for smallint".to_string())?
                    .to_be_bytes()
                    .to_vec(),
                "INT4" => i32::try_from(param_int(value)?)
                    .map_err(|_| "out of range for integer".to_string())?
                    .to_be_bytes()
                    .to_vec(),
                "INT8" => param_int(value)?.to_be_bytes().to_vec(),
                "OID" => u32::try_from(param_int(value)?)
                    .map_err(|_| "out of range for oid".to_string())?
                    .to_be_bytes()
                    .to_vec(),
                "BOOL" => vec![u8::from(param_bool(value)?)],
                "FLOAT4" => (param_float(value)? as f32).to_be_bytes().to_vec(),
                "FLOAT8" => param_float(value)?.to_be_bytes().to_vec(),
                "NUMERIC" => numeric_from_int(param_int(value)?),
                "JSONB" => {
                    let mut b = vec![1];
                    b.extend(text_of(value)?);
                    b
                }
                "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" | "UNKNOWN" | "JSON" | "XML" | "CITEXT"
                | "\"CHAR\"" | "BYTEA" => text_of(value)?,
                other => {
                    return Err(format!(
                        "parameters of type {other} are not supported; cast it in SQL (?::text)"
                    ))
                }
            })
        };
        Ok(PgParam {
            ty: ty.clone(),
            bytes,
        })
    }
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

impl sqlx::Type<Postgres> for PgParam {
    fn type_info() -> PgTypeInfo {
        PgTypeInfo::with_name("text")
    }

    fn compatible(_ty: &PgTypeInfo) -> bool {
        true
    }
}

impl<'q> sqlx::Encode<'q, Postgres> for PgParam {
    fn encode_by_ref(
        &self,
        buf: &mut PgArgumentBuffer,
    ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        match &self.bytes {
            None => Ok(sqlx::encode::IsNull::Yes),
            Some(b) => {
                buf.extend_from_slice(b);
                Ok(sqlx::encode::IsNull::No)
            }
        }
    }

    fn produces(&self) -> Option<PgTypeInfo> {
        Some(self.ty.clone())
    }
}

fn be<const N: usize>(b: &[u8]) -> Option<[u8; N]> {
    b.try_into().ok()
}

fn typed_row(row: &PgRow) -> Term {
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
            let Ok(b) = v.as_bytes() else {
                return null();
            };
            let name = col.type_info().name();
            let decoded = match name {
                "INT2" => be::<2>(b).map(|a| Term::Int(i64::from(i16::from_be_bytes(a)))),
                "INT4" => be::<4>(b).map(|a| Term::Int(i64::from(i32::from_be_bytes(a)))),
                "INT8" => be::<8>(b).map(|a| Term::Int(i64::from_be_bytes(a))),
                "OID" => be::<4>(b).map(|a| Term::Int(i64::from(u32::from_be_bytes(a)))),
                "BOOL" => b.first().map(|x| Term::from(*x != 0)),
                "FLOAT4" => be::<4>(b).map(|a| Term::Float(f64::from(f32::from_be_bytes(a)))),
                "FLOAT8" => be::<8>(b).map(|a| Term::Float(f64::from_be_bytes(a))),
                "NUMERIC" => numeric_to_term(b),
                "JSONB" => b.split_first().map(|(_, rest)| Term::bin(rest)),
                _ => None,
            };
            decoded.unwrap_or_else(|| Term::bin(b))
        })
        .collect();
    Term::Tuple(values)
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
