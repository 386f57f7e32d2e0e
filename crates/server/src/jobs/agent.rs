//! The signed agent endpoints of the jobs board: list, reserve, complete, status.
//!
//! Bad input is 422 (`VALIDATION_ERROR`, or `JOB_PROOF_INVALID` for proof that does not fit
//! the job, both with `detail[]`); conflicts are 409 (`JOB_NOT_AVAILABLE`,
//! `JOB_RESERVATION_REQUIRED`, `JOB_RESERVATION_MISMATCH`) with `details.reason`. A refused
//! request changes nothing: its replay record rolls back with the transaction.

use super::{
    job_or_404, normalize_platform, reservation_id, tracked_url, JobRow, PostHosts, SubmissionRow,
    JOB_COLUMNS, SUBMISSION_COLUMNS,
};
use crate::accounts::{key_digest, random_hex};
use crate::auth::replay::{record_outcome, Effect};
use crate::auth::{Signed, SignedEndpoint};
use crate::db::macros::{sql_execute, sql_fetch_all, sql_fetch_optional, sql_scalar_optional};
use crate::db::AsConn;
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiPath;
use crate::state::AppState;
use crate::time::rfc3339_ms;
use crate::workflows::schedules::db_now;
use agentpmt_protocol::jobs::{
    JobCompleteBody, JobCompleteResponse, JobListBody, JobListResponse, JobReserveResponse,
    JobStateView, JobStatusResponse, PayoutView, ReservationView, ReservedJob, SocialPostProof,
    SocialShareAccess, WorkflowAccess, MAX_PROOF_TEXT_CHARS,
};
use agentpmt_protocol::wire::{ErrorBody, SignedEnvelope};
use agentpmt_protocol::{ErrorCode, SignedAction};
use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Default and largest page of the job list; largest `skip`.
pub const DEFAULT_LIST_LIMIT: i64 = 50;
pub const MAX_LIST_LIMIT: i64 = 100;
pub const MAX_LIST_SKIP: i64 = 100_000;
/// Longest accepted post URL and message text.
const MAX_POST_URL_LEN: usize = 2048;
const MAX_MESSAGE_CHARS: usize = 4000;

/// The agent routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_jobs))
        .routes(routes!(reserve_job))
        .routes(routes!(complete_job))
        .routes(routes!(job_status))
}

/// The `{jobId}` path parameter.
#[derive(Debug, Deserialize)]
pub struct JobPath {
    #[serde(rename = "jobId")]
    pub job_id: String,
}

/// Body of reserve and status: the envelope only.
#[derive(Debug, Deserialize)]
pub struct EmptyBody {}

macro_rules! signed_endpoint {
    ($name:ident, $body:ty, $action:expr) => {
        #[doc = concat!("The signed endpoint `", stringify!($action), "`.")]
        #[derive(Debug)]
        pub struct $name;
        impl SignedEndpoint for $name {
            type Body = $body;
            const ACTION: SignedAction = $action;
        }
    };
}

signed_endpoint!(ListEndpoint, JobListBody, SignedAction::JobList);
signed_endpoint!(ReserveEndpoint, EmptyBody, SignedAction::JobReserve);
signed_endpoint!(CompleteEndpoint, JobCompleteBody, SignedAction::JobComplete);
signed_endpoint!(StatusEndpoint, EmptyBody, SignedAction::JobStatus);

fn range(field: &str, value: Option<i64>, default: i64, min: i64, max: i64) -> ApiResult<i64> {
    let n = value.unwrap_or(default);
    if !(min..=max).contains(&n) {
        return Err(ApiError::invalid_field(
            &["body", field],
            "value_error",
            format!("{field} must be {min} to {max}"),
        ));
    }
    Ok(n)
}

/// List open jobs, newest first (signed: `action:job_list`, `product:-`, payload
/// `{limit, skip}`). Private instructions are never listed; a job whose reservation
/// expired is open again.
#[utoipa::path(
    post,
    path = "/api/external/jobs/list",
    tag = "jobs",
    request_body = JobListBody,
    responses(
        (status = 200, description = "A page of open jobs", body = JobListResponse),
        (status = 401, description = "Signature or session rejected", body = ErrorBody),
        (status = 409, description = "request_id already used in this session", body = ErrorBody),
        (status = 422, description = "limit outside 1-100, skip outside 0-100000, or a malformed body", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all)]
pub async fn list_jobs(
    State(state): State<AppState>,
    signed: Signed<ListEndpoint>,
) -> ApiResult<Json<JobListResponse>> {
    let (_signer, body, _) = signed.claim_read_only(&state).await?;
    let limit = range("limit", body.limit, DEFAULT_LIST_LIMIT, 1, MAX_LIST_LIMIT)?;
    let skip = range("skip", body.skip, 0, 0, MAX_LIST_SKIP)?;
    let mut conn = state.db.read().await?;
    let now = db_now(&mut conn, state.db.backend()).await?;
    // Open jobs, and reserved ones whose reservation ran out, newest first: each status is
    // read in the order of the `jobs_board` index (status, created_at_ms, job_id) up to the
    // page's end, and the two are merged. One query with `status = 'open' OR …` would sort
    // every open job for each page.
    let sql = format!(
        "SELECT {JOB_COLUMNS} FROM (SELECT {JOB_COLUMNS} FROM jobs \
           WHERE status = 'open' AND completions < max_completions \
           ORDER BY created_at_ms DESC, job_id DESC LIMIT $2 + $3) AS open_jobs \
         UNION ALL \
         SELECT {JOB_COLUMNS} FROM (SELECT {JOB_COLUMNS} FROM jobs \
           WHERE status = 'reserved' AND reserved_until_ms <= $1 AND completions < max_completions \
           ORDER BY created_at_ms DESC, job_id DESC LIMIT $2 + $3) AS lapsed_jobs \
         ORDER BY created_at_ms DESC, job_id DESC LIMIT $2 OFFSET $3"
    );
    let mut rows = sql_fetch_all!(conn.conn(), JobRow, &sql, now, limit + 1, skip)?;
    let has_more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let jobs: Vec<_> = rows.iter().map(|r| r.summary(now)).collect();
    Ok(Json(JobListResponse {
        success: true,
        count: jobs.len(),
        jobs,
        limit,
        skip,
        has_more,
    }))
}

/// Why `wallet` cannot reserve `job` now (the reserve statement matched nothing).
async fn not_available(
    conn: &mut impl AsConn,
    job: &JobRow,
    wallet: &str,
    now: i64,
) -> ApiResult<ApiError> {
    let own = sql_scalar_optional!(
        conn.conn(),
        i64,
        "SELECT COUNT(*) FROM job_submissions WHERE job_id = $1 AND wallet_address = $2 \
           AND status IN ('submitted', 'approved')",
        &job.job_id,
        wallet
    )?
    .unwrap_or(0);
    let (reason, message) = if job.reserved_at(now) {
        ("reserved", "Another agent holds this job's reservation")
    } else if own > 0 {
        (
            "already_submitted",
            "You already have a pending or approved submission for this job",
        )
    } else if job.status == "submitted" {
        ("submitted", "This job's submission awaits verification")
    } else {
        ("completed", "This job is finished")
    };
    let mut err = ApiError::new(ErrorCode::JOB_NOT_AVAILABLE, message)
        .with_detail("reason", reason)
        .with_detail("job_id", job.job_id.clone())
        .with_detail("status", job.status_at(now).to_owned());
    if job.reserved_at(now) {
        if let Some(until) = job.reserved_until_ms {
            err = err.with_detail("reserved_until", rfc3339_ms(until));
        }
    }
    Ok(err)
}

/// Reserve a job exclusively (signed: `action:job_reserve`, `product:<jobId>`, payload
/// `{}`). The window (30 minutes by default) runs on the database clock. The response
/// carries the private instructions, the reservation id, and per job type the one tracked
/// social link or the workflow token.
#[utoipa::path(
    post,
    path = "/api/external/jobs/{jobId}/reserve",
    tag = "jobs",
    params(("jobId" = String, Path, description = "Job to reserve")),
    request_body = SignedEnvelope,
    responses(
        (status = 200, description = "Reserved; to the holder of the live reservation, that reservation again (same id and window, a fresh workflow token)", body = JobReserveResponse),
        (status = 401, description = "Signature or session rejected", body = ErrorBody),
        (status = 404, description = "No such job (JOB_NOT_FOUND)", body = ErrorBody),
        (status = 409, description = "JOB_NOT_AVAILABLE (details.reason: reserved, submitted, completed, already_submitted) or a replayed request_id", body = ErrorBody),
        (status = 422, description = "Malformed body", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all, fields(job_id = %path.job_id))]
pub async fn reserve_job(
    State(state): State<AppState>,
    ApiPath(path): ApiPath<JobPath>,
    signed: Signed<ReserveEndpoint>,
) -> ApiResult<Json<JobReserveResponse>> {
    let mut tx = state.db.begin().await?;
    let (signer, _) = signed.claim(&mut tx).await?;
    let wallet = signer.wallet.to_string();
    let now = db_now(&mut tx, state.db.backend()).await?;
    let window_ms = i64::try_from(state.config.job_reservation_secs)
        .unwrap_or(i64::MAX / 2_000)
        .saturating_mul(1000);
    let until = now.saturating_add(window_ms);
    let epoch = sql_scalar_optional!(
        tx.conn(),
        i64,
        "UPDATE jobs SET status = 'reserved', reservation_epoch = reservation_epoch + 1, \
           reserved_by = $1, reserved_until_ms = $2, updated_at_ms = $3 \
         WHERE job_id = $4 AND completions < max_completions \
           AND (status = 'open' OR (status = 'reserved' AND reserved_until_ms <= $3)) \
           AND NOT EXISTS (SELECT 1 FROM job_submissions s WHERE s.job_id = $4 \
                 AND s.wallet_address = $1 AND s.status IN ('submitted', 'approved')) \
         RETURNING reservation_epoch",
        &wallet,
        until,
        now,
        &path.job_id
    )?;
    let Some(epoch) = epoch else {
        let job = job_or_404(&mut tx, &path.job_id).await?;
        if job.reserved_at(now) && job.reserved_by.as_deref() == Some(wallet.as_str()) {
            // The holder asks again (its first answer may have been lost): the same
            // reservation, with a fresh workflow token replacing the old one.
            let answer = reserved_again(&mut tx, &job).await?;
            let id = reservation_id(&job.job_id, job.reservation_epoch);
            record_outcome(&mut tx, &signer, Effect::Reservation(&id)).await?;
            tx.commit().await?;
            state.metrics.reservation("job_repeated");
            tracing::info!(job_id = %job.job_id, "job reservation repeated to its holder");
            return Ok(Json(answer));
        }
        state.metrics.reservation("job_conflict");
        return Err(not_available(&mut tx, &job, &wallet, now).await?);
    };
    let job = job_or_404(&mut tx, &path.job_id).await?;
    let id = reservation_id(&job.job_id, epoch);
    let code = random_hex(8);
    let mut social_share = None;
    let mut workflow_access = None;
    let mut tracked = None;
    let mut token_digest = None;
    match job.job_type.as_str() {
        "social_share" => {
            let platform = job.platform.clone().unwrap_or_default();
            let url = tracked_url(
                job.target_url.as_deref().unwrap_or_default(),
                &platform,
                &job.job_id,
                &code,
            )
            .ok_or_else(|| ApiError::internal(anyhow::anyhow!("stored target_url unparsable")))?;
            tracked = Some(url.clone());
            social_share = Some(SocialShareAccess {
                platform,
                tracking_links: vec![url],
                tracking_code: code.clone(),
            });
        }
        "workflow_creation" => {
            let token = format!("jwt_{}", random_hex(24));
            token_digest = Some(key_digest(&token));
            workflow_access = Some(WorkflowAccess {
                access_token: token,
                expires_at: rfc3339_ms(until),
            });
        }
        _ => {}
    }
    sql_execute!(
        tx.conn(),
        "INSERT INTO job_reservations (reservation_id, job_id, epoch, wallet_address, \
           tracking_code, tracked_url, workflow_token_digest, reserved_at_ms, expires_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        &id,
        &job.job_id,
        epoch,
        &wallet,
        &code,
        tracked.as_deref(),
        token_digest.as_deref(),
        now,
        until
    )?;
    record_outcome(&mut tx, &signer, Effect::Reservation(&id)).await?;
    tx.commit().await?;
    state.metrics.reservation("job_granted");
    tracing::info!(job_id = %job.job_id, epoch, "job reserved");
    Ok(Json(reserve_answer(
        &job,
        id,
        until,
        social_share,
        workflow_access,
        "Job reserved. Do the work and complete it before reserved_until.",
    )))
}

/// The reserve answer for `job`'s reservation `id`, valid until `until`.
fn reserve_answer(
    job: &JobRow,
    id: String,
    until: i64,
    social_share: Option<SocialShareAccess>,
    workflow_access: Option<WorkflowAccess>,
    message: &str,
) -> JobReserveResponse {
    JobReserveResponse {
        success: true,
        message: message.to_owned(),
        job: ReservedJob {
            job_id: job.job_id.clone(),
            title: job.title.clone(),
            job_type: job.job_type.clone(),
            public_description: job.public_description.clone(),
            job_instructions: job.private_instructions.clone(),
            reservation_id: id,
            reserved_until: rfc3339_ms(until),
            reward_credits: job.reward_credits,
            status: "reserved".to_owned(),
            social_share,
        },
        workflow_access,
    }
}

#[derive(Debug, sqlx::FromRow)]
struct HeldRow {
    tracking_code: String,
    tracked_url: Option<String>,
}

/// The live reservation of `job`, answered again to its holder: the same id, window and
/// tracked link; a workflow_creation job gets a new token, and the old one stops working.
async fn reserved_again(tx: &mut impl AsConn, job: &JobRow) -> ApiResult<JobReserveResponse> {
    let id = reservation_id(&job.job_id, job.reservation_epoch);
    let held = sql_fetch_optional!(
        tx.conn(),
        HeldRow,
        "SELECT tracking_code, tracked_url FROM job_reservations WHERE reservation_id = $1",
        &id
    )?
    .ok_or_else(|| ApiError::internal(anyhow::anyhow!("live reservation {id} has no record")))?;
    let until = job.reserved_until_ms.unwrap_or_default();
    let mut social_share = None;
    let mut workflow_access = None;
    match job.job_type.as_str() {
        "social_share" => {
            social_share = Some(SocialShareAccess {
                platform: job.platform.clone().unwrap_or_default(),
                tracking_links: held.tracked_url.into_iter().collect(),
                tracking_code: held.tracking_code,
            });
        }
        "workflow_creation" => {
            let token = format!("jwt_{}", random_hex(24));
            sql_execute!(
                tx.conn(),
                "UPDATE job_reservations SET workflow_token_digest = $1 WHERE reservation_id = $2",
                key_digest(&token),
                &id
            )?;
            workflow_access = Some(WorkflowAccess {
                access_token: token,
                expires_at: rfc3339_ms(until),
            });
        }
        _ => {}
    }
    Ok(reserve_answer(
        job,
        id,
        until,
        social_share,
        workflow_access,
        "You already hold this job's reservation: here it is again (a workflow token issued \
         before this one no longer works). Complete it before reserved_until.",
    ))
}

fn proof_issue(loc: &[&str], msg: impl Into<String>) -> ApiError {
    ApiError::invalid_field(loc, "value_error", msg).recode(ErrorCode::JOB_PROOF_INVALID)
}

/// Checks the one social post against the job and the issued tracked URL.
fn check_social(
    hosts: &PostHosts,
    job: &JobRow,
    posts: Option<&[SocialPostProof]>,
    issued: &str,
    code: &str,
) -> ApiResult<()> {
    let posts = posts.unwrap_or_default();
    if posts.len() != 1 {
        return Err(proof_issue(
            &["body", "social_posts"],
            format!(
                "exactly one social_posts item is required for a social_share job (got {})",
                posts.len()
            ),
        ));
    }
    let post = &posts[0];
    let platform = job.platform.as_deref().unwrap_or_default();
    if normalize_platform(&post.platform) != platform {
        return Err(proof_issue(
            &["body", "social_posts", "0", "platform"],
            format!("platform must be {platform}, the job's platform"),
        ));
    }
    if post.target_url_used != issued {
        return Err(proof_issue(
            &["body", "social_posts", "0", "target_url_used"],
            "target_url_used must equal the tracked URL issued for this reservation exactly",
        )
        .with_detail("expected_target_url_used", issued.to_owned()));
    }
    let url = (post.post_url.len() <= MAX_POST_URL_LEN)
        .then(|| reqwest::Url::parse(post.post_url.trim()).ok())
        .flatten()
        .filter(|u| matches!(u.scheme(), "http" | "https"));
    let Some(url) = url else {
        return Err(proof_issue(
            &["body", "social_posts", "0", "post_url"],
            "post_url must be an absolute http(s) URL of at most 2048 characters",
        ));
    };
    if !url
        .host_str()
        .is_some_and(|h| hosts.allows(Some(platform), h))
    {
        return Err(proof_issue(
            &["body", "social_posts", "0", "post_url"],
            format!("post_url must be a post on {platform} (its host is not accepted for this platform)"),
        ));
    }
    // A URL that carries the tracking code itself (a search, share or soft-404 page that
    // echoes its path or query) would "contain" the link without any post: refuse it, in any
    // encoding (percent-escapes decoded repeatedly, case ignored).
    if carries_code(&post.post_url, code) {
        return Err(proof_issue(
            &["body", "social_posts", "0", "post_url"],
            "post_url must be the published post itself, not a URL that carries the tracked link",
        ));
    }
    if post.message_text.chars().count() > MAX_MESSAGE_CHARS {
        return Err(proof_issue(
            &["body", "social_posts", "0", "message_text"],
            "message_text is at most 4000 characters",
        ));
    }
    if let Some(at) = post.posted_at.as_deref() {
        if crate::workflows::parse_time(at).is_none() {
            return Err(proof_issue(
                &["body", "social_posts", "0", "posted_at"],
                "posted_at must be an RFC 3339 time",
            ));
        }
    }
    Ok(())
}

/// `text` with percent-escapes decoded until nothing changes (at most eight rounds, so
/// `%2525…` nestings cannot hide anything), `+` read as a space.
pub fn fully_decoded(text: &str) -> String {
    let mut current = text.replace('+', " ");
    for _ in 0..8 {
        let next = percent_encoding::percent_decode_str(&current)
            .decode_utf8_lossy()
            .into_owned();
        if next == current {
            break;
        }
        current = next;
    }
    current
}

/// Whether `url`, decoded fully, carries the tracking `code` anywhere (case ignored).
pub fn carries_code(url: &str, code: &str) -> bool {
    !code.is_empty()
        && fully_decoded(url)
            .to_lowercase()
            .contains(&code.to_lowercase())
}

/// Why `wallet` holds no live reservation of `job`.
async fn reservation_required(
    conn: &mut impl AsConn,
    job: &JobRow,
    wallet: &str,
    now: i64,
) -> ApiResult<ApiError> {
    let had = sql_scalar_optional!(
        conn.conn(),
        i64,
        "SELECT COUNT(*) FROM job_reservations WHERE job_id = $1 AND wallet_address = $2",
        &job.job_id,
        wallet
    )?
    .unwrap_or(0);
    // Re-read: a concurrent completion of the same reservation may have just won.
    let epoch = super::find_job(conn, &job.job_id)
        .await?
        .map_or(job.reservation_epoch, |j| j.reservation_epoch);
    let submitted = sql_scalar_optional!(
        conn.conn(),
        i64,
        "SELECT COUNT(*) FROM job_submissions WHERE job_id = $1 AND wallet_address = $2 AND epoch = $3",
        &job.job_id,
        wallet,
        epoch
    )?
    .unwrap_or(0);
    let reason = if submitted > 0 {
        "already_submitted"
    } else if had > 0 {
        "expired"
    } else if job.reserved_at(now) {
        "held_by_another_agent"
    } else {
        "not_reserved"
    };
    Ok(ApiError::new(
        ErrorCode::JOB_RESERVATION_REQUIRED,
        match reason {
            "already_submitted" => "This reservation's work was already submitted; follow it with the status endpoint",
            "expired" => "Your reservation of this job expired or was replaced; the work can no longer be submitted",
            "held_by_another_agent" => "Another agent holds this job's reservation",
            _ => "Reserve this job before completing it",
        },
    )
    .with_detail("reason", reason)
    .with_detail("job_id", job.job_id.clone()))
}

/// Submit completion proof (signed: `action:job_complete`, `product:<jobId>`, payload: the
/// body without envelope fields). Only the holder of the live reservation; social_share
/// jobs need exactly one `social_posts` item whose `target_url_used` equals the issued
/// tracked URL; workflow_creation jobs need the `workflow_id` this reservation created and
/// published. The job moves to `submitted` and the verifier takes over.
#[utoipa::path(
    post,
    path = "/api/external/jobs/{jobId}/complete",
    tag = "jobs",
    params(("jobId" = String, Path, description = "Job to complete")),
    request_body(content = JobCompleteBody, description = "The completion fields plus the signature envelope (wallet_address, session_nonce, request_id, signature)"),
    responses(
        (status = 200, description = "Submitted; verification queued", body = JobCompleteResponse),
        (status = 401, description = "Signature or session rejected", body = ErrorBody),
        (status = 404, description = "No such job (JOB_NOT_FOUND)", body = ErrorBody),
        (status = 409, description = "JOB_RESERVATION_REQUIRED (no live reservation of yours), JOB_RESERVATION_MISMATCH (reservation_id not your active one), or a replayed request_id", body = ErrorBody),
        (status = 422, description = "JOB_PROOF_INVALID or VALIDATION_ERROR with detail[]", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all, fields(job_id = %path.job_id))]
pub async fn complete_job(
    State(state): State<AppState>,
    ApiPath(path): ApiPath<JobPath>,
    signed: Signed<CompleteEndpoint>,
) -> ApiResult<Json<JobCompleteResponse>> {
    let mut tx = state.db.begin().await?;
    let (signer, body) = signed.claim(&mut tx).await?;
    let wallet = signer.wallet.to_string();
    let now = db_now(&mut tx, state.db.backend()).await?;
    let job = job_or_404(&mut tx, &path.job_id).await?;
    if !(job.reserved_at(now) && job.reserved_by.as_deref() == Some(wallet.as_str())) {
        return Err(reservation_required(&mut tx, &job, &wallet, now).await?);
    }
    let current = reservation_id(&job.job_id, job.reservation_epoch);
    if let Some(given) = body.reservation_id.as_deref() {
        if given != current {
            return Err(ApiError::new(
                ErrorCode::JOB_RESERVATION_MISMATCH,
                "reservation_id is not your active reservation of this job",
            )
            .with_detail(
                "reservation_id",
                given.chars().take(128).collect::<String>(),
            )
            .with_detail("active_reservation_id", current));
        }
    }
    let proof = body.proof_text.trim();
    if proof.is_empty() || proof.chars().count() > MAX_PROOF_TEXT_CHARS {
        return Err(ApiError::invalid_field(
            &["body", "proof_text"],
            "value_error",
            format!("proof_text must be 1 to {MAX_PROOF_TEXT_CHARS} characters"),
        ));
    }
    let mut posts: Vec<SocialPostProof> = Vec::new();
    let mut workflow_id = None;
    match job.job_type.as_str() {
        "social_share" => {
            let (code, issued) = sql_fetch_optional!(
                tx.conn(),
                (String, Option<String>),
                "SELECT tracking_code, tracked_url FROM job_reservations WHERE reservation_id = $1",
                &current
            )?
            .unwrap_or_default();
            let issued = issued.unwrap_or_default();
            let hosts = PostHosts::parse(&state.config.job_post_hosts).unwrap_or_default();
            check_social(&hosts, &job, body.social_posts.as_deref(), &issued, &code)?;
            posts = body.social_posts.clone().unwrap_or_default();
        }
        "workflow_creation" => {
            let Some(id) = body.workflow_id.as_deref().map(str::trim) else {
                return Err(proof_issue(
                    &["body", "workflow_id"],
                    "workflow_id is required for a workflow_creation job",
                ));
            };
            let status = sql_scalar_optional!(
                tx.conn(),
                String,
                "SELECT w.status FROM job_workflows jw JOIN workflows w ON w.workflow_id = jw.workflow_id \
                 WHERE jw.workflow_id = $1 AND jw.reservation_id = $2",
                id,
                &current
            )?;
            match status.as_deref() {
                Some("published") => workflow_id = Some(id.to_owned()),
                Some(_) => {
                    return Err(proof_issue(
                        &["body", "workflow_id"],
                        "publish the workflow first (POST /api/external/jobs/{jobId}/workflow/{workflowId}/publish)",
                    ))
                }
                None => {
                    return Err(proof_issue(
                        &["body", "workflow_id"],
                        "workflow_id must be a workflow created under this reservation",
                    ))
                }
            }
        }
        _ => {}
    }
    let moved = sql_execute!(
        tx.conn(),
        "UPDATE jobs SET status = 'submitted', updated_at_ms = $1 \
         WHERE job_id = $2 AND status = 'reserved' AND reservation_epoch = $3 \
           AND reserved_by = $4 AND reserved_until_ms > $1",
        now,
        &job.job_id,
        job.reservation_epoch,
        &wallet
    )?;
    if moved == 0 {
        return Err(reservation_required(&mut tx, &job, &wallet, now).await?);
    }
    let submission_id = random_hex(12);
    // Jobs without an automated check wait for an operator.
    let verification = if job.job_type == "general" {
        "needs_human"
    } else {
        "queued"
    };
    sql_execute!(
        tx.conn(),
        "INSERT INTO job_submissions (submission_id, job_id, reservation_id, epoch, \
           wallet_address, proof_text, social_posts, workflow_id, status, verification_status, \
           attempts, next_attempt_at_ms, created_at_ms, updated_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'submitted', $9, 0, $10, $10, $10)",
        &submission_id,
        &job.job_id,
        &current,
        job.reservation_epoch,
        &wallet,
        proof,
        serde_json::to_string(&posts).map_err(ApiError::internal)?,
        workflow_id.as_deref(),
        verification,
        now
    )?;
    let sql = format!("SELECT {SUBMISSION_COLUMNS} FROM job_submissions WHERE submission_id = $1");
    let row = sql_fetch_optional!(tx.conn(), SubmissionRow, &sql, &submission_id)?
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("submission vanished")))?;
    tx.commit().await?;
    tracing::info!(job_id = %job.job_id, submission_id = %submission_id, "job submitted");
    Ok(Json(JobCompleteResponse {
        success: true,
        message: "Submitted. Credits are granted after verification.".to_owned(),
        job: JobStateView {
            job_id: job.job_id.clone(),
            status: "submitted".to_owned(),
        },
        submission: row.view(),
    }))
}

/// The caller's view of a job (signed: `action:job_status`, `product:<jobId>`, payload
/// `{}`): the job, the caller's live reservation, whether a completion would be accepted,
/// the caller's latest submission with its verification, and the payout.
#[utoipa::path(
    post,
    path = "/api/external/jobs/{jobId}/status",
    tag = "jobs",
    params(("jobId" = String, Path, description = "Job to check")),
    request_body = SignedEnvelope,
    responses(
        (status = 200, description = "The caller's view of the job", body = JobStatusResponse),
        (status = 401, description = "Signature or session rejected", body = ErrorBody),
        (status = 404, description = "No such job (JOB_NOT_FOUND)", body = ErrorBody),
        (status = 409, description = "request_id already used in this session", body = ErrorBody),
        (status = 422, description = "Malformed body", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all, fields(job_id = %path.job_id))]
pub async fn job_status(
    State(state): State<AppState>,
    ApiPath(path): ApiPath<JobPath>,
    signed: Signed<StatusEndpoint>,
) -> ApiResult<Json<JobStatusResponse>> {
    let (signer, _, _) = signed.claim_read_only(&state).await?;
    let wallet = signer.wallet.to_string();
    let mut conn = state.db.read().await?;
    let now = db_now(&mut conn, state.db.backend()).await?;
    let job = job_or_404(&mut conn, &path.job_id).await?;
    let active = job.reserved_at(now) && job.reserved_by.as_deref() == Some(wallet.as_str());
    let sql = format!(
        "SELECT {SUBMISSION_COLUMNS} FROM job_submissions WHERE job_id = $1 AND wallet_address = $2 \
         ORDER BY created_at_ms DESC, submission_id DESC LIMIT 1"
    );
    let submission = sql_fetch_optional!(conn.conn(), SubmissionRow, &sql, &job.job_id, &wallet)?;
    // Read after the submission, so a submission shown as paid has its credits included.
    let balance = crate::ledger::balance(&mut conn, &signer.wallet).await?;
    let mut reservation = None;
    if active {
        let id = reservation_id(&job.job_id, job.reservation_epoch);
        let link = sql_fetch_optional!(
            conn.conn(),
            (String, Option<String>),
            "SELECT tracking_code, tracked_url FROM job_reservations WHERE reservation_id = $1",
            &id
        )?;
        let social_share = match (link, job.platform.clone()) {
            (Some((code, Some(url))), Some(platform)) => Some(SocialShareAccess {
                platform,
                tracking_links: vec![url],
                tracking_code: code,
            }),
            _ => None,
        };
        reservation = Some(ReservationView {
            reservation_id: id,
            reserved_until: job.reserved_until_ms.map(rfc3339_ms).unwrap_or_default(),
            social_share,
        });
    }
    let payout = PayoutView {
        status: match submission.as_ref().map(|s| s.status.as_str()) {
            None => "none",
            Some("approved") => "paid",
            Some("rejected") => "rejected",
            Some(_) => "pending",
        }
        .to_owned(),
        reward_credits: job.reward_credits,
        paid_at: submission
            .as_ref()
            .and_then(|s| s.paid_at_ms)
            .map(rfc3339_ms),
        entry_id: submission.as_ref().and_then(|s| s.payout_entry_id.clone()),
        wallet_balance_credits: balance,
    };
    Ok(Json(JobStatusResponse {
        success: true,
        wallet_address: wallet,
        has_active_reservation: active,
        reservation,
        can_submit: active,
        job: job.summary(now),
        submission: submission.as_ref().map(SubmissionRow::view),
        payout,
    }))
}

#[cfg(test)]
mod tests {
    use super::{carries_code, fully_decoded};

    #[test]
    fn the_tracking_code_is_found_in_any_encoding() {
        let code = "tc_9f3a";
        for url in [
            "https://x.com/search?q=tc_9f3a",
            "https://x.com/search?q=utm_content%3Dtc_9f3a",
            "https://x.com/a/tc%5F9f3a",
            "https://x.com/a/%74%63%5f%39%66%33%61",
            "https://x.com/a/%2574%2563%255F9f3a",
            "https://x.com/a/%252574c_9f3a",
            "https://x.com/a/TC_9F3A",
            "https://x.com/a#tc_9f3a",
        ] {
            assert!(carries_code(url, code), "{url} -> {}", fully_decoded(url));
        }
        assert!(!carries_code("https://x.com/user/status/123", code));
        assert!(!carries_code("https://x.com/a", ""));
        assert_eq!(fully_decoded("a%2Bb+c"), "a+b c");
    }
}
