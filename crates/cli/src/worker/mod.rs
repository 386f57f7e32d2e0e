//! What `agentpmt jobs run` and `agentpmt schedules work` share: event output
//! ([`events`]), running CMD with a timeout, a grace period and a clean environment
//! ([`command`]), stopping on SIGTERM / SIGINT ([`signals`]) and retrying transient
//! failures with backoff ([`retry`]).
//!
//! Exit statuses of both workers (see [`ExitStatus`]): 0 clean stop, 1 other error,
//! 2 configuration error (bad key, wrong password, refused bearer), 3 every item handled
//! failed or was abandoned, 4 CMD cannot be started, 130 stopped by a second signal.

pub mod command;
pub mod events;
pub mod idle;
pub mod jobs_run;
pub mod retry;
pub mod schedules_work;
pub mod signals;

use clap::Args;
use std::time::Duration;

/// The exit statuses of the workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// 1: an error that is neither of the others.
    Error = 1,
    /// 2: the setup is wrong (key, password, bearer, server URL); retrying cannot help.
    Configuration = 2,
    /// 3: at least one item was handled and none of them succeeded.
    AllFailed = 3,
    /// 4: CMD cannot be started (not found, not executable).
    CommandUnavailable = 4,
    /// 130: a second SIGTERM / SIGINT stopped the worker at once.
    Interrupted = 130,
}

/// A worker that ends with a status other than 0 or 1; `main` exits with `status`.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct WorkerExit {
    pub status: ExitStatus,
    pub message: String,
}

impl WorkerExit {
    /// The worker exit as an `anyhow` error.
    pub fn error(status: ExitStatus, message: impl Into<String>) -> anyhow::Error {
        anyhow::Error::new(WorkerExit {
            status,
            message: message.into(),
        })
    }
}

/// Marks an error the worker already reported in its summary event, so that `--json`
/// stdout does not get a second object for it (the text on stderr is still printed).
#[derive(Debug, thiserror::Error)]
#[error("")]
pub struct Reported;

/// True when `err` was already reported in a worker's summary.
pub fn is_reported(err: &anyhow::Error) -> bool {
    err.downcast_ref::<Reported>().is_some()
}

/// The exit status `main` should use for a failed command.
pub fn exit_status_of(err: &anyhow::Error) -> u8 {
    err.chain()
        .find_map(|c| c.downcast_ref::<WorkerExit>())
        .map(|w| w.status as u8)
        .unwrap_or(ExitStatus::Error as u8)
}

/// Flags both workers share.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// Stop after handling this many items.
    #[arg(long)]
    pub max: Option<u64>,
    /// Keep polling every SECS seconds when there is nothing to do, and never exit on
    /// transient errors (otherwise stop when nothing is left).
    #[arg(long, value_name = "SECS")]
    pub watch: Option<u64>,
    /// Stop CMD after SECS seconds (SIGTERM to its process group, SIGKILL 2 s later) and
    /// release (schedules) or abandon (jobs) its item [default: no limit].
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub timeout_secs: Option<u64>,
    /// After SIGTERM / SIGINT (or a timeout), how long CMD may still finish before it is
    /// terminated (its process group gets SIGTERM, then SIGKILL 2 s later).
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub grace_secs: u64,
    /// With --watch: print a heartbeat line every SECS seconds while idle (0: never).
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub heartbeat_secs: u64,
    /// Longest wait between retries of a transient failure (backoff doubles from 0.5 s).
    #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub retry_max_secs: u64,
    /// Without --watch: give up on a transient failure after retrying this long.
    #[arg(long, value_name = "SECS", default_value_t = 120)]
    pub retry_for_secs: u64,
}

impl CommonArgs {
    /// The CMD timeout, if any.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout_secs.map(Duration::from_secs)
    }

    /// The grace period after a stop request.
    pub fn grace(&self) -> Duration {
        Duration::from_secs(self.grace_secs)
    }

    /// The heartbeat interval while idle, if any.
    pub fn heartbeat(&self) -> Option<Duration> {
        (self.heartbeat_secs > 0).then(|| Duration::from_secs(self.heartbeat_secs))
    }
}

/// The worker's exit status from its tally: [`ExitStatus::AllFailed`] when items were
/// handled and none succeeded.
pub fn finish(handled: usize, succeeded: usize) -> anyhow::Result<()> {
    if handled > 0 && succeeded == 0 {
        return Err(WorkerExit::error(
            ExitStatus::AllFailed,
            format!("none of the {handled} items handled succeeded"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn common(timeout: Option<u64>, grace: u64) -> CommonArgs {
        CommonArgs {
            max: None,
            watch: None,
            timeout_secs: timeout,
            grace_secs: grace,
            heartbeat_secs: 300,
            retry_max_secs: 30,
            retry_for_secs: 120,
        }
    }

    #[test]
    fn the_lease_covers_timeout_and_grace() {
        use schedules_work::lease_for;
        assert_eq!(lease_for(900, &common(None, 10)), 900);
        assert_eq!(lease_for(60, &common(Some(600), 10)), 640);
        assert_eq!(lease_for(3600, &common(Some(600), 10)), 3600);
        assert_eq!(lease_for(60, &common(Some(86_400), 10)), 86_400);
    }

    #[test]
    fn exit_statuses() {
        assert_eq!(exit_status_of(&anyhow::anyhow!("plain")), 1);
        let e = WorkerExit::error(ExitStatus::Configuration, "bad key").context("outer");
        assert_eq!(exit_status_of(&e), 2);
        assert_eq!(exit_status_of(&finish(2, 0).unwrap_err()), 3);
        assert!(finish(0, 0).is_ok() && finish(3, 1).is_ok());
        assert_eq!(ExitStatus::CommandUnavailable as u8, 4);
        assert_eq!(ExitStatus::Interrupted as u8, 130);
    }

    #[test]
    fn a_missing_program_is_found_missing() {
        let err = command::Cmd::find(&["/no/such/program".into()]).unwrap_err();
        assert_eq!(exit_status_of(&err), 4);
        let err = command::Cmd::find(&["no-such-program-on-path-xyz".into()]).unwrap_err();
        assert_eq!(exit_status_of(&err), 4);
        assert!(command::Cmd::find(&["sh".into()]).is_ok());
    }
}
