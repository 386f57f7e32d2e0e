//! Retrying a server call through transient failures (transport errors, 5xx, 429) with
//! exponential backoff and jitter; configuration errors end the worker with status 2.

use super::events::Events;
use super::signals::Stop;
use super::{ExitStatus, WorkerExit};
use agentpmt_sdk::backoff::Backoff;
use serde_json::json;
use std::future::Future;
use std::time::{Duration, Instant};

/// How a worker retries.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Longest wait between attempts.
    pub max_delay: Duration,
    /// Give up after retrying this long (`None`: never, as with `--watch`).
    pub give_up_after: Option<Duration>,
}

/// Why a call finally failed.
#[derive(Debug)]
pub enum CallError {
    /// The server refused the request (not transient, not configuration): the caller
    /// decides (a lost lease, a taken job, …).
    Refused(agentpmt_sdk::Error),
    /// The worker must end: configuration error, retries exhausted, or a second signal
    /// while retrying.
    Fatal(anyhow::Error),
    /// A stop was requested while an interruptible call was being retried.
    Stopped,
}

impl RetryPolicy {
    /// Calls `call` until it succeeds, is refused, or must end. `what` names the call in
    /// the log. A second stop signal ends the retries; so does the first when
    /// `interruptible` (calls that fetch new work, not those that report finished work).
    pub async fn run<T, F, Fut>(
        &self,
        events: &Events,
        stop: &Stop,
        what: &str,
        interruptible: bool,
        mut call: F,
    ) -> Result<T, CallError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = agentpmt_sdk::Result<T>>,
    {
        let started = Instant::now();
        let mut backoff = Backoff::new(Duration::from_millis(500), self.max_delay);
        loop {
            let err = match call().await {
                Ok(v) => {
                    if backoff.attempts() > 0 {
                        events.emit(
                            "recovered",
                            &format!("{what}: the server answers again"),
                            json!({"call": what, "retries": backoff.attempts()}),
                        );
                    }
                    return Ok(v);
                }
                Err(e) => e,
            };
            if err.is_configuration() {
                return Err(CallError::Fatal(WorkerExit::error(
                    ExitStatus::Configuration,
                    format!("{what}: configuration error, not retrying: {err}"),
                )));
            }
            if !err.is_transient() {
                return Err(CallError::Refused(err));
            }
            if self
                .give_up_after
                .is_some_and(|limit| started.elapsed() >= limit)
            {
                return Err(CallError::Fatal(anyhow::Error::new(err).context(format!(
                    "{what}: still failing after {} s of retries",
                    started.elapsed().as_secs()
                ))));
            }
            if interruptible && stop.requested() {
                return Err(CallError::Stopped);
            }
            if stop.count() >= 2 {
                return Err(CallError::Fatal(WorkerExit::error(
                    ExitStatus::Interrupted,
                    format!("{what}: stopped while retrying"),
                )));
            }
            let delay = err
                .retry_after()
                .unwrap_or_default()
                .max(backoff.next_delay());
            events.emit(
                "retrying",
                &format!(
                    "{what}: {err}; retry {} in {} ms",
                    backoff.attempts(),
                    delay.as_millis()
                ),
                json!({"call": what, "error": err.to_string(), "attempt": backoff.attempts(),
                       "delay_ms": delay.as_millis() as u64}),
            );
            let wake_on = if interruptible { 1 } else { 2 };
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stop.reached(wake_on) => {}
            }
        }
    }
}

impl CallError {
    /// Into an `anyhow` error, for callers that treat a refusal as fatal too.
    pub fn into_anyhow(self) -> anyhow::Error {
        match self {
            CallError::Refused(e) => anyhow::Error::new(e),
            CallError::Fatal(e) => e,
            CallError::Stopped => anyhow::anyhow!("stopped while retrying"),
        }
    }
}
