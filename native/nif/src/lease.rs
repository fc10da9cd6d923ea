//! Exclusive leases (`engine::lease`) as resources: an rdbms transaction
//! today, an LDAP bind and search next.
//!
//! `lease/4` asks the pool for one worker's connection (strategy and queue
//! as for any request); the answer is `{Tag, {ok, Lease}}`, `Lease` a
//! [`LeaseRes`] resource. Requests on it run on the leased connection in call
//! order; `lease_release/2` gives the connection back. When the last
//! reference to the resource goes (its owner died, or the answer reached
//! nobody), the lease comes back on its own and is reset (rolled back).

use std::sync::Arc;

use mongoose_native::config::PoolType;
use mongoose_native::engine::lease::AnyLease;
use mongoose_native::{Error, Term};
use rustler::{Atom, Encoder, Env, LocalPid, OwnedEnv, ResourceArc};

use crate::convert::Saved;
use crate::reply::{error_term, slot};
use crate::{choice, ok, request_term, reschedule, PoolRes};

pub struct LeaseRes(Arc<dyn AnyLease>);

#[rustler::resource_impl]
impl rustler::Resource for LeaseRes {}

/// `{ok, Lease}`, the lease a resource.
fn wrap(lease: Arc<dyn AnyLease>) -> Term {
    let env = OwnedEnv::new();
    let saved = env.run(|env| Saved::new(ResourceArc::new(LeaseRes(lease)).encode(env)));
    Term::ok(Term::Opaque(saved))
}

/// `{ok, Slot}`; the answer comes as `{Tag, {ok, Lease}}` or `{Tag, {error,
/// Reason}}`, and `cancel(Slot)` stops it (a lease granted anyway goes back).
#[rustler::nif]
fn lease<'a>(
    env: Env<'a>,
    pool: ResourceArc<PoolRes>,
    hash: i64,
    pid: LocalPid,
    tag: rustler::Term<'a>,
) -> rustler::Term<'a> {
    if pool.kind == PoolType::Generic {
        let e = Error::BadRequest("generic pools have no connections to lease".into());
        return error_term(env, e.reason());
    }
    let (slot, reply) = slot(pid, tag);
    match pool.pool.lease(choice(hash), wrap, reply) {
        Ok(()) => (ok(), slot).encode(env),
        Err(e) => error_term(env, e.reason()),
    }
}

/// `{ok, Slot}`: the answer comes as `{Tag, Result}`; `cancel(Slot)` stops
/// it. `reschedule`: too large to decode here, call `lease_call_dirty`.
#[rustler::nif(name = "lease_call_nif")]
fn lease_call<'a>(
    env: Env<'a>,
    lease: ResourceArc<LeaseRes>,
    req: rustler::Term<'a>,
    pid: LocalPid,
    tag: rustler::Term<'a>,
) -> rustler::Term<'a> {
    let budget = crate::convert::scheduler_budget();
    call_within(env, budget, lease, req, pid, tag)
}

#[rustler::nif(schedule = "DirtyCpu")]
fn lease_call_dirty<'a>(
    env: Env<'a>,
    lease: ResourceArc<LeaseRes>,
    req: rustler::Term<'a>,
    pid: LocalPid,
    tag: rustler::Term<'a>,
) -> rustler::Term<'a> {
    let budget = crate::convert::max_request_size();
    call_within(env, budget, lease, req, pid, tag)
}

fn call_within<'a>(
    env: Env<'a>,
    budget: usize,
    lease: ResourceArc<LeaseRes>,
    req: rustler::Term<'a>,
    pid: LocalPid,
    tag: rustler::Term<'a>,
) -> rustler::Term<'a> {
    let req = match request_term(req, budget) {
        Ok(Some(r)) => r,
        Ok(None) => return reschedule().encode(env),
        Err(e) => return error_term(env, e.reason()),
    };
    let (slot, reply) = slot(pid, tag);
    match lease.0.submit(req, reply) {
        Ok(()) => (ok(), slot).encode(env),
        Err(e) => error_term(env, e.reason()),
    }
}

/// Gives the connection back after the requests already made (reset first
/// when `reset`); returns at once.
#[rustler::nif]
fn lease_release(lease: ResourceArc<LeaseRes>, reset: bool) -> Atom {
    lease.0.release(reset);
    ok()
}
