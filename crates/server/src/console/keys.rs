//! The console's keys page: API keys, budgets and accounts, newest first; creating each
//! (keys are shown once, on a `no-store` page, and only their digests are kept) and revoking
//! keys and budgets. Every action is the operator API's: [`crate::accounts::new_account`],
//! [`crate::accounts::new_api_key`], [`crate::accounts::new_budget`] and
//! [`crate::accounts::revoke`].

use super::views::{self, optional, outcome, time, whole, ListQuery};
use super::{error_page, failed_with, page, CsrfForm, Operator};
use crate::db::macros::sql_fetch_all;
use crate::error::ApiResult;
use crate::state::AppState;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{html, Markup};
use serde::Deserialize;

#[derive(Debug, sqlx::FromRow)]
struct KeyRow {
    key_id: String,
    account_id: String,
    key_prefix: String,
    label: String,
    created_at_ms: i64,
    revoked_at_ms: Option<i64>,
}

#[derive(Debug, sqlx::FromRow)]
struct BudgetRow {
    budget_id: String,
    account_id: String,
    name: String,
    cap_credits: i64,
    spent_credits: i64,
    wallet_address: Option<String>,
    key_prefix: String,
    revoked_at_ms: Option<i64>,
}

/// API keys and budgets, newest first, with revoke buttons.
#[tracing::instrument(skip_all)]
pub async fn keys(
    operator: Operator,
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Response {
    keys_page(&state, &operator, &q, None).await
}

async fn keys_page(
    state: &AppState,
    operator: &Operator,
    q: &ListQuery,
    notice: Option<Markup>,
) -> Response {
    let title = "Keys and budgets";
    let (limit, offset) = q.limit_offset();
    let data = async {
        let mut conn = state.db.read().await?;
        let keys = sql_fetch_all!(
            conn.conn(),
            KeyRow,
            "SELECT key_id, account_id, key_prefix, label, created_at_ms, revoked_at_ms \
             FROM api_keys ORDER BY created_at_ms DESC, key_id LIMIT $1 OFFSET $2",
            limit,
            offset
        )?;
        let budgets = sql_fetch_all!(
            conn.conn(),
            BudgetRow,
            "SELECT budget_id, account_id, name, cap_credits, spent_credits, wallet_address, \
             key_prefix, revoked_at_ms FROM budgets \
             ORDER BY created_at_ms DESC, budget_id LIMIT $1 OFFSET $2",
            limit,
            offset
        )?;
        let accounts = sql_fetch_all!(
            conn.conn(),
            AccountRow,
            "SELECT account_id, name, created_at_ms FROM accounts \
             ORDER BY created_at_ms DESC, account_id LIMIT $1 OFFSET $2",
            limit,
            offset
        )?;
        ApiResult::Ok((keys, budgets, accounts))
    }
    .await;
    let (keys, budgets, accounts) = match data {
        Ok((keys, budgets, accounts)) => (q.paged(keys), q.paged(budgets), q.paged(accounts)),
        Err(e) => return error_page(state, operator, title, e),
    };
    let more = keys.more || budgets.more || accounts.more;
    let base = &state.config.console_path;
    let token = &operator.session.csrf;
    let state_cell = |revoked_at_ms: Option<i64>, path: String, id: &str| match revoked_at_ms {
        Some(at) => html! { "revoked " (time(at)) },
        None => views::button_form(&path, token, "revoke", id, "Revoke"),
    };
    let body = html! {
        main {
            h1 { (title) }
            @if let Some(n) = notice { (n) }
            h2 { "API keys" }
            (views::table("api-keys", &["Key", "Account", "Label", "Created", "State"], &keys.rows, "No API key.", |k| html! {
                tr id={"key-" (k.key_id)} {
                    td { code { (k.key_prefix) "…" } br; small { (k.key_id) } }
                    td { code { (k.account_id) } } td { (k.label) } td { (time(k.created_at_ms)) }
                    td { (state_cell(k.revoked_at_ms, format!("{base}/api-keys/{}/revoke", k.key_id), &k.key_id)) }
                }
            }))
            h2 { "Budgets" }
            (views::table("budgets", &["Budget", "Account", "Spent / cap", "Wallet", "State"], &budgets.rows, "No budget.", |b| html! {
                tr id={"budget-" (b.budget_id)} {
                    td { (b.name) br; code { (b.key_prefix) "…" } br; small { (b.budget_id) } }
                    td { code { (b.account_id) } }
                    td { (b.spent_credits) " / " (b.cap_credits) " cr" }
                    td { code { (b.wallet_address.as_deref().unwrap_or("account")) } }
                    td { (state_cell(b.revoked_at_ms, format!("{base}/budgets/{}/revoke", b.budget_id), &b.budget_id)) }
                }
            }))
            h2 { "Accounts" }
            (views::table("accounts", &["Account", "Name", "Created"], &accounts.rows, "No account.", |a| html! {
                tr { td { code { (a.account_id) } } td { (a.name) } td { (time(a.created_at_ms)) } }
            }))
            (views::pager(&format!("{base}/keys"), q.page(), more))
            section.cards {
                form.stack method="post" action={(base) "/accounts"} id="account-form" {
                    h2 { "Create an account" }
                    (views::csrf(token))
                    label for="account_name" { "Name" } input type="text" id="account_name" name="name" required maxlength="200";
                    button type="submit" { "Create account" }
                }
                form.stack method="post" action={(base) "/api-keys"} id="api-key-form" {
                    h2 { "Create an API key" }
                    (views::csrf(token))
                    label for="key_account" { "Account id" } input type="text" id="key_account" name="account_id" required;
                    label for="key_label" { "Label" } input type="text" id="key_label" name="label" maxlength="200";
                    button type="submit" { "Create key" }
                }
                form.stack method="post" action={(base) "/budgets"} id="budget-form" {
                    h2 { "Create a budget" }
                    (views::csrf(token))
                    label for="budget_account" { "Account id" } input type="text" id="budget_account" name="account_id" required;
                    label for="budget_name" { "Name" } input type="text" id="budget_name" name="name" required maxlength="200";
                    label for="budget_cap" { "Cap (credits)" }
                    input type="number" id="budget_cap" name="cap_credits" required min="0" max=(crate::accounts::MAX_CAP_CREDITS);
                    label for="budget_wallet" { "Wallet it draws from (empty: the account)" }
                    input type="text" id="budget_wallet" name="wallet_address" placeholder="0x…" maxlength="42";
                    button type="submit" { "Create budget" }
                }
            }
        }
    };
    page(state, operator, title, body)
}

#[derive(Debug, sqlx::FromRow)]
struct AccountRow {
    account_id: String,
    name: String,
    created_at_ms: i64,
}

/// The account form.
#[derive(Debug, Deserialize)]
pub struct AccountForm {
    name: String,
}

/// Creates an account through [`crate::accounts::new_account`].
#[tracing::instrument(skip_all)]
pub async fn create_account(
    State(state): State<AppState>,
    CsrfForm(operator, form): CsrfForm<AccountForm>,
) -> Response {
    let request = agentpmt_protocol::workflows::AccountCreateRequest { name: form.name };
    let result = crate::accounts::new_account(&state, &request)
        .await
        .map(|a| format!("Account {} created.", a.account_id));
    let notice = outcome(&result);
    keys_page(&state, &operator, &ListQuery::default(), Some(notice)).await
}

/// The API key form.
#[derive(Debug, Deserialize)]
pub struct ApiKeyForm {
    account_id: String,
    #[serde(default)]
    label: String,
}

/// Creates an API key through [`crate::accounts::new_api_key`]; the key is on this page
/// only (the page is `no-store`, and the server keeps only the key's digest).
#[tracing::instrument(skip_all)]
pub async fn create_api_key(
    State(state): State<AppState>,
    CsrfForm(operator, form): CsrfForm<ApiKeyForm>,
) -> Response {
    let request = agentpmt_protocol::workflows::ApiKeyCreateRequest { label: form.label };
    let notice = match crate::accounts::new_api_key(&state, form.account_id.trim(), &request).await
    {
        Ok(created) => html! {
            div.notice.ok role="status" id="new-key" {
                "API key " code { (created.key.key_id) } " created. Copy it now: it is not shown again."
                br; code.secret { (created.api_key) }
            }
        },
        Err(e) => outcome(&Err(e)),
    };
    keys_page(&state, &operator, &ListQuery::default(), Some(notice)).await
}

/// The budget form.
#[derive(Debug, Deserialize)]
pub struct BudgetForm {
    account_id: String,
    name: String,
    cap_credits: String,
    #[serde(default)]
    wallet_address: String,
}

/// Creates a budget and its key through [`crate::accounts::new_budget`]; the key is on this
/// page only, like an API key's.
#[tracing::instrument(skip_all)]
pub async fn create_budget(
    State(state): State<AppState>,
    CsrfForm(operator, form): CsrfForm<BudgetForm>,
) -> Response {
    let created = async {
        let request = agentpmt_protocol::workflows::BudgetCreateRequest {
            name: form.name.clone(),
            cap_credits: whole("cap_credits", &form.cap_credits)?,
            wallet_address: optional(&form.wallet_address),
        };
        crate::accounts::new_budget(&state, form.account_id.trim(), &request).await
    }
    .await;
    let failed = created.is_err();
    let notice = match created {
        Ok(created) => html! {
            div.notice.ok role="status" id="new-budget" {
                "Budget " code { (created.budget.budget_id) } " (" (created.budget.name) ") created. "
                "Copy its key now: it is not shown again."
                br; code.secret { (created.budget_key) }
            }
        },
        Err(e) => outcome(&Err(e)),
    };
    let response = keys_page(&state, &operator, &ListQuery::default(), Some(notice)).await;
    failed_with(response, failed, StatusCode::UNPROCESSABLE_ENTITY)
}

async fn revoked(
    state: &AppState,
    operator: &Operator,
    what: &str,
    id: &str,
    table: &'static str,
    column: &'static str,
) -> Response {
    let result = crate::accounts::revoke(state, table, column, id)
        .await
        .map(|r| format!("{what} {id} revoked at {}.", r.0.revoked_at));
    let failed = result.is_err();
    let response = keys_page(
        state,
        operator,
        &ListQuery::default(),
        Some(outcome(&result)),
    )
    .await;
    failed_with(response, failed, StatusCode::NOT_FOUND)
}

/// Revokes an API key through [`crate::accounts::revoke`].
#[tracing::instrument(skip_all)]
pub async fn revoke_key(
    State(state): State<AppState>,
    Path(id): Path<String>,
    CsrfForm(operator, _): CsrfForm<super::Empty>,
) -> Response {
    revoked(&state, &operator, "API key", &id, "api_keys", "key_id").await
}

/// Revokes a budget (its bearer is refused from then on) through [`crate::accounts::revoke`].
#[tracing::instrument(skip_all)]
pub async fn revoke_budget(
    State(state): State<AppState>,
    Path(id): Path<String>,
    CsrfForm(operator, _): CsrfForm<super::Empty>,
) -> Response {
    revoked(&state, &operator, "Budget", &id, "budgets", "budget_id").await
}
