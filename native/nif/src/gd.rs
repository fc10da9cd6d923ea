//! mod_global_distrib's mapping in the NIF: one running mapping per VM,
//! started on a redis pool that `mongoose_wpool` started. Calls are decoded
//! here, run on the runtime, and answered as `{Tag, Result}` messages.

use std::sync::{Arc, Mutex};

use futures::FutureExt;

use mongoose_native::gd::{Call, GdConfig, GdError, Mapping};
use mongoose_native::pool::AnyPool;
use mongoose_native::reply::Reply;
use mongoose_native::strategy::Choice;
use mongoose_native::{runtime, Error, Term};
use rustler::{Encoder, Env, LocalPid, ResourceArc};

use crate::convert::{decode, encode};
use crate::reply::{CallSlot, Later, SlotRef};
use crate::{error, ok, PoolRes};

static MAPPING: Mutex<Option<Arc<Mapping>>> = Mutex::new(None);

/// A pool the mapping shares with `mongoose_wpool` (the resource keeps it
/// alive; `mongoose_wpool:stop` still stops it).
struct SharedPool(ResourceArc<PoolRes>);

impl AnyPool for SharedPool {
    fn submit(&self, choice: Choice, request: Term, reply: Reply) -> Result<(), Error> {
        self.0.pool.submit(choice, request, reply)
    }
    fn stats(&self) -> Term {
        self.0.pool.stats()
    }
    fn stop(&self) {
        self.0.pool.stop()
    }
}

fn gd_error<'a>(env: Env<'a>, e: &GdError) -> rustler::Term<'a> {
    (error(), encode(env, &e.reason())).encode(env)
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
        Err(e) => return gd_error(env, &e),
    };
    let pool = match pool.decode::<ResourceArc<PoolRes>>() {
        Ok(p) if !p.opaque_requests => p,
        _ => {
            return gd_error(
                env,
                &GdError::PoolNotStarted(format!(
                    "modules.mod_global_distrib.redis.pool: no redis pool {} is running",
                    config.redis.pool
                )),
            )
        }
    };
    if running().is_some() {
        return gd_error(env, &already_started());
    }
    let later = Later::new(pid, tag);
    runtime::handle().spawn(async move {
        let started =
            std::panic::AssertUnwindSafe(Mapping::start(config, &node, Arc::new(SharedPool(pool))))
                .catch_unwind()
                .await
                .unwrap_or_else(|_| {
                    Err(GdError::Core(Error::Internal(
                        "mod_global_distrib_mapping start panicked".into(),
                    )))
                });
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
        if let Err(e) = &result {
            log::warn!("mod_global_distrib_mapping start failed: {e}");
        }
        later.answer(|env| match &result {
            Ok(()) => ok().encode(env),
            Err(e) => gd_error(env, e),
        });
    });
    ok().encode(env)
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
                        "arguments must be a list, got {other:?}"
                    )))
                }
                Err(e) => return Err(Error::BadRequest(e)),
            };
            Call::parse(&op, &args)
        });
    let call = match call {
        Ok(c) => c,
        Err(e) => return gd_error(env, &GdError::Core(e)),
    };
    let Some(mapping) = running() else {
        return gd_error(env, &not_started());
    };
    let slot = ResourceArc::new(CallSlot::new(pid, tag));
    let reply = Reply::new(Arc::new(SlotRef(slot.clone())));
    runtime::handle().spawn(async move {
        let answer = mapping.run(call).await;
        reply.send(answer);
    });
    (ok(), slot).encode(env)
}

/// `{ok, #{mod_global_distrib_mapping_fetches_count => N, ...}}`.
#[rustler::nif]
fn gd_metrics(env: Env) -> rustler::Term {
    match running() {
        Some(m) => (ok(), encode(env, &m.metrics.to_term())).encode(env),
        None => gd_error(env, &not_started()),
    }
}
