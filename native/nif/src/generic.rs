//! The `generic` pool type: `{M, F, A}` runs in an Erlang executor process
//! per worker; the engine only decides which worker and when.
//!
//! Each executor attaches its pid to its slot when it starts (and again after
//! a restart), which is this driver's notion of connecting.

use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use mongoose_native::engine::pool::{Driver, Outcome};
use mongoose_native::{Error, Result, Term};
use rustler::{Encoder, LocalPid, OwnedEnv, ResourceArc};
use tokio::sync::oneshot;

use crate::convert::Saved;

rustler::atoms! { mongoose_native_run }

/// The executor pids of one generic pool, by worker index.
pub struct Executors {
    pids: Vec<Mutex<Option<LocalPid>>>,
}

#[rustler::resource_impl]
impl rustler::Resource for Executors {}

impl Executors {
    pub fn new(n: usize) -> Executors {
        Executors {
            pids: (0..n).map(|_| Mutex::new(None)).collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.pids.len()
    }

    pub fn attach(&self, index: usize, pid: LocalPid) -> bool {
        match self.pids.get(index).map(|slot| slot.lock()) {
            Some(Ok(mut slot)) => {
                *slot = Some(pid);
                true
            }
            _ => false,
        }
    }

    fn pid(&self, index: usize) -> Option<LocalPid> {
        self.pids.get(index)?.lock().ok()?.as_ref().copied()
    }
}

/// Handed to the executor with the MFA; `generic_done` answers through it.
/// Dropped unanswered (the executor died), the worker sees its connection lost.
pub struct Done {
    tx: Mutex<Option<oneshot::Sender<Arc<Saved>>>>,
}

#[rustler::resource_impl]
impl rustler::Resource for Done {}

impl Done {
    pub fn finish(&self, result: Arc<Saved>) -> bool {
        let tx = self.tx.lock().ok().and_then(|mut tx| tx.take());
        tx.is_some_and(|tx| tx.send(result).is_ok())
    }
}

pub struct GenericDriver {
    executors: ResourceArc<Executors>,
}

impl GenericDriver {
    pub fn new(executors: ResourceArc<Executors>) -> GenericDriver {
        GenericDriver { executors }
    }
}

impl Driver for GenericDriver {
    /// The worker index: its executor is looked up at each call, so a
    /// restarted executor is picked up without reconnecting.
    type Conn = usize;
    type Request = Arc<Saved>;

    fn parse(&self, request: Term) -> Result<Arc<Saved>> {
        match request {
            Term::Opaque(any) => any
                .downcast::<Saved>()
                .map_err(|_| Error::BadRequest("generic pools take {M, F, A}".into())),
            other => Err(Error::BadRequest(format!(
                "generic pools take {{M, F, A}}, got {}",
                other.describe()
            ))),
        }
    }

    fn connect(&self, worker: usize) -> BoxFuture<'static, Result<usize>> {
        let ready = self.executors.pid(worker).is_some();
        Box::pin(async move {
            if ready {
                Ok(worker)
            } else {
                Err(Error::Connect(format!(
                    "generic executor {worker} is not running"
                )))
            }
        })
    }

    fn execute(&self, worker: usize, mfa: Arc<Saved>) -> BoxFuture<'static, Outcome> {
        let pid = self.executors.pid(worker);
        Box::pin(async move { run(pid, mfa).await.into() })
    }
}

/// Hands `{M, F, A}` to the worker's executor and waits for its result; a
/// missing or dead executor breaks the worker, which waits for its restart.
async fn run(pid: Option<LocalPid>, mfa: Arc<Saved>) -> Result<Term> {
    let pid = pid.ok_or_else(|| Error::ConnectionLost("generic executor is gone".into()))?;
    let (tx, rx) = oneshot::channel();
    let done = ResourceArc::new(Done {
        tx: Mutex::new(Some(tx)),
    });
    let mut env = OwnedEnv::new();
    env.send_and_clear(&pid, |env| {
        (mongoose_native_run(), done, mfa.load(env)).encode(env)
    })
    .map_err(|_| Error::ConnectionLost("generic executor is gone".into()))?;
    match rx.await {
        Ok(result) => Ok(Term::Opaque(result)),
        Err(_) => Err(Error::ConnectionLost(
            "generic executor died while running the call".into(),
        )),
    }
}
