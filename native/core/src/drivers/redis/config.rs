//! The `connection` section of a `redis` pool: one server (`mode =
//! "single"`, eredis's options), a Redis Cluster reached through seed nodes,
//! or a master found through Redis Sentinel.

use std::sync::Arc;

use rustls::ClientConfig;

use crate::config::{Node, Secret};
use crate::error::{Error, Result};
use crate::options::{find, Field, Opt};
use crate::tls::{read_tls, TLS_SECTION};

/// One `servers` entry: a seed node of a cluster, or a sentinel.
#[derive(Debug, Clone, PartialEq)]
pub struct Server {
    pub host: String,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    Single {
        host: String,
        port: u16,
    },
    Cluster {
        seeds: Vec<Server>,
    },
    Sentinel {
        sentinels: Vec<Server>,
        master_name: String,
    },
}

#[derive(Debug, Clone)]
pub struct RedisConfig {
    pub mode: Mode,
    pub database: i64,
    pub password: Option<Secret>,
    /// Set when the `tls` section is: the connection is then TLS only.
    pub tls: Option<Arc<ClientConfig>>,
    /// Cluster and sentinel: read-only commands go to replicas.
    pub read_from_replicas: bool,
}

/// Sentinels listen on 26379 unless told otherwise (Redis's documentation).
const SENTINEL_PORT: i64 = 26379;
const REDIS_PORT: i64 = 6379;

const MODE: Opt = Opt::one_of("mode", &["single", "cluster", "sentinel"]);
const HOST: Opt = Opt::text("host");
const PORT: Opt = Opt::int("port", 1, 65534);
/// A seed node or a sentinel (or, in legacy tuples, `{Host, Port}`).
const SERVER_PORT: Opt = Opt::int("port", 1, 65535);
const SERVER: [Opt; 2] = [Opt::text("host"), SERVER_PORT];
const SERVERS: Opt = Opt::sections("servers", &SERVER);
const MASTER_NAME: Opt = Opt::text("master_name");
const READ_FROM_REPLICAS: Opt = Opt::bool("read_from_replicas");
const DATABASE: Opt = Opt::int("database", 0, i32::MAX as i64);
const PASSWORD: Opt = Opt::secret("password");

impl RedisConfig {
    pub const OPTIONS: [Opt; 9] = [
        MODE,
        HOST,
        PORT,
        SERVERS,
        MASTER_NAME,
        READ_FROM_REPLICAS,
        DATABASE,
        PASSWORD,
        TLS_SECTION,
    ];

    pub fn read(conn: &Node) -> Result<RedisConfig> {
        conn.only(&Self::OPTIONS)?;
        let mode = conn.opt(&MODE).one_of()?.unwrap_or_else(|| "single".into());
        // Options of one mode set in another are refused, so that a config
        // that means a cluster never silently talks to one server.
        let only_in = |key: &str, modes: &str| -> Result<()> {
            match conn.at(key) {
                n if n.is_set() => Err(Error::Config(format!(
                    "{}: only used with mode = {modes} (mode is \"{mode}\")",
                    n.path()
                ))),
                _ => Ok(()),
            }
        };
        let mode = match mode.as_str() {
            "cluster" => {
                only_in("host", "\"single\"; list the seed nodes in servers")?;
                only_in("port", "\"single\"; list the seed nodes in servers")?;
                only_in("master_name", "\"sentinel\"")?;
                Mode::Cluster {
                    seeds: servers(&conn.at(SERVERS.name), &SERVER, REDIS_PORT)?,
                }
            }
            "sentinel" => {
                only_in("host", "\"single\"; list the sentinels in servers")?;
                only_in("port", "\"single\"; list the sentinels in servers")?;
                let name = conn.at(MASTER_NAME.name);
                let master_name = name.required_string()?;
                if master_name.is_empty() {
                    return Err(name.invalid("the name the sentinels monitor the master by"));
                }
                Mode::Sentinel {
                    sentinels: servers(&conn.at(SERVERS.name), &SERVER, SENTINEL_PORT)?,
                    master_name,
                }
            }
            _ => {
                only_in("servers", "\"cluster\" or \"sentinel\"")?;
                only_in("master_name", "\"sentinel\"")?;
                only_in("read_from_replicas", "\"cluster\" or \"sentinel\"")?;
                Mode::Single {
                    host: conn.at(HOST.name).string_or("127.0.0.1")?,
                    port: conn.opt(&PORT).int_or(REDIS_PORT)? as u16,
                }
            }
        };
        let database = conn.opt(&DATABASE);
        let tls = conn.at(TLS_SECTION.name);
        if !matches!(mode, Mode::Single { .. }) && tls.is_set() {
            // The redis crate opens cluster and sentinel connections itself,
            // with its own TLS; TLS here comes only from the shared module.
            return Err(Error::Config(format!(
                "{}: TLS is supported with mode = \"single\" only, for now",
                tls.path()
            )));
        }
        let password = conn
            .at(PASSWORD.name)
            .secret()?
            .filter(|p| !p.expose().is_empty());
        let config = RedisConfig {
            database: database.int_or(0)?,
            password,
            tls: match tls {
                tls if tls.is_set() => Some(Arc::new(read_tls(&tls)?)),
                _ => None,
            },
            read_from_replicas: conn.at(READ_FROM_REPLICAS.name).bool_or(false)?,
            mode,
        };
        if matches!(config.mode, Mode::Cluster { .. }) && config.database != 0 {
            return Err(database.invalid("0: a Redis Cluster has database 0 only"));
        }
        Ok(config)
    }
}

/// `servers`: a non-empty list of tables of `entry`'s options (`host`, or
/// another name of it that `entry` gives, and `port`), or, in the legacy
/// tuples, `{Host, Port}`.
pub(crate) fn servers(
    node: &Node,
    entry: &'static [Opt],
    default_port: i64,
) -> Result<Vec<Server>> {
    let (Some(host), Some(port)) = (find(entry, "host"), find(entry, "port")) else {
        return Err(Error::Internal(format!(
            "{}: the entry's options declare no host and port",
            node.path()
        )));
    };
    let host_alias = entry.iter().find(|o| o.alias == Some(host.name));
    let expected = "a non-empty list of {host, port} entries";
    let items = node.list()?.ok_or_else(|| node.missing(expected))?;
    if items.is_empty() {
        return Err(node.invalid(expected));
    }
    items
        .iter()
        .map(|item| match item.term() {
            Some(crate::term::Term::Tuple(t)) if t.len() == 2 => {
                let name = item.beside(format!("{}.host", item.path()), &t[0]);
                let port_node = item.beside(format!("{}.port", item.path()), &t[1]);
                server(&name, Field::of(port_node, port), default_port)
            }
            _ => {
                item.only(entry)?;
                let name = match host_alias {
                    Some(alias) => item.either(host, alias)?,
                    None => item.opt(host),
                };
                server(&name, item.opt(port), default_port)
            }
        })
        .collect()
}

fn server(host: &Node, port: Field, default_port: i64) -> Result<Server> {
    let name = host.required_string()?;
    if name.is_empty() {
        return Err(host.invalid("a host name or address"));
    }
    Ok(Server {
        host: name,
        port: port.int_or(default_port)? as u16,
    })
}
