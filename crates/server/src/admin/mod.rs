//! The operator API under `/api/admin/`, behind `Authorization: Bearer <admin token>`.
//!
//! The token comes from configuration; only its SHA-256 is kept, and it is compared in
//! constant time. With no token configured every admin route answers 403
//! `ADMIN_API_DISABLED`.
//!
//! Endpoints:
//! - `GET /api/admin/wallets/{address}` — balance, ledger totals and recent entries.
//! - `POST /api/admin/wallets/{address}/credits` — grant or remove credits (a ledger entry
//!   with a reason; optional idempotency key).
//! - `GET /api/admin/help-tickets?limit=N` — the newest agent-help tickets.
//! - `POST /api/admin/help-tickets/{ticketId}/close`, `.../reopen` — mark a ticket handled,
//!   or open again.
//! - `GET /api/admin/audit/payments` — the payment audit (every payment-derived credit and
//!   counted on-chain payment re-checked against the chain; see [`crate::payments::audit`]).

use crate::db::macros::{sql_execute, sql_fetch_all, sql_fetch_optional};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath};
use crate::ledger::{self, LedgerError, NewEntry};
use crate::state::AppState;
use agentpmt_protocol::canonical::sha256_hex;
use agentpmt_protocol::wire::{
    credits_to_usd, AdminWalletView, CreditAdjustmentRequest, CreditAdjustmentResponse, ErrorBody,
    HelpTicketList, HelpTicketResponse, HelpTicketView, PaymentAuditReport,
};
use agentpmt_protocol::{ErrorCode, WalletAddress};
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Largest single adjustment, in credits (10 million USD).
pub const MAX_ADJUSTMENT_CREDITS: i64 = 1_000_000_000;

/// This area's routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_wallet))
        .routes(routes!(adjust_credits))
        .routes(routes!(help_tickets))
        .routes(routes!(close_help_ticket))
        .routes(routes!(reopen_help_ticket))
        .routes(routes!(audit_payments))
}

/// The payment audit (operator): re-checks every payment-derived ledger entry and every
/// counted on-chain payment against the database and the chain, and lists what does not
/// hold (`clean: false` then). Read-only; it reads every claim, so it takes a while on a
/// large ledger.
#[utoipa::path(
    get,
    path = "/api/admin/audit/payments",
    tag = "admin",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The audit report", body = PaymentAuditReport),
        (status = 401, description = "Missing or wrong admin token", body = ErrorBody),
        (status = 403, description = "Operator API disabled", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all)]
pub async fn audit_payments(
    _admin: Admin,
    State(state): State<AppState>,
) -> ApiResult<Json<PaymentAuditReport>> {
    let report = crate::payments::audit::run(&state.db, &state.payments).await?;
    if !report.clean {
        tracing::warn!(
            discrepancies = report.discrepancies.len(),
            "the payment audit found discrepancies"
        );
    }
    Ok(Json(report))
}

/// The token of an `Authorization: Bearer <token>` header, if there is one.
pub fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
}

/// Whether `presented` is the token whose SHA-256 is `expected` (constant time): the check
/// of the operator API and of the console's sign-in.
pub fn token_matches(expected: &[u8; 32], presented: &str) -> bool {
    let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
    bool::from(digest.ct_eq(expected))
}

/// Proof that the request carried the admin token.
#[derive(Debug)]
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Some(expected) = state.admin_token_digest else {
            return Err(ApiError::new(
                ErrorCode::ADMIN_API_DISABLED,
                "The operator API is disabled on this server",
            ));
        };
        let Some(presented) = bearer(&parts.headers) else {
            return Err(ApiError::new(
                ErrorCode::ADMIN_UNAUTHORIZED,
                "Missing admin bearer token",
            ));
        };
        if token_matches(&expected, presented) {
            Ok(Admin)
        } else {
            Err(ApiError::new(
                ErrorCode::ADMIN_UNAUTHORIZED,
                "Wrong admin bearer token",
            ))
        }
    }
}

/// The `{address}` path parameter.
#[derive(Debug, Deserialize)]
pub struct WalletPath {
    address: String,
}

fn parse_wallet(path: WalletPath) -> ApiResult<WalletAddress> {
    path.address
        .parse()
        .map_err(|e: agentpmt_protocol::InvalidAddress| {
            ApiError::invalid_field(&["path", "address"], "value_error", e.to_string())
        })
}

/// A wallet's balance, ledger totals and its 100 most recent entries (operator).
#[utoipa::path(
    get,
    path = "/api/admin/wallets/{address}",
    tag = "admin",
    params(("address" = String, Path, description = "Wallet address")),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The wallet", body = AdminWalletView),
        (status = 401, description = "Missing or wrong admin token", body = ErrorBody),
        (status = 403, description = "Operator API disabled", body = ErrorBody),
        (status = 422, description = "Invalid address", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all)]
pub async fn get_wallet(
    _admin: Admin,
    State(state): State<AppState>,
    ApiPath(path): ApiPath<WalletPath>,
) -> ApiResult<Json<AdminWalletView>> {
    let wallet = parse_wallet(path)?;
    let mut conn = state.db.read().await?;
    let balance = ledger::balance(&mut conn, &wallet).await?;
    let totals = ledger::totals(&mut conn, &wallet).await?;
    let recent = ledger::recent_entries(&mut conn, &wallet, 100).await?;
    Ok(Json(AdminWalletView {
        success: true,
        wallet_address: wallet.to_string(),
        balance_credits: balance,
        balance_usd: credits_to_usd(balance),
        ledger_sum_credits: totals.sum_credits,
        ledger_entry_count: totals.entry_count,
        recent_entries: recent.iter().map(ledger::Entry::view).collect(),
    }))
}

/// Grant (positive) or remove (negative) credits, as one ledger entry with a reason (operator).
///
/// With `idempotency_key`, repeating the same request returns the first result
/// (`idempotent_replay: true`); the same key with a different amount or reason is refused
/// with 409 `IDEMPOTENCY_KEY_REUSED`. Removing more than the balance is refused with 402
/// `INSUFFICIENT_CREDITS` and changes nothing.
#[utoipa::path(
    post,
    path = "/api/admin/wallets/{address}/credits",
    tag = "admin",
    params(("address" = String, Path, description = "Wallet address")),
    request_body = CreditAdjustmentRequest,
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Repeat of an earlier request with the same idempotency key", body = CreditAdjustmentResponse),
        (status = 201, description = "Entry posted", body = CreditAdjustmentResponse),
        (status = 401, description = "Missing or wrong admin token", body = ErrorBody),
        (status = 402, description = "Removal larger than the balance", body = ErrorBody),
        (status = 403, description = "Operator API disabled", body = ErrorBody),
        (status = 409, description = "Idempotency key reused with a different request", body = ErrorBody),
        (status = 422, description = "Invalid input", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all)]
pub async fn adjust_credits(
    _admin: Admin,
    State(state): State<AppState>,
    ApiPath(path): ApiPath<WalletPath>,
    ApiJson(request): ApiJson<CreditAdjustmentRequest>,
) -> ApiResult<(StatusCode, Json<CreditAdjustmentResponse>)> {
    let wallet = parse_wallet(path)?;
    let (status, response) = adjust(&state, &wallet, &request).await?;
    Ok((status, Json(response)))
}

/// Posts one operator credit adjustment of `wallet` (the operator API and the console both
/// call this): 201 when posted, 200 for a repeat of an earlier idempotency key.
pub async fn adjust(
    state: &AppState,
    wallet: &WalletAddress,
    request: &CreditAdjustmentRequest,
) -> ApiResult<(StatusCode, CreditAdjustmentResponse)> {
    let wallet = *wallet;
    if request.amount_credits == 0
        || request.amount_credits.unsigned_abs() > MAX_ADJUSTMENT_CREDITS.unsigned_abs()
    {
        return Err(ApiError::invalid_field(
            &["body", "amount_credits"],
            "value_error",
            format!("amount_credits must be non-zero and at most {MAX_ADJUSTMENT_CREDITS} in absolute value"),
        ));
    }
    let reason = request.reason.trim();
    if reason.is_empty() || reason.chars().count() > 500 {
        return Err(ApiError::invalid_field(
            &["body", "reason"],
            "value_error",
            "reason must be 1 to 500 characters",
        ));
    }
    if let Some(key) = &request.idempotency_key {
        if key.is_empty() || key.chars().count() > 128 || key.chars().any(char::is_control) {
            return Err(ApiError::invalid_field(
                &["body", "idempotency_key"],
                "value_error",
                "idempotency_key must be 1 to 128 characters without control characters",
            ));
        }
    }
    let entry_id = match &request.idempotency_key {
        Some(key) => format!("admin:{wallet}:{key}"),
        None => format!("admin:{}", uuid::Uuid::new_v4()),
    };
    let fingerprint = sha256_hex(&format!("{}\n{}", request.amount_credits, reason));

    // Two rounds at most: a lost race on the same idempotency key shows up as a duplicate
    // entry, after which the winner's entry is read back and compared.
    for _ in 0..2 {
        let mut tx = state.db.begin().await?;
        if let Some(existing) = ledger::entry(&mut tx, &entry_id).await? {
            if existing.fingerprint.as_deref() != Some(fingerprint.as_str()) {
                return Err(ApiError::new(
                    ErrorCode::IDEMPOTENCY_KEY_REUSED,
                    "This idempotency key was already used with a different amount or reason",
                ));
            }
            let balance = ledger::balance(&mut tx, &wallet).await?;
            return Ok((
                StatusCode::OK,
                CreditAdjustmentResponse {
                    success: true,
                    entry: existing.view(),
                    balance_credits: balance,
                    idempotent_replay: true,
                },
            ));
        }
        let posted = ledger::post(
            &mut tx,
            NewEntry {
                entry_id: &entry_id,
                wallet: &wallet,
                amount_credits: request.amount_credits,
                kind: ledger::kind::ADMIN_ADJUSTMENT,
                reference: request.idempotency_key.as_deref(),
                reason: Some(reason),
                fingerprint: Some(&fingerprint),
            },
        )
        .await;
        match posted {
            Ok(entry) => {
                tx.commit().await?;
                state
                    .metrics
                    .ledger_posting(&entry.kind, entry.amount_credits);
                tracing::info!(wallet = %wallet, amount_credits = entry.amount_credits, balance_after = entry.balance_after, "admin credit adjustment");
                let balance = entry.balance_after;
                return Ok((
                    StatusCode::CREATED,
                    CreditAdjustmentResponse {
                        success: true,
                        entry: entry.view(),
                        balance_credits: balance,
                        idempotent_replay: false,
                    },
                ));
            }
            Err(LedgerError::DuplicateEntry) => continue,
            Err(LedgerError::Insufficient { balance, requested }) => {
                return Err(ApiError::new(
                    ErrorCode::INSUFFICIENT_CREDITS,
                    format!(
                        "Cannot remove {} credits: the balance is {balance}",
                        -requested
                    ),
                )
                .with_detail("balance_credits", balance)
                .with_detail("requested_credits", requested));
            }
            Err(LedgerError::ZeroAmount) => {
                return Err(ApiError::invalid_field(
                    &["body", "amount_credits"],
                    "value_error",
                    "amount_credits must be non-zero",
                ))
            }
            Err(LedgerError::Db(e)) => return Err(e.into()),
        }
    }
    Err(ApiError::internal(anyhow::anyhow!(
        "idempotent adjustment did not settle after a duplicate entry"
    )))
}

/// Largest page of help tickets.
pub const MAX_TICKET_PAGE: i64 = 100;

/// `?limit=` of the ticket list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TicketQuery {
    /// Tickets to return, newest first (1-100, default 50).
    limit: Option<i64>,
}

#[derive(Debug, sqlx::FromRow)]
struct TicketRow {
    ticket_id: String,
    message: String,
    request_id: Option<String>,
    error_code: Option<String>,
    context: Option<String>,
    source: String,
    created_at_ms: i64,
    closed_at_ms: Option<i64>,
}

/// The newest agent-help tickets (operator).
#[utoipa::path(
    get,
    path = "/api/admin/help-tickets",
    tag = "admin",
    params(TicketQuery),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Tickets, newest first", body = HelpTicketList),
        (status = 401, description = "Missing or wrong admin token", body = ErrorBody),
        (status = 403, description = "Operator API disabled", body = ErrorBody),
        (status = 422, description = "limit outside 1-100", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all)]
pub async fn help_tickets(
    _admin: Admin,
    State(state): State<AppState>,
    query: Result<axum::extract::Query<TicketQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<HelpTicketList>> {
    let query = query
        .map_err(|r| ApiError::invalid_field(&["query"], "value_error", r.body_text()))?
        .0;
    let limit = query.limit.unwrap_or(50);
    if !(1..=MAX_TICKET_PAGE).contains(&limit) {
        return Err(ApiError::invalid_field(
            &["query", "limit"],
            "value_error",
            format!("limit must be 1 to {MAX_TICKET_PAGE}"),
        ));
    }
    Ok(Json(HelpTicketList {
        success: true,
        limit,
        tickets: tickets(&state, TicketFilter::All, limit, 0).await?,
    }))
}

/// Which help tickets a page shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TicketFilter {
    All,
    Open,
    Closed,
}

impl TicketFilter {
    fn sql(self) -> &'static str {
        match self {
            TicketFilter::All => "",
            TicketFilter::Open => "WHERE closed_at_ms IS NULL",
            TicketFilter::Closed => "WHERE closed_at_ms IS NOT NULL",
        }
    }
}

const TICKET_COLUMNS: &str =
    "ticket_id, message, request_id, error_code, context, source, created_at_ms, closed_at_ms";

impl TicketRow {
    fn view(self) -> HelpTicketView {
        HelpTicketView {
            ticket_id: self.ticket_id,
            message: self.message,
            request_id: self.request_id,
            error_code: self.error_code,
            context: self.context.and_then(|c| serde_json::from_str(&c).ok()),
            source: self.source,
            created_at: crate::time::rfc3339_ms(self.created_at_ms),
            status: if self.closed_at_ms.is_some() {
                "closed"
            } else {
                "open"
            }
            .to_owned(),
            closed_at: self.closed_at_ms.map(crate::time::rfc3339_ms),
        }
    }
}

/// A page of help tickets, newest first (the operator API and the console both call this).
pub async fn tickets(
    state: &AppState,
    filter: TicketFilter,
    limit: i64,
    offset: i64,
) -> ApiResult<Vec<HelpTicketView>> {
    let mut conn = state.db.read().await?;
    let sql = format!(
        "SELECT {TICKET_COLUMNS} FROM agent_help_tickets {} \
         ORDER BY created_at_ms DESC, ticket_id DESC LIMIT $1 OFFSET $2",
        filter.sql()
    );
    let rows = sql_fetch_all!(conn.conn(), TicketRow, &sql, limit, offset)?;
    Ok(rows.into_iter().map(TicketRow::view).collect())
}

/// The `{ticketId}` path parameter.
#[derive(Debug, Deserialize)]
pub struct TicketPath {
    #[serde(rename = "ticketId")]
    ticket_id: String,
}

/// Close a help ticket: it is handled (operator). Closing a closed ticket changes nothing
/// (`changed: false`) and keeps its first closing time.
#[utoipa::path(
    post,
    path = "/api/admin/help-tickets/{ticketId}/close",
    tag = "admin",
    params(("ticketId" = String, Path, description = "Ticket id")),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The ticket, closed", body = HelpTicketResponse),
        (status = 401, description = "Missing or wrong admin token", body = ErrorBody),
        (status = 403, description = "Operator API disabled", body = ErrorBody),
        (status = 404, description = "No such ticket", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all)]
pub async fn close_help_ticket(
    _admin: Admin,
    State(state): State<AppState>,
    ApiPath(path): ApiPath<TicketPath>,
) -> ApiResult<Json<HelpTicketResponse>> {
    Ok(Json(set_ticket_open(&state, &path.ticket_id, false).await?))
}

/// Reopen a closed help ticket (operator). Reopening an open ticket changes nothing.
#[utoipa::path(
    post,
    path = "/api/admin/help-tickets/{ticketId}/reopen",
    tag = "admin",
    params(("ticketId" = String, Path, description = "Ticket id")),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The ticket, open", body = HelpTicketResponse),
        (status = 401, description = "Missing or wrong admin token", body = ErrorBody),
        (status = 403, description = "Operator API disabled", body = ErrorBody),
        (status = 404, description = "No such ticket", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all)]
pub async fn reopen_help_ticket(
    _admin: Admin,
    State(state): State<AppState>,
    ApiPath(path): ApiPath<TicketPath>,
) -> ApiResult<Json<HelpTicketResponse>> {
    Ok(Json(set_ticket_open(&state, &path.ticket_id, true).await?))
}

/// Opens (`open`) or closes a help ticket, once: a conditional update, so two operators
/// closing at the same moment record one closing time (the operator API and the console
/// both call this).
pub async fn set_ticket_open(
    state: &AppState,
    ticket_id: &str,
    open: bool,
) -> ApiResult<HelpTicketResponse> {
    let mut conn = state.db.write().await?;
    let changed = if open {
        sql_execute!(
            conn.conn(),
            "UPDATE agent_help_tickets SET closed_at_ms = NULL \
             WHERE ticket_id = $1 AND closed_at_ms IS NOT NULL",
            ticket_id
        )?
    } else {
        sql_execute!(
            conn.conn(),
            "UPDATE agent_help_tickets SET closed_at_ms = $2 \
             WHERE ticket_id = $1 AND closed_at_ms IS NULL",
            ticket_id,
            crate::time::now_ms()
        )?
    } > 0;
    let sql = format!("SELECT {TICKET_COLUMNS} FROM agent_help_tickets WHERE ticket_id = $1");
    let row = sql_fetch_optional!(conn.conn(), TicketRow, &sql, ticket_id)?.ok_or_else(|| {
        ApiError::new(ErrorCode::NOT_FOUND, "No such help ticket")
            .with_detail("ticket_id", ticket_id.chars().take(128).collect::<String>())
    })?;
    if changed {
        tracing::info!(open, "help ticket status changed by operator");
    }
    Ok(HelpTicketResponse {
        success: true,
        changed,
        ticket: row.view(),
    })
}
