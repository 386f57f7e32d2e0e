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
//! - `jobs run [--max N] [--watch SECS] [--wait-secs S] -- CMD [ARGS…]` — lists open jobs,
//!   reserves one, writes the reserve response (JSON) to CMD's stdin, reads the proof JSON
//!   (`{proof_text, social_posts}` or `{proof_text, workflow_id}`; `reservation_id` is
//!   filled in) from CMD's stdout, completes the job and waits for verification. Progress
//!   goes to stderr. A CMD that exits non-zero abandons the job (the reservation expires;
//!   nothing is submitted). CMD never sees the wallet key (AGENTPMT_PRIVATE_KEY and
//!   AGENTPMT_KEYSTORE_PASSWORD are removed from its environment); it gets AGENTPMT_JOB_ID
//!   and AGENTPMT_RESERVATION_ID.

use crate::keys;
use crate::output::{self, Output};
use agentpmt_protocol::jobs::{JobCompleteBody, JobReserveResponse, SocialPostProof};
use agentpmt_sdk::{Client, ErrorCode};
use anyhow::{anyhow, bail, Context as _, Result};
use clap::{Args, Subcommand};
use std::collections::HashSet;
use std::io::Write as _;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

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
pub struct RunArgs {
    /// Stop after submitting this many jobs.
    #[arg(long)]
    max: Option<u64>,
    /// Keep polling every SECS seconds when no job is open (otherwise stop).
    #[arg(long, value_name = "SECS")]
    watch: Option<u64>,
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
        JobsCommand::Run(args) => work(&client, args, server, out).await?,
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

/// Runs CMD with `input` on stdin; returns its stdout when it exits 0.
fn run_command(command: &[String], input: &str, job_id: &str, reservation: &str) -> Result<String> {
    let (program, args) = command
        .split_first()
        .ok_or_else(|| anyhow!("give the command to run after --"))?;
    let mut child = std::process::Command::new(program)
        .args(args)
        .env("AGENTPMT_JOB_ID", job_id)
        .env("AGENTPMT_RESERVATION_ID", reservation)
        .env_remove(keys::PRIVATE_KEY_ENV)
        .env_remove("AGENTPMT_KEYSTORE_PASSWORD")
        .env_remove("AGENTPMT_ADMIN_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot run {program}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A command that does not read its input is fine.
        let _ = stdin.write_all(input.as_bytes());
    }
    let output = child
        .wait_with_output()
        .with_context(|| format!("waiting for {program}"))?;
    if !output.status.success() {
        bail!("{program} ended with {}", output.status);
    }
    String::from_utf8(output.stdout).context("the command's output is not UTF-8")
}

/// One handled job, for `--json` output.
#[derive(Debug, serde::Serialize)]
struct Handled {
    job_id: String,
    reservation_id: String,
    outcome: String,
    submission_id: Option<String>,
    verification: Option<String>,
    detail: Option<String>,
}

async fn work(client: &Client, args: RunArgs, server: &str, out: &Output) -> Result<()> {
    let fail = |e| output::sdk_error(e, server);
    let mut tried: HashSet<String> = HashSet::new();
    let mut handled: Vec<Handled> = Vec::new();
    'board: loop {
        if args.max.is_some_and(|max| handled.len() as u64 >= max) {
            break;
        }
        let list = client.list_jobs(Some(100), None).await.map_err(fail)?;
        let mut reserved = None;
        for job in &list.jobs {
            if !tried.insert(job.job_id.clone()) {
                continue;
            }
            match client.reserve_job(&job.job_id).await {
                Ok(r) => {
                    reserved = Some(r);
                    break;
                }
                Err(e) if e.code() == Some(ErrorCode::JOB_NOT_AVAILABLE) => {
                    eprintln!("job {}: taken, trying the next one", job.job_id);
                }
                Err(e) => return Err(fail(e)),
            }
        }
        let Some(reserved) = reserved else {
            match args.watch {
                Some(secs) => {
                    eprintln!("no open job; polling again in {secs} s");
                    tokio::time::sleep(Duration::from_secs(secs.max(1))).await;
                    continue 'board;
                }
                None => break,
            }
        };
        let job_id = reserved.job.job_id.clone();
        let reservation = reserved.job.reservation_id.clone();
        eprintln!(
            "reserved job {job_id} ({}) until {}; running {}",
            reserved.job.title, reserved.job.reserved_until, args.command[0]
        );
        let input = serde_json::to_string(&reserved).context("encoding the job")?;
        let proof = run_command(&args.command, &input, &job_id, &reservation).and_then(|text| {
            serde_json::from_str::<JobCompleteBody>(text.trim())
                .context("the command's output is not a proof JSON object ({proof_text, …})")
        });
        let mut body = match proof {
            Ok(body) => body,
            Err(e) => {
                eprintln!("job {job_id}: abandoned, nothing submitted ({e:#})");
                handled.push(Handled {
                    job_id,
                    reservation_id: reservation,
                    outcome: "abandoned".into(),
                    submission_id: None,
                    verification: None,
                    detail: Some(format!("{e:#}")),
                });
                continue;
            }
        };
        if body.reservation_id.is_none() {
            body.reservation_id = Some(reservation.clone());
        }
        let done = match client.complete_job(&job_id, &body).await {
            Ok(done) => done,
            Err(e) => {
                let e = fail(e);
                eprintln!("job {job_id}: completion refused: {e:#}");
                handled.push(Handled {
                    job_id,
                    reservation_id: reservation,
                    outcome: "refused".into(),
                    submission_id: None,
                    verification: None,
                    detail: Some(format!("{e:#}")),
                });
                continue;
            }
        };
        eprintln!(
            "job {job_id}: submitted {} (verification {})",
            done.submission.submission_id, done.submission.verification.status
        );
        let mut verification = done.submission.verification.status.clone();
        let started = Instant::now();
        while args.wait_secs > 0
            && !matches!(
                verification.as_str(),
                "verified" | "rejected" | "needs_human"
            )
            && started.elapsed() < Duration::from_secs(args.wait_secs)
        {
            tokio::time::sleep(Duration::from_secs(args.poll_secs)).await;
            let status = client.job_status(&job_id).await.map_err(fail)?;
            if let Some(s) = status.submission {
                if s.verification.status != verification {
                    eprintln!("job {job_id}: verification {}", s.verification.status);
                }
                verification = s.verification.status;
            }
        }
        if !out.is_json() {
            println!("{job_id}  submitted  verification {verification}");
        }
        handled.push(Handled {
            job_id,
            reservation_id: reservation,
            outcome: "submitted".into(),
            submission_id: Some(done.submission.submission_id),
            verification: Some(verification),
            detail: None,
        });
    }
    if out.is_json() {
        out.print_json(&serde_json::json!({"success": true, "handled": handled}));
    } else if handled.is_empty() {
        println!("no open jobs");
    }
    Ok(())
}
