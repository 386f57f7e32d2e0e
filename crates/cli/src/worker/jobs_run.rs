//! The loop of `agentpmt jobs run`: reserve an open job, run CMD with the reservation on
//! stdin, complete the job with the proof CMD prints, wait for verification; survive
//! transport errors, lost reservations and stop signals, and retry abandoned jobs.
//!
//! A job is abandoned (nothing submitted; the server has no early release, so the
//! reservation lapses at its `reserved_until` and the job reopens) when CMD fails, times
//! out, or is terminated after a stop request's grace period; the worker logs an
//! `abandoned` event with the reason. Once it reopened, this worker may reserve it again,
//! up to `--retry-limit` attempts per job, waiting `--retry-backoff-secs` (doubling per
//! attempt) in between.

use super::command::{self, Cmd, Finish, Invocation};
use super::events::Events;
use super::idle::Idle;
use super::retry::{CallError, RetryPolicy};
use super::signals::Stop;
use super::{CommonArgs, ExitStatus, WorkerExit};
use agentpmt_protocol::jobs::{JobCompleteBody, JobReserveResponse};
use agentpmt_sdk::backoff::Backoff;
use agentpmt_sdk::{Client, ErrorCode};
use anyhow::{Context as _, Result};
use serde_json::json;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// What the loop needs from `jobs run`'s flags.
#[derive(Debug)]
pub struct Settings {
    pub wait_secs: u64,
    pub poll_secs: u64,
    pub retry_limit: u32,
    pub retry_backoff_secs: u64,
    pub common: CommonArgs,
    pub command: Vec<String>,
    pub server: String,
}

/// One handled job, for the summary.
#[derive(Debug, serde::Serialize)]
struct Handled {
    job_id: String,
    reservation_id: String,
    attempt: u32,
    outcome: &'static str,
    submission_id: Option<String>,
    verification: Option<String>,
    detail: Option<String>,
}

/// This worker's attempts at one job.
#[derive(Debug, Clone, Copy)]
struct Tries {
    attempts: u32,
    not_before: Instant,
}

fn reservation_lost(code: Option<ErrorCode>) -> bool {
    matches!(
        code,
        Some(ErrorCode::JOB_RESERVATION_REQUIRED)
            | Some(ErrorCode::JOB_RESERVATION_MISMATCH)
            | Some(ErrorCode::JOB_NOT_AVAILABLE)
    )
}

fn environment(reserved: &JobReserveResponse, server: &str) -> Vec<(String, String)> {
    let mut env = vec![
        ("AGENTPMT_JOB_ID", reserved.job.job_id.clone()),
        (
            "AGENTPMT_RESERVATION_ID",
            reserved.job.reservation_id.clone(),
        ),
        (
            "AGENTPMT_JOB_RESERVED_UNTIL",
            reserved.job.reserved_until.clone(),
        ),
        ("AGENTPMT_SERVER", server.to_owned()),
    ];
    if let Some(access) = &reserved.workflow_access {
        env.push(("AGENTPMT_JOB_WORKFLOW_TOKEN", access.access_token.clone()));
    }
    env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// Runs the worker until the board has nothing this worker may try (no `--watch`),
/// `--max`, or a stop signal.
pub async fn work(client: &Client, settings: Settings, events: Events) -> Result<()> {
    let common = &settings.common;
    let cmd = Cmd::find(&settings.command)?;
    let stop = Stop::install()?;
    let policy = RetryPolicy {
        max_delay: Duration::from_secs(common.retry_max_secs),
        give_up_after: match common.watch {
            Some(_) => None,
            None => Some(Duration::from_secs(common.retry_for_secs)),
        },
    };
    let retry_backoff = Backoff::new(
        Duration::from_secs(settings.retry_backoff_secs.max(1)),
        Duration::from_secs(settings.retry_backoff_secs.max(1) * 16),
    );
    events.emit(
        "started",
        &format!(
            "jobs worker: CMD {}, timeout {}, grace {} s, up to {} attempts per job",
            cmd.name(),
            common
                .timeout_secs
                .map(|t| format!("{t} s"))
                .unwrap_or_else(|| "none".into()),
            common.grace_secs,
            settings.retry_limit
        ),
        json!({"worker": "jobs", "timeout_secs": common.timeout_secs, "grace_secs": common.grace_secs,
               "retry_limit": settings.retry_limit, "watch": common.watch}),
    );
    let mut tries: HashMap<String, Tries> = HashMap::new();
    let mut handled: Vec<Handled> = Vec::new();
    let mut idle = Idle::new(common.heartbeat());
    let outcome: Result<()> = 'board: loop {
        if stop.requested() {
            events.emit(
                "stopping",
                "stop requested: no more reservations",
                json!({}),
            );
            break Ok(());
        }
        if common.max.is_some_and(|max| handled.len() as u64 >= max) {
            break Ok(());
        }
        let list = match policy
            .run(&events, &stop, "list jobs", true, || {
                client.list_jobs(Some(100), None)
            })
            .await
        {
            Ok(l) => l,
            Err(CallError::Stopped) => continue,
            Err(e) => break Err(e.into_anyhow()),
        };
        let now = Instant::now();
        let mut reserved = None;
        for job in &list.jobs {
            if stop.requested() {
                continue 'board;
            }
            if tries
                .get(&job.job_id)
                .is_some_and(|t| t.attempts >= settings.retry_limit || now < t.not_before)
            {
                continue;
            }
            match policy
                .run(&events, &stop, "reserve", true, || {
                    client.reserve_job(&job.job_id)
                })
                .await
            {
                Ok(r) => {
                    reserved = Some(r);
                    break;
                }
                Err(CallError::Refused(e)) => {
                    let reason = match &e {
                        agentpmt_sdk::Error::Api(f) => f
                            .body
                            .details
                            .get("reason")
                            .and_then(|r| r.as_str())
                            .unwrap_or("")
                            .to_owned(),
                        _ => String::new(),
                    };
                    events.emit(
                        "taken",
                        &format!(
                            "job {}: not available ({}), trying the next one",
                            job.job_id,
                            if reason.is_empty() {
                                e.to_string()
                            } else {
                                reason.clone()
                            }
                        ),
                        json!({"job_id": job.job_id, "reason": reason, "error": e.to_string()}),
                    );
                    if reason == "reserved_by_you" {
                        // Reserved by this wallet (a reserve whose answer was lost, or a
                        // second worker with the same wallet): leave it to lapse.
                        let entry = tries.entry(job.job_id.clone()).or_insert(Tries {
                            attempts: 0,
                            not_before: now,
                        });
                        entry.not_before = now + retry_backoff.delay_for(entry.attempts);
                    }
                }
                Err(CallError::Stopped) => continue 'board,
                Err(CallError::Fatal(e)) => break 'board Err(e),
            }
        }
        let Some(reserved) = reserved else {
            match common.watch {
                Some(secs) => {
                    idle.poll(&events, "no open job to try", secs.max(1));
                    stop.sleep(Duration::from_secs(secs.max(1))).await;
                    continue;
                }
                None => break Ok(()),
            }
        };
        idle.busy();
        let job_id = reserved.job.job_id.clone();
        let reservation = reserved.job.reservation_id.clone();
        let entry = tries.entry(job_id.clone()).or_insert(Tries {
            attempts: 0,
            not_before: now,
        });
        entry.attempts += 1;
        let attempt = entry.attempts;
        events.emit(
            "reserved",
            &format!(
                "reserved job {job_id} ({}) until {} (attempt {attempt}); running {}",
                reserved.job.title,
                reserved.job.reserved_until,
                cmd.name()
            ),
            json!({"job_id": job_id, "reservation_id": reservation, "title": reserved.job.title,
                   "reserved_until": reserved.job.reserved_until, "attempt": attempt}),
        );
        let input = match serde_json::to_vec(&reserved).context("encoding the job") {
            Ok(i) => i,
            Err(e) => break Err(e),
        };
        let finish = match command::run(
            &cmd,
            Invocation {
                env: environment(&reserved, &settings.server),
                stdin: Some(input),
                capture_stdout: true,
                timeout: common.timeout(),
                grace: common.grace(),
            },
            &stop,
        )
        .await
        {
            Ok(f) => f,
            Err(e) => break Err(e),
        };
        let mut record = Handled {
            job_id: job_id.clone(),
            reservation_id: reservation.clone(),
            attempt,
            outcome: "abandoned",
            submission_id: None,
            verification: None,
            detail: None,
        };
        let proof = match &finish {
            Finish::Exited {
                code: Some(0),
                stdout,
                ..
            } => serde_json::from_slice::<JobCompleteBody>(
                String::from_utf8_lossy(stdout).trim().as_bytes(),
            )
            .map_err(|e| {
                format!("the command's output is not a proof JSON object ({{proof_text, …}}): {e}")
            }),
            other => Err(format!("command {}", other.describe())),
        };
        match proof {
            Err(why) => {
                let until = reserved.job.reserved_until.clone();
                if let Some(t) = tries.get_mut(&job_id) {
                    t.not_before = Instant::now() + retry_backoff.delay_for(attempt - 1);
                }
                events.emit(
                    "abandoned",
                    &format!("job {job_id}: abandoned, nothing submitted ({why}); the reservation lapses at {until}"),
                    json!({"job_id": job_id, "reservation_id": reservation, "note": why, "reserved_until": until,
                           "attempt": attempt, "retry": attempt < settings.retry_limit}),
                );
                record.detail = Some(why);
            }
            Ok(mut body) => {
                if body.reservation_id.is_none() {
                    body.reservation_id = Some(reservation.clone());
                }
                match complete(
                    client,
                    &policy,
                    &events,
                    &stop,
                    &job_id,
                    &body,
                    &reserved.job.reserved_until,
                )
                .await
                {
                    Err(e) => break Err(e),
                    Ok(Err(detail)) => {
                        record.outcome = "refused";
                        record.detail = Some(detail);
                    }
                    Ok(Ok(submission_id)) => {
                        // Submitted: never try it again.
                        if let Some(t) = tries.get_mut(&job_id) {
                            t.attempts = u32::MAX;
                        }
                        let verification =
                            match wait_for_verification(client, &settings, &events, &stop, &job_id)
                                .await
                            {
                                Ok(v) => v,
                                Err(e) => break Err(e),
                            };
                        record.outcome = "submitted";
                        record.submission_id = Some(submission_id);
                        record.verification = Some(verification);
                    }
                }
            }
        }
        handled.push(record);
        if let Finish::SpawnFailed(e) = finish {
            break Err(WorkerExit::error(
                ExitStatus::CommandUnavailable,
                format!("cannot start {}: {e}", cmd.name()),
            ));
        }
    };
    summary(&events, &handled, outcome.as_ref().err());
    outcome.map_err(|e| e.context(super::Reported))?;
    let succeeded = handled.iter().filter(|h| h.outcome == "submitted").count();
    super::finish(handled.len(), succeeded).map_err(|e| e.context(super::Reported))
}

/// Completes the job: `Ok(Ok(submission id))`, `Ok(Err(why))` when refused (logged), or
/// `Err` when the worker must end. After a refusal the job's status is read: a submission
/// of this reservation means an earlier attempt's answer was lost, and counts.
async fn complete(
    client: &Client,
    policy: &RetryPolicy,
    events: &Events,
    stop: &Stop,
    job_id: &str,
    body: &JobCompleteBody,
    reserved_until: &str,
) -> Result<Result<String, String>> {
    let err = match policy
        .run(events, stop, "complete", false, || {
            client.complete_job(job_id, body)
        })
        .await
    {
        Ok(done) => {
            events.emit(
                "submitted",
                &format!(
                    "job {job_id}: submitted {} (verification {})",
                    done.submission.submission_id, done.submission.verification.status
                ),
                json!({"job_id": job_id, "submission_id": done.submission.submission_id,
                       "verification": done.submission.verification.status}),
            );
            return Ok(Ok(done.submission.submission_id));
        }
        Err(CallError::Refused(e)) => e,
        Err(e) => return Err(e.into_anyhow()),
    };
    if let Ok(status) = client.job_status(job_id).await {
        if let Some(s) = status
            .submission
            .filter(|s| Some(&s.reservation_id) == body.reservation_id.as_ref())
        {
            events.emit(
                "submitted",
                &format!("job {job_id}: submitted {} (an earlier attempt's answer was lost)", s.submission_id),
                json!({"job_id": job_id, "submission_id": s.submission_id, "verification": s.verification.status}),
            );
            return Ok(Ok(s.submission_id));
        }
    }
    let (event, why) = if reservation_lost(err.code()) {
        (
            "reservation_lost",
            format!("the reservation (until {reserved_until}) is gone: {err}"),
        )
    } else {
        ("refused", format!("completion refused: {err}"))
    };
    events.emit(
        event,
        &format!("job {job_id}: {why}"),
        json!({"job_id": job_id, "reserved_until": reserved_until, "error_code": err.code().map(|c| c.as_str()), "error": err.to_string()}),
    );
    Ok(Err(why))
}

async fn wait_for_verification(
    client: &Client,
    settings: &Settings,
    events: &Events,
    stop: &Stop,
    job_id: &str,
) -> Result<String> {
    let mut verification = "pending".to_owned();
    let started = Instant::now();
    while settings.wait_secs > 0
        && !matches!(
            verification.as_str(),
            "verified" | "rejected" | "needs_human"
        )
        && started.elapsed() < Duration::from_secs(settings.wait_secs)
        && !stop.requested()
    {
        stop.sleep(Duration::from_secs(settings.poll_secs)).await;
        let status = match client.job_status(job_id).await {
            Ok(s) => s,
            Err(e) if e.is_transient() => continue,
            Err(e) if e.is_configuration() => {
                return Err(WorkerExit::error(ExitStatus::Configuration, e.to_string()))
            }
            Err(_) => break,
        };
        if let Some(s) = status.submission {
            if s.verification.status != verification {
                events.emit(
                    "verification",
                    &format!("job {job_id}: verification {}", s.verification.status),
                    json!({"job_id": job_id, "verification": s.verification.status}),
                );
            }
            verification = s.verification.status;
        }
    }
    Ok(verification)
}

fn summary(events: &Events, handled: &[Handled], error: Option<&anyhow::Error>) {
    let count = |o: &str| handled.iter().filter(|h| h.outcome == o).count();
    let counts = json!({"handled": handled.len(), "submitted": count("submitted"),
                        "abandoned": count("abandoned"), "refused": count("refused")});
    let text = if handled.is_empty() {
        "no open jobs".to_owned()
    } else {
        format!(
            "handled {}: {} submitted, {} abandoned, {} refused",
            handled.len(),
            count("submitted"),
            count("abandoned"),
            count("refused")
        )
    };
    if events.is_json() {
        events.emit(
            "summary",
            &text,
            json!({"success": error.is_none(), "handled": handled, "counts": counts,
                   "error": error.map(|e| format!("{e:#}"))}),
        );
    } else {
        events.emit("summary", &text, json!({}));
        println!("{text}");
    }
}
