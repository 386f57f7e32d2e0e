//! The console's tools page: products and their actions (price, x402, status and schema
//! edited in place), vendors (secrets never shown), usage per product / action / wallet,
//! and the product and vendor forms. Writes go through [`crate::tools::put_product`] and
//! [`crate::tools::put_vendor`], as `PUT /api/admin/tools/{slug}` and
//! `PUT /api/admin/vendors/{slug}` do; an edit in place writes the product's current document
//! ([`crate::tools::catalog::spec_of`]) with one field changed. Usage is the operator usage
//! report, [`crate::tools::usage::report`].

use super::views::{csrf, href, outcome, paged_table, table, time, whole, Paged};
use super::{error_page, failed_with, page, CsrfForm, Operator, PAGE_SIZE};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use agentpmt_protocol::tools::{ProductAdminView, ProductSpecDoc, UsageRow, VendorSpecDoc};
use agentpmt_protocol::{ErrorCode, WalletAddress};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{html, Markup};
use serde::Deserialize;

const DAY_MS: i64 = 86_400_000;
/// Days of usage shown unless the query says otherwise.
const DEFAULT_USAGE_DAYS: i64 = 30;
/// The groupings of the usage report the page offers.
const USAGE_GROUPS: [&str; 3] = ["product", "action", "wallet"];

const ACTIONS_EXAMPLE: &str = r#"[{"name": "run", "price_credits": 1, "x402_enabled": false,
  "runner": {"kind": "builtin", "name": "time.now"}}]"#;

/// `?group_by=&days=&page=` of the usage report.
#[derive(Debug, Default, Deserialize)]
pub struct ToolsQuery {
    group_by: Option<String>,
    days: Option<i64>,
    page: Option<i64>,
}

impl ToolsQuery {
    fn group_by(&self) -> &str {
        self.group_by.as_deref().unwrap_or("product")
    }

    /// Days back (0: all time), at most ten years.
    fn days(&self) -> i64 {
        self.days.unwrap_or(DEFAULT_USAGE_DAYS).clamp(0, 3650)
    }

    fn since_ms(&self) -> i64 {
        match self.days() {
            0 => 0,
            d => (crate::time::now_ms() - d * DAY_MS).max(0),
        }
    }

    fn page(&self) -> i64 {
        self.page.unwrap_or(1).clamp(1, 1_000_000)
    }
}

/// Products with their actions, vendors, usage, and the product form.
#[tracing::instrument(skip_all)]
pub async fn tools(
    operator: Operator,
    State(state): State<AppState>,
    Query(q): Query<ToolsQuery>,
) -> Response {
    tools_page(&state, &operator, &q, None).await
}

/// One page of the report's rows (it is at most a thousand rows, paged here).
fn usage_page(rows: Vec<UsageRow>, number: i64) -> Paged<UsageRow> {
    let skip = usize::try_from((number - 1) * PAGE_SIZE).unwrap_or(usize::MAX);
    let more = rows.len() > skip.saturating_add(PAGE_SIZE as usize);
    Paged {
        rows: rows
            .into_iter()
            .skip(skip)
            .take(PAGE_SIZE as usize)
            .collect(),
        number,
        more,
    }
}

pub(super) async fn tools_page(
    state: &AppState,
    operator: &Operator,
    q: &ToolsQuery,
    notice: Option<Markup>,
) -> Response {
    let title = "Tools and vendors";
    let group_by = q.group_by();
    let data = async {
        if !USAGE_GROUPS.contains(&group_by) {
            return Err(ApiError::invalid_field(
                &["query", "group_by"],
                "value_error",
                "group_by is product, action or wallet",
            ));
        }
        let mut conn = state.db.read().await?;
        let products = crate::tools::catalog::admin_views(&mut conn, None).await?;
        let vendors = crate::tools::catalog::vendor_views(&mut conn).await?;
        let usage = crate::tools::usage::report(&mut conn, group_by, q.since_ms()).await?;
        ApiResult::Ok((products, vendors, usage))
    }
    .await;
    let (products, vendors, usage) = match data {
        Ok(d) => d,
        Err(e) => return error_page(state, operator, title, e),
    };
    let usage = usage_page(usage, q.page());
    let base = &state.config.console_path;
    let list = format!("{base}/tools");
    let days = q.days().to_string();
    let token = &operator.session.csrf;
    let body = html! {
        main {
            h1 { (title) }
            @if let Some(n) = notice { (n) }
            (table("products", &["Product", "Status", "Vendor", "Actions (price, x402, status)"], &products, "No product yet.", |p| html! {
                tr id={"product-" (p.slug)} {
                    td { strong.product-name { (p.name) } br; code { (p.slug) } @if p.private { " · private" } }
                    td.status { (p.status) }
                    td { (p.vendor) }
                    td {
                        ul { @for a in &p.actions {
                            li { code { (a.slug) } " — " (a.price_credits) " cr"
                                @if a.x402_enabled { " · x402" } " · " (a.status) }
                        } }
                        (edit_forms(&list, token, p))
                    }
                }
            }))
            h2 { "Vendors" }
            (table("vendors", &["Vendor", "Status", "Secret", "Updated"], &vendors, "No vendor.", |v| html! {
                tr { td { (v.name) " " code { (v.slug) } } td { (v.status) }
                     td { @if v.has_secret { "set (never shown)" } @else { "none" } } td { (v.updated_at) } }
            }))
            section id="usage" {
                h2 { "Usage per " (group_by) }
                nav.filters {
                    @for g in USAGE_GROUPS {
                        a.current[g == group_by] href=(href(&list, &[("group_by", g), ("days", &days)])) { (g) }
                    }
                }
                form.search method="get" action=(list) {
                    input type="hidden" name="group_by" value=(group_by);
                    label for="days" { "Days back (0: all time)" }
                    input type="number" id="days" name="days" value=(days) min="0" max="3650";
                    button type="submit" { "Show" }
                }
                (paged_table(
                    "usage-table",
                    &[group_by, "Calls", "Succeeded", "Failed", "Charged", "x402 calls"],
                    &usage,
                    "No tool call in this period.",
                    &href(&list, &[("group_by", group_by), ("days", &days)]),
                    |u| html! {
                        tr {
                            td.key { @if group_by == "wallet" && u.key.parse::<WalletAddress>().is_ok() {
                                a href={(base) "/wallets/" (u.key)} { code { (u.key) } }
                            } @else { code { (u.key) } } }
                            td { (u.calls) } td { (u.succeeded) } td { (u.failed) }
                            td { (u.charged_credits) " cr" } td { (u.x402_calls) }
                        }
                    },
                ))
                p { "Since " (time(q.since_ms())) "; the operator API's " code { "GET /api/admin/tools/usage" } "." }
            }
            section {
                h2 { "Create or replace a product" }
                p { "The same document as " code { "PUT /api/admin/tools/{slug}" } "; a product with an existing slug is replaced, and actions left out become inactive." }
                form.stack method="post" action=(list) id="product-form" {
                    (csrf(token))
                    label for="slug" { "Slug" } input type="text" id="slug" name="slug" required maxlength="64";
                    label for="name" { "Name" } input type="text" id="name" name="name" required maxlength="200";
                    label for="description" { "Description" } input type="text" id="description" name="description" maxlength="2000";
                    label for="categories" { "Categories (comma-separated)" } input type="text" id="categories" name="categories";
                    label for="vendor" { "Vendor slug (empty for built-in tools)" } input type="text" id="vendor" name="vendor";
                    label for="status" { "Status" }
                    select id="status" name="status" { option value="active" { "active" } option value="inactive" { "inactive" } }
                    label for="actions" { "Actions (JSON: name, price_credits, x402_enabled, parameters, runner)" }
                    textarea id="actions" name="actions" rows="6" { (ACTIONS_EXAMPLE) }
                    button type="submit" { "Save product" }
                }
            }
            section {
                h2 { "Create or update a vendor" }
                p { "The same document as " code { "PUT /api/admin/vendors/{slug}" } ". The secret signs calls to the vendor; it is stored sealed and never shown. Leave it empty to keep the current one." }
                form.stack method="post" action={(base) "/vendors"} id="vendor-form" {
                    (csrf(token))
                    label for="vendor_slug" { "Slug" } input type="text" id="vendor_slug" name="slug" required maxlength="64";
                    label for="vendor_name" { "Name" } input type="text" id="vendor_name" name="name" required maxlength="200";
                    label for="vendor_status" { "Status" }
                    select id="vendor_status" name="status" { option value="active" { "active" } option value="inactive" { "inactive" } }
                    label for="vendor_secret" { "Secret (16-256 characters; empty: unchanged)" }
                    input type="password" id="vendor_secret" name="secret" autocomplete="new-password" minlength="16" maxlength="256";
                    button type="submit" { "Save vendor" }
                }
            }
        }
    };
    page(state, operator, title, body)
}

/// The product form.
#[derive(Debug, Deserialize)]
pub struct ProductForm {
    slug: String,
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    categories: String,
    #[serde(default)]
    vendor: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    actions: String,
}

/// Creates or replaces a product through [`crate::tools::put_product`].
#[tracing::instrument(skip_all)]
pub async fn put_tool(
    State(state): State<AppState>,
    CsrfForm(operator, form): CsrfForm<ProductForm>,
) -> Response {
    let result = async {
        let actions: serde_json::Value = serde_json::from_str(&form.actions).map_err(|e| {
            ApiError::invalid_field(&["body", "actions"], "json_invalid", e.to_string())
        })?;
        let categories: Vec<&str> = form
            .categories
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect();
        let mut doc = serde_json::json!({
            "slug": form.slug.trim(), "name": form.name.trim(), "description": form.description.trim(),
            "categories": categories, "actions": actions,
        });
        if !form.status.trim().is_empty() {
            doc["status"] = serde_json::json!(form.status.trim());
        }
        if !form.vendor.trim().is_empty() {
            doc["vendor"] = serde_json::json!(form.vendor.trim());
        }
        let doc: agentpmt_protocol::tools::ProductSpecDoc =
            serde_json::from_value(doc).map_err(|e| {
                ApiError::invalid_field(&["body"], "value_error", e.to_string())
            })?;
        let (created, view) = crate::tools::put_product(&state, &doc).await?;
        Ok(format!(
            "Product {} {}.",
            view.slug,
            if created { "created" } else { "replaced" }
        ))
    }
    .await;
    let failed = result.is_err();
    let response = tools_page(
        &state,
        &operator,
        &ToolsQuery::default(),
        Some(outcome(&result)),
    )
    .await;
    failed_with(response, failed, StatusCode::UNPROCESSABLE_ENTITY)
}

/// The edit-in-place forms of a product: its status, and each action's price, x402 switch,
/// status and parameter schema (folded away until opened; no script needed).
fn edit_forms(list: &str, token: &str, p: &ProductAdminView) -> Markup {
    let statuses = ["active", "inactive"];
    html! {
        details.edit {
            summary { "Edit" }
            form.inline method="post" action={(list) "/" (p.slug) "/status"} {
                (csrf(token))
                label { "Product status "
                    select name="status" { @for s in statuses { option value=(s) selected[s == p.status] { (s) } } } }
                button type="submit" class="product-status" { "Set" }
            }
            @for a in &p.actions {
                form.stack method="post" action={(list) "/" (p.slug) "/actions/" (a.slug)} id={"edit-" (p.slug) "-" (a.slug)} {
                    (csrf(token))
                    h3 { code { (a.slug) } }
                    label { "Price (credits)" input type="number" name="price_credits" value=(a.price_credits) min="1" max=(crate::tools::catalog::MAX_PRICE_CREDITS) required; }
                    label { input type="checkbox" name="x402_enabled" value="on" checked[a.x402_enabled]; " x402 payments" }
                    label { "Status" select name="status" { @for s in statuses { option value=(s) selected[s == a.status] { (s) } } } }
                    label { "Parameters (JSON Schema)" textarea name="parameters" rows="4" { (serde_json::to_string_pretty(&a.input_schema).unwrap_or_default()) } }
                    button type="submit" class="save-action" { "Save action" }
                }
            }
        }
    }
}

/// Writes `slug`'s current document back with `change` applied, through
/// [`crate::tools::put_product`].
async fn edit_product(
    state: &AppState,
    slug: &str,
    change: impl FnOnce(&mut ProductSpecDoc) -> ApiResult<()>,
) -> ApiResult<ProductAdminView> {
    let current = crate::tools::catalog::admin_views(&mut state.db.read().await?, Some(slug))
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| {
            ApiError::new(ErrorCode::TOOL_NOT_FOUND, "No such product")
                .with_detail("product_slug", slug.chars().take(128).collect::<String>())
        })?;
    let mut doc = crate::tools::catalog::spec_of(&current);
    change(&mut doc)?;
    let (_, view) = crate::tools::put_product(state, &doc).await?;
    Ok(view)
}

async fn edited(state: &AppState, operator: &Operator, result: ApiResult<String>) -> Response {
    let failed = result.is_err();
    let response = tools_page(
        state,
        operator,
        &ToolsQuery::default(),
        Some(outcome(&result)),
    )
    .await;
    failed_with(response, failed, StatusCode::UNPROCESSABLE_ENTITY)
}

/// The product status form.
#[derive(Debug, Deserialize)]
pub struct StatusForm {
    status: String,
}

/// Sets a product's status (inactive products leave the listing and cannot be invoked).
#[tracing::instrument(skip_all)]
pub async fn set_product_status(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    CsrfForm(operator, form): CsrfForm<StatusForm>,
) -> Response {
    let result = edit_product(&state, &slug, |doc| {
        doc.status = Some(form.status.trim().to_owned());
        Ok(())
    })
    .await
    .map(|p| format!("Product {} is {}.", p.slug, p.status));
    edited(&state, &operator, result).await
}

/// The action edit form (an unchecked checkbox is absent from the form).
#[derive(Debug, Deserialize)]
pub struct ActionForm {
    price_credits: String,
    #[serde(default)]
    x402_enabled: Option<String>,
    status: String,
    parameters: String,
}

/// Changes one action's price, x402 switch, status and parameter schema.
#[tracing::instrument(skip_all)]
pub async fn edit_action(
    State(state): State<AppState>,
    Path((slug, action)): Path<(String, String)>,
    CsrfForm(operator, form): CsrfForm<ActionForm>,
) -> Response {
    let result = edit_product(&state, &slug, |doc| {
        let price_credits = whole("price_credits", &form.price_credits)?;
        let parameters = serde_json::from_str(&form.parameters).map_err(|e| {
            ApiError::invalid_field(&["body", "parameters"], "json_invalid", e.to_string())
        })?;
        let target = doc
            .actions
            .iter_mut()
            .find(|a| a.slug.as_deref() == Some(action.as_str()))
            .ok_or_else(|| {
                ApiError::new(ErrorCode::TOOL_NOT_FOUND, "No such action")
                    .with_detail("action_slug", action.chars().take(128).collect::<String>())
            })?;
        target.price_credits = price_credits;
        target.x402_enabled = form.x402_enabled.is_some();
        target.status = Some(form.status.trim().to_owned());
        target.parameters = parameters;
        Ok(())
    })
    .await
    .map(|p| {
        let a = p.actions.iter().find(|a| a.slug == action);
        match a {
            Some(a) => format!(
                "Action {}/{} saved: {} cr, x402 {}, {}.",
                p.slug,
                a.slug,
                a.price_credits,
                if a.x402_enabled { "on" } else { "off" },
                a.status
            ),
            None => format!("Product {} saved.", p.slug),
        }
    });
    edited(&state, &operator, result).await
}

/// The vendor form.
#[derive(Debug, Deserialize)]
pub struct VendorForm {
    slug: String,
    name: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    secret: String,
}

/// Creates or updates a vendor through [`crate::tools::put_vendor`]; the secret is never
/// shown back.
#[tracing::instrument(skip_all)]
pub async fn put_vendor(
    State(state): State<AppState>,
    CsrfForm(operator, form): CsrfForm<VendorForm>,
) -> Response {
    let doc = VendorSpecDoc {
        slug: form.slug.trim().to_owned(),
        name: form.name.trim().to_owned(),
        secret: Some(form.secret).filter(|s| !s.is_empty()),
        secret_env: None,
        status: super::views::optional(&form.status),
    };
    let result = crate::tools::put_vendor(&state, &doc)
        .await
        .map(|(created, v)| {
            format!(
                "Vendor {} {} (secret {}).",
                v.slug,
                if created { "created" } else { "updated" },
                if v.has_secret { "set" } else { "none" }
            )
        });
    edited(&state, &operator, result).await
}
