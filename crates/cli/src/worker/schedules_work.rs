//! The loop of `agentpmt schedules work`: claim one occurrence, run CMD, advance or
//! release it; survive transport errors, lost leases and stop signals.
//!
//! Lease, timeout and grace relate like this: the lease asked for is at least
//! `--timeout-secs + --grace-secs + 30 s`, so a CMD that is stopped by its timeout or a
//! signal is released while the lease still holds. Without a timeout the lease is
//! `--lease-seconds` (default 900): a CMD that runs longer loses its lease, another worker
//! may take the occurrence over, and this worker logs `lease_lost` and goes on (the
//! server has no lease extension).

use super::command::{self, Cmd, Finish, Invocation};
use super::events::Events;
use super::idle::Idle;
use super::retry::{CallError, RetryPolicy};
use super::signals::Stop;
use super::{CommonArgs, ExitStatus, WorkerExit};
use agentpmt_protocol::workflows::{
    AdvanceRequest, ClaimRequest, ClaimedItem, ReleaseRequest, RunOutcome,
};
use agentpmt_sdk::backoff::Backoff;
use agentpmt_sdk::schedules::ScheduleClient;
use agentpmt_sdk::ErrorCode;
use anyhow::Result;
use serde_json::json;
use std::time::Duration;

/// The exit status of CMD that releases the occurrence (sysexits EX_TEMPFAIL).
pub const EXIT_RELEASE: i32 = 75;

/// Margin of the lease over timeout + grace.
const LEASE_MARGIN_SECS: i64 = 30;

/// What the loop needs from `schedules work`'s flags.
#[derive(Debug)]
pub struct Settings {
    pub lease_seconds: i64,
    pub release_backoff_secs: u64,
    pub common: CommonArgs,
    pub command: Vec<String>,
}

/// One handled occurrence, for the summary.
#[derive(Debug, serde::Serialize)]
struct Handled {
    schedule_id: String,
    due_at: String,
    exit_code: Option<i32>,
    action: &'static str,
    next_due_at: Option<String>,
    note: Option<String>,
}

/// The outcome of CMD, as the action on the occurrence.
enum Action {
    Advance(RunOutcome, Option<String>),
    Release(String),
}

/// The lease to claim with: covers timeout + grace when a timeout is set.
pub fn lease_for(lease_seconds: i64, common: &CommonArgs) -> i64 {
    match common.timeout_secs {
        Some(t) => lease_seconds
            .max(t as i64 + common.grace_secs as i64 + LEASE_MARGIN_SECS)
            .min(86_400),
        None => lease_seconds,
    }
}

fn lease_lost(code: Option<ErrorCode>) -> bool {
    matches!(
        code,
        Some(ErrorCode::SCHEDULE_CLAIM_EXPIRED)
            | Some(ErrorCode::SCHEDULE_CLAIM_MISMATCH)
            | Some(ErrorCode::SCHEDULE_DUE_AT_MISMATCH)
            | Some(ErrorCode::SCHEDULE_CLAIM_REQUIRED)
    )
}

fn environment(item: &ClaimedItem) -> Vec<(String, String)> {
    let json = serde_json::to_string(item).unwrap_or_default();
    [
        ("AGENTPMT_SCHEDULE_ID", item.schedule_id.clone()),
        ("AGENTPMT_SCHEDULE_NAME", item.name.clone()),
        ("AGENTPMT_SCHEDULE_PROMPT", item.prompt.clone()),
        ("AGENTPMT_SCHEDULE_DUE_AT", item.due_at.clone()),
        ("AGENTPMT_CLAIM_TOKEN", item.claim_token.clone()),
        ("AGENTPMT_CLAIM_EXPIRES_AT", item.claim_expires_at.clone()),
        ("AGENTPMT_WORKFLOW_ID", item.workflow_id.clone()),
        (
            "AGENTPMT_WORKFLOW_SLUG",
            item.workflow_slug.clone().unwrap_or_default(),
        ),
        ("AGENTPMT_SCHEDULE_JSON", json),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// Runs the worker until the queue is empty (no `--watch`), `--max`, or a stop signal.
pub async fn work(client: &ScheduleClient, settings: Settings, events: Events) -> Result<()> {
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
    let lease = lease_for(settings.lease_seconds, common);
    events.emit(
        "started",
        &format!(
            "schedules worker: CMD {}, lease {lease} s, timeout {}, grace {} s",
            cmd.name(),
            common
                .timeout_secs
                .map(|t| format!("{t} s"))
                .unwrap_or_else(|| "none".into()),
            common.grace_secs
        ),
        json!({"worker": "schedules", "lease_seconds": lease, "timeout_secs": common.timeout_secs,
               "grace_secs": common.grace_secs, "watch": common.watch}),
    );
    let mut handled: Vec<Handled> = Vec::new();
    let mut idle = Idle::new(common.heartbeat());
    let mut release_backoff = Backoff::new(
        Duration::from_secs(settings.release_backoff_secs.max(1)),
        Duration::from_secs(300),
    );
    let outcome = loop {
        if stop.requested() {
            events.emit("stopping", "stop requested: no more claims", json!({}));
            break Ok(());
        }
        if common.max.is_some_and(|max| handled.len() as u64 >= max) {
            break Ok(());
        }
        // One request id for every retry of this claim: a claim whose answer was lost is
        // answered again instead of leasing a second occurrence.
        let request_id = uuid::Uuid::new_v4().to_string();
        let request = ClaimRequest {
            limit: Some(1),
            lease_seconds: Some(lease),
            request_id: Some(request_id),
            as_of: None,
        };
        let claimed = match policy
            .run(&events, &stop, "claim", true, || client.claim(&request))
            .await
        {
            Ok(c) => c,
            Err(CallError::Stopped) => continue,
            Err(e) => break Err(e.into_anyhow()),
        };
        let Some(item) = claimed.data.items.into_iter().next() else {
            match common.watch {
                Some(secs) => {
                    idle.poll(&events, "nothing due", secs.max(1));
                    stop.sleep(Duration::from_secs(secs.max(1))).await;
                    continue;
                }
                None => break Ok(()),
            }
        };
        idle.busy();
        events.emit(
            "claimed",
            &format!(
                "claimed {} ({}) due {} until {}; running {}",
                item.schedule_id,
                item.name,
                item.due_at,
                item.claim_expires_at,
                cmd.name()
            ),
            json!({"schedule_id": item.schedule_id, "name": item.name, "due_at": item.due_at,
                   "claim_expires_at": item.claim_expires_at}),
        );
        let finish = match command::run(
            &cmd,
            Invocation {
                env: environment(&item),
                stdin: None,
                capture_stdout: false,
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
        let code = match &finish {
            Finish::Exited { code, .. } => *code,
            _ => None,
        };
        let action = match &finish {
            Finish::Exited { code: Some(0), .. } => Action::Advance(RunOutcome::Success, None),
            Finish::Exited {
                code: Some(EXIT_RELEASE),
                ..
            } => Action::Release(format!("exit status {EXIT_RELEASE}: retry later")),
            Finish::Exited { .. } => Action::Advance(
                RunOutcome::Failed,
                Some(format!("command {}", finish.describe())),
            ),
            other => Action::Release(format!("command {}", other.describe())),
        };
        let (label, next_due_at, note) =
            match settle(client, &policy, &events, &stop, &item, action).await {
                Ok(settled) => settled,
                Err(e) => break Err(e),
            };
        events.emit(
            label,
            &format!(
                "{} due {}: {label}{}{}",
                item.schedule_id,
                item.due_at,
                next_due_at
                    .as_deref()
                    .map(|n| format!(", next {n}"))
                    .unwrap_or_default(),
                note.as_deref()
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default()
            ),
            json!({"schedule_id": item.schedule_id, "due_at": item.due_at, "exit_code": code,
                   "next_due_at": next_due_at, "note": note}),
        );
        let released = label == "released";
        handled.push(Handled {
            schedule_id: item.schedule_id,
            due_at: item.due_at,
            exit_code: code,
            action: label,
            next_due_at,
            note,
        });
        if let Finish::SpawnFailed(e) = finish {
            break Err(WorkerExit::error(
                ExitStatus::CommandUnavailable,
                format!("cannot start {}: {e}", cmd.name()),
            ));
        }
        if released {
            if common.watch.is_none() {
                // A released occurrence is due again at once: stop instead of spinning.
                break Ok(());
            }
            let delay = release_backoff.next_delay();
            events.emit(
                "backoff",
                &format!("released; next claim in {} ms", delay.as_millis()),
                json!({"delay_ms": delay.as_millis() as u64}),
            );
            stop.sleep(delay).await;
        } else {
            release_backoff.reset();
        }
    };
    summary(&events, &handled, outcome.as_ref().err());
    outcome.map_err(|e| e.context(super::Reported))?;
    let succeeded = handled.iter().filter(|h| h.action == "advanced").count();
    super::finish(handled.len(), succeeded).map_err(|e| e.context(super::Reported))
}

/// Advances or releases the occurrence. A refusal because the lease is gone is logged
/// (`lease_lost`) and the worker goes on.
async fn settle(
    client: &ScheduleClient,
    policy: &RetryPolicy,
    events: &Events,
    stop: &Stop,
    item: &ClaimedItem,
    action: Action,
) -> Result<(&'static str, Option<String>, Option<String>)> {
    let result = match action {
        Action::Advance(outcome, note) => {
            let request = AdvanceRequest {
                due_at: item.due_at.clone(),
                claim_token: item.claim_token.clone(),
                outcome: Some(outcome),
                external_run_id: None,
                note: note.clone(),
            };
            policy
                .run(events, stop, "advance", false, || {
                    client.advance(&item.schedule_id, &request)
                })
                .await
                .map(|a| {
                    let label = if outcome == RunOutcome::Success {
                        "advanced"
                    } else {
                        "advanced_failed"
                    };
                    (label, Some(a.data.schedule.due_at), note.clone())
                })
        }
        Action::Release(note) => {
            let request = ReleaseRequest {
                due_at: item.due_at.clone(),
                claim_token: item.claim_token.clone(),
                note: Some(note.clone()),
            };
            policy
                .run(events, stop, "release", false, || {
                    client.release(&item.schedule_id, &request)
                })
                .await
                .map(|_| ("released", None, Some(note.clone())))
        }
    };
    match result {
        Ok(r) => Ok(r),
        Err(CallError::Refused(e)) if lease_lost(e.code()) => Ok((
            "lease_lost",
            None,
            Some(format!(
                "the lease ended before the result was sent (expired {}): {}",
                item.claim_expires_at,
                e.code().map(|c| c.as_str()).unwrap_or("")
            )),
        )),
        Err(CallError::Refused(e)) => Ok(("refused", None, Some(e.to_string()))),
        Err(e) => Err(e.into_anyhow()),
    }
}

fn summary(events: &Events, handled: &[Handled], error: Option<&anyhow::Error>) {
    let count = |a: &str| handled.iter().filter(|h| h.action == a).count();
    let counts = json!({
        "handled": handled.len(), "advanced": count("advanced"),
        "advanced_failed": count("advanced_failed"), "released": count("released"),
        "lease_lost": count("lease_lost"), "refused": count("refused"),
    });
    let text = if handled.is_empty() {
        "nothing to do".to_owned()
    } else {
        format!(
            "handled {}: {} advanced, {} failed, {} released, {} lease lost, {} refused",
            handled.len(),
            count("advanced"),
            count("advanced_failed"),
            count("released"),
            count("lease_lost"),
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
