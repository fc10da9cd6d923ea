//! mod_global_distrib, part 1: the session table in Redis (seed 004,
//! CONTRACTS.md section 3), the local cache in front of it, the periodic
//! refresher and the mapping metrics.
//!
//! [`Mapping`] is plain async Rust over any [`AnyPool`](crate::engine::pool::AnyPool)
//! that speaks the redis driver's `{q, Args}` / `{qp, [Args]}` requests
//! (in the VM: the redis pool `mongoose_wpool` started under `redis.pool`,
//! shared, not copied), so `cargo test` drives it against a real Redis
//! without the VM. The NIF glue only decodes a [`Call`], runs it on the
//! runtime and sends the answer.
//!
//! - [`store`]: the stock key layout; writes are `SET k LOCALHOST EX
//!   expire_after`; a delete is one Lua `EVAL` that removes a key only while
//!   it holds this datacenter's host.
//! - [`cache`]: moka caches for JIDs and domains (lifetimes, `max_jids`,
//!   `cache_missed`); a JID lookup tries the full JID, then the bare one.
//! - the refresher: every `refresh_after` seconds the node re-writes what it
//!   owns, pipelined (two round trips, then one per 10,000 sessions). A
//!   session key is refreshed by a script that leaves it alone when another
//!   datacenter wrote its host there meanwhile, so a periodic refresh never
//!   overwrites a newer mapping of a user who moved.
//! - [`metrics`]: `mapping_fetches_count`, `mapping_fetches_time`,
//!   `mapping_cache_misses_count`.

pub mod cache;
pub mod config;
pub mod jid;
pub mod mapping;
pub mod metrics;
pub mod store;
pub mod transport;

pub use config::GdConfig;
pub use jid::Jid;
pub use mapping::{Call, Mapping};

use crate::error::Error;
use crate::term::Term;

/// Why the mapping could not start or answer.
#[derive(Debug, Clone, PartialEq)]
pub enum GdError {
    /// A bad option, a pool error, a Redis error: the library's usual kinds.
    Core(Error),
    /// `global_host` or `local_host` is not one of the served domains.
    CheckHost(String),
    /// The redis pool named by `redis.pool` is not running.
    PoolNotStarted(String),
    /// The mapping is not running on this node.
    NotStarted,
}

impl GdError {
    pub fn kind(&self) -> &'static str {
        match self {
            GdError::Core(e) => e.kind(),
            GdError::CheckHost(_) => "check_host_failed",
            GdError::PoolNotStarted(_) => "pool_not_started",
            GdError::NotStarted => "not_started",
        }
    }

    /// `{Kind, Message}`, what `{error, Reason}` carries to Erlang.
    pub fn reason(&self) -> Term {
        let msg = match self {
            GdError::Core(e) => e.to_string(),
            GdError::CheckHost(m) | GdError::PoolNotStarted(m) => m.clone(),
            GdError::NotStarted => "mod_global_distrib_mapping is not started".to_string(),
        };
        Term::tuple(vec![Term::atom(self.kind()), Term::from(msg)])
    }
}

impl std::fmt::Display for GdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GdError::Core(e) => write!(f, "{e}"),
            GdError::CheckHost(m) | GdError::PoolNotStarted(m) => f.write_str(m),
            GdError::NotStarted => f.write_str("mod_global_distrib_mapping is not started"),
        }
    }
}

impl From<Error> for GdError {
    fn from(e: Error) -> GdError {
        GdError::Core(e)
    }
}
