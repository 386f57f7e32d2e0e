//! The time limit of a request, and its commit gate: money moves only while the answer can
//! still be delivered.
//!
//! The request-timeout middleware gives every request a [`Deadline`] (a request extension,
//! also an extractor). When the time is up, the middleware answers 503 `REQUEST_TIMEOUT` only
//! if it can close the gate first; a handler that must not charge without answering (a tool
//! call posting its hold, an x402 call settling its payment) calls [`Deadline::commit`] just
//! before the effect: if the gate was already closed it does not charge, and once it has
//! committed the middleware waits for its answer instead of timing out. Handlers also size
//! their waits (a vendor call, a receipt wait) by [`Deadline::remaining`].

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

const OPEN: u8 = 0;
const COMMITTED: u8 = 1;
const EXPIRED: u8 = 2;

/// A request's deadline and commit gate (cheap to clone; clones share the gate).
#[derive(Debug, Clone)]
pub struct Deadline {
    at: Instant,
    state: Arc<AtomicU8>,
}

impl Deadline {
    /// A deadline `limit` from now.
    pub fn after(limit: Duration) -> Deadline {
        Deadline {
            at: Instant::now() + limit,
            state: Arc::new(AtomicU8::new(OPEN)),
        }
    }

    /// No time limit (work outside a request: the reconciler, tests of routers without the
    /// middleware).
    pub fn unlimited() -> Deadline {
        Deadline::after(Duration::from_secs(365 * 24 * 3600))
    }

    /// When the time is up.
    pub fn at(&self) -> Instant {
        self.at
    }

    /// Time left (zero once it passed).
    pub fn remaining(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }

    /// Time left minus `reserve` (zero when less is left).
    pub fn remaining_after(&self, reserve: Duration) -> Duration {
        self.remaining().saturating_sub(reserve)
    }

    /// Commits the request to answering: true when the answer will be delivered (the gate
    /// was open, or this request committed before), false when the time ran out first, in
    /// which case the caller must not charge.
    pub fn commit(&self) -> bool {
        if Instant::now() >= self.at {
            // Close the gate ourselves rather than race the middleware's timer.
            let _ = self
                .state
                .compare_exchange(OPEN, EXPIRED, Ordering::AcqRel, Ordering::Acquire);
        }
        match self
            .state
            .compare_exchange(OPEN, COMMITTED, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => true,
            Err(state) => state == COMMITTED,
        }
    }

    /// Closes the gate because the time is up: true when nothing committed (answer 503),
    /// false when the handler already committed (wait for its answer).
    pub fn expire(&self) -> bool {
        match self
            .state
            .compare_exchange(OPEN, EXPIRED, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => true,
            Err(state) => state == EXPIRED,
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Deadline {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<Deadline>()
            .cloned()
            .unwrap_or_else(Deadline::unlimited))
    }
}

#[cfg(test)]
mod tests {
    use super::Deadline;
    use std::time::Duration;

    #[test]
    fn commit_and_expire_exclude_each_other() {
        let d = Deadline::after(Duration::from_secs(60));
        assert!(d.commit());
        assert!(d.commit(), "committing twice is fine");
        assert!(!d.expire(), "a committed request is waited for");

        let d = Deadline::after(Duration::from_secs(60));
        assert!(d.expire());
        assert!(!d.commit(), "too late: nothing may be charged");
        assert!(d.expire());

        let d = Deadline::after(Duration::ZERO);
        assert!(!d.commit(), "a passed deadline cannot be committed to");
        assert_eq!(d.remaining(), Duration::ZERO);
    }
}
