//! Stop requests: the first SIGTERM / SIGINT asks the worker to stop claiming and to let
//! the current CMD finish within the grace period; the second stops it at once.

use anyhow::{Context as _, Result};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

/// How many stop signals arrived (0, 1, 2+), shared by the worker's steps.
#[derive(Debug, Clone)]
pub struct Stop {
    count: watch::Receiver<u32>,
}

impl Stop {
    /// Installs the handlers; call once per process, inside the runtime.
    pub fn install() -> Result<Self> {
        let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
        let (tx, rx) = watch::channel(0u32);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
                tx.send_modify(|n| *n += 1);
            }
        });
        Ok(Stop { count: rx })
    }

    /// Signals received so far.
    pub fn count(&self) -> u32 {
        *self.count.borrow()
    }

    /// True after the first signal.
    pub fn requested(&self) -> bool {
        self.count() > 0
    }

    /// Resolves when at least `n` signals have arrived.
    pub async fn reached(&self, n: u32) {
        let mut rx = self.count.clone();
        let _ = rx.wait_for(|c| *c >= n).await;
    }

    /// Sleeps `d`, or less when a stop is requested.
    pub async fn sleep(&self, d: std::time::Duration) {
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = self.reached(1) => {}
        }
    }
}
