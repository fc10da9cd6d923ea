//! The `connection` section of a `rabbit` pool: seed 002's names
//! (`amqp_host`, ...) and MongooseIM 6.x's (`host`, ...) for the same options.

use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;

use crate::config::{Node, Secret};
use crate::error::{Error, Result};
use crate::options::{find, Field, Opt};
use crate::tls::{read_tls, TLS_SECTION};

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

const HOST: Opt = Opt::text("host");
const PORT: Opt = Opt::int("port", 1, 65535);
const USERNAME: Opt = Opt::text("username");
const PASSWORD: Opt = Opt::secret("password");
// Seed 002's names for the four above.
const AMQP_HOST: Opt = Opt::text("amqp_host").alias_of("host");
const AMQP_PORT: Opt = Opt::int("amqp_port", 1, 65535).alias_of("port");
const AMQP_USERNAME: Opt = Opt::text("amqp_username").alias_of("username");
const AMQP_PASSWORD: Opt = Opt::secret("amqp_password").alias_of("password");
const VIRTUAL_HOST: Opt = Opt::text("virtual_host");
const CONFIRMS_ENABLED: Opt = Opt::bool("confirms_enabled");
const MAX_WORKER_QUEUE_LEN: Opt = Opt::queue_len("max_worker_queue_len");
const ATTEMPTS: Opt = Opt::int("attempts", 0, 1000);
const DELAY: Opt = Opt::int("delay", 0, 3_600_000);
const RECONNECT: [Opt; 2] = [ATTEMPTS, DELAY];
const RECONNECT_SECTION: Opt = Opt::section("reconnect", &RECONNECT);

impl RabbitConfig {
    pub const OPTIONS: [Opt; 13] = [
        AMQP_HOST,
        HOST,
        AMQP_PORT,
        PORT,
        AMQP_USERNAME,
        USERNAME,
        AMQP_PASSWORD,
        PASSWORD,
        VIRTUAL_HOST,
        CONFIRMS_ENABLED,
        MAX_WORKER_QUEUE_LEN,
        TLS_SECTION,
        RECONNECT_SECTION,
    ];
    pub const DEFAULT_MAX_QUEUE_LEN: usize = 1000;

    pub fn read(conn: &Node) -> Result<RabbitConfig> {
        conn.only(&Self::OPTIONS)?;
        // An option left out is named in errors as those given are.
        let table: &'static [Opt] = &Self::OPTIONS;
        let aliases: Vec<(&'static Opt, &'static Opt)> = table
            .iter()
            .filter_map(|seed| Some((seed, find(table, seed.alias?)?)))
            .collect();
        let seed_names = aliases.iter().any(|(seed, _)| conn.at(seed.name).is_set());
        let mut names = Vec::with_capacity(aliases.len());
        for (seed_opt, mim_opt) in aliases.iter().copied() {
            let (seed, mim) = (seed_opt.name, mim_opt.name);
            let opt = match (conn.at(seed).is_set(), conn.at(mim).is_set()) {
                (true, true) => {
                    return Err(Error::Config(format!(
                        "{}: {seed} and {mim} name the same option; give one",
                        conn.path()
                    )))
                }
                (true, false) => seed_opt,
                (false, true) => mim_opt,
                (false, false) if seed_names => seed_opt,
                (false, false) => mim_opt,
            };
            names.push(conn.opt(opt));
        }
        let [host, port, username, password] = <[Field; 4]>::try_from(names)
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
        let tls = match conn.at(TLS_SECTION.name) {
            tls if tls.is_set() => {
                let mut config = read_tls(&tls)?;
                config.alpn_protocols.clear();
                Some(Arc::new(config))
            }
            _ => None,
        };
        let reconnect = conn.at(RECONNECT_SECTION.name);
        reconnect.only(&RECONNECT)?;
        let vhost = conn.at(VIRTUAL_HOST.name);
        Ok(RabbitConfig {
            host: non_empty(&host, "localhost")?,
            port: port.int_or(5672)? as u16,
            username: non_empty(&username, "guest")?,
            password: password_value,
            virtual_host: non_empty(&vhost, "/")?,
            confirms: conn.at(CONFIRMS_ENABLED.name).bool_or(false)?,
            max_queue_len: conn
                .opt(&MAX_WORKER_QUEUE_LEN)
                .queue_len()?
                .unwrap_or(Self::DEFAULT_MAX_QUEUE_LEN),
            tls,
            start_attempts: reconnect.opt(&ATTEMPTS).int_or(0)? as u32,
            start_delay: Duration::from_millis(reconnect.opt(&DELAY).int_or(2000)? as u64),
            names: Names {
                username: username.path().to_string(),
                password: password.path().to_string(),
                virtual_host: vhost.path().to_string(),
                host: host.path().to_string(),
            },
        })
    }
}
