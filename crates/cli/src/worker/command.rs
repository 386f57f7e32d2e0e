//! Running CMD for one item: found before anything is claimed, started in its own process
//! group with a clean environment (every inherited `AGENTPMT_*` variable removed, then
//! only the worker's documented variables set), bounded by a timeout, and given a grace
//! period when the worker is asked to stop.

use super::signals::Stop;
use super::{ExitStatus, WorkerExit};
use anyhow::{anyhow, Result};
use rustix::process::{kill_process_group, Pid, Signal};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// How long a terminated CMD has between SIGTERM and SIGKILL.
const TERM_TO_KILL: Duration = Duration::from_secs(2);

/// CMD, checked to exist.
#[derive(Debug, Clone)]
pub struct Cmd {
    program: PathBuf,
    name: String,
    args: Vec<String>,
}

impl Cmd {
    /// Finds CMD's program (a path, or a name on `PATH`) and checks it is an executable
    /// file; [`ExitStatus::CommandUnavailable`] otherwise, so nothing is claimed for a
    /// CMD that cannot run.
    pub fn find(command: &[String]) -> Result<Cmd> {
        let (name, args) = command
            .split_first()
            .ok_or_else(|| anyhow!("give the command to run after --"))?;
        let unavailable = |why: &str| {
            WorkerExit::error(
                ExitStatus::CommandUnavailable,
                format!("cannot run {name}: {why}; nothing was claimed"),
            )
        };
        let candidates: Vec<PathBuf> = if name.contains('/') {
            vec![PathBuf::from(name)]
        } else {
            std::env::var_os("PATH")
                .map(|p| std::env::split_paths(&p).map(|d| d.join(name)).collect())
                .unwrap_or_default()
        };
        let program = candidates
            .into_iter()
            .find(|p| is_executable(p))
            .ok_or_else(|| unavailable("not found, or not an executable file"))?;
        Ok(Cmd {
            program,
            name: name.clone(),
            args: args.to_vec(),
        })
    }

    /// The name CMD was given as.
    pub fn name(&self) -> &str {
        &self.name
    }
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// One run's input.
#[derive(Debug, Default)]
pub struct Invocation {
    /// Variables set for CMD (after every inherited `AGENTPMT_*` is removed).
    pub env: Vec<(String, String)>,
    /// Written to CMD's stdin (else stdin is empty).
    pub stdin: Option<Vec<u8>>,
    /// Keep CMD's stdout (jobs: the proof); otherwise it is copied to stderr.
    pub capture_stdout: bool,
    pub timeout: Option<Duration>,
    pub grace: Duration,
}

/// How a run ended.
#[derive(Debug)]
pub enum Finish {
    /// CMD exited by itself (also within the grace period after a stop request).
    Exited {
        code: Option<i32>,
        signal: Option<i32>,
        stdout: Vec<u8>,
    },
    /// The timeout passed; CMD was terminated.
    TimedOut,
    /// A stop was requested and the grace period passed; CMD was terminated.
    Stopped,
    /// CMD could not be started.
    SpawnFailed(String),
}

impl Finish {
    /// A short description for notes and logs.
    pub fn describe(&self) -> String {
        match self {
            Finish::Exited { code: Some(c), .. } => format!("exit status {c}"),
            Finish::Exited {
                signal: Some(s), ..
            } => format!("killed by signal {s}"),
            Finish::Exited { .. } => "ended".into(),
            Finish::TimedOut => "timed out".into(),
            Finish::Stopped => "terminated after the grace period of a stop request".into(),
            Finish::SpawnFailed(e) => format!("cannot be started: {e}"),
        }
    }
}

/// Runs CMD once. A second stop signal kills it and ends the worker
/// ([`ExitStatus::Interrupted`]).
pub async fn run(cmd: &Cmd, input: Invocation, stop: &Stop) -> Result<Finish> {
    let mut command = tokio::process::Command::new(&cmd.program);
    command.args(&cmd.args);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("AGENTPMT_") {
            command.env_remove(name);
        }
    }
    command
        .envs(input.env.iter().map(|(k, v)| (k, v)))
        .stdin(if input.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => return Ok(Finish::SpawnFailed(e.to_string())),
    };
    let group = child.id().and_then(|id| Pid::from_raw(id as i32));
    if let (Some(mut stdin), Some(bytes)) = (child.stdin.take(), input.stdin) {
        tokio::spawn(async move {
            // A command that does not read its input is fine.
            let _ = stdin.write_all(&bytes).await;
        });
    }
    let mut stdout = child.stdout.take();
    let capture = input.capture_stdout;
    let reader = tokio::spawn(async move {
        let mut kept = Vec::new();
        let Some(out) = stdout.as_mut() else {
            return kept;
        };
        if capture {
            let _ = out.read_to_end(&mut kept).await;
        } else {
            let _ = tokio::io::copy(out, &mut tokio::io::stderr()).await;
        }
        kept
    });
    let timeout = async {
        match input.timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    let outcome = tokio::select! {
        status = child.wait() => Some(status?),
        _ = timeout => {
            terminate(&mut child, group).await;
            return Ok(Finish::TimedOut);
        }
        _ = stop.reached(1) => None,
    };
    let status = match outcome {
        Some(status) => status,
        None => {
            // Asked to stop: CMD may finish within the grace period.
            tokio::select! {
                status = child.wait() => status?,
                _ = tokio::time::sleep(input.grace) => {
                    terminate(&mut child, group).await;
                    return Ok(Finish::Stopped);
                }
                _ = stop.reached(2) => {
                    kill(group, Signal::KILL);
                    let _ = child.wait().await;
                    return Err(WorkerExit::error(
                        ExitStatus::Interrupted,
                        "a second signal: stopped at once, CMD killed",
                    ));
                }
            }
        }
    };
    let stdout = tokio::time::timeout(Duration::from_secs(5), reader)
        .await
        .ok()
        .and_then(|r| r.ok())
        .unwrap_or_default();
    Ok(Finish::Exited {
        code: status.code(),
        signal: status.signal(),
        stdout,
    })
}

fn kill(group: Option<Pid>, signal: Signal) {
    if let Some(group) = group {
        let _ = kill_process_group(group, signal);
    }
}

/// SIGTERM to CMD's process group, SIGKILL if it is still there after [`TERM_TO_KILL`].
async fn terminate(child: &mut tokio::process::Child, group: Option<Pid>) {
    kill(group, Signal::TERM);
    if tokio::time::timeout(TERM_TO_KILL, child.wait())
        .await
        .is_err()
    {
        kill(group, Signal::KILL);
        let _ = child.wait().await;
    }
    // Whatever of the group outlived its leader.
    kill(group, Signal::KILL);
}
