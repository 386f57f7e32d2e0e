//! `agentpmt schedules …`: BYO-agent workflow schedule workers, authenticated with the
//! API-key + budget-key bearer from the environment (`AGENTPMT_BEARER_TOKEN`, or
//! `AGENTPMT_API_KEY` with `AGENTPMT_BUDGET_KEY`); never from arguments.
//!
//! - `schedules due [--as-of T] [--limit N]` — due occurrences (read-only).
//! - `schedules claim [--limit N] [--lease-seconds S] [--request-id R] [--as-of T]`
//! - `schedules advance ID --due-at T --claim-token C [--outcome success|failed|skipped]
//!   [--external-run-id X] [--note N]`
//! - `schedules release ID --due-at T --claim-token C [--note N]`
//! - `schedules work [--lease-seconds S] [--max N] [--watch SECS] [--timeout-secs S] …
//!   -- CMD [ARGS…]` — the worker ([`crate::worker::schedules_work`]): claims occurrences
//!   one at a time and runs CMD for each (see `WORK_HELP`).

use crate::output::{self, Output};
use crate::worker::{self, events::Events, schedules_work};
use agentpmt_protocol::workflows::{
    AdvanceRequest, ClaimRequest, ClaimedItem, ReleaseRequest, RunOutcome,
};
use agentpmt_sdk::schedules::ScheduleClient;
use anyhow::{anyhow, Result};
use clap::{Args, Subcommand, ValueEnum};
use zeroize::Zeroizing;

/// The end of `schedules work --help`.
const WORK_HELP: &str = "\
Each occurrence: CMD runs with the occurrence in its environment; exit 0 advances it
(success), exit 75 (EX_TEMPFAIL) releases it for a retry (the next claim waits
--release-backoff-secs, doubling), any other exit advances it as failed with the exit
status as the note. A --timeout-secs or a stop signal after --grace-secs terminates CMD
(SIGTERM to its process group, SIGKILL 2 s later) and releases the occurrence.

Lease, timeout and grace: the claim's lease is --lease-seconds, raised to
timeout + grace + 30 s when --timeout-secs is set, so a stopped CMD is released while the
lease holds. The server cannot extend a lease: a CMD that outlives it (no timeout) loses
the occurrence; the refused advance/release is logged as lease_lost with the schedule id
and due time, and the worker claims new work.

CMD environment: every inherited AGENTPMT_* variable is removed (no API key, budget key,
bearer, private key, password or admin token); CMD gets AGENTPMT_SCHEDULE_ID,
AGENTPMT_SCHEDULE_NAME, AGENTPMT_SCHEDULE_PROMPT, AGENTPMT_SCHEDULE_DUE_AT,
AGENTPMT_CLAIM_TOKEN, AGENTPMT_CLAIM_EXPIRES_AT, AGENTPMT_WORKFLOW_ID,
AGENTPMT_WORKFLOW_SLUG and AGENTPMT_SCHEDULE_JSON. CMD's stdout goes to stderr.

Transport errors and 5xx answers are retried with exponential backoff and jitter (up to
--retry-max-secs apart; a claim keeps its request_id, so a lost answer is not a second
lease); with --watch the worker never exits on them, without it it gives up after
--retry-for-secs. SIGTERM / SIGINT: no new claim, CMD gets --grace-secs to finish (then
its occurrence is advanced), else it is terminated and released; a second signal stops
at once.

Output: one line per event with an RFC 3339 timestamp on stderr, or with --json one JSON
object per line on stdout ({\"ts\", \"event\", ...}), then a summary. With --watch an idle
worker prints one line, then a heartbeat every --heartbeat-secs.
Exit status: 0 clean stop, 1 other error, 2 configuration error (refused bearer), 3 every
occurrence handled failed, was released or lost, 4 CMD cannot be started (nothing
claimed), 130 stopped by a second signal.";

/// Environment variables of the bearer.
pub const BEARER_ENV: &str = "AGENTPMT_BEARER_TOKEN";
pub const API_KEY_ENV: &str = "AGENTPMT_API_KEY";
pub const BUDGET_KEY_ENV: &str = "AGENTPMT_BUDGET_KEY";

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
    /// exit 75 releases it for a retry, any other exit advances it as failed. Survives
    /// transport errors and lost leases; stops gracefully on SIGTERM / SIGINT.
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
#[command(after_help = WORK_HELP)]
pub struct WorkArgs {
    /// Lease length per occurrence in seconds: longer than CMD takes. With --timeout-secs
    /// the lease is at least timeout + grace + 30 s.
    #[arg(long, default_value_t = 900, value_parser = clap::value_parser!(i64).range(1..=86_400))]
    lease_seconds: i64,
    /// After a release (exit 75, timeout, stop), wait at least SECS seconds (doubling for
    /// each release in a row, up to 300 s) before the next claim.
    #[arg(long, value_name = "SECS", default_value_t = 5)]
    release_backoff_secs: u64,
    #[command(flatten)]
    common: worker::CommonArgs,
    /// The command to run per occurrence, after `--`.
    #[arg(required = true, last = true, value_name = "CMD")]
    command: Vec<String>,
}

pub(crate) fn env_secret(name: &str) -> Result<Option<Zeroizing<String>>> {
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
        SchedulesCommand::Work(args) => {
            let settings = schedules_work::Settings {
                lease_seconds: args.lease_seconds,
                release_backoff_secs: args.release_backoff_secs,
                common: args.common,
                command: args.command,
            };
            schedules_work::work(&client, settings, Events::new(out.is_json())).await?
        }
    }
    Ok(())
}
