//! The library's error type (global distribution wraps it in `GdError`),
//! encoded to `{Kind, Message}` by [`Error::reason`].

use crate::term::Term;

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum Error {
    /// A configuration value is wrong: the message names the TOML path, the
    /// expected form and what was found (never a secret's value).
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    BadRequest(String),
    /// The worker has no open connection right now; it is reconnecting.
    #[error("{0}")]
    NoConnection(String),
    /// A connection broke while carrying a request; the worker replaces it.
    #[error("{0}")]
    ConnectionLost(String),
    #[error("{0}")]
    Timeout(String),
    #[error("every worker is busy or its queue is full")]
    NoAvailableWorkers,
    /// `available_worker`: no worker became idle within `call_timeout`.
    #[error("no worker became available within call_timeout")]
    WorkerWaitTimeout,
    #[error("the pool was stopped")]
    PoolStopped,
    /// A start failed because the server could not be reached or refused us.
    #[error("{0}")]
    Connect(String),
    /// An error the server answered with; the connection stays usable.
    #[error("{0}")]
    Server(String),
    #[error("{0}")]
    Internal(String),
}

impl Error {
    /// Every [`Error::kind`], in the order the pool metrics count them.
    pub const KINDS: [&'static str; 11] = [
        "invalid_config",
        "bad_request",
        "no_connection",
        "connection_lost",
        "timeout",
        "no_available_workers",
        "worker_wait_timeout",
        "pool_stopped",
        "connect_failed",
        "server_error",
        "internal",
    ];

    pub fn kind(&self) -> &'static str {
        match self {
            Error::Config(_) => "invalid_config",
            Error::BadRequest(_) => "bad_request",
            Error::NoConnection(_) => "no_connection",
            Error::ConnectionLost(_) => "connection_lost",
            Error::Timeout(_) => "timeout",
            Error::NoAvailableWorkers => "no_available_workers",
            Error::WorkerWaitTimeout => "worker_wait_timeout",
            Error::PoolStopped => "pool_stopped",
            Error::Connect(_) => "connect_failed",
            Error::Server(_) => "server_error",
            Error::Internal(_) => "internal",
        }
    }

    /// Whether the connection that produced this error must be replaced.
    pub fn breaks_connection(&self) -> bool {
        matches!(self, Error::ConnectionLost(_) | Error::Timeout(_))
    }

    /// `{Kind, Message}`: what `{error, Reason}` carries back to Erlang.
    pub fn reason(&self) -> Term {
        Term::tuple(vec![Term::atom(self.kind()), Term::from(self.to_string())])
    }

    pub fn to_term(&self) -> Term {
        Term::error(self.reason())
    }
}

pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
#[path = "error_tests.rs"]
mod tests;
