//! `agentpmt jobs …`: the jobs board, signed with the local wallet.
//!
//! - `jobs list [--limit N] [--skip N]` — open jobs, newest first.
//! - `jobs reserve ID` — reserve a job; prints the private instructions, the reservation
//!   id and the tracked link (social_share) or workflow token (workflow_creation).
//! - `jobs complete ID --proof TEXT [--reservation-id R] [--post-url URL
//!   [--target-url URL] [--platform P] [--message TEXT] [--posted-at T]] [--workflow-id W]`
//!   — submit proof. For a social-share job `--target-url` and `--platform` default to the
//!   reservation's tracked link and platform (read with a status call).
//! - `jobs status ID` — this wallet's view: reservation, submission, verification, payout.
//! - `jobs workflow create|update|publish [--job-id ID] [--token-file PATH] …` — the
//!   workflow of a workflow-creation job, with the reservation's token
//!   (`AGENTPMT_JOB_WORKFLOW_TOKEN`, as `jobs run` gives it to CMD).
//! - `jobs run [--max N] [--watch SECS] [--timeout-secs S] [--grace-secs S] … -- CMD
//!   [ARGS…]` — the worker ([`crate::worker::jobs_run`]): reserves open jobs one at a
//!   time, runs CMD with the reservation on stdin, completes the job with the proof CMD
//!   prints and waits for verification (see `RUN_HELP`).

use crate::keys;
use crate::output::{self, Output};
use crate::worker::{self, events::Events};
use agentpmt_protocol::jobs::{
    JobCompleteBody, JobReserveResponse, JobWorkflowWriteRequest, SocialPostProof,
};
use agentpmt_sdk::job_workflow::JobWorkflowClient;
use agentpmt_sdk::Client;
use anyhow::{Context as _, Result};
use clap::{Args, Subcommand};
use std::path::Path;

/// The end of `jobs run --help`.
const RUN_HELP: &str = "\
Each job: the reserve response (JSON) goes to CMD's stdin; CMD prints the proof JSON
({proof_text, social_posts} or {proof_text, workflow_id}; reservation_id is filled in) on
stdout and exits 0; the job is completed and its verification awaited (--wait-secs).
Any other exit, a --timeout-secs, or a stop signal after --grace-secs abandons the job:
nothing is submitted, the reservation lapses at its reserved_until (the server's
--job-reservation-secs window), and the job may be tried again (--retry-limit).
Keep --timeout-secs below the reservation window, or the completion is refused
(logged as reservation_lost, and the worker goes on).

CMD environment: every inherited AGENTPMT_* variable is removed (no key, password, admin
token or bearer); CMD gets AGENTPMT_JOB_ID, AGENTPMT_RESERVATION_ID,
AGENTPMT_JOB_RESERVED_UNTIL, AGENTPMT_SERVER, and for workflow-creation jobs
AGENTPMT_JOB_WORKFLOW_TOKEN (the reservation's X-Job-Workflow-Token; `agentpmt jobs
workflow create|update|publish` reads it).

Transport errors and 5xx answers are retried with exponential backoff and jitter (up to
--retry-max-secs apart); with --watch the worker never exits on them, without it it gives
up after --retry-for-secs. SIGTERM / SIGINT: no new reservation, CMD gets --grace-secs to
finish (its job is completed if it did, else abandoned); a second signal stops at once.

Output: one line per event with an RFC 3339 timestamp on stderr, or with --json one JSON
object per line on stdout ({\"ts\", \"event\", ...}), then a summary.
Exit status: 0 clean stop, 1 other error, 2 configuration error (key, password), 3 every
job handled was abandoned or refused, 4 CMD cannot be started (nothing reserved), 130
stopped by a second signal.";

/// `agentpmt jobs …`
#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// List open jobs, newest first.
    List {
        /// Page size (1-100).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100))]
        limit: Option<u32>,
        /// Jobs to skip.
        #[arg(long)]
        skip: Option<u32>,
    },
    /// Reserve a job (exclusive, for the server's window).
    Reserve {
        /// Job id.
        id: String,
    },
    /// Submit completion proof for a job you reserved.
    Complete(CompleteArgs),
    /// This wallet's view of a job: reservation, submission, verification, payout.
    Status {
        /// Job id.
        id: String,
    },
    /// Work through the board: reserve a job, run CMD with the job JSON on stdin, submit
    /// the proof JSON it prints, and wait for verification.
    Run(RunArgs),
    /// Workflow-creation jobs: create, update or publish the job's workflow with the
    /// reservation's token (AGENTPMT_JOB_WORKFLOW_TOKEN or --token-file; no wallet key).
    #[command(subcommand)]
    Workflow(WorkflowCommand),
}

/// `agentpmt jobs workflow …`
#[derive(Debug, Subcommand)]
pub enum WorkflowCommand {
    /// Create the job's workflow from a JSON file ({name, description, nodes, edges}).
    Create {
        #[command(flatten)]
        job: JobToken,
        /// The workflow JSON ({name, description, nodes, edges}); `-` for stdin.
        #[arg(long, value_name = "PATH")]
        file: String,
    },
    /// Replace the workflow's content.
    Update {
        /// Workflow id (from create).
        workflow_id: String,
        #[command(flatten)]
        job: JobToken,
        #[arg(long, value_name = "PATH")]
        file: String,
    },
    /// Publish the workflow privately; then complete the job with --workflow-id.
    Publish {
        /// Workflow id (from create).
        workflow_id: String,
        #[command(flatten)]
        job: JobToken,
    },
}

/// The job and its workflow token.
#[derive(Debug, Args)]
pub struct JobToken {
    /// Job id [default: AGENTPMT_JOB_ID, as `jobs run` sets it for CMD].
    #[arg(long, env = "AGENTPMT_JOB_ID")]
    job_id: String,
    /// File holding the reservation's workflow token [default: AGENTPMT_JOB_WORKFLOW_TOKEN].
    #[arg(long, value_name = "PATH")]
    token_file: Option<std::path::PathBuf>,
}

const WORKFLOW_TOKEN_ENV: &str = "AGENTPMT_JOB_WORKFLOW_TOKEN";

impl JobToken {
    fn client(&self, server: &str) -> Result<JobWorkflowClient> {
        let token = match &self.token_file {
            Some(path) => zeroize::Zeroizing::new(
                std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))?
                    .trim()
                    .to_owned(),
            ),
            None => {
                zeroize::Zeroizing::new(std::env::var(WORKFLOW_TOKEN_ENV).map_err(|_| {
                    anyhow::anyhow!("set {WORKFLOW_TOKEN_ENV} or give --token-file")
                })?)
            }
        };
        Ok(JobWorkflowClient::new(server, &self.job_id, token)?)
    }
}

fn read_workflow(file: &str) -> Result<JobWorkflowWriteRequest> {
    let text = if file == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading stdin")?
    } else {
        std::fs::read_to_string(file).with_context(|| format!("cannot read {file}"))?
    };
    serde_json::from_str(&text)
        .context("the workflow JSON is not {name, description, nodes, edges}")
}

async fn workflow(command: WorkflowCommand, server: &str, out: &Output) -> Result<()> {
    let fail = |e| output::sdk_error(e, server);
    let done = match command {
        WorkflowCommand::Create { job, file } => {
            let request = read_workflow(&file)?;
            job.client(server)?.create(&request).await.map_err(fail)?
        }
        WorkflowCommand::Update {
            workflow_id,
            job,
            file,
        } => {
            let request = read_workflow(&file)?;
            job.client(server)?
                .update(&workflow_id, &request)
                .await
                .map_err(fail)?
        }
        WorkflowCommand::Publish { workflow_id, job } => job
            .client(server)?
            .publish(&workflow_id)
            .await
            .map_err(fail)?,
    };
    out.emit(
        &done,
        &[
            ("job_id", done.job_id.clone()),
            ("reservation_id", done.reservation_id.clone()),
            ("workflow_id", done.workflow.summary.workflow_id.clone()),
        ],
    );
    Ok(())
}

/// `agentpmt jobs complete`
#[derive(Debug, Args)]
pub struct CompleteArgs {
    /// Job id.
    id: String,
    /// Completion proof text (1-4000 characters).
    #[arg(long)]
    proof: String,
    /// The reservation id [default: not sent; the server uses your active reservation].
    #[arg(long)]
    reservation_id: Option<String>,
    /// social_share: URL of the published post.
    #[arg(long)]
    post_url: Option<String>,
    /// social_share: the tracked URL used in the post [default: the reservation's link].
    #[arg(long)]
    target_url: Option<String>,
    /// social_share: platform of the post [default: the job's platform].
    #[arg(long)]
    platform: Option<String>,
    /// social_share: text of the post.
    #[arg(long, default_value = "")]
    message: String,
    /// social_share: when the post was published (RFC 3339).
    #[arg(long)]
    posted_at: Option<String>,
    /// workflow_creation: the workflow created and published under the reservation.
    #[arg(long)]
    workflow_id: Option<String>,
}

/// `agentpmt jobs run`
#[derive(Debug, Args)]
#[command(after_help = RUN_HELP)]
pub struct RunArgs {
    #[command(flatten)]
    common: worker::CommonArgs,
    /// Attempts per job: a job this worker abandoned is tried again once its reservation
    /// lapsed and it is open again, up to this many times in all.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    retry_limit: u32,
    /// Wait at least SECS seconds (doubling per attempt) before trying an abandoned job
    /// again.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    retry_backoff_secs: u64,
    /// How long to wait for each submission's verification, in seconds (0: do not wait).
    #[arg(long, default_value_t = 600)]
    wait_secs: u64,
    /// Seconds between status polls while waiting.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=3600))]
    poll_secs: u64,
    /// The command that does the work, after `--`.
    #[arg(required = true, last = true, value_name = "CMD")]
    command: Vec<String>,
}

/// Runs `jobs` subcommands.
pub async fn run(command: JobsCommand, server: &str, keystore: &Path, out: &Output) -> Result<()> {
    let fail = |e| output::sdk_error(e, server);
    let command = match command {
        JobsCommand::Workflow(command) => return workflow(command, server, out).await,
        other => other,
    };
    let loaded = keys::load_key(keystore)?;
    let client = Client::new(server, loaded.key)?;
    match command {
        JobsCommand::List { limit, skip } => {
            let list = client.list_jobs(limit, skip).await.map_err(fail)?;
            if out.is_json() {
                out.print_json(&list);
            } else if list.jobs.is_empty() {
                println!("no open jobs");
            } else {
                for j in &list.jobs {
                    println!(
                        "{}  {:<17} {:>6} credits  {}",
                        j.job_id, j.job_type, j.reward_credits, j.title
                    );
                }
                if list.has_more {
                    println!("(more: --skip {})", list.skip + list.limit);
                }
            }
        }
        JobsCommand::Reserve { id } => {
            let reserved = client.reserve_job(&id).await.map_err(fail)?;
            out.emit(&reserved, &reserve_rows(&reserved));
        }
        JobsCommand::Complete(args) => {
            let body = completion(&client, args.id.clone(), &args)
                .await
                .map_err(fail)?;
            let done = client.complete_job(&args.id, &body).await.map_err(fail)?;
            out.emit(
                &done,
                &[
                    ("job_id", done.job.job_id.clone()),
                    ("status", done.job.status.clone()),
                    ("submission_id", done.submission.submission_id.clone()),
                    ("verification", done.submission.verification.status.clone()),
                ],
            );
        }
        JobsCommand::Status { id } => {
            let status = client.job_status(&id).await.map_err(fail)?;
            let mut rows = vec![
                ("job_id", status.job.job_id.clone()),
                ("title", status.job.title.clone()),
                ("status", status.job.status.clone()),
                ("reserved_by_you", status.has_active_reservation.to_string()),
                ("can_submit", status.can_submit.to_string()),
            ];
            if let Some(r) = &status.reservation {
                rows.push(("reservation_id", r.reservation_id.clone()));
                rows.push(("reserved_until", r.reserved_until.clone()));
            }
            if let Some(s) = &status.submission {
                rows.push(("submission", s.status.clone()));
                rows.push(("verification", s.verification.status.clone()));
            }
            rows.push(("payout", status.payout.status.clone()));
            rows.push(("balance", status.payout.wallet_balance_credits.to_string()));
            out.emit(&status, &rows);
        }
        JobsCommand::Workflow(_) => unreachable!("handled above"),
        JobsCommand::Run(args) => {
            let settings = worker::jobs_run::Settings {
                wait_secs: args.wait_secs,
                poll_secs: args.poll_secs,
                retry_limit: args.retry_limit,
                retry_backoff_secs: args.retry_backoff_secs,
                common: args.common,
                command: args.command,
                server: server.to_owned(),
            };
            worker::jobs_run::work(&client, settings, Events::new(out.is_json())).await?
        }
    }
    Ok(())
}

fn reserve_rows(r: &JobReserveResponse) -> Vec<(&'static str, String)> {
    let mut rows = vec![
        ("job_id", r.job.job_id.clone()),
        ("title", r.job.title.clone()),
        ("reservation_id", r.job.reservation_id.clone()),
        ("reserved_until", r.job.reserved_until.clone()),
        ("reward_credits", r.job.reward_credits.to_string()),
        ("instructions", r.job.job_instructions.clone()),
    ];
    if let Some(s) = &r.job.social_share {
        rows.push(("platform", s.platform.clone()));
        rows.push((
            "tracked_link",
            s.tracking_links.first().cloned().unwrap_or_default(),
        ));
    }
    if let Some(w) = &r.workflow_access {
        rows.push(("workflow_token", w.access_token.clone()));
        rows.push(("token_expires_at", w.expires_at.clone()));
    }
    rows
}

/// The completion body of `jobs complete`, with social-share defaults from the status.
async fn completion(
    client: &Client,
    id: String,
    args: &CompleteArgs,
) -> agentpmt_sdk::Result<JobCompleteBody> {
    let mut body = JobCompleteBody {
        proof_text: args.proof.clone(),
        reservation_id: args.reservation_id.clone(),
        social_posts: None,
        workflow_id: args.workflow_id.clone(),
    };
    if let Some(post_url) = &args.post_url {
        let (mut target, mut platform) = (args.target_url.clone(), args.platform.clone());
        if target.is_none() || platform.is_none() {
            let status = client.job_status(&id).await?;
            let share = status.reservation.and_then(|r| r.social_share);
            if target.is_none() {
                target = share
                    .as_ref()
                    .and_then(|s| s.tracking_links.first().cloned());
            }
            if platform.is_none() {
                platform = share.map(|s| s.platform).or(status.job.platform);
            }
        }
        body.social_posts = Some(vec![SocialPostProof {
            platform: platform.unwrap_or_default(),
            post_url: post_url.clone(),
            target_url_used: target.unwrap_or_default(),
            message_text: args.message.clone(),
            posted_at: args.posted_at.clone(),
        }]);
    }
    Ok(body)
}
