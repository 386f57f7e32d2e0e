//! BYO-agent workflow schedules: due occurrences that external agents claim, run outside
//! this server, then advance or release. Authenticated with the API-key + budget-key
//! bearer ([`BudgetAuth`]); every schedule belongs to one budget.
//!
//! Endpoints (bearer):
//! - `GET /api/external/workflow-schedules/due?as_of&limit` — read-only list of due
//!   occurrences.
//! - `POST /api/external/workflow-schedules/claim` — lease due occurrences.
//! - `POST /api/external/workflow-schedules/{scheduleId}/advance` — record the run and move
//!   to the next occurrence.
//! - `POST /api/external/workflow-schedules/{scheduleId}/release` — give the lease back.
//!
//! Operator endpoints (admin token):
//! - `POST /api/admin/budgets/{budgetId}/workflow-schedules` — create a schedule.
//! - `GET|PATCH /api/admin/workflow-schedules/{scheduleId}` — show or change one.
//!
//! Leases: a claim is ONE conditional `UPDATE … WHERE <due> AND (unclaimed OR lease
//! expired) … RETURNING`, with times from the database clock, so concurrent workers (and
//! server instances) never hold the same occurrence; every grant bumps `claim_epoch` and
//! mints a new token, so a holder whose lease expired and was re-granted gets
//! `claim_mismatch`. A claim `request_id` is an idempotency key per budget: a retry returns
//! the stored answer (claims that leased something are kept for 24 hours). Bad input is 400 `SCHEDULE_REQUEST_INVALID` (the seeds' status for
//! these endpoints) with `detail[]`; the 409s carry the seed's enums in `error`.

use super::recurrence::{RecurrenceError, Schedule};
use super::{find_published, parse_time};
use crate::accounts::{check_text, random_hex, BudgetAuth};
use crate::admin::Admin;
use crate::db::macros::{sql_execute, sql_fetch_all, sql_fetch_optional, sql_scalar_optional};
use crate::db::{is_unique_violation, AsConn, Db};
use crate::error::{current_context, ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath};
use crate::state::AppState;
use crate::time::rfc3339_ms;
use agentpmt_protocol::wire::ErrorBody;
use agentpmt_protocol::workflows::{
    schedule_conflicts, AdvanceData, AdvanceRequest, AdvanceResponse, ClaimData, ClaimRequest,
    ClaimResponse, ClaimedItem, DueData, DueResponse, Recurrence, ReleaseData, ReleaseRequest,
    ReleaseResponse, RunOutcome, ScheduleAdminResponse, ScheduleCreateRequest,
    ScheduleUpdateRequest, ScheduleView,
};
use agentpmt_protocol::ErrorCode;
use axum::extract::{FromRequest, Request, State};
use axum::http::StatusCode;
use axum::Json;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Default and largest lease, in seconds.
pub const DEFAULT_LEASE_SECS: i64 = 900;
pub const MAX_LEASE_SECS: i64 = 86_400;
/// Largest claim batch and due page.
pub const MAX_BATCH: i64 = 100;
/// How far ahead of now `as_of` may reach (7 days).
pub const MAX_AS_OF_AHEAD_MS: i64 = 7 * 24 * 3600 * 1000;
/// Largest `metadata`, as JSON text.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;

/// The schedule routes (bearer and operator).
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(due))
        .routes(routes!(claim))
        .routes(routes!(advance))
        .routes(routes!(release))
        .routes(routes!(create_schedule))
        .routes(routes!(update_schedule, get_schedule))
}

pub use crate::db::db_now;

/// A JSON body whose validation errors are 400 `SCHEDULE_REQUEST_INVALID` (seed status).
#[derive(Debug)]
pub struct ScheduleJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ScheduleJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        ApiJson::<T>::from_request(req, state)
            .await
            .map(|ApiJson(v)| ScheduleJson(v))
            .map_err(bad_request)
    }
}

fn bad_request(err: ApiError) -> ApiError {
    if err.code() == ErrorCode::VALIDATION_ERROR {
        err.recode(ErrorCode::SCHEDULE_REQUEST_INVALID)
    } else {
        err
    }
}

fn invalid(loc: &[&str], msg: impl Into<String>) -> ApiError {
    ApiError::invalid_field(loc, "value_error", msg).recode(ErrorCode::SCHEDULE_REQUEST_INVALID)
}

fn conflict(code: ErrorCode, label: &'static str, message: &str) -> ApiError {
    ApiError::new(code, message).with_error_label(label)
}

/// `request_id`, `help_url`, `help_doc` of a success envelope.
fn meta() -> (String, String, String) {
    let ctx = current_context();
    let (id, url) = ctx
        .map(|c| (c.request_id.to_string(), c.public_url.to_string()))
        .unwrap_or_default();
    (
        id,
        format!("{url}/api/external/agent-help"),
        format!("{url}/docs"),
    )
}

const SCHEDULE_SELECT: &str = "SELECT s.schedule_id, s.budget_id, s.workflow_id, \
     w.name AS workflow_name, w.slug AS workflow_slug, s.name, s.prompt, s.metadata, s.cron, \
     s.interval_seconds, s.time_zone, s.status, s.due_at_ms, s.claim_token, \
     s.claim_expires_at_ms, s.claim_lease_seconds, s.last_outcome, s.last_external_run_id, \
     s.last_note, s.last_advanced_at_ms, s.created_at_ms, s.updated_at_ms \
     FROM workflow_schedules s LEFT JOIN workflows w ON w.workflow_id = s.workflow_id";

/// A schedule as stored, with its workflow's name and slug.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ScheduleRow {
    pub schedule_id: String,
    pub budget_id: String,
    pub workflow_id: String,
    pub workflow_name: Option<String>,
    pub workflow_slug: Option<String>,
    pub name: String,
    pub prompt: String,
    pub metadata: Option<String>,
    pub cron: Option<String>,
    pub interval_seconds: Option<i64>,
    pub time_zone: String,
    pub status: String,
    pub due_at_ms: i64,
    pub claim_token: Option<String>,
    pub claim_expires_at_ms: Option<i64>,
    pub claim_lease_seconds: Option<i64>,
    pub last_outcome: Option<String>,
    pub last_external_run_id: Option<String>,
    pub last_note: Option<String>,
    pub last_advanced_at_ms: Option<i64>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

impl ScheduleRow {
    fn recurrence(&self) -> Recurrence {
        Recurrence {
            kind: Some(
                if self.cron.is_some() {
                    "cron"
                } else {
                    "interval"
                }
                .to_owned(),
            ),
            cron: self.cron.clone(),
            interval_seconds: self.interval_seconds,
            time_zone: Some(self.time_zone.clone()),
        }
    }

    fn metadata(&self) -> Option<serde_json::Value> {
        self.metadata
            .as_deref()
            .and_then(|m| serde_json::from_str(m).ok())
    }

    fn rule(&self) -> Result<Schedule, RecurrenceError> {
        Schedule::new(self.cron.as_deref(), self.interval_seconds, &self.time_zone)
    }

    /// The wire view at `now` (database clock).
    pub fn view(&self, now: i64) -> ScheduleView {
        let claimed =
            self.claim_token.is_some() && self.claim_expires_at_ms.is_some_and(|e| e > now);
        ScheduleView {
            schedule_id: self.schedule_id.clone(),
            budget_id: self.budget_id.clone(),
            workflow_id: self.workflow_id.clone(),
            workflow_name: self.workflow_name.clone(),
            workflow_slug: self.workflow_slug.clone(),
            name: self.name.clone(),
            prompt: self.prompt.clone(),
            metadata: self.metadata(),
            execution_mode: "external_due".into(),
            status: self.status.clone(),
            due_at: rfc3339_ms(self.due_at_ms),
            time_zone: self.time_zone.clone(),
            recurrence: self.recurrence(),
            claimed,
            claim_expires_at: if claimed {
                self.claim_expires_at_ms.map(rfc3339_ms)
            } else {
                None
            },
            last_outcome: self.last_outcome.clone(),
            last_external_run_id: self.last_external_run_id.clone(),
            last_note: self.last_note.clone(),
            last_advanced_at: self.last_advanced_at_ms.map(rfc3339_ms),
            created_at: rfc3339_ms(self.created_at_ms),
            updated_at: rfc3339_ms(self.updated_at_ms),
        }
    }

    fn claimed_item(&self) -> ClaimedItem {
        ClaimedItem {
            schedule_id: self.schedule_id.clone(),
            budget_id: self.budget_id.clone(),
            workflow_id: self.workflow_id.clone(),
            workflow_name: self.workflow_name.clone(),
            workflow_slug: self.workflow_slug.clone(),
            name: self.name.clone(),
            prompt: self.prompt.clone(),
            metadata: self.metadata(),
            execution_mode: "external_due".into(),
            due_at: rfc3339_ms(self.due_at_ms),
            time_zone: self.time_zone.clone(),
            recurrence: self.recurrence(),
            claim_token: self.claim_token.clone().unwrap_or_default(),
            claim_expires_at: self.claim_expires_at_ms.map(rfc3339_ms).unwrap_or_default(),
            claim_lease_seconds: self.claim_lease_seconds.unwrap_or_default(),
        }
    }
}

async fn load(conn: &mut impl AsConn, schedule_id: &str) -> sqlx::Result<Option<ScheduleRow>> {
    let sql = format!("{SCHEDULE_SELECT} WHERE s.schedule_id = $1");
    sql_fetch_optional!(conn.conn(), ScheduleRow, &sql, schedule_id)
}

/// The schedule of `budget_id`, or 404 `SCHEDULE_NOT_FOUND`.
async fn load_for_budget(
    conn: &mut impl AsConn,
    schedule_id: &str,
    budget_id: &str,
) -> ApiResult<ScheduleRow> {
    match load(conn, schedule_id).await? {
        Some(row) if row.budget_id == budget_id => Ok(row),
        _ => Err(ApiError::new(
            ErrorCode::SCHEDULE_NOT_FOUND,
            "Schedule not found for the authenticated budget",
        )
        .with_detail(
            "schedule_id",
            schedule_id.chars().take(128).collect::<String>(),
        )),
    }
}

fn check_as_of(as_of: Option<&str>, now: i64, loc: &[&str]) -> ApiResult<i64> {
    match as_of.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(now),
        Some(text) => {
            let t =
                parse_time(text).ok_or_else(|| invalid(loc, "as_of must be an RFC 3339 time"))?;
            if t > now + MAX_AS_OF_AHEAD_MS {
                return Err(invalid(loc, "as_of is at most 7 days ahead of now"));
            }
            Ok(t)
        }
    }
}

/// `?as_of&limit` of the due list (checked by hand for clear 400s).
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DueQuery {
    /// Due at or before this time (RFC 3339; default now; at most 7 days ahead).
    as_of: Option<String>,
    /// Page size, 1-100 (default 50).
    limit: Option<String>,
}

/// List due BYO-agent workflow schedules of the bearer's budget (read-only; never starts a
/// run). Claimed occurrences are listed too, with `claimed: true`.
#[utoipa::path(
    get,
    path = "/api/external/workflow-schedules/due",
    tag = "workflow-schedules",
    params(DueQuery),
    security(("budget_bearer" = [])),
    responses(
        (status = 200, description = "Due schedules, earliest first", body = DueResponse),
        (status = 400, description = "Invalid query parameters", body = ErrorBody),
        (status = 401, description = "Missing or invalid API-key + budget-key bearer token", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all)]
pub async fn due(
    auth: BudgetAuth,
    State(state): State<AppState>,
    query: Result<axum::extract::Query<DueQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<DueResponse>> {
    let query = query.map_err(|r| invalid(&["query"], r.body_text()))?.0;
    let limit = match query.limit.as_deref() {
        None => 50,
        Some(l) => l
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|l| (1..=MAX_BATCH).contains(l))
            .ok_or_else(|| {
                invalid(
                    &["query", "limit"],
                    "limit must be an integer from 1 to 100",
                )
            })?,
    };
    let mut conn = state.db.read().await?;
    let now = db_now(&mut conn, state.db.backend()).await?;
    let as_of = check_as_of(query.as_of.as_deref(), now, &["query", "as_of"])?;
    let sql = format!(
        "{SCHEDULE_SELECT} WHERE s.budget_id = $1 AND s.status = 'active' AND s.due_at_ms <= $2 \
         ORDER BY s.due_at_ms, s.schedule_id LIMIT $3"
    );
    let rows = sql_fetch_all!(
        conn.conn(),
        ScheduleRow,
        &sql,
        &auth.budget_id,
        as_of,
        limit
    )?;
    let items: Vec<ScheduleView> = rows.iter().map(|r| r.view(now)).collect();
    let (request_id, help_url, help_doc) = meta();
    Ok(Json(DueResponse {
        success: true,
        data: DueData {
            count: items.len(),
            items,
            as_of: rfc3339_ms(as_of),
        },
        request_id,
        help_url,
        help_doc,
    }))
}

/// Claim due BYO-agent workflow schedule occurrences of the bearer's budget.
///
/// Leases up to `limit` (1-100, default 1) occurrences due at or before `as_of` that are
/// unclaimed or whose lease expired, for `lease_seconds` (1-86400, default 900) on the
/// database clock; each comes with a visible `claim_token` for advance / release. An empty
/// queue is 200 with `items: []`. Retrying with the same `request_id` returns the same
/// claim.
#[utoipa::path(
    post,
    path = "/api/external/workflow-schedules/claim",
    tag = "workflow-schedules",
    request_body = ClaimRequest,
    security(("budget_bearer" = [])),
    responses(
        (status = 200, description = "Budget-scoped queue claim", body = ClaimResponse),
        (status = 400, description = "Invalid claim body", body = ErrorBody),
        (status = 401, description = "Missing or invalid API-key + budget-key bearer token", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all)]
pub async fn claim(
    auth: BudgetAuth,
    State(state): State<AppState>,
    ScheduleJson(request): ScheduleJson<ClaimRequest>,
) -> ApiResult<Json<ClaimResponse>> {
    let limit = request.limit.unwrap_or(1);
    if !(1..=MAX_BATCH).contains(&limit) {
        return Err(invalid(&["body", "limit"], "limit must be 1 to 100"));
    }
    let lease = request.lease_seconds.unwrap_or(DEFAULT_LEASE_SECS);
    if !(1..=MAX_LEASE_SECS).contains(&lease) {
        return Err(invalid(
            &["body", "lease_seconds"],
            "lease_seconds must be 1 to 86400",
        ));
    }
    if let Some(id) = &request.request_id {
        if id.is_empty() || id.chars().count() > 128 || id.chars().any(char::is_control) {
            return Err(invalid(
                &["body", "request_id"],
                "request_id must be 1 to 128 characters without control characters",
            ));
        }
    }
    let data = claim_once(&state.db, &auth.budget_id, &request, limit, lease).await?;
    let (request_id, help_url, help_doc) = meta();
    Ok(Json(ClaimResponse {
        success: true,
        data,
        request_id,
        help_url,
        help_doc,
    }))
}

async fn stored_claim(
    conn: &mut impl AsConn,
    budget_id: &str,
    request_id: &str,
) -> ApiResult<Option<ClaimData>> {
    let stored = sql_scalar_optional!(
        conn.conn(),
        String,
        "SELECT response FROM workflow_schedule_claims WHERE budget_id = $1 AND request_id = $2",
        budget_id,
        request_id
    )?;
    stored
        .map(|text| serde_json::from_str(&text).map_err(ApiError::internal))
        .transpose()
}

async fn claim_once(
    db: &Db,
    budget_id: &str,
    request: &ClaimRequest,
    limit: i64,
    lease: i64,
) -> ApiResult<ClaimData> {
    let mut tx = db.begin().await?;
    let now = db_now(&mut tx, db.backend()).await?;
    if let Some(id) = &request.request_id {
        // Take the idempotency key first: a concurrent request with the same key waits
        // here until this one commits, then reads its answer.
        let taken = sql_execute!(
            tx.conn(),
            "INSERT INTO workflow_schedule_claims (budget_id, request_id, response, created_at_ms) \
             VALUES ($1, $2, '', $3) ON CONFLICT (budget_id, request_id) DO NOTHING",
            budget_id,
            id,
            now
        )?;
        if taken == 0 {
            drop(tx);
            let mut conn = db.write().await?;
            return stored_claim(&mut conn, budget_id, id)
                .await?
                .ok_or_else(|| {
                    ApiError::internal(anyhow::anyhow!("claim record without an answer"))
                });
        }
    }
    let as_of = check_as_of(request.as_of.as_deref(), now, &["body", "as_of"])?;
    let ids: Vec<String> = {
        #[derive(sqlx::FromRow)]
        struct Id {
            schedule_id: String,
        }
        sql_fetch_all!(
            tx.conn(),
            Id,
            "UPDATE workflow_schedules SET \
               claim_token = 'clm_' || $1 || '_' || substr(schedule_id, 5), \
               claim_expires_at_ms = $2 + $3, claim_lease_seconds = $4, \
               claim_epoch = claim_epoch + 1, updated_at_ms = $2 \
             WHERE schedule_id IN ( \
                 SELECT schedule_id FROM workflow_schedules \
                 WHERE budget_id = $5 AND status = 'active' AND due_at_ms <= $6 \
                   AND (claim_token IS NULL OR claim_expires_at_ms <= $2) \
                 ORDER BY due_at_ms, schedule_id LIMIT $7) \
               AND budget_id = $5 AND status = 'active' AND due_at_ms <= $6 \
               AND (claim_token IS NULL OR claim_expires_at_ms <= $2) \
             RETURNING schedule_id",
            random_hex(8),
            now,
            lease * 1000,
            lease,
            budget_id,
            as_of,
            limit
        )?
        .into_iter()
        .map(|r| r.schedule_id)
        .collect()
    };
    let mut rows = Vec::with_capacity(ids.len());
    for id in &ids {
        if let Some(row) = load(&mut tx, id).await? {
            rows.push(row);
        }
    }
    rows.sort_by(|a, b| (a.due_at_ms, &a.schedule_id).cmp(&(b.due_at_ms, &b.schedule_id)));
    let items: Vec<ClaimedItem> = rows.iter().map(ScheduleRow::claimed_item).collect();
    let data = ClaimData {
        count: items.len(),
        items,
        as_of: rfc3339_ms(as_of),
        claim_lease_seconds: lease,
    };
    if let Some(id) = &request.request_id {
        // Only claims that leased something are kept for retries: retrying an empty claim
        // may simply claim afresh (the first answer handed out no work).
        if data.items.is_empty() {
            sql_execute!(
                tx.conn(),
                "DELETE FROM workflow_schedule_claims WHERE budget_id = $1 AND request_id = $2",
                budget_id,
                id
            )?;
        } else {
            sql_execute!(
                tx.conn(),
                "UPDATE workflow_schedule_claims SET response = $1 \
                 WHERE budget_id = $2 AND request_id = $3",
                serde_json::to_string(&data).map_err(ApiError::internal)?,
                budget_id,
                id
            )?;
        }
    }
    tx.commit().await?;
    if !data.items.is_empty() {
        tracing::info!(
            budget_id,
            claimed = data.count,
            lease_seconds = lease,
            "schedule occurrences claimed"
        );
    }
    Ok(data)
}

/// How long a claim `request_id` is remembered for retries.
pub const CLAIM_RECORD_RETENTION_MS: i64 = 24 * 3600 * 1000;

/// Forgets claim records (idempotency keys) created before `before_ms`.
pub async fn prune_claim_records(db: &Db, before_ms: i64) -> sqlx::Result<u64> {
    let mut conn = db.write().await?;
    sql_execute!(
        conn.conn(),
        "DELETE FROM workflow_schedule_claims WHERE created_at_ms < $1",
        before_ms
    )
}

/// The `{scheduleId}` path parameter.
#[derive(Debug, Deserialize)]
pub struct SchedulePath {
    #[serde(rename = "scheduleId")]
    schedule_id: String,
}

fn check_optional_text(loc: &[&str], value: Option<&str>, max: usize) -> ApiResult<()> {
    if let Some(v) = value {
        if v.chars().count() > max {
            return Err(invalid(loc, format!("at most {max} characters")));
        }
    }
    Ok(())
}

/// Checks a claim holder's (due_at, claim_token) against the schedule: due_at_mismatch,
/// claim_required (no claim at all), claim_mismatch, claim_expired, in that order.
fn check_claim(row: &ScheduleRow, due_ms: i64, token: &str, now: i64) -> ApiResult<()> {
    if row.due_at_ms != due_ms {
        return Err(conflict(
            ErrorCode::SCHEDULE_DUE_AT_MISMATCH,
            schedule_conflicts::DUE_AT_MISMATCH,
            "The due time does not match the schedule's current occurrence",
        )
        .with_detail("current_due_at", rfc3339_ms(row.due_at_ms)));
    }
    // Advance and release answer "there is no claim" alike (a release repeated after a
    // release, or after an advance that moved nothing, lands here).
    let Some(current) = row.claim_token.as_deref() else {
        return Err(conflict(
            ErrorCode::SCHEDULE_CLAIM_REQUIRED,
            schedule_conflicts::CLAIM_REQUIRED,
            "No active claim exists for this occurrence: claim it first",
        ));
    };
    if !bool::from(subtle::ConstantTimeEq::ct_eq(
        current.as_bytes(),
        token.as_bytes(),
    )) {
        return Err(conflict(
            ErrorCode::SCHEDULE_CLAIM_MISMATCH,
            schedule_conflicts::CLAIM_MISMATCH,
            "A different worker owns the claim on this occurrence",
        ));
    }
    if row.claim_expires_at_ms.is_none_or(|e| e <= now) {
        return Err(conflict(
            ErrorCode::SCHEDULE_CLAIM_EXPIRED,
            schedule_conflicts::CLAIM_EXPIRED,
            "The claim expired",
        )
        .with_detail("claim_expired_at", row.claim_expires_at_ms.map(rfc3339_ms)));
    }
    Ok(())
}

#[derive(Debug, sqlx::FromRow)]
struct RunRow {
    claim_token: String,
}

/// Mark a claimed occurrence as handled and move the schedule to its next occurrence.
///
/// The next `due_at` is the first occurrence (in the schedule's time zone) after both the
/// handled one and now: missed occurrences are coalesced. Advancing an occurrence that was
/// already advanced with the same claim token answers 200 `already_advanced: true`.
#[utoipa::path(
    post,
    path = "/api/external/workflow-schedules/{scheduleId}/advance",
    tag = "workflow-schedules",
    params(("scheduleId" = String, Path, description = "Schedule id")),
    request_body = AdvanceRequest,
    security(("budget_bearer" = [])),
    responses(
        (status = 200, description = "Schedule occurrence was advanced or was already advanced", body = AdvanceResponse),
        (status = 400, description = "Invalid schedule id or request body", body = ErrorBody),
        (status = 401, description = "Missing or invalid API-key + budget-key bearer token", body = ErrorBody),
        (status = 404, description = "Schedule not found for the authenticated budget", body = ErrorBody),
        (status = 409, description = "error: due_at_mismatch | claim_required | claim_expired | claim_mismatch", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all)]
pub async fn advance(
    auth: BudgetAuth,
    State(state): State<AppState>,
    ApiPath(path): ApiPath<SchedulePath>,
    ScheduleJson(request): ScheduleJson<AdvanceRequest>,
) -> ApiResult<Json<AdvanceResponse>> {
    let due_ms = parse_time(&request.due_at)
        .ok_or_else(|| invalid(&["body", "due_at"], "due_at must be an RFC 3339 time"))?;
    check_optional_text(&["body", "claim_token"], Some(&request.claim_token), 200)?;
    check_optional_text(
        &["body", "external_run_id"],
        request.external_run_id.as_deref(),
        200,
    )?;
    check_optional_text(&["body", "note"], request.note.as_deref(), 2000)?;
    let outcome = request.outcome.unwrap_or(RunOutcome::Success);
    for _ in 0..2 {
        let mut tx = state.db.begin().await?;
        let row = load_for_budget(&mut tx, &path.schedule_id, &auth.budget_id).await?;
        let now = db_now(&mut tx, state.db.backend()).await?;
        let run = sql_fetch_optional!(
            tx.conn(),
            RunRow,
            "SELECT claim_token FROM workflow_schedule_runs WHERE schedule_id = $1 AND due_at_ms = $2",
            &row.schedule_id,
            due_ms
        )?;
        if let Some(run) = run {
            if run.claim_token != request.claim_token {
                return Err(conflict(
                    ErrorCode::SCHEDULE_CLAIM_MISMATCH,
                    schedule_conflicts::CLAIM_MISMATCH,
                    "This occurrence was advanced by a different claim",
                ));
            }
            return Ok(advance_answer(row.view(now), true));
        }
        check_claim(&row, due_ms, &request.claim_token, now)?;
        let rule = row.rule().map_err(ApiError::internal)?;
        let next = rule.next_due(due_ms, now).map_err(ApiError::internal)?;
        let updated = sql_execute!(
            tx.conn(),
            "UPDATE workflow_schedules SET due_at_ms = $1, claim_token = NULL, \
               claim_expires_at_ms = NULL, claim_lease_seconds = NULL, last_outcome = $2, \
               last_external_run_id = $3, last_note = $4, last_advanced_at_ms = $5, \
               updated_at_ms = $5 \
             WHERE schedule_id = $6 AND due_at_ms = $7 AND claim_token = $8 \
               AND claim_expires_at_ms > $5",
            next,
            outcome.as_str(),
            request.external_run_id.as_deref(),
            request.note.as_deref(),
            now,
            &row.schedule_id,
            due_ms,
            &request.claim_token
        )?;
        if updated == 0 {
            // Lost a race (another advance, release or re-claim): look again.
            continue;
        }
        let inserted = sql_execute!(
            tx.conn(),
            "INSERT INTO workflow_schedule_runs (schedule_id, due_at_ms, claim_token, outcome, \
               external_run_id, note, next_due_at_ms, created_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &row.schedule_id,
            due_ms,
            &request.claim_token,
            outcome.as_str(),
            request.external_run_id.as_deref(),
            request.note.as_deref(),
            next,
            now
        );
        match inserted {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => continue,
            Err(e) => return Err(e.into()),
        }
        let after = load(&mut tx, &row.schedule_id)
            .await?
            .ok_or_else(|| ApiError::internal(anyhow::anyhow!("schedule vanished")))?;
        tx.commit().await?;
        tracing::info!(schedule_id = %row.schedule_id, outcome = outcome.as_str(), "schedule advanced");
        return Ok(advance_answer(after.view(now), false));
    }
    Err(conflict(
        ErrorCode::SCHEDULE_CLAIM_MISMATCH,
        schedule_conflicts::CLAIM_MISMATCH,
        "The claim changed while advancing",
    ))
}

fn advance_answer(schedule: ScheduleView, already_advanced: bool) -> Json<AdvanceResponse> {
    let (request_id, help_url, help_doc) = meta();
    Json(AdvanceResponse {
        success: true,
        data: AdvanceData {
            schedule,
            already_advanced,
        },
        request_id,
        help_url,
        help_doc,
    })
}

/// Release a claimed occurrence back to the queue without moving schedule timing.
#[utoipa::path(
    post,
    path = "/api/external/workflow-schedules/{scheduleId}/release",
    tag = "workflow-schedules",
    params(("scheduleId" = String, Path, description = "Schedule id")),
    request_body = ReleaseRequest,
    security(("budget_bearer" = [])),
    responses(
        (status = 200, description = "Schedule occurrence claim was released back to the queue", body = ReleaseResponse),
        (status = 400, description = "Invalid schedule id or request body", body = ErrorBody),
        (status = 401, description = "Missing or invalid API-key + budget-key bearer token", body = ErrorBody),
        (status = 404, description = "Schedule not found for the authenticated budget", body = ErrorBody),
        (status = 409, description = "error: due_at_mismatch | claim_required (no claim at all, as advance says) | claim_expired | claim_mismatch", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all)]
pub async fn release(
    auth: BudgetAuth,
    State(state): State<AppState>,
    ApiPath(path): ApiPath<SchedulePath>,
    ScheduleJson(request): ScheduleJson<ReleaseRequest>,
) -> ApiResult<Json<ReleaseResponse>> {
    let due_ms = parse_time(&request.due_at)
        .ok_or_else(|| invalid(&["body", "due_at"], "due_at must be an RFC 3339 time"))?;
    check_optional_text(&["body", "claim_token"], Some(&request.claim_token), 200)?;
    check_optional_text(&["body", "note"], request.note.as_deref(), 2000)?;
    let mut tx = state.db.begin().await?;
    let row = load_for_budget(&mut tx, &path.schedule_id, &auth.budget_id).await?;
    let now = db_now(&mut tx, state.db.backend()).await?;
    check_claim(&row, due_ms, &request.claim_token, now)?;
    let updated = sql_execute!(
        tx.conn(),
        "UPDATE workflow_schedules SET claim_token = NULL, claim_expires_at_ms = NULL, \
           claim_lease_seconds = NULL, last_note = COALESCE($1, last_note), updated_at_ms = $2 \
         WHERE schedule_id = $3 AND due_at_ms = $4 AND claim_token = $5 AND claim_expires_at_ms > $2",
        request.note.as_deref(),
        now,
        &row.schedule_id,
        due_ms,
        &request.claim_token
    )?;
    if updated == 0 {
        return Err(conflict(
            ErrorCode::SCHEDULE_CLAIM_MISMATCH,
            schedule_conflicts::CLAIM_MISMATCH,
            "The claim changed while releasing",
        ));
    }
    let after = load(&mut tx, &row.schedule_id)
        .await?
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("schedule vanished")))?;
    tx.commit().await?;
    let (request_id, help_url, help_doc) = meta();
    Ok(Json(ReleaseResponse {
        success: true,
        data: ReleaseData {
            released: true,
            schedule: after.view(now),
        },
        request_id,
        help_url,
        help_doc,
    }))
}

/// The `{budgetId}` path parameter.
#[derive(Debug, Deserialize)]
pub struct BudgetPath {
    #[serde(rename = "budgetId")]
    budget_id: String,
}

fn recurrence_error(e: RecurrenceError) -> ApiError {
    let field = match e {
        RecurrenceError::Zone(_) => "time_zone",
        _ => "recurrence",
    };
    ApiError::invalid_field(&["body", field], "value_error", e.to_string())
}

fn check_metadata(metadata: &Option<serde_json::Value>) -> ApiResult<Option<String>> {
    match metadata {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => {
            let text = v.to_string();
            if text.len() > MAX_METADATA_BYTES {
                return Err(ApiError::invalid_field(
                    &["body", "metadata"],
                    "value_error",
                    "metadata is at most 16 KiB of JSON",
                ));
            }
            Ok(Some(text))
        }
    }
}

fn admin_time(loc: &[&str], text: &str) -> ApiResult<i64> {
    parse_time(text)
        .ok_or_else(|| ApiError::invalid_field(loc, "value_error", "must be an RFC 3339 time"))
}

/// Create a BYO-agent schedule for a budget (operator). `execution_mode` is always
/// `external_due`: the server never runs the workflow, external workers claim it.
#[utoipa::path(
    post,
    path = "/api/admin/budgets/{budgetId}/workflow-schedules",
    tag = "admin",
    params(("budgetId" = String, Path, description = "Budget id")),
    request_body = ScheduleCreateRequest,
    security(("admin_token" = [])),
    responses(
        (status = 201, description = "Schedule created", body = ScheduleAdminResponse),
        (status = 401, description = "Missing or wrong admin token", body = ErrorBody),
        (status = 403, description = "Operator API disabled", body = ErrorBody),
        (status = 404, description = "No such budget or published workflow", body = ErrorBody),
        (status = 422, description = "Invalid input", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all)]
pub async fn create_schedule(
    _admin: Admin,
    State(state): State<AppState>,
    ApiPath(path): ApiPath<BudgetPath>,
    ApiJson(request): ApiJson<ScheduleCreateRequest>,
) -> ApiResult<(StatusCode, Json<ScheduleAdminResponse>)> {
    let schedule = new_schedule(&state, &path.budget_id, &request).await?;
    Ok((
        StatusCode::CREATED,
        Json(ScheduleAdminResponse {
            success: true,
            schedule,
        }),
    ))
}

/// Creates a schedule of `budget_id` for a published workflow (the operator API and the
/// console both call this).
pub async fn new_schedule(
    state: &AppState,
    budget_id: &str,
    request: &ScheduleCreateRequest,
) -> ApiResult<ScheduleView> {
    let name = check_text(&["body", "name"], &request.name, 1, 200)?;
    let prompt = check_text(&["body", "prompt"], &request.prompt, 0, 20_000)?;
    let metadata = check_metadata(&request.metadata)?;
    let time_zone = request
        .time_zone
        .as_deref()
        .unwrap_or("UTC")
        .trim()
        .to_owned();
    let rule = Schedule::new(
        request.recurrence.cron.as_deref(),
        request.recurrence.interval_seconds,
        &time_zone,
    )
    .map_err(recurrence_error)?;
    let mut conn = state.db.write().await?;
    let budget = sql_scalar_optional!(
        conn.conn(),
        String,
        "SELECT budget_id FROM budgets WHERE budget_id = $1",
        budget_id
    )?;
    if budget.is_none() {
        return Err(ApiError::new(ErrorCode::NOT_FOUND, "No such budget"));
    }
    let workflow = find_published(&mut conn, &request.workflow_id).await?;
    let now = db_now(&mut conn, state.db.backend()).await?;
    let due_at = match request.start_at.as_deref() {
        Some(t) => admin_time(&["body", "start_at"], t)?,
        None if rule.interval_seconds().is_some() => now,
        None => rule.next_after(now).map_err(recurrence_error)?,
    };
    let id = format!("sch_{}", random_hex(12));
    sql_execute!(
        conn.conn(),
        "INSERT INTO workflow_schedules (schedule_id, budget_id, workflow_id, name, prompt, \
           metadata, cron, interval_seconds, time_zone, status, due_at_ms, created_at_ms, \
           updated_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'active', $10, $11, $11)",
        &id,
        budget_id,
        &workflow.workflow_id,
        &name,
        &prompt,
        metadata,
        rule.cron(),
        rule.interval_seconds(),
        &time_zone,
        due_at,
        now
    )?;
    let row = load(&mut conn, &id)
        .await?
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("schedule vanished")))?;
    Ok(row.view(now))
}

/// A page of schedules, newest first, whose name, id, budget or workflow slug matches `like`
/// (a lowercase `LIKE` pattern escaped with backslashes; `%` matches all): the console's list.
pub async fn page(
    state: &AppState,
    like: &str,
    limit: i64,
    offset: i64,
) -> ApiResult<Vec<ScheduleView>> {
    let mut conn = state.db.read().await?;
    let now = db_now(&mut conn, state.db.backend()).await?;
    let sql = format!(
        "{SCHEDULE_SELECT} WHERE LOWER(s.name) LIKE $1 ESCAPE '\\' \
           OR LOWER(s.schedule_id) LIKE $1 ESCAPE '\\' OR LOWER(s.budget_id) LIKE $1 ESCAPE '\\' \
           OR LOWER(COALESCE(w.slug, '')) LIKE $1 ESCAPE '\\' \
         ORDER BY s.created_at_ms DESC, s.schedule_id LIMIT $2 OFFSET $3"
    );
    let rows = sql_fetch_all!(conn.conn(), ScheduleRow, &sql, like, limit, offset)?;
    Ok(rows.iter().map(|r| r.view(now)).collect())
}

/// A schedule (operator).
#[utoipa::path(
    get,
    path = "/api/admin/workflow-schedules/{scheduleId}",
    tag = "admin",
    params(("scheduleId" = String, Path, description = "Schedule id")),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The schedule", body = ScheduleAdminResponse),
        (status = 401, description = "Missing or wrong admin token", body = ErrorBody),
        (status = 403, description = "Operator API disabled", body = ErrorBody),
        (status = 404, description = "No such schedule", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all)]
pub async fn get_schedule(
    _admin: Admin,
    State(state): State<AppState>,
    ApiPath(path): ApiPath<SchedulePath>,
) -> ApiResult<Json<ScheduleAdminResponse>> {
    let mut conn = state.db.read().await?;
    let now = db_now(&mut conn, state.db.backend()).await?;
    let row = load(&mut conn, &path.schedule_id)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::SCHEDULE_NOT_FOUND, "No such schedule"))?;
    Ok(Json(ScheduleAdminResponse {
        success: true,
        schedule: row.view(now),
    }))
}

/// Change a schedule (operator): name, prompt, metadata, recurrence, time zone, status
/// (`active` / `paused`) or the next `due_at`. Changing timing (recurrence, zone, due_at)
/// drops a current claim, whose holder then gets `due_at_mismatch` or `claim_required`.
#[utoipa::path(
    patch,
    path = "/api/admin/workflow-schedules/{scheduleId}",
    tag = "admin",
    params(("scheduleId" = String, Path, description = "Schedule id")),
    request_body = ScheduleUpdateRequest,
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Updated", body = ScheduleAdminResponse),
        (status = 401, description = "Missing or wrong admin token", body = ErrorBody),
        (status = 403, description = "Operator API disabled", body = ErrorBody),
        (status = 404, description = "No such schedule", body = ErrorBody),
        (status = 422, description = "Invalid input", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all)]
pub async fn update_schedule(
    _admin: Admin,
    State(state): State<AppState>,
    ApiPath(path): ApiPath<SchedulePath>,
    ApiJson(request): ApiJson<ScheduleUpdateRequest>,
) -> ApiResult<Json<ScheduleAdminResponse>> {
    let schedule = change_schedule(&state, &path.schedule_id, &request).await?;
    Ok(Json(ScheduleAdminResponse {
        success: true,
        schedule,
    }))
}

/// Changes a schedule (absent fields keep their values; the operator API and the console
/// both call this).
pub async fn change_schedule(
    state: &AppState,
    schedule_id: &str,
    request: &ScheduleUpdateRequest,
) -> ApiResult<ScheduleView> {
    let mut tx = state.db.begin().await?;
    let row = load(&mut tx, schedule_id)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::SCHEDULE_NOT_FOUND, "No such schedule"))?;
    let now = db_now(&mut tx, state.db.backend()).await?;
    let name = match &request.name {
        Some(n) => check_text(&["body", "name"], n, 1, 200)?,
        None => row.name.clone(),
    };
    let prompt = match &request.prompt {
        Some(p) => check_text(&["body", "prompt"], p, 0, 20_000)?,
        None => row.prompt.clone(),
    };
    let metadata = match &request.metadata {
        Some(_) => check_metadata(&request.metadata)?,
        None => row.metadata.clone(),
    };
    let status = match request.status.as_deref() {
        None => row.status.clone(),
        Some(s @ ("active" | "paused")) => s.to_owned(),
        Some(_) => {
            return Err(ApiError::invalid_field(
                &["body", "status"],
                "value_error",
                "status is active or paused",
            ))
        }
    };
    let time_zone = request
        .time_zone
        .as_deref()
        .map(|z| z.trim().to_owned())
        .unwrap_or_else(|| row.time_zone.clone());
    let (cron, interval) = match &request.recurrence {
        Some(r) => (r.cron.clone(), r.interval_seconds),
        None => (row.cron.clone(), row.interval_seconds),
    };
    let rule = Schedule::new(cron.as_deref(), interval, &time_zone).map_err(recurrence_error)?;
    let timing_changed =
        request.recurrence.is_some() || request.time_zone.is_some() || request.due_at.is_some();
    let due_at = match request.due_at.as_deref() {
        Some(t) => admin_time(&["body", "due_at"], t)?,
        None if request.recurrence.is_some() || request.time_zone.is_some() => {
            rule.next_after(now).map_err(recurrence_error)?
        }
        None => row.due_at_ms,
    };
    sql_execute!(
        tx.conn(),
        "UPDATE workflow_schedules SET name = $1, prompt = $2, metadata = $3, cron = $4, \
           interval_seconds = $5, time_zone = $6, status = $7, due_at_ms = $8, updated_at_ms = $9, \
           claim_token = CASE WHEN $10 THEN NULL ELSE claim_token END, \
           claim_expires_at_ms = CASE WHEN $10 THEN NULL ELSE claim_expires_at_ms END \
         WHERE schedule_id = $11",
        &name,
        &prompt,
        metadata,
        rule.cron(),
        rule.interval_seconds(),
        &time_zone,
        &status,
        due_at,
        now,
        timing_changed,
        &row.schedule_id
    )?;
    let after = load(&mut tx, &row.schedule_id)
        .await?
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("schedule vanished")))?;
    tx.commit().await?;
    Ok(after.view(now))
}
