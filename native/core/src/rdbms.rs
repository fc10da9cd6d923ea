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

    pub fn engine(&self) -> Engine {
        self.shared.engine
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

// ---------------------------------------------------------------------------
// Result shapes
// ---------------------------------------------------------------------------

/// What a statement's first keyword says about its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `SELECT`, `WITH`, `SHOW`, `VALUES`, ...: `{selected, Rows}`.
    Rows,
    /// `INSERT`, `UPDATE`, `DELETE`: `{updated, N}`, or `{updated, N, Rows}` with `RETURNING`.
    Dml,
    Other,
}

/// The statements of a query, split on `;` outside literals and comments.
pub fn statement_kinds(sql: &str) -> Vec<Kind> {
    let b = sql.as_bytes();
    let mut kinds = vec![];
    let mut start = 0;
    let mut i = 0;
    let push = |from: usize, to: usize, kinds: &mut Vec<Kind>| {
        if let Some(kind) = first_keyword(&sql[from..to]) {
            kinds.push(kind);
        }
    };
    while i < b.len() {
        match b[i] {
            q @ (b'\'' | b'"' | b'`') => {
                i += 1;
                while i < b.len() && b[i] != q {
                    if b[i] == b'\\' && q == b'\'' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                    i += 1;
                }
                i += 1;
            }
            b';' => {
                push(start, i, &mut kinds);
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    if start < b.len() {
        push(start, b.len(), &mut kinds);
    }
    kinds
}

fn first_keyword(stmt: &str) -> Option<Kind> {
    let mut rest = stmt;
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == '(');
        if let Some(r) = rest.strip_prefix("--") {
            rest = r.split_once('\n').map_or("", |(_, after)| after);
        } else if let Some(r) = rest.strip_prefix("/*") {
            rest = r.split_once("*/").map_or("", |(_, after)| after);
        } else {
            break;
        }
    }
    let word: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphabetic())
        .collect::<String>()
        .to_ascii_lowercase();
    if word.is_empty() {
        return None;
    }
    Some(match word.as_str() {
        "select" | "with" | "show" | "values" | "table" | "explain" | "describe" | "desc" => {
            Kind::Rows
        }
        "insert" | "update" | "delete" | "replace" => Kind::Dml,
        _ => Kind::Other,
    })
}

fn shape(engine: Engine, kind: Kind, affected: u64, rows: Vec<Term>) -> Term {
    let n = Term::Int(i64::try_from(affected).unwrap_or(i64::MAX));
    match kind {
        Kind::Rows => Term::tuple(vec![Term::atom("selected"), Term::List(rows)]),
        _ if rows.is_empty() => Term::tuple(vec![Term::atom("updated"), n]),
        _ if engine == Engine::Pgsql => {
            Term::tuple(vec![Term::atom("updated"), n, Term::List(rows)])
        }
        _ => Term::tuple(vec![Term::atom("selected"), Term::List(rows)]),
    }
}

fn one_or_many(engine: Engine, mut results: Vec<Term>) -> Term {
    match results.len() {
        0 => Term::tuple(vec![Term::atom("updated"), Term::Int(0)]),
        1 => results.pop().unwrap_or(Term::List(vec![])),
        _ => {
            if engine == Engine::Pgsql {
                results.reverse();
            }
            Term::List(results)
        }
    }
}

/// Shapes the answers of a simple-protocol query, one per statement, as
/// they stream in: rows of a statement, then its completion.
struct Shaper {
    engine: Engine,
    kinds: Vec<Kind>,
    results: Vec<Term>,
    rows: Vec<Term>,
}

impl Shaper {
    fn new(engine: Engine, sql: &str) -> Shaper {
        Shaper {
            engine,
            kinds: statement_kinds(sql),
            results: vec![],
            rows: vec![],
        }
    }

    fn row(&mut self, row: Term) {
        self.rows.push(row);
    }

    fn done(&mut self, affected: u64) {
        let guess = if self.rows.is_empty() {
            Kind::Other
        } else {
            Kind::Rows
        };
        let kind = self.kinds.get(self.results.len()).copied().unwrap_or(guess);
        let rows = std::mem::take(&mut self.rows);
        self.results.push(shape(self.engine, kind, affected, rows));
    }

    fn finish(self) -> Term {
        one_or_many(self.engine, self.results)
    }
}

fn null() -> Term {
    Term::atom("null")
}

// ---------------------------------------------------------------------------
// PostgreSQL
// ---------------------------------------------------------------------------

async fn pg_simple(conn: &mut PgConnection, sql: &str) -> Outcome {
    let mut shaper = Shaper::new(Engine::Pgsql, sql);
    let mut stream = sqlx::raw_sql(sql).fetch_many(&mut *conn);
    while let Some(item) = stream.try_next().await? {
        match item {
            Either::Right(row) => shaper.row(pg_text_row(&row)),
            Either::Left(done) => shaper.done(done.rows_affected()),
        }
    }
    Ok(Ok(shaper.finish()))
}

fn pg_text_row(row: &PgRow) -> Term {
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
pub fn pg_placeholders(sql: &str) -> String {
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

async fn pg_execute(
    conn: &mut PgConnection,
    cache: &mut HashMap<String, Prepared>,
    name: &str,
    sql: &str,
    params: &[Term],
) -> Outcome {
    let fresh = !matches!(cache.get(name), Some(p) if p.sql == sql);
    if fresh {
        let converted = pg_placeholders(sql);
        let statement = Statement::to_owned(&conn.prepare(&converted).await?);
        cache.insert(
            name.to_string(),
            Prepared {
                sql: sql.to_string(),
                statement: Cached::Pg(statement),
                kind: statement_kinds(sql).first().copied().unwrap_or(Kind::Other),
            },
        );
    }
    let Some(Prepared {
        statement: Cached::Pg(statement),
        kind,
        ..
    }) = cache.get(name)
    else {
        return Ok(Err(
            Error::Internal("statement cache mismatch".into()).to_term()
        ));
    };
    let types: Vec<PgTypeInfo> = match statement.parameters() {
        Some(Either::Left(types)) => types.to_vec(),
        _ => vec![],
    };
    if types.len() != params.len() {
        return Ok(Err(Term::error(charlist(&format!(
            "statement {name} takes {} parameters, got {}",
            types.len(),
            params.len()
        )))));
    }
    let mut args = PgArguments::default();
    for (i, (ty, value)) in types.iter().zip(params).enumerate() {
        let param = match PgParam::new(ty, value) {
            Ok(p) => p,
            Err(why) => {
                return Ok(Err(Term::error(charlist(&format!(
                    "statement {name}, parameter {}: {why}",
                    i + 1
                )))))
            }
        };
        if let Err(e) = args.add(param) {
            return Ok(Err(Term::error(charlist(&e.to_string()))));
        }
    }
    let has_columns = !statement.columns().is_empty();
    let kind = if has_columns && *kind != Kind::Dml {
        Kind::Rows
    } else {
        *kind
    };
    let mut rows = vec![];
    let mut affected = 0;
    {
        let mut stream = conn.fetch_many(statement.query_with(args));
        while let Some(item) = stream.try_next().await? {
            match item {
                Either::Right(row) => rows.push(pg_typed_row(&row)),
                Either::Left(done) => affected += done.rows_affected(),
            }
        }
    }
    Ok(Ok(shape(Engine::Pgsql, kind, affected, rows)))
}

/// A parameter encoded for the type the server described, in binary format.
struct PgParam {
    ty: PgTypeInfo,
    bytes: Option<Vec<u8>>,
}

fn param_bytes(value: &Term) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    match value {
        Term::Atom(_) => None,
        v => v.to_iodata(&mut buf).then_some(buf),
    }
}

fn param_int(value: &Term) -> std::result::Result<i64, String> {
    match value {
        Term::Int(i) => Ok(*i),
        Term::Atom(a) if a == "true" => Ok(1),
        Term::Atom(a) if a == "false" => Ok(0),
        v => param_bytes(v)
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| format!("expected an integer, got {v:?}")),
    }
}

fn param_float(value: &Term) -> std::result::Result<f64, String> {
    match value {
        Term::Float(f) => Ok(*f),
        Term::Int(i) => Ok(*i as f64),
        v => param_bytes(v)
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| format!("expected a number, got {v:?}")),
    }
}

fn param_bool(value: &Term) -> std::result::Result<bool, String> {
    match value {
        Term::Atom(a) if a == "true" => Ok(true),
        Term::Atom(a) if a == "false" => Ok(false),
        Term::Int(i) => Ok(*i != 0),
        v => match param_bytes(v).as_deref() {
            Some(b"t" | b"true" | b"1") => Ok(true),
            Some(b"f" | b"false" | b"0") => Ok(false),
            _ => Err(format!("expected a boolean, got {v:?}")),
        },
    }
}

fn text_of(value: &Term) -> std::result::Result<Vec<u8>, String> {
    match value {
        Term::Int(i) => Ok(i.to_string().into_bytes()),
        Term::Float(f) => Ok(f.to_string().into_bytes()),
        Term::Atom(a) if a == "true" || a == "false" => Ok(a.clone().into_bytes()),
        v => param_bytes(v).ok_or_else(|| format!("expected a binary or iodata, got {v:?}")),
    }
}

impl PgParam {
    fn new(ty: &PgTypeInfo, value: &Term) -> std::result::Result<PgParam, String> {
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
fn numeric_from_int(i: i64) -> Vec<u8> {
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
    ) -> std::result::Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
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

fn pg_typed_row(row: &PgRow) -> Term {
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
fn numeric_to_term(b: &[u8]) -> Option<Term> {
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

// ---------------------------------------------------------------------------
// MySQL
// ---------------------------------------------------------------------------

async fn my_simple(conn: &mut MySqlConnection, sql: &str) -> Outcome {
    let mut shaper = Shaper::new(Engine::Mysql, sql);
    let mut stream = sqlx::raw_sql(sql).fetch_many(&mut *conn);
    while let Some(item) = stream.try_next().await? {
        match item {
            Either::Right(row) => shaper.row(my_row(&row)),
            Either::Left(done) => shaper.done(done.rows_affected()),
        }
    }
    Ok(Ok(shaper.finish()))
}

fn my_row(row: &MySqlRow) -> Term {
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

async fn my_execute(
    conn: &mut MySqlConnection,
    cache: &mut HashMap<String, Prepared>,
    name: &str,
    sql: &str,
    params: &[Term],
) -> Outcome {
    let fresh = !matches!(cache.get(name), Some(p) if p.sql == sql);
    if fresh {
        let statement = Statement::to_owned(&conn.prepare(sql).await?);
        cache.insert(
            name.to_string(),
            Prepared {
                sql: sql.to_string(),
                statement: Cached::My(statement),
                kind: statement_kinds(sql).first().copied().unwrap_or(Kind::Other),
            },
        );
    }
    let Some(Prepared {
        statement: Cached::My(statement),
        kind,
        ..
    }) = cache.get(name)
    else {
        return Ok(Err(
            Error::Internal("statement cache mismatch".into()).to_term()
        ));
    };
    let expected = match statement.parameters() {
        Some(Either::Right(n)) => n,
        Some(Either::Left(types)) => types.len(),
        None => 0,
    };
    if expected != params.len() {
        return Ok(Err(Term::error(charlist(&format!(
            "statement {name} takes {expected} parameters, got {}",
            params.len()
        )))));
    }
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
                    return Ok(Err(Term::error(charlist(&format!(
                        "statement {name}, parameter {}: cannot send {v:?}",
                        i + 1
                    )))))
                }
            },
        };
        if let Err(e) = added {
            return Ok(Err(Term::error(charlist(&e.to_string()))));
        }
    }
    let kind = if !statement.columns().is_empty() {
        Kind::Rows
    } else {
        *kind
    };
    let mut rows = vec![];
    let mut affected = 0;
    {
        let mut stream = conn.fetch_many(statement.query_with(args));
        while let Some(item) = stream.try_next().await? {
            match item {
                Either::Right(row) => rows.push(my_row(&row)),
                Either::Left(done) => affected += done.rows_affected(),
            }
        }
    }
    Ok(Ok(shape(Engine::Mysql, kind, affected, rows)))
}

// ---------------------------------------------------------------------------
// Transactions
// ---------------------------------------------------------------------------

/// A connection checked out of its worker for one caller (see the module
/// documentation). Dropping it rolls back and gives the connection back.
pub struct Transaction {
    conn: Mutex<Option<OwnedMutexGuard<ConnState>>>,
    shared: Arc<Shared>,
    /// Fired (or dropped) once the connection went back.
    released: std::sync::Mutex<Option<oneshot::Sender<()>>>,
}

impl Transaction {
    async fn hold(shared: &Arc<Shared>, conn: Conn) -> (Arc<Transaction>, oneshot::Receiver<()>) {
        let guard = conn.lock_owned().await;
        let (done, released) = oneshot::channel();
        let tx = Arc::new(Transaction {
            conn: Mutex::new(Some(guard)),
            shared: shared.clone(),
            released: std::sync::Mutex::new(Some(done)),
        });
        (tx, released)
    }

    /// Checks out `conn` directly, outside its worker (tests).
    pub async fn checkout(driver: &RdbmsDriver, conn: Conn) -> Arc<Transaction> {
        Transaction::hold(&driver.shared, conn).await.0
    }

    fn signal_released(&self) -> Option<oneshot::Sender<()>> {
        self.released.lock().ok().and_then(|mut r| r.take())
    }

    pub fn engine(&self) -> Engine {
        self.shared.engine
    }

    /// Accepts the query and execute forms only.
    pub fn parse(&self, request: Term) -> Result<RdbmsRequest> {
        match parse_request(request)? {
            r @ (RdbmsRequest::Query(_) | RdbmsRequest::Execute { .. }) => Ok(r),
            RdbmsRequest::Engine => Ok(RdbmsRequest::Engine),
            RdbmsRequest::Checkout(_) => Err(Error::BadRequest(
                "a transaction's connection is checked out already".into(),
            )),
        }
    }

    /// Runs a request on the held connection; requests queue in call order.
    pub async fn run(&self, request: RdbmsRequest) -> Result<Term> {
        if let RdbmsRequest::Engine = request {
            return Ok(Term::atom(self.shared.engine.name()));
        }
        let work = async {
            let mut held = self.conn.lock().await;
            match held.as_mut() {
                Some(state) => run_request(&self.shared, state, &request).await,
                None => Err(Error::BadRequest(
                    "the transaction's connection was released".into(),
                )),
            }
        };
        AssertUnwindSafe(work)
            .catch_unwind()
            .await
            .unwrap_or_else(|_| {
                log::error!("an rdbms transaction request panicked");
                Err(Error::Internal("the request panicked".into()))
            })
    }

    /// Gives the connection back to its worker, after a `ROLLBACK` if
    /// `rollback`; returns at once (the release waits for running requests).
    pub fn release(self: &Arc<Self>, rollback: bool) {
        let this = self.clone();
        runtime::handle().spawn(async move {
            let taken = this.conn.lock().await.take();
            if let Some(mut state) = taken {
                if rollback {
                    rollback_quietly(&this.shared, &mut state).await;
                }
                drop(state);
                if let Some(done) = this.signal_released() {
                    let _ = done.send(());
                }
            }
        });
    }

    /// Whether the connection went back already.
    pub async fn is_released(&self) -> bool {
        self.conn.lock().await.is_none()
    }
}

async fn rollback_quietly(shared: &Shared, state: &mut ConnState) {
    let Some(db) = state.db.as_mut() else { return };
    let done = tokio::time::timeout(ROLLBACK_TIMEOUT, async {
        match db {
            Db::Pg(c) => c.execute(sqlx::raw_sql("ROLLBACK")).await.map(|_| ()),
            Db::My(c) => c.execute(sqlx::raw_sql("ROLLBACK")).await.map(|_| ()),
        }
    })
    .await;
    if !matches!(done, Ok(Ok(()))) {
        log::warn!(
            "rdbms {}: rollback of an abandoned transaction failed; dropping the connection",
            shared.target
        );
        state.db = None;
    }
}

impl Drop for Transaction {
    fn drop(&mut self) {
        let done = self.signal_released();
        if let Some(mut state) = self.conn.get_mut().take() {
            let shared = self.shared.clone();
            runtime::handle().spawn(async move {
                rollback_quietly(&shared, &mut state).await;
                drop(state);
                drop(done);
            });
        }
    }
}

#[cfg(test)]
#[path = "rdbms_tests.rs"]
mod tests;
