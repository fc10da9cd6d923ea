//! The `rdbms` pool type: PostgreSQL (`driver = "pgsql"`) and MySQL/MariaDB
//! (`driver = "mysql"`) through sqlx, with MongooseIM's result shapes.
//!
//! # Connection options (`outgoing_pools.rdbms.TAG.connection`)
//!
//! | key | form | default |
//! |---|---|---|
//! | `driver` | `"pgsql"` or `"mysql"` | required |
//! | `host`, `database`, `username` | string | required |
//! | `password` | string | none |
//! | `port` | 1..65535 | 5432 / 3306 |
//! | `keepalive_interval` | seconds | none: `SELECT 1` on idle connections at that interval |
//! | `query_timeout` | milliseconds | `call_timeout` (the smaller of the two is used) |
//! | `max_start_interval` | seconds | accepted, no effect (the engine's backoff applies) |
//! | `tls` | `required` (pgsql only), `verify_peer`, `cacertfile`, `certfile`, `keyfile`, and the other options of [`read_tls`] (validated; sqlx applies the four above) | no TLS |
//!
//! The legacy form of seed 000, `{server, {Type, Host, [Port,] DB, User, Pass[, SSL]}}`
//! with `SSL` a proplist holding `{ssl, required | true | false}` and
//! optionally `{ssl_opts, [{verify, verify_peer}, {cacertfile, F}, ...]}`, is read too.
//!
//! # Requests (built by `mongoose_rdbms`)
//!
//! - `{sql_query, Query}`: iodata, run with the simple (text) protocol. With
//!   pgsql every value comes back as a binary; with mysql integers and floats
//!   are decoded, the rest are binaries. `NULL` is `null`.
//! - `{sql_execute, Name, SQL, Params}`: a prepared statement written with `?`
//!   placeholders (turned into `$1..` for pgsql), prepared on first use on each
//!   connection and cached there by `Name`; values come back typed (integers,
//!   floats, binaries, `true`/`false` on pgsql, `null`).
//! - `{rdbms_checkout, Checkout}` (built by the NIF, `Checkout` an opaque
//!   [`Checkout`]): holds the worker's connection for the caller; see
//!   *Transactions*. `rdbms_engine` answers `pgsql` or `mysql`.
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
//! A worker's connection is an `Arc<tokio::sync::Mutex<ConnState>>`. Each
//! request locks it, and runs under a deadline: the smaller of `query_timeout`
//! and `call_timeout`. pgsql gets it (plus 100 ms) as `statement_timeout`, so
//! the server cancels a slow statement and the connection stays usable; the
//! client gives up 500 ms after the deadline. A request
//! whose connection broke (a network error, a FATAL error such as
//! `pg_terminate_backend`, MariaDB's `KILL`) or that passed its deadline drops
//! the connection and answers an error; the next request on that worker opens
//! a new one first, so it succeeds. The keepalive ping does the same at once.
//!
//! # Transactions
//!
//! `mongoose_rdbms:sql_transaction/2,3` runs its fun in the caller, as
//! MongooseIM's API requires, so every query the fun makes must reach the one
//! connection the transaction began on. A checkout request is carried by a
//! worker like any other (strategy, queue bound) and takes the connection's
//! mutex as an owned guard. The guard goes into a [`Transaction`], handed to
//! the caller at once through the checkout's own [`Reply`] (the NIF wraps it
//! in a resource), while the checkout job itself keeps running until the
//! transaction is released: the worker stays busy (strategies, stats and the
//! keepalive see it so) and its queue waits, exactly as a MongooseIM worker
//! running a transaction. Queries on the handle run on the held connection
//! directly, in call order; `BEGIN`, `COMMIT` and `ROLLBACK` are plain
//! queries on it. Releasing gives the guard back and ends the checkout job;
//! if the caller dies instead (or a checkout answer reaches nobody because
//! its caller gave up), the resource's destructor drops the [`Transaction`],
//! which rolls back on the runtime and then releases the connection.

use std::collections::HashMap;
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt, TryStreamExt};
use sqlx::mysql::{
    MySql, MySqlArguments, MySqlConnectOptions, MySqlConnection, MySqlDatabaseError, MySqlRow,
    MySqlSslMode, MySqlStatement,
};
use sqlx::postgres::{
    PgArgumentBuffer, PgArguments, PgConnectOptions, PgConnection, PgDatabaseError, PgRow,
    PgSeverity, PgSslMode, PgStatement, PgTypeInfo, Postgres,
};
use sqlx::{
    Arguments, Column, ConnectOptions, Connection, Decode, Either, Executor, Row, Statement,
    TypeInfo, ValueRef,
};
use tokio::sync::{oneshot, Mutex, OwnedMutexGuard};

use crate::config::{Node, Secret};
use crate::error::{Error, Result};
use crate::pool::Driver;
use crate::reply::Reply;
use crate::runtime;
use crate::term::Term;
use crate::tls::read_tls;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// pgsql's `statement_timeout` is the request deadline plus this, so a
/// caller waiting exactly `call_timeout` times out first (and cancels) and
/// the server then cancels the statement, keeping the connection.
const SERVER_MARGIN: Duration = Duration::from_millis(100);
/// The client gives up this long after the deadline (mysql, or a server that
/// does not answer): the connection is then dropped and reopened.
const CLIENT_MARGIN: Duration = Duration::from_millis(500);
/// How long a rollback of an abandoned transaction may take before the
/// connection is dropped instead.
const ROLLBACK_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Pgsql,
    Mysql,
}

impl Engine {
    pub fn name(self) -> &'static str {
        match self {
            Engine::Pgsql => "pgsql",
            Engine::Mysql => "mysql",
        }
    }

    fn default_port(self) -> u16 {
        match self {
            Engine::Pgsql => 5432,
            Engine::Mysql => 3306,
        }
    }
}

/// The TLS settings sqlx applies (the rest of the section is validated only).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RdbmsTls {
    pub required: bool,
    pub verify_peer: bool,
    pub cacertfile: Option<String>,
    pub certfile: Option<String>,
    pub keyfile: Option<String>,
}

/// The validated connection options of an `rdbms` pool.
#[derive(Clone)]
pub struct RdbmsConfig {
    pub engine: Engine,
    pub host: String,
    pub port: u16,
    pub database: String,
    pub username: String,
    pub password: Option<Secret>,
    pub keepalive_interval: Option<Duration>,
    pub query_timeout: Option<Duration>,
    pub tls: Option<RdbmsTls>,
}

impl fmt::Debug for RdbmsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RdbmsConfig")
            .field("engine", &self.engine)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("database", &self.database)
            .field("username", &self.username)
            .field("keepalive_interval", &self.keepalive_interval)
            .field("query_timeout", &self.query_timeout)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl RdbmsConfig {
    pub const OPTIONS: [&'static str; 11] = [
        "driver",
        "host",
        "port",
        "database",
        "username",
        "password",
        "keepalive_interval",
        "query_timeout",
        "max_start_interval",
        "tls",
        "server",
    ];

    pub fn read(conn: &Node) -> Result<RdbmsConfig> {
        conn.only_keys(&Self::OPTIONS)?;
        let keepalive_interval = conn
            .at("keepalive_interval")
            .int(1, i64::from(u32::MAX))?
            .map(|s| Duration::from_secs(s as u64));
        let query_timeout = conn
            .at("query_timeout")
            .int(1, i64::from(u32::MAX))?
            .map(|ms| Duration::from_millis(ms as u64));
        conn.at("max_start_interval").int(1, i64::from(u32::MAX))?;
        let server = conn.at("server");
        if server.is_set() {
            if conn.at("driver").is_set() {
                return Err(Error::Config(format!(
                    "{}: set either server (the legacy form) or driver, not both",
                    server.path()
                )));
            }
            let mut config = read_legacy_server(&server)?;
            config.keepalive_interval = keepalive_interval;
            config.query_timeout = query_timeout;
            return Ok(config);
        }
        let driver = conn.at("driver");
        let engine = match driver.one_of(&["pgsql", "mysql", "odbc", "cockroachdb"])? {
            None => return Err(driver.missing("\"pgsql\" or \"mysql\"")),
            Some(d) if d == "pgsql" => Engine::Pgsql,
            Some(d) if d == "mysql" => Engine::Mysql,
            Some(d) => {
                return Err(Error::Config(format!(
                    "{}: driver {d} is not supported by mongoose_native yet",
                    driver.path()
                )))
            }
        };
        let tls = read_tls_section(&conn.at("tls"), engine)?;
        Ok(RdbmsConfig {
            engine,
            host: conn.at("host").required_string()?,
            port: conn
                .at("port")
                .int_or(1, 65535, i64::from(engine.default_port()))? as u16,
            database: conn.at("database").required_string()?,
            username: conn.at("username").required_string()?,
            password: conn
                .at("password")
                .secret()?
                .filter(|p| !p.expose().is_empty()),
            keepalive_interval,
            query_timeout,
            tls,
        })
    }
}

fn read_tls_section(tls: &Node, engine: Engine) -> Result<Option<RdbmsTls>> {
    let Some(term) = tls.term() else {
        return Ok(None);
    };
    let required = tls.at("required").bool()?;
    if required.is_some() && engine == Engine::Mysql {
        return Err(Error::Config(format!(
            "{}: the required option is not supported for MySQL",
            tls.at("required").path()
        )));
    }
    // Everything else is seed 002's TLS section: validate it (files included).
    let rest = without_key(term, "required");
    let rest_node = Node::new(tls.path().to_string(), &rest);
    read_tls(&rest_node)?;
    let verify_mode = rest_node.at("verify_mode").string()?;
    let verify_peer =
        rest_node.at("verify_peer").bool_or(false)? || verify_mode.as_deref() == Some("peer");
    let file = |key: &str| -> Result<Option<String>> {
        let node = rest_node.at(key);
        match node.string()? {
            Some(f) if !std::path::Path::new(&f).is_file() => {
                Err(Error::Config(format!("{}: cannot read {f:?}", node.path())))
            }
            other => Ok(other),
        }
    };
    Ok(Some(RdbmsTls {
        required: required.unwrap_or(false),
        verify_peer,
        cacertfile: file("cacertfile")?,
        certfile: file("certfile")?,
        keyfile: file("keyfile")?,
    }))
}

fn without_key(term: &Term, key: &str) -> Term {
    let named = |k: &Term| k.as_text().as_deref() == Some(key);
    match term {
        Term::Map(pairs) => Term::Map(pairs.iter().filter(|(k, _)| !named(k)).cloned().collect()),
        Term::List(items) => Term::List(
            items
                .iter()
                .filter(|i| !matches!(i, Term::Tuple(kv) if kv.len() == 2 && named(&kv[0])))
                .cloned()
                .collect(),
        ),
        other => other.clone(),
    }
}

/// `{Type, Host, [Port,] DB, User, Pass[, SSL]}`.
fn read_legacy_server(server: &Node) -> Result<RdbmsConfig> {
    const FORM: &str = "{pgsql | mysql, Host, [Port,] Database, User, Password[, SSL]}";
    let Some(Term::Tuple(items)) = server.term() else {
        return Err(server.invalid(FORM));
    };
    let engine = match items.first().and_then(|t| t.as_atom()) {
        Some("pgsql") => Engine::Pgsql,
        Some("mysql") => Engine::Mysql,
        Some(other) => {
            return Err(Error::Config(format!(
                "{}: driver {other} is not supported by mongoose_native yet",
                server.path()
            )))
        }
        None => return Err(server.invalid(FORM)),
    };
    let text = |i: usize, what: &str| -> Result<String> {
        items.get(i).and_then(|t| t.as_text()).ok_or_else(|| {
            Error::Config(format!(
                "{}: expected {FORM}, element {} ({what}) is not a string",
                server.path(),
                i + 1
            ))
        })
    };
    let has_port = matches!(items.get(2), Some(Term::Int(_)));
    let base = if has_port { 3 } else { 2 };
    if items.len() < base + 3 || items.len() > base + 4 {
        return Err(Error::Config(format!(
            "{}: expected {FORM}, got a tuple of {} elements",
            server.path(),
            items.len()
        )));
    }
    let port = match items.get(2) {
        Some(Term::Int(p)) if (1..=65535).contains(p) => *p as u16,
        Some(Term::Int(_)) => {
            return Err(Error::Config(format!(
                "{}: the port must be between 1 and 65535",
                server.path()
            )))
        }
        _ => engine.default_port(),
    };
    let password = match items.get(base + 2) {
        Some(p) => Node::new(format!("{}.password", server.path()), p)
            .secret()?
            .filter(|p| !p.expose().is_empty()),
        None => None,
    };
    let tls = match items.get(base + 3) {
        None => None,
        Some(ssl) => legacy_ssl(ssl),
    };
    Ok(RdbmsConfig {
        engine,
        host: text(1, "host")?,
        port,
        database: text(base, "database")?,
        username: text(base + 1, "user")?,
        password,
        keepalive_interval: None,
        query_timeout: None,
        tls,
    })
}

fn legacy_ssl(ssl: &Term) -> Option<RdbmsTls> {
    let mode = ssl.get("ssl").and_then(|t| t.as_atom());
    let mut tls = match mode {
        Some("required") => RdbmsTls {
            required: true,
            ..RdbmsTls::default()
        },
        Some("true") => RdbmsTls::default(),
        _ => return None,
    };
    if let Some(opts) = ssl.get("ssl_opts") {
        tls.verify_peer = opts.get("verify").and_then(|t| t.as_atom()) == Some("verify_peer");
        tls.cacertfile = opts.get("cacertfile").and_then(|t| t.as_text());
        tls.certfile = opts.get("certfile").and_then(|t| t.as_text());
        tls.keyfile = opts.get("keyfile").and_then(|t| t.as_text());
    }
    Some(tls)
}

// ---------------------------------------------------------------------------
// Driver
// ---------------------------------------------------------------------------

/// What every connection of a pool shares.
pub struct Shared {
    engine: Engine,
    pg: Option<PgConnectOptions>,
    my: Option<MySqlConnectOptions>,
    /// The deadline of one request on a connection.
    op_timeout: Duration,
    keepalive: Option<Duration>,
    target: String,
}

impl Shared {
    async fn open(&self) -> Result<Db> {
        let opened = async {
            match (&self.pg, &self.my) {
                (Some(pg), _) => PgConnection::connect_with(pg).await.map(Db::Pg),
                (_, Some(my)) => MySqlConnection::connect_with(my).await.map(Db::My),
                _ => Err(sqlx::Error::Configuration("no connect options".into())),
            }
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, opened).await {
            Ok(Ok(db)) => Ok(db),
            Ok(Err(e)) => Err(Error::Connect(format!(
                "{} {}: {}",
                self.engine.name(),
                self.target,
                describe(&e)
            ))),
            Err(_) => Err(Error::Connect(format!(
                "{} {}: no connection within {CONNECT_TIMEOUT:?}",
                self.engine.name(),
                self.target
            ))),
        }
    }
}

enum Db {
    Pg(PgConnection),
    My(MySqlConnection),
}

enum Cached {
    Pg(PgStatement<'static>),
    My(MySqlStatement<'static>),
}

struct Prepared {
    sql: String,
    statement: Cached,
    kind: Kind,
}

/// One connection and what was prepared on it; `db` is `None` once it broke.
pub struct ConnState {
    db: Option<Db>,
    prepared: HashMap<String, Prepared>,
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
        let target = format!("{}:{}/{}", config.host, config.port, config.database);
        let (pg, my) = match config.engine {
            Engine::Pgsql => (Some(pg_options(&config, op_timeout)), None),
            Engine::Mysql => (None, Some(my_options(&config))),
        };
        Ok(RdbmsDriver {
            shared: Arc::new(Shared {
                engine: config.engine,
                pg,
                my,
                op_timeout,
                keepalive: config.keepalive_interval,
                target,
            }),
        })
    }
}

fn pg_options(config: &RdbmsConfig, op_timeout: Duration) -> PgConnectOptions {
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
            let mut o = opts.ssl_mode(mode);
            if let Some(f) = &tls.cacertfile {
                o = o.ssl_root_cert(PathBuf::from(f));
            }
            if let Some(f) = &tls.certfile {
                o = o.ssl_client_cert(PathBuf::from(f));
            }
            if let Some(f) = tls.keyfile.as_ref().or(tls.certfile.as_ref()) {
                o = o.ssl_client_key(PathBuf::from(f));
            }
            o
        }
    };
    opts.disable_statement_logging()
}

fn my_options(config: &RdbmsConfig) -> MySqlConnectOptions {
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
            let mut o = opts.ssl_mode(mode);
            if let Some(f) = &tls.cacertfile {
                o = o.ssl_ca(PathBuf::from(f));
            }
            if let Some(f) = &tls.certfile {
                o = o.ssl_client_cert(PathBuf::from(f));
            }
            if let Some(f) = tls.keyfile.as_ref().or(tls.certfile.as_ref()) {
                o = o.ssl_client_key(PathBuf::from(f));
            }
            o
        }
    };
    opts.disable_statement_logging()
}

pub enum RdbmsRequest {
    Query(String),
    Execute {
        name: String,
        sql: String,
        params: Vec<Term>,
    },
    Checkout(Checkout),
    Engine,
}

/// Where a checkout delivers its [`Transaction`]: `wrap` turns it into the
/// term `reply` carries (the NIF makes it a resource).
pub struct Checkout {
    pub reply: Reply,
    pub wrap: fn(Arc<Transaction>) -> Term,
}

/// A [`Checkout`] inside a request term (`Term::Opaque`), taken once.
pub struct CheckoutCell(std::sync::Mutex<Option<Checkout>>);

impl CheckoutCell {
    pub fn new(checkout: Checkout) -> Arc<CheckoutCell> {
        Arc::new(CheckoutCell(std::sync::Mutex::new(Some(checkout))))
    }

    fn take(&self) -> Option<Checkout> {
        self.0.lock().ok().and_then(|mut c| c.take())
    }
}

fn iodata_text(term: &Term, what: &str) -> Result<String> {
    let mut buf = Vec::new();
    if !term.to_iodata(&mut buf) {
        return Err(Error::BadRequest(format!(
            "{what}: expected iodata, got {term:?}"
        )));
    }
    String::from_utf8(buf).map_err(|_| Error::BadRequest(format!("{what}: not valid UTF-8")))
}

/// Reads a request term (the forms of the module documentation).
pub fn parse_request(request: Term) -> Result<RdbmsRequest> {
    match request {
        Term::Atom(a) if a == "rdbms_engine" => Ok(RdbmsRequest::Engine),
        Term::Tuple(t) => match (t.first().and_then(|a| a.as_atom()), t.len()) {
            (Some("sql_query"), 2) => Ok(RdbmsRequest::Query(iodata_text(&t[1], "query")?)),
            (Some("sql_execute"), 4) => {
                let name = t[1]
                    .as_text()
                    .ok_or_else(|| Error::BadRequest("the statement name is not an atom".into()))?;
                let sql = iodata_text(&t[2], "statement")?;
                let Term::List(params) = &t[3] else {
                    return Err(Error::BadRequest(
                        "the parameters are not a list".to_string(),
                    ));
                };
                Ok(RdbmsRequest::Execute {
                    name,
                    sql,
                    params: params.clone(),
                })
            }
            (Some("rdbms_checkout"), 2) => match &t[1] {
                Term::Opaque(any) => any
                    .downcast_ref::<CheckoutCell>()
                    .and_then(CheckoutCell::take)
                    .map(RdbmsRequest::Checkout)
                    .ok_or_else(|| Error::BadRequest("a checkout is made by the NIF".into())),
                _ => Err(Error::BadRequest("a checkout is made by the NIF".into())),
            },
            (Some("rdbms_engine"), 1) => Ok(RdbmsRequest::Engine),
            _ => Err(Error::BadRequest(format!(
                "expected {{sql_query, Query}} or {{sql_execute, Name, SQL, Params}}, got {:?}",
                Term::Tuple(t)
            ))),
        },
        other => Err(Error::BadRequest(format!(
            "expected {{sql_query, Query}} or {{sql_execute, Name, SQL, Params}}, got {other:?}"
        ))),
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
            let db = shared.open().await?;
            Ok(Arc::new(Mutex::new(ConnState {
                db: Some(db),
                prepared: HashMap::new(),
            })))
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
            reopen(&shared, &mut state).await
        })
    }
}

async fn reopen(shared: &Shared, state: &mut ConnState) -> Result<()> {
    state.prepared.clear();
    state.db = Some(shared.open().await?);
    Ok(())
}

/// Runs a query or an execute on the connection, reopening it first if it
/// broke earlier. SQL errors are answers; a broken connection is dropped.
async fn run_request(
    shared: &Shared,
    state: &mut ConnState,
    request: &RdbmsRequest,
) -> Result<Term> {
    if state.db.is_none() {
        reopen(shared, state)
            .await
            .map_err(|e| Error::NoConnection(e.to_string()))?;
    }
    let ConnState { db, prepared } = state;
    let Some(conn) = db.as_mut() else {
        return Err(Error::NoConnection("no connection".into()));
    };
    let work = async {
        match (conn, request) {
            (Db::Pg(c), RdbmsRequest::Query(sql)) => pg_simple(c, sql).await,
            (Db::My(c), RdbmsRequest::Query(sql)) => my_simple(c, sql).await,
            (Db::Pg(c), RdbmsRequest::Execute { name, sql, params }) => {
                pg_execute(c, prepared, name, sql, params).await
            }
            (Db::My(c), RdbmsRequest::Execute { name, sql, params }) => {
                my_execute(c, prepared, name, sql, params).await
            }
            _ => Ok(Err(Error::BadRequest("not a query".into()).to_term())),
        }
    };
    match tokio::time::timeout(shared.op_timeout + CLIENT_MARGIN, work).await {
        Err(_) => {
            state.db = None;
            Ok(Term::error(
                Error::Timeout(format!(
                    "{}: no answer within {} ms; the connection is replaced",
                    shared.target,
                    shared.op_timeout.as_millis()
                ))
                .reason(),
            ))
        }
        Ok(Ok(Ok(term))) => Ok(term),
        Ok(Ok(Err(answer))) => Ok(answer),
        Ok(Err(e)) => {
            if breaks_connection(&e) {
                log::warn!(
                    "rdbms {} connection lost, reopening on next use: {}",
                    shared.target,
                    describe(&e)
                );
                state.db = None;
                Ok(Error::ConnectionLost(format!("{}: {}", shared.target, describe(&e))).to_term())
            } else {
                Ok(sql_error(&e))
            }
        }
    }
}

/// `Ok(Ok(result))`, `Ok(Err(error answer))` for a request refused before it
/// reached the server, `Err` for what the server or the connection said.
type Outcome = std::result::Result<std::result::Result<Term, Term>, sqlx::Error>;

fn describe(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) => db.message().to_string(),
        other => other.to_string(),
    }
}

fn breaks_connection(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            if let Some(pg) = db.try_downcast_ref::<PgDatabaseError>() {
                let code = pg.code();
                matches!(pg.severity(), PgSeverity::Fatal | PgSeverity::Panic)
                    || code.starts_with("08")
                    || code.starts_with("57P")
            } else if let Some(my) = db.try_downcast_ref::<MySqlDatabaseError>() {
                // ER_SERVER_SHUTDOWN, ER_CONNECTION_KILLED, CR_SERVER_GONE_ERROR, CR_SERVER_LOST
                matches!(my.number(), 1053 | 1927 | 2006 | 2013)
            } else {
                false
            }
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed => true,
        _ => false,
    }
}

/// `{error, duplicate_key}` or `{error, Message}` with the message as a charlist.
fn sql_error(e: &sqlx::Error) -> Term {
    if let sqlx::Error::Database(db) = e {
        if db.kind() == sqlx::error::ErrorKind::UniqueViolation {
            return Term::error(Term::atom("duplicate_key"));
        }
    }
    Term::error(charlist(&describe(e)))
}

fn charlist(s: &str) -> Term {
    Term::List(
        s.chars()
            .map(|c| Term::Int(i64::from(u32::from(c))))
            .collect(),
    )
}

mod mysql;
mod pgsql;
mod shape;
mod transaction;

use mysql::*;
use pgsql::*;
use shape::*;
pub use shape::{statement_kinds, Kind};
pub use transaction::Transaction;

#[cfg(test)]
mod tests;
