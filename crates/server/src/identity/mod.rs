//! AgentAddress: anonymous wallet identities for agents.
//!
//! Endpoints:
//! - `POST /api/external/agentaddress` (body `{}` or none) — a fresh wallet (12-word BIP-39
//!   mnemonic, key at `m/44'/60'/0'/0/0`, EIP-55 address), answered once with
//!   `Cache-Control: no-store`. Limited per source address (default 1 per 60 s) across all
//!   instances sharing the database; 429 with `rate_limit` and `Retry-After` when over, 503
//!   when the limiter cannot be consulted (fail closed).
//!
//! The server keeps only the public address, when and for which source it was issued
//! (`agent_addresses`). The key and mnemonic exist in the response body and nowhere else.

pub mod limiter;
pub mod wallet;

use crate::db::macros::sql_execute;
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiJson;
use crate::ratelimit::IpLimited;
use crate::state::AppState;
use crate::time::now_ms;
use agentpmt_protocol::wire::{AgentAddressResponse, ErrorBody, RateLimitInfo};
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// This area's routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create_agent_address))
}

/// The request body: an empty object (or no body at all). Unknown fields are ignored.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct AgentAddressRequest {}

/// The response body, borrowing the secrets for the moment of serialization.
#[derive(Serialize)]
struct Body<'a> {
    success: bool,
    data: Data<'a>,
}

#[derive(Serialize)]
struct Data<'a> {
    #[serde(rename = "evmAddress")]
    evm_address: &'a str,
    #[serde(rename = "evmPrivateKey")]
    evm_private_key: &'a str,
    mnemonic: &'a str,
}

/// Create an AgentAddress: a fresh wallet identity for an autonomous agent.
///
/// The private key and mnemonic are returned exactly once: persist them immediately. The
/// server stores only the address. One new AgentAddress per 60 seconds per source IP
/// (configurable).
#[utoipa::path(
    post,
    path = "/api/external/agentaddress",
    tag = "identity",
    request_body(content = AgentAddressRequest, description = "`{}` or no body", content_type = "application/json"),
    responses(
        (status = 200, description = "A freshly generated agent wallet identity. The private key is returned exactly once.", body = AgentAddressResponse),
        (status = 422, description = "The body is not a JSON object", body = ErrorBody),
        (status = 429, description = "AgentAddress creation rate limit exceeded (see rate_limit and Retry-After)", body = ErrorBody),
        (status = 503, description = "The rate limiter is unavailable; nothing was created", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all)]
pub async fn create_agent_address(
    IpLimited(ip): IpLimited,
    State(state): State<AppState>,
    ApiJson(_request): ApiJson<AgentAddressRequest>,
) -> ApiResult<Response> {
    let source = ip.to_string();
    let (limit, window) = (
        state.config.agentaddress_limit,
        state.config.agentaddress_window_secs,
    );
    match limiter::hit(&state.db, &source, limit, window).await {
        Ok(limiter::Decision::Allowed) => {}
        Ok(limiter::Decision::Limited { retry_after_secs }) => {
            state.metrics.rate_limited("agentaddress");
            return Err(ApiError::rate_limited(
                format!(
                    "AgentAddress creation is limited to {limit} per {window} seconds per source \
                     address; retry in {retry_after_secs} seconds"
                ),
                RateLimitInfo {
                    limit,
                    window_seconds: window,
                    retry_after_seconds: retry_after_secs,
                },
            )
            .with_detail("scope", "agentaddress"));
        }
        Err(e) => {
            return Err(ApiError::unavailable(
                "The AgentAddress rate limiter is unavailable; nothing was created. Retry later.",
                e,
            ))
        }
    }

    let generated = tokio::task::spawn_blocking(wallet::generate)
        .await
        .map_err(|e| ApiError::internal(anyhow::anyhow!("wallet generation task: {e}")))?
        .map_err(ApiError::internal)?;

    let mut conn = state.db.write().await?;
    sql_execute!(
        conn.conn(),
        "INSERT INTO agent_addresses (address, source, created_at_ms) VALUES ($1, $2, $3)",
        generated.address.to_lowercase(),
        source.as_str(),
        now_ms()
    )?;
    drop(conn);
    state.metrics.agent_address_issued();
    tracing::info!(address = %generated.address, "issued an AgentAddress");

    let body = serde_json::to_vec(&Body {
        success: true,
        data: Data {
            evm_address: &generated.address,
            evm_private_key: generated.private_key.expose_secret(),
            mnemonic: generated.mnemonic.expose_secret(),
        },
    })
    .map_err(ApiError::internal)?;
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    Ok(response)
}
