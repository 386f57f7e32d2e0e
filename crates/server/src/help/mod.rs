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

use crate::db::macros::sql_execute;
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiJson;
use crate::ratelimit::IpLimited;
use crate::state::AppState;
use crate::time::now_ms;
use agentpmt_protocol::wire::{
    AgentHelpHint, AgentHelpRequest, AgentHelpResponse, ErrorBody, MAX_HELP_CONTEXT_BYTES,
    MAX_HELP_MESSAGE_CHARS,
};
use agentpmt_protocol::ErrorCode;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

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

/// Ask the operators for help: a question or a failing request.
///
/// Stored as a ticket; the answer carries the ticket id and, when `error_code` is one of
/// this API's codes, its meaning, recovery and checklist. Limited per IP address.
#[utoipa::path(
    post,
    path = "/api/external/agent-help",
    tag = "help",
    request_body = AgentHelpRequest,
    responses(
        (status = 201, description = "Ticket stored", body = AgentHelpResponse),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 422, description = "Missing or oversized message, or bad fields", body = ErrorBody),
        (status = 429, description = "Too many requests from this IP address", body = ErrorBody),
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
            Some(text)
        }
    };
    let hint = error_code
        .as_deref()
        .and_then(|c| c.parse::<ErrorCode>().ok())
        .map(hint_for);
    let ticket_id = format!("help_{}", uuid::Uuid::new_v4().simple());
    let mut conn = state.db.write().await?;
    sql_execute!(
        conn.conn(),
        "INSERT INTO agent_help_tickets \
         (ticket_id, message, request_id, error_code, context, source, created_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        ticket_id.as_str(),
        message,
        request_id.as_deref(),
        error_code.as_deref(),
        context.as_deref(),
        ip.to_string(),
        now_ms()
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
