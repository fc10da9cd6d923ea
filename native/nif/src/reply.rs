//! Answers as messages `{Tag, Result}` to the caller's pid, through a slot
//! the caller can cancel.
//!
//! The target sits behind a mutex that the sender holds while sending, so
//! `cancel` has exactly two outcomes: the answer will never be sent, or it
//! is already in the caller's mailbox. That is what keeps late answers out
//! of a caller that gave up.
//!
//! A streamed request's parts come first, as `{Tag, part, Part}`, one at a
//! time: the next is produced only after the caller's `more(Slot)`. Such a
//! slot monitors its caller, so a caller that dies mid-stream frees the
//! worker instead of leaving it waiting for credit.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam_queue::ArrayQueue;
use futures::future::BoxFuture;
use futures::FutureExt;
use mongoose_native::engine::reply::{Reply, ReplySink};
use mongoose_native::{runtime, Error, Term};
use once_cell::sync::Lazy;
use rustler::env::SavedTerm;
use rustler::{Encoder, Env, LocalPid, Monitor, OwnedEnv, ResourceArc};
use tokio::sync::Semaphore;

use crate::convert::encode;

rustler::atoms! { ok, error, part }

/// Cleared envs kept for the next answers: a fresh one per call costs an
/// allocation and a free in the VM's allocator, about as much as the rest
/// of the answer's sending. Past the bound, envs are freed.
static SPARE_ENVS: Lazy<ArrayQueue<OwnedEnv>> = Lazy::new(|| ArrayQueue::new(1024));

fn take_env() -> OwnedEnv {
    SPARE_ENVS.pop().unwrap_or_default()
}

/// Keeps `env`, which sending has cleared, for another answer.
fn keep_env(env: OwnedEnv) {
    let _ = SPARE_ENVS.push(env);
}

struct Target {
    pid: LocalPid,
    env: OwnedEnv,
    tag: SavedTerm,
}

pub struct CallSlot {
    target: Mutex<Option<Target>>,
    done: AtomicBool,
    /// The caller's `more` calls not yet used by a part; closed on cancel.
    credit: Semaphore,
}

#[rustler::resource_impl]
impl rustler::Resource for CallSlot {
    fn down<'a>(&'a self, _env: Env<'a>, _pid: LocalPid, _monitor: Monitor) {
        self.cancel();
    }
}

impl CallSlot {
    pub fn new(pid: LocalPid, tag: rustler::Term) -> CallSlot {
        let env = take_env();
        let tag = env.save(tag);
        CallSlot {
            target: Mutex::new(Some(Target { pid, env, tag })),
            done: AtomicBool::new(false),
            credit: Semaphore::new(0),
        }
    }

    /// `true`: no answer will ever be sent; `false`: it was sent already.
    /// Parts sent before it may still be in the mailbox.
    pub fn cancel(&self) -> bool {
        self.done.store(true, Ordering::Release);
        self.credit.close();
        self.target
            .lock()
            .map(|mut t| t.take().is_some())
            .unwrap_or(false)
    }

    /// The caller took a part and asks for the next.
    pub fn more(&self) {
        self.credit.add_permits(1);
    }

    /// Sends `{Tag, part, Part}` unless cancelled; `false` if it was not sent.
    fn send_part(&self, part_term: &Term) -> bool {
        let Ok(guard) = self.target.lock() else {
            return false;
        };
        let Some(Target { pid, env, tag }) = guard.as_ref() else {
            return false;
        };
        // The tag stays saved in the slot's env for the final answer; the
        // part goes from an env of its own, which sending clears.
        let mut msg_env = take_env();
        let sent = msg_env.send_and_clear(pid, |msg| {
            let tag = env.run(|env| tag.load(env).in_env(msg));
            (tag, part(), encode(msg, part_term)).encode(msg)
        });
        keep_env(msg_env);
        sent.is_ok()
    }

    /// Sends `{Tag, answer(Env)}` unless cancelled, at most once; from a
    /// runtime thread (a scheduler thread may not send).
    fn answer<F>(&self, answer: F)
    where
        F: for<'a> FnOnce(Env<'a>) -> rustler::Term<'a>,
    {
        self.done.store(true, Ordering::Release);
        let Ok(mut guard) = self.target.lock() else {
            return;
        };
        if let Some(Target { pid, mut env, tag }) = guard.take() {
            let _ = env.send_and_clear(&pid, |env| (tag.load(env), answer(env)).encode(env));
            keep_env(env);
        }
    }
}

/// What the engine holds on to while the caller keeps the slot.
pub struct SlotRef(pub ResourceArc<CallSlot>);

impl ReplySink for SlotRef {
    fn deliver(&self, result: Term) {
        if rustler::thread::is_scheduler_thread() {
            // Only a stray drop lands here; a runtime thread may send.
            let slot = self.0.clone();
            runtime::handle().spawn(async move { slot.answer(|env| encode(env, &result)) });
        } else {
            self.0.answer(|env| encode(env, &result));
        }
    }

    fn is_cancelled(&self) -> bool {
        self.0.done.load(Ordering::Acquire)
    }

    fn part(&self, part: Term) -> BoxFuture<'static, bool> {
        let slot = self.0.clone();
        Box::pin(async move {
            if !slot.send_part(&part) {
                return false;
            }
            match slot.credit.acquire().await {
                Ok(permit) => {
                    permit.forget();
                    true
                }
                Err(_) => false,
            }
        })
    }
}

/// A slot for the caller (it gets `{ok, Slot}`) and the [`Reply`] that
/// answers through it.
pub fn slot(pid: LocalPid, tag: rustler::Term) -> (ResourceArc<CallSlot>, Reply) {
    let slot = ResourceArc::new(CallSlot::new(pid, tag));
    let reply = Reply::new(Arc::new(SlotRef(slot.clone())));
    (slot, reply)
}

/// A slot for a streamed request: as `slot`, cancelled when the caller dies.
pub fn stream_slot(env: Env, pid: LocalPid, tag: rustler::Term) -> (ResourceArc<CallSlot>, Reply) {
    let (slot, reply) = slot(pid, tag);
    if env.monitor(&slot, &pid).is_none() {
        // Already dead: nobody will ask for a part.
        slot.cancel();
    }
    (slot, reply)
}

/// `{error, Reason}`, `Reason` a library error's `{Kind, Message}`.
pub fn error_term(env: Env, reason: Term) -> rustler::Term {
    (error(), encode(env, &reason)).encode(env)
}

/// For NIFs that start something slow: returns `{ok, Slot}` at once, runs
/// `work` on the runtime and answers `{Tag, Value}` or `{Tag, {error,
/// Reason}}` (a panic included) unless `cancel(Slot)` came first; a value
/// never sent (a resource, say) is dropped.
pub fn spawn_answer<'a, T, W>(
    env: Env<'a>,
    pid: LocalPid,
    tag: rustler::Term<'a>,
    work: W,
) -> rustler::Term<'a>
where
    T: Encoder,
    W: Future<Output = Result<T, Term>> + Send + 'static,
{
    let slot = ResourceArc::new(CallSlot::new(pid, tag));
    let to = slot.clone();
    runtime::handle().spawn(async move {
        let outcome = AssertUnwindSafe(work)
            .catch_unwind()
            .await
            .unwrap_or_else(|_| {
                log::error!("a start task panicked");
                Err(Error::Internal("the start panicked".into()).reason())
            });
        to.answer(|env| match outcome {
            Ok(value) => value.encode(env),
            Err(reason) => error_term(env, reason),
        });
    });
    (ok(), slot).encode(env)
}
