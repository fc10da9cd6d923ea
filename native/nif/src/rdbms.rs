//! Transactions of `rdbms` pools: a checked-out connection as a resource.
//!
//! `rdbms_checkout/4` submits a checkout to the pool (strategy and queue as
//! for any request); the worker answers `{Tag, {ok, Tx, Engine}}` as soon as
//! it holds its connection for the caller, and stays busy until `Tx` is
//! released. `Tx` is a `TxRes` resource, carried to the caller inside a
//! [`Saved`] term so the ordinary reply path delivers it. Queries on it run on
//! the held connection; `rdbms_tx_release/2` gives the connection back. When
//! the last reference to the resource goes (its owner crashed, or a checkout
//! answer reached nobody), the destructor drops the transaction, which rolls
//! back and releases the connection.

use std::sync::{Arc, Mutex};

use mongoose_native::drivers::rdbms::{Checkout, CheckoutCell, Transaction};
use mongoose_native::engine::reply::{Reply, ReplySink};
use mongoose_native::engine::strategy::Choice;
use mongoose_native::{runtime, Error, Term};
use rustler::{Atom, Encoder, Env, LocalPid, OwnedEnv, ResourceArc};

use crate::convert::{decode_within, max_request_size, DecodeError, Saved, SCHEDULER_BUDGET};
use crate::reply::{error_term, slot, CallSlot, SlotRef};
use crate::{ok, reschedule, PoolRes};

pub struct TxRes {
    tx: Arc<Transaction>,
}

#[rustler::resource_impl]
impl rustler::Resource for TxRes {}

fn wrap(tx: Arc<Transaction>) -> Term {
    let env = OwnedEnv::new();
    let saved = env.run(|env| Saved::new(ResourceArc::new(TxRes { tx }).encode(env)));
    Term::Opaque(saved)
}

/// `{ok, Slot}`; the answer comes as `{Tag, {ok, Tx, Engine}}` or `{Tag,
/// {error, Reason}}`, and `cancel(Slot)` stops it (a transaction that comes
/// anyway is rolled back and released).
#[rustler::nif]
fn rdbms_checkout<'a>(
    env: Env<'a>,
    pool: ResourceArc<PoolRes>,
    hash: i64,
    pid: LocalPid,
    tag: rustler::Term<'a>,
) -> rustler::Term<'a> {
    if pool.opaque_requests {
        return error_term(env, Error::BadRequest("not an rdbms pool".into()).reason());
    }
    let slot = ResourceArc::new(CallSlot::new(pid, tag));
    let gate = Arc::new(Gate {
        slot: SlotRef(slot.clone()),
        state: Mutex::new(GateState::Pending(None)),
    });
    let cell = CheckoutCell::new(Checkout {
        reply: Reply::new(gate.clone()),
        wrap,
    });
    let request = Term::tuple(vec![Term::atom("rdbms_checkout"), Term::Opaque(cell)]);
    let choice = usize::try_from(hash).map_or(Choice::Strategy, Choice::Hash);
    let submitted = pool.pool.submit(choice, request, Reply::none());
    gate.open(submitted.is_ok());
    match submitted {
        Ok(()) => (ok(), slot).encode(env),
        Err(e) => error_term(env, e.reason()),
    }
}

enum GateState {
    /// Submit has not returned: hold what arrives.
    Pending(Option<Term>),
    Open,
    /// The submit failed and answered the caller itself.
    Shut,
}

/// Keeps a refused checkout (whose request, reply included, is dropped
/// inside `submit`) from also answering through the slot.
struct Gate {
    slot: SlotRef,
    state: Mutex<GateState>,
}

impl Gate {
    fn open(&self, submitted: bool) {
        let held = match self.state.lock() {
            Ok(mut state) => {
                let next = if submitted {
                    GateState::Open
                } else {
                    GateState::Shut
                };
                match std::mem::replace(&mut *state, next) {
                    GateState::Pending(held) if submitted => held,
                    _ => None,
                }
            }
            Err(_) => None,
        };
        if let Some(result) = held {
            self.slot.deliver(result);
        }
    }
}

impl ReplySink for Gate {
    fn deliver(&self, result: Term) {
        let forward = match self.state.lock() {
            Ok(mut state) => match &mut *state {
                GateState::Pending(held) => {
                    *held = Some(result);
                    None
                }
                GateState::Open => Some(result),
                GateState::Shut => None,
            },
            Err(_) => None,
        };
        if let Some(result) = forward {
            self.slot.deliver(result);
        }
    }

    fn is_cancelled(&self) -> bool {
        self.slot.is_cancelled()
    }
}
/// `{ok, Slot}`: the answer comes as `{Tag, Result}`; `cancel(Slot)` stops
/// it. `reschedule`: too large to decode here, call `rdbms_tx_call_dirty`.
#[rustler::nif(name = "rdbms_tx_call_nif")]
fn rdbms_tx_call<'a>(
    env: Env<'a>,
    tx: ResourceArc<TxRes>,
    req: rustler::Term<'a>,
    pid: LocalPid,
    tag: rustler::Term<'a>,
) -> rustler::Term<'a> {
    tx_call_within(env, SCHEDULER_BUDGET, tx, req, pid, tag)
}

#[rustler::nif(schedule = "DirtyCpu")]
fn rdbms_tx_call_dirty<'a>(
    env: Env<'a>,
    tx: ResourceArc<TxRes>,
    req: rustler::Term<'a>,
    pid: LocalPid,
    tag: rustler::Term<'a>,
) -> rustler::Term<'a> {
    tx_call_within(env, max_request_size(), tx, req, pid, tag)
}

fn tx_call_within<'a>(
    env: Env<'a>,
    budget: usize,
    tx: ResourceArc<TxRes>,
    req: rustler::Term<'a>,
    pid: LocalPid,
    tag: rustler::Term<'a>,
) -> rustler::Term<'a> {
    let parsed = match decode_within(req, budget) {
        Err(DecodeError::TooLarge) if budget == SCHEDULER_BUDGET => {
            return reschedule().encode(env)
        }
        Err(e) => Err(Error::BadRequest(format!(
            "request: {}",
            e.describe(budget)
        ))),
        Ok(t) => tx.tx.parse(t),
    };
    let parsed = match parsed {
        Ok(p) => p,
        Err(e) => return error_term(env, e.reason()),
    };
    let (slot, reply) = slot(pid, tag);
    let tx = tx.tx.clone();
    runtime::handle().spawn(async move {
        let result = tx.run(parsed).await;
        reply.send(result.unwrap_or_else(|e| e.to_term()));
    });
    (ok(), slot).encode(env)
}

/// Gives the connection back (after a `ROLLBACK` when `rollback`); returns at once.
#[rustler::nif]
fn rdbms_tx_release(tx: ResourceArc<TxRes>, rollback: bool) -> Atom {
    tx.tx.release(rollback);
    ok()
}
