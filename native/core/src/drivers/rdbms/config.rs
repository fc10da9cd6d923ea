//! The connection options of an `rdbms` pool (`outgoing_pools.rdbms.TAG.connection`).
//!
//! | key | form | default |
//! |---|---|---|
//! | `driver` | `"pgsql"`, `"mysql"` or `"odbc"` | required |
//! | `settings` | string: the ODBC connection string (`odbc` only, and then the only connection setting) | required for `odbc` |
//! | `host`, `database`, `username` | string | required (not `odbc`) |
//! | `password` | string | none |
//! | `port` | 1..65535 | 5432 / 3306 |
//! | `keepalive_interval` | seconds | none: `SELECT 1` on idle connections at that interval |
//! | `query_timeout` | milliseconds | `call_timeout` (the smaller of the two is used) |
//! | `max_start_interval` | seconds | accepted, no effect (the engine's backoff applies) |
//! | `tls` | `required` (pgsql only), `verify_peer`, `cacertfile`, `certfile`, `keyfile`, and the other options of [`read_tls`] (validated; the four above are applied) | no TLS |
//!
//! The legacy form of seed 000, `{server, {Type, Host, [Port,] DB, User, Pass[, SSL]}}`,
//! is read too, each element checked as strictly as its option (a port that
//! is not an integer is refused, not taken for the database). `SSL` is
//! `[{ssl, required | true | false}, {ssl_opts, Opts}]`, or for mysql `Opts`
//! itself, with `Opts` among `verify` (`verify_peer`, `verify_none`),
//! `cacertfile`, `certfile`, `keyfile` and `server_name_indication`
//! (accepted; the certificate is checked against `Host`).
//!
//! For ODBC the legacy form is `{server, "DSN=..."}` or `{server, {odbc, "DSN=..."}}`.

use std::time::Duration;

use crate::config::{Node, Secret};
use crate::error::{Error, Result};
use crate::options::{Field, Opt};
use crate::term::Term;
use crate::tls::read_tls;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Pgsql,
    Mysql,
    /// Through an ODBC driver; the server behind it is told at connect time.
    Odbc,
}

impl Engine {
    pub fn name(self) -> &'static str {
        match self {
            Engine::Pgsql => "pgsql",
            Engine::Mysql => "mysql",
            Engine::Odbc => "odbc",
        }
    }

    /// The engine of the driver named at `node`.
    fn named(name: &str, node: &Node) -> Result<Engine> {
        match name {
            "pgsql" => Ok(Engine::Pgsql),
            "mysql" => Ok(Engine::Mysql),
            "odbc" if cfg!(feature = "odbc") => Ok(Engine::Odbc),
            "odbc" => Err(Error::Config(format!(
                "{}: driver odbc: this build of mongoose_native has no ODBC support \
                 (built without the cargo feature odbc)",
                node.path()
            ))),
            other => Err(Error::Config(format!(
                "{}: driver {other} is not supported by mongoose_native yet",
                node.path()
            ))),
        }
    }

    fn default_port(self) -> u16 {
        match self {
            Engine::Pgsql => 5432,
            Engine::Mysql => 3306,
            Engine::Odbc => 0,
        }
    }
}

/// The TLS settings the drivers apply (the rest of the section is validated only).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RdbmsTls {
    pub required: bool,
    pub verify_peer: bool,
    pub cacertfile: Option<String>,
    pub certfile: Option<String>,
    pub keyfile: Option<String>,
}

impl RdbmsTls {
    /// The rustls configuration of these settings (pgsql; read_tls checked
    /// the files when the section was read).
    pub(super) fn rustls(&self) -> Result<rustls::ClientConfig> {
        let mut section = vec![(Term::atom("verify_peer"), Term::from(self.verify_peer))];
        let files = [
            ("cacertfile", &self.cacertfile),
            ("certfile", &self.certfile),
            ("keyfile", &self.keyfile),
        ];
        for (key, file) in files {
            if let Some(f) = file {
                section.push((Term::atom(key), Term::from(f.as_str())));
            }
        }
        let section = Term::Map(section);
        let mut config = read_tls(&Node::new("connection.tls", &section))?;
        // PostgreSQL negotiates TLS after its own request, without ALPN.
        config.alpn_protocols.clear();
        Ok(config)
    }

    /// Sets the certificate files with an engine's setters for the CA, the
    /// client certificate and its key (in the certificate's file if unset).
    pub(super) fn set_files<O>(&self, options: O, setters: [fn(O, &str) -> O; 3]) -> O {
        let key = self.keyfile.as_ref().or(self.certfile.as_ref());
        [self.cacertfile.as_ref(), self.certfile.as_ref(), key]
            .into_iter()
            .zip(setters)
            .fold(options, |o, (file, set)| match file {
                Some(f) => set(o, f),
                None => o,
            })
    }
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
    /// The ODBC connection string (`Engine::Odbc` only; it may hold a password).
    pub settings: Option<Secret>,
}

const DRIVER: Opt = Opt::one_of("driver", &["pgsql", "mysql", "odbc", "cockroachdb"]);
const PORT: Opt = Opt::int("port", 1, 65535);
const KEEPALIVE_INTERVAL: Opt = Opt::int("keepalive_interval", 1, u32::MAX as i64);
const QUERY_TIMEOUT: Opt = Opt::int("query_timeout", 1, u32::MAX as i64);
const MAX_START_INTERVAL: Opt = Opt::int("max_start_interval", 1, u32::MAX as i64);
const SERVER: Opt = Opt::shaped(
    "server",
    "{Type, Host, [Port,] Database, User, Password[, SSL]} or an ODBC connection string",
);
const SETTINGS: Opt = Opt::secret("settings");
const REQUIRED: Opt = Opt::bool("required");
/// Seed 002's TLS section with `required` (pgsql only).
const TLS_OPTIONS: [Opt; 13] = with_required();
const TLS: Opt = Opt::section("tls", &TLS_OPTIONS);

const fn with_required() -> [Opt; 13] {
    let mut out = [REQUIRED; 13];
    let mut i = 0;
    while i < crate::tls::TLS_OPTIONS.len() {
        out[i + 1] = crate::tls::TLS_OPTIONS[i];
        i += 1;
    }
    out
}

impl RdbmsConfig {
    pub const OPTIONS: [Opt; 12] = [
        DRIVER,
        Opt::text("host"),
        PORT,
        Opt::text("database"),
        Opt::text("username"),
        Opt::secret("password"),
        KEEPALIVE_INTERVAL,
        QUERY_TIMEOUT,
        MAX_START_INTERVAL,
        TLS,
        SERVER,
        SETTINGS,
    ];
    /// What an `odbc` connection takes: the rest is in the connection string.
    const ODBC_OPTIONS: [Opt; 6] = [
        DRIVER,
        SETTINGS,
        KEEPALIVE_INTERVAL,
        QUERY_TIMEOUT,
        MAX_START_INTERVAL,
        SERVER,
    ];

    pub fn read(conn: &Node) -> Result<RdbmsConfig> {
        conn.only(&Self::OPTIONS)?;
        let keepalive_interval = conn
            .opt(&KEEPALIVE_INTERVAL)
            .int()?
            .map(|s| Duration::from_secs(s as u64));
        let query_timeout = conn
            .opt(&QUERY_TIMEOUT)
            .int()?
            .map(|ms| Duration::from_millis(ms as u64));
        conn.opt(&MAX_START_INTERVAL).int()?;
        let server = conn.at(SERVER.name);
        if server.is_set() {
            if conn.at("driver").is_set() {
                return Err(Error::Config(format!(
                    "{}: set either server (the legacy form) or driver, not both",
                    server.path()
                )));
            }
            return Ok(RdbmsConfig {
                keepalive_interval,
                query_timeout,
                ..read_legacy_server(&server)?
            });
        }
        let driver = conn.opt(&DRIVER);
        let engine = match driver.one_of()? {
            None => return Err(driver.missing("\"pgsql\", \"mysql\" or \"odbc\"")),
            Some(name) => Engine::named(&name, &driver)?,
        };
        if engine == Engine::Odbc {
            conn.only(&Self::ODBC_OPTIONS)?;
            return Ok(RdbmsConfig {
                keepalive_interval,
                query_timeout,
                ..odbc_config(&conn.at("settings"))?
            });
        }
        if conn.at("settings").is_set() {
            return Err(Error::Config(format!(
                "{}: only the odbc driver takes a connection string",
                conn.at("settings").path()
            )));
        }
        let tls = read_tls_section(&conn.at(TLS.name), engine)?;
        Ok(RdbmsConfig {
            engine,
            host: conn.at("host").required_string()?,
            port: conn.opt(&PORT).int_or(i64::from(engine.default_port()))? as u16,
            database: conn.at("database").required_string()?,
            username: conn.at("username").required_string()?,
            password: conn
                .at("password")
                .secret()?
                .filter(|p| !p.expose().is_empty()),
            keepalive_interval,
            query_timeout,
            tls,
            settings: None,
        })
    }
}

/// An `odbc` pool: its connection string, non-empty.
fn odbc_config(settings: &Node) -> Result<RdbmsConfig> {
    let expected = "an ODBC connection string of KEY=VALUE attributes such as \"DSN=mydb\"";
    // Attributes only: a URL (`pgsql://user:pass@host/db`) is refused here
    // rather than handed to the driver manager, whose error would echo it.
    let attributes = |text: &str| {
        let mut attrs = text.split(';').map(str::trim).filter(|a| !a.is_empty());
        let all = attrs.clone().all(|a| a.contains('=') && !a.contains("://"));
        all && attrs.next().is_some()
    };
    let secret = match settings.secret()? {
        None => return Err(settings.missing(expected)),
        Some(s) if !attributes(s.expose()) => return Err(settings.invalid(expected)),
        Some(s) => s,
    };
    Engine::named("odbc", settings)?;
    Ok(RdbmsConfig {
        engine: Engine::Odbc,
        host: String::new(),
        port: 0,
        database: String::new(),
        username: String::new(),
        password: None,
        keepalive_interval: None,
        query_timeout: None,
        tls: None,
        settings: Some(secret),
    })
}

impl RdbmsConfig {
    /// What the pool connects to, for messages: `host:port/database`, or the
    /// connection string without its password.
    pub fn target(&self) -> String {
        match &self.settings {
            Some(settings) => redact(settings.expose(), settings.expose()),
            None => format!("{}:{}/{}", self.host, self.port, self.database),
        }
    }
}

/// `text` with the password values of connection string `settings` (its
/// `PWD` and `Password` attributes) replaced by `<secret>`.
pub(super) fn redact(text: &str, settings: &str) -> String {
    settings
        .split(';')
        .filter_map(|attr| attr.split_once('='))
        .filter(|(key, _)| {
            let key = key.trim();
            key.eq_ignore_ascii_case("pwd") || key.eq_ignore_ascii_case("password")
        })
        .map(|(_, value)| value.trim().trim_start_matches('{').trim_end_matches('}'))
        .filter(|value| !value.is_empty())
        .fold(text.to_string(), |text, value| {
            text.replace(value, "<secret>")
        })
}

fn read_tls_section(tls: &Node, engine: Engine) -> Result<Option<RdbmsTls>> {
    let Some(term) = tls.term() else {
        return Ok(None);
    };
    let required = tls.at(REQUIRED.name).bool()?;
    if required.is_some() && engine == Engine::Mysql {
        return Err(Error::Config(format!(
            "{}: the required option is not supported for MySQL",
            tls.at(REQUIRED.name).path()
        )));
    }
    // Everything else is seed 002's TLS section, checked by the reader every
    // driver uses; the drivers apply the settings below (sqlx for mysql
    // takes no rustls configuration; pgsql's is built from them).
    tls.only(&TLS_OPTIONS)?;
    let rest = without_key(term, REQUIRED.name);
    let rest_node = tls.beside(tls.path().to_string(), &rest);
    read_tls(&rest_node)?;
    let verify_mode = rest_node.at("verify_mode").string()?;
    let verify_peer =
        rest_node.at("verify_peer").bool_or(false)? || verify_mode.as_deref() == Some("peer");
    Ok(Some(RdbmsTls {
        required: required.unwrap_or(false),
        verify_peer,
        ..tls_files(&rest_node)?
    }))
}

/// The certificate files of a TLS section, each checked to exist.
fn tls_files(tls: &Node) -> Result<RdbmsTls> {
    let file = |key: &str| -> Result<Option<String>> {
        let node = tls.at(key);
        match node.string()? {
            Some(f) if !std::path::Path::new(&f).is_file() => {
                Err(Error::Config(format!("{}: cannot read {f:?}", node.path())))
            }
            other => Ok(other),
        }
    };
    Ok(RdbmsTls {
        cacertfile: file("cacertfile")?,
        certfile: file("certfile")?,
        keyfile: file("keyfile")?,
        ..RdbmsTls::default()
    })
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

/// `{Type, Host, [Port,] DB, User, Pass[, SSL]}`, each element checked as
/// strictly as the option it stands for, and named by its position.
fn read_legacy_server(server: &Node) -> Result<RdbmsConfig> {
    const FORM: &str = "{pgsql | mysql, Host, [Port,] Database, User, Password[, SSL]}, \
                        an ODBC connection string, or {odbc, ConnectionString}";
    let items = match server.term() {
        Some(Term::Tuple(items)) => items,
        Some(_) => return odbc_config(server),
        None => return Err(server.invalid(FORM)),
    };
    if let [Term::Atom(odbc), settings] = items.as_slice() {
        if odbc == "odbc" {
            return odbc_config(&server.beside(
                format!("{}: element 2 (connection string)", server.path()),
                settings,
            ));
        }
    }
    let engine = match items.first().and_then(|t| t.as_atom()) {
        Some("odbc") | None => return Err(server.invalid(FORM)),
        Some(name) => Engine::named(name, server)?,
    };
    // Six elements hold a port and no SSL, unless the third is not an
    // integer and the sixth is an option list: then SSL and no port.
    let (host, port, [database, user, password], ssl) = match items.as_slice() {
        [_, host, db, user, pass] => (host, None, [db, user, pass], None),
        [_, host, port, db, user, pass]
            if matches!(port, Term::Int(_)) || !is_option_list(pass) =>
        {
            (host, Some(port), [db, user, pass], None)
        }
        [_, host, db, user, pass, ssl] => (host, None, [db, user, pass], Some(ssl)),
        [_, host, port, db, user, pass, ssl] => (host, Some(port), [db, user, pass], Some(ssl)),
        _ => {
            return Err(Error::Config(format!(
                "{}: expected {FORM}, got a tuple of {} elements",
                server.path(),
                items.len()
            )))
        }
    };
    let element = |n: usize, what: &str, term| {
        server.beside(format!("{}: element {n} ({what})", server.path()), term)
    };
    let shift = usize::from(port.is_some());
    let host = element(2, "host", host).required_string()?;
    let default_port = i64::from(engine.default_port());
    let port = match port {
        Some(p) => Field::of(element(3, "port", p), &PORT).int_or(default_port)?,
        None => default_port,
    };
    Ok(RdbmsConfig {
        engine,
        host,
        port: port as u16,
        database: element(3 + shift, "database", database).required_string()?,
        username: element(4 + shift, "user", user).required_string()?,
        password: element(5 + shift, "password", password)
            .secret()?
            .filter(|p| !p.expose().is_empty()),
        keepalive_interval: None,
        query_timeout: None,
        tls: match ssl {
            Some(ssl) => legacy_ssl(&element(6 + shift, "ssl", ssl), engine)?,
            None => None,
        },
        settings: None,
    })
}

/// A non-empty list of tuples: SSL options, never a password.
fn is_option_list(term: &Term) -> bool {
    matches!(term, Term::List(items)
        if !items.is_empty() && items.iter().all(|i| matches!(i, Term::Tuple(_))))
}

/// The SSL element: `[{ssl, false | true | required}, {ssl_opts, Opts}]`, or
/// for mysql, as seed 000 writes it, `Opts` itself (TLS on).
fn legacy_ssl(ssl: &Node, engine: Engine) -> Result<Option<RdbmsTls>> {
    ssl.list()?;
    let (mode, opts) =
        if engine == Engine::Pgsql || ssl.at("ssl").is_set() || ssl.at("ssl_opts").is_set() {
            ssl.only_keys(&["ssl", "ssl_opts"])?;
            let mode = ssl.at("ssl").one_of(&["false", "true", "required"])?;
            (mode, ssl.at("ssl_opts"))
        } else {
            (Some("true".to_string()), ssl.clone())
        };
    opts.only_keys(&crate::tls::SSL_CLIENT_OPTIONS)?;
    let verify = opts.at("verify").one_of(&["verify_peer", "verify_none"])?;
    // Accepted: the certificate's name is checked against Host either way.
    opts.at("server_name_indication").string()?;
    let files = tls_files(&opts)?;
    Ok(match mode.as_deref() {
        Some(mode @ ("true" | "required")) => Some(RdbmsTls {
            required: mode == "required",
            verify_peer: verify.as_deref() == Some("verify_peer"),
            ..files
        }),
        _ => None,
    })
}
