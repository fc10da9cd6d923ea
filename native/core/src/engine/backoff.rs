//! Capped exponential backoff with jitter for reopening a connection: the
//! one policy of every worker, the engine's and rabbit's lanes alike.

use std::time::Duration;

const MIN: Duration = Duration::from_millis(100);
const MAX: Duration = Duration::from_secs(5);

pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff { next: MIN }
    }
}

impl Backoff {
    /// After a connect that worked: the next failure waits the least again.
    pub fn reset(&mut self) {
        self.next = MIN;
    }

    /// The wait after a failed connect: between half the backoff and all of
    /// it, so that the workers of a pool whose server came back do not all
    /// reconnect at the same instant; the backoff doubles, up to 5 s.
    pub fn failed(&mut self) -> Duration {
        let wait = self.next.mul_f64(rand::random_range(0.5..=1.0));
        self.next = (self.next * 2).min(MAX);
        wait
    }
}

#[cfg(test)]
#[path = "backoff_tests.rs"]
mod tests;
