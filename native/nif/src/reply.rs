//! Replies as messages `{Tag, Result}` to the caller's pid.
//!
//! The target sits behind a mutex that the sender holds while sending, so
//! `cancel` has exactly two outcomes: the reply will never be sent, or it is
//! already in the caller's mailbox. That is what keeps late replies out of a
//! caller that gave up.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use mongoose_native::reply::ReplySink;
use mongoose_native::{runtime, Term};
use rustler::env::SavedTerm;
use rustler::{Encoder, LocalPid, OwnedEnv};

use crate::convert::encode;

struct Target {
    pid: LocalPid,
    env: OwnedEnv,
    tag: SavedTerm,
}

pub struct CallSlot {
    target: Mutex<Option<Target>>,
    done: AtomicBool,
}

#[rustler::resource_impl]
impl rustler::Resource for CallSlot {}

impl CallSlot {
    pub fn new(pid: LocalPid, tag: rustler::Term) -> CallSlot {
        let env = OwnedEnv::new();
        let tag = env.save(tag);
        CallSlot {
            target: Mutex::new(Some(Target { pid, env, tag })),
            done: AtomicBool::new(false),
        }
    }

    /// `true`: no reply will ever be sent; `false`: it was sent already.
    pub fn cancel(&self) -> bool {
        self.done.store(true, Ordering::Release);
        self.target
            .lock()
            .map(|mut t| t.take().is_some())
            .unwrap_or(false)
    }
}

fn send(mut target: Target, result: &Term) {
    let Target {
        pid,
        ref mut env,
        ref tag,
    } = target;
    let _ = env.send_and_clear(&pid, |env| (tag.load(env), encode(env, result)).encode(env));
}

/// What the engine holds on to while the caller keeps the resource.
pub struct SlotRef(pub rustler::ResourceArc<CallSlot>);

impl ReplySink for SlotRef {
    fn deliver(&self, result: Term) {
        self.0.done.store(true, Ordering::Release);
        let Ok(mut guard) = self.0.target.lock() else {
            return;
        };
        let Some(target) = guard.take() else { return };
        if rustler::thread::is_scheduler_thread() {
            // Only a stray drop lands here; a runtime thread may send.
            drop(guard);
            runtime::handle().spawn(async move { send(target, &result) });
        } else {
            send(target, &result);
        }
    }

    fn is_cancelled(&self) -> bool {
        self.0.done.load(Ordering::Acquire)
    }
}

/// An answer that comes later, from the runtime: `{Tag, Result}` to `pid`.
/// NIFs that start something slow (pools, listeners) return `ok` at once
/// and answer through one of these.
pub struct Later {
    env: OwnedEnv,
    pid: LocalPid,
    tag: SavedTerm,
}

impl Later {
    pub fn new(pid: LocalPid, tag: rustler::Term) -> Later {
        let env = OwnedEnv::new();
        let tag = env.save(tag);
        Later { env, pid, tag }
    }

    /// Sends `{Tag, result(Env)}`; call it from a runtime thread.
    pub fn answer<F>(mut self, result: F)
    where
        F: for<'a> FnOnce(rustler::Env<'a>) -> rustler::Term<'a>,
    {
        let Later { pid, ref tag, .. } = self;
        let _ = self
            .env
            .send_and_clear(&pid, |env| (tag.load(env), result(env)).encode(env));
    }
}
