//! Every mod_global_distrib option of seed 004, with its default and its
//! validation, read from the map MongooseIM's config parser produces (or the
//! same map written by hand). Errors name the TOML path.

use crate::config::Node;
use crate::error::{Error, Result};
use crate::gd::GdError;
use crate::options::{Field, Opt};
use crate::term::Term;
use crate::tls::MUTUAL_TLS_OPTIONS;

/// Where the options live in mongooseim.toml.
pub const ROOT: &str = "modules.mod_global_distrib";

#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

impl Endpoint {
    /// The form stored in Redis: `HOST#PORT`.
    pub fn to_redis(&self) -> Vec<u8> {
        format!("{}#{}", self.host, self.port).into_bytes()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct TlsOptions {
    pub certfile: String,
    pub cacertfile: String,
    pub ciphers: String,
    pub dhfile: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Connections {
    pub endpoints: Vec<Endpoint>,
    /// What other datacenters are told to connect to: `advertised_endpoints`,
    /// else `endpoints` as written (not resolved).
    pub advertised_endpoints: Vec<Endpoint>,
    pub connections_per_endpoint: u64,
    pub endpoint_refresh_interval: u64,
    pub endpoint_refresh_interval_when_empty: u64,
    pub disabled_gc_interval: u64,
    pub tls: Option<TlsOptions>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RedisOptions {
    pub pool: String,
    pub expire_after: u64,
    pub refresh_after: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CacheOptions {
    pub cache_missed: bool,
    pub domain_lifetime_seconds: u64,
    pub jid_lifetime_seconds: u64,
    pub max_jids: u64,
}

impl Default for CacheOptions {
    fn default() -> CacheOptions {
        CacheOptions {
            cache_missed: true,
            domain_lifetime_seconds: 600,
            jid_lifetime_seconds: 5,
            max_jids: 10_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct BounceOptions {
    pub enabled: bool,
    pub resend_after_ms: u64,
    pub max_retries: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GdConfig {
    pub global_host: String,
    pub local_host: String,
    pub message_ttl: u64,
    pub hosts_refresh_interval: u64,
    pub connections: Connections,
    pub redis: RedisOptions,
    pub cache: CacheOptions,
    pub bounce: BounceOptions,
}

const NON_NEG: i64 = 0;
const POS: i64 = 1;
const MAX: i64 = i64::MAX;

const MESSAGE_TTL: Opt = Opt::int("message_ttl", NON_NEG, MAX);
const HOSTS_REFRESH_INTERVAL: Opt = Opt::int("hosts_refresh_interval", NON_NEG, MAX);
/// A listener or advertised address (or the `{Host, Port}` tuples
/// MongooseIM's config processing turns them into).
const ENDPOINT_PORT: Opt = Opt::int("port", 1, 65535);
const ENDPOINT: [Opt; 2] = [Opt::text("host"), ENDPOINT_PORT];
/// Connections to one endpoint: 0 counts as 1, as in MongooseIM; the
/// transport takes 1 to this many.
pub const MAX_CONNECTIONS_PER_ENDPOINT: i64 = 1000;
const CONNECTIONS_PER_ENDPOINT: Opt =
    Opt::int("connections_per_endpoint", 0, MAX_CONNECTIONS_PER_ENDPOINT);
const ENDPOINT_REFRESH_INTERVAL: Opt = Opt::int("endpoint_refresh_interval", POS, MAX);
const ENDPOINT_REFRESH_INTERVAL_WHEN_EMPTY: Opt =
    Opt::int("endpoint_refresh_interval_when_empty", POS, MAX);
const DISABLED_GC_INTERVAL: Opt = Opt::int("disabled_gc_interval", POS, MAX);
const CONNECTIONS: [Opt; 8] = [
    Opt::sections("endpoints", &ENDPOINT),
    Opt::sections("advertised_endpoints", &ENDPOINT),
    CONNECTIONS_PER_ENDPOINT,
    ENDPOINT_REFRESH_INTERVAL,
    ENDPOINT_REFRESH_INTERVAL_WHEN_EMPTY,
    DISABLED_GC_INTERVAL,
    Opt::section("tls", &MUTUAL_TLS_OPTIONS),
    // Added by MongooseIM's own processing of `endpoints`; ignored here.
    Opt::ignored("resolved_endpoints"),
];
const EXPIRE_AFTER: Opt = Opt::int("expire_after", POS, MAX);
const REFRESH_AFTER: Opt = Opt::int("refresh_after", NON_NEG, MAX);
const REDIS: [Opt; 3] = [Opt::text("pool"), EXPIRE_AFTER, REFRESH_AFTER];
const DOMAIN_LIFETIME_SECONDS: Opt = Opt::int("domain_lifetime_seconds", NON_NEG, MAX);
const JID_LIFETIME_SECONDS: Opt = Opt::int("jid_lifetime_seconds", NON_NEG, MAX);
const MAX_JIDS: Opt = Opt::int("max_jids", NON_NEG, MAX);
const CACHE: [Opt; 4] = [
    Opt::bool("cache_missed"),
    DOMAIN_LIFETIME_SECONDS,
    JID_LIFETIME_SECONDS,
    MAX_JIDS,
];
const RESEND_AFTER_MS: Opt = Opt::int("resend_after_ms", NON_NEG, MAX);
const MAX_RETRIES: Opt = Opt::int("max_retries", NON_NEG, MAX);
const BOUNCE: [Opt; 3] = [Opt::bool("enabled"), RESEND_AFTER_MS, MAX_RETRIES];

/// Seed 004's options, at [`ROOT`].
pub const OPTIONS: [Opt; 8] = [
    Opt::text("global_host"),
    Opt::text("local_host"),
    MESSAGE_TTL,
    HOSTS_REFRESH_INTERVAL,
    Opt::section("connections", &CONNECTIONS),
    Opt::section("redis", &REDIS),
    Opt::section("cache", &CACHE),
    Opt::section("bounce", &BOUNCE),
];

fn int(section: &Node, opt: &'static Opt, default: i64) -> Result<u64> {
    Ok(section.opt(opt).int_or(default)? as u64)
}

fn domain(node: &Node) -> Result<String> {
    let s = node.required_string()?;
    if s.is_empty() || s.contains(['@', '/', ' ']) {
        return Err(node.invalid("a domain name"));
    }
    Ok(s)
}

impl GdConfig {
    /// Validates `opts` and checks that both hosts are among `served`
    /// (MongooseIM's `general.hosts`).
    pub fn read(opts: &Term, served: &[String]) -> std::result::Result<GdConfig, GdError> {
        let config = Self::read_options(&Node::new(ROOT, opts))?;
        for (name, host) in [
            ("global_host", &config.global_host),
            ("local_host", &config.local_host),
        ] {
            if !served.iter().any(|h| h == host) {
                return Err(GdError::CheckHost(format!(
                    "{ROOT}.{name}: {host} is not a member of the host list ({})",
                    served.join(", ")
                )));
            }
        }
        Ok(config)
    }

    pub fn read_options(root: &Node) -> Result<GdConfig> {
        root.only(&OPTIONS)?;
        let global_host = domain(&root.at("global_host"))?;
        let local_host = domain(&root.at("local_host"))?;
        let message_ttl = int(root, &MESSAGE_TTL, 4)?;
        let hosts_refresh_interval = int(root, &HOSTS_REFRESH_INTERVAL, 3000)?;

        let c = root.at("connections");
        c.only(&CONNECTIONS)?;
        let endpoints = match read_endpoints(&c.at("endpoints"))? {
            Some(e) => e,
            None => vec![Endpoint {
                host: local_host.clone(),
                port: 5555,
            }],
        };
        let advertised_endpoints =
            read_endpoints(&c.at("advertised_endpoints"))?.unwrap_or_else(|| endpoints.clone());
        let tls_node = c.at("tls");
        let tls = if tls_node.is_set() {
            tls_node.only(&MUTUAL_TLS_OPTIONS)?;
            Some(TlsOptions {
                certfile: tls_node.at("certfile").required_string()?,
                cacertfile: tls_node.at("cacertfile").required_string()?,
                ciphers: tls_node.at("ciphers").string_or("TLSv1.2:TLSv1.3")?,
                dhfile: tls_node.at("dhfile").string()?,
            })
        } else {
            None
        };
        let connections = Connections {
            endpoints,
            advertised_endpoints,
            connections_per_endpoint: int(&c, &CONNECTIONS_PER_ENDPOINT, 1)?.max(1),
            endpoint_refresh_interval: int(&c, &ENDPOINT_REFRESH_INTERVAL, 60)?,
            endpoint_refresh_interval_when_empty: int(
                &c,
                &ENDPOINT_REFRESH_INTERVAL_WHEN_EMPTY,
                3,
            )?,
            disabled_gc_interval: int(&c, &DISABLED_GC_INTERVAL, 60)?,
            tls,
        };

        let r = root.at("redis");
        r.only(&REDIS)?;
        let pool = r.at("pool").string_or("global_distrib")?;
        if pool.is_empty() {
            return Err(r.at("pool").invalid("a pool name"));
        }
        let redis = RedisOptions {
            pool,
            expire_after: int(&r, &EXPIRE_AFTER, 120)?,
            refresh_after: int(&r, &REFRESH_AFTER, 60)?,
        };

        let k = root.at("cache");
        k.only(&CACHE)?;
        let cache = CacheOptions {
            cache_missed: k.at("cache_missed").bool_or(true)?,
            domain_lifetime_seconds: int(&k, &DOMAIN_LIFETIME_SECONDS, 600)?,
            jid_lifetime_seconds: int(&k, &JID_LIFETIME_SECONDS, 5)?,
            max_jids: int(&k, &MAX_JIDS, 10_000)?,
        };

        let b = root.at("bounce");
        b.only(&BOUNCE)?;
        let bounce = BounceOptions {
            enabled: b.at("enabled").bool_or(true)?,
            resend_after_ms: int(&b, &RESEND_AFTER_MS, 200)?,
            max_retries: int(&b, &MAX_RETRIES, 4)?,
        };

        Ok(GdConfig {
            global_host,
            local_host,
            message_ttl,
            hosts_refresh_interval,
            connections,
            redis,
            cache,
            bounce,
        })
    }
}

impl GdConfig {
    /// The validated options with every default, for the Erlang side
    /// (`mod_global_distrib_utils:opts/0`): the connections section's
    /// options at the top, as MongooseIM's submodules read them.
    pub fn to_term(&self) -> Term {
        let c = &self.connections;
        let int = |n: u64| Term::Int(n as i64);
        let endpoints = |eps: &[Endpoint]| {
            let eps = eps
                .iter()
                .map(|e| Term::tuple(vec![Term::charlist(&e.host), Term::Int(i64::from(e.port))]));
            Term::List(eps.collect())
        };
        let tls = match &c.tls {
            None => Term::atom("undefined"),
            Some(t) => {
                let mut kv = vec![
                    ("certfile", Term::charlist(&t.certfile)),
                    ("cacertfile", Term::charlist(&t.cacertfile)),
                    ("ciphers", Term::charlist(&t.ciphers)),
                ];
                kv.extend(t.dhfile.as_deref().map(|d| ("dhfile", Term::charlist(d))));
                Term::map_of(kv)
            }
        };
        Term::map_of(vec![
            ("global_host", Term::from(self.global_host.as_str())),
            ("local_host", Term::from(self.local_host.as_str())),
            ("message_ttl", int(self.message_ttl)),
            ("hosts_refresh_interval", int(self.hosts_refresh_interval)),
            ("endpoints", endpoints(&c.endpoints)),
            ("advertised_endpoints", endpoints(&c.advertised_endpoints)),
            ("connections_per_endpoint", int(c.connections_per_endpoint)),
            (
                "endpoint_refresh_interval",
                int(c.endpoint_refresh_interval),
            ),
            (
                "endpoint_refresh_interval_when_empty",
                int(c.endpoint_refresh_interval_when_empty),
            ),
            ("disabled_gc_interval", int(c.disabled_gc_interval)),
            ("tls", tls),
            (
                "redis",
                Term::map_of(vec![
                    ("pool", Term::atom(&self.redis.pool)),
                    ("expire_after", int(self.redis.expire_after)),
                    ("refresh_after", int(self.redis.refresh_after)),
                ]),
            ),
            (
                "cache",
                Term::map_of(vec![
                    ("cache_missed", Term::from(self.cache.cache_missed)),
                    (
                        "domain_lifetime_seconds",
                        int(self.cache.domain_lifetime_seconds),
                    ),
                    ("jid_lifetime_seconds", int(self.cache.jid_lifetime_seconds)),
                    ("max_jids", int(self.cache.max_jids)),
                ]),
            ),
            (
                "bounce",
                Term::map_of(vec![
                    ("enabled", Term::from(self.bounce.enabled)),
                    ("resend_after_ms", int(self.bounce.resend_after_ms)),
                    ("max_retries", int(self.bounce.max_retries)),
                ]),
            ),
        ])
    }
}

/// `{Address, Port}` with the address an IP (a string, a binary or an inet
/// tuple): a transport's listen or peer address.
pub fn socket_addr(node: &Node) -> Result<std::net::SocketAddr> {
    let expected = "{Address, Port} with an IPv4/IPv6 address";
    let Some(Term::Tuple(parts)) = node.term() else {
        return Err(node.invalid(expected));
    };
    let [addr, port] = parts.as_slice() else {
        return Err(node.invalid(expected));
    };
    let ip = endpoint_host(&node.beside(node.path(), addr))
        .ok()
        .and_then(|host| host.parse::<std::net::IpAddr>().ok());
    // Port 0: a listener on any free port.
    let port = node.beside(node.path(), port).int(0, 65535).ok().flatten();
    match (ip, port) {
        (Some(ip), Some(port)) => Ok(std::net::SocketAddr::new(ip, port as u16)),
        _ => Err(node.invalid(expected)),
    }
}

/// A list of `{host = string, port = integer}` tables, or the `{Host, Port}`
/// tuples MongooseIM's config processing turns them into.
fn read_endpoints(node: &Node) -> Result<Option<Vec<Endpoint>>> {
    let Some(items) = node.list()? else {
        return Ok(None);
    };
    items
        .iter()
        .map(endpoint)
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

fn endpoint(node: &Node) -> Result<Endpoint> {
    let expected = "an endpoint {host = string, port = integer}";
    let (host, port) = match node.term() {
        Some(Term::Tuple(t)) if t.len() == 2 => {
            let host = node.beside(format!("{}.host", node.path()), &t[0]);
            let port = node.beside(format!("{}.port", node.path()), &t[1]);
            (
                endpoint_host(&host)?,
                Field::of(port, &ENDPOINT_PORT).int()?,
            )
        }
        Some(Term::Map(_)) | Some(Term::List(_)) => {
            node.only(&ENDPOINT)?;
            let port = node.opt(&ENDPOINT_PORT);
            if !port.is_set() {
                return Err(port.missing("an integer between 1 and 65535"));
            }
            (endpoint_host(&node.at(ENDPOINT[0].name))?, port.int()?)
        }
        _ => return Err(node.invalid(expected)),
    };
    let port = port.ok_or_else(|| node.invalid(expected))?;
    Ok(Endpoint {
        host,
        port: port as u16,
    })
}

/// A host name or an IP address; an IP tuple is written the way
/// `inet:ntoa/1` prints it.
fn endpoint_host(node: &Node) -> Result<String> {
    if let Some(Term::Tuple(parts)) = node.term() {
        let nums: Option<Vec<i64>> = parts
            .iter()
            .map(|p| match p {
                Term::Int(i) => Some(*i),
                _ => None,
            })
            .collect();
        return match nums.as_deref() {
            Some([a, b, c, d]) if [a, b, c, d].iter().all(|x| (0..=255).contains(*x)) => {
                Ok(format!("{a}.{b}.{c}.{d}"))
            }
            Some(v) if v.len() == 8 && v.iter().all(|x| (0..=65535).contains(x)) => {
                let mut a = [0u16; 8];
                for (i, x) in v.iter().enumerate() {
                    a[i] = *x as u16;
                }
                Ok(std::net::Ipv6Addr::from(a).to_string())
            }
            _ => Err(node.invalid("a host name or an IP address")),
        };
    }
    let host = node.required_string()?;
    if host.is_empty() {
        return Err(node.invalid("a host name or an IP address"));
    }
    Ok(host)
}

impl From<GdError> for Error {
    fn from(e: GdError) -> Error {
        match e {
            GdError::Core(e) => e,
            other => Error::Config(other.to_string()),
        }
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
