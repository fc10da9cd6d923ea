//! The pool engine, the same for every pool type: workers and their
//! queues, strategies, reconnection, and the reply path back to the caller.

pub mod backoff;
pub mod lease;
pub mod load;
pub mod metrics;
pub mod pool;
pub mod reply;
pub mod strategy;
