//! Worker selection, with inaka/worker_pool's meanings.

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// The worker with the fewest requests queued or in flight.
    Best,
    Random,
    /// Round robin.
    Next,
    /// The first idle worker, waiting up to `call_timeout` for one.
    Available,
    /// The next idle worker, or an error at once.
    NextAvailable,
}

impl Strategy {
    pub const NAMES: [&'static str; 5] = [
        "best_worker",
        "random_worker",
        "next_worker",
        "available_worker",
        "next_available_worker",
    ];

    pub fn parse(name: &str) -> Result<Strategy> {
        Ok(match name {
            "best_worker" => Strategy::Best,
            "random_worker" => Strategy::Random,
            "next_worker" => Strategy::Next,
            "available_worker" => Strategy::Available,
            "next_available_worker" => Strategy::NextAvailable,
            other => return Err(Error::BadRequest(format!("unknown strategy {other}"))),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Strategy::Best => "best_worker",
            Strategy::Random => "random_worker",
            Strategy::Next => "next_worker",
            Strategy::Available => "available_worker",
            Strategy::NextAvailable => "next_available_worker",
        }
    }
}

/// How one request picks its worker.
#[derive(Debug, Clone, Copy)]
pub enum Choice {
    /// The pool's strategy.
    Strategy,
    /// `{hash_worker, Key}`: Erlang computes `erlang:phash2(Key, Workers)`.
    Hash(usize),
}

/// Index of the least loaded worker (the first one on ties, as wpool does).
pub fn least_loaded(loads: impl Iterator<Item = usize>) -> Option<(usize, usize)> {
    loads.enumerate().min_by_key(|&(i, load)| (load, i))
}

#[cfg(test)]
#[path = "strategy_tests.rs"]
mod tests;
