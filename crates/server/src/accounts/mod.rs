//! Accounts, API keys and budgets: the human side that BYO-agent workflow schedules
//! authenticate with (API-key + budget-key bearer, see [`bearer`]).
//!
//! An account owns API keys and budgets. A budget is a spending cap in credits drawing
//! from a wallet (or, without one, from the account); its budget key names it. Keys are
//! 192 random bits, shown once at creation; only their SHA-256 is stored.
//!
//! Operator endpoints (admin token):
//! - `POST /api/admin/accounts` — create an account.
//! - `POST /api/admin/accounts/{accountId}/api-keys` — create an API key (shown once).
//! - `POST /api/admin/api-keys/{keyId}/revoke` — revoke an API key.
//! - `POST /api/admin/accounts/{accountId}/budgets` — create a budget and its key (shown once).
//! - `POST /api/admin/budgets/{budgetId}/revoke` — revoke a budget key.

pub mod bearer;

use crate::admin::Admin;
use crate::db::macros::{sql_execute, sql_fetch_optional};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath};
use crate::state::AppState;
use crate::time::{now_ms, rfc3339_ms};
use agentpmt_protocol::canonical::sha256_hex;
use agentpmt_protocol::wire::ErrorBody;
use agentpmt_protocol::workflows::{
    AccountCreateRequest, AccountResponse, AccountView, ApiKeyCreateRequest, ApiKeyCreated,
    ApiKeyView, BudgetCreateRequest, BudgetCreated, BudgetView, RevokedResponse,
};
use agentpmt_protocol::{ErrorCode, WalletAddress};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use bearer::BudgetAuth;

/// Prefix of API keys.
pub const API_KEY_PREFIX: &str = "apmt_ak_";
/// Prefix of budget keys.
pub const BUDGET_KEY_PREFIX: &str = "apmt_bk_";
/// Largest budget cap, in credits (10 million USD).
pub const MAX_CAP_CREDITS: i64 = 1_000_000_000;

/// This area's routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_account))
        .routes(routes!(create_api_key))
        .routes(routes!(revoke_api_key))
        .routes(routes!(create_budget))
        .routes(routes!(revoke_budget))
}

/// A 201 carrying a secret shown once: `Cache-Control: no-store`.
pub type SecretResponse<T> = (
    StatusCode,
    [(axum::http::HeaderName, &'static str); 1],
    Json<T>,
);

/// `n` random bytes, lowercase hex.
pub fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes).expect("the operating system provides randomness");
    hex::encode(bytes)
}

/// A new secret key with `prefix` (192 random bits).
fn new_secret(prefix: &str) -> String {
    format!("{prefix}{}", random_hex(24))
}

/// What is stored of a secret key: its SHA-256, lowercase hex.
pub fn key_digest(key: &str) -> String {
    sha256_hex(key)
}

/// The recognizable start of a key (prefix and 4 characters), kept in clear.
fn key_prefix(key: &str) -> String {
    key.chars().take(12).collect()
}

/// A 1..=max character text without control characters, trimmed.
pub(crate) fn check_text(loc: &[&str], value: &str, min: usize, max: usize) -> ApiResult<String> {
    let value = value.trim();
    let len = value.chars().count();
    if len < min || len > max || value.chars().any(char::is_control) {
        return Err(ApiError::invalid_field(
            loc,
            "value_error",
            format!("must be {min} to {max} characters without control characters"),
        ));
    }
    Ok(value.to_owned())
}

#[derive(Debug, Deserialize)]
pub struct AccountPath {
    #[serde(rename = "accountId")]
    account_id: String,
}

#[derive(Debug, Deserialize)]
pub struct KeyPath {
    #[serde(rename = "keyId")]
    key_id: String,
}

#[derive(Debug, Deserialize)]
pub struct BudgetPath {
    #[serde(rename = "budgetId")]
    budget_id: String,
}

async fn account_exists(state: &AppState, account_id: &str) -> ApiResult<()> {
    let mut conn = state.db.read().await?;
    let found = crate::db::macros::sql_scalar_optional!(
        conn.conn(),
        String,
        "SELECT account_id FROM accounts WHERE account_id = $1",
        account_id
    )?;
    match found {
        Some(_) => Ok(()),
        None => Err(ApiError::new(ErrorCode::NOT_FOUND, "No such account")
            .with_detail("account_id", account_id.to_owned())),
    }
}

/// Create an account (operator).
#[utoipa::path(
    post,
    path = "/api/admin/accounts",
    tag = "admin",
    request_body = AccountCreateRequest,
    security(("admin_token" = [])),
    responses(
        (status = 201, description = "Account created", body = AccountResponse),
        (status = 401, description = "Missing or wrong admin token", body = ErrorBody),
        (status = 403, description = "Operator API disabled", body = ErrorBody),
        (status = 422, description = "Invalid input", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all)]
pub async fn create_account(
    _admin: Admin,
    State(state): State<AppState>,
    ApiJson(request): ApiJson<AccountCreateRequest>,
) -> ApiResult<(StatusCode, Json<AccountResponse>)> {
    let account = new_account(&state, &request).await?;
    Ok((
        StatusCode::CREATED,
        Json(AccountResponse {
            success: true,
            account,
        }),
    ))
}

/// Creates an account (the operator API and the console both call this).
pub async fn new_account(
    state: &AppState,
    request: &AccountCreateRequest,
) -> ApiResult<AccountView> {
    let name = check_text(&["body", "name"], &request.name, 1, 200)?;
    let account_id = format!("acc_{}", random_hex(12));
    let now = now_ms();
    let mut conn = state.db.write().await?;
    sql_execute!(
        conn.conn(),
        "INSERT INTO accounts (account_id, name, created_at_ms) VALUES ($1, $2, $3)",
        &account_id,
        &name,
        now
    )?;
    Ok(AccountView {
        account_id,
        name,
        created_at: rfc3339_ms(now),
    })
}

/// Create an API key for an account (operator). The key is in this response only.
#[utoipa::path(
    post,
    path = "/api/admin/accounts/{accountId}/api-keys",
    tag = "admin",
    params(("accountId" = String, Path, description = "Account id")),
    request_body = ApiKeyCreateRequest,
    security(("admin_token" = [])),
    responses(
        (status = 201, description = "Key created; api_key is shown once", body = ApiKeyCreated),
        (status = 401, description = "Missing or wrong admin token", body = ErrorBody),
        (status = 403, description = "Operator API disabled", body = ErrorBody),
        (status = 404, description = "No such account", body = ErrorBody),
        (status = 422, description = "Invalid input", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all)]
pub async fn create_api_key(
    _admin: Admin,
    State(state): State<AppState>,
    ApiPath(path): ApiPath<AccountPath>,
    ApiJson(request): ApiJson<ApiKeyCreateRequest>,
) -> ApiResult<SecretResponse<ApiKeyCreated>> {
    let created = new_api_key(&state, &path.account_id, &request).await?;
    Ok((
        StatusCode::CREATED,
        [(axum::http::header::CACHE_CONTROL, "no-store")],
        Json(created),
    ))
}

/// Creates an API key of `account_id`; the key is in the result only (the operator API and
/// the console both call this).
pub async fn new_api_key(
    state: &AppState,
    account_id: &str,
    request: &ApiKeyCreateRequest,
) -> ApiResult<ApiKeyCreated> {
    let label = check_text(&["body", "label"], &request.label, 0, 200)?;
    account_exists(state, account_id).await?;
    let key = new_secret(API_KEY_PREFIX);
    let key_id = format!("key_{}", random_hex(12));
    let prefix = key_prefix(&key);
    let now = now_ms();
    let mut conn = state.db.write().await?;
    sql_execute!(
        conn.conn(),
        "INSERT INTO api_keys (key_id, account_id, key_hash, key_prefix, label, created_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6)",
        &key_id,
        account_id,
        key_digest(&key),
        &prefix,
        &label,
        now
    )?;
    Ok(ApiKeyCreated {
        success: true,
        key: ApiKeyView {
            key_id,
            account_id: account_id.to_owned(),
            label,
            key_prefix: prefix,
            created_at: rfc3339_ms(now),
            revoked_at: None,
        },
        api_key: key,
    })
}

/// Revoke an API key (operator). Idempotent: a revoked key keeps its first revocation time.
#[utoipa::path(
    post,
    path = "/api/admin/api-keys/{keyId}/revoke",
    tag = "admin",
    params(("keyId" = String, Path, description = "API key id")),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Key revoked", body = RevokedResponse),
        (status = 401, description = "Missing or wrong admin token", body = ErrorBody),
        (status = 403, description = "Operator API disabled", body = ErrorBody),
        (status = 404, description = "No such key", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all)]
pub async fn revoke_api_key(
    _admin: Admin,
    State(state): State<AppState>,
    ApiPath(path): ApiPath<KeyPath>,
) -> ApiResult<Json<RevokedResponse>> {
    revoke(&state, "api_keys", "key_id", &path.key_id).await
}

/// Create a budget (a spending cap drawing from a wallet or the account) and its budget key
/// (operator). The key is in this response only.
#[utoipa::path(
    post,
    path = "/api/admin/accounts/{accountId}/budgets",
    tag = "admin",
    params(("accountId" = String, Path, description = "Account id")),
    request_body = BudgetCreateRequest,
    security(("admin_token" = [])),
    responses(
        (status = 201, description = "Budget created; budget_key is shown once", body = BudgetCreated),
        (status = 401, description = "Missing or wrong admin token", body = ErrorBody),
        (status = 403, description = "Operator API disabled", body = ErrorBody),
        (status = 404, description = "No such account", body = ErrorBody),
        (status = 422, description = "Invalid input", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all)]
pub async fn create_budget(
    _admin: Admin,
    State(state): State<AppState>,
    ApiPath(path): ApiPath<AccountPath>,
    ApiJson(request): ApiJson<BudgetCreateRequest>,
) -> ApiResult<SecretResponse<BudgetCreated>> {
    let created = new_budget(&state, &path.account_id, &request).await?;
    Ok((
        StatusCode::CREATED,
        [(axum::http::header::CACHE_CONTROL, "no-store")],
        Json(created),
    ))
}

/// Creates a budget of `account_id` and its key; the key is in the result only (the
/// operator API and the console both call this).
pub async fn new_budget(
    state: &AppState,
    account_id: &str,
    request: &BudgetCreateRequest,
) -> ApiResult<BudgetCreated> {
    let name = check_text(&["body", "name"], &request.name, 1, 200)?;
    if !(0..=MAX_CAP_CREDITS).contains(&request.cap_credits) {
        return Err(ApiError::invalid_field(
            &["body", "cap_credits"],
            "value_error",
            format!("cap_credits must be 0 to {MAX_CAP_CREDITS}"),
        ));
    }
    let wallet = match &request.wallet_address {
        None => None,
        Some(w) => Some(
            w.parse::<WalletAddress>()
                .map_err(|e| {
                    ApiError::invalid_field(
                        &["body", "wallet_address"],
                        "value_error",
                        e.to_string(),
                    )
                })?
                .to_string(),
        ),
    };
    account_exists(state, account_id).await?;
    let key = new_secret(BUDGET_KEY_PREFIX);
    let budget_id = format!("bud_{}", random_hex(12));
    let prefix = key_prefix(&key);
    let now = now_ms();
    let mut conn = state.db.write().await?;
    sql_execute!(
        conn.conn(),
        "INSERT INTO budgets (budget_id, account_id, name, cap_credits, spent_credits, \
         wallet_address, key_hash, key_prefix, created_at_ms) \
         VALUES ($1, $2, $3, $4, 0, $5, $6, $7, $8)",
        &budget_id,
        account_id,
        &name,
        request.cap_credits,
        wallet.as_deref(),
        key_digest(&key),
        &prefix,
        now
    )?;
    Ok(BudgetCreated {
        success: true,
        budget: BudgetView {
            budget_id,
            account_id: account_id.to_owned(),
            name,
            cap_credits: request.cap_credits,
            spent_credits: 0,
            draws_from: if wallet.is_some() {
                "wallet"
            } else {
                "account"
            }
            .to_owned(),
            wallet_address: wallet,
            key_prefix: prefix,
            created_at: rfc3339_ms(now),
            revoked_at: None,
        },
        budget_key: key,
    })
}

/// Revoke a budget key (operator): its schedules can no longer be claimed with it.
#[utoipa::path(
    post,
    path = "/api/admin/budgets/{budgetId}/revoke",
    tag = "admin",
    params(("budgetId" = String, Path, description = "Budget id")),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Budget key revoked", body = RevokedResponse),
        (status = 401, description = "Missing or wrong admin token", body = ErrorBody),
        (status = 403, description = "Operator API disabled", body = ErrorBody),
        (status = 404, description = "No such budget", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all)]
pub async fn revoke_budget(
    _admin: Admin,
    State(state): State<AppState>,
    ApiPath(path): ApiPath<BudgetPath>,
) -> ApiResult<Json<RevokedResponse>> {
    revoke(&state, "budgets", "budget_id", &path.budget_id).await
}

#[derive(Debug, sqlx::FromRow)]
struct Revoked {
    revoked_at_ms: Option<i64>,
}

/// Sets `revoked_at_ms` once on the row of `table` whose `id_column` is `id`.
/// Revokes an API key (`api_keys`, `key_id`) or a budget (`budgets`, `budget_id`) (the
/// operator API and the console both call this).
pub async fn revoke(
    state: &AppState,
    table: &'static str,
    id_column: &'static str,
    id: &str,
) -> ApiResult<Json<RevokedResponse>> {
    let update = format!(
        "UPDATE {table} SET revoked_at_ms = $1 WHERE {id_column} = $2 AND revoked_at_ms IS NULL"
    );
    let select = format!("SELECT revoked_at_ms FROM {table} WHERE {id_column} = $1");
    let mut conn = state.db.write().await?;
    sql_execute!(conn.conn(), &update, now_ms(), id)?;
    let row = sql_fetch_optional!(conn.conn(), Revoked, &select, id)?;
    match row.and_then(|r| r.revoked_at_ms) {
        Some(at) => {
            tracing::info!(table, "revoked a key");
            Ok(Json(RevokedResponse {
                success: true,
                revoked_at: rfc3339_ms(at),
            }))
        }
        None => Err(ApiError::new(ErrorCode::NOT_FOUND, "No such key or budget")),
    }
}
