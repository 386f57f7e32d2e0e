//! The jobs board: platform-funded jobs that agents list, reserve exclusively, complete with
//! proof, and get paid for once the proof is verified (automatically or by an operator).
//!
//! Agent endpoints (signed, action/product scope) in [`agent`]:
//! - `POST /api/external/jobs/list` (`job_list`, `{limit, skip}`): open jobs, newest first.
//! - `POST /api/external/jobs/{jobId}/reserve` (`job_reserve`, `{}`): exclusive reservation.
//! - `POST /api/external/jobs/{jobId}/complete` (`job_complete`, the body without envelope).
//! - `POST /api/external/jobs/{jobId}/status` (`job_status`, `{}`): the caller's view.
//!
//! Workflow-creation job endpoints (`X-Job-Workflow-Token: Bearer <token>`) in [`workflow`];
//! operator endpoints (`/api/admin/jobs…`) in [`admin`]; the background verifier in
//! [`verify`].
//!
//! Reservations: ONE conditional `UPDATE jobs … WHERE status = 'open' OR (reserved and
//! expired) … RETURNING reservation_epoch`, with the time read from the database clock in
//! the same transaction. Every grant bumps `reservation_epoch` (the fencing token); a
//! reservation id names (job, epoch), and a completion is accepted only while the job is
//! still reserved by the caller at that epoch and unexpired. The reward's ledger entry id is
//! `job_reward:<jobId>:<epoch>`, posted in the transaction that moves the submission from
//! `submitted` to `approved` (a conditional update), so a reservation is paid at most once.
//!
//! Job lifecycle: `open → reserved → submitted → open | approved | rejected`. A job pays
//! up to `max_completions` approved submissions, one reservation at a time: after an
//! approval it reopens while completions are left, else it is `approved`; after a rejection
//! it reopens (`on_reject = reopen`, the default) or ends as `rejected` (`close`). A wallet
//! with a pending or approved submission of a job cannot reserve it again.

pub mod admin;
pub mod agent;
pub mod verify;
pub mod workflow;

use crate::db::macros::{sql_execute, sql_fetch_optional, sql_scalar_optional};
use crate::db::{AsConn, Tx};
use crate::error::{ApiError, ApiResult};
use crate::ledger::{self, LedgerError, NewEntry};
use crate::state::AppState;
use crate::time::rfc3339_ms;
use agentpmt_protocol::jobs::{
    JobAdminView, JobSummary, SocialPostProof, SubmissionView, VerificationView, UTM_MEDIUM,
};
use agentpmt_protocol::{ErrorCode, WalletAddress};
use utoipa_axum::router::OpenApiRouter;

/// Default reservation window: 30 minutes.
pub const DEFAULT_RESERVATION_SECS: u64 = 1800;
/// Ledger entry kind of job rewards.
pub const REWARD_KIND: &str = "job_reward";

/// The default accepted post hosts, `platform=host`.
pub fn default_post_hosts() -> Vec<String> {
    [
        "x=x.com",
        "x=twitter.com",
        "linkedin=linkedin.com",
        "reddit=reddit.com",
        "facebook=facebook.com",
        "facebook=fb.com",
        "threads=threads.net",
        "threads=threads.com",
        "bluesky=bsky.app",
        "mastodon=mastodon.social",
        "instagram=instagram.com",
        "youtube=youtube.com",
        "tiktok=tiktok.com",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

/// The canonical name of a platform (`twitter` is `x`), lowercase.
pub fn normalize_platform(platform: &str) -> String {
    match platform.trim().to_ascii_lowercase().as_str() {
        "twitter" | "x.com" => "x".to_owned(),
        "bsky" => "bluesky".to_owned(),
        other => other.to_owned(),
    }
}

/// Accepted post URL hosts per platform.
#[derive(Debug, Clone, Default)]
pub struct PostHosts(Vec<(String, String)>);

impl PostHosts {
    /// Parses `platform=host` entries.
    pub fn parse(entries: &[String]) -> Result<PostHosts, String> {
        let mut out = Vec::new();
        for entry in entries {
            let (platform, host) = entry
                .split_once('=')
                .ok_or_else(|| format!("{entry:?} is not platform=host"))?;
            let platform = normalize_platform(platform);
            let host = host.trim().to_ascii_lowercase();
            if platform.is_empty() || host.is_empty() {
                return Err(format!("{entry:?} is not platform=host"));
            }
            out.push((platform, host));
        }
        Ok(PostHosts(out))
    }

    /// Whether `host` (or a parent domain of it) is accepted for `platform`; any platform
    /// when `platform` is `None`.
    pub fn allows(&self, platform: Option<&str>, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.0.iter().any(|(p, h)| {
            platform.is_none_or(|want| want == p)
                && (host == *h || host.ends_with(&format!(".{h}")))
        })
    }

    /// The configured platform names, sorted and without duplicates.
    pub fn platforms(&self) -> Vec<String> {
        let mut out: Vec<String> = self.0.iter().map(|(p, _)| p.clone()).collect();
        out.sort();
        out.dedup();
        out
    }
}

/// The operator and agent routes of the jobs board.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(agent::router())
        .merge(workflow::router())
        .merge(admin::router())
}

/// The id of the reservation (job, epoch).
pub fn reservation_id(job_id: &str, epoch: i64) -> String {
    format!("{job_id}-r{epoch}")
}

/// The ledger entry id of the reward of reservation (job, epoch).
pub fn payout_entry_id(job_id: &str, epoch: i64) -> String {
    format!("{REWARD_KIND}:{job_id}:{epoch}")
}

/// The tracked link of a social-share reservation: `target` with the four UTM parameters.
pub fn tracked_url(target: &str, platform: &str, job_id: &str, code: &str) -> Option<String> {
    let mut url = reqwest::Url::parse(target).ok()?;
    url.query_pairs_mut()
        .append_pair("utm_source", platform)
        .append_pair("utm_medium", UTM_MEDIUM)
        .append_pair("utm_campaign", &format!("agent_job_{job_id}"))
        .append_pair("utm_content", code);
    Some(url.to_string())
}

/// Columns of [`JobRow`].
pub const JOB_COLUMNS: &str = "job_id, job_type, title, public_description, \
     private_instructions, reward_credits, target_url, platform, max_completions, completions, \
     on_reject, status, reservation_epoch, reserved_by, reserved_until_ms, created_at_ms, \
     updated_at_ms";

/// A job as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobRow {
    pub job_id: String,
    pub job_type: String,
    pub title: String,
    pub public_description: String,
    pub private_instructions: String,
    pub reward_credits: i64,
    pub target_url: Option<String>,
    pub platform: Option<String>,
    pub max_completions: i64,
    pub completions: i64,
    pub on_reject: String,
    pub status: String,
    pub reservation_epoch: i64,
    pub reserved_by: Option<String>,
    pub reserved_until_ms: Option<i64>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

impl JobRow {
    /// Whether a reservation is live at `now` (database clock).
    pub fn reserved_at(&self, now: i64) -> bool {
        self.status == "reserved" && self.reserved_until_ms.is_some_and(|t| t > now)
    }

    /// The status agents see at `now`: an expired reservation reads as `open`.
    pub fn status_at(&self, now: i64) -> &str {
        if self.status == "reserved" && !self.reserved_at(now) {
            "open"
        } else {
            &self.status
        }
    }

    /// The public view.
    pub fn summary(&self, now: i64) -> JobSummary {
        JobSummary {
            job_id: self.job_id.clone(),
            title: self.title.clone(),
            public_description: self.public_description.clone(),
            reward_credits: self.reward_credits,
            status: self.status_at(now).to_owned(),
            job_type: self.job_type.clone(),
            platform: self.platform.clone(),
            created_at: rfc3339_ms(self.created_at_ms),
        }
    }

    /// The operator's view.
    pub fn admin_view(&self, now: i64) -> JobAdminView {
        let live = self.reserved_at(now);
        JobAdminView {
            summary: self.summary(now),
            private_instructions: self.private_instructions.clone(),
            target_url: self.target_url.clone(),
            max_completions: self.max_completions,
            completions: self.completions,
            on_reject: self.on_reject.clone(),
            reservation_epoch: self.reservation_epoch,
            reserved_by: if live { self.reserved_by.clone() } else { None },
            reserved_until: if live {
                self.reserved_until_ms.map(rfc3339_ms)
            } else {
                None
            },
        }
    }
}

/// One job by id.
pub async fn find_job(conn: &mut impl AsConn, job_id: &str) -> sqlx::Result<Option<JobRow>> {
    let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE job_id = $1");
    sql_fetch_optional!(conn.conn(), JobRow, &sql, job_id)
}

/// One job by id, or 404 `JOB_NOT_FOUND`.
pub async fn job_or_404(conn: &mut impl AsConn, job_id: &str) -> ApiResult<JobRow> {
    find_job(conn, job_id).await?.ok_or_else(|| {
        ApiError::new(ErrorCode::JOB_NOT_FOUND, "No job has this id")
            .with_detail("job_id", job_id.chars().take(128).collect::<String>())
    })
}

/// Columns of [`SubmissionRow`].
pub const SUBMISSION_COLUMNS: &str = "submission_id, job_id, reservation_id, epoch, \
     wallet_address, proof_text, social_posts, workflow_id, status, verification_status, \
     verification_method, verification_reason, attempts, next_attempt_at_ms, lease_until_ms, \
     payout_entry_id, paid_at_ms, created_at_ms, updated_at_ms";

/// A submission as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SubmissionRow {
    pub submission_id: String,
    pub job_id: String,
    pub reservation_id: String,
    pub epoch: i64,
    pub wallet_address: String,
    pub proof_text: String,
    pub social_posts: String,
    pub workflow_id: Option<String>,
    pub status: String,
    pub verification_status: String,
    pub verification_method: Option<String>,
    pub verification_reason: Option<String>,
    pub attempts: i64,
    pub next_attempt_at_ms: i64,
    pub lease_until_ms: Option<i64>,
    pub payout_entry_id: Option<String>,
    pub paid_at_ms: Option<i64>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

impl SubmissionRow {
    /// The stored social posts.
    pub fn posts(&self) -> Vec<SocialPostProof> {
        serde_json::from_str(&self.social_posts).unwrap_or_default()
    }

    /// The wire view.
    pub fn view(&self) -> SubmissionView {
        SubmissionView {
            submission_id: self.submission_id.clone(),
            job_id: self.job_id.clone(),
            reservation_id: self.reservation_id.clone(),
            wallet_address: self.wallet_address.clone(),
            status: self.status.clone(),
            proof_text: self.proof_text.clone(),
            social_posts: self.posts(),
            workflow_id: self.workflow_id.clone(),
            verification: VerificationView {
                status: self.verification_status.clone(),
                method: self.verification_method.clone(),
                reason: self.verification_reason.clone(),
                attempts: self.attempts,
            },
            created_at: rfc3339_ms(self.created_at_ms),
        }
    }
}

/// One submission by id.
pub async fn find_submission(
    conn: &mut impl AsConn,
    submission_id: &str,
) -> sqlx::Result<Option<SubmissionRow>> {
    let sql = format!("SELECT {SUBMISSION_COLUMNS} FROM job_submissions WHERE submission_id = $1");
    sql_fetch_optional!(conn.conn(), SubmissionRow, &sql, submission_id)
}

/// A final decision on a submission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Approve,
    Reject,
}

/// Applies `decision` to a submission that is still `submitted`, in `tx`: moves the
/// submission (one conditional update), pays the reward on approval (ledger entry
/// `job_reward:<jobId>:<epoch>`) and moves the job (reopen, approved or rejected).
/// Returns false, changing nothing, when the submission was already decided.
pub async fn decide(
    tx: &mut Tx,
    submission: &SubmissionRow,
    decision: Decision,
    method: &str,
    reason: Option<&str>,
    now: i64,
) -> ApiResult<bool> {
    let approve = decision == Decision::Approve;
    let entry_id = payout_entry_id(&submission.job_id, submission.epoch);
    let (status, verification) = if approve {
        ("approved", "verified")
    } else {
        ("rejected", "rejected")
    };
    let moved = sql_execute!(
        tx.conn(),
        "UPDATE job_submissions SET status = $1, verification_status = $2, \
           verification_method = $3, verification_reason = $4, payout_entry_id = $5, \
           paid_at_ms = $6, lease_until_ms = NULL, updated_at_ms = $7 \
         WHERE submission_id = $8 AND status = 'submitted'",
        status,
        verification,
        method,
        reason,
        approve.then_some(entry_id.as_str()),
        approve.then_some(now),
        now,
        &submission.submission_id
    )?;
    if moved == 0 {
        return Ok(false);
    }
    if approve {
        let reward = sql_scalar_optional!(
            tx.conn(),
            i64,
            "SELECT reward_credits FROM jobs WHERE job_id = $1",
            &submission.job_id
        )?
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("submission without its job")))?;
        let wallet: WalletAddress = submission
            .wallet_address
            .parse()
            .map_err(|e| ApiError::internal(anyhow::anyhow!("stored wallet: {e}")))?;
        let note = format!("reward of job {}", submission.job_id);
        match ledger::post(
            tx,
            NewEntry {
                entry_id: &entry_id,
                wallet: &wallet,
                amount_credits: reward,
                kind: REWARD_KIND,
                reference: Some(&submission.submission_id),
                reason: Some(&note),
                fingerprint: None,
            },
        )
        .await
        {
            Ok(_) => {}
            // The reservation was already paid: refuse the whole decision.
            Err(LedgerError::DuplicateEntry) => {
                return Err(ApiError::new(
                    ErrorCode::JOB_SUBMISSION_ALREADY_REVIEWED,
                    "This reservation's reward was already paid",
                ))
            }
            Err(LedgerError::Db(e)) => return Err(e.into()),
            Err(e) => return Err(ApiError::internal(e)),
        }
        sql_execute!(
            tx.conn(),
            "UPDATE jobs SET completions = completions + 1, \
               status = CASE WHEN completions + 1 >= max_completions THEN 'approved' ELSE 'open' END, \
               reserved_by = NULL, reserved_until_ms = NULL, updated_at_ms = $1 \
             WHERE job_id = $2 AND status = 'submitted' AND reservation_epoch = $3",
            now,
            &submission.job_id,
            submission.epoch
        )?;
    } else {
        sql_execute!(
            tx.conn(),
            "UPDATE jobs SET status = CASE WHEN on_reject = 'close' THEN 'rejected' ELSE 'open' END, \
               reserved_by = NULL, reserved_until_ms = NULL, updated_at_ms = $1 \
             WHERE job_id = $2 AND status = 'submitted' AND reservation_epoch = $3",
            now,
            &submission.job_id,
            submission.epoch
        )?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn post_hosts_match_subdomains_only() {
        let hosts = PostHosts::parse(&default_post_hosts()).unwrap();
        assert!(hosts.allows(Some("x"), "x.com"));
        assert!(hosts.allows(Some("x"), "mobile.twitter.com"));
        assert!(hosts.allows(Some("linkedin"), "www.linkedin.com"));
        assert!(!hosts.allows(Some("x"), "evilx.com"));
        assert!(!hosts.allows(Some("x"), "x.com.evil.example"));
        assert!(!hosts.allows(Some("linkedin"), "x.com"));
        assert!(hosts.allows(None, "reddit.com"));
        assert!(PostHosts::parse(&["nohost".to_owned()]).is_err());
        assert_eq!(normalize_platform(" Twitter "), "x");
    }

    #[test]
    fn tracked_links_carry_the_four_utm_parameters_in_order() {
        assert_eq!(
            tracked_url("https://www.agentpmt.com/marketplace/example", "x", "job123", "code").unwrap(),
            "https://www.agentpmt.com/marketplace/example?utm_source=x&utm_medium=agent_social&utm_campaign=agent_job_job123&utm_content=code"
        );
        assert_eq!(
            tracked_url("https://www.agentpmt.com/p?ref=a", "linkedin", "j", "c").unwrap(),
            "https://www.agentpmt.com/p?ref=a&utm_source=linkedin&utm_medium=agent_social&utm_campaign=agent_job_j&utm_content=c"
        );
        assert_eq!(reservation_id("j", 3), "j-r3");
        assert_eq!(payout_entry_id("j", 3), "job_reward:j:3");
    }
}
