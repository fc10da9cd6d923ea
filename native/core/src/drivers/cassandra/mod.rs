//! The `cassandra` pool type, for `mongoose_cassandra`, on the scylla crate.
//!
//! One scylla `Session` per pool: it keeps connections to every node,
//! routes each statement to a replica of its partition key (token-aware,
//! from the prepared statement's key indexes and the ring it reads from
//! `system.local`, `system.peers` and `system_schema`), reconnects by
//! itself and re-prepares statements a node forgot. A worker is an
//! execution slot on that session, so a failed request never asks the
//! engine to reconnect, and `{hash_worker, Jid}` keeps one user's requests
//! in order as MongooseIM's worker did.
//!
//! # Connection options (`outgoing_pools.cassandra.TAG.connection`)
//!
//! | key | form | default |
//! |---|---|---|
//! | `servers` | list of `{host, port}` (port 9042 by default; seed 002 names `host` `ip_address`) | `[{host = "localhost", port = 9042}]` |
//! | `keyspace` | keyspace name | `"mongooseim"` |
//! | `auth.plain` | `username`, `password` | none |
//! | `tls` | the shared TLS options; present means TLS | plain TCP |
//!
//! Seed 000's `{ssl, [SslOption]}` and cqerl's `{auth,
//! {cqerl_auth_plain_handler, [{User, Password}]}}` are read too.
//!
//! # Behaviour (MongooseIM 6.3's `mongoose_cassandra_worker`)
//!
//! Statements are prepared once per session (a bounded cache) and values
//! bound by marker name. A write goes out as batches of `batch_size` (20)
//! rows, unlogged, at consistency ONE; with `retry` (3) retries in all: a
//! write or read timeout is retried after 10-60 ms, a closed connection or
//! no connection after 5-25 ms, an Invalid answer ("Batch too large") at
//! once with half the batch (1 on the last try); anything else is answered
//! at once. A read fetches pages of 100 rows with the paging state, under
//! the same retries.

mod request;
mod values;

#[cfg(test)]
mod tests;

use std::ops::ControlFlow;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::future::BoxFuture;
use rustls::ClientConfig;
use scylla::client::caching_session::CachingSession;
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::errors::{DbError, ExecutionError, PrepareError, RequestAttemptError};
use scylla::policies::retry::FallthroughRetryPolicy;
use scylla::response::PagingState;
use scylla::serialize::row::{RowSerializationContext, SerializeRow};
use scylla::serialize::writers::RowWriter;
use scylla::serialize::SerializationError;
use scylla::statement::batch::Batch;
use scylla::statement::prepared::PreparedStatement;
use scylla::statement::{Consistency, Statement};
use scylla::value::Row;
use tokio::time::Instant;

use crate::config::{Node, PoolSettings, Secret};
use crate::drivers::redis::{servers, Server};
use crate::engine::pool::{AnyPool, Driver, Outcome, Pool};
use crate::error::{Error, Result};
use crate::options::Opt;
use crate::registry::Opening;
use crate::term::Term;
use crate::tls::{read_tls, ssl_client_options, TLS_SECTION};

pub use request::{Opts, Params, Request};

pub const DEFAULT_HOST: &str = "localhost";
pub const DEFAULT_PORT: i64 = 9042;
pub const DEFAULT_KEYSPACE: &str = "mongooseim";
/// cqerl's page size, so `cql_foldl`'s fun sees the pages MongooseIM's did.
pub const PAGE_SIZE: i32 = 100;
/// How long opening a connection (TCP, TLS, STARTUP, authentication) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Distinct statements kept prepared (callback modules declare a few dozen).
const PREPARED_CACHE: usize = 1024;

/// The validated connection options of a `cassandra` pool.
#[derive(Clone)]
pub struct CassandraConfig {
    pub servers: Vec<Server>,
    pub keyspace: String,
    pub auth: Option<(String, Secret)>,
    pub tls: Option<Arc<ClientConfig>>,
}

impl std::fmt::Debug for CassandraConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CassandraConfig")
            .field("servers", &self.servers)
            .field("keyspace", &self.keyspace)
            .field("auth", &self.auth.as_ref().map(|(user, _)| user))
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// A contact point: MongooseIM 6.x's `host` (seed 002's `ip_address`) and `port`.
const SERVER: [Opt; 3] = [
    Opt::text("host"),
    Opt::text("ip_address").alias_of("host"),
    Opt::int("port", 1, 65535),
];
const SERVERS: Opt = Opt::sections("servers", &SERVER);
const KEYSPACE: Opt = Opt::text("keyspace");
const AUTH_PLAIN: [Opt; 2] = [Opt::text("username"), Opt::secret("password")];
const AUTH_METHODS: [Opt; 1] = [Opt::section("plain", &AUTH_PLAIN)];
/// A table in TOML; cqerl's `{cqerl_auth_plain_handler, [{User, Password}]}` too.
const AUTH: Opt = Opt::section("auth", &AUTH_METHODS);
/// Seed 000's `{ssl, [SslOption]}`.
const SSL: Opt = Opt::shaped("ssl", "a list of ssl client options").alias_of("tls");

impl CassandraConfig {
    pub const OPTIONS: [Opt; 5] = [SERVERS, KEYSPACE, AUTH, TLS_SECTION, SSL];

    pub fn read(conn: &Node) -> Result<CassandraConfig> {
        conn.only(&Self::OPTIONS)?;
        let servers_node = conn.at(SERVERS.name);
        let servers = if servers_node.is_set() {
            servers(&servers_node, &SERVER, DEFAULT_PORT)?
        } else {
            vec![Server {
                host: DEFAULT_HOST.into(),
                port: DEFAULT_PORT as u16,
            }]
        };
        let keyspace_node = conn.at(KEYSPACE.name);
        let keyspace = keyspace_node.string_or(DEFAULT_KEYSPACE)?;
        // Cassandra's rule for names; anything else could not be USEd.
        if keyspace.is_empty()
            || keyspace.len() > 48
            || !keyspace
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(keyspace_node.invalid("a keyspace name (at most 48 letters, digits or _)"));
        }
        let (tls, ssl) = (conn.at(TLS_SECTION.name), conn.at(SSL.name));
        let tls = match (tls.is_set(), ssl.is_set()) {
            (true, true) => {
                return Err(Error::Config(format!(
                    "{}: set tls or ssl, not both",
                    conn.path()
                )))
            }
            (true, false) => Some(read_tls(&tls)?),
            (false, true) => {
                let translated = ssl_client_options(&ssl)?;
                Some(read_tls(&ssl.beside(ssl.path(), &translated))?)
            }
            (false, false) => None,
        };
        let tls = tls.map(|mut config| {
            // The shared reader offers HTTP's ALPN names; CQL has none.
            config.alpn_protocols.clear();
            Arc::new(config)
        });
        Ok(CassandraConfig {
            servers,
            keyspace,
            auth: read_auth(&conn.at(AUTH.name))?,
            tls,
        })
    }

    fn describe(&self) -> String {
        let servers: Vec<String> = self
            .servers
            .iter()
            .map(|s| format!("{}:{}", s.host, s.port))
            .collect();
        format!("cassandra {}", servers.join(","))
    }
}

/// `auth.plain.username`/`password`, or cqerl's
/// `{cqerl_auth_plain_handler, [{User, Password}]}`.
fn read_auth(auth: &Node) -> Result<Option<(String, Secret)>> {
    let Some(term) = auth.term() else {
        return Ok(None);
    };
    if let Term::Tuple(items) = term {
        let legacy = match items.as_slice() {
            [handler, Term::List(creds)]
                if handler.as_atom() == Some("cqerl_auth_plain_handler") =>
            {
                match creds.as_slice() {
                    [Term::Tuple(pair)] if pair.len() == 2 => Some(pair),
                    _ => None,
                }
            }
            _ => None,
        };
        let Some(pair) = legacy else {
            return Err(auth.invalid(
                "a section with plain (username, password), or {cqerl_auth_plain_handler, [{User, Password}]}",
            ));
        };
        let user = auth
            .beside(format!("{}.username", auth.path()), &pair[0])
            .required_string()?;
        let password = auth
            .beside(format!("{}.password", auth.path()), &pair[1])
            .secret()?;
        return Ok(password.map(|p| (user, p)));
    }
    auth.only(&AUTH_METHODS)?;
    let plain = auth.at(AUTH_METHODS[0].name);
    if !plain.is_set() {
        return Err(plain.missing("a section with username and password"));
    }
    plain.only(&AUTH_PLAIN)?;
    let (user, password) = (plain.at(AUTH_PLAIN[0].name), plain.at(AUTH_PLAIN[1].name));
    let user = user.required_string()?;
    let password = password
        .secret()?
        .ok_or_else(|| password.missing("a string"))?;
    Ok(Some((user, password)))
}

// ---------------------------------------------------------------------------
// Opening a pool: the session, then the workers
// ---------------------------------------------------------------------------

/// The registry's `open` for `cassandra`.
pub fn open(conn: &Node, settings: PoolSettings) -> Result<Opening> {
    let config = CassandraConfig::read(conn)?;
    // A little past call_timeout, so the caller's own timeout (an exit, as
    // MongooseIM's gen_server call gives) comes first and this one only
    // ends the work of a server that stalled.
    let deadline = Duration::from_millis(settings.call_timeout_ms) + Duration::from_millis(500);
    Ok(Box::pin(async move {
        let session = connect(&config, deadline).await?;
        log::info!(
            "{}: session open, keyspace {}",
            config.describe(),
            config.keyspace
        );
        let shared = Arc::new(Shared {
            session: CachingSession::from(session, PREPARED_CACHE),
            deadline,
            keyspace: config.keyspace.clone(),
        });
        let driver = CassandraDriver {
            shared: Arc::downgrade(&shared),
        };
        let pool = Pool::start(driver, settings).await?;
        // From here the workers alone hold the session.
        drop(shared);
        Ok(Box::new(pool) as Box<dyn AnyPool>)
    }))
}

async fn connect(config: &CassandraConfig, request_timeout: Duration) -> Result<Session> {
    // Retries are MongooseIM's (below), so the session makes none itself.
    let profile = ExecutionProfile::builder()
        .consistency(Consistency::One)
        .request_timeout(Some(request_timeout))
        .retry_policy(Arc::new(FallthroughRetryPolicy::new()))
        .build();
    let mut builder = SessionBuilder::new()
        .known_nodes(
            config
                .servers
                .iter()
                .map(|s| format!("{}:{}", s.host, s.port)),
        )
        .use_keyspace(&config.keyspace, false)
        .connection_timeout(CONNECT_TIMEOUT)
        .keyspaces_to_fetch([config.keyspace.clone()])
        .fetch_full_schema_metadata(false)
        .default_execution_profile_handle(profile.into_handle());
    if let Some((user, password)) = &config.auth {
        builder = builder.user(user, password.expose());
    }
    if let Some(tls) = &config.tls {
        builder = builder.tls_context(Some(tls.clone()));
    }
    let what = config.describe();
    match tokio::time::timeout(2 * CONNECT_TIMEOUT, builder.build()).await {
        Ok(Ok(session)) => Ok(session),
        Ok(Err(e)) => Err(Error::Connect(connect_failure(
            &what,
            config,
            &e.to_string(),
        ))),
        Err(_) => Err(Error::Connect(format!(
            "{what}: no session within {} s (does the server speak CQL?)",
            (2 * CONNECT_TIMEOUT).as_secs()
        ))),
    }
}

/// The session's error, with the option to look at when it names one.
fn connect_failure(what: &str, config: &CassandraConfig, error: &str) -> String {
    let lower = error.to_lowercase();
    if lower.contains("authentication") || lower.contains("credentials") {
        if config.auth.is_some() {
            return format!(
                "{what}: the server refused connection.auth.plain.username and \
                 connection.auth.plain.password: {error}"
            );
        }
        return format!(
            "{what}: the server requires authentication: set connection.auth.plain: {error}"
        );
    }
    if lower.contains("keyspace") {
        return format!("{what}: connection.keyspace {}: {error}", config.keyspace);
    }
    format!("{what}: {error}")
}

// ---------------------------------------------------------------------------
// The driver
// ---------------------------------------------------------------------------

pub struct CassandraDriver {
    /// Each worker holds the session (its connection is an `Arc` of it);
    /// the pool only refers to it, so stopping the pool closes the session
    /// (its connections, its reconnection attempts) once the last worker
    /// has answered its queue, not when the pool's resource is collected.
    /// A worker never gives its `Arc` up while the pool runs: no request
    /// breaks it.
    shared: Weak<Shared>,
}

/// The pool's session, shared by every worker.
pub struct Shared {
    session: CachingSession,
    /// How long one request (a stream: one page) may take, retries included.
    deadline: Duration,
    keyspace: String,
}

impl Driver for CassandraDriver {
    type Conn = Arc<Shared>;
    type Request = Request;

    fn parse(&self, request: Term) -> Result<Request> {
        request::parse(&request)
    }

    fn connect(&self, _worker: usize) -> BoxFuture<'static, Result<Arc<Shared>>> {
        let shared = self.shared.upgrade().ok_or(Error::PoolStopped);
        Box::pin(async move { shared })
    }

    fn execute(&self, shared: Arc<Shared>, request: Request) -> BoxFuture<'static, Outcome> {
        Box::pin(async move {
            Outcome::answer(match &request {
                Request::Write { query, rows, opts } => write(&shared, query, rows, opts).await,
                Request::Read {
                    query,
                    params,
                    opts,
                } => {
                    read(
                        &shared,
                        Read {
                            query,
                            params,
                            opts,
                        },
                    )
                    .await
                }
                Request::ReadPage {
                    query,
                    params,
                    opts,
                    paging,
                } => {
                    read_page(
                        &shared,
                        Read {
                            query,
                            params,
                            opts,
                        },
                        paging.as_deref(),
                    )
                    .await
                }
            })
        })
    }

    /// `{cassandra, [{keyspace, K}, {nodes, [{<<"ip:port">>, connected | down}]}]}`.
    fn stats(&self) -> Vec<Term> {
        let Some(shared) = self.shared.upgrade() else {
            return vec![];
        };
        let kv = |k: &str, v: Term| Term::tuple(vec![Term::atom(k), v]);
        let state = shared.session.get_session().get_cluster_state();
        let nodes = state
            .get_nodes_info()
            .iter()
            .map(|n| {
                let up = if n.is_connected() {
                    "connected"
                } else {
                    "down"
                };
                Term::tuple(vec![
                    Term::from(format!("{}:{}", n.address.ip(), n.address.port())),
                    Term::atom(up),
                ])
            })
            .collect();
        vec![kv(
            "cassandra",
            Term::List(vec![
                kv("keyspace", Term::from(shared.keyspace.clone())),
                kv("nodes", Term::List(nodes)),
            ]),
        )]
    }
}

// ---------------------------------------------------------------------------
// Requests, with MongooseIM's retries
// ---------------------------------------------------------------------------

/// One row's values in marker order, already in CQL's encoding.
struct Bound(Vec<Option<Vec<u8>>>);

impl SerializeRow for Bound {
    fn serialize(
        &self,
        ctx: &RowSerializationContext<'_>,
        writer: &mut RowWriter,
    ) -> std::result::Result<(), SerializationError> {
        if ctx.columns().len() != self.0.len() {
            return Err(SerializationError::new(Error::BadRequest(format!(
                "the statement has {} markers, {} values were bound",
                ctx.columns().len(),
                self.0.len()
            ))));
        }
        for value in &self.0 {
            let cell = writer.make_cell_writer();
            match value {
                None => {
                    cell.set_null();
                }
                Some(bytes) => {
                    cell.set_value(bytes).map_err(SerializationError::new)?;
                }
            }
        }
        Ok(())
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Values for the statement's markers, found by name in the caller's
/// parameters (cqerl binds by name too).
fn bind(prepared: &PreparedStatement, params: &Params) -> Result<Bound> {
    prepared
        .get_variable_col_specs()
        .iter()
        .map(|spec| {
            let name = spec.name();
            let (_, term) = params
                .iter()
                .find(|(n, _)| n == name)
                .ok_or_else(|| Error::BadRequest(format!("no value for the marker {name}")))?;
            values::encode(term, spec.typ())
                .map_err(|e| Error::BadRequest(format!("the value for {name}: {e}")))
        })
        .collect::<Result<_>>()
        .map(Bound)
}

/// Why an attempt failed.
enum Failure {
    /// The caller's mistake: answered at once, never retried.
    Refused(Error),
    Execution(ExecutionError),
    Prepare(PrepareError),
}

/// What MongooseIM's `retry_info/4` decides.
enum Verdict {
    Abort,
    RetryAfter(Duration),
    /// Invalid ("Batch too large"): retry at once with a smaller batch.
    Shrink,
}

impl Failure {
    fn attempt_error(&self) -> Option<&RequestAttemptError> {
        match self {
            Failure::Execution(ExecutionError::LastAttemptError(e))
            | Failure::Prepare(PrepareError::AllAttemptsFailed { first_attempt: e }) => Some(e),
            _ => None,
        }
    }

    fn verdict(&self) -> Verdict {
        let jitter =
            |base: u64, spread: u64| Duration::from_millis(base + rand::random_range(1..=spread));
        match (self, self.attempt_error()) {
            (Failure::Refused(_), _) => Verdict::Abort,
            (_, Some(RequestAttemptError::DbError(db, _))) => match db {
                DbError::WriteTimeout { .. } | DbError::ReadTimeout { .. } => {
                    Verdict::RetryAfter(jitter(10, 50))
                }
                DbError::Invalid => Verdict::Shrink,
                _ => Verdict::Abort,
            },
            (_, Some(RequestAttemptError::BrokenConnectionError(_)))
            | (_, Some(RequestAttemptError::UnableToAllocStreamId))
            | (Failure::Execution(ExecutionError::ConnectionPoolError(_)), _)
            | (Failure::Execution(ExecutionError::EmptyPlan), _)
            | (Failure::Prepare(PrepareError::ConnectionPoolError(_)), _) => {
                Verdict::RetryAfter(jitter(5, 20))
            }
            _ => Verdict::Abort,
        }
    }

    /// `{error, Reason}`: a server's error as cqerl shapes it, `{Code,
    /// Message, Kind}`; the others `{Kind, Message}` as every pool type.
    fn answer(&self) -> Term {
        if let Some(RequestAttemptError::DbError(db, message)) = self.attempt_error() {
            let (code, kind) = db_error(db);
            return Term::error(Term::tuple(vec![
                Term::Int(code),
                Term::from(message.clone()),
                Term::atom(kind),
            ]));
        }
        let error = match self {
            Failure::Refused(e) => e.clone(),
            Failure::Execution(ExecutionError::RequestTimeout(t)) => {
                Error::Timeout(format!("no answer within {} ms", t.as_millis()))
            }
            Failure::Execution(ExecutionError::ConnectionPoolError(e))
            | Failure::Prepare(PrepareError::ConnectionPoolError(e)) => {
                Error::NoConnection(e.to_string())
            }
            Failure::Execution(ExecutionError::EmptyPlan) => {
                Error::NoConnection("no node to send the request to".into())
            }
            _ if matches!(
                self.attempt_error(),
                Some(RequestAttemptError::BrokenConnectionError(_))
            ) =>
            {
                Error::ConnectionLost(self.to_string())
            }
            _ => Error::Server(self.to_string()),
        };
        error.to_term()
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Refused(e) => write!(f, "{e}"),
            Failure::Execution(e) => write!(f, "{e}"),
            Failure::Prepare(e) => write!(f, "{e}"),
        }
    }
}

/// The protocol's code and a name for each server error (spec section 9).
fn db_error(db: &DbError) -> (i64, &'static str) {
    match db {
        DbError::ServerError => (0x0000, "server_error"),
        DbError::ProtocolError => (0x000A, "protocol_error"),
        DbError::AuthenticationError => (0x0100, "bad_credentials"),
        DbError::Unavailable { .. } => (0x1000, "unavailable"),
        DbError::Overloaded => (0x1001, "overloaded"),
        DbError::IsBootstrapping => (0x1002, "is_bootstrapping"),
        DbError::TruncateError => (0x1003, "truncate_error"),
        DbError::WriteTimeout { .. } => (0x1100, "write_timeout"),
        DbError::ReadTimeout { .. } => (0x1200, "read_timeout"),
        DbError::ReadFailure { .. } => (0x1300, "read_failure"),
        DbError::FunctionFailure { .. } => (0x1400, "function_failure"),
        DbError::WriteFailure { .. } => (0x1500, "write_failure"),
        DbError::SyntaxError => (0x2000, "syntax_error"),
        DbError::Unauthorized => (0x2100, "unauthorized"),
        DbError::Invalid => (0x2200, "invalid"),
        DbError::ConfigError => (0x2300, "config_error"),
        DbError::AlreadyExists { .. } => (0x2400, "already_exists"),
        DbError::Unprepared { .. } => (0x2500, "unprepared"),
        DbError::Other(code) => (i64::from(*code), "other"),
        _ => (-1, "other"),
    }
}

impl Shared {
    /// The statement, prepared once per session, set up for one attempt.
    async fn prepare(
        &self,
        query: &str,
        opts: &Opts,
        timeout: Duration,
    ) -> std::result::Result<PreparedStatement, Box<Failure>> {
        let mut statement = Statement::new(query.to_string());
        statement.set_request_timeout(Some(timeout));
        let mut prepared = self
            .session
            .add_prepared_statement(&statement)
            .await
            .map_err(Failure::Prepare)?;
        prepared.set_consistency(opts.consistency);
        prepared.set_page_size(PAGE_SIZE);
        prepared.set_request_timeout(Some(timeout));
        Ok(prepared)
    }
}

fn left(deadline: Instant) -> std::result::Result<Duration, Box<Failure>> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(Box::new(Failure::Refused(Error::Timeout(
            "the request's time (call_timeout) ran out while retrying".into(),
        ))));
    }
    Ok(left)
}

/// Writes `rows` in batches, as `mongoose_cassandra_worker` does.
async fn write(shared: &Shared, query: &str, rows: &[Params], opts: &Opts) -> Term {
    let deadline = Instant::now() + shared.deadline;
    let mut retry_left = opts.retry;
    let mut batch_size = opts.batch_size;
    let mut bound: Option<Vec<Bound>> = None;
    let mut done = 0;
    while done < rows.len() {
        let n = batch_size.min(rows.len() - done);
        let attempt = async {
            let timeout = left(deadline)?;
            let prepared = shared.prepare(query, opts, timeout).await?;
            if bound.is_none() {
                let encoded = rows
                    .iter()
                    .enumerate()
                    .map(|(i, row)| {
                        bind(&prepared, row)
                            .map_err(|e| Error::BadRequest(format!("row {}: {e}", i + 1)))
                    })
                    .collect::<Result<Vec<_>>>()
                    .map_err(Failure::Refused)?;
                bound = Some(encoded);
            }
            let mut batch = Batch::new(opts.batch_mode);
            batch.set_consistency(opts.consistency);
            batch.set_request_timeout(Some(timeout));
            for _ in 0..n {
                batch.append_statement(prepared.clone());
            }
            let values = bound.as_deref().unwrap_or_default();
            shared
                .session
                .get_session()
                .batch(&batch, &values[done..done + n])
                .await
                .map_err(|e| Box::new(Failure::Execution(e)))
        };
        match attempt.await {
            Ok(_) => done += n,
            Err(failure) => match (retry_left, failure.verdict()) {
                (0, _) | (_, Verdict::Abort) => return failure.answer(),
                (_, Verdict::RetryAfter(wait)) => {
                    log::warn!("cassandra: retrying a write ({retry_left} left) after {failure}");
                    tokio::time::sleep(wait).await;
                    retry_left -= 1;
                }
                (_, Verdict::Shrink) => {
                    // MongooseIM's max(1, round(BatchSize * 0.5)), and 1 on the last try.
                    batch_size = if retry_left == 1 {
                        1
                    } else {
                        batch_size.div_ceil(2)
                    };
                    log::warn!(
                        "cassandra: retrying a write ({retry_left} left) in batches of \
                         {batch_size} after {failure}"
                    );
                    retry_left -= 1;
                }
            },
        }
    }
    Term::atom("ok")
}

/// One page, retried as MongooseIM retries reads; `retry_left` is the
/// request's budget, shared by its pages.
async fn fetch_page(
    shared: &Shared,
    read: &Read<'_>,
    paging: &PagingState,
    retry_left: &mut u32,
) -> std::result::Result<(Vec<Term>, ControlFlow<(), PagingState>), Term> {
    let deadline = Instant::now() + shared.deadline;
    loop {
        let attempt = async {
            let timeout = left(deadline)?;
            let prepared = shared.prepare(read.query, read.opts, timeout).await?;
            let values = bind(&prepared, read.params).map_err(Failure::Refused)?;
            let (result, next) = shared
                .session
                .get_session()
                .execute_single_page(&prepared, values, paging.clone())
                .await
                .map_err(Failure::Execution)?;
            Ok::<_, Box<Failure>>((rows(result)?, next.into_paging_control_flow()))
        };
        match attempt.await {
            Ok(page) => return Ok(page),
            Err(failure) => match (*retry_left, failure.verdict()) {
                (0, _) | (_, Verdict::Abort) => return Err(failure.answer()),
                (_, verdict) => {
                    log::warn!("cassandra: retrying a read ({retry_left} left) after {failure}");
                    if let Verdict::RetryAfter(wait) = verdict {
                        tokio::time::sleep(wait).await;
                    }
                    *retry_left -= 1;
                }
            },
        }
    }
}

/// What a read asks for.
struct Read<'a> {
    query: &'a str,
    params: &'a Params,
    opts: &'a Opts,
}

/// Reads every page: `{ok, Rows}`.
async fn read(shared: &Shared, read: Read<'_>) -> Term {
    let mut retry_left = read.opts.retry;
    let mut paging = PagingState::start();
    let mut all = Vec::new();
    loop {
        let (page, next) = match fetch_page(shared, &read, &paging, &mut retry_left).await {
            Ok(page) => page,
            Err(answer) => return answer,
        };
        all.extend(page);
        match next {
            ControlFlow::Break(()) => break,
            ControlFlow::Continue(state) => paging = state,
        }
    }
    Term::ok(Term::List(all))
}

/// One page from `paging` (the previous answer's state, `None` for the
/// first): `{ok, Rows, NextState | undefined}`.
async fn read_page(shared: &Shared, read: Read<'_>, paging: Option<&[u8]>) -> Term {
    let paging = paging.map_or_else(PagingState::start, PagingState::new_from_raw_bytes);
    let mut retry_left = read.opts.retry;
    match fetch_page(shared, &read, &paging, &mut retry_left).await {
        Ok((page, next)) => {
            let next = match next {
                ControlFlow::Continue(state) => state
                    .as_bytes_slice()
                    .map_or_else(|| Term::atom("undefined"), |b| Term::bin(b.to_vec())),
                ControlFlow::Break(()) => Term::atom("undefined"),
            };
            Term::tuple(vec![Term::atom("ok"), Term::List(page), next])
        }
        Err(answer) => answer,
    }
}

/// A page's rows as maps from column names (atoms, as cqerl's) to values.
fn rows(
    result: scylla::response::query_result::QueryResult,
) -> std::result::Result<Vec<Term>, Box<Failure>> {
    let internal = |e: &dyn std::fmt::Display| {
        Box::new(Failure::Refused(Error::Server(format!(
            "the server's rows cannot be read: {e}"
        ))))
    };
    let rows = match result.into_rows_result() {
        Ok(rows) => rows,
        // A statement that returns no rows (a write run through cql_read).
        Err(scylla::errors::IntoRowsResultError::ResultNotRows(_)) => return Ok(vec![]),
        Err(e) => return Err(internal(&e)),
    };
    let names: Vec<Term> = rows
        .column_specs()
        .iter()
        .map(|spec| Term::atom(spec.name()))
        .collect();
    let typed = rows.rows::<Row>().map_err(|e| internal(&e))?;
    typed
        .map(|row| {
            let row = row.map_err(|e| internal(&e))?;
            Ok(Term::Map(
                names
                    .iter()
                    .cloned()
                    .zip(row.columns.into_iter().map(values::decode))
                    .collect(),
            ))
        })
        .collect()
}
