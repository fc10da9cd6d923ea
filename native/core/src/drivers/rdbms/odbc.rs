//! ODBC (`driver = "odbc"`): a server reached through unixODBC and its ODBC
//! driver (psqlODBC, MariaDB Connector/ODBC), with odbc-api.
//!
//! ODBC calls block, so each connection lives on a thread of its own that
//! owns it and takes one command at a time over a bounded channel, answering
//! through a oneshot: no ODBC call runs on an async worker or a scheduler.
//! A request that passes its deadline is dropped by the driver (a timeout,
//! and the connection is replaced); dropping it asks the canceller thread to
//! `SQLCancel` the statement, and the connection's thread, once the statement
//! ended, finds no one to serve and closes the connection.
//!
//! Values as MongooseIM's ODBC backend (Erlang's odbc application) gives
//! them: integers for `INTEGER`, `SMALLINT` and `TINYINT` columns and for
//! `NUMERIC`/`DECIMAL` of up to 9 digits and no scale, floats for
//! floating-point columns and other numerics of up to 15 digits, `true` and
//! `false` for `BIT`, binaries for the rest (`BIGINT` as its text, text as
//! UTF-8), `null`. Binary columns give their bytes (Erlang's odbc gave
//! psqlODBC's hex text for `bytea`).

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex, OnceLock};

use odbc_api::handles::{
    slice_to_cow_utf8, AsStatementRef, DataType, Record, SqlText, Statement, StatementImpl,
    StatementRef,
};
use odbc_api::parameter::{InputParameter, VarBinaryBox, VarCharBox, VarWCharBox};
use odbc_api::sys::{HStmt, SqlDataType};
use odbc_api::{
    Connection, ConnectionOptions, Cursor, CursorImpl, CursorRow, Nullable, Preallocated, Prepared,
};
use tokio::sync::oneshot;

use super::backend::{answer, param_bytes, Backend, Failure, Io, Item, Outcome};
use super::config::redact;
use super::shape::null;
use super::Engine;
use crate::config::Secret;
use crate::term::Term;

/// How long a login may take (the driver's own timeout; the driver gives up
/// waiting for the connection sooner, see `CONNECT_TIMEOUT`).
const LOGIN_TIMEOUT_SEC: u32 = 5;
/// Cancellations waiting for the canceller thread; more are dropped (their
/// connections are closed once their statements end anyway).
const CANCEL_QUEUE: usize = 64;

pub(super) struct Odbc {
    settings: Secret,
}

impl Odbc {
    /// `settings`: the connection string.
    pub(super) fn new(settings: Secret) -> Odbc {
        Odbc { settings }
    }
}

/// One connection: its thread's command channel, the statement it runs
/// (for `SQLCancel`), and the server behind the driver.
pub(super) struct Worker {
    commands: SyncSender<Command>,
    running: Arc<Running>,
    server: &'static str,
}

/// The statement handle an ODBC call is running on, if any.
#[derive(Default)]
struct Running(Mutex<Option<Handle>>);

/// A statement handle, given to the canceller thread.
struct Handle(HStmt);

// SAFETY: ODBC allows SQLCancel on a statement from another thread while a
// call runs on it; the handle is only used under `Running`'s lock, which the
// connection's thread holds to clear it before it frees the statement.
unsafe impl Send for Handle {}

impl Running {
    fn set(&self, handle: Option<HStmt>) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = handle.map(Handle);
        }
    }

    fn cancel(&self) {
        if let Ok(slot) = self.0.lock() {
            if let Some(Handle(h)) = &*slot {
                // SAFETY: a live handle (see `Handle`); the result does not matter.
                let _ = unsafe { odbc_api::sys::SQLCancel(*h) };
            }
        }
    }
}

enum Command {
    Query(String, oneshot::Sender<Outcome<Vec<Item>>>),
    Prepare(String, oneshot::Sender<Outcome<(usize, bool)>>),
    Execute(String, Vec<Param>, oneshot::Sender<Outcome<Vec<Item>>>),
}

/// A parameter, converted from its term before it reaches the thread.
enum Param {
    Null,
    Int(i64),
    Float(f64),
    Text(String),
    Bytes(Vec<u8>),
}

impl Backend for Odbc {
    const ENGINE: Engine = Engine::Odbc;
    type Conn = Worker;
    /// The statement's SQL: the connection's thread keeps it prepared.
    type Statement = String;

    async fn connect(&self) -> Result<(Worker, Option<Io>), String> {
        let (commands, inbox) = sync_channel(1);
        let (ready, connected) = oneshot::channel();
        let running = Arc::new(Running::default());
        let settings = self.settings.clone();
        let theirs = running.clone();
        std::thread::Builder::new()
            .name("mn-odbc".into())
            .spawn(move || serve(&settings, inbox, ready, &theirs))
            .map_err(|e| format!("cannot start a connection thread: {e}"))?;
        let server = connected
            .await
            .map_err(|_| "the connection thread ended".to_string())??;
        let worker = Worker {
            commands,
            running,
            server,
        };
        Ok((worker, None))
    }

    async fn query(conn: &mut Worker, sql: &str) -> Outcome<Vec<Item>> {
        conn.call(|reply| Command::Query(sql.to_string(), reply))
            .await
    }

    async fn prepare(conn: &mut Worker, sql: &str) -> Outcome<(String, usize, bool)> {
        let (params, columns) = conn
            .call(|reply| Command::Prepare(sql.to_string(), reply))
            .await?;
        Ok((sql.to_string(), params, columns))
    }

    async fn execute(
        conn: &mut Worker,
        statement: &String,
        name: &str,
        params: &[Term],
    ) -> Outcome<Vec<Item>> {
        let params = params
            .iter()
            .enumerate()
            .map(|(i, p)| {
                Param::new(p).ok_or_else(|| {
                    answer(&format!(
                        "statement {name}, parameter {}: cannot send {}",
                        i + 1,
                        p.describe()
                    ))
                })
            })
            .collect::<Outcome<Vec<Param>>>()?;
        conn.call(|reply| Command::Execute(statement.clone(), params, reply))
            .await
    }

    fn server(conn: &Worker) -> Option<&'static str> {
        Some(conn.server)
    }
}

impl Param {
    /// As MongooseIM's ODBC backend sends them: booleans as 1 and 0.
    fn new(value: &Term) -> Option<Param> {
        Some(match value {
            Term::Int(n) => Param::Int(*n),
            Term::Float(f) => Param::Float(*f),
            Term::Atom(a) if a == "true" => Param::Int(1),
            Term::Atom(a) if a == "false" => Param::Int(0),
            Term::Atom(a) if a == "null" || a == "undefined" => Param::Null,
            v => match String::from_utf8(param_bytes(v)?) {
                Ok(s) => Param::Text(s),
                Err(e) => Param::Bytes(e.into_bytes()),
            },
        })
    }

    /// `binary`: the statement takes bytes there (psqlODBC's `bytea`).
    fn bind(self, binary: bool) -> Box<dyn InputParameter> {
        match self {
            Param::Null => Box::new(VarCharBox::null()),
            Param::Int(n) => Box::new(n),
            Param::Float(f) => Box::new(f),
            Param::Text(s) if binary => Box::new(VarBinaryBox::from_vec(s.into_bytes())),
            Param::Text(s) => Box::new(VarWCharBox::from_str_slice(&s)),
            Param::Bytes(b) => Box::new(VarBinaryBox::from_vec(b)),
        }
    }
}

impl Worker {
    /// Sends a command and waits for its answer. Dropped before the answer
    /// (past the deadline), it has the statement cancelled.
    async fn call<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<Outcome<T>>) -> Command,
    ) -> Outcome<T> {
        let (reply, answer) = oneshot::channel();
        // One request at a time per connection: the slot is free unless an
        // earlier call was given up, and then the connection is being replaced.
        self.commands
            .try_send(command(reply))
            .map_err(|_| Failure::Broken("the ODBC connection is busy or closed".into()))?;
        let mut guard = CancelOnDrop(Some(self.running.clone()));
        let outcome = answer.await;
        guard.0 = None;
        outcome.unwrap_or_else(|_| Err(Failure::Broken("the ODBC connection thread ended".into())))
    }
}

struct CancelOnDrop(Option<Arc<Running>>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(running) = self.0.take() {
            // Never blocks: SQLCancel runs on the canceller thread.
            if let Some(queue) = canceller() {
                let _ = queue.try_send(running);
            }
        }
    }
}

/// The thread that cancels statements past their deadline (SQLCancel may
/// talk to the server, so not on an async worker).
fn canceller() -> Option<&'static SyncSender<Arc<Running>>> {
    static QUEUE: OnceLock<Option<SyncSender<Arc<Running>>>> = OnceLock::new();
    QUEUE
        .get_or_init(|| {
            let (queue, requests) = sync_channel::<Arc<Running>>(CANCEL_QUEUE);
            std::thread::Builder::new()
                .name("mn-odbc-cancel".into())
                .spawn(move || requests.iter().for_each(|r| r.cancel()))
                .map_err(|e| log::error!("odbc: no canceller thread: {e}"))
                .ok()
                .map(|_| queue)
        })
        .as_ref()
}

/// The connection's thread: connects, says so, then serves commands until
/// the worker is dropped.
fn serve(
    settings: &Secret,
    inbox: Receiver<Command>,
    ready: oneshot::Sender<Result<&'static str, String>>,
    running: &Running,
) {
    let opened = catch_unwind(|| open(settings))
        .unwrap_or_else(|_| Err("the ODBC driver failed while connecting".to_string()));
    let conn = match opened {
        Ok(c) => c,
        Err(why) => {
            let _ = ready.send(Err(why));
            return;
        }
    };
    let server = server_kind(&conn);
    if let Err(e) = set_up(&conn, server) {
        let _ = ready.send(Err(describe(&e, settings)));
        return;
    }
    let mut session = match conn.preallocate() {
        Ok(statement) => Session {
            conn: &conn,
            settings,
            statement,
            prepared: HashMap::new(),
            running,
        },
        Err(e) => {
            let _ = ready.send(Err(describe(&e, settings)));
            return;
        }
    };
    if ready.send(Ok(server)).is_err() {
        return;
    }
    for command in inbox.iter() {
        let served = catch_unwind(AssertUnwindSafe(|| session.serve(command)));
        running.set(None);
        if served.is_err() {
            // The reply was dropped: the caller sees a broken connection.
            return;
        }
    }
}

fn open(settings: &Secret) -> Result<Connection<'static>, String> {
    let env = odbc_api::environment().map_err(|e| e.to_string())?;
    let options = ConnectionOptions {
        login_timeout_sec: Some(LOGIN_TIMEOUT_SEC),
        ..ConnectionOptions::default()
    };
    // NUL-terminated: MariaDB's driver reads up to a NUL whatever the length.
    let settings_z = format!("{}\0", settings.expose());
    env.connect_with_connection_string(&settings_z, options)
        .map_err(|e| match &e {
            odbc_api::Error::Diagnostics { record, .. }
                if record.state.as_str().starts_with("28") =>
            {
                format!(
                    "the server refused the login given in connection.settings: {}",
                    describe(&e, settings)
                )
            }
            _ => describe(&e, settings),
        })
}

/// `pgsql`, `mysql` or `other`, from the DBMS name the driver reports.
fn server_kind(conn: &Connection<'_>) -> &'static str {
    let name = conn
        .database_management_system_name()
        .unwrap_or_default()
        .to_ascii_lowercase();
    if name.contains("postgres") {
        "pgsql"
    } else if name.contains("mysql") || name.contains("mariadb") {
        "mysql"
    } else {
        "other"
    }
}

/// PostgreSQL runs as the pgsql driver's connections do: MongooseIM's
/// escaping writes backslash escapes in plain literals.
fn set_up(conn: &Connection<'_>, server: &str) -> Result<(), odbc_api::Error> {
    if server == "pgsql" {
        conn.execute(
            "SET standard_conforming_strings = off; SET escape_string_warning = off; \
             SET client_min_messages = error",
            (),
            None,
        )?;
    }
    Ok(())
}

/// A prepared statement and which of its parameters take bytes.
struct Entry<'c> {
    statement: Prepared<StatementImpl<'c>>,
    binary: Vec<bool>,
}

/// What the connection's thread holds: the connection, a statement for
/// queries and the prepared statements, by SQL.
struct Session<'c> {
    conn: &'c Connection<'static>,
    settings: &'c Secret,
    statement: Preallocated<StatementImpl<'c>>,
    prepared: HashMap<String, Entry<'c>>,
    running: &'c Running,
}

impl<'c> Session<'c> {
    fn serve(&mut self, command: Command) {
        match command {
            Command::Query(sql, reply) => {
                let _ = reply.send(self.query(&sql));
            }
            Command::Prepare(sql, reply) => {
                let _ = reply.send(self.prepare(&sql));
            }
            Command::Execute(sql, params, reply) => {
                let _ = reply.send(self.execute(&sql, params));
            }
        }
    }

    fn query(&mut self, sql: &str) -> Outcome<Vec<Item>> {
        let mut stmt = self.statement.as_stmt_ref();
        self.running.set(Some(stmt.as_sys()));
        let text = SqlText::new(sql);
        // SAFETY: no parameters or columns are bound to this statement.
        let done = unsafe { stmt.exec_direct(&text) }.on_no_data(|| ());
        let outcome = done
            .into_result(&stmt)
            .and_then(|()| results(stmt.as_stmt_ref()));
        let _ = stmt.close_cursor();
        outcome.map_err(|e| self.failure(&e))
    }

    fn prepare(&mut self, sql: &str) -> Outcome<(usize, bool)> {
        let entry = match self.prepared.remove(sql) {
            Some(entry) => entry,
            None => {
                let mut statement = self.conn.prepare(sql).map_err(|e| self.failure(&e))?;
                let count = statement.num_params().map_err(|e| self.failure(&e))?;
                // Drivers that cannot tell (MariaDB's) give text for every parameter.
                let binary = (1..=count)
                    .map(|i| {
                        statement.describe_param(i).is_ok_and(|t| {
                            matches!(
                                t.data_type,
                                DataType::Binary { .. }
                                    | DataType::Varbinary { .. }
                                    | DataType::LongVarbinary { .. }
                            )
                        })
                    })
                    .collect();
                Entry { statement, binary }
            }
        };
        let params = entry.binary.len();
        let mut statement = entry;
        let mut stmt = statement.statement.as_stmt_ref();
        let columns = stmt.num_result_cols().into_result(&stmt).unwrap_or(0) > 0;
        self.prepared.insert(sql.to_string(), statement);
        Ok((params, columns))
    }

    fn execute(&mut self, sql: &str, params: Vec<Param>) -> Outcome<Vec<Item>> {
        let Some(entry) = self.prepared.get_mut(sql) else {
            return Err(answer("the statement is not prepared on this connection"));
        };
        let bound: Vec<Box<dyn InputParameter>> = params
            .into_iter()
            .zip(&entry.binary)
            .map(|(p, &binary)| p.bind(binary))
            .collect();
        self.running
            .set(Some(entry.statement.as_stmt_ref().as_sys()));
        let executed = entry.statement.execute(&bound[..]).map(|cursor| {
            // Read below, from the statement, like any further results.
            cursor.map(CursorImpl::into_stmt);
        });
        let outcome = executed.and_then(|()| results(entry.statement.as_stmt_ref()));
        let mut stmt = entry.statement.as_stmt_ref();
        let _ = stmt.close_cursor();
        drop(bound);
        outcome.map_err(|e| self.failure(&e))
    }

    /// An SQL error is an answer: `{error, duplicate_key}` for a unique-key
    /// violation, else `{error, Message}` (the driver's message and SQLSTATE,
    /// as Erlang's odbc writes it). A lost connection, or a cancelled
    /// statement, breaks it.
    fn failure(&self, e: &odbc_api::Error) -> Failure {
        let message = describe(e, self.settings);
        let record = match e {
            odbc_api::Error::Diagnostics { record, .. } => Some(record),
            _ => None,
        };
        let state = record.map_or("", |r| r.state.as_str());
        if state.starts_with("08") || state == "HY008" || self.conn.is_dead().unwrap_or(true) {
            return Failure::Broken(message);
        }
        if is_duplicate_key(record) {
            return Failure::Answer(Term::error(Term::atom("duplicate_key")));
        }
        answer(&message)
    }
}

/// PostgreSQL's 23505; MySQL's and MariaDB's ER_DUP_ENTRY (1062) and
/// ER_DUP_ENTRY_WITH_KEY_NAME (1586) under SQLSTATE 23000.
fn is_duplicate_key(record: Option<&Record>) -> bool {
    record.is_some_and(|r| {
        r.state.as_str() == "23505"
            || (r.state.as_str() == "23000" && matches!(r.native_error, 1062 | 1586))
    })
}

/// An ODBC error's text, without the connection string's password.
fn describe(e: &odbc_api::Error, settings: &Secret) -> String {
    let text = match e {
        odbc_api::Error::Diagnostics { record, .. } => format!(
            "{} SQLSTATE IS: {}",
            slice_to_cow_utf8(&record.message).trim_end(),
            record.state.as_str()
        ),
        other => other.to_string(),
    };
    redact(&text, settings.expose())
}

/// Every result of an executed statement: rows, and the end of each
/// statement (with its row count).
fn results(mut stmt: StatementRef<'_>) -> Result<Vec<Item>, odbc_api::Error> {
    let mut items = vec![];
    loop {
        let columns = stmt.num_result_cols().into_result(&stmt)?;
        if columns > 0 {
            let kinds = (1..=columns as u16)
                .map(|i| ColumnKind::of(&mut stmt, i))
                .collect::<Result<Vec<_>, _>>()?;
            // SAFETY: the statement has a result set (it has columns).
            let mut cursor = unsafe { CursorImpl::new(stmt.as_stmt_ref()) };
            while let Some(mut row) = cursor.next_row()? {
                let mut values = Vec::with_capacity(kinds.len());
                for (i, kind) in kinds.iter().enumerate() {
                    values.push(kind.read(&mut row, i as u16 + 1)?);
                }
                items.push(Item::Row(Term::Tuple(values)));
            }
            // Not closed: SQLMoreResults moves on to the next result.
            cursor.into_stmt();
            items.push(Item::Done(0));
        } else {
            let n = stmt.row_count().into_result(&stmt)?;
            items.push(Item::Done(u64::try_from(n).unwrap_or(0)));
        }
        // SAFETY: no buffers are bound to the statement.
        if !unsafe { stmt.more_results() }.into_result_bool(&stmt)? {
            return Ok(items);
        }
    }
}

/// How a column's values come back (see the module documentation).
enum ColumnKind {
    Int,
    Float,
    Bit,
    Binary,
    Text,
}

impl ColumnKind {
    fn of(stmt: &mut StatementRef<'_>, column: u16) -> Result<ColumnKind, odbc_api::Error> {
        let ty = stmt.col_concise_type(column).into_result(stmt)?;
        Ok(match ty {
            SqlDataType::INTEGER | SqlDataType::SMALLINT | SqlDataType::EXT_TINY_INT => {
                ColumnKind::Int
            }
            SqlDataType::FLOAT | SqlDataType::REAL | SqlDataType::DOUBLE => ColumnKind::Float,
            SqlDataType::NUMERIC | SqlDataType::DECIMAL => {
                let precision = stmt.col_precision(column).into_result(stmt)?;
                let scale = stmt.col_scale(column).into_result(stmt)?;
                match (precision, scale) {
                    (0..=9, 0) => ColumnKind::Int,
                    (0..=15, _) => ColumnKind::Float,
                    _ => ColumnKind::Text,
                }
            }
            SqlDataType::EXT_BIT => ColumnKind::Bit,
            SqlDataType::EXT_BINARY
            | SqlDataType::EXT_VAR_BINARY
            | SqlDataType::EXT_LONG_VAR_BINARY => ColumnKind::Binary,
            _ => ColumnKind::Text,
        })
    }

    fn read(&self, row: &mut CursorRow<'_>, column: u16) -> Result<Term, odbc_api::Error> {
        Ok(match self {
            ColumnKind::Int | ColumnKind::Bit => {
                let mut v = Nullable::<i64>::null();
                row.get_data(column, &mut v)?;
                match (v.into_opt(), self) {
                    (None, _) => null(),
                    (Some(b), ColumnKind::Bit) => Term::atom(if b != 0 { "true" } else { "false" }),
                    (Some(n), _) => Term::Int(n),
                }
            }
            ColumnKind::Float => {
                let mut v = Nullable::<f64>::null();
                row.get_data(column, &mut v)?;
                v.into_opt().map_or_else(null, Term::Float)
            }
            ColumnKind::Binary => {
                let mut buf = Vec::new();
                if row.get_binary(column, &mut buf)? {
                    Term::bin(buf)
                } else {
                    null()
                }
            }
            ColumnKind::Text => {
                let mut buf = Vec::new();
                if row.get_wide_text(column, &mut buf)? {
                    Term::bin(String::from_utf16_lossy(&buf))
                } else {
                    null()
                }
            }
        })
    }
}
