//! Exponential backoff with jitter, for callers that retry transient failures
//! ([`crate::Error::is_transient`]): the `agentpmt` CLI workers use it, and so can agents.
//!
//! ```
//! use agentpmt_sdk::backoff::Backoff;
//! use std::time::Duration;
//! let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
//! let first = backoff.next_delay();
//! assert!(first <= Duration::from_millis(200));
//! backoff.reset();
//! ```

use rand::Rng as _;
use std::time::Duration;

/// Delays that double from `initial` up to `max`, each drawn uniformly from
/// `[delay / 2, delay]` ("equal jitter"), so that many workers that failed together do not
/// retry together.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
    attempts: u32,
}

impl Backoff {
    /// A backoff starting at `initial` (at least 1 ms) and capped at `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        let initial = initial.max(Duration::from_millis(1));
        let max = max.max(initial);
        Backoff {
            initial,
            max,
            current: initial,
            attempts: 0,
        }
    }

    /// The delay before the next attempt; doubles the next one (up to `max`).
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.current;
        self.current = (self.current * 2).min(self.max);
        self.attempts = self.attempts.saturating_add(1);
        let low = ceiling / 2;
        let spread = ceiling.saturating_sub(low).as_millis() as u64;
        low + Duration::from_millis(rand::thread_rng().gen_range(0..=spread))
    }

    /// Delays handed out since the last [`Backoff::reset`].
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Back to `initial` (after a success).
    pub fn reset(&mut self) {
        self.current = self.initial;
        self.attempts = 0;
    }

    /// The `n`-th delay (0-based) of a fresh backoff, without state: for per-item retry
    /// schedules kept elsewhere.
    pub fn delay_for(&self, n: u32) -> Duration {
        let mut b = Backoff::new(self.initial, self.max);
        let mut d = Duration::ZERO;
        for _ in 0..=n.min(64) {
            d = b.next_delay();
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_with_jitter_and_stay_capped() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(800));
        let delays: Vec<Duration> = (0..8).map(|_| b.next_delay()).collect();
        let ceilings = [100u64, 200, 400, 800, 800, 800, 800, 800];
        for (d, c) in delays.iter().zip(ceilings) {
            let c = Duration::from_millis(c);
            assert!(*d >= c / 2 && *d <= c, "{d:?} not in [{:?}, {c:?}]", c / 2);
        }
        assert_eq!(b.attempts(), 8);
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn delay_for_follows_the_same_schedule() {
        let b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let d = b.delay_for(3);
        assert!(
            d >= Duration::from_secs(4) && d <= Duration::from_secs(8),
            "{d:?}"
        );
        assert!(b.delay_for(40) <= Duration::from_secs(60));
    }
}
