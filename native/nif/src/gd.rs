//! mod_global_distrib's mapping in the NIF: one running mapping per VM,
//! started on a redis pool that `mongoose_wpool` started. Calls are decoded
//! here, run on the runtime, and answered as `{Tag, Result}` messages.

use std::sync::{Arc, Mutex};

use mongoose_native::config::PoolType;
use mongoose_native::engine::lease::WrapLease;
use mongoose_native::engine::pool::AnyPool;
use mongoose_native::engine::reply::Reply;
use mongoose_native::engine::strategy::Choice;
use mongoose_native::gd::{Call, GdConfig, GdError, Mapping};
use mongoose_native::{runtime, Error, Term};
use rustler::{Encoder, Env, LocalPid, ResourceArc};

use crate::convert::{decode, encode};
use crate::reply::{error_term, slot, spawn_answer};
use crate::{ok, PoolRes};

static MAPPING: Mutex<Option<Arc<Mapping>>> = Mutex::new(None);

/// A pool the mapping shares with `mongoose_wpool` (the resource keeps it
/// alive; `mongoose_wpool:stop` still stops it).
struct SharedPool(ResourceArc<PoolRes>);

impl AnyPool for SharedPool {
    fn submit(&self, choice: Choice, request: Term, reply: Reply) -> Result<(), Error> {
        self.0.pool.submit(choice, request, reply)
    }
    fn lease(&self, choice: Choice, wrap: WrapLease, reply: Reply) -> Result<(), Error> {
        self.0.pool.lease(choice, wrap, reply)
    }
    fn stats(&self) -> Term {
        self.0.pool.stats()
    }
    fn stop(&self) {
        self.0.pool.stop()
    }
}

fn running() -> Option<Arc<Mapping>> {
    MAPPING.lock().ok().and_then(|m| m.clone())
}

fn not_started() -> GdError {
    GdError::NotStarted
}

fn already_started() -> GdError {
    GdError::Core(Error::Config(
        "modules.mod_global_distrib: mod_global_distrib_mapping is already started".into(),
    ))
}

/// Validates `opts` (and that both hosts are in `hosts`) at once, then
/// writes this node's entries on the runtime and answers `{Tag, ok}` or
/// `{Tag, {error, Reason}}`. `pool` is the redis pool's resource, or
/// anything else when that pool is not running.
#[rustler::nif]
fn gd_start<'a>(
    env: Env<'a>,
    opts: rustler::Term<'a>,
    hosts: Vec<String>,
    node: String,
    pool: rustler::Term<'a>,
    pid: LocalPid,
    tag: rustler::Term<'a>,
) -> rustler::Term<'a> {
    let config = decode(opts)
        .map_err(|e| GdError::Core(Error::Config(format!("modules.mod_global_distrib: {e}"))))
        .and_then(|opts| GdConfig::read(&opts, &hosts));
    let config = match config {
        Ok(c) => c,
        Err(e) => return error_term(env, e.reason()),
    };
    let pool = match pool.decode::<ResourceArc<PoolRes>>() {
        Ok(p) if p.kind == PoolType::Redis => p,
        _ => {
            let e = GdError::PoolNotStarted(format!(
                "modules.mod_global_distrib.redis.pool: no redis pool {} is running",
                config.redis.pool
            ));
            return error_term(env, e.reason());
        }
    };
    if running().is_some() {
        return error_term(env, already_started().reason());
    }
    spawn_answer(env, pid, tag, async move {
        let started = Mapping::start(config, &node, Arc::new(SharedPool(pool))).await;
        let result = match started {
            Ok(mapping) => match MAPPING.lock() {
                Ok(mut slot) if slot.is_none() => {
                    *slot = Some(mapping);
                    Ok(())
                }
                _ => {
                    mapping.stop();
                    Err(already_started())
                }
            },
            Err(e) => Err(e),
        };
        result.map(|()| ok()).map_err(|e| {
            log::warn!("mod_global_distrib_mapping start failed: {e}");
            e.reason()
        })
    })
}

/// Stops the refresher and forgets the mapping (its entries expire in Redis).
#[rustler::nif]
fn gd_stop() -> rustler::Atom {
    if let Some(m) = MAPPING.lock().ok().and_then(|mut m| m.take()) {
        m.stop();
    }
    ok()
}

/// `{ok, Slot}`: the answer comes as `{Tag, Result}`; `cancel(Slot)` stops it.
#[rustler::nif]
fn gd_call<'a>(
    env: Env<'a>,
    op: rustler::Atom,
    call_args: rustler::Term<'a>,
    pid: LocalPid,
    tag: rustler::Term<'a>,
) -> rustler::Term<'a> {
    let call = op
        .to_term(env)
        .atom_to_string()
        .map_err(|_| Error::BadRequest("bad operation".into()))
        .and_then(|op| {
            let args = match decode(call_args) {
                Ok(Term::List(items)) => items,
                Ok(other) => {
                    return Err(Error::BadRequest(format!(
                        "arguments must be a list, got {}",
                        other.describe()
                    )))
                }
                Err(e) => return Err(Error::BadRequest(e)),
            };
            Call::parse(&op, &args)
        });
    let call = match call {
        Ok(c) => c,
        Err(e) => return error_term(env, e.reason()),
    };
    let Some(mapping) = running() else {
        return error_term(env, not_started().reason());
    };
    let (slot, reply) = slot(pid, tag);
    runtime::handle().spawn(async move { reply.send(mapping.run(call).await) });
    (ok(), slot).encode(env)
}

/// `{ok, #{mod_global_distrib_mapping_fetches_count => N, ...}}`.
#[rustler::nif]
fn gd_metrics(env: Env) -> rustler::Term {
    match running() {
        Some(m) => (ok(), encode(env, &m.metrics.to_term())).encode(env),
        None => error_term(env, not_started().reason()),
    }
}
