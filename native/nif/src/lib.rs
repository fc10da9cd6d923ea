//! The NIF: decodes arguments, hands work to the runtime, returns at once.
//! Results reach the caller as `{Tag, Result}` messages (see `reply`).

mod convert;
mod gd;
mod gd_transport;
mod generic;
mod lease;
mod logger;
mod pin;
mod reply;

use mongoose_native::config::{pools_from_toml, Node, PoolSettings, PoolType};
use mongoose_native::engine::pool::{AnyPool, Pool};
use mongoose_native::engine::reply::Reply;
use mongoose_native::engine::strategy::Choice;
use mongoose_native::prometheus::{self, PoolLabels};
use mongoose_native::{registry, runtime, Error, Term};
use rustler::{Atom, Encoder, Env, LocalPid, ResourceArc};
use std::sync::Arc;

use convert::{decode, decode_within, encode, DecodeError, Saved};
use generic::{Done, Executors, GenericDriver};
use reply::{error_term, spawn_answer, CallSlot};

rustler::atoms! { ok, error, cancelled, replied, reschedule, threads, sched_batch, max_request_size }

pub struct PoolRes {
    /// Shared with the metrics endpoint, which holds it weakly.
    pool: Arc<dyn AnyPool>,
    /// What NIFs for one kind check (generic pools carry opaque requests,
    /// global distribution needs a redis pool).
    kind: PoolType,
}

#[rustler::resource_impl]
impl rustler::Resource for PoolRes {}

fn bad_arg(what: &str, why: String) -> Error {
    Error::BadRequest(format!("{what}: {why}"))
}

/// Validates the pool options at once; the connection options are checked
/// and the connections opened on the runtime, answering `{Tag, {ok, Pool}}`
/// or `{Tag, {error, Reason}}` (see `reply::spawn_answer`).
#[rustler::nif]
fn pool_start<'a>(
    env: Env<'a>,
    kind: String,
    opts: rustler::Term<'a>,
    conn: rustler::Term<'a>,
    path: String,
    pid: LocalPid,
    tag: rustler::Term<'a>,
) -> rustler::Term<'a> {
    let prepared = prepare(&kind, opts, &path).and_then(|settings| {
        let conn = decode(conn).map_err(|e| Error::Config(format!("{path}.connection: {e}")))?;
        Ok((settings, conn))
    });
    let (settings, conn) = match prepared {
        Ok(p) => p,
        Err(e) => return error_term(env, e.reason()),
    };
    let kind = settings.kind;
    spawn_answer(env, pid, tag, async move {
        started(registry::start(settings, &conn, &path).await, kind)
    })
}

/// Starts a generic pool whose workers run in the given executors.
#[rustler::nif]
fn generic_start<'a>(
    env: Env<'a>,
    executors: ResourceArc<Executors>,
    opts: rustler::Term<'a>,
    path: String,
    pid: LocalPid,
    tag: rustler::Term<'a>,
) -> rustler::Term<'a> {
    let settings =
        prepare("generic", opts, &path).and_then(|s| match s.workers == executors.len() {
            true => Ok(s),
            false => Err(Error::Config(format!(
                "{path}: executor count differs from workers"
            ))),
        });
    let settings = match settings {
        Ok(s) => s,
        Err(e) => return error_term(env, e.reason()),
    };
    spawn_answer(env, pid, tag, async move {
        let pool = Pool::start(GenericDriver::new(executors), settings).await;
        started(
            pool.map(|p| Box::new(p) as Box<dyn AnyPool>),
            PoolType::Generic,
        )
    })
}

/// A pool type's row of the kinds table, for the Erlang side:
/// `#{workers => N, call_timeout => Ms, refused_strategies => [Atom]}`.
#[rustler::nif]
fn pool_kind<'a>(env: Env<'a>, kind: String) -> rustler::Term<'a> {
    let Some(row) = PoolType::parse(&kind).map(PoolType::kind) else {
        return error_term(
            env,
            Error::Config(format!("unknown pool type {kind}")).reason(),
        );
    };
    let kv = |k: &str, v: Term| (Term::atom(k), v);
    let refused = row.refused.iter().map(|s| Term::atom(s.name())).collect();
    encode(
        env,
        &Term::Map(vec![
            kv("workers", Term::Int(row.default_workers)),
            kv("call_timeout", Term::Int(row.default_call_timeout_ms)),
            kv("refused_strategies", Term::List(refused)),
        ]),
    )
}

fn prepare(kind: &str, opts: rustler::Term, path: &str) -> Result<PoolSettings, Error> {
    let kind = PoolType::parse(kind)
        .ok_or_else(|| Error::Config(format!("{path}: unknown pool type {kind}")))?;
    let opts = decode(opts).map_err(|e| Error::Config(format!("{path}: {e}")))?;
    PoolSettings::read(kind, &Node::new(path, &opts))
}

fn started(
    pool: Result<Box<dyn AnyPool>, Error>,
    kind: PoolType,
) -> Result<(Atom, ResourceArc<PoolRes>), Term> {
    match pool {
        Ok(pool) => {
            let pool = Arc::from(pool);
            Ok((ok(), ResourceArc::new(PoolRes { pool, kind })))
        }
        Err(e) => {
            log::warn!("pool start failed: {e}");
            Err(e.reason())
        }
    }
}

/// A request decoded within `budget`: `Ok(None)` when it is too large for
/// a normal scheduler, so the caller retries on a dirty one.
/// A generic pool's request is kept as it is (copied, not decoded), which
/// costs as much, so it is measured the same way first.
fn request(pool: &PoolRes, request: rustler::Term, budget: usize) -> Result<Option<Term>, Error> {
    match pool.kind {
        PoolType::Generic => {
            let kept = match convert::fits(request, budget) {
                true => Ok(Term::Opaque(Saved::new(request))),
                false => Err(DecodeError::TooLarge),
            };
            within(budget, kept)
        }
        _ => request_term(request, budget),
    }
}

fn request_term(request: rustler::Term, budget: usize) -> Result<Option<Term>, Error> {
    within(budget, decode_within(request, budget))
}

/// A request decoded (or kept) within `budget`, or why not.
fn within(budget: usize, decoded: Result<Term, DecodeError>) -> Result<Option<Term>, Error> {
    match decoded {
        Ok(t) => Ok(Some(t)),
        Err(DecodeError::TooLarge) if budget < convert::max_request_size() => Ok(None),
        Err(DecodeError::TooLarge) => Err(bad_arg(
            "request",
            format!(
                "{} (max_request_size)",
                DecodeError::TooLarge.describe(budget)
            ),
        )),
        Err(e) => Err(bad_arg("request", e.describe(budget))),
    }
}

fn choice(index: i64) -> Choice {
    usize::try_from(index).map_or(Choice::Strategy, Choice::Hash)
}

/// `{ok, Slot}`: the answer will come as `{Tag, Result}` (`call`), or, for
/// a request answered in parts (`stream`), as `{Tag, part, Part}` messages,
/// each after a `more(Slot)` but the first, then `{Tag, Result}`;
/// `cancel(Slot)` stops it. `reschedule`: the request is too large to
/// decode here, call `submit_dirty` (mongoose_native_nif:submit/5 and
/// stream/5 do).
#[rustler::nif(name = "submit_nif")]
fn submit<'a>(
    env: Env<'a>,
    pool: ResourceArc<PoolRes>,
    hash: i64,
    req: rustler::Term<'a>,
    pid: LocalPid,
    tag: rustler::Term<'a>,
    mode: Mode,
) -> rustler::Term<'a> {
    let budget = convert::scheduler_budget();
    submit_within(env, budget, pool, hash, req, pid, tag, mode)
}

/// `submit` for requests past the scheduler budget: decoded on a dirty CPU
/// scheduler (decoding is CPU work; nothing here waits on I/O).
#[rustler::nif(schedule = "DirtyCpu")]
fn submit_dirty<'a>(
    env: Env<'a>,
    pool: ResourceArc<PoolRes>,
    hash: i64,
    req: rustler::Term<'a>,
    pid: LocalPid,
    tag: rustler::Term<'a>,
    mode: Mode,
) -> rustler::Term<'a> {
    let budget = convert::max_request_size();
    submit_within(env, budget, pool, hash, req, pid, tag, mode)
}

/// How the caller is answered: once, or in parts.
#[derive(rustler::NifUnitEnum)]
enum Mode {
    Call,
    Stream,
}

#[allow(clippy::too_many_arguments)]
fn submit_within<'a>(
    env: Env<'a>,
    budget: usize,
    pool: ResourceArc<PoolRes>,
    hash: i64,
    req: rustler::Term<'a>,
    pid: LocalPid,
    tag: rustler::Term<'a>,
    mode: Mode,
) -> rustler::Term<'a> {
    let req = match request(&pool, req, budget) {
        Ok(Some(r)) => r,
        Ok(None) => return reschedule().encode(env),
        Err(e) => return error_term(env, e.reason()),
    };
    let submitted = match mode {
        Mode::Call => {
            let (slot, reply) = reply::slot(pid, tag);
            (slot, pool.pool.submit(choice(hash), req, reply))
        }
        Mode::Stream => {
            let (slot, reply) = reply::stream_slot(env, pid, tag);
            (slot, pool.pool.stream(choice(hash), req, reply))
        }
    };
    match submitted {
        (slot, Ok(())) => (ok(), slot).encode(env),
        (_, Err(e)) => error_term(env, e.reason()),
    }
}

#[rustler::nif(name = "cast_nif")]
fn cast<'a>(
    env: Env<'a>,
    pool: ResourceArc<PoolRes>,
    hash: i64,
    req: rustler::Term<'a>,
) -> rustler::Term<'a> {
    cast_within(env, convert::scheduler_budget(), pool, hash, req)
}

#[rustler::nif(schedule = "DirtyCpu")]
fn cast_dirty<'a>(
    env: Env<'a>,
    pool: ResourceArc<PoolRes>,
    hash: i64,
    req: rustler::Term<'a>,
) -> rustler::Term<'a> {
    cast_within(env, convert::max_request_size(), pool, hash, req)
}

fn cast_within<'a>(
    env: Env<'a>,
    budget: usize,
    pool: ResourceArc<PoolRes>,
    hash: i64,
    req: rustler::Term<'a>,
) -> rustler::Term<'a> {
    let result = request(&pool, req, budget).and_then(|req| match req {
        Some(req) => pool.pool.submit(choice(hash), req, Reply::none()).map(Some),
        None => Ok(None),
    });
    match result {
        Ok(Some(())) => ok().encode(env),
        Ok(None) => reschedule().encode(env),
        Err(e) => error_term(env, e.reason()),
    }
}

#[rustler::nif]
fn cancel(slot: ResourceArc<CallSlot>) -> Atom {
    if slot.cancel() {
        cancelled()
    } else {
        replied()
    }
}

/// The caller took a streamed request's part and asks for the next.
#[rustler::nif]
fn more(slot: ResourceArc<CallSlot>) -> Atom {
    slot.more();
    ok()
}

#[rustler::nif]
fn stats(env: Env, pool: ResourceArc<PoolRes>) -> rustler::Term {
    encode(env, &pool.pool.stats())
}

#[rustler::nif]
fn stop(pool: ResourceArc<PoolRes>) -> Atom {
    prometheus::unregister(&pool.pool);
    pool.pool.stop();
    ok()
}

/// Names a started pool for the metrics endpoint (`mongoose_wpool` knows
/// its host type and tag; the NIF only its type).
#[rustler::nif]
fn pool_labels(pool: ResourceArc<PoolRes>, host_type: String, tag: String) -> Atom {
    let pool_type = pool.kind.name().to_string();
    let labels = PoolLabels {
        pool_type,
        host_type,
        tag,
    };
    prometheus::register(labels, &pool.pool);
    ok()
}

/// Starts the Prometheus endpoint on `addr` on the runtime: `{Tag, {ok,
/// BoundAddress}}` or `{Tag, {error, Reason}}`.
#[rustler::nif]
fn metrics_listen<'a>(
    env: Env<'a>,
    addr: String,
    pid: LocalPid,
    tag: rustler::Term<'a>,
) -> rustler::Term<'a> {
    spawn_answer(env, pid, tag, async move {
        match prometheus::listen(&addr).await {
            Ok(bound) => Ok((ok(), bound.to_string())),
            Err(e) => Err(e.reason()),
        }
    })
}

#[rustler::nif]
fn metrics_stop() -> Atom {
    prometheus::stop();
    ok()
}

/// Sets a section of text every scrape ends with (empty: none).
#[rustler::nif]
fn metrics_section<'a>(env: Env<'a>, name: String, text: rustler::Binary<'a>) -> rustler::Term<'a> {
    match std::str::from_utf8(text.as_slice()) {
        Ok(text) => {
            prometheus::set_section(&name, text.to_string());
            ok().encode(env)
        }
        Err(_) => error_term(
            env,
            Error::BadRequest("metrics section: not UTF-8".into()).reason(),
        ),
    }
}

#[rustler::nif]
fn parse_toml<'a>(env: Env<'a>, text: rustler::Binary<'a>) -> rustler::Term<'a> {
    let parsed = std::str::from_utf8(text.as_slice())
        .map_err(|_| Error::Config("the TOML file is not UTF-8".into()))
        .and_then(pools_from_toml);
    match parsed {
        Ok(pools) => (ok(), encode(env, &Term::List(pools))).encode(env),
        Err(e) => error_term(env, e.reason()),
    }
}

/// Checks a whole TOML document without connecting: `{ok, SectionsChecked}`.
#[rustler::nif]
fn check_toml<'a>(env: Env<'a>, text: rustler::Binary<'a>) -> rustler::Term<'a> {
    let checked = std::str::from_utf8(text.as_slice())
        .map_err(|_| Error::Config("the TOML file is not UTF-8".into()))
        .and_then(mongoose_native::toml_check::check_toml);
    match checked {
        Ok(n) => (ok(), n).encode(env),
        Err(e) => error_term(env, e.reason()),
    }
}

#[rustler::nif]
fn generic_executors(n: usize) -> ResourceArc<Executors> {
    ResourceArc::new(Executors::new(n))
}

#[rustler::nif]
fn generic_attach(executors: ResourceArc<Executors>, index: usize, pid: LocalPid) -> Atom {
    if executors.attach(index, pid) {
        ok()
    } else {
        error()
    }
}

/// A generic worker's result, kept for its caller; `reschedule` when it is
/// too large to copy on a normal scheduler (call `generic_done_dirty`).
#[rustler::nif(name = "generic_done_nif")]
fn generic_done(done: ResourceArc<Done>, result: rustler::Term) -> Atom {
    match convert::fits(result, convert::scheduler_budget()) {
        true => keep_result(&done, result),
        false => reschedule(),
    }
}

/// `generic_done` for a large result: copied on a dirty CPU scheduler.
#[rustler::nif(schedule = "DirtyCpu")]
fn generic_done_dirty(done: ResourceArc<Done>, result: rustler::Term) -> Atom {
    keep_result(&done, result)
}

fn keep_result(done: &Done, result: rustler::Term) -> Atom {
    if done.finish(Saved::new(result)) {
        ok()
    } else {
        error()
    }
}

#[rustler::nif]
fn set_log_relay(pid: LocalPid) -> Atom {
    logger::set_relay(pid);
    ok()
}

fn load<'a>(env: Env<'a>, info: rustler::Term<'a>) -> bool {
    if !pin::pin_library() {
        return false;
    }
    // A bad `runtime_threads`, `runtime_sched_batch` or `max_request_size`
    // refuses the load before any thread starts.
    let defaults = runtime::Threads::default();
    let max_request = load_option(
        env,
        info,
        max_request_size(),
        convert::DEFAULT_MAX_REQUEST_SIZE,
    );
    let (Some(count), Some(sched_batch), Some(bytes @ 1..)) = (
        load_option(env, info, threads(), defaults.count),
        load_option(env, info, sched_batch(), defaults.sched_batch),
        max_request,
    ) else {
        return false;
    };
    logger::install();
    convert::set_max_request_size(bytes);
    runtime::start(runtime::Threads { count, sched_batch }).is_ok()
}

/// The load information's `key`: `default` when absent, `None` when it
/// does not decode.
fn load_option<'a, T: rustler::Decoder<'a>>(
    env: Env<'a>,
    info: rustler::Term<'a>,
    key: Atom,
    default: T,
) -> Option<T> {
    match info.map_get(key.encode(env)) {
        Ok(value) => value.decode().ok(),
        Err(_) => Some(default),
    }
}

rustler::init!("mongoose_native_nif", load = load);
