//! The table of pool kinds: each type's defaults, the strategies it
//! refuses, and how its connection options are checked and its pools
//! opened. The NIF, the TOML checker and the Erlang side (through
//! `mongoose_native_nif:pool_kind/1`) all read it; a new type is one row.

use futures::future::BoxFuture;

use crate::config::{Node, PoolSettings, PoolType};
use crate::drivers::cassandra::{self, CassandraConfig};
use crate::drivers::elastic::{self, ElasticConfig};
use crate::drivers::http::{HttpConfig, HttpDriver};
use crate::drivers::ldap::{LdapConfig, LdapDriver};
use crate::drivers::rabbit::RabbitConfig;
use crate::drivers::rdbms::{RdbmsConfig, RdbmsDriver};
use crate::drivers::redis::{RedisConfig, RedisDriver};
use crate::drivers::riak::{RiakConfig, RiakDriver};
use crate::engine::pool::{AnyPool, Pool};
use crate::engine::strategy::Strategy;
use crate::error::{Error, Result};
use crate::options::Opt;
use crate::term::Term;

/// A pool being opened: every worker's connection, then the pool.
pub type Opening = BoxFuture<'static, Result<Box<dyn AnyPool>>>;

pub struct PoolKind {
    pub kind: PoolType,
    pub default_workers: i64,
    pub default_call_timeout_ms: i64,
    /// Seed 002: redis and riak refuse `available_worker`.
    pub refused: &'static [Strategy],
    /// The options of the `connection` section, which `check` and `open`
    /// read (and the generated bad-config tests mutate).
    pub options: &'static [Opt],
    /// Checks the connection options without connecting; `None` while
    /// mongoose_native does not support the type.
    pub check: Option<fn(&Node) -> Result<()>>,
    /// Reads the connection options and opens the pool; `None` for
    /// `generic`, whose pools the NIF glue starts with their executors.
    pub open: Option<fn(&Node, PoolSettings) -> Result<Opening>>,
}

const fn kind(kind: PoolType) -> PoolKind {
    PoolKind {
        kind,
        default_workers: 10,
        default_call_timeout_ms: 5_000,
        refused: &[],
        options: &[],
        check: None,
        open: None,
    }
}

/// In `PoolType::ALL`'s order.
static KINDS: [PoolKind; 9] = [
    PoolKind {
        refused: &[Strategy::Available],
        options: &RedisConfig::OPTIONS,
        check: Some(|conn| RedisDriver::new(RedisConfig::read(conn)?, 0).map(drop)),
        open: Some(|conn, settings| {
            let driver = RedisDriver::new(RedisConfig::read(conn)?, settings.call_timeout_ms)?;
            Ok(opening(driver, settings))
        }),
        ..kind(PoolType::Redis)
    },
    PoolKind {
        options: &HttpConfig::OPTIONS,
        check: Some(|conn| HttpConfig::read(conn).map(drop)),
        open: Some(|conn, settings| {
            let driver = HttpDriver::new(HttpConfig::read(conn)?, settings.workers)?;
            Ok(opening(driver, settings))
        }),
        ..kind(PoolType::Http)
    },
    PoolKind {
        default_call_timeout_ms: 60_000,
        options: &RdbmsConfig::OPTIONS,
        check: Some(|conn| RdbmsConfig::read(conn).map(drop)),
        open: Some(|conn, settings| {
            let driver = RdbmsDriver::new(RdbmsConfig::read(conn)?, settings.call_timeout_ms)?;
            Ok(opening(driver, settings))
        }),
        ..kind(PoolType::Rdbms)
    },
    PoolKind {
        default_workers: 20,
        options: &CassandraConfig::OPTIONS,
        check: Some(|conn| CassandraConfig::read(conn).map(drop)),
        open: Some(cassandra::open),
        ..kind(PoolType::Cassandra)
    },
    PoolKind {
        options: &ElasticConfig::OPTIONS,
        check: Some(|conn| ElasticConfig::read(conn).map(drop)),
        open: Some(elastic::open),
        ..kind(PoolType::Elastic)
    },
    PoolKind {
        check: Some(|conn| conn.only(&[])),
        ..kind(PoolType::Generic)
    },
    PoolKind {
        options: &RabbitConfig::OPTIONS,
        check: Some(|conn| RabbitConfig::read(conn).map(drop)),
        open: Some(|conn, settings| {
            crate::drivers::rabbit::open(RabbitConfig::read(conn)?, settings)
        }),
        ..kind(PoolType::Rabbit)
    },
    PoolKind {
        options: &LdapConfig::OPTIONS,
        check: Some(|conn| LdapConfig::read(conn).map(drop)),
        open: Some(|conn, settings| {
            let driver = LdapDriver::new(LdapConfig::read(conn)?, settings.call_timeout_ms);
            Ok(opening(driver, settings))
        }),
        ..kind(PoolType::Ldap)
    },
    PoolKind {
        refused: &[Strategy::Available],
        options: &RiakConfig::OPTIONS,
        check: Some(|conn| RiakConfig::read(conn).map(drop)),
        open: Some(|conn, settings| {
            let driver = RiakDriver::new(RiakConfig::read(conn)?, settings.call_timeout_ms);
            Ok(opening(driver, settings))
        }),
        ..kind(PoolType::Riak)
    },
];

/// Starts the engine's pool over `driver`.
pub(crate) fn opening<D: crate::engine::pool::Driver>(
    driver: D,
    settings: PoolSettings,
) -> Opening {
    Box::pin(async move {
        let pool = Pool::start(driver, settings).await?;
        Ok(Box::new(pool) as Box<dyn AnyPool>)
    })
}

impl PoolType {
    pub fn kind(self) -> &'static PoolKind {
        &KINDS[self as usize]
    }
}

fn not_supported(kind: PoolType, path: &str) -> Error {
    Error::Config(format!(
        "{path}: pool type {} is not supported by mongoose_native yet",
        kind.name()
    ))
}

/// Validates the connection options of the pool at `path`
/// (`outgoing_pools.TYPE.TAG`) and opens it.
pub async fn start(settings: PoolSettings, conn: &Term, path: &str) -> Result<Box<dyn AnyPool>> {
    let kind = settings.kind;
    let open = kind.kind().open.ok_or_else(|| not_supported(kind, path))?;
    open(&Node::new(format!("{path}.connection"), conn), settings)?.await
}

/// Checks a pool's connection options (`conn`, at
/// `outgoing_pools.TYPE.TAG.connection`) without connecting.
pub fn validate(kind: PoolType, conn: &Node) -> Result<()> {
    let pool = conn
        .path()
        .strip_suffix(".connection")
        .unwrap_or(conn.path());
    let check = kind.kind().check.ok_or_else(|| not_supported(kind, pool))?;
    check(conn)
}

#[cfg(test)]
#[path = "registry_tests.rs"]
mod tests;
