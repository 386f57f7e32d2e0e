//! Workflow-creation job endpoints, authenticated with the reservation's capability token
//! in `X-Job-Workflow-Token: Bearer <token>` (and nothing else):
//! - `POST /api/external/jobs/{jobId}/workflow/create` — create a private draft workflow.
//! - `PUT /api/external/jobs/{jobId}/workflow/{workflowId}` — update its name,
//!   description and graph (fields left out keep their value).
//! - `POST /api/external/jobs/{jobId}/workflow/{workflowId}/publish` — publish it
//!   privately (unlisted; reachable by id).
//!
//! The token is stored only as its SHA-256. It works only on these routes, only for the
//! job and reservation it was issued with, and only while that reservation is the job's
//! live one (not after expiry, re-reservation or submission): anything else is 401
//! `JOB_WORKFLOW_TOKEN_INVALID` with `details.reason`. It is not an API key, budget key or
//! admin token, so every other bearer-authenticated route refuses it. Graphs are validated
//! as the operator API does (unique ids, edges between existing nodes, tool references).

use super::agent::JobPath;
use crate::accounts::{check_text, key_digest, random_hex};
use crate::db::macros::{sql_execute, sql_fetch_optional, sql_scalar_optional};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath};
use crate::state::AppState;
use crate::time::now_ms;
use crate::workflows::schedules::db_now;
use crate::workflows::{find_any, graph, WorkflowRow};
use agentpmt_protocol::jobs::{
    JobWorkflowResponse, JobWorkflowUpdateRequest, JobWorkflowWriteRequest,
};
use agentpmt_protocol::wire::ErrorBody;
use agentpmt_protocol::workflows::WorkflowGraph;
use agentpmt_protocol::ErrorCode;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The header carrying the token.
pub const HEADER: &str = "x-job-workflow-token";
/// Most workflows one reservation may create.
pub const MAX_WORKFLOWS_PER_RESERVATION: i64 = 10;

/// The job workflow routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_job_workflow))
        .routes(routes!(update_job_workflow))
        .routes(routes!(publish_job_workflow))
}

fn refused(reason: &'static str, message: &str) -> ApiError {
    ApiError::new(ErrorCode::JOB_WORKFLOW_TOKEN_INVALID, message).with_detail("reason", reason)
}

/// A request carrying a live workflow token of some reservation (the job is checked by
/// [`WorkflowToken::for_job`]).
#[derive(Debug, Clone)]
pub struct WorkflowToken {
    pub reservation_id: String,
    pub job_id: String,
    pub wallet: String,
}

#[derive(Debug, sqlx::FromRow)]
struct TokenRow {
    reservation_id: String,
    job_id: String,
    epoch: i64,
    wallet_address: String,
    expires_at_ms: i64,
    reservation_epoch: i64,
    status: String,
    reserved_by: Option<String>,
}

impl FromRequestParts<AppState> for WorkflowToken {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let raw = parts
            .headers
            .get(HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty() && v.len() <= 512);
        let Some(raw) = raw else {
            return Err(refused(
                "missing",
                "Send the reservation's token as X-Job-Workflow-Token: Bearer <access_token>",
            ));
        };
        let token = raw
            .strip_prefix("Bearer ")
            .or_else(|| raw.strip_prefix("bearer "))
            .unwrap_or(raw)
            .trim();
        let mut conn = state.db.read().await?;
        let row = sql_fetch_optional!(
            conn.conn(),
            TokenRow,
            "SELECT r.reservation_id, r.job_id, r.epoch, r.wallet_address, r.expires_at_ms, \
               j.reservation_epoch, j.status, j.reserved_by \
             FROM job_reservations r JOIN jobs j ON j.job_id = r.job_id \
             WHERE r.workflow_token_digest = $1",
            key_digest(token)
        )?;
        let Some(row) = row else {
            return Err(refused("unknown", "This workflow token is not valid"));
        };
        let now = db_now(&mut conn, state.db.backend()).await?;
        if row.expires_at_ms <= now {
            return Err(refused(
                "expired",
                "This workflow token expired with its reservation",
            ));
        }
        if row.reservation_epoch != row.epoch
            || row.status != "reserved"
            || row.reserved_by.as_deref() != Some(row.wallet_address.as_str())
        {
            return Err(refused(
                "reservation_ended",
                "This workflow token's reservation is no longer active",
            ));
        }
        Ok(WorkflowToken {
            reservation_id: row.reservation_id,
            job_id: row.job_id,
            wallet: row.wallet_address,
        })
    }
}

impl WorkflowToken {
    /// This token, if it was issued for `job_id`.
    pub fn for_job(self, job_id: &str) -> ApiResult<Self> {
        if self.job_id != job_id {
            return Err(refused(
                "other_job",
                "This workflow token belongs to another job",
            ));
        }
        Ok(self)
    }
}

/// `{jobId}` and `{workflowId}`.
#[derive(Debug, Deserialize)]
pub struct JobWorkflowPath {
    #[serde(rename = "jobId")]
    job_id: String,
    #[serde(rename = "workflowId")]
    workflow_id: String,
}

struct Checked {
    name: String,
    description: String,
    graph_text: String,
}

async fn check(state: &AppState, request: JobWorkflowWriteRequest) -> ApiResult<Checked> {
    let name = check_text(&["body", "name"], &request.name, 1, 200)?;
    let description = check_text(&["body", "description"], &request.description, 0, 5000)?;
    let graph = WorkflowGraph {
        nodes: request.nodes,
        edges: request.edges,
    };
    if graph.nodes.is_empty() {
        return Err(ApiError::invalid_field(
            &["body", "nodes"],
            "value_error",
            "a workflow needs at least one node",
        ));
    }
    // The graph's fields are top-level members of this body: point at them there.
    graph::validate_at(&graph, graph::TOP_LEVEL)?;
    graph::check_tool_refs(&state.db, &graph, graph::TOP_LEVEL).await?;
    let graph_text = serde_json::to_string(&graph).map_err(ApiError::internal)?;
    Ok(Checked {
        name,
        description,
        graph_text,
    })
}

/// The full write an update amounts to: each field sent, else its stored value.
fn merged(row: &WorkflowRow, update: JobWorkflowUpdateRequest) -> JobWorkflowWriteRequest {
    let stored = row.detail();
    JobWorkflowWriteRequest {
        name: update.name.unwrap_or(stored.summary.name),
        description: update.description.unwrap_or(stored.summary.description),
        nodes: update.nodes.unwrap_or(stored.graph.nodes),
        edges: update.edges.unwrap_or(stored.graph.edges),
    }
}

async fn respond(
    state: &AppState,
    token: &WorkflowToken,
    workflow_id: &str,
) -> ApiResult<Json<JobWorkflowResponse>> {
    let mut conn = state.db.write().await?;
    let row = find_any(&mut conn, workflow_id)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::WORKFLOW_NOT_FOUND, "No such workflow"))?;
    Ok(Json(JobWorkflowResponse {
        success: true,
        job_id: token.job_id.clone(),
        reservation_id: token.reservation_id.clone(),
        workflow: row.detail(),
    }))
}

/// The workflow `workflow_id` if this token's reservation created it, else 404.
async fn owned(state: &AppState, token: &WorkflowToken, workflow_id: &str) -> ApiResult<()> {
    let mut conn = state.db.read().await?;
    let found = sql_scalar_optional!(
        conn.conn(),
        String,
        "SELECT workflow_id FROM job_workflows WHERE workflow_id = $1 AND reservation_id = $2",
        workflow_id,
        &token.reservation_id
    )?;
    if found.is_none() {
        return Err(ApiError::new(
            ErrorCode::WORKFLOW_NOT_FOUND,
            "No workflow with this id was created under this reservation",
        )
        .with_detail(
            "workflow_id",
            workflow_id.chars().take(128).collect::<String>(),
        ));
    }
    Ok(())
}

/// Create a private draft workflow for a reserved workflow_creation job
/// (`X-Job-Workflow-Token: Bearer <workflow_access.access_token>`).
#[utoipa::path(
    post,
    path = "/api/external/jobs/{jobId}/workflow/create",
    tag = "jobs",
    params(("jobId" = String, Path, description = "The reserved job")),
    request_body = JobWorkflowWriteRequest,
    security(("job_workflow_token" = [])),
    responses(
        (status = 201, description = "Draft created", body = JobWorkflowResponse),
        (status = 401, description = "JOB_WORKFLOW_TOKEN_INVALID (missing, unknown, expired, other job, reservation ended)", body = ErrorBody),
        (status = 422, description = "Invalid fields or graph (too many workflows for this reservation too)", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all, fields(job_id = %path.job_id))]
pub async fn create_job_workflow(
    State(state): State<AppState>,
    ApiPath(path): ApiPath<JobPath>,
    token: WorkflowToken,
    ApiJson(request): ApiJson<JobWorkflowWriteRequest>,
) -> ApiResult<(StatusCode, Json<JobWorkflowResponse>)> {
    let token = token.for_job(&path.job_id)?;
    let c = check(&state, request).await?;
    let id = random_hex(12);
    let slug = format!("job-{}-{}", &token.job_id, random_hex(4));
    let slug: String = slug.chars().take(64).collect();
    let now = now_ms();
    let mut tx = state.db.begin().await?;
    let count = sql_scalar_optional!(
        tx.conn(),
        i64,
        "SELECT COUNT(*) FROM job_workflows WHERE reservation_id = $1",
        &token.reservation_id
    )?
    .unwrap_or(0);
    if count >= MAX_WORKFLOWS_PER_RESERVATION {
        return Err(ApiError::invalid_field(
            &["body"],
            "value_error",
            format!("at most {MAX_WORKFLOWS_PER_RESERVATION} workflows per reservation; update an existing one"),
        ));
    }
    let search = format!("{} {} {}", c.name, slug, c.description).to_lowercase();
    sql_execute!(
        tx.conn(),
        "INSERT INTO workflows (workflow_id, slug, name, description, categories, industry_tags, \
           categories_index, tags_index, search_text, publisher, visibility, status, version, \
           graph, created_at_ms, updated_at_ms) \
         VALUES ($1, $2, $3, $4, '[]', '[]', '||', '||', $5, $6, 'private', 'draft', 1, $7, $8, $8)",
        &id,
        &slug,
        &c.name,
        &c.description,
        &search,
        format!("agent {}", token.wallet),
        &c.graph_text,
        now
    )?;
    sql_execute!(
        tx.conn(),
        "INSERT INTO job_workflows (workflow_id, job_id, reservation_id, created_at_ms) \
         VALUES ($1, $2, $3, $4)",
        &id,
        &token.job_id,
        &token.reservation_id,
        now
    )?;
    tx.commit().await?;
    let body = respond(&state, &token, &id).await?;
    Ok((StatusCode::CREATED, body))
}

/// Update a workflow this reservation created (version + 1; a published workflow stays
/// published). Fields left out keep their value: `{"description": "..."}` changes only
/// the description.
#[utoipa::path(
    put,
    path = "/api/external/jobs/{jobId}/workflow/{workflowId}",
    tag = "jobs",
    params(
        ("jobId" = String, Path, description = "The reserved job"),
        ("workflowId" = String, Path, description = "A workflow created under this reservation"),
    ),
    request_body = JobWorkflowUpdateRequest,
    security(("job_workflow_token" = [])),
    responses(
        (status = 200, description = "Updated", body = JobWorkflowResponse),
        (status = 401, description = "JOB_WORKFLOW_TOKEN_INVALID", body = ErrorBody),
        (status = 404, description = "Not a workflow of this reservation (WORKFLOW_NOT_FOUND)", body = ErrorBody),
        (status = 422, description = "Invalid fields or graph", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all, fields(job_id = %path.job_id))]
pub async fn update_job_workflow(
    State(state): State<AppState>,
    ApiPath(path): ApiPath<JobWorkflowPath>,
    token: WorkflowToken,
    ApiJson(request): ApiJson<JobWorkflowUpdateRequest>,
) -> ApiResult<Json<JobWorkflowResponse>> {
    let token = token.for_job(&path.job_id)?;
    owned(&state, &token, &path.workflow_id).await?;
    let row = {
        let mut conn = state.db.read().await?;
        find_any(&mut conn, &path.workflow_id)
            .await?
            .ok_or_else(|| ApiError::new(ErrorCode::WORKFLOW_NOT_FOUND, "No such workflow"))?
    };
    let c = check(&state, merged(&row, request)).await?;
    let search = format!("{} {} {}", c.name, row.slug, c.description).to_lowercase();
    let mut conn = state.db.write().await?;
    sql_execute!(
        conn.conn(),
        "UPDATE workflows SET name = $1, description = $2, search_text = $3, graph = $4, \
           version = version + 1, updated_at_ms = $5 WHERE workflow_id = $6",
        &c.name,
        &c.description,
        &search,
        &c.graph_text,
        now_ms(),
        &path.workflow_id
    )?;
    drop(conn);
    respond(&state, &token, &path.workflow_id).await
}

/// Publish a workflow this reservation created, privately (unlisted, reachable by id).
/// Publishing again is harmless.
#[utoipa::path(
    post,
    path = "/api/external/jobs/{jobId}/workflow/{workflowId}/publish",
    tag = "jobs",
    params(
        ("jobId" = String, Path, description = "The reserved job"),
        ("workflowId" = String, Path, description = "A workflow created under this reservation"),
    ),
    security(("job_workflow_token" = [])),
    responses(
        (status = 200, description = "Published (private)", body = JobWorkflowResponse),
        (status = 401, description = "JOB_WORKFLOW_TOKEN_INVALID", body = ErrorBody),
        (status = 404, description = "Not a workflow of this reservation (WORKFLOW_NOT_FOUND)", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all, fields(job_id = %path.job_id))]
pub async fn publish_job_workflow(
    State(state): State<AppState>,
    ApiPath(path): ApiPath<JobWorkflowPath>,
    token: WorkflowToken,
) -> ApiResult<Json<JobWorkflowResponse>> {
    let token = token.for_job(&path.job_id)?;
    owned(&state, &token, &path.workflow_id).await?;
    let now = now_ms();
    let mut conn = state.db.write().await?;
    sql_execute!(
        conn.conn(),
        "UPDATE workflows SET status = 'published', visibility = 'private', \
           published_at_ms = COALESCE(published_at_ms, $1), updated_at_ms = $1 \
         WHERE workflow_id = $2",
        now,
        &path.workflow_id
    )?;
    drop(conn);
    respond(&state, &token, &path.workflow_id).await
}
