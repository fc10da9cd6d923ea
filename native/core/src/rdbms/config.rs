//! The connection options of an `rdbms` pool (`outgoing_pools.rdbms.TAG.connection`).
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

use std::time::Duration;

use crate::config::{Node, Secret};
use crate::error::{Error, Result};
use crate::term::Term;
use crate::tls::read_tls;

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

/// The validated connection options of an `rdbms` pool (the password prints
/// as `<secret>`).
#[derive(Debug, Clone)]
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
    // Everything else is seed 002's TLS section, checked by the reader every
    // driver uses. sqlx takes no rustls configuration, only the settings
    // below, so the one read_tls builds serves as that check alone.
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
