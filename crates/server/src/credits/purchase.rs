//! `POST /api/external/credits/purchase`: buy credits with an x402 payment (EIP-3009
//! authorization in `PAYMENT-SIGNATURE`, `X-PAYMENT` or `PAYMENT`) or with a token transfer
//! the payer already made (`payment_method: transfer` + `transaction_hash`).
//!
//! Price: 100 credits = 1 USD, packs of 500; a 6-decimals token costs credits × 10,000 base
//! units. No payment → 402 with `PAYMENT-REQUIRED` (base64 `PaymentRequired`) and the same
//! JSON as the body. Settled → 200 with `PAYMENT-RESPONSE`. Settlement broadcast but not
//! confirmed in time → 202 `status: pending` (repeat the same request to learn the outcome;
//! never sign again). `request_id` and `transaction_hash` are idempotency keys.

use crate::deadline::Deadline;
use crate::error::{ApiError, ApiResult};
use crate::extract::{deserialize, parse_object, read_body};
use crate::payments::networks::Offer;
use crate::payments::store::{self, ClaimConflict, PurchaseRow};
use crate::payments::verify::{self, Refusal};
use crate::payments::Settlement;
use crate::ratelimit::IpLimited;
use crate::state::AppState;
use crate::time::now_ms;
use agentpmt_protocol::canonical::payload_hash;
use agentpmt_protocol::wire::{
    sponsor_message, suggested_pack, ErrorBody, PurchasePayment, PurchaseRequest, PurchaseResponse,
    CREDIT_PACK_SIZE,
};
use agentpmt_protocol::x402::{
    self, decode_payment_header, encode_header, PaymentRequired, ResourceInfo, SettleResponse,
    X402_VERSION,
};
use agentpmt_protocol::{ErrorCode, Signature, WalletAddress};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

/// Largest single purchase (1,000,000 credits = 10,000 USD).
pub const MAX_PURCHASE_CREDITS: i64 = 1_000_000;

/// Buy credits (x402 v2, or a transfer already made).
///
/// First call without a payment header: 402 with the `PAYMENT-REQUIRED` header (base64 JSON
/// `PaymentRequired`, x402Version 2, one `accepts` entry for the chosen network and token)
/// and the same JSON as the body. Retry the same body with `PAYMENT-SIGNATURE` (or
/// `X-PAYMENT` / `PAYMENT`): base64 JSON of the payment payload with an EIP-3009
/// `TransferWithAuthorization` for exactly `amount` to `payTo`. Credits are granted only after
/// settlement succeeded. A payer other than `wallet_address` signs the sponsor message
/// (`sponsor_signature`).
#[utoipa::path(
    post,
    path = "/api/external/credits/purchase",
    tag = "credits",
    request_body = PurchaseRequest,
    params(
        ("PAYMENT-SIGNATURE" = Option<String>, Header, description = "x402 v2 payment payload (base64 JSON)"),
        ("X-PAYMENT" = Option<String>, Header, description = "Legacy name of the payment header"),
        ("PAYMENT" = Option<String>, Header, description = "Legacy name of the payment header"),
    ),
    responses(
        (status = 200, description = "Settled: credits granted (header PAYMENT-RESPONSE)", body = PurchaseResponse),
        (status = 202, description = "Settlement broadcast, outcome pending: repeat the same request", body = PurchaseResponse),
        (status = 400, description = "Invalid pack (details.suggested_credits), unsupported network, malformed payment header", body = ErrorBody),
        (status = 401, description = "Sponsored purchase without a valid sponsor_signature", body = ErrorBody),
        (status = 402, description = "Payment required (x402 challenge; header PAYMENT-REQUIRED), payment invalid, or settlement failed (header PAYMENT-RESPONSE)"),
        (status = 409, description = "Payment already used or being settled; idempotency key reused with another body", body = ErrorBody),
        (status = 422, description = "Malformed body", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all)]
pub async fn purchase(
    State(state): State<AppState>,
    _limited: IpLimited,
    deadline: Deadline,
    req: Request,
) -> ApiResult<Response> {
    let headers = req.headers().clone();
    let body = read_body(req, &state).await?;
    let value = parse_object(&body)?;
    let request: PurchaseRequest =
        deserialize(&body, "body").map_err(|issue| ApiError::validation(vec![issue]))?;
    let fingerprint = payload_hash(&value);
    validate(&request)?;
    let payments = &state.payments;
    let offer = payments
        .networks
        .offer(request.credits, request.chain_id, request.token.as_deref())
        .map_err(|message| {
            ApiError::new(ErrorCode::UNSUPPORTED_PAYMENT_NETWORK, message)
                .with_detail("offered", payments.networks.offered())
        })?;

    // Idempotency: the same key and body give the first result again.
    if let Some(answer) = first_result(&state, &request, &offer, &fingerprint, &deadline).await? {
        return Ok(answer);
    }

    let resource = ResourceInfo {
        url: format!("{}/api/external/credits/purchase", state.public_url),
        description: Some(format!(
            "{} AgentPMT credits ({} USD){}",
            request.credits,
            offer.amount_usd(),
            if payments.networks.is_dev() {
                " - DEV NETWORK, no real payment"
            } else {
                ""
            }
        )),
        mime_type: Some("application/json".into()),
    };
    let answer = match request.payment_method.trim().to_ascii_lowercase().as_str() {
        "x402" => {
            x402_purchase(
                &state,
                &headers,
                &request,
                &offer,
                resource,
                fingerprint.clone(),
                &deadline,
            )
            .await
        }
        "transfer" => {
            transfer_purchase(
                &state,
                &request,
                &offer,
                resource,
                fingerprint.clone(),
                &deadline,
            )
            .await
        }
        _ => invalid_method(),
    };
    match answer {
        // A copy of this request (same request_id) raced us to the claim and won: its
        // result is ours, not a conflict with ourselves.
        Err(e)
            if request.request_id.is_some()
                && matches!(
                    e.code(),
                    ErrorCode::PAYMENT_IN_PROGRESS | ErrorCode::PAYMENT_ALREADY_USED
                ) =>
        {
            match first_result(&state, &request, &offer, &fingerprint, &deadline).await? {
                Some(answer) => Ok(answer),
                None => Err(e),
            }
        }
        answer => answer,
    }
}

/// How often a copy of a purchase in progress looks at its outcome.
const FIRST_RESULT_POLL: std::time::Duration = std::time::Duration::from_millis(50);

/// The answer to a purchase whose `request_id` this wallet already used, `None` when it did
/// not: another body gets 409 `IDEMPOTENCY_KEY_REUSED` naming what differs; the same body
/// gets the first result, waited for while another request (on any instance) settles it,
/// for what is left of this request's time, then 202 `pending`.
async fn first_result(
    state: &AppState,
    request: &PurchaseRequest,
    offer: &Offer,
    fingerprint: &str,
    deadline: &Deadline,
) -> ApiResult<Option<Response>> {
    let Some(request_id) = &request.request_id else {
        return Ok(None);
    };
    let wallet = request.wallet_address.to_string();
    let Some(mut row) =
        store::find_by_request(&mut state.db.read().await?, &wallet, request_id).await?
    else {
        return Ok(None);
    };
    if row.fingerprint != fingerprint {
        return Err(key_reused(&row, request, offer));
    }
    let wait_until = std::time::Instant::now() + chain_budget(deadline);
    loop {
        let open = row.status == store::status::PENDING || row.status == store::status::BROADCAST;
        // A lease held by a live request: wait for its outcome instead of competing for it.
        if !open || row.lease_until_ms < now_ms() {
            let settlement = state
                .payments
                .resume(&state.db, row, chain_budget(deadline))
                .await?;
            match settlement {
                Settlement::InProgress { row: current } => row = current,
                settlement => return Ok(Some(respond(offer, settlement))),
            }
        }
        if std::time::Instant::now() + FIRST_RESULT_POLL >= wait_until {
            let message = "another copy of this request is settling it".to_owned();
            return Ok(Some(respond(offer, Settlement::Pending { row, message })));
        }
        tokio::time::sleep(FIRST_RESULT_POLL).await;
        let id = row.purchase_id.clone();
        row = store::find(&mut state.db.read().await?, &id)
            .await?
            .unwrap_or(row);
    }
}

/// 409 `IDEMPOTENCY_KEY_REUSED` for `request`, whose `request_id` bought `row` with another
/// body; `details.differs` names the fields that differ (`body` when only fields the
/// purchase does not keep differ, such as `sponsor_signature`).
fn key_reused(row: &PurchaseRow, request: &PurchaseRequest, offer: &Offer) -> ApiError {
    let method = request.payment_method.trim().to_ascii_lowercase();
    let mut differs: Vec<&str> = Vec::new();
    if row.credits != request.credits {
        differs.push("credits");
    }
    if row.method != method {
        differs.push("payment_method");
    }
    if row.chain_id != offer.network.chain_id as i64 {
        differs.push("chain_id");
    }
    if row.token != offer.token.symbol {
        differs.push("token");
    }
    if row.email != request.email {
        differs.push("email");
    }
    if row.method == "transfer"
        && row.transaction_hash.as_deref()
            != request
                .transaction_hash
                .as_deref()
                .map(str::to_ascii_lowercase)
                .as_deref()
    {
        differs.push("transaction_hash");
    }
    if request
        .payer_wallet_address
        .as_ref()
        .is_some_and(|p| p.to_string() != row.payer_address)
    {
        differs.push("payer_wallet_address");
    }
    if differs.is_empty() {
        differs.push("body");
    }
    ApiError::new(
        ErrorCode::IDEMPOTENCY_KEY_REUSED,
        format!(
            "This request_id was already used for a different purchase body (differs: {})",
            differs.join(", ")
        ),
    )
    .with_detail("purchase_id", row.purchase_id.clone())
    .with_detail("differs", differs)
}

/// How long a purchase may wait for the chain: what is left of the request's time, less a
/// second to answer. A settlement not final by then is answered 202 `pending`.
fn chain_budget(deadline: &Deadline) -> std::time::Duration {
    deadline.remaining_after(std::time::Duration::from_secs(1))
}

fn invalid_method() -> ApiResult<Response> {
    Err(ApiError::invalid_field(
        &["body", "payment_method"],
        "enum",
        "payment_method must be 'x402' or 'transfer'",
    ))
}

fn validate(request: &PurchaseRequest) -> ApiResult<()> {
    if request.credits <= 0 || request.credits % CREDIT_PACK_SIZE != 0 {
        return Err(ApiError::new(
            ErrorCode::INVALID_CREDIT_PACK,
            format!(
                "credits must be a positive multiple of {CREDIT_PACK_SIZE}; the next valid pack is {}",
                suggested_pack(request.credits)
            ),
        )
        .with_detail("suggested_credits", suggested_pack(request.credits))
        .with_detail("pack_size", CREDIT_PACK_SIZE)
        .with_field("suggested_credits", suggested_pack(request.credits)));
    }
    if request.credits > MAX_PURCHASE_CREDITS {
        return Err(ApiError::invalid_field(
            &["body", "credits"],
            "less_than_equal",
            format!("at most {MAX_PURCHASE_CREDITS} credits per purchase"),
        ));
    }
    if !matches!(
        request.payment_method.trim().to_ascii_lowercase().as_str(),
        "x402" | "transfer"
    ) {
        invalid_method()?;
    }
    if let Some(id) = &request.request_id {
        if id.is_empty() || id.chars().count() > 128 || id.chars().any(char::is_control) {
            return Err(ApiError::invalid_field(
                &["body", "request_id"],
                "string_pattern_mismatch",
                "request_id must be 1-128 characters without control characters",
            ));
        }
    }
    if let Some(hash) = &request.transaction_hash {
        if !is_tx_hash(hash) {
            return Err(ApiError::invalid_field(
                &["body", "transaction_hash"],
                "string_pattern_mismatch",
                "transaction_hash must be 0x followed by 64 hex digits",
            ));
        }
    }
    if let Some(email) = &request.email {
        if email.len() > 254 || !email.contains('@') {
            return Err(ApiError::invalid_field(
                &["body", "email"],
                "value_error",
                "email must be an e-mail address (at most 254 characters)",
            ));
        }
    }
    Ok(())
}

fn is_tx_hash(text: &str) -> bool {
    text.strip_prefix("0x")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

pub(crate) fn payment_header(headers: &HeaderMap) -> Option<&str> {
    x402::PAYMENT_HEADERS
        .iter()
        .find_map(|name| headers.get(*name))
        .map(|v| v.to_str().unwrap_or("\u{0}"))
}

fn challenge(offer: &Offer, resource: ResourceInfo, error: Option<&Refusal>) -> PaymentRequired {
    PaymentRequired {
        x402_version: X402_VERSION,
        error: error.map(|r| format!("{}: {}", r.reason, r.message)),
        resource,
        accepts: vec![offer.requirement.clone()],
        extensions: None,
    }
}

/// The 402 challenge: header and body carry the same JSON.
fn challenge_response(offer: &Offer, resource: ResourceInfo) -> Response {
    payment_required(&challenge(offer, resource, None))
}

/// A 402 answer for `required`: the `PAYMENT-REQUIRED` header and the body carry the same
/// JSON; never cached.
pub(crate) fn payment_required(required: &PaymentRequired) -> Response {
    let mut response = (StatusCode::PAYMENT_REQUIRED, Json(required)).into_response();
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&encode_header(required)) {
        h.insert(x402::HEADER_PAYMENT_REQUIRED, v);
    }
    h.insert(
        axum::http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    response
}

pub(crate) fn settle_header(
    offer: &Offer,
    success: bool,
    tx: &str,
    payer: &str,
    refusal: Option<&Refusal>,
) -> String {
    encode_header(&SettleResponse {
        success,
        transaction: if success {
            tx.to_owned()
        } else {
            String::new()
        },
        network: offer.requirement.network.clone(),
        payer: (!payer.is_empty()).then(|| payer.to_owned()),
        error_reason: refusal.map(|r| r.reason.clone()),
        error_message: refusal.map(|r| r.message.clone()),
    })
}

/// A refused payment: 402 (or 400 for an undecodable header) with the x402 reason, a fresh
/// challenge in `PAYMENT-REQUIRED` and a failed `PAYMENT-RESPONSE`.
fn refused(
    code: ErrorCode,
    offer: &Offer,
    resource: ResourceInfo,
    refusal: Refusal,
    payer: &str,
) -> ApiError {
    let required = challenge(offer, resource, Some(&refusal));
    payment_refused(code, &required, Some(offer), &refusal, payer)
}

/// The error of a refused payment (purchases and tool calls): the envelope with the x402
/// reason, the fresh challenge `required` as body fields and in `PAYMENT-REQUIRED`, and,
/// when the payment named one of our offers, a failed `PAYMENT-RESPONSE`.
pub(crate) fn payment_refused(
    code: ErrorCode,
    required: &PaymentRequired,
    offer: Option<&Offer>,
    refusal: &Refusal,
    payer: &str,
) -> ApiError {
    let mut err = ApiError::new(
        code,
        format!("Payment refused ({}): {}", refusal.reason, refusal.message),
    )
    .with_detail("reason", refusal.reason.clone())
    .with_header(x402::HEADER_PAYMENT_REQUIRED, &encode_header(required));
    if let Some(offer) = offer {
        let header = settle_header(offer, false, "", payer, Some(refusal));
        err = err
            .with_header(x402::HEADER_PAYMENT_RESPONSE, &header)
            .with_header(x402::HEADER_X_PAYMENT_RESPONSE, &header);
    }
    for (key, value) in serde_json::to_value(required)
        .unwrap_or_default()
        .as_object()
        .into_iter()
        .flatten()
    {
        err = err.with_field(key, value.clone());
    }
    err
}

/// Checks the sponsor signature when the payer is not the credited wallet.
fn check_sponsor(
    request: &PurchaseRequest,
    payer: &WalletAddress,
    reference: &str,
) -> ApiResult<()> {
    if let Some(declared) = &request.payer_wallet_address {
        if declared != payer {
            return Err(ApiError::invalid_field(
                &["body", "payer_wallet_address"],
                "value_error",
                format!("payer_wallet_address is {declared} but the payment comes from {payer}"),
            ));
        }
    }
    if *payer == request.wallet_address {
        return Ok(());
    }
    let message = sponsor_message(
        &payer.to_string(),
        &request.wallet_address.to_string(),
        request.credits,
        reference,
    );
    let signed_by = request
        .sponsor_signature
        .as_deref()
        .and_then(|s| Signature::parse(s).ok())
        .and_then(|s| s.recover_message(&message).ok());
    if signed_by.as_ref() != Some(payer) {
        return Err(ApiError::new(
            ErrorCode::SPONSOR_SIGNATURE_INVALID,
            format!(
                "{payer} pays for {}: it must sign details.expected_message as sponsor_signature",
                request.wallet_address
            ),
        )
        .with_detail("expected_message", message)
        .with_detail("payer_wallet_address", payer.to_string()));
    }
    Ok(())
}

fn new_row(
    request: &PurchaseRequest,
    offer: &Offer,
    fingerprint: String,
    method: &str,
    payer: &WalletAddress,
    lease_until_ms: i64,
    owner: Option<&str>,
) -> PurchaseRow {
    let now = now_ms();
    PurchaseRow {
        purchase_id: uuid::Uuid::new_v4().to_string(),
        wallet_address: request.wallet_address.to_string(),
        request_id: request.request_id.clone(),
        fingerprint,
        method: method.to_owned(),
        settlement: offer.network.settlement.as_str().to_owned(),
        chain_id: offer.network.chain_id as i64,
        token: offer.token.symbol.clone(),
        asset: format!("{:#x}", offer.token.address),
        pay_to: format!("{:#x}", offer.pay_to),
        payer_address: payer.to_string(),
        credits: request.credits,
        amount_base_units: offer.amount.to_string(),
        authorization_json: None,
        auth_nonce: None,
        transaction_hash: None,
        status: store::status::PENDING.to_owned(),
        lease_until_ms,
        error_reason: None,
        error_message: None,
        created_at_ms: now,
        email: request.email.clone(),
        search_from_block: None,
        owner_instance: owner.map(str::to_owned),
    }
}

fn claim_error(conflict: ClaimConflict) -> ApiError {
    match conflict {
        ClaimConflict::RequestId => ApiError::new(
            ErrorCode::PAYMENT_IN_PROGRESS,
            "A purchase with this request_id is being processed; repeat the request to get its outcome",
        ),
        ClaimConflict::Payment { purchase_id, status } if status == "active" || status == "pending" || status == "broadcast" => {
            ApiError::new(
                ErrorCode::PAYMENT_IN_PROGRESS,
                "This payment is already being settled by another request",
            )
            .with_detail("purchase_id", purchase_id)
        }
        ClaimConflict::Payment { purchase_id, .. } => ApiError::new(
            ErrorCode::PAYMENT_ALREADY_USED,
            "This payment was already used for a purchase",
        )
        .with_detail("purchase_id", purchase_id),
        ClaimConflict::Db(e) => e.into(),
    }
}

/// The purchase holding the authorization `(offer's chain and asset, payer, nonce)` and the
/// claim's status, if it was ever claimed.
async fn holder_of(
    state: &AppState,
    offer: &Offer,
    payer: &WalletAddress,
    nonce_hex: &str,
) -> ApiResult<Option<(String, String)>> {
    Ok(store::authorization_holder(
        &mut state.db.read().await?,
        offer.network.chain_id as i64,
        &format!("{:#x}", offer.token.address),
        &payer.to_string(),
        nonce_hex,
    )
    .await?)
}

async fn x402_purchase(
    state: &AppState,
    headers: &HeaderMap,
    request: &PurchaseRequest,
    offer: &Offer,
    resource: ResourceInfo,
    fingerprint: String,
    deadline: &Deadline,
) -> ApiResult<Response> {
    let Some(header) = payment_header(headers) else {
        return Ok(challenge_response(offer, resource));
    };
    let payment = decode_payment_header(header).map_err(|e| {
        // A signature that is not a valid 65-byte signature is a verification failure, not
        // an undecodable header.
        let code = if e.reason == "invalid_exact_evm_payload_signature" {
            ErrorCode::PAYMENT_INVALID
        } else {
            ErrorCode::PAYMENT_MALFORMED
        };
        refused(
            code,
            offer,
            resource.clone(),
            Refusal::new(e.reason, e.message),
            "",
        )
    })?;
    let now_secs = (now_ms() / 1000) as u64;
    let payer = verify::verify(&payment, offer, now_secs).map_err(|refusal| {
        let from = payment.authorization.from.to_checksum(None);
        refused(
            ErrorCode::PAYMENT_INVALID,
            offer,
            resource.clone(),
            refusal,
            &from,
        )
    })?;
    let payer = WalletAddress::new(payer);
    let nonce_hex = format!("{:#x}", payment.authorization.nonce);
    check_sponsor(request, &payer, &format!("nonce:{nonce_hex}"))?;
    let payments = &state.payments;
    // An authorization this server already settled (or is settling) is answered from the
    // database; the claim below still decides races.
    let holder = holder_of(state, offer, &payer, &nonce_hex).await?;
    if let Some((purchase_id, status)) = holder {
        if status != "failed" {
            return Err(claim_error(ClaimConflict::Payment {
                purchase_id,
                status,
            }));
        }
    }
    let settler = payments
        .settler(offer.network.chain_id)
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("no settler for a configured chain")))?;
    let search_from = match settler.preflight(offer, &payment).await {
        Ok(block) => block,
        Err(refusal) => {
            // Used on chain meanwhile by a request of ours that won the claim: say so.
            if refusal.reason == "invalid_exact_evm_nonce_already_used" {
                if let Some((purchase_id, status)) =
                    holder_of(state, offer, &payer, &nonce_hex).await?
                {
                    return Err(claim_error(ClaimConflict::Payment {
                        purchase_id,
                        status,
                    }));
                }
            }
            return Err(refused(
                ErrorCode::PAYMENT_INVALID,
                offer,
                resource.clone(),
                refusal,
                &payer.to_string(),
            ));
        }
    };

    let mut row = new_row(
        request,
        offer,
        fingerprint,
        "x402",
        &payer,
        now_ms() + payments.lease.as_millis() as i64,
        payments.owner.as_deref(),
    );
    let stored = payment.to_payload(&offer.requirement);
    row.authorization_json = Some(serde_json::to_string(&stored).map_err(ApiError::internal)?);
    row.auth_nonce = Some(nonce_hex);
    row.search_from_block = i64::try_from(search_from).ok();
    let mut tx = state.db.begin().await?;
    match store::insert_claimed(&mut tx, &row).await {
        Ok(()) => tx.commit().await?,
        Err(conflict) => {
            drop(tx);
            return Err(claim_error(conflict));
        }
    }
    tracing::info!(purchase_id = %row.purchase_id, wallet = %row.wallet_address, credits = row.credits,
        network = %offer.requirement.network, settlement = %row.settlement, "payment claimed");
    let settlement = payments
        .settle_claimed(&state.db, row, offer, &payment, chain_budget(deadline))
        .await?;
    record_metrics(state, &settlement);
    Ok(respond(offer, settlement))
}

async fn transfer_purchase(
    state: &AppState,
    request: &PurchaseRequest,
    offer: &Offer,
    resource: ResourceInfo,
    fingerprint: String,
    deadline: &Deadline,
) -> ApiResult<Response> {
    let Some(hash_text) = request.transaction_hash.as_deref() else {
        return Ok(challenge_response(offer, resource));
    };
    let hash_text = hash_text.to_ascii_lowercase();
    let chain_id = offer.network.chain_id as i64;
    if let Some(row) =
        store::find_by_transfer(&mut state.db.read().await?, chain_id, &hash_text).await?
    {
        if row.wallet_address == request.wallet_address.to_string()
            && row.fingerprint == fingerprint
        {
            let settlement = state
                .payments
                .resume(&state.db, row, chain_budget(deadline))
                .await?;
            return Ok(respond(offer, settlement));
        }
        return Err(ApiError::new(
            ErrorCode::PAYMENT_ALREADY_USED,
            "This transaction already paid for a purchase",
        )
        .with_detail("purchase_id", row.purchase_id));
    }
    let reader = state
        .payments
        .settler(offer.network.chain_id)
        .and_then(|s| s.reader())
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::UNSUPPORTED_PAYMENT_NETWORK,
                format!(
                    "Transfers cannot be checked on {} (no chain node configured); pay with payment_method x402",
                    offer.network.caip2()
                ),
            )
            .with_detail("offered", state.payments.networks.offered())
        })?;
    let hash = hash_text.parse().map_err(|_| {
        ApiError::invalid_field(&["body", "transaction_hash"], "value_error", "bad hash")
    })?;
    let invalid = |refusal: Refusal| {
        ApiError::new(
            ErrorCode::TRANSFER_INVALID,
            format!("{}: {}", refusal.reason, refusal.message),
        )
        .with_detail("reason", refusal.reason)
        .with_detail("pay_to", offer.pay_to.to_checksum(None))
        .with_detail("amount_base_units", offer.amount.to_string())
        .with_detail("asset", offer.token.address.to_checksum(None))
    };
    let found = reader.find_transfer(offer, hash).await.map_err(invalid)?;
    // One on-chain payment pays for one thing: a transfer log already counted (an x402
    // settlement, a tool payment, another purchase) cannot buy credits again.
    let claimed =
        crate::payments::claims::of_transaction(&mut state.db.read().await?, chain_id, &hash_text)
            .await?;
    let unclaimed: Vec<_> = found
        .transfers
        .iter()
        .filter(|(_, index)| {
            // A claim from before log indexes were recorded (-1) claims every log.
            !claimed
                .iter()
                .any(|c| c.log_index < 0 || u64::try_from(c.log_index).ok() == Some(*index))
        })
        .collect();
    let Some((from, _)) = unclaimed.first() else {
        let by = claimed.first();
        return Err(ApiError::new(
            ErrorCode::PAYMENT_ALREADY_USED,
            "This transaction's payment was already counted (an x402 settlement, a tool payment or another purchase)",
        )
        .with_detail("claimed_by", by.map(|c| c.kind.clone()).unwrap_or_default())
        .with_detail(
            if by.is_some_and(|c| c.kind == crate::payments::claims::kind::TOOL_PAYMENT) {
                "usage_id"
            } else {
                "purchase_id"
            },
            by.map(|c| c.holder_id.clone()).unwrap_or_default(),
        ));
    };
    let payer = WalletAddress::new(*from);
    check_sponsor(request, &payer, &format!("tx:{hash_text}"))?;
    let mut row = new_row(
        request,
        offer,
        fingerprint,
        "transfer",
        &payer,
        now_ms() + state.payments.lease.as_millis() as i64,
        state.payments.owner.as_deref(),
    );
    row.transaction_hash = Some(hash_text.clone());
    let mut tx = state.db.begin().await?;
    if let Err(conflict) = store::insert_claimed(&mut tx, &row).await {
        drop(tx);
        return Err(claim_error(conflict));
    }
    tx.commit().await?;
    let outcome = state
        .payments
        .transfer_outcome(&state.db, &row, &found, &hash_text)
        .await?;
    let settlement = state
        .payments
        .settle_transfer(&state.db, row, outcome)
        .await?;
    if let Settlement::Failed { refusal, .. } = &settlement {
        if refusal.reason == "payment_already_used" {
            return Err(ApiError::new(
                ErrorCode::PAYMENT_ALREADY_USED,
                "This transaction's payment was already counted",
            )
            .with_detail("reason", refusal.message.clone()));
        }
    }
    tracing::info!(transaction = %hash_text, credits = request.credits, "transfer purchase recorded");
    record_metrics(state, &settlement);
    Ok(respond(offer, settlement))
}

fn view(
    row: &PurchaseRow,
    status: &str,
    balance: Option<i64>,
    message: String,
) -> PurchaseResponse {
    let tx = row.transaction_hash.clone().unwrap_or_default();
    PurchaseResponse {
        success: true,
        status: status.to_owned(),
        purchase_id: row.purchase_id.clone(),
        wallet_address: row.wallet_address.clone(),
        credits_purchased: row.credits,
        balance_credits: balance,
        request_id: row.request_id.clone(),
        transaction_hash: tx.clone(),
        payment: PurchasePayment {
            method: row.method.clone(),
            network: format!("eip155:{}", row.chain_id),
            chain_id: row.chain_id as u64,
            token: row.token.clone(),
            asset: row.asset.clone(),
            amount_base_units: row.amount_base_units.clone(),
            amount_usd: agentpmt_protocol::wire::cents_text(row.credits),
            payer_wallet_address: row.payer_address.clone(),
            pay_to: row.pay_to.clone(),
            transaction: tx,
            settlement: row.settlement.clone(),
        },
        message,
    }
}

/// Counts a fresh settlement outcome (and its ledger grant) in the metrics.
fn record_metrics(state: &AppState, settlement: &Settlement) {
    match settlement {
        Settlement::Settled { row, .. } => {
            state.metrics.settlement("settled");
            state
                .metrics
                .ledger_posting(crate::ledger::kind::CREDIT_PURCHASE, row.credits);
        }
        Settlement::Failed { .. } => state.metrics.settlement("failed"),
        Settlement::Pending { .. } => state.metrics.settlement("pending"),
        Settlement::InProgress { .. } => {}
    }
}

fn respond(offer: &Offer, settlement: Settlement) -> Response {
    match settlement {
        Settlement::Settled { row, balance } => {
            let tx = row.transaction_hash.clone().unwrap_or_default();
            let body = view(
                &row,
                "settled",
                Some(balance),
                format!("{} credits added; balance {balance}", row.credits),
            );
            let mut response = (StatusCode::OK, Json(body)).into_response();
            let header = settle_header(offer, true, &tx, &row.payer_address, None);
            if let Ok(v) = HeaderValue::from_str(&header) {
                response
                    .headers_mut()
                    .insert(x402::HEADER_PAYMENT_RESPONSE, v.clone());
                response
                    .headers_mut()
                    .insert(x402::HEADER_X_PAYMENT_RESPONSE, v);
            }
            response.headers_mut().insert(
                axum::http::header::CACHE_CONTROL,
                HeaderValue::from_static("no-store"),
            );
            response
        }
        Settlement::Pending { row, message } => {
            let body = view(
                &row,
                "pending",
                None,
                format!("Settlement is pending ({message}). Repeat the same request (same body and request_id or payment header) to get the outcome; do not sign a new payment."),
            );
            (StatusCode::ACCEPTED, Json(body)).into_response()
        }
        Settlement::Failed { row, refusal } => {
            let header = settle_header(offer, false, "", &row.payer_address, Some(&refusal));
            ApiError::new(
                ErrorCode::PAYMENT_SETTLEMENT_FAILED,
                format!(
                    "Settlement failed ({}): {}. No credits were granted.",
                    refusal.reason, refusal.message
                ),
            )
            .with_detail("reason", refusal.reason.clone())
            .with_detail("purchase_id", row.purchase_id)
            .with_header(x402::HEADER_PAYMENT_RESPONSE, &header)
            .with_header(x402::HEADER_X_PAYMENT_RESPONSE, &header)
            .into_response()
        }
        Settlement::InProgress { row } => ApiError::new(
            ErrorCode::PAYMENT_IN_PROGRESS,
            "This purchase is being settled by another request; repeat it in a few seconds",
        )
        .with_detail("purchase_id", row.purchase_id)
        .into_response(),
    }
}
