//! Operator endpoints of workflows (admin token):
//! - `POST /api/admin/workflows` — create a draft workflow (graph validated).
//! - `PUT /api/admin/workflows/{workflowId}` — replace a workflow's fields and graph
//!   (version + 1; a published workflow stays published).
//! - `POST /api/admin/workflows/{workflowId}/publish` — publish it (agents can see it).
//! - `GET /api/admin/workflows/{workflowId}` — any workflow, drafts included.

use super::{find_any, graph, WorkflowRow};
use crate::accounts::{check_text, random_hex};
use crate::admin::Admin;
use crate::db::is_unique_violation;
use crate::db::macros::sql_execute;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath};
use crate::state::AppState;
use crate::time::now_ms;
use agentpmt_protocol::wire::ErrorBody;
use agentpmt_protocol::workflows::{WorkflowAdminResponse, WorkflowWriteRequest};
use agentpmt_protocol::ErrorCode;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The operator routes of workflows.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_workflow))
        .routes(routes!(update_workflow, get_workflow))
        .routes(routes!(publish_workflow))
}

/// A checked write request, ready to store.
struct Checked {
    slug: String,
    name: String,
    description: String,
    categories: Vec<String>,
    industry_tags: Vec<String>,
    publisher: String,
    visibility: String,
    graph: String,
}

fn check_list(field: &str, values: &[String]) -> ApiResult<Vec<String>> {
    if values.len() > 20 {
        return Err(ApiError::invalid_field(
            &["body", field],
            "value_error",
            "at most 20 values",
        ));
    }
    let mut out: Vec<String> = Vec::new();
    for v in values {
        let v = v.trim().to_lowercase();
        if v.is_empty() || v.chars().count() > 64 || v.contains('|') || v.contains(',') {
            return Err(ApiError::invalid_field(
                &["body", field],
                "value_error",
                "each value is 1-64 characters, without | or ,",
            ));
        }
        if !out.contains(&v) {
            out.push(v);
        }
    }
    Ok(out)
}

async fn check(state: &AppState, request: &WorkflowWriteRequest) -> ApiResult<Checked> {
    let slug = request.slug.trim().to_owned();
    if slug.is_empty()
        || slug.len() > 64
        || !slug
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        || (slug.len() == 24 && slug.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Err(ApiError::invalid_field(
            &["body", "slug"],
            "value_error",
            "slug is 1-64 lowercase letters, digits and -, and not a 24-hex id",
        ));
    }
    let name = check_text(&["body", "name"], &request.name, 1, 200)?;
    let description = check_text(&["body", "description"], &request.description, 0, 5000)?;
    let publisher = check_text(&["body", "publisher"], &request.publisher, 1, 200)?;
    let visibility = match request.visibility.as_deref().unwrap_or("public") {
        v @ ("public" | "private") => v.to_owned(),
        _ => {
            return Err(ApiError::invalid_field(
                &["body", "visibility"],
                "value_error",
                "visibility is public or private",
            ))
        }
    };
    let categories = check_list("categories", &request.categories)?;
    let industry_tags = check_list("industry_tags", &request.industry_tags)?;
    graph::validate(&request.graph)?;
    graph::check_tool_refs(&state.db, &request.graph, graph::NESTED).await?;
    Ok(Checked {
        slug,
        name,
        description,
        categories,
        industry_tags,
        publisher,
        visibility,
        graph: serde_json::to_string(&request.graph).map_err(ApiError::internal)?,
    })
}

fn index(values: &[String]) -> String {
    format!("|{}|", values.join("|"))
}

fn search_text(c: &Checked) -> String {
    format!("{} {} {}", c.name, c.slug, c.description).to_lowercase()
}

fn slug_taken() -> ApiError {
    ApiError::new(
        ErrorCode::WORKFLOW_SLUG_TAKEN,
        "Another workflow already uses this slug",
    )
}

async fn reload(state: &AppState, id: &str) -> ApiResult<WorkflowRow> {
    let mut conn = state.db.write().await?;
    find_any(&mut conn, id)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::WORKFLOW_NOT_FOUND, "No such workflow"))
}

/// Create a draft workflow (operator). Publish it to make it visible to agents.
#[utoipa::path(
    post,
    path = "/api/admin/workflows",
    tag = "admin",
    request_body = WorkflowWriteRequest,
    security(("admin_token" = [])),
    responses(
        (status = 201, description = "Draft created (version 1)", body = WorkflowAdminResponse),
        (status = 401, description = "Missing or wrong admin token", body = ErrorBody),
        (status = 403, description = "Operator API disabled", body = ErrorBody),
        (status = 409, description = "Slug taken", body = ErrorBody),
        (status = 422, description = "Invalid fields or graph", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all)]
pub async fn create_workflow(
    _admin: Admin,
    State(state): State<AppState>,
    ApiJson(request): ApiJson<WorkflowWriteRequest>,
) -> ApiResult<(StatusCode, Json<WorkflowAdminResponse>)> {
    let row = new_workflow(&state, &request).await?;
    Ok((
        StatusCode::CREATED,
        Json(WorkflowAdminResponse {
            success: true,
            workflow: row.detail(),
        }),
    ))
}

/// Creates a draft workflow (version 1) from `request` (the operator API and the console
/// both call this).
pub async fn new_workflow(
    state: &AppState,
    request: &WorkflowWriteRequest,
) -> ApiResult<WorkflowRow> {
    let c = check(state, request).await?;
    let id = random_hex(12);
    let now = now_ms();
    let mut conn = state.db.write().await?;
    let inserted = sql_execute!(
        conn.conn(),
        "INSERT INTO workflows (workflow_id, slug, name, description, categories, industry_tags, \
           categories_index, tags_index, search_text, publisher, visibility, status, version, \
           graph, created_at_ms, updated_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'draft', 1, $12, $13, $13)",
        &id,
        &c.slug,
        &c.name,
        &c.description,
        serde_json::to_string(&c.categories).unwrap_or_default(),
        serde_json::to_string(&c.industry_tags).unwrap_or_default(),
        index(&c.categories),
        index(&c.industry_tags),
        search_text(&c),
        &c.publisher,
        &c.visibility,
        &c.graph,
        now
    );
    match inserted {
        Ok(_) => {}
        Err(e) if is_unique_violation(&e) => return Err(slug_taken()),
        Err(e) => return Err(e.into()),
    }
    drop(conn);
    reload(state, &id).await
}

/// The `{workflowId}` path parameter.
#[derive(Debug, serde::Deserialize)]
pub struct IdPath {
    #[serde(rename = "workflowId")]
    workflow_id: String,
}

/// Replace a workflow's fields and graph (operator); the version goes up by one.
#[utoipa::path(
    put,
    path = "/api/admin/workflows/{workflowId}",
    tag = "admin",
    params(("workflowId" = String, Path, description = "Workflow id or slug")),
    request_body = WorkflowWriteRequest,
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Updated", body = WorkflowAdminResponse),
        (status = 401, description = "Missing or wrong admin token", body = ErrorBody),
        (status = 403, description = "Operator API disabled", body = ErrorBody),
        (status = 404, description = "No such workflow", body = ErrorBody),
        (status = 409, description = "Slug taken", body = ErrorBody),
        (status = 422, description = "Invalid fields or graph", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all)]
pub async fn update_workflow(
    _admin: Admin,
    State(state): State<AppState>,
    ApiPath(path): ApiPath<IdPath>,
    ApiJson(request): ApiJson<WorkflowWriteRequest>,
) -> ApiResult<Json<WorkflowAdminResponse>> {
    let existing = reload(&state, &path.workflow_id).await?;
    let c = check(&state, &request).await?;
    let mut conn = state.db.write().await?;
    let updated = sql_execute!(
        conn.conn(),
        "UPDATE workflows SET slug = $1, name = $2, description = $3, categories = $4, \
           industry_tags = $5, categories_index = $6, tags_index = $7, search_text = $8, \
           publisher = $9, visibility = $10, graph = $11, version = version + 1, \
           updated_at_ms = $12 \
         WHERE workflow_id = $13",
        &c.slug,
        &c.name,
        &c.description,
        serde_json::to_string(&c.categories).unwrap_or_default(),
        serde_json::to_string(&c.industry_tags).unwrap_or_default(),
        index(&c.categories),
        index(&c.industry_tags),
        search_text(&c),
        &c.publisher,
        &c.visibility,
        &c.graph,
        now_ms().max(existing.updated_at_ms),
        &existing.workflow_id
    );
    match updated {
        Ok(_) => {}
        Err(e) if is_unique_violation(&e) => return Err(slug_taken()),
        Err(e) => return Err(e.into()),
    }
    drop(conn);
    let row = reload(&state, &existing.workflow_id).await?;
    Ok(Json(WorkflowAdminResponse {
        success: true,
        workflow: row.detail(),
    }))
}

/// Any workflow, drafts included (operator).
#[utoipa::path(
    get,
    path = "/api/admin/workflows/{workflowId}",
    tag = "admin",
    params(("workflowId" = String, Path, description = "Workflow id or slug")),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The workflow", body = WorkflowAdminResponse),
        (status = 401, description = "Missing or wrong admin token", body = ErrorBody),
        (status = 403, description = "Operator API disabled", body = ErrorBody),
        (status = 404, description = "No such workflow", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all)]
pub async fn get_workflow(
    _admin: Admin,
    State(state): State<AppState>,
    ApiPath(path): ApiPath<IdPath>,
) -> ApiResult<Json<WorkflowAdminResponse>> {
    let row = reload(&state, &path.workflow_id).await?;
    Ok(Json(WorkflowAdminResponse {
        success: true,
        workflow: row.detail(),
    }))
}

/// Publish a workflow (operator): agents can fetch and start it; public ones are listed.
/// Publishing a published workflow changes nothing.
#[utoipa::path(
    post,
    path = "/api/admin/workflows/{workflowId}/publish",
    tag = "admin",
    params(("workflowId" = String, Path, description = "Workflow id or slug")),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Published", body = WorkflowAdminResponse),
        (status = 401, description = "Missing or wrong admin token", body = ErrorBody),
        (status = 403, description = "Operator API disabled", body = ErrorBody),
        (status = 404, description = "No such workflow", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all)]
pub async fn publish_workflow(
    _admin: Admin,
    State(state): State<AppState>,
    ApiPath(path): ApiPath<IdPath>,
) -> ApiResult<Json<WorkflowAdminResponse>> {
    let row = publish(&state, &path.workflow_id).await?;
    Ok(Json(WorkflowAdminResponse {
        success: true,
        workflow: row.detail(),
    }))
}

/// Publishes the workflow with id or slug `id_or_slug` (a published one is left as it is;
/// the operator API and the console both call this).
pub async fn publish(state: &AppState, id_or_slug: &str) -> ApiResult<WorkflowRow> {
    let existing = reload(state, id_or_slug).await?;
    let now = now_ms();
    let mut conn = state.db.write().await?;
    sql_execute!(
        conn.conn(),
        "UPDATE workflows SET status = 'published', published_at_ms = $1, updated_at_ms = $1 \
         WHERE workflow_id = $2 AND status = 'draft'",
        now,
        &existing.workflow_id
    )?;
    drop(conn);
    reload(state, &existing.workflow_id).await
}
