//! The `connection` section of a `rabbit` pool: seed 002's names
//! (`amqp_host`, ...) and MongooseIM 6.x's (`host`, ...) for the same options.

use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;

use crate::config::{Node, Secret, INFINITE_QUEUE_BOUND};
use crate::error::{Error, Result};
use crate::tls::read_tls;

#[derive(Debug, Clone)]
pub struct RabbitConfig {
    pub host: String,
    pub port: u16,
    pub username: String,
    /// `None`: the default, "guest".
    pub password: Option<Secret>,
    pub virtual_host: String,
    pub confirms: bool,
    /// Requests that may wait per worker; past it the oldest is dropped.
    pub max_queue_len: usize,
    /// Set when the `tls` section is: the connection is then TLS only.
    pub tls: Option<Arc<ClientConfig>>,
    /// Further tries, `delay` apart, when the first connection fails at start.
    pub start_attempts: u32,
    pub start_delay: Duration,
    /// The option names as given, so errors name what the user wrote.
    pub names: Names,
}

#[derive(Debug, Clone)]
pub struct Names {
    pub username: String,
    pub password: String,
    pub virtual_host: String,
    pub host: String,
}

/// Seed 002's name and MongooseIM 6.x's for each option both given.
const ALIASES: [(&str, &str); 4] = [
    ("amqp_host", "host"),
    ("amqp_port", "port"),
    ("amqp_username", "username"),
    ("amqp_password", "password"),
];

impl RabbitConfig {
    pub const OPTIONS: [&'static str; 13] = [
        "amqp_host",
        "host",
        "amqp_port",
        "port",
        "amqp_username",
        "username",
        "amqp_password",
        "password",
        "virtual_host",
        "confirms_enabled",
        "max_worker_queue_len",
        "tls",
        "reconnect",
    ];
    pub const DEFAULT_MAX_QUEUE_LEN: usize = 1000;

    pub fn read(conn: &Node) -> Result<RabbitConfig> {
        conn.only_keys(&Self::OPTIONS)?;
        // An option left out is named in errors as those given are.
        let seed_names = ALIASES.iter().any(|(seed, _)| conn.at(seed).is_set());
        let mut names = Vec::with_capacity(ALIASES.len());
        for (seed, mim) in ALIASES {
            let name = match (conn.at(seed).is_set(), conn.at(mim).is_set()) {
                (true, true) => {
                    return Err(Error::Config(format!(
                        "{}: {seed} and {mim} name the same option; give one",
                        conn.path()
                    )))
                }
                (true, false) => seed,
                (false, true) => mim,
                (false, false) if seed_names => seed,
                (false, false) => mim,
            };
            names.push(conn.at(name));
        }
        let [host, port, username, password] = <[Node; 4]>::try_from(names)
            .map_err(|_| Error::Internal("rabbit option aliases".into()))?;
        let non_empty = |node: &Node, default: &str| -> Result<String> {
            let value = node.string_or(default)?;
            if value.is_empty() {
                return Err(node.invalid("a non-empty string"));
            }
            Ok(value)
        };
        let password_value = match password.secret()? {
            Some(p) if p.expose().is_empty() => {
                return Err(Error::Config(format!(
                    "{}: expected a non-empty string, got an empty string",
                    password.path()
                )))
            }
            other => other,
        };
        let tls = match conn.at("tls") {
            tls if tls.is_set() => {
                let mut config = read_tls(&tls)?;
                config.alpn_protocols.clear();
                Some(Arc::new(config))
            }
            _ => None,
        };
        let reconnect = conn.at("reconnect");
        reconnect.only_keys(&["attempts", "delay"])?;
        let vhost = conn.at("virtual_host");
        Ok(RabbitConfig {
            host: non_empty(&host, "localhost")?,
            port: port.int_or(1, 65535, 5672)? as u16,
            username: non_empty(&username, "guest")?,
            password: password_value,
            virtual_host: non_empty(&vhost, "/")?,
            confirms: conn.at("confirms_enabled").bool_or(false)?,
            max_queue_len: read_queue_len(&conn.at("max_worker_queue_len"))?,
            tls,
            start_attempts: reconnect.at("attempts").int_or(0, 1000, 0)? as u32,
            start_delay: Duration::from_millis(
                reconnect.at("delay").int_or(0, 3_600_000, 2000)? as u64
            ),
            names: Names {
                username: username.path().to_string(),
                password: password.path().to_string(),
                virtual_host: vhost.path().to_string(),
                host: host.path().to_string(),
            },
        })
    }
}

/// A non-negative integer or `infinity` (still bounded, far away). 0 keeps
/// one waiting request: MongooseIM's worker drops a request only while
/// others wait behind it.
fn read_queue_len(node: &Node) -> Result<usize> {
    match node.term() {
        None => Ok(RabbitConfig::DEFAULT_MAX_QUEUE_LEN),
        Some(t) if t.as_text().as_deref() == Some("infinity") => Ok(INFINITE_QUEUE_BOUND),
        Some(crate::term::Term::Int(n)) if *n >= 0 => {
            Ok((*n as usize).clamp(1, INFINITE_QUEUE_BOUND))
        }
        Some(_) => Err(node.invalid("a non-negative integer or \"infinity\"")),
    }
}
