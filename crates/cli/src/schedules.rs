//! `agentpmt schedules …`: BYO-agent workflow schedule workers, authenticated with the
//! API-key + budget-key bearer from the environment (`AGENTPMT_BEARER_TOKEN`, or
//! `AGENTPMT_API_KEY` with `AGENTPMT_BUDGET_KEY`); never from arguments.
//!
//! - `schedules due [--as-of T] [--limit N]` — due occurrences (read-only).
//! - `schedules claim [--limit N] [--lease-seconds S] [--request-id R] [--as-of T]`
//! - `schedules advance ID --due-at T --claim-token C [--outcome success|failed|skipped]
//!   [--external-run-id X] [--note N]`
//! - `schedules release ID --due-at T --claim-token C [--note N]`
//! - `schedules work [--lease-seconds S] [--max N] [--watch SECS] -- CMD [ARGS…]` — claims
//!   occurrences one at a time and runs CMD for each, with the occurrence in its
//!   environment: exit 0 advances with `success`, exit 75 (EX_TEMPFAIL) releases it for a
//!   retry, any other exit (or a signal) advances with `failed` and the exit status as the
//!   note. Without `--watch` it stops when the queue is empty; with it, it polls every SECS.

use crate::output::{self, Output};
use agentpmt_protocol::workflows::{
    AdvanceRequest, ClaimRequest, ClaimedItem, ReleaseRequest, RunOutcome,
};
use agentpmt_sdk::schedules::ScheduleClient;
use anyhow::{anyhow, Context as _, Result};
use clap::{Args, Subcommand, ValueEnum};
use std::time::Duration;
use zeroize::Zeroizing;

/// Environment variables of the bearer.
pub const BEARER_ENV: &str = "AGENTPMT_BEARER_TOKEN";
pub const API_KEY_ENV: &str = "AGENTPMT_API_KEY";
pub const BUDGET_KEY_ENV: &str = "AGENTPMT_BUDGET_KEY";

/// The exit status of CMD that releases the occurrence (sysexits EX_TEMPFAIL).
pub const EXIT_RELEASE: i32 = 75;

/// `agentpmt schedules …`
#[derive(Debug, Subcommand)]
pub enum SchedulesCommand {
    /// List due occurrences of the budget (read-only).
    Due {
        /// Due at or before this time (RFC 3339) [default: now].
        #[arg(long)]
        as_of: Option<String>,
        /// How many (1-100).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100))]
        limit: Option<u32>,
    },
    /// Lease due occurrences; prints each with its claim_token.
    Claim(ClaimArgs),
    /// Mark a claimed occurrence handled and move the schedule to its next occurrence.
    Advance(AdvanceArgs),
    /// Give a claimed occurrence back to the queue without moving timing.
    Release(ReleaseArgs),
    /// Claim occurrences one at a time and run CMD for each: exit 0 advances (success),
    /// exit 75 releases it for a retry, any other exit advances it as failed. CMD gets
    /// AGENTPMT_SCHEDULE_ID, AGENTPMT_SCHEDULE_NAME, AGENTPMT_SCHEDULE_PROMPT,
    /// AGENTPMT_SCHEDULE_DUE_AT, AGENTPMT_CLAIM_TOKEN, AGENTPMT_WORKFLOW_ID,
    /// AGENTPMT_WORKFLOW_SLUG and AGENTPMT_SCHEDULE_JSON (never the keys).
    Work(WorkArgs),
}

#[derive(Debug, Args)]
pub struct ClaimArgs {
    /// Occurrences to claim (1-100).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i64).range(1..=100))]
    limit: i64,
    /// Lease length in seconds (1-86400).
    #[arg(long, default_value_t = 900, value_parser = clap::value_parser!(i64).range(1..=86_400))]
    lease_seconds: i64,
    /// Idempotency key: the same id returns the same claim.
    #[arg(long)]
    request_id: Option<String>,
    /// Claim occurrences due at or before this time (RFC 3339).
    #[arg(long)]
    as_of: Option<String>,
}

/// Run outcomes on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Outcome {
    Success,
    Failed,
    Skipped,
}

impl From<Outcome> for RunOutcome {
    fn from(o: Outcome) -> Self {
        match o {
            Outcome::Success => RunOutcome::Success,
            Outcome::Failed => RunOutcome::Failed,
            Outcome::Skipped => RunOutcome::Skipped,
        }
    }
}

#[derive(Debug, Args)]
pub struct AdvanceArgs {
    /// Schedule id.
    schedule_id: String,
    /// The claimed occurrence's due_at, as claim printed it.
    #[arg(long)]
    due_at: String,
    /// The claim_token of the claim.
    #[arg(long)]
    claim_token: String,
    #[arg(long, value_enum, default_value_t = Outcome::Success)]
    outcome: Outcome,
    /// Your own id of the run.
    #[arg(long)]
    external_run_id: Option<String>,
    #[arg(long)]
    note: Option<String>,
}

#[derive(Debug, Args)]
pub struct ReleaseArgs {
    /// Schedule id.
    schedule_id: String,
    #[arg(long)]
    due_at: String,
    #[arg(long)]
    claim_token: String,
    #[arg(long)]
    note: Option<String>,
}

#[derive(Debug, Args)]
pub struct WorkArgs {
    /// Lease length per occurrence in seconds: longer than CMD takes.
    #[arg(long, default_value_t = 900, value_parser = clap::value_parser!(i64).range(1..=86_400))]
    lease_seconds: i64,
    /// Stop after handling this many occurrences.
    #[arg(long)]
    max: Option<u64>,
    /// Keep polling every SECS seconds when the queue is empty (otherwise stop).
    #[arg(long, value_name = "SECS")]
    watch: Option<u64>,
    /// The command to run per occurrence, after `--`.
    #[arg(required = true, last = true, value_name = "CMD")]
    command: Vec<String>,
}

fn env_secret(name: &str) -> Result<Option<Zeroizing<String>>> {
    match std::env::var_os(name) {
        None => Ok(None),
        Some(v) => {
            let v = Zeroizing::new(
                v.into_string()
                    .map_err(|_| anyhow!("{name} is not valid UTF-8"))?,
            );
            Ok((!v.trim().is_empty()).then_some(v))
        }
    }
}

/// The schedule client with the bearer from the environment.
fn client(server: &str) -> Result<ScheduleClient> {
    if let Some(bearer) = env_secret(BEARER_ENV)? {
        return Ok(ScheduleClient::with_bearer(server, bearer)?);
    }
    match (env_secret(API_KEY_ENV)?, env_secret(BUDGET_KEY_ENV)?) {
        (Some(api), Some(budget)) => Ok(ScheduleClient::with_keys(server, &api, &budget)?),
        _ => Err(anyhow!(
            "set {BEARER_ENV} (base64 of api_key:budget_key), or {API_KEY_ENV} and {BUDGET_KEY_ENV}"
        )),
    }
}

fn item_rows(item: &ClaimedItem) -> Vec<(&'static str, String)> {
    vec![
        ("schedule_id", item.schedule_id.clone()),
        ("workflow_id", item.workflow_id.clone()),
        ("name", item.name.clone()),
        ("due_at", item.due_at.clone()),
        ("claim_token", item.claim_token.clone()),
        ("claim_expires_at", item.claim_expires_at.clone()),
    ]
}

/// Runs `schedules` subcommands.
pub async fn run(command: SchedulesCommand, server: &str, out: &Output) -> Result<()> {
    let client = client(server)?;
    let fail = |e| output::sdk_error(e, server);
    match command {
        SchedulesCommand::Due { as_of, limit } => {
            let due = client.due(as_of.as_deref(), limit).await.map_err(fail)?;
            if out.is_json() {
                out.print_json(&due);
            } else if due.data.items.is_empty() {
                println!("nothing due as of {}", due.data.as_of);
            } else {
                for s in &due.data.items {
                    println!(
                        "{}  due {}  {}{}",
                        s.schedule_id,
                        s.due_at,
                        s.name,
                        if s.claimed { "  (claimed)" } else { "" }
                    );
                }
            }
        }
        SchedulesCommand::Claim(args) => {
            let claimed = client
                .claim(&ClaimRequest {
                    limit: Some(args.limit),
                    as_of: args.as_of,
                    lease_seconds: Some(args.lease_seconds),
                    request_id: args.request_id,
                })
                .await
                .map_err(fail)?;
            if out.is_json() {
                out.print_json(&claimed);
            } else if claimed.data.items.is_empty() {
                println!("nothing to claim");
            } else {
                for item in &claimed.data.items {
                    print!("{}", output::rows_text(&item_rows(item)));
                    println!();
                }
            }
        }
        SchedulesCommand::Advance(args) => {
            let advanced = client
                .advance(
                    &args.schedule_id,
                    &AdvanceRequest {
                        due_at: args.due_at,
                        claim_token: args.claim_token,
                        outcome: Some(args.outcome.into()),
                        external_run_id: args.external_run_id,
                        note: args.note,
                    },
                )
                .await
                .map_err(fail)?;
            out.emit(
                &advanced,
                &[
                    ("schedule_id", advanced.data.schedule.schedule_id.clone()),
                    ("next_due_at", advanced.data.schedule.due_at.clone()),
                    (
                        "already_advanced",
                        advanced.data.already_advanced.to_string(),
                    ),
                ],
            );
        }
        SchedulesCommand::Release(args) => {
            let released = client
                .release(
                    &args.schedule_id,
                    &ReleaseRequest {
                        due_at: args.due_at,
                        claim_token: args.claim_token,
                        note: args.note,
                    },
                )
                .await
                .map_err(fail)?;
            out.emit(
                &released,
                &[
                    ("schedule_id", released.data.schedule.schedule_id.clone()),
                    ("due_at", released.data.schedule.due_at.clone()),
                    ("released", released.data.released.to_string()),
                ],
            );
        }
        SchedulesCommand::Work(args) => work(&client, args, server, out).await?,
    }
    Ok(())
}

/// One handled occurrence, for `--json` output.
#[derive(Debug, serde::Serialize)]
struct Handled {
    schedule_id: String,
    due_at: String,
    exit_code: Option<i32>,
    action: &'static str,
    next_due_at: Option<String>,
}

/// Runs CMD for one claimed occurrence, with the occurrence in its environment.
fn run_command(command: &[String], item: &ClaimedItem) -> Result<std::process::ExitStatus> {
    let (program, args) = command
        .split_first()
        .ok_or_else(|| anyhow!("give the command to run after --"))?;
    let json = serde_json::to_string(item).context("encoding the occurrence")?;
    std::process::Command::new(program)
        .args(args)
        .env("AGENTPMT_SCHEDULE_ID", &item.schedule_id)
        .env("AGENTPMT_SCHEDULE_NAME", &item.name)
        .env("AGENTPMT_SCHEDULE_PROMPT", &item.prompt)
        .env("AGENTPMT_SCHEDULE_DUE_AT", &item.due_at)
        .env("AGENTPMT_CLAIM_TOKEN", &item.claim_token)
        .env("AGENTPMT_WORKFLOW_ID", &item.workflow_id)
        .env(
            "AGENTPMT_WORKFLOW_SLUG",
            item.workflow_slug.as_deref().unwrap_or(""),
        )
        .env("AGENTPMT_SCHEDULE_JSON", json)
        .env_remove(BEARER_ENV)
        .env_remove(API_KEY_ENV)
        .env_remove(BUDGET_KEY_ENV)
        .status()
        .with_context(|| format!("cannot run {program}"))
}

async fn work(client: &ScheduleClient, args: WorkArgs, server: &str, out: &Output) -> Result<()> {
    let fail = |e| output::sdk_error(e, server);
    let mut handled: Vec<Handled> = Vec::new();
    loop {
        if args.max.is_some_and(|max| handled.len() as u64 >= max) {
            break;
        }
        let claimed = client
            .claim(&ClaimRequest {
                limit: Some(1),
                lease_seconds: Some(args.lease_seconds),
                request_id: Some(uuid::Uuid::new_v4().to_string()),
                as_of: None,
            })
            .await
            .map_err(fail)?;
        let Some(item) = claimed.data.items.into_iter().next() else {
            match args.watch {
                Some(secs) => {
                    tokio::time::sleep(Duration::from_secs(secs.max(1))).await;
                    continue;
                }
                None => break,
            }
        };
        eprintln!(
            "running {} for {} due {}",
            args.command[0], item.schedule_id, item.due_at
        );
        let status = run_command(&args.command, &item);
        let code = status.as_ref().ok().and_then(|s| s.code());
        let (action, next_due_at) = if code == Some(EXIT_RELEASE) {
            client
                .release(
                    &item.schedule_id,
                    &ReleaseRequest {
                        due_at: item.due_at.clone(),
                        claim_token: item.claim_token.clone(),
                        note: Some(format!("exit status {EXIT_RELEASE}: retry later")),
                    },
                )
                .await
                .map_err(fail)?;
            ("released", None)
        } else {
            let (outcome, note) = match (&status, code) {
                (Ok(_), Some(0)) => (RunOutcome::Success, None),
                (Ok(s), _) => (RunOutcome::Failed, Some(format!("command ended with {s}"))),
                (Err(e), _) => (RunOutcome::Failed, Some(format!("{e:#}"))),
            };
            let advanced = client
                .advance(
                    &item.schedule_id,
                    &AdvanceRequest {
                        due_at: item.due_at.clone(),
                        claim_token: item.claim_token.clone(),
                        outcome: Some(outcome),
                        external_run_id: None,
                        note,
                    },
                )
                .await
                .map_err(fail)?;
            (
                if outcome == RunOutcome::Success {
                    "advanced"
                } else {
                    "advanced_failed"
                },
                Some(advanced.data.schedule.due_at),
            )
        };
        if !out.is_json() {
            println!(
                "{}  due {}  exit {}  {}{}",
                item.schedule_id,
                item.due_at,
                code.map(|c| c.to_string()).unwrap_or_else(|| "-".into()),
                action,
                next_due_at
                    .as_deref()
                    .map(|n| format!("  next {n}"))
                    .unwrap_or_default()
            );
        }
        let released = action == "released";
        handled.push(Handled {
            schedule_id: item.schedule_id,
            due_at: item.due_at,
            exit_code: code,
            action,
            next_due_at,
        });
        if released && args.watch.is_none() {
            // A released occurrence is due again at once: stop instead of spinning on it.
            break;
        }
    }
    if out.is_json() {
        out.print_json(&serde_json::json!({"success": true, "handled": handled}));
    } else if handled.is_empty() {
        println!("nothing to do");
    }
    Ok(())
}
