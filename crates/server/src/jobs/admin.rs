//! Operator endpoints of the jobs board (admin token):
//! - `POST /api/admin/jobs` — create a job.
//! - `GET /api/admin/jobs/{jobId}` — a job with its private fields and reservation.
//! - `GET /api/admin/jobs/submissions?status&limit` — submissions (default: awaiting review).
//! - `POST /api/admin/jobs/submissions/{submissionId}/approve` — approve and pay.
//! - `POST /api/admin/jobs/submissions/{submissionId}/reject` — reject with a reason.
//!
//! A decision is final. Approving an approved submission (or rejecting a rejected one)
//! answers 200 with `changed: false` and pays nothing; the opposite decision is 409
//! `JOB_SUBMISSION_ALREADY_REVIEWED`.

use super::{
    decide, find_job, find_submission, job_or_404, normalize_platform, Decision, PostHosts,
    SubmissionRow, SUBMISSION_COLUMNS,
};
use crate::accounts::{check_text, random_hex};
use crate::admin::Admin;
use crate::db::macros::{sql_execute, sql_fetch_all};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath};
use crate::state::AppState;
use crate::workflows::schedules::db_now;
use agentpmt_protocol::jobs::{
    JobAdminResponse, JobCreateRequest, ReviewRequest, ReviewResponse, SubmissionListResponse,
};
use agentpmt_protocol::wire::ErrorBody;
use agentpmt_protocol::ErrorCode;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Largest reward of one job, and most completions.
pub const MAX_REWARD_CREDITS: i64 = 1_000_000_000;
pub const MAX_COMPLETIONS: i64 = 100_000;

/// The operator routes of jobs.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_job))
        .routes(routes!(get_job))
        .routes(routes!(list_submissions))
        .routes(routes!(approve_submission))
        .routes(routes!(reject_submission))
}

fn invalid(field: &str, msg: impl Into<String>) -> ApiError {
    ApiError::invalid_field(&["body", field], "value_error", msg)
}

/// Create a job (operator). social_share jobs need `target_url` (absolute http(s), without
/// `utm_*` parameters) and `platform` (one with accepted post hosts).
#[utoipa::path(
    post,
    path = "/api/admin/jobs",
    tag = "admin",
    request_body = JobCreateRequest,
    security(("admin_token" = [])),
    responses(
        (status = 201, description = "Job created (open)", body = JobAdminResponse),
        (status = 401, description = "Missing or wrong admin token", body = ErrorBody),
        (status = 403, description = "Operator API disabled", body = ErrorBody),
        (status = 422, description = "Invalid fields", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all)]
pub async fn create_job(
    _admin: Admin,
    State(state): State<AppState>,
    ApiJson(request): ApiJson<JobCreateRequest>,
) -> ApiResult<(StatusCode, Json<JobAdminResponse>)> {
    let job = create(&state, &request).await?;
    Ok((
        StatusCode::CREATED,
        Json(JobAdminResponse { success: true, job }),
    ))
}

/// Creates a job (open) from `request` (the operator API and the console both call this).
pub async fn create(
    state: &AppState,
    request: &JobCreateRequest,
) -> ApiResult<agentpmt_protocol::jobs::JobAdminView> {
    let job_type = match request.job_type.trim() {
        t @ ("social_share" | "workflow_creation" | "general") => t.to_owned(),
        _ => {
            return Err(invalid(
                "job_type",
                "job_type is social_share, workflow_creation or general",
            ))
        }
    };
    let title = check_text(&["body", "title"], &request.title, 1, 200)?;
    let public_description = check_text(
        &["body", "public_description"],
        &request.public_description,
        1,
        5000,
    )?;
    let instructions = request.private_instructions.trim().to_owned();
    if instructions.is_empty() || instructions.chars().count() > 20_000 {
        return Err(invalid(
            "private_instructions",
            "private_instructions must be 1 to 20000 characters",
        ));
    }
    if !(1..=MAX_REWARD_CREDITS).contains(&request.reward_credits) {
        return Err(invalid(
            "reward_credits",
            format!("reward_credits must be 1 to {MAX_REWARD_CREDITS}"),
        ));
    }
    let max_completions = request.max_completions.unwrap_or(1);
    if !(1..=MAX_COMPLETIONS).contains(&max_completions) {
        return Err(invalid(
            "max_completions",
            format!("max_completions must be 1 to {MAX_COMPLETIONS}"),
        ));
    }
    let on_reject = match request.on_reject.as_deref().unwrap_or("reopen") {
        r @ ("reopen" | "close") => r.to_owned(),
        _ => return Err(invalid("on_reject", "on_reject is reopen or close")),
    };
    let (target_url, platform) = if job_type == "social_share" {
        let target = request.target_url.as_deref().map(str::trim).unwrap_or("");
        let url = reqwest::Url::parse(target)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
            .filter(|_| target.len() <= 2000);
        let Some(url) = url else {
            return Err(invalid(
                "target_url",
                "target_url must be an absolute http(s) URL of at most 2000 characters",
            ));
        };
        if url.query_pairs().any(|(k, _)| k.starts_with("utm_")) {
            return Err(invalid(
                "target_url",
                "target_url must not carry utm_ parameters (each reservation adds its own)",
            ));
        }
        let platform = normalize_platform(request.platform.as_deref().unwrap_or(""));
        let hosts = PostHosts::parse(&state.config.job_post_hosts).unwrap_or_default();
        let known = hosts.platforms();
        if !known.contains(&platform) {
            return Err(invalid(
                "platform",
                format!("platform must be one of: {}", known.join(", ")),
            ));
        }
        (Some(target.to_owned()), Some(platform))
    } else {
        (None, None)
    };
    let id = random_hex(12);
    let mut tx = state.db.begin().await?;
    let now = db_now(&mut tx, state.db.backend()).await?;
    sql_execute!(
        tx.conn(),
        "INSERT INTO jobs (job_id, job_type, title, public_description, private_instructions, \
           reward_credits, target_url, platform, max_completions, completions, on_reject, \
           status, reservation_epoch, created_at_ms, updated_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0, $10, 'open', 0, $11, $11)",
        &id,
        &job_type,
        &title,
        &public_description,
        &instructions,
        request.reward_credits,
        target_url.as_deref(),
        platform.as_deref(),
        max_completions,
        &on_reject,
        now
    )?;
    let job = job_or_404(&mut tx, &id).await?;
    tx.commit().await?;
    tracing::info!(job_id = %id, job_type = %job_type, "job created");
    Ok(job.admin_view(now))
}

/// `{jobId}`.
#[derive(Debug, Deserialize)]
pub struct AdminJobPath {
    #[serde(rename = "jobId")]
    job_id: String,
}

/// A job with its private fields and live reservation (operator).
#[utoipa::path(
    get,
    path = "/api/admin/jobs/{jobId}",
    tag = "admin",
    params(("jobId" = String, Path, description = "Job id")),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The job", body = JobAdminResponse),
        (status = 401, description = "Missing or wrong admin token", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all)]
pub async fn get_job(
    _admin: Admin,
    State(state): State<AppState>,
    ApiPath(path): ApiPath<AdminJobPath>,
) -> ApiResult<Json<JobAdminResponse>> {
    let mut conn = state.db.read().await?;
    let now = db_now(&mut conn, state.db.backend()).await?;
    let job = job_or_404(&mut conn, &path.job_id).await?;
    Ok(Json(JobAdminResponse {
        success: true,
        job: job.admin_view(now),
    }))
}

/// Query of the submission list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SubmissionQuery {
    /// `submitted` (default: awaiting a decision), `approved`, `rejected` or `all`.
    status: Option<String>,
    /// `queued`, `running`, `transient_error` or `needs_human` (with `submitted`).
    verification_status: Option<String>,
    /// 1-200 (default 50).
    limit: Option<i64>,
}

/// Submissions, oldest first (operator); by default those awaiting a decision.
#[utoipa::path(
    get,
    path = "/api/admin/jobs/submissions",
    tag = "admin",
    params(SubmissionQuery),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Submissions", body = SubmissionListResponse),
        (status = 401, description = "Missing or wrong admin token", body = ErrorBody),
        (status = 422, description = "Invalid query", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all)]
pub async fn list_submissions(
    _admin: Admin,
    State(state): State<AppState>,
    query: Result<axum::extract::Query<SubmissionQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<SubmissionListResponse>> {
    let q = query
        .map_err(|r| ApiError::invalid_field(&["query"], "value_error", r.body_text()))?
        .0;
    let status = match q.status.as_deref().unwrap_or("submitted") {
        "all" => None,
        s @ ("submitted" | "approved" | "rejected") => Some(s.to_owned()),
        _ => {
            return Err(ApiError::invalid_field(
                &["query", "status"],
                "value_error",
                "status is submitted, approved, rejected or all",
            ))
        }
    };
    let verification = match q.verification_status.as_deref() {
        None => None,
        Some(
            v @ ("queued" | "running" | "verified" | "rejected" | "transient_error"
            | "needs_human"),
        ) => Some(v.to_owned()),
        Some(_) => {
            return Err(ApiError::invalid_field(
                &["query", "verification_status"],
                "value_error",
                "verification_status is queued, running, verified, rejected, transient_error or needs_human",
            ))
        }
    };
    let limit = q.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::invalid_field(
            &["query", "limit"],
            "value_error",
            "limit must be 1 to 200",
        ));
    }
    let submissions = submissions(&state, status, verification, limit, 0).await?;
    Ok(Json(SubmissionListResponse {
        success: true,
        count: submissions.len(),
        submissions,
    }))
}

/// Submissions, oldest first, filtered by decision and verification status (the operator
/// API and the console both call this).
pub async fn submissions(
    state: &AppState,
    status: Option<String>,
    verification: Option<String>,
    limit: i64,
    offset: i64,
) -> ApiResult<Vec<agentpmt_protocol::jobs::SubmissionView>> {
    let sql = format!(
        "SELECT {SUBMISSION_COLUMNS} FROM job_submissions \
         WHERE ($1 IS NULL OR status = $1) AND ($2 IS NULL OR verification_status = $2) \
         ORDER BY created_at_ms, submission_id LIMIT $3 OFFSET $4"
    );
    let mut conn = state.db.read().await?;
    let rows = sql_fetch_all!(
        conn.conn(),
        SubmissionRow,
        &sql,
        status,
        verification,
        limit,
        offset
    )?;
    Ok(rows.iter().map(SubmissionRow::view).collect())
}

/// `{submissionId}`.
#[derive(Debug, Deserialize)]
pub struct SubmissionPath {
    #[serde(rename = "submissionId")]
    submission_id: String,
}

async fn review(
    state: &AppState,
    submission_id: &str,
    decision: Decision,
    reason: Option<String>,
) -> ApiResult<Json<ReviewResponse>> {
    let mut tx = state.db.begin().await?;
    let now = db_now(&mut tx, state.db.backend()).await?;
    let Some(submission) = find_submission(&mut tx, submission_id).await? else {
        return Err(ApiError::new(
            ErrorCode::JOB_SUBMISSION_NOT_FOUND,
            "No submission has this id",
        )
        .with_detail(
            "submission_id",
            submission_id.chars().take(128).collect::<String>(),
        ));
    };
    let changed = decide(
        &mut tx,
        &submission,
        decision,
        "operator",
        reason.as_deref(),
        now,
    )
    .await?;
    let after = find_submission(&mut tx, submission_id)
        .await?
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("submission vanished")))?;
    let wanted = match decision {
        Decision::Approve => "approved",
        Decision::Reject => "rejected",
    };
    if !changed && after.status != wanted {
        return Err(ApiError::new(
            ErrorCode::JOB_SUBMISSION_ALREADY_REVIEWED,
            format!("This submission was already {}", after.status),
        )
        .with_detail("status", after.status.clone()));
    }
    let job = find_job(&mut tx, &after.job_id)
        .await?
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("submission without its job")))?;
    tx.commit().await?;
    if changed {
        tracing::info!(submission_id, decision = wanted, "job submission reviewed");
    }
    Ok(Json(ReviewResponse {
        success: true,
        submission: after.view(),
        job: job.admin_view(now),
        changed,
    }))
}

/// Approve a submission and pay its reward once (operator). Works in any verification
/// state of a submission awaiting a decision.
#[utoipa::path(
    post,
    path = "/api/admin/jobs/submissions/{submissionId}/approve",
    tag = "admin",
    params(("submissionId" = String, Path, description = "Submission id")),
    request_body = ReviewRequest,
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Approved and paid (or already approved: changed=false)", body = ReviewResponse),
        (status = 401, description = "Missing or wrong admin token", body = ErrorBody),
        (status = 404, description = "No such submission", body = ErrorBody),
        (status = 409, description = "Already rejected", body = ErrorBody),
        (status = 422, description = "Invalid reason", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all)]
pub async fn approve_submission(
    _admin: Admin,
    State(state): State<AppState>,
    ApiPath(path): ApiPath<SubmissionPath>,
    ApiJson(body): ApiJson<ReviewRequest>,
) -> ApiResult<Json<ReviewResponse>> {
    approve(&state, &path.submission_id, body.reason.as_deref()).await
}

/// Approves a submission and pays its reward once, with an optional reason (the operator
/// API and the console both call this).
pub async fn approve(
    state: &AppState,
    submission_id: &str,
    reason: Option<&str>,
) -> ApiResult<Json<ReviewResponse>> {
    let reason = match reason {
        Some(r) => Some(check_text(&["body", "reason"], r, 1, 1000)?),
        None => None,
    };
    review(state, submission_id, Decision::Approve, reason).await
}

/// Rejects a submission; the reason is required (the operator API and the console both
/// call this).
pub async fn reject(
    state: &AppState,
    submission_id: &str,
    reason: Option<&str>,
) -> ApiResult<Json<ReviewResponse>> {
    let reason = check_text(&["body", "reason"], reason.unwrap_or(""), 1, 1000)?;
    review(state, submission_id, Decision::Reject, Some(reason)).await
}

/// Reject a submission with a reason (operator); the job reopens or closes per its
/// `on_reject`.
#[utoipa::path(
    post,
    path = "/api/admin/jobs/submissions/{submissionId}/reject",
    tag = "admin",
    params(("submissionId" = String, Path, description = "Submission id")),
    request_body = ReviewRequest,
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Rejected (or already rejected: changed=false)", body = ReviewResponse),
        (status = 401, description = "Missing or wrong admin token", body = ErrorBody),
        (status = 404, description = "No such submission", body = ErrorBody),
        (status = 409, description = "Already approved", body = ErrorBody),
        (status = 422, description = "Missing or invalid reason", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all)]
pub async fn reject_submission(
    _admin: Admin,
    State(state): State<AppState>,
    ApiPath(path): ApiPath<SubmissionPath>,
    ApiJson(body): ApiJson<ReviewRequest>,
) -> ApiResult<Json<ReviewResponse>> {
    reject(&state, &path.submission_id, body.reason.as_deref()).await
}
