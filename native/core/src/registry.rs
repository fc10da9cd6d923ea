//! Starts or checks a pool of a given type: maps each type to its driver
//! (`generic` is started by the NIF glue, which owns its Erlang executors;
//! mongoose_wpool.erl names each type's callback module).

use crate::config::{Node, PoolSettings, PoolType};
use crate::error::{Error, Result};
use crate::http::{HttpConfig, HttpDriver};
use crate::pool::{AnyPool, Pool};
use crate::rdbms::{RdbmsConfig, RdbmsDriver};
use crate::redis::{RedisConfig, RedisDriver};
use crate::term::Term;

/// Validates the connection options of the pool at `path`
/// (`outgoing_pools.TYPE.TAG`) and opens it. `generic` pools are started by
/// the NIF glue, which owns the Erlang processes they run in.
pub async fn start(settings: PoolSettings, conn: &Term, path: &str) -> Result<Box<dyn AnyPool>> {
    let conn = Node::new(format!("{path}.connection"), conn);
    match settings.kind {
        PoolType::Redis => {
            let driver = RedisDriver::new(RedisConfig::read(&conn)?)?;
            Ok(Box::new(Pool::start(driver, settings).await?))
        }
        PoolType::Http => {
            let driver = HttpDriver::new(HttpConfig::read(&conn)?, settings.workers)?;
            Ok(Box::new(Pool::start(driver, settings).await?))
        }
        PoolType::Rdbms => {
            let driver = RdbmsDriver::new(RdbmsConfig::read(&conn)?, settings.call_timeout_ms)?;
            Ok(Box::new(Pool::start(driver, settings).await?))
        }
        other => Err(Error::Config(format!(
            "{path}: pool type {} is not supported by mongoose_native yet",
            other.name()
        ))),
    }
}

/// Checks the connection options of the pool at `path` without connecting.
pub fn validate(kind: PoolType, conn: &Term, path: &str) -> Result<()> {
    let conn = Node::new(format!("{path}.connection"), conn);
    match kind {
        PoolType::Redis => RedisDriver::new(RedisConfig::read(&conn)?).map(drop),
        PoolType::Http => HttpConfig::read(&conn).map(drop),
        PoolType::Rdbms => RdbmsConfig::read(&conn).map(drop),
        PoolType::Generic => conn.only_keys(&[]),
        other => Err(Error::Config(format!(
            "{path}: pool type {} is not supported by mongoose_native yet",
            other.name()
        ))),
    }
}
