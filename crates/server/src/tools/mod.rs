//! The tool marketplace.
//!
//! Endpoints:
//! - `GET /api/external/tools` — unsigned listing of active, non-private products with the
//!   pagination contract of seed `003_*` ([`list_tools`]).
//! - `POST /api/external/tools/{productSlug}/actions/{actionSlug}/invoke` and the legacy
//!   `POST /api/external/tools/{productId}/invoke` ([`invoke`]).
//! - Operator API: `GET /api/admin/tools`, `PUT /api/admin/tools/{slug}`,
//!   `DELETE /api/admin/tools/{slug}` (deactivate), `GET /api/admin/vendors`,
//!   `PUT /api/admin/vendors/{slug}`, `GET /api/admin/tools/usage`,
//!   `GET /api/admin/tools/usage/records`.

pub mod catalog;
pub mod invoke;
pub mod runner;
pub mod schema;
pub mod secrets;
pub mod usage;

use crate::admin::Admin;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath};
use crate::state::AppState;
use agentpmt_protocol::tools::{
    Pagination, ProductAdminView, ProductSpecDoc, ToolListResponse, UsageRecordView, UsageReport,
    VendorSpecDoc, VendorView, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE,
};
use agentpmt_protocol::wire::{ErrorBody, LocItem, ValidationIssue};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;
use catalog::ListFilter;
use secrets::SecretsKey;
use serde_json::{json, Value};
use std::collections::HashMap;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// What tool calls share: the HTTP client for vendors and the secrets key.
#[derive(Debug)]
pub struct Tools {
    pub http: reqwest::Client,
    pub secrets: Option<SecretsKey>,
}

impl Tools {
    pub fn new(secrets: Option<SecretsKey>) -> Tools {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(32)
            .build()
            .expect("the HTTP client builds");
        Tools { http, secrets }
    }
}

/// This area's routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_tools))
        .routes(routes!(invoke::invoke_action))
        .routes(routes!(invoke::invoke_legacy))
        // Trailing-slash forms of the invoke URLs (signed paths accept them too).
        .route(
            "/api/external/tools/{productSlug}/actions/{actionSlug}/invoke/",
            axum::routing::post(invoke::invoke_action),
        )
        .route(
            "/api/external/tools/{productId}/invoke/",
            axum::routing::post(invoke::invoke_legacy),
        )
        .routes(routes!(admin_list_tools))
        .routes(routes!(admin_put_tool, admin_deactivate_tool))
        .routes(routes!(admin_list_vendors))
        .routes(routes!(admin_put_vendor))
        .routes(routes!(admin_usage))
        .routes(routes!(admin_usage_records))
}

fn query_issue(name: &str, msg: impl Into<String>, kind: &str) -> ValidationIssue {
    ValidationIssue {
        loc: vec![LocItem::from("query"), LocItem::from(name)],
        msg: msg.into(),
        kind: kind.into(),
    }
}

/// An integer query parameter within `range`.
fn int_param(
    query: &HashMap<String, String>,
    name: &str,
    default: i64,
    range: std::ops::RangeInclusive<i64>,
    issues: &mut Vec<ValidationIssue>,
) -> i64 {
    let Some(text) = query.get(name) else {
        return default;
    };
    match text.trim().parse::<i64>() {
        Ok(v) if range.contains(&v) => v,
        Ok(_) => {
            issues.push(query_issue(
                name,
                format!("{name} must be from {} to {}", range.start(), range.end()),
                "value_error",
            ));
            default
        }
        Err(_) => {
            issues.push(query_issue(
                name,
                "Input should be a valid integer",
                "int_parsing",
            ));
            default
        }
    }
}

/// A PUT's body names the resource of its path.
fn same_slug(path: &str, body: &str) -> ApiResult<()> {
    if path == body {
        Ok(())
    } else {
        Err(ApiError::invalid_field(
            &["body", "slug"],
            "value_error",
            "slug must equal the slug in the path",
        ))
    }
}

/// 201 for a created resource, 200 for a replaced one.
fn written(created: bool) -> StatusCode {
    if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    }
}

/// List available tools (unsigned).
///
/// Active, non-private products with their actions, ordered by slug. `query` searches name
/// and description (case-insensitive); `categories` is a comma-separated list (a product
/// matches when it has any). The `pagination` block has the same fields on every response:
/// `page, page_size, total_count, total_pages, has_more, next_page, default_page_size (100),
/// max_page_size (1000)`. `page` < 1, `page_size` < 1 or > 1000 → 422.
#[utoipa::path(
    get,
    path = "/api/external/tools",
    tag = "tools",
    params(
        ("query" = Option<String>, Query, description = "Text searched in name and description"),
        ("categories" = Option<String>, Query, description = "Comma-separated categories (any matches)"),
        ("page" = Option<i64>, Query, description = "1-based page (default 1)"),
        ("page_size" = Option<i64>, Query, description = "Items per page, 1-1000 (default 100)"),
    ),
    responses(
        (status = 200, description = "One page of tools", body = ToolListResponse),
        (status = 422, description = "Bad query parameter", body = ErrorBody),
    )
)]
pub async fn list_tools(
    State(state): State<AppState>,
    query: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<ToolListResponse>> {
    let Query(query) = query.map_err(|r| {
        ApiError::validation(vec![query_issue("query", r.body_text(), "value_error")])
    })?;
    let mut issues = Vec::new();
    let page = int_param(&query, "page", 1, 1..=1_000_000, &mut issues);
    let page_size = int_param(
        &query,
        "page_size",
        DEFAULT_PAGE_SIZE,
        1..=MAX_PAGE_SIZE,
        &mut issues,
    );
    let text = query
        .get("query")
        .map(|q| q.trim().to_lowercase())
        .filter(|q| !q.is_empty());
    if text.as_ref().is_some_and(|q| q.chars().count() > 200) {
        issues.push(query_issue(
            "query",
            "query must be at most 200 characters",
            "string_too_long",
        ));
    }
    let categories: Vec<String> = query
        .get("categories")
        .map(|c| {
            c.split(',')
                .map(catalog::category_key)
                .filter(|c| !c.is_empty())
                .collect()
        })
        .unwrap_or_default();
    if categories.len() > 20 {
        issues.push(query_issue(
            "categories",
            "at most 20 categories",
            "value_error",
        ));
    }
    if !issues.is_empty() {
        return Err(ApiError::validation(issues));
    }
    let filter = ListFilter {
        query: text,
        categories,
    };
    let (tools, total) =
        catalog::list(&mut state.db.read().await?, &filter, page, page_size).await?;
    Ok(Json(ToolListResponse {
        success: true,
        tools,
        pagination: Pagination::new(page, page_size, total),
    }))
}

/// Every product, any status (operator).
#[utoipa::path(
    get,
    path = "/api/admin/tools",
    tag = "admin",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Every product with its actions", body = Vec<ProductAdminView>),
        (status = 401, description = "Missing or wrong admin token", body = ErrorBody),
    )
)]
pub async fn admin_list_tools(
    _admin: Admin,
    State(state): State<AppState>,
) -> ApiResult<Json<Vec<ProductAdminView>>> {
    Ok(Json(
        catalog::admin_views(&mut state.db.read().await?, None).await?,
    ))
}

/// Create or replace a product and its actions (operator).
///
/// The body is a product document (the same shape as a catalog file's `[[products]]`);
/// actions missing from it become inactive. 201 when created, 200 when replaced.
#[utoipa::path(
    put,
    path = "/api/admin/tools/{slug}",
    tag = "admin",
    security(("admin_token" = [])),
    params(("slug" = String, Path, description = "Product slug (must equal the body's slug)")),
    request_body = ProductSpecDoc,
    responses(
        (status = 200, description = "Replaced", body = ProductAdminView),
        (status = 201, description = "Created", body = ProductAdminView),
        (status = 409, description = "Slug or id taken by another product", body = ErrorBody),
        (status = 422, description = "Invalid document", body = ErrorBody),
    )
)]
pub async fn admin_put_tool(
    _admin: Admin,
    State(state): State<AppState>,
    ApiPath(slug): ApiPath<String>,
    ApiJson(doc): ApiJson<ProductSpecDoc>,
) -> ApiResult<(StatusCode, Json<ProductAdminView>)> {
    same_slug(&slug, &doc.slug)?;
    let (created, view) = put_product(&state, &doc).await?;
    Ok((written(created), Json(view)))
}

/// Creates or replaces a product and its actions from `doc` (the operator API and the
/// console both call this); `true` when it was created.
pub async fn put_product(
    state: &AppState,
    doc: &ProductSpecDoc,
) -> ApiResult<(bool, ProductAdminView)> {
    catalog::check_fits_deadline(doc, state.config.request_timeout_secs)?;
    let mut tx = state.db.begin().await?;
    let created = catalog::upsert_product(&mut tx, doc).await?;
    tx.commit().await?;
    tracing::info!(product = %doc.slug, created, "catalog product written by operator");
    let view = catalog::admin_views(&mut state.db.read().await?, Some(&doc.slug))
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("product vanished")))?;
    Ok((created, view))
}

/// Deactivate a product (operator): it leaves the listing and cannot be invoked; usage
/// records keep naming it. PUT it again with `status: active` to bring it back.
#[utoipa::path(
    delete,
    path = "/api/admin/tools/{slug}",
    tag = "admin",
    security(("admin_token" = [])),
    params(("slug" = String, Path, description = "Product slug")),
    responses(
        (status = 200, description = "Deactivated"),
        (status = 404, description = "No such product", body = ErrorBody),
    )
)]
pub async fn admin_deactivate_tool(
    _admin: Admin,
    State(state): State<AppState>,
    ApiPath(slug): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    catalog::set_product_status(&mut state.db.write().await?, &slug, "inactive").await?;
    Ok(Json(
        json!({"success": true, "product_slug": slug, "status": "inactive"}),
    ))
}

/// Every vendor (operator); secrets are never shown.
#[utoipa::path(
    get,
    path = "/api/admin/vendors",
    tag = "admin",
    security(("admin_token" = [])),
    responses((status = 200, description = "Vendors", body = Vec<VendorView>))
)]
pub async fn admin_list_vendors(
    _admin: Admin,
    State(state): State<AppState>,
) -> ApiResult<Json<Vec<VendorView>>> {
    Ok(Json(
        catalog::vendor_views(&mut state.db.read().await?).await?,
    ))
}

/// Create or update a vendor (operator). `secret` (16-256 characters) is the HMAC key of
/// the `X-AgentPMT-Signature` header on calls to the vendor; it is stored encrypted
/// (needs `AGENTPMT_SECRETS_KEY`) and never shown again. Omit it to keep the current one.
#[utoipa::path(
    put,
    path = "/api/admin/vendors/{slug}",
    tag = "admin",
    security(("admin_token" = [])),
    params(("slug" = String, Path, description = "Vendor slug")),
    request_body = VendorSpecDoc,
    responses(
        (status = 200, description = "Updated", body = VendorView),
        (status = 201, description = "Created", body = VendorView),
        (status = 400, description = "No secrets key configured", body = ErrorBody),
        (status = 422, description = "Invalid document", body = ErrorBody),
    )
)]
pub async fn admin_put_vendor(
    _admin: Admin,
    State(state): State<AppState>,
    ApiPath(slug): ApiPath<String>,
    ApiJson(doc): ApiJson<VendorSpecDoc>,
) -> ApiResult<(StatusCode, Json<VendorView>)> {
    same_slug(&slug, &doc.slug)?;
    let (created, view) = put_vendor(&state, &doc).await?;
    Ok((written(created), Json(view)))
}

/// Creates or updates a vendor from `doc`, sealing its secret (the operator API and the
/// console both call this); `true` when it was created.
pub async fn put_vendor(state: &AppState, doc: &VendorSpecDoc) -> ApiResult<(bool, VendorView)> {
    if doc.secret_env.is_some() {
        return Err(ApiError::invalid_field(
            &["body", "secret_env"],
            "value_error",
            "secret_env is for catalog files; send secret",
        ));
    }
    let mut tx = state.db.begin().await?;
    let created = catalog::upsert_vendor(&mut tx, doc, state.tools.secrets.as_ref()).await?;
    tx.commit().await?;
    tracing::info!(vendor = %doc.slug, created, "vendor written by operator");
    let view = catalog::vendor_views(&mut state.db.read().await?)
        .await?
        .into_iter()
        .find(|v| v.slug == doc.slug)
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("vendor vanished")))?;
    Ok((created, view))
}

/// Usage totals (operator): `group_by` = `product` (default), `action`, `wallet`, `api_key` or `budget`;
/// `since` = Unix milliseconds (default 0).
#[utoipa::path(
    get,
    path = "/api/admin/tools/usage",
    tag = "admin",
    security(("admin_token" = [])),
    params(
        ("group_by" = Option<String>, Query, description = "product | action | wallet | api_key | budget"),
        ("since" = Option<i64>, Query, description = "Unix milliseconds"),
    ),
    responses(
        (status = 200, description = "Totals", body = UsageReport),
        (status = 422, description = "Bad query parameter", body = ErrorBody),
    )
)]
pub async fn admin_usage(
    _admin: Admin,
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<Json<UsageReport>> {
    let mut issues = Vec::new();
    let since = int_param(&query, "since", 0, 0..=i64::MAX, &mut issues);
    if !issues.is_empty() {
        return Err(ApiError::validation(issues));
    }
    let group_by = query
        .get("group_by")
        .map(String::as_str)
        .unwrap_or("product");
    let rows = usage::report(&mut state.db.read().await?, group_by, since).await?;
    Ok(Json(UsageReport {
        success: true,
        group_by: group_by.to_owned(),
        rows,
    }))
}

/// The newest usage records (operator), optionally of one `product` (slug) or `wallet`;
/// `limit` 1-1000 (default 100).
#[utoipa::path(
    get,
    path = "/api/admin/tools/usage/records",
    tag = "admin",
    security(("admin_token" = [])),
    params(
        ("product" = Option<String>, Query, description = "Product slug"),
        ("wallet" = Option<String>, Query, description = "Wallet or payer address"),
        ("api_key" = Option<String>, Query, description = "API key id (budget calls)"),
        ("budget" = Option<String>, Query, description = "Budget id (budget calls)"),
        ("limit" = Option<i64>, Query, description = "1-1000, default 100"),
    ),
    responses(
        (status = 200, description = "Usage records, newest first", body = Vec<UsageRecordView>),
        (status = 422, description = "Bad query parameter", body = ErrorBody),
    )
)]
pub async fn admin_usage_records(
    _admin: Admin,
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<Json<Vec<UsageRecordView>>> {
    let mut issues = Vec::new();
    let limit = int_param(&query, "limit", 100, 1..=1000, &mut issues);
    if !issues.is_empty() {
        return Err(ApiError::validation(issues));
    }
    let wallet = query.get("wallet").map(|w| w.to_ascii_lowercase());
    let records = usage::records(
        &mut state.db.read().await?,
        usage::RecordFilter {
            product: query.get("product").map(String::as_str),
            wallet: wallet.as_deref(),
            api_key_id: query.get("api_key").map(String::as_str),
            budget_id: query.get("budget").map(String::as_str),
        },
        limit,
    )
    .await?;
    Ok(Json(records))
}
