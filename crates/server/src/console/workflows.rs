//! The console's workflow and schedule pages: lists (paged, searchable), drafting and
//! publishing a workflow, creating a budget's schedule and pausing or resuming it. Every
//! action calls the operator API's function for it: [`crate::workflows::admin::new_workflow`],
//! [`crate::workflows::admin::publish`], [`crate::workflows::schedules::new_schedule`] and
//! [`crate::workflows::schedules::change_schedule`]. The operator API deletes neither: a
//! schedule is paused instead, and a workflow stays (schedules and sessions name it).

use super::views::{
    button_form, csrf, href, like_pattern, optional, outcome, paged_table, search_form, time,
    ListQuery,
};
use super::{error_page, failed_with, page, CsrfForm, Empty, Operator};
use crate::db::macros::sql_fetch_all;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::workflows::{WorkflowRow, WORKFLOW_COLUMNS};
use agentpmt_protocol::workflows::{
    Recurrence, ScheduleCreateRequest, ScheduleUpdateRequest, WorkflowWriteRequest,
};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{html, Markup};
use serde::Deserialize;

/// A graph that validates, to start from.
const GRAPH_EXAMPLE: &str = r#"{"nodes": [{"id": "tell", "type": "notify_human",
  "message": "Done", "channel": "email"}], "edges": []}"#;

/// Workflows, any status, newest change first.
#[tracing::instrument(skip_all)]
pub async fn workflows(
    operator: Operator,
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Response {
    workflows_page(&state, &operator, &q, None).await
}

async fn workflows_page(
    state: &AppState,
    operator: &Operator,
    q: &ListQuery,
    notice: Option<Markup>,
) -> Response {
    let title = "Workflows";
    let search = q.search();
    let (limit, offset) = q.limit_offset();
    let rows = async {
        let mut conn = state.db.read().await?;
        let sql = format!(
            "SELECT {WORKFLOW_COLUMNS} FROM workflows \
             WHERE search_text LIKE $1 ESCAPE '\\' OR LOWER(workflow_id) = $2 \
             ORDER BY updated_at_ms DESC, workflow_id LIMIT $3 OFFSET $4"
        );
        ApiResult::Ok(sql_fetch_all!(
            conn.conn(),
            WorkflowRow,
            &sql,
            like_pattern(&search),
            search.to_lowercase(),
            limit,
            offset
        )?)
    }
    .await;
    let rows = match rows {
        Ok(r) => q.paged(r),
        Err(e) => return error_page(state, operator, title, e),
    };
    let base = &state.config.console_path;
    let list = format!("{base}/workflows");
    let token = &operator.session.csrf;
    let body = html! {
        main {
            h1 { (title) }
            @if let Some(n) = notice { (n) }
            (search_form(&list, "Name, slug, description or id", &search, "digest"))
            (paged_table(
                "workflows",
                &["Workflow", "Status", "Visibility", "Publisher", "Nodes", "Version", "Updated"],
                &rows,
                "No workflow matches.",
                &href(&list, &[("q", &search)]),
                |w| {
                    let summary = w.summary();
                    html! {
                        tr id={"workflow-" (w.workflow_id)} {
                            td { strong { (w.name) } br; code { (w.slug) } br; small { (w.workflow_id) } }
                            td.status {
                                (w.status)
                                @if w.status == "draft" {
                                    " " (button_form(&format!("{list}/{}/publish", w.workflow_id), token, "publish", &w.workflow_id, "Publish"))
                                }
                            }
                            td { (w.visibility) }
                            td { (w.publisher) }
                            td { (summary.node_count) }
                            td { (w.version) }
                            td { (time(w.updated_at_ms)) }
                        }
                    }
                },
            ))
            section {
                h2 { "Draft a workflow" }
                p { "The same document as " code { "POST /api/admin/workflows" } "; publish the draft to let agents see it." }
                form.stack method="post" action=(list) id="workflow-form" {
                    (csrf(token))
                    label for="wf_slug" { "Slug" } input type="text" id="wf_slug" name="slug" required maxlength="64";
                    label for="wf_name" { "Name" } input type="text" id="wf_name" name="name" required maxlength="200";
                    label for="wf_description" { "Description" } input type="text" id="wf_description" name="description" maxlength="5000";
                    label for="wf_publisher" { "Publisher" } input type="text" id="wf_publisher" name="publisher" required maxlength="200";
                    label for="wf_categories" { "Categories (comma-separated)" } input type="text" id="wf_categories" name="categories";
                    label for="wf_tags" { "Industry tags (comma-separated)" } input type="text" id="wf_tags" name="industry_tags";
                    label for="wf_visibility" { "Visibility" }
                    select id="wf_visibility" name="visibility" { option value="public" { "public" } option value="private" { "private (unlisted)" } }
                    label for="wf_graph" { "Graph (JSON: nodes, edges)" }
                    textarea id="wf_graph" name="graph" rows="6" { (GRAPH_EXAMPLE) }
                    button type="submit" { "Create draft" }
                }
            }
        }
    };
    page(state, operator, title, body)
}

/// The workflow form.
#[derive(Debug, Deserialize)]
pub struct WorkflowForm {
    slug: String,
    name: String,
    #[serde(default)]
    description: String,
    publisher: String,
    #[serde(default)]
    categories: String,
    #[serde(default)]
    industry_tags: String,
    #[serde(default)]
    visibility: String,
    graph: String,
}

fn comma_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Drafts a workflow through [`crate::workflows::admin::new_workflow`].
#[tracing::instrument(skip_all)]
pub async fn create_workflow(
    State(state): State<AppState>,
    CsrfForm(operator, form): CsrfForm<WorkflowForm>,
) -> Response {
    let result = async {
        let graph = serde_json::from_str(&form.graph).map_err(|e| {
            ApiError::invalid_field(&["body", "graph"], "json_invalid", e.to_string())
        })?;
        let request = WorkflowWriteRequest {
            slug: form.slug.trim().to_owned(),
            name: form.name.clone(),
            description: form.description.clone(),
            categories: comma_list(&form.categories),
            industry_tags: comma_list(&form.industry_tags),
            publisher: form.publisher.clone(),
            visibility: optional(&form.visibility),
            graph,
        };
        let row = crate::workflows::admin::new_workflow(&state, &request).await?;
        Ok(format!(
            "Workflow {} ({}) created as a draft.",
            row.slug, row.workflow_id
        ))
    }
    .await;
    let failed = result.is_err();
    let response = workflows_page(
        &state,
        &operator,
        &ListQuery::default(),
        Some(outcome(&result)),
    )
    .await;
    failed_with(response, failed, StatusCode::UNPROCESSABLE_ENTITY)
}

/// Publishes a draft through [`crate::workflows::admin::publish`].
#[tracing::instrument(skip_all)]
pub async fn publish_workflow(
    State(state): State<AppState>,
    Path(id): Path<String>,
    CsrfForm(operator, Empty {}): CsrfForm<Empty>,
) -> Response {
    let result = crate::workflows::admin::publish(&state, &id)
        .await
        .map(|row| format!("Workflow {} is {}.", row.slug, row.status));
    let failed = result.is_err();
    let response = workflows_page(
        &state,
        &operator,
        &ListQuery::default(),
        Some(outcome(&result)),
    )
    .await;
    failed_with(response, failed, StatusCode::NOT_FOUND)
}

/// Workflow schedules, newest first, with pause / resume buttons.
#[tracing::instrument(skip_all)]
pub async fn schedules(
    operator: Operator,
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Response {
    schedules_page(&state, &operator, &q, None).await
}

async fn schedules_page(
    state: &AppState,
    operator: &Operator,
    q: &ListQuery,
    notice: Option<Markup>,
) -> Response {
    let title = "Workflow schedules";
    let search = q.search();
    let (limit, offset) = q.limit_offset();
    let rows = match crate::workflows::schedules::page(state, &like_pattern(&search), limit, offset)
        .await
    {
        Ok(r) => q.paged(r),
        Err(e) => return error_page(state, operator, title, e),
    };
    let base = &state.config.console_path;
    let list = format!("{base}/schedules");
    let token = &operator.session.csrf;
    let body = html! {
        main {
            h1 { (title) }
            @if let Some(n) = notice { (n) }
            (search_form(&list, "Name, id, budget or workflow", &search, "nightly"))
            (paged_table(
                "schedules",
                &["Schedule", "Workflow", "Budget", "Recurrence", "Next due", "Last run", "State"],
                &rows,
                "No schedule matches.",
                &href(&list, &[("q", &search)]),
                |s| {
                    let (to, label) = if s.status == "active" { ("pause", "Pause") } else { ("resume", "Resume") };
                    html! {
                        tr id={"schedule-" (s.schedule_id)} {
                            td { strong.schedule-name { (s.name) } br; small { (s.schedule_id) } }
                            td { (s.workflow_name.as_deref().unwrap_or("")) br; code { (s.workflow_slug.as_deref().unwrap_or(&s.workflow_id)) } }
                            td { code { (s.budget_id) } }
                            td {
                                @if let Some(c) = &s.recurrence.cron { "cron " code { (c) } }
                                @if let Some(i) = s.recurrence.interval_seconds { "every " (i) " s" }
                                " (" (s.time_zone) ")"
                            }
                            td { (s.due_at) @if s.claimed { br; small { "claimed" } } }
                            td { (s.last_outcome.as_deref().unwrap_or("—")) @if let Some(at) = &s.last_advanced_at { br; small { (at) } } }
                            td.status {
                                (s.status) " "
                                (button_form(&format!("{list}/{}/{to}", s.schedule_id), token, to, &s.schedule_id, label))
                            }
                        }
                    }
                },
            ))
            section {
                h2 { "Create a schedule" }
                p { "The same request as " code { "POST /api/admin/budgets/{budgetId}/workflow-schedules" } ": external agents holding the budget's key claim its due runs." }
                form.stack method="post" action=(list) id="schedule-form" {
                    (csrf(token))
                    label for="sc_budget" { "Budget id" } input type="text" id="sc_budget" name="budget_id" required;
                    label for="sc_workflow" { "Workflow (published; id or slug)" } input type="text" id="sc_workflow" name="workflow_id" required;
                    label for="sc_name" { "Name" } input type="text" id="sc_name" name="name" required maxlength="200";
                    label for="sc_prompt" { "Prompt" } textarea id="sc_prompt" name="prompt" rows="3" {}
                    label for="sc_interval" { "Every (seconds; or a cron expression below)" } input type="number" id="sc_interval" name="interval_seconds" min="60";
                    label for="sc_cron" { "Cron (minute hour day month weekday)" } input type="text" id="sc_cron" name="cron" placeholder="0 3 * * *";
                    label for="sc_zone" { "Time zone" } input type="text" id="sc_zone" name="time_zone" value="UTC";
                    label for="sc_start" { "First run (RFC 3339; empty: the next occurrence)" } input type="text" id="sc_start" name="start_at" placeholder="2026-01-01T00:00:00Z";
                    button type="submit" { "Create schedule" }
                }
            }
        }
    };
    page(state, operator, title, body)
}

/// The schedule form.
#[derive(Debug, Deserialize)]
pub struct ScheduleForm {
    budget_id: String,
    workflow_id: String,
    name: String,
    #[serde(default)]
    prompt: String,
    #[serde(default)]
    interval_seconds: String,
    #[serde(default)]
    cron: String,
    #[serde(default)]
    time_zone: String,
    #[serde(default)]
    start_at: String,
}

/// Creates a schedule through [`crate::workflows::schedules::new_schedule`].
#[tracing::instrument(skip_all)]
pub async fn create_schedule(
    State(state): State<AppState>,
    CsrfForm(operator, form): CsrfForm<ScheduleForm>,
) -> Response {
    let result = async {
        let interval_seconds = match optional(&form.interval_seconds) {
            Some(n) => Some(n.parse::<i64>().map_err(|_| {
                ApiError::invalid_field(
                    &["body", "recurrence", "interval_seconds"],
                    "value_error",
                    "interval_seconds must be a whole number",
                )
            })?),
            None => None,
        };
        let request = ScheduleCreateRequest {
            workflow_id: form.workflow_id.trim().to_owned(),
            name: form.name.clone(),
            prompt: form.prompt.clone(),
            metadata: None,
            recurrence: Recurrence {
                kind: None,
                cron: optional(&form.cron),
                interval_seconds,
                time_zone: None,
            },
            time_zone: optional(&form.time_zone),
            start_at: optional(&form.start_at),
        };
        let schedule =
            crate::workflows::schedules::new_schedule(&state, form.budget_id.trim(), &request)
                .await?;
        Ok(format!(
            "Schedule {} ({}) created: next due {}.",
            schedule.name, schedule.schedule_id, schedule.due_at
        ))
    }
    .await;
    let failed = result.is_err();
    let response = schedules_page(
        &state,
        &operator,
        &ListQuery::default(),
        Some(outcome(&result)),
    )
    .await;
    failed_with(response, failed, StatusCode::UNPROCESSABLE_ENTITY)
}

async fn set_status(state: &AppState, operator: &Operator, id: &str, status: &str) -> Response {
    let request = ScheduleUpdateRequest {
        status: Some(status.to_owned()),
        ..ScheduleUpdateRequest::default()
    };
    let result = crate::workflows::schedules::change_schedule(state, id, &request)
        .await
        .map(|s| format!("Schedule {} is {}.", s.schedule_id, s.status));
    let failed = result.is_err();
    let response = schedules_page(
        state,
        operator,
        &ListQuery::default(),
        Some(outcome(&result)),
    )
    .await;
    failed_with(response, failed, StatusCode::NOT_FOUND)
}

/// Pauses a schedule (never due while paused) through
/// [`crate::workflows::schedules::change_schedule`].
#[tracing::instrument(skip_all)]
pub async fn pause_schedule(
    State(state): State<AppState>,
    Path(id): Path<String>,
    CsrfForm(operator, Empty {}): CsrfForm<Empty>,
) -> Response {
    set_status(&state, &operator, &id, "paused").await
}

/// Resumes a paused schedule through [`crate::workflows::schedules::change_schedule`].
#[tracing::instrument(skip_all)]
pub async fn resume_schedule(
    State(state): State<AppState>,
    Path(id): Path<String>,
    CsrfForm(operator, Empty {}): CsrfForm<Empty>,
) -> Response {
    set_status(&state, &operator, &id, "active").await
}
