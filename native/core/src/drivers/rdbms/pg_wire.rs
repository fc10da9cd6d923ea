//! PostgreSQL over plain TCP on a connection of our own
//! ([`wire`](crate::drivers::wire)): at an idle pool the caller's thread
//! writes a prepared statement's execute itself, so the request does not
//! wake a runtime thread on its way to the server (the README's
//! Benchmarks), and the connection's I/O runs in its worker's task. The
//! frontend messages and the password exchanges (MD5, SCRAM-SHA-256) are
//! postgres-protocol's, the crate tokio-postgres is built on; a TLS
//! connection stays on tokio-postgres (`pgsql`).

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use postgres_protocol::authentication::{md5_hash, sasl};
use postgres_protocol::message::frontend;
use postgres_protocol::IsNull;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_postgres::types::Type;

use super::backend::{answer, Backend, Failure, Io, Item, Outcome};
use super::pgsql::{classify, decode, encode_param, login_refused, pg_placeholders};
use super::shape::{null, shape_prepared, Kind};
use super::{Engine, RdbmsConfig};
use crate::config::Secret;
use crate::drivers::wire::{self, Protocol};
use crate::engine::load::Answer;
use crate::engine::pool::Outcome as Answered;
use crate::error::Error;
use crate::term::Term;

/// Values in binary format, as tokio-postgres asks for them.
const BINARY: i16 = 1;
const TEXT: i16 = 0;
/// No message is longer: PostgreSQL allocates no value past 1 GB, and a
/// length past this is a stream that is not PostgreSQL's (never reserved).
const MAX_MESSAGE: usize = (1 << 30) + (1 << 20);

pub(super) struct PgWire {
    host: String,
    port: u16,
    user: String,
    password: Option<Secret>,
    database: String,
    /// The session settings (`pgsql::session_options`).
    options: String,
    target: Arc<str>,
}

impl PgWire {
    pub(super) fn new(config: &RdbmsConfig, options: String) -> PgWire {
        PgWire {
            host: config.host.clone(),
            port: config.port,
            user: config.username.clone(),
            password: config.password.clone(),
            database: config.database.clone(),
            options,
            target: config.target().into(),
        }
    }
}

/// A connection: the link, and the number of the next statement prepared on it.
pub(super) struct Conn {
    link: wire::Conn<Pg>,
    statements: u64,
    target: Arc<str>,
}

/// A statement prepared on one connection: its name there and the types
/// of its parameters and columns.
pub(super) struct Described {
    name: String,
    params: Vec<u32>,
    columns: Vec<u32>,
}

/// One backend message: its type byte and its body.
pub(super) struct Frame {
    tag: u8,
    body: Vec<u8>,
}

/// PostgreSQL's messages: each request ends with a Sync (or is a simple
/// query), so its answer ends with ReadyForQuery.
pub(super) struct Pg;

pub(super) struct Waiter {
    frames: Vec<Frame>,
    to: To,
}

enum To {
    /// The worker's request future, which reads the frames itself.
    Worker(oneshot::Sender<Result<Vec<Frame>, String>>),
    /// A caller whose execute was written from its own thread.
    Caller {
        answer: Answer,
        statement: Arc<Described>,
        kind: Kind,
        target: Arc<str>,
    },
}

impl Protocol for Pg {
    const NAME: &'static str = "pgsql";
    type Waiter = Waiter;
    type Reply = Frame;

    /// Notices, parameter changes and notifications answer no request.
    fn parse(buf: &[u8], replies: &mut Vec<Frame>) -> (usize, Result<usize, String>) {
        let mut at = 0;
        loop {
            let rest = &buf[at..];
            let Some(len) = rest.get(1..5).map(|b| be_u32(b) as usize) else {
                return (at, Ok(5));
            };
            if !(4..=MAX_MESSAGE).contains(&len) {
                return (at, Err(format!("a message of length {len}")));
            }
            let Some(body) = rest.get(5..1 + len) else {
                return (at, Ok(1 + len));
            };
            if !matches!(rest[0], b'N' | b'S' | b'A') {
                replies.push(Frame {
                    tag: rest[0],
                    body: body.to_vec(),
                });
            }
            at += 1 + len;
        }
    }

    fn take(waiter: &mut Waiter, reply: Frame) -> bool {
        if reply.tag == b'Z' {
            return true;
        }
        waiter.frames.push(reply);
        false
    }

    /// A FATAL error on an idle connection (terminated, shutting down).
    fn unasked(reply: Frame) -> String {
        match reply.tag {
            b'E' => ErrorFields::of(&reply.body).message,
            tag => format!("a message ({}) that no request asked for", tag as char),
        }
    }

    /// A caller's answer that breaks the protocol (a malformed row) ends
    /// the connection, as the worker ends it on `Failure::Broken`.
    fn finish(waiter: Waiter) -> Result<(), String> {
        match waiter.to {
            To::Worker(tx) => {
                let _ = tx.send(Ok(waiter.frames));
                Ok(())
            }
            To::Caller {
                answer,
                statement,
                kind,
                target,
            } => {
                let outcome = match items(waiter.frames, Some(&statement.columns)) {
                    Ok(items) => shape_prepared(Engine::Pgsql, kind, items),
                    Err(Failure::Answer(term)) => term,
                    Err(Failure::Broken(why)) => {
                        answer.send(lost(&target, &why));
                        return Err(why);
                    }
                };
                answer.send(Answered::answer(outcome));
                Ok(())
            }
        }
    }

    /// The server's own word when it gave one before closing (a FATAL error).
    fn lost(waiter: Waiter, why: &str) {
        let said = waiter.frames.iter().find(|f| f.tag == b'E');
        let said = said.map(|f| ErrorFields::of(&f.body).message);
        let why = said.as_deref().unwrap_or(why);
        match waiter.to {
            To::Worker(tx) => {
                let _ = tx.send(Err(why.to_string()));
            }
            To::Caller { answer, target, .. } => answer.send(lost(&target, why)),
        }
    }
}

fn lost(target: &str, why: &str) -> Answered {
    Answered::failed(Error::ConnectionLost(format!("{target}: {why}")))
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Reads a message body front to back; `None` past its end.
struct Body<'a>(&'a [u8]);

impl<'a> Body<'a> {
    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }

    fn i16(&mut self) -> Option<i16> {
        self.bytes(2).map(|b| i16::from_be_bytes([b[0], b[1]]))
    }

    fn i32(&mut self) -> Option<i32> {
        self.bytes(4).map(|b| be_u32(b) as i32)
    }

    fn cstr(&mut self) -> Option<&'a str> {
        let end = self.0.iter().position(|b| *b == 0)?;
        let s = std::str::from_utf8(&self.0[..end]).ok();
        self.0 = &self.0[end + 1..];
        s
    }
}

/// An ErrorResponse's fields that say what to do with it.
struct ErrorFields {
    severity: Option<String>,
    code: String,
    message: String,
}

impl ErrorFields {
    fn of(body: &[u8]) -> ErrorFields {
        let mut fields = ErrorFields {
            severity: None,
            code: String::new(),
            message: String::new(),
        };
        let mut body = Body(body);
        while let Some(kind) = body.bytes(1).filter(|k| k[0] != 0) {
            let Some(value) = body.cstr() else { break };
            match kind[0] {
                b'V' => fields.severity = Some(value.to_string()),
                b'C' => fields.code = value.to_string(),
                b'M' => fields.message = value.to_string(),
                _ => {}
            }
        }
        fields
    }

    fn failure(&self) -> Failure {
        let fatal = matches!(self.severity.as_deref(), Some("FATAL" | "PANIC"));
        classify(fatal, &self.code, &self.message)
    }
}

/// What a request's frames say: its rows and the end of each statement,
/// or the error. `columns`: the types of a prepared statement's values
/// (binary); `None` for a simple query's text.
fn items(frames: Vec<Frame>, columns: Option<&[u32]>) -> Outcome<Vec<Item>> {
    let mut items = Vec::new();
    for frame in frames {
        match frame.tag {
            b'E' => return Err(ErrorFields::of(&frame.body).failure()),
            b'D' => items
                .push(Item::Row(row(&frame.body, columns).ok_or_else(|| {
                    Failure::Broken("a malformed DataRow message".into())
                })?)),
            b'C' => {
                let tag = Body(&frame.body).cstr().unwrap_or_default();
                let rows = tag.rsplit(' ').next().and_then(|n| n.parse().ok());
                items.push(Item::Done(rows.unwrap_or(0)));
            }
            b'I' => items.push(Item::Done(0)),
            _ => {}
        }
    }
    Ok(items)
}

fn row(body: &[u8], columns: Option<&[u32]>) -> Option<Term> {
    let mut body = Body(body);
    let n = body.i16()?;
    let mut values = Vec::with_capacity(n.max(0) as usize);
    for i in 0..n.max(0) as usize {
        let len = body.i32()?;
        let value = match (len, columns) {
            (-1, _) => null(),
            (len, None) => Term::bin(body.bytes(usize::try_from(len).ok()?)?),
            (len, Some(types)) => {
                let b = body.bytes(usize::try_from(len).ok()?)?;
                match types.get(i).and_then(|oid| Type::from_oid(*oid)) {
                    Some(ty) => decode(&ty, b),
                    None => Term::bin(b),
                }
            }
        };
        values.push(value);
    }
    Some(Term::Tuple(values))
}

/// A prepare's frames: the types of its parameters and columns.
fn described(name: String, frames: Vec<Frame>) -> Outcome<Described> {
    let mut statement = Described {
        name,
        params: Vec::new(),
        columns: Vec::new(),
    };
    for frame in frames {
        let parsed = match frame.tag {
            b'E' => return Err(ErrorFields::of(&frame.body).failure()),
            b't' => parameter_types(&frame.body, &mut statement.params),
            b'T' => column_types(&frame.body, &mut statement.columns),
            _ => Some(()),
        };
        parsed.ok_or_else(|| Failure::Broken("a malformed statement description".into()))?;
    }
    Ok(statement)
}

/// A ParameterDescription's type OIDs.
fn parameter_types(body: &[u8], oids: &mut Vec<u32>) -> Option<()> {
    let mut body = Body(body);
    for _ in 0..body.i16()? {
        oids.push(body.i32()? as u32);
    }
    Some(())
}

/// A RowDescription's type OIDs: each field is its name, table OID (4),
/// column number (2), type OID, type size (2), modifier (4) and format (2).
fn column_types(body: &[u8], oids: &mut Vec<u32>) -> Option<()> {
    let mut body = Body(body);
    for _ in 0..body.i16()? {
        body.cstr()?;
        body.bytes(6)?;
        oids.push(body.i32()? as u32);
        body.bytes(8)?;
    }
    Some(())
}

/// A Bind of `statement` to `params`, an Execute and a Sync. Parameters of
/// a type PostgreSQL does not build in (citext, enums) go as text, which
/// the server parses.
fn bind(statement: &Described, name: &str, params: &[Term], buf: &mut BytesMut) -> Outcome<()> {
    let mut formats = Vec::with_capacity(params.len());
    let mut values = Vec::with_capacity(params.len());
    for (i, (oid, value)) in statement.params.iter().zip(params).enumerate() {
        let encoded = match Type::from_oid(*oid) {
            Some(ty) => encode_param(&ty, value).map(|v| (BINARY, v)),
            None => encode_param(&Type::TEXT, value).map(|v| (TEXT, v)),
        };
        let (format, value) = encoded
            .map_err(|why| answer(&format!("statement {name}, parameter {}: {why}", i + 1)))?;
        formats.push(format);
        values.push(value);
    }
    let serialize = |v: Option<Vec<u8>>, out: &mut BytesMut| {
        Ok(match v {
            Some(b) => {
                out.put_slice(&b);
                IsNull::No
            }
            None => IsNull::Yes,
        })
    };
    frontend::bind(
        "",
        &statement.name,
        formats,
        values,
        serialize,
        [BINARY],
        buf,
    )
    .map_err(|_| answer(&format!("statement {name}: a parameter too large to send")))?;
    frontend::execute("", 0, buf).map_err(|e| answer(&e.to_string()))?;
    frontend::sync(buf);
    Ok(())
}

impl Conn {
    /// Writes what `encode` gives and waits for the request's frames.
    async fn request(
        &self,
        encode: impl FnOnce(&mut BytesMut) -> Outcome<()>,
    ) -> Outcome<Vec<Frame>> {
        let mut buf = BytesMut::new();
        encode(&mut buf)?;
        let (tx, rx) = oneshot::channel();
        self.link
            .writing(|out, waiting| queue(out, waiting, &buf, To::Worker(tx)))
            .ok_or_else(|| Failure::Broken("the connection has ended".into()))?;
        match rx.await {
            Ok(Ok(frames)) => Ok(frames),
            Ok(Err(why)) => Err(Failure::Broken(why)),
            Err(_) => Err(Failure::Broken("the connection ended".into())),
        }
    }
}

fn queue(out: &mut Vec<u8>, waiting: &mut VecDeque<Waiter>, bytes: &[u8], to: To) {
    out.extend_from_slice(bytes);
    waiting.push_back(Waiter {
        frames: Vec::new(),
        to,
    });
}

impl Backend for PgWire {
    const ENGINE: Engine = Engine::Pgsql;
    const PIPELINES: bool = true;
    type Conn = Conn;
    type Statement = Arc<Described>;

    async fn connect(&self) -> Result<(Conn, Option<Io>), String> {
        let mut tcp = crate::drivers::tcp::connect(&self.host, self.port).await?;
        self.log_in(&mut tcp).await?;
        let (link, io) = wire::Conn::start(tcp);
        let conn = Conn {
            link,
            statements: 0,
            target: self.target.clone(),
        };
        Ok((conn, Some(io)))
    }

    async fn query(conn: &mut Conn, sql: &str) -> Outcome<Vec<Item>> {
        let frames = conn
            .request(|buf| frontend::query(sql, buf).map_err(|e| answer(&e.to_string())))
            .await?;
        items(frames, None)
    }

    async fn prepare(conn: &mut Conn, sql: &str) -> Outcome<(Arc<Described>, usize, bool)> {
        let name = format!("mn{}", conn.statements);
        conn.statements += 1;
        let frames = conn
            .request(|buf| {
                let no_types = std::iter::empty();
                frontend::parse(&name, &pg_placeholders(sql), no_types, buf)
                    .and_then(|()| frontend::describe(b'S', &name, buf))
                    .map_err(|e| answer(&e.to_string()))?;
                frontend::sync(buf);
                Ok(())
            })
            .await?;
        let statement = described(name, frames)?;
        let (params, columns) = (statement.params.len(), !statement.columns.is_empty());
        Ok((Arc::new(statement), params, columns))
    }

    async fn execute(
        conn: &mut Conn,
        statement: &Arc<Described>,
        name: &str,
        params: &[Term],
    ) -> Outcome<Vec<Item>> {
        let frames = conn
            .request(|buf| bind(statement, name, params, buf))
            .await?;
        items(frames, Some(&statement.columns))
    }

    fn pipeline(
        conn: &Conn,
        runs: Vec<(Arc<Described>, String, Vec<Term>)>,
    ) -> futures::future::BoxFuture<'static, Vec<Outcome<Vec<Item>>>> {
        let link = conn.link.clone();
        Box::pin(async move {
            // Each run's bytes, or why it cannot be sent; all written at once.
            let encoded: Vec<Outcome<BytesMut>> = runs
                .iter()
                .map(|(statement, name, params)| {
                    let mut buf = BytesMut::new();
                    bind(statement, name, params, &mut buf).map(|()| buf)
                })
                .collect();
            let written = link.writing(|out, waiting| {
                encoded
                    .into_iter()
                    .map(|bytes| {
                        let (tx, rx) = oneshot::channel();
                        queue(out, waiting, &bytes?, To::Worker(tx));
                        Ok(rx)
                    })
                    .collect::<Vec<Outcome<_>>>()
            });
            let Some(written) = written else {
                return runs
                    .iter()
                    .map(|_| Err(Failure::Broken("the connection has ended".into())))
                    .collect();
            };
            let mut outcomes = Vec::with_capacity(written.len());
            for (rx, (statement, ..)) in written.into_iter().zip(&runs) {
                outcomes.push(match rx {
                    Err(failure) => Err(failure),
                    Ok(rx) => match rx.await {
                        Ok(Ok(frames)) => items(frames, Some(&statement.columns)),
                        Ok(Err(why)) => Err(Failure::Broken(why)),
                        Err(_) => Err(Failure::Broken("the connection ended".into())),
                    },
                });
            }
            outcomes
        })
    }

    /// The execute written from the caller's thread; the worker's I/O reads
    /// its answer. A parameter that does not encode goes the worker's way,
    /// which answers the error.
    fn direct(
        conn: &Conn,
        statement: &Arc<Described>,
        params: &[Term],
        kind: Kind,
        answer: Answer,
    ) -> Result<(), Answer> {
        let mut buf = BytesMut::new();
        if bind(statement, "", params, &mut buf).is_err() {
            return Err(answer);
        }
        let mut answer = Some(answer);
        conn.link.writing(|out, waiting| {
            if let Some(answer) = answer.take() {
                let to = To::Caller {
                    answer,
                    statement: statement.clone(),
                    kind,
                    target: conn.target.clone(),
                };
                queue(out, waiting, &buf, to);
            }
        });
        answer.map_or(Ok(()), Err)
    }
}

impl PgWire {
    /// The startup message and the password exchange the server asks for,
    /// up to its first ReadyForQuery.
    async fn log_in(&self, tcp: &mut TcpStream) -> Result<(), String> {
        let params = [
            ("client_encoding", "UTF8"),
            ("user", &self.user),
            ("database", &self.database),
            ("options", &self.options),
            ("application_name", "mongooseim"),
        ];
        let mut buf = BytesMut::new();
        frontend::startup_message(params, &mut buf).map_err(|e| e.to_string())?;
        let mut scram = None;
        let mut inbox = Inbox::default();
        loop {
            if !buf.is_empty() {
                tcp.write_all(&buf).await.map_err(|e| e.to_string())?;
                buf.clear();
            }
            let frame = inbox.next(tcp).await?;
            let mut body = Body(&frame.body);
            match (frame.tag, body.i32()) {
                (b'Z', _) => return Ok(()),
                (b'E', _) => {
                    let e = ErrorFields::of(&frame.body);
                    return Err(match e.code.starts_with("28") {
                        true => login_refused(&e.message),
                        false => e.message,
                    });
                }
                (b'R', Some(0)) => {}
                (b'R', Some(3)) => frontend::password_message(self.password()?, &mut buf)
                    .map_err(|e| e.to_string())?,
                (b'R', Some(5)) => {
                    let salt = body.bytes(4).ok_or("a malformed MD5 request")?;
                    let salt = [salt[0], salt[1], salt[2], salt[3]];
                    let hash = md5_hash(self.user.as_bytes(), self.password()?, salt);
                    frontend::password_message(hash.as_bytes(), &mut buf)
                        .map_err(|e| e.to_string())?;
                }
                (b'R', Some(10)) => {
                    let mut offered = std::iter::from_fn(|| body.cstr().filter(|m| !m.is_empty()));
                    if !offered.any(|m| m == sasl::SCRAM_SHA_256) {
                        return Err("the server offers no SASL mechanism this client has \
                                    (SCRAM-SHA-256 without channel binding)"
                            .into());
                    }
                    let binding = sasl::ChannelBinding::unsupported();
                    let s = scram.insert(sasl::ScramSha256::new(self.password()?, binding));
                    frontend::sasl_initial_response(sasl::SCRAM_SHA_256, s.message(), &mut buf)
                        .map_err(|e| e.to_string())?;
                }
                (b'R', Some(code @ (11 | 12))) => {
                    let s = scram.as_mut().ok_or("a SASL message out of turn")?;
                    let data = body.0;
                    if code == 11 {
                        s.update(data).map_err(|e| login_refused(&e.to_string()))?;
                        frontend::sasl_response(s.message(), &mut buf)
                            .map_err(|e| e.to_string())?;
                    } else {
                        s.finish(data).map_err(|e| login_refused(&e.to_string()))?;
                    }
                }
                (b'R', code) => {
                    return Err(format!(
                        "the server asks for an authentication method this client \
                         does not have ({code:?})"
                    ))
                }
                _ => {}
            }
        }
    }

    fn password(&self) -> Result<&[u8], String> {
        match &self.password {
            Some(p) => Ok(p.expose().as_bytes()),
            None => Err("the server asks for a password: set connection.password".into()),
        }
    }
}

/// The server's messages during the handshake, one at a time.
#[derive(Default)]
struct Inbox {
    bytes: Vec<u8>,
    frames: VecDeque<Frame>,
}

impl Inbox {
    async fn next(&mut self, tcp: &mut TcpStream) -> Result<Frame, String> {
        loop {
            if let Some(frame) = self.frames.pop_front() {
                return Ok(frame);
            }
            let mut frames = Vec::new();
            let (used, next) = Pg::parse(&self.bytes, &mut frames);
            next?;
            self.bytes.drain(..used);
            self.frames.extend(frames);
            if self.frames.is_empty()
                && tcp
                    .read_buf(&mut self.bytes)
                    .await
                    .map_err(|e| e.to_string())?
                    == 0
            {
                return Err("the server closed the connection during the handshake".into());
            }
        }
    }
}

#[cfg(test)]
#[path = "pg_wire_tests.rs"]
mod tests;
