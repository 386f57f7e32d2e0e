//! Credits.
//!
//! Endpoints:
//! - `POST /api/external/credits/balance` — signed (`action:balance`, `product:-`, empty
//!   payload): the wallet's spendable credits.
//! - `POST /api/external/credits/purchase` — buy credits with x402 or a transfer
//!   ([`purchase`]).

pub mod purchase;

use crate::auth::{Signed, SignedEndpoint};
use crate::error::ApiResult;
use crate::state::AppState;
use agentpmt_protocol::wire::{
    credits_to_usd, BalanceResponse, ErrorBody, SignedEnvelope, CREDITS_PER_USD,
};
use agentpmt_protocol::SignedAction;
use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// This area's routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(balance))
        .routes(routes!(purchase::purchase))
}

/// The balance request has no fields besides the envelope.
#[derive(Debug, Deserialize)]
pub struct BalanceBody {}

/// `POST /api/external/credits/balance`.
#[derive(Debug)]
pub struct BalanceEndpoint;

impl SignedEndpoint for BalanceEndpoint {
    type Body = BalanceBody;
    const ACTION: SignedAction = SignedAction::Balance;
}

/// Check the remaining credit balance (signed).
///
/// Message: `action:balance`, `product:-`, empty `payload:` line. A wallet never seen
/// before has 0 credits. 100 credits = 1 USD.
#[utoipa::path(
    post,
    path = "/api/external/credits/balance",
    tag = "credits",
    request_body = SignedEnvelope,
    responses(
        (status = 200, description = "The wallet's balance", body = BalanceResponse),
        (status = 401, description = "Signature or session rejected", body = ErrorBody),
        (status = 409, description = "request_id already used in this session", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 422, description = "Malformed body", body = ErrorBody),
        (status = 429, description = "Too many signed requests for this wallet", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all)]
pub async fn balance(
    State(state): State<AppState>,
    signed: Signed<BalanceEndpoint>,
) -> ApiResult<Json<BalanceResponse>> {
    let (signer, _, credits) = signed.claim_read_only(&state).await?;
    Ok(Json(BalanceResponse {
        success: true,
        wallet_address: signer.wallet.to_string(),
        balance_credits: credits,
        balance_usd: credits_to_usd(credits),
        credits_per_usd: CREDITS_PER_USD,
    }))
}
