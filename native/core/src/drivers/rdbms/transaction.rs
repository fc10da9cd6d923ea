//! A connection held for one caller's transaction; see the module doc of `rdbms`.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::{oneshot, Mutex, OwnedMutexGuard};

use super::request::{parse_request, RdbmsRequest};
use super::{run_request, Conn, ConnState, Shared};
use crate::error::{Error, Result};
use crate::runtime;
use crate::term::Term;

/// How long a rollback of an abandoned transaction may take before the
/// connection is dropped instead.
const ROLLBACK_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection checked out of its worker for one caller (see the module
/// documentation). Dropping it rolls back and gives the connection back.
pub struct Transaction {
    conn: Mutex<Option<OwnedMutexGuard<ConnState>>>,
    shared: Arc<Shared>,
    /// Fired (or dropped) once the connection went back.
    released: std::sync::Mutex<Option<oneshot::Sender<()>>>,
}

impl Transaction {
    pub(super) async fn hold(
        shared: &Arc<Shared>,
        conn: Conn,
    ) -> (Arc<Transaction>, oneshot::Receiver<()>) {
        let guard = conn.lock_owned().await;
        let (done, released) = oneshot::channel();
        let tx = Arc::new(Transaction {
            conn: Mutex::new(Some(guard)),
            shared: shared.clone(),
            released: std::sync::Mutex::new(Some(done)),
        });
        (tx, released)
    }

    fn signal_released(&self) -> Option<oneshot::Sender<()>> {
        self.released.lock().ok().and_then(|mut r| r.take())
    }

    /// Any request but a checkout (the connection is held already).
    pub fn parse(&self, request: Term) -> Result<RdbmsRequest> {
        match parse_request(request)? {
            RdbmsRequest::Checkout(_) => Err(Error::BadRequest(
                "a transaction's connection is checked out already".into(),
            )),
            other => Ok(other),
        }
    }

    /// Runs a request on the held connection; requests queue in call order.
    pub async fn run(&self, request: RdbmsRequest) -> Result<Term> {
        if let RdbmsRequest::Engine = request {
            return Ok(Term::atom(self.shared.engine.name()));
        }
        let work = async {
            let mut held = self.conn.lock().await;
            match held.as_mut() {
                Some(state) => run_request(&self.shared, state, &request).await,
                None => Err(Error::BadRequest(
                    "the transaction's connection was released".into(),
                )),
            }
        };
        AssertUnwindSafe(work)
            .catch_unwind()
            .await
            .unwrap_or_else(|_| {
                log::error!("an rdbms transaction request panicked");
                Err(Error::Internal("the request panicked".into()))
            })
    }

    /// Gives the connection back to its worker, after a `ROLLBACK` if
    /// `rollback`; returns at once (the release waits for running requests).
    pub fn release(self: &Arc<Self>, rollback: bool) {
        let this = self.clone();
        runtime::handle().spawn(async move {
            let taken = this.conn.lock().await.take();
            if let Some(mut state) = taken {
                if rollback {
                    rollback_quietly(&this.shared, &mut state).await;
                }
                drop(state);
                if let Some(done) = this.signal_released() {
                    let _ = done.send(());
                }
            }
        });
    }
}

async fn rollback_quietly(shared: &Shared, state: &mut ConnState) {
    let Some(db) = state.db.as_mut() else { return };
    let rollback = RdbmsRequest::Query("ROLLBACK".into());
    let done = tokio::time::timeout(ROLLBACK_TIMEOUT, db.run(&rollback)).await;
    if !matches!(done, Ok(Ok(_))) {
        log::warn!(
            "rdbms {}: rollback of an abandoned transaction failed; dropping the connection",
            shared.target
        );
        state.db = None;
    }
}

impl Drop for Transaction {
    fn drop(&mut self) {
        let done = self.signal_released();
        if let Some(mut state) = self.conn.get_mut().take() {
            let shared = self.shared.clone();
            runtime::handle().spawn(async move {
                rollback_quietly(&shared, &mut state).await;
                drop(state);
                drop(done);
            });
        }
    }
}
