//! The `ldap` pool type: MongooseIM 6.3's `mongoose_ldap_worker` on ldap3.
//!
//! Each worker holds one connection, bound as the pool's identity
//! (`rootdn`/`password`, anonymous when both are empty), and carries one
//! request at a time, as MongooseIM's worker does. A `simple_bind` as
//! anyone else leaves the connection bound as them; the connection notes
//! it, and binds back as the pool's identity before it carries any other
//! request, and when a lease comes back (`reset`). So no caller ever
//! searches or writes with another caller's identity.

mod answer;
mod request;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use ldap3::exop::PasswordModify;
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, LdapError, SearchOptions, StdStream};
use rustls::ClientConfig;
use tokio_util::sync::CancellationToken;

use crate::config::{Node, Secret};
use crate::engine::pool::{Driver, Outcome};
use crate::error::{Error, Result};
use crate::options::Opt;
use crate::runtime;
use crate::term::Term;
use crate::tls::{read_tls, TLS_SECTION};

pub use request::LdapRequest;

/// How long one server gets to accept a connection, finish TLS and answer
/// the bind, before the next is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct LdapConfig {
    pub servers: Vec<String>,
    pub port: u16,
    pub root_dn: String,
    pub password: Option<Secret>,
    /// Set when `encrypt = "tls"` or a `tls` section is: LDAP over TLS
    /// (ldaps), as the seeds say; STARTTLS is not used.
    pub tls: Option<Arc<ClientConfig>>,
}

const PORT: Opt = Opt::int("port", 1, 65535);
const CONNECT_INTERVAL: Opt = Opt::int("connect_interval", 1, u32::MAX as i64);
const ENCRYPT: Opt = Opt::one_of("encrypt", &["none", "tls"]);

impl LdapConfig {
    pub const OPTIONS: [Opt; 9] = [
        Opt::shaped("servers", "a non-empty list of host names"),
        PORT,
        Opt::text("rootdn"),
        Opt::text("root_dn").alias_of("rootdn"),
        Opt::secret("password"),
        CONNECT_INTERVAL,
        ENCRYPT,
        TLS_SECTION,
        Opt::shaped("tls_options", "a list of ssl client options").alias_of("tls"),
    ];

    pub fn read(conn: &Node) -> Result<LdapConfig> {
        conn.only(&Self::OPTIONS)?;
        let servers_node = conn.at("servers");
        if matches!(servers_node.term(), Some(Term::List(l)) if !l.is_empty())
            && servers_node.string().is_ok()
        {
            // A charlist: one host where a list of them belongs.
            return Err(servers_node.invalid("a list of host names"));
        }
        let servers = match servers_node.list()? {
            None => vec!["localhost".to_string()],
            Some(items) if items.is_empty() => {
                return Err(servers_node.invalid("a non-empty list of host names"))
            }
            Some(items) => items
                .iter()
                .map(|s| match s.string()? {
                    Some(h) if !h.is_empty() => Ok(h),
                    _ => Err(s.invalid("a host name")),
                })
                .collect::<Result<_>>()?,
        };
        // Seed 002 spells it rootdn, MongooseIM 6.x root_dn.
        let root_dn = match (conn.at("rootdn").string()?, conn.at("root_dn").string()?) {
            (Some(_), Some(_)) => {
                return Err(Error::Config(format!(
                    "{}: set rootdn or root_dn, not both",
                    conn.path()
                )))
            }
            (a, b) => a.or(b).unwrap_or_default(),
        };
        let password = conn
            .at("password")
            .secret()?
            .filter(|p| !p.expose().is_empty());
        // MongooseIM retries every connect_interval; the engine's capped
        // backoff (at most 5 s) replaces it, so it is only checked.
        conn.opt(&CONNECT_INTERVAL).int()?;
        let encrypt = conn.opt(&ENCRYPT).one_of()?;
        // MongooseIM 6.x has no encrypt: its tls section turns TLS on.
        // Seed 000's tls_options is a list of ssl client options instead.
        let (tls, legacy) = (conn.at(TLS_SECTION.name), conn.at("tls_options"));
        if tls.is_set() && legacy.is_set() {
            return Err(Error::Config(format!(
                "{}: set tls or tls_options, not both",
                conn.path()
            )));
        }
        let section = [&tls, &legacy].into_iter().find(|n| n.is_set());
        let tls = match (encrypt.as_deref(), section) {
            (Some("none"), Some(section)) => {
                return Err(Error::Config(format!(
                    "{}: TLS options are set but encrypt is \"none\"; set encrypt = \"tls\" \
                     or remove them",
                    section.path()
                )))
            }
            (Some("none"), None) | (None, None) => None,
            (_, _) => {
                let mut config = if legacy.is_set() {
                    let translated = crate::tls::ssl_client_options(&legacy)?;
                    read_tls(&legacy.beside(legacy.path(), &translated))?
                } else {
                    read_tls(&tls)?
                };
                // The shared reader offers HTTP's ALPN names; LDAP has none.
                config.alpn_protocols.clear();
                Some(Arc::new(config))
            }
        };
        let default_port = if tls.is_some() { 636 } else { 389 };
        Ok(LdapConfig {
            servers,
            port: conn.opt(&PORT).int_or(default_port)? as u16,
            root_dn,
            password,
            tls,
        })
    }
}

pub struct LdapDriver {
    config: Arc<LdapConfig>,
    /// How long one operation may take: a little past `call_timeout`, so the
    /// caller's own timeout (an exit, as MongooseIM's) always comes first
    /// and this one only frees the connection of a server that stalled.
    op_timeout: Duration,
}

const CLIENT_MARGIN: Duration = Duration::from_millis(500);

impl LdapDriver {
    pub fn new(config: LdapConfig, call_timeout_ms: u64) -> LdapDriver {
        LdapDriver {
            config: Arc::new(config),
            op_timeout: Duration::from_millis(call_timeout_ms) + CLIENT_MARGIN,
        }
    }
}

/// One connection: ldap3's handle, whether it is bound as someone other
/// than the pool's identity, and the signal that its I/O task has ended.
#[derive(Clone)]
pub struct LdapConn {
    ldap: Ldap,
    foreign: Arc<AtomicBool>,
    closed: CancellationToken,
}

fn url(config: &LdapConfig, host: &str) -> String {
    let scheme = if config.tls.is_some() {
        "ldaps"
    } else {
        "ldap"
    };
    let port = config.port;
    if host.contains(':') {
        format!("{scheme}://[{host}]:{port}")
    } else {
        format!("{scheme}://{host}:{port}")
    }
}

/// Opens a connection to `host` and binds as the pool's identity.
async fn open(config: &LdapConfig, host: &str) -> std::result::Result<LdapConn, String> {
    let tcp = crate::drivers::tcp::connect(host, config.port).await?;
    let std = tcp.into_std().map_err(|e| e.to_string())?;
    let mut settings = LdapConnSettings::new().set_std_stream(StdStream::Tcp(std));
    if let Some(tls) = &config.tls {
        settings = settings.set_config(tls.clone());
    }
    let (io, mut ldap) = LdapConnAsync::with_settings(settings, &url(config, host))
        .await
        .map_err(|e| match e {
            // The TCP stream is open already: an I/O error here is TLS's.
            LdapError::Io { source } if config.tls.is_some() => format!("TLS handshake: {source}"),
            other => other.to_string(),
        })?;
    let closed = CancellationToken::new();
    let on_end = closed.clone();
    runtime::handle().spawn(async move {
        if let Err(e) = io.drive().await {
            log::info!("ldap connection ended: {e}");
        }
        on_end.cancel();
    });
    let bound = ldap.simple_bind(&config.root_dn, password(config)).await;
    match bound {
        Ok(r) if r.rc == 0 => Ok(LdapConn {
            ldap,
            foreign: Arc::new(AtomicBool::new(false)),
            closed,
        }),
        Ok(r) => {
            let _ = ldap.unbind().await;
            let name = answer::result_name(r.rc).describe();
            Err(if r.rc == 49 {
                format!(
                    "the server refused the bind as connection.rootdn with connection.password \
                     ({name})"
                )
            } else {
                format!("the bind as connection.rootdn failed ({name}: {})", r.text)
            })
        }
        Err(e) => Err(format!("no answer to the bind: {e}")),
    }
}

fn password(config: &LdapConfig) -> &str {
    config.password.as_ref().map_or("", |p| p.expose())
}

impl Driver for LdapDriver {
    type Conn = LdapConn;
    type Request = LdapRequest;

    fn parse(&self, request: Term) -> Result<LdapRequest> {
        LdapRequest::parse(request)
    }

    /// Tries the servers in order until one answers, as eldap:open does.
    fn connect(&self, _worker: usize) -> BoxFuture<'static, Result<LdapConn>> {
        let config = self.config.clone();
        Box::pin(async move {
            let mut failures = Vec::new();
            for host in &config.servers {
                let target = url(&config, host);
                match tokio::time::timeout(CONNECT_TIMEOUT, open(&config, host)).await {
                    Ok(Ok(conn)) => return Ok(conn),
                    Ok(Err(e)) => failures.push(format!("{target}: {e}")),
                    Err(_) => failures.push(format!(
                        "{target}: no connection and bind within {CONNECT_TIMEOUT:?}"
                    )),
                }
            }
            Err(Error::Connect(format!("ldap: {}", failures.join("; "))))
        })
    }

    fn execute(&self, conn: LdapConn, request: LdapRequest) -> BoxFuture<'static, Outcome> {
        let config = self.config.clone();
        let timeout = self.op_timeout;
        Box::pin(async move {
            let mut ldap = conn.ldap.clone();
            if !matches!(request, LdapRequest::Bind { .. }) {
                if let Err(e) = rebind(&config, &conn, timeout).await {
                    return Outcome::failed(e);
                }
            }
            run(&config, &conn, &mut ldap, request, timeout)
                .await
                .into()
        })
    }

    fn reset(&self, conn: LdapConn) -> BoxFuture<'static, Result<()>> {
        let config = self.config.clone();
        let timeout = self.op_timeout;
        Box::pin(async move { rebind(&config, &conn, timeout).await })
    }

    fn closed(&self, conn: &LdapConn) -> BoxFuture<'static, ()> {
        Box::pin(conn.closed.clone().cancelled_owned())
    }
}

/// Binds back as the pool's identity if a caller's bind changed it; a
/// refusal breaks the connection, so the engine opens a fresh one.
async fn rebind(config: &LdapConfig, conn: &LdapConn, timeout: Duration) -> Result<()> {
    if !conn.foreign.load(Ordering::Acquire) {
        return Ok(());
    }
    let mut ldap = conn.ldap.clone();
    let r = ldap
        .with_timeout(timeout)
        .simple_bind(&config.root_dn, password(config))
        .await
        .map_err(lost)?;
    if r.rc != 0 {
        return Err(Error::ConnectionLost(format!(
            "ldap: binding back as connection.rootdn failed ({})",
            answer::result_name(r.rc).describe()
        )));
    }
    conn.foreign.store(false, Ordering::Release);
    Ok(())
}

/// A failure of the connection itself (closed, timed out): the caller gets
/// it and the engine replaces the connection.
fn lost(e: LdapError) -> Error {
    match e {
        LdapError::Timeout { .. } => {
            Error::Timeout("ldap: the server did not answer in time".into())
        }
        other => Error::ConnectionLost(format!("ldap: {other}")),
    }
}

async fn run(
    config: &LdapConfig,
    conn: &LdapConn,
    ldap: &mut Ldap,
    request: LdapRequest,
    timeout: Duration,
) -> Result<Term> {
    match request {
        LdapRequest::Bind { dn, password: pw } => {
            // Whatever the answer, the connection is no longer bound as the
            // pool (a failed bind leaves it anonymous), unless this is the
            // pool's own identity and the server took it.
            conn.foreign.store(true, Ordering::Release);
            let r = ldap
                .with_timeout(timeout)
                .simple_bind(&dn, &pw)
                .await
                .map_err(lost)?;
            if r.rc == 0 && dn == config.root_dn && pw == password(config) {
                conn.foreign.store(false, Ordering::Release);
            }
            Ok(answer::plain(&r))
        }
        LdapRequest::Search(s) => {
            let opts = SearchOptions::new()
                .deref(s.deref)
                .sizelimit(s.size_limit)
                .timelimit(s.time_limit)
                .typesonly(s.types_only);
            let found = ldap
                .with_search_options(opts)
                .with_timeout(timeout)
                .search(&s.base, s.scope, &s.filter, &s.attributes)
                .await
                .map_err(lost)?;
            answer::search(found.0, &found.1)
        }
        LdapRequest::Add { dn, attrs } => {
            let r = ldap.with_timeout(timeout).add(&dn, attrs).await;
            Ok(answer::plain(&r.map_err(lost)?))
        }
        LdapRequest::Delete { dn } => {
            let r = ldap.with_timeout(timeout).delete(&dn).await;
            Ok(answer::plain(&r.map_err(lost)?))
        }
        LdapRequest::Modify { dn, mods } => {
            let r = ldap.with_timeout(timeout).modify(&dn, mods).await;
            Ok(answer::plain(&r.map_err(lost)?))
        }
        LdapRequest::ModifyDn {
            dn,
            new_rdn,
            delete_old,
            new_superior,
        } => {
            let r = ldap
                .with_timeout(timeout)
                .modifydn(&dn, &new_rdn, delete_old, new_superior.as_deref())
                .await;
            Ok(answer::plain(&r.map_err(lost)?))
        }
        LdapRequest::ModifyPassword { dn, new, old } => {
            let exop = PasswordModify {
                user_id: dn.as_deref(),
                old_pass: old.as_deref(),
                new_pass: new.as_deref(),
            };
            let r = ldap
                .with_timeout(timeout)
                .extended(exop)
                .await
                .map_err(lost)?;
            answer::password(&r.1, r.0.val.as_deref())
        }
    }
}

#[cfg(test)]
mod tests;
