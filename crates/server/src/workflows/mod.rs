//! Workflows (skill chains), wallet-scoped workflow sessions and BYO-agent workflow
//! schedules.
//!
//! Agent endpoints:
//! - `GET /api/external/workflows` — unsigned: published public workflows, filtered by
//!   `query`, `categories`, `industry_tags`, `publisher`, `since`; paged by `limit`, `skip`.
//! - `POST /api/external/workflows/{workflowId}/fetch` — signed (`workflow_fetch`, empty
//!   payload): the graph plus the wallet's sessions of it and their results.
//! - `POST /api/external/workflows/{workflowId}/start` — signed (`workflow_start`,
//!   `{instance_id}`): start or resume the wallet's session for that instance.
//! - `POST /api/external/workflows/active` — signed (`workflow_active`, `{instance_id}` when
//!   present, else empty): the wallet's live sessions.
//! - `POST /api/external/workflows/{workflowId}/end` — signed (`workflow_end`,
//!   `{workflow_session_id}`): end a session (absent id: the only live one).
//!
//! `{workflowId}` is the 24-hex id or the slug; drafts are not reachable. Private workflows
//! are unlisted: reachable by id or slug, absent from the list.
//!
//! Operator endpoints ([`admin`]) and the schedule endpoints ([`schedules`]) live in their
//! own modules; sessions in [`sessions`], graph validation in [`graph`], recurrence in
//! [`recurrence`].

pub mod admin;
pub mod graph;
pub mod recurrence;
pub mod schedules;
pub mod sessions;

use crate::auth::{Signed, SignedEndpoint};
use crate::db::macros::{sql_fetch_all, sql_fetch_optional};
use crate::db::AsConn;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::time::{now_ms, rfc3339_ms};
use agentpmt_protocol::wire::{ErrorBody, SignedEnvelope};
use agentpmt_protocol::workflows::{
    WorkflowActiveResponse, WorkflowDetail, WorkflowEndBody, WorkflowEndResponse,
    WorkflowFetchResponse, WorkflowGraph, WorkflowInstanceBody, WorkflowListResponse,
    WorkflowStartResponse, WorkflowSummary,
};
use agentpmt_protocol::{ErrorCode, SignedAction};
use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use sessions::SessionRow;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Default idle limit of a workflow session, in seconds.
pub const DEFAULT_SESSION_IDLE_SECS: u64 = 3600;
/// Largest page of the workflow list.
pub const MAX_LIST_LIMIT: i64 = 100;
/// Largest `skip` of the workflow list.
pub const MAX_LIST_SKIP: i64 = 100_000;
/// Most values of a `categories` / `industry_tags` filter.
pub const MAX_FILTER_VALUES: usize = 5;

/// This area's routes (agents, operator, schedules).
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_workflows))
        .routes(routes!(fetch_workflow))
        .routes(routes!(start_workflow))
        .routes(routes!(active_workflows))
        .routes(routes!(end_workflow))
        .merge(admin::router())
        .merge(schedules::router())
}

/// Columns of [`WorkflowRow`].
pub const WORKFLOW_COLUMNS: &str = "workflow_id, slug, name, description, categories, \
     industry_tags, publisher, visibility, status, version, graph, created_at_ms, \
     updated_at_ms, published_at_ms";

/// A workflow as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WorkflowRow {
    pub workflow_id: String,
    pub slug: String,
    pub name: String,
    pub description: String,
    pub categories: String,
    pub industry_tags: String,
    pub publisher: String,
    pub visibility: String,
    pub status: String,
    pub version: i64,
    pub graph: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub published_at_ms: Option<i64>,
}

impl WorkflowRow {
    fn graph(&self) -> WorkflowGraph {
        serde_json::from_str(&self.graph).unwrap_or(WorkflowGraph {
            nodes: Vec::new(),
            edges: Vec::new(),
        })
    }

    /// The list view.
    pub fn summary(&self) -> WorkflowSummary {
        let list = |text: &str| serde_json::from_str::<Vec<String>>(text).unwrap_or_default();
        WorkflowSummary {
            workflow_id: self.workflow_id.clone(),
            slug: self.slug.clone(),
            name: self.name.clone(),
            description: self.description.clone(),
            categories: list(&self.categories),
            industry_tags: list(&self.industry_tags),
            publisher: self.publisher.clone(),
            visibility: self.visibility.clone(),
            status: self.status.clone(),
            version: self.version,
            node_count: self.graph().nodes.len(),
            created_at: rfc3339_ms(self.created_at_ms),
            updated_at: rfc3339_ms(self.updated_at_ms),
            published_at: self.published_at_ms.map(rfc3339_ms),
        }
    }

    /// The full view with the graph.
    pub fn detail(&self) -> WorkflowDetail {
        WorkflowDetail {
            summary: self.summary(),
            graph: self.graph(),
        }
    }
}

/// A workflow by id or slug, in any status.
pub async fn find_any(
    conn: &mut impl AsConn,
    id_or_slug: &str,
) -> sqlx::Result<Option<WorkflowRow>> {
    let sql =
        format!("SELECT {WORKFLOW_COLUMNS} FROM workflows WHERE workflow_id = $1 OR slug = $1");
    sql_fetch_optional!(conn.conn(), WorkflowRow, &sql, id_or_slug)
}

/// A published workflow by id or slug, or 404 `WORKFLOW_NOT_FOUND`.
pub async fn find_published(conn: &mut impl AsConn, id_or_slug: &str) -> ApiResult<WorkflowRow> {
    match find_any(conn, id_or_slug).await? {
        Some(row) if row.status == "published" => Ok(row),
        _ => Err(ApiError::new(
            ErrorCode::WORKFLOW_NOT_FOUND,
            "No published workflow has this id or slug",
        )
        .with_detail(
            "workflow_id",
            id_or_slug.chars().take(128).collect::<String>(),
        )),
    }
}

/// Query parameters of the list (all optional, checked by hand for clear 422s).
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Words to find in the name, slug or description (case-insensitive, at most 200
    /// characters).
    query: Option<String>,
    /// Comma-separated categories; a workflow matches when it has any of them (at most 5).
    categories: Option<String>,
    /// Comma-separated industry tags; any of them (at most 5).
    industry_tags: Option<String>,
    /// Exact publisher name (case-insensitive).
    publisher: Option<String>,
    /// Only workflows updated at or after this time (RFC 3339 or YYYY-MM-DD).
    since: Option<String>,
    /// Page size, 1-100 (default 20).
    limit: Option<String>,
    /// Workflows to skip, 0-100000 (default 0).
    skip: Option<String>,
}

fn query_issue(field: &str, msg: impl Into<String>) -> ApiError {
    ApiError::invalid_field(&["query", field], "value_error", msg)
}

fn int_param(field: &str, value: Option<&str>, default: i64, max: i64, min: i64) -> ApiResult<i64> {
    let Some(value) = value else {
        return Ok(default);
    };
    let n: i64 = value
        .trim()
        .parse()
        .map_err(|_| query_issue(field, format!("{field} must be an integer")))?;
    if !(min..=max).contains(&n) {
        return Err(query_issue(
            field,
            format!("{field} must be {min} to {max}"),
        ));
    }
    Ok(n)
}

/// Up to [`MAX_FILTER_VALUES`] `%|value|%` patterns of a comma-separated filter.
fn list_filter(field: &str, value: Option<&str>) -> ApiResult<Vec<Option<String>>> {
    let values: Vec<String> = value
        .unwrap_or("")
        .split(',')
        .map(|v| v.trim().to_lowercase())
        .filter(|v| !v.is_empty())
        .collect();
    if values.len() > MAX_FILTER_VALUES {
        return Err(query_issue(
            field,
            format!("at most {MAX_FILTER_VALUES} comma-separated values"),
        ));
    }
    if values
        .iter()
        .any(|v| v.chars().count() > 64 || v.contains('|'))
    {
        return Err(query_issue(
            field,
            "each value is at most 64 characters, without |",
        ));
    }
    let mut patterns: Vec<Option<String>> = values
        .iter()
        .map(|v| Some(crate::db::like_contains(&format!("|{v}|"))))
        .collect();
    patterns.resize(MAX_FILTER_VALUES, None);
    Ok(patterns)
}

/// An RFC 3339 time (or a YYYY-MM-DD date, at midnight UTC) in epoch ms.
pub fn parse_time(text: &str) -> Option<i64> {
    let text = text.trim();
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Some(t.timestamp_millis());
    }
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc().timestamp_millis())
}

/// List published public workflows.
///
/// Filters combine with AND; `categories` and `industry_tags` match any listed value.
/// Newest update first. Out-of-range or malformed values answer 422 with `detail[]`.
#[utoipa::path(
    get,
    path = "/api/external/workflows",
    tag = "workflows",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of public workflows", body = WorkflowListResponse),
        (status = 422, description = "Invalid query parameter", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all)]
pub async fn list_workflows(
    State(state): State<AppState>,
    query: Result<axum::extract::Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<WorkflowListResponse>> {
    let q = query
        .map_err(|r| ApiError::invalid_field(&["query"], "value_error", r.body_text()))?
        .0;
    let limit = int_param("limit", q.limit.as_deref(), 20, MAX_LIST_LIMIT, 1)?;
    let skip = int_param("skip", q.skip.as_deref(), 0, MAX_LIST_SKIP, 0)?;
    let text = match q.query.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
        Some(t) if t.chars().count() > 200 => {
            return Err(query_issue("query", "query is at most 200 characters"))
        }
        Some(t) => Some(crate::db::like_contains(&t.to_lowercase())),
        None => None,
    };
    let publisher = match q
        .publisher
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        Some(p) if p.chars().count() > 200 => {
            return Err(query_issue(
                "publisher",
                "publisher is at most 200 characters",
            ))
        }
        other => other.map(str::to_lowercase),
    };
    let since = match q.since.as_deref().filter(|s| !s.trim().is_empty()) {
        Some(s) => Some(parse_time(s).ok_or_else(|| {
            query_issue(
                "since",
                "since must be an RFC 3339 time or a YYYY-MM-DD date",
            )
        })?),
        None => None,
    };
    let cats = list_filter("categories", q.categories.as_deref())?;
    let tags = list_filter("industry_tags", q.industry_tags.as_deref())?;
    let sql = format!(
        "SELECT {WORKFLOW_COLUMNS} FROM workflows \
         WHERE status = 'published' AND visibility = 'public' \
           AND ($1 IS NULL OR search_text LIKE $1 ESCAPE '\\') \
           AND ($2 IS NULL OR LOWER(publisher) = $2) \
           AND ($3 IS NULL OR updated_at_ms >= $3) \
           AND ($4 IS NULL OR categories_index LIKE $4 ESCAPE '\\' \
                OR categories_index LIKE $5 ESCAPE '\\' OR categories_index LIKE $6 ESCAPE '\\' \
                OR categories_index LIKE $7 ESCAPE '\\' OR categories_index LIKE $8 ESCAPE '\\') \
           AND ($9 IS NULL OR tags_index LIKE $9 ESCAPE '\\' \
                OR tags_index LIKE $10 ESCAPE '\\' OR tags_index LIKE $11 ESCAPE '\\' \
                OR tags_index LIKE $12 ESCAPE '\\' OR tags_index LIKE $13 ESCAPE '\\') \
         ORDER BY updated_at_ms DESC, workflow_id LIMIT $14 OFFSET $15"
    );
    let mut conn = state.db.read().await?;
    let rows = sql_fetch_all!(
        conn.conn(),
        WorkflowRow,
        &sql,
        text,
        publisher,
        since,
        cats[0].clone(),
        cats[1].clone(),
        cats[2].clone(),
        cats[3].clone(),
        cats[4].clone(),
        tags[0].clone(),
        tags[1].clone(),
        tags[2].clone(),
        tags[3].clone(),
        tags[4].clone(),
        limit,
        skip
    )?;
    let workflows: Vec<WorkflowSummary> = rows.iter().map(WorkflowRow::summary).collect();
    Ok(Json(WorkflowListResponse {
        success: true,
        count: workflows.len(),
        workflows,
        limit,
        skip,
    }))
}

/// The `{workflowId}` path parameter.
#[derive(Debug, Deserialize)]
pub struct WorkflowPath {
    #[serde(rename = "workflowId")]
    workflow_id: String,
}

/// Body of fetch: the envelope only.
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

signed_endpoint!(FetchEndpoint, EmptyBody, SignedAction::WorkflowFetch);
signed_endpoint!(
    StartEndpoint,
    WorkflowInstanceBody,
    SignedAction::WorkflowStart
);
signed_endpoint!(
    ActiveEndpoint,
    WorkflowInstanceBody,
    SignedAction::WorkflowActive
);
signed_endpoint!(EndEndpoint, WorkflowEndBody, SignedAction::WorkflowEnd);

/// A valid instance id (1-128 characters, no control characters), or 422.
fn check_instance(instance: Option<String>) -> ApiResult<Option<String>> {
    match instance {
        None => Ok(None),
        Some(i) if i.is_empty() || i.chars().count() > 128 || i.chars().any(char::is_control) => {
            Err(ApiError::invalid_field(
                &["body", "instance_id"],
                "value_error",
                "instance_id must be 1 to 128 characters without control characters",
            ))
        }
        Some(i) => Ok(Some(i)),
    }
}

/// Fetch a workflow's graph and the signed wallet's sessions of it with their results
/// (signed: `action:workflow_fetch`, `product:<workflowId>`, empty payload).
#[utoipa::path(
    post,
    path = "/api/external/workflows/{workflowId}/fetch",
    tag = "workflows",
    params(("workflowId" = String, Path, description = "Workflow id or slug")),
    request_body = SignedEnvelope,
    responses(
        (status = 200, description = "The workflow and the wallet's sessions", body = WorkflowFetchResponse),
        (status = 401, description = "Signature or session rejected", body = ErrorBody),
        (status = 404, description = "No published workflow with this id", body = ErrorBody),
        (status = 409, description = "request_id already used in this session", body = ErrorBody),
        (status = 422, description = "Malformed body", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all)]
pub async fn fetch_workflow(
    State(state): State<AppState>,
    crate::extract::ApiPath(path): crate::extract::ApiPath<WorkflowPath>,
    signed: Signed<FetchEndpoint>,
) -> ApiResult<Json<WorkflowFetchResponse>> {
    let (signer, _, _) = signed.claim_read_only(&state).await?;
    let wallet = signer.wallet.to_string();
    let mut conn = state.db.read().await?;
    let workflow = find_published(&mut conn, &path.workflow_id).await?;
    let now = now_ms();
    let rows = sessions::recent_sessions(&mut conn, &wallet, &workflow.workflow_id, 20).await?;
    let mut views = Vec::with_capacity(rows.len());
    let mut active = Vec::new();
    for row in &rows {
        if row.is_live(now) {
            active.push(row.workflow_session_id.clone());
        }
        let results = sessions::calls(&mut conn, &row.workflow_session_id).await?;
        views.push(row.view(now, Some(results)));
    }
    Ok(Json(WorkflowFetchResponse {
        success: true,
        workflow: workflow.detail(),
        sessions: views,
        active_session_ids: active,
    }))
}

/// Start or resume a wallet-scoped workflow session (signed: `action:workflow_start`,
/// `product:<workflowId>`, payload `{instance_id}`).
///
/// One live session per wallet, workflow and `instance_id`: starting again resumes it
/// (`resumed: true`); different instance ids give concurrent sessions. A session idle for
/// `idle_timeout_seconds` ends by itself.
#[utoipa::path(
    post,
    path = "/api/external/workflows/{workflowId}/start",
    tag = "workflows",
    params(("workflowId" = String, Path, description = "Workflow id or slug")),
    request_body = WorkflowInstanceBody,
    responses(
        (status = 200, description = "The live session", body = WorkflowStartResponse),
        (status = 401, description = "Signature or session rejected", body = ErrorBody),
        (status = 404, description = "No published workflow with this id", body = ErrorBody),
        (status = 409, description = "request_id already used in this session", body = ErrorBody),
        (status = 422, description = "Malformed body or instance_id", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all)]
pub async fn start_workflow(
    State(state): State<AppState>,
    crate::extract::ApiPath(path): crate::extract::ApiPath<WorkflowPath>,
    signed: Signed<StartEndpoint>,
) -> ApiResult<Json<WorkflowStartResponse>> {
    let idle_secs = state.config.workflow_session_idle_secs.max(1);
    let idle_ms = i64::try_from(idle_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    let mut tx = state.db.begin().await?;
    let (signer, body) = signed.claim(&mut tx).await?;
    let instance = check_instance(body.instance_id)?.unwrap_or_default();
    let wallet = signer.wallet.to_string();
    let workflow = find_published(&mut tx, &path.workflow_id).await?;
    let now = now_ms();
    sessions::expire_idle(&mut tx, &wallet, now).await?;
    let existing = sessions::live_sessions(
        &mut tx,
        &wallet,
        Some(&workflow.workflow_id),
        Some(&instance),
        now,
    )
    .await?;
    let (session, resumed) = match existing.into_iter().next() {
        Some(mut row) => {
            crate::db::macros::sql_execute!(
                tx.conn(),
                "UPDATE workflow_sessions SET last_activity_at_ms = $1 \
                 WHERE workflow_session_id = $2 AND last_activity_at_ms < $1",
                now,
                &row.workflow_session_id
            )?;
            row.last_activity_at_ms = row.last_activity_at_ms.max(now);
            (row, true)
        }
        None => {
            let row = SessionRow {
                workflow_session_id: format!("wfs_{}", crate::accounts::random_hex(16)),
                workflow_id: workflow.workflow_id.clone(),
                wallet_address: wallet.clone(),
                instance_id: instance.clone(),
                status: "active".into(),
                started_at_ms: now,
                last_activity_at_ms: now,
                idle_timeout_ms: idle_ms,
                ended_at_ms: None,
                end_reason: None,
            };
            // A concurrent start of the same instance may have inserted first: then this
            // statement does nothing and the session it created is resumed.
            let inserted = crate::db::macros::sql_execute!(
                tx.conn(),
                "INSERT INTO workflow_sessions (workflow_session_id, workflow_id, wallet_address, \
                   instance_id, status, started_at_ms, last_activity_at_ms, idle_timeout_ms) \
                 VALUES ($1, $2, $3, $4, 'active', $5, $5, $6) \
                 ON CONFLICT (wallet_address, workflow_id, instance_id) WHERE status = 'active' \
                 DO NOTHING",
                &row.workflow_session_id,
                &row.workflow_id,
                &row.wallet_address,
                &row.instance_id,
                now,
                idle_ms
            )?;
            if inserted == 1 {
                (row, false)
            } else {
                let winner = sessions::live_sessions(
                    &mut tx,
                    &wallet,
                    Some(&workflow.workflow_id),
                    Some(&instance),
                    now,
                )
                .await?
                .into_iter()
                .next()
                .ok_or_else(|| {
                    ApiError::internal(anyhow::anyhow!(
                        "session insert conflicted but no live session was found"
                    ))
                })?;
                (winner, true)
            }
        }
    };
    tx.commit().await?;
    tracing::info!(workflow_id = %workflow.workflow_id, resumed, "workflow session started");
    Ok(Json(WorkflowStartResponse {
        success: true,
        workflow_session_id: session.workflow_session_id.clone(),
        resumed,
        idle_timeout_seconds: u64::try_from(session.idle_timeout_ms / 1000).unwrap_or(idle_secs),
        session: session.view(now, None),
    }))
}

/// List the signed wallet's live workflow sessions, optionally of one `instance_id` (signed:
/// `action:workflow_active`, `product:-`, payload `{instance_id}` when sent, else empty).
#[utoipa::path(
    post,
    path = "/api/external/workflows/active",
    tag = "workflows",
    request_body = WorkflowInstanceBody,
    responses(
        (status = 200, description = "Live sessions, most recently used first", body = WorkflowActiveResponse),
        (status = 401, description = "Signature or session rejected", body = ErrorBody),
        (status = 409, description = "request_id already used in this session", body = ErrorBody),
        (status = 422, description = "Malformed body or instance_id", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all)]
pub async fn active_workflows(
    State(state): State<AppState>,
    signed: Signed<ActiveEndpoint>,
) -> ApiResult<Json<WorkflowActiveResponse>> {
    let (signer, body, _) = signed.claim_read_only(&state).await?;
    let instance = check_instance(body.instance_id)?;
    let wallet = signer.wallet.to_string();
    let now = now_ms();
    let mut conn = state.db.read().await?;
    let rows = sessions::live_sessions(&mut conn, &wallet, None, instance.as_deref(), now).await?;
    let views: Vec<_> = rows.iter().map(|r| r.view(now, None)).collect();
    Ok(Json(WorkflowActiveResponse {
        success: true,
        workflow_session_id: views.first().map(|v| v.workflow_session_id.clone()),
        count: views.len(),
        sessions: views,
    }))
}

/// End a workflow session (signed: `action:workflow_end`, `product:<workflowId>`, payload
/// `{workflow_session_id}`).
///
/// Without `workflow_session_id`, ends the wallet's only live session of this workflow (409
/// `WORKFLOW_SESSION_AMBIGUOUS` when there are several). Ending an ended session answers
/// 200 with `already_ended: true`. Other sessions of the wallet are untouched.
#[utoipa::path(
    post,
    path = "/api/external/workflows/{workflowId}/end",
    tag = "workflows",
    params(("workflowId" = String, Path, description = "Workflow id or slug")),
    request_body = WorkflowEndBody,
    responses(
        (status = 200, description = "The session, now ended", body = WorkflowEndResponse),
        (status = 401, description = "Signature or session rejected", body = ErrorBody),
        (status = 403, description = "The session belongs to another wallet", body = ErrorBody),
        (status = 404, description = "No such workflow or session", body = ErrorBody),
        (status = 409, description = "request_id reused, or several live sessions and none named", body = ErrorBody),
        (status = 422, description = "Malformed body", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all)]
pub async fn end_workflow(
    State(state): State<AppState>,
    crate::extract::ApiPath(path): crate::extract::ApiPath<WorkflowPath>,
    signed: Signed<EndEndpoint>,
) -> ApiResult<Json<WorkflowEndResponse>> {
    let mut tx = state.db.begin().await?;
    let (signer, body) = signed.claim(&mut tx).await?;
    let wallet = signer.wallet.to_string();
    let workflow = find_published(&mut tx, &path.workflow_id).await?;
    let now = now_ms();
    sessions::expire_idle(&mut tx, &wallet, now).await?;
    let not_found = || {
        ApiError::new(
            ErrorCode::WORKFLOW_SESSION_NOT_FOUND,
            "No such workflow session of this workflow",
        )
    };
    let session = match body.workflow_session_id.as_deref() {
        Some(id) => {
            let row = sessions::find(&mut tx, id.trim())
                .await?
                .filter(|r| r.workflow_id == workflow.workflow_id)
                .ok_or_else(|| not_found().with_detail("workflow_session_id", id.to_owned()))?;
            if row.wallet_address != wallet {
                return Err(ApiError::new(
                    ErrorCode::WORKFLOW_SESSION_FOREIGN,
                    "The workflow session belongs to another wallet",
                ));
            }
            row
        }
        None => {
            let mut live =
                sessions::live_sessions(&mut tx, &wallet, Some(&workflow.workflow_id), None, now)
                    .await?;
            match live.len() {
                0 => return Err(not_found()),
                1 => live.remove(0),
                _ => {
                    return Err(ApiError::new(
                        ErrorCode::WORKFLOW_SESSION_AMBIGUOUS,
                        "Several live sessions of this workflow: send workflow_session_id",
                    )
                    .with_detail(
                        "active_session_ids",
                        live.iter()
                            .map(|r| r.workflow_session_id.clone())
                            .collect::<Vec<_>>(),
                    ))
                }
            }
        }
    };
    let already_ended = session.status != "active";
    let mut session = session;
    if !already_ended {
        crate::db::macros::sql_execute!(
            tx.conn(),
            "UPDATE workflow_sessions SET status = 'ended', ended_at_ms = $1, end_reason = 'ended' \
             WHERE workflow_session_id = $2 AND status = 'active'",
            now,
            &session.workflow_session_id
        )?;
        session.status = "ended".into();
        session.ended_at_ms = Some(now);
        session.end_reason = Some("ended".into());
    }
    tx.commit().await?;
    Ok(Json(WorkflowEndResponse {
        success: true,
        workflow_session_id: session.workflow_session_id.clone(),
        already_ended,
        session: session.view(now, None),
    }))
}
