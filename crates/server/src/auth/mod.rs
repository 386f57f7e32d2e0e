//! Wallet sessions and signed-request verification.
//!
//! Endpoints:
//! - `POST /api/external/auth/session` — issue a session nonce for a wallet.

pub mod replay;
pub mod sessions;
pub mod signed;

use crate::error::{ApiError, ApiResult};
use crate::extract::ApiJson;
use crate::ratelimit::IpLimited;
use crate::state::AppState;
use crate::time::rfc3339_ms;
use agentpmt_protocol::wire::{ErrorBody, SessionRequest, SessionResponse};
use axum::extract::State;
use axum::Json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use signed::{Signed, SignedEndpoint, Signer};

/// This area's routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create_session))
}

/// Create a session nonce for wallet signing.
///
/// The nonce is 256 random bits (hex), bound to the wallet, valid for `expires_in` seconds
/// (900 by default). Put it on the `session:` line of signed messages.
#[utoipa::path(
    post,
    path = "/api/external/auth/session",
    tag = "auth",
    request_body = SessionRequest,
    responses(
        (status = 200, description = "A fresh session nonce", body = SessionResponse),
        (status = 422, description = "Invalid wallet address or body", body = ErrorBody),
        (status = 429, description = "Too many requests from this IP address", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all)]
pub async fn create_session(
    _limited: IpLimited,
    State(state): State<AppState>,
    ApiJson(request): ApiJson<SessionRequest>,
) -> ApiResult<Json<SessionResponse>> {
    let record = state
        .sessions
        .create(&state.db, &request.wallet_address)
        .await
        .map_err(ApiError::from)?;
    Ok(Json(SessionResponse {
        session_nonce: record.nonce,
        expires_in: state.sessions.ttl_secs(),
        expires_at: rfc3339_ms(record.expires_at_ms),
        wallet_address: record.wallet_address,
    }))
}
