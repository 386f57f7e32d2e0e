//! Discovery and help for agents (and the humans behind them).
//!
//! Endpoints:
//! - `GET /.well-known/agent.json` — the discovery card ([`card`]); `GET /` links to it.
//! - `GET /docs` — human-readable API docs rendered from the OpenAPI document ([`docs`]).
//! - `POST /api/external/agent-help` — an agent posts a question or a failing request; it
//!   is stored as a ticket for operators and answered with the ticket id and, for a known
//!   `error_code`, that code's meaning, recovery and checklist. Every error envelope's
//!   `help_url` points here and `help_doc` at `/docs`.

pub mod card;
pub mod docs;
pub mod redact;

use crate::db::macros::{sql_execute, sql_scalar_optional};
use crate::db::{Conn, Db};
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiJson;
use crate::ratelimit::IpLimited;
use crate::state::AppState;
use crate::time::now_ms;
use agentpmt_protocol::wire::{
    AgentHelpHint, AgentHelpRequest, AgentHelpResponse, ErrorBody, RateLimitInfo,
    MAX_HELP_CONTEXT_BYTES, MAX_HELP_MESSAGE_CHARS,
};
use agentpmt_protocol::ErrorCode;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Help tickets one source (an IP address; an IPv6 /64) may file per window.
pub const HELP_TICKETS_PER_HOUR: i64 = 20;
const HELP_TICKET_WINDOW_MS: i64 = 3600 * 1000;
/// How long help tickets are kept.
pub const HELP_TICKET_RETENTION_MS: i64 = 30 * 24 * 3600 * 1000;

/// Deletes help tickets filed before `before_ms`; returns how many.
pub async fn prune_tickets(db: &Db, before_ms: i64) -> Result<u64, sqlx::Error> {
    let mut conn = db.write().await?;
    sql_execute!(
        conn.conn(),
        "DELETE FROM agent_help_tickets WHERE created_at_ms < $1",
        before_ms
    )
}

/// This area's routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(agent_help))
        .routes(routes!(card::agent_card))
        .routes(routes!(card::index))
        .routes(routes!(docs::docs_page))
}

/// The automatic hint for a known error code.
pub fn hint_for(code: ErrorCode) -> AgentHelpHint {
    AgentHelpHint {
        error_code: code.as_str().to_owned(),
        http_status: code.status(),
        meaning: code.meaning().to_owned(),
        recovery: code.recovery().to_owned(),
        checklist: code.checklist().iter().map(|s| (*s).to_owned()).collect(),
    }
}

fn short_token(loc: &str, value: Option<&String>, max: usize) -> ApiResult<Option<String>> {
    match value {
        None => Ok(None),
        Some(v) if v.is_empty() => Ok(None),
        Some(v) if v.chars().count() > max || v.chars().any(char::is_control) => {
            Err(ApiError::invalid_field(
                &["body", loc],
                "value_error",
                format!("{loc} must be at most {max} characters without control characters"),
            ))
        }
        Some(v) => Ok(Some(v.clone())),
    }
}

/// 429 when `source` stored its quota of tickets in the last hour.
async fn over_quota(conn: &mut Conn, source: &str, now: i64) -> ApiResult<()> {
    let recent = sql_scalar_optional!(
        conn.conn(),
        i64,
        "SELECT COUNT(*) FROM agent_help_tickets WHERE created_at_ms > $1 AND source = $2",
        now - HELP_TICKET_WINDOW_MS,
        source
    )?
    .unwrap_or(0);
    if recent >= HELP_TICKETS_PER_HOUR {
        return Err(ApiError::rate_limited(
            "Too many help tickets from this address; wait before sending another",
            RateLimitInfo {
                limit: HELP_TICKETS_PER_HOUR as u64,
                window_seconds: (HELP_TICKET_WINDOW_MS / 1000) as u64,
                retry_after_seconds: 60,
            },
        )
        .with_detail("scope", "help_tickets"));
    }
    Ok(())
}

/// Ask the operators for help: a question or a failing request.
///
/// Stored as a ticket; the answer carries the ticket id and, when `error_code` is one of
/// this API's codes, its meaning, recovery and checklist. Limited per IP address, and to
/// 20 tickets per hour per address (an IPv6 /64); secrets pasted into `message` or
/// `context` (keys, signatures, bearer and API keys, `_credentials`) are redacted before
/// the ticket is stored; tickets are kept 30 days.
#[utoipa::path(
    post,
    path = "/api/external/agent-help",
    tag = "help",
    request_body = AgentHelpRequest,
    responses(
        (status = 201, description = "Ticket stored", body = AgentHelpResponse),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 422, description = "Missing or oversized message, or bad fields", body = ErrorBody),
        (status = 429, description = "Too many requests or help tickets from this IP address", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all)]
pub async fn agent_help(
    IpLimited(ip): IpLimited,
    State(state): State<AppState>,
    ApiJson(request): ApiJson<AgentHelpRequest>,
) -> ApiResult<(StatusCode, Json<AgentHelpResponse>)> {
    let message = request.message.trim();
    if message.is_empty() || message.chars().count() > MAX_HELP_MESSAGE_CHARS {
        return Err(ApiError::invalid_field(
            &["body", "message"],
            "value_error",
            format!("message must be 1 to {MAX_HELP_MESSAGE_CHARS} characters"),
        ));
    }
    let request_id = short_token("request_id", request.request_id.as_ref(), 128)?;
    let error_code = short_token("error_code", request.error_code.as_ref(), 64)?;
    let context = match &request.context {
        None | Some(serde_json::Value::Null) => None,
        Some(value) => {
            let text = serde_json::to_string(value).map_err(ApiError::internal)?;
            if text.len() > MAX_HELP_CONTEXT_BYTES {
                return Err(ApiError::invalid_field(
                    &["body", "context"],
                    "value_error",
                    format!("context must be at most {MAX_HELP_CONTEXT_BYTES} bytes of JSON"),
                ));
            }
            Some(value.clone())
        }
    };
    let source = crate::ratelimit::ip_bucket(ip).to_string();
    let now = now_ms();
    // The quota is checked before any costly work (redaction scans up to 20 KiB), and on a
    // reader: a source over its quota costs one indexed count, not the CPU of a ticket nor
    // the writer.
    let quota = {
        let mut conn = state.db.read().await?;
        over_quota(&mut conn, &source, now).await
    };
    if quota.is_err() {
        // Held once the reader is given back: a spammer waits, the pool does not.
        state.limits.hold().await;
    }
    quota?;
    let message = message.to_owned();
    let (message, context) = tokio::task::spawn_blocking(move || {
        let context = context
            .map(|value| serde_json::to_string(&redact::value(&value)))
            .transpose();
        (redact::text(&message), context)
    })
    .await
    .map_err(ApiError::internal)?;
    let context = context.map_err(ApiError::internal)?;
    let hint = error_code
        .as_deref()
        .and_then(|c| c.parse::<ErrorCode>().ok())
        .map(hint_for);
    let ticket_id = format!("help_{}", uuid::Uuid::new_v4().simple());
    let mut conn = state.db.write().await?;
    // Again on the writer, with the insert: what holds across instances.
    over_quota(&mut conn, &source, now).await?;
    sql_execute!(
        conn.conn(),
        "INSERT INTO agent_help_tickets \
         (ticket_id, message, request_id, error_code, context, source, created_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        ticket_id.as_str(),
        message.as_str(),
        request_id.as_deref(),
        error_code.as_deref(),
        context.as_deref(),
        source.as_str(),
        now
    )?;
    tracing::info!(ticket_id = %ticket_id, error_code = ?error_code, "agent help ticket stored");
    Ok((
        StatusCode::CREATED,
        Json(AgentHelpResponse {
            success: true,
            ticket_id,
            status: "received".to_owned(),
            hint,
            docs_url: format!("{}/docs", state.public_url),
        }),
    ))
}
