//! One reply per request, or none once the caller gave up.
//!
//! The NIF glue implements [`ReplySink`] on top of the caller's pid and
//! reference; the engine only ever sees a [`Reply`]. A `Reply` that is
//! dropped without being answered (a panicking task, a stopped pool) answers
//! `{error, {no_reply, ...}}` itself, so no caller waits for nothing.

use std::sync::Arc;

use crate::term::Term;

pub trait ReplySink: Send + Sync {
    /// Delivers the result unless the caller cancelled; at most once.
    fn deliver(&self, result: Term);
    /// The caller stopped waiting: work for it may be skipped.
    fn is_cancelled(&self) -> bool;
}

pub struct Reply {
    sink: Option<Arc<dyn ReplySink>>,
}

impl Reply {
    pub fn new(sink: Arc<dyn ReplySink>) -> Reply {
        Reply { sink: Some(sink) }
    }

    /// For casts: nobody listens.
    pub fn none() -> Reply {
        Reply { sink: None }
    }

    pub fn send(mut self, result: Term) {
        if let Some(sink) = self.sink.take() {
            sink.deliver(result);
        }
    }

    pub fn is_cancelled(&self) -> bool {
        self.sink.as_ref().is_some_and(|s| s.is_cancelled())
    }

    /// The caller was answered another way (the submit itself failed).
    pub fn disarm(mut self) {
        self.sink = None;
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        if let Some(sink) = self.sink.take() {
            sink.deliver(Term::error(Term::tuple(vec![
                Term::atom("no_reply"),
                Term::from("the request was dropped before it was answered"),
            ])));
        }
    }
}

/// A sink for Rust callers of a pool: the answer arrives on a oneshot
/// channel; dropping the receiver counts as cancelling.
pub struct OneShot(std::sync::Mutex<Option<tokio::sync::oneshot::Sender<Term>>>);

impl ReplySink for OneShot {
    fn deliver(&self, result: Term) {
        if let Some(tx) = self.0.lock().ok().and_then(|mut s| s.take()) {
            let _ = tx.send(result);
        }
    }
    fn is_cancelled(&self) -> bool {
        self.0
            .lock()
            .map(|s| s.as_ref().is_none_or(|tx| tx.is_closed()))
            .unwrap_or(true)
    }
}

/// A [`Reply`] whose answer the caller awaits on the returned receiver.
pub fn oneshot() -> (Reply, tokio::sync::oneshot::Receiver<Term>) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    (
        Reply::new(Arc::new(OneShot(std::sync::Mutex::new(Some(tx))))),
        rx,
    )
}
