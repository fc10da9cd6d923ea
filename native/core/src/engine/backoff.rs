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
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_cap_jittered_and_reset() {
        let mut b = Backoff::default();
        for ms in [100, 200, 400, 800, 1600, 3200, 5000, 5000] {
            let wait = b.failed();
            let full = Duration::from_millis(ms);
            assert!(
                wait >= full / 2 && wait <= full,
                "{wait:?} outside {full:?}"
            );
        }
        b.reset();
        assert!(b.failed() <= MIN);
    }
}
