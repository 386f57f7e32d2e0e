//! Tool invocation: `POST /api/external/tools/{productSlug}/actions/{actionSlug}/invoke`
//! (signed credits or direct x402) and the legacy `POST /api/external/tools/{productId}/invoke`
//! (signed credits, `action:invoke`).
//!
//! Mode: a body with any envelope field (`wallet_address`, `session_nonce`, `request_id`,
//! `signature`) is a signed credit call; a body without them is a direct x402 call whose body
//! is the action's parameters. Both at once (envelope fields and a payment header) → 400
//! `MIXED_PAYMENT_MODES`.
//!
//! Credit call order: envelope shape (422) → per-wallet limit (429) → product/action (404,
//! 409 ambiguous) → signature against every accepted signed path (401) → parameters against
//! the action's schema (422) → one transaction: replay claim (409), hold of the price (402
//! `INSUFFICIENT_CREDITS`, nothing run), usage record (a heavy built-in first checks its
//! payer's CPU budget: 429 scope `heavy_cpu`, nothing held) → the tool runs → the hold is posted
//! (success) or released (failure/timeout: 502 `TOOL_FAILED` / 504 `TOOL_TIMEOUT`).
//!
//! Direct x402 order: per-IP limit → product/action (404) → x402 enabled (404
//! `X402_NOT_AVAILABLE`) → parameters (422) → no payment header: 402 challenge for the
//! action's price → payment verified (the `accepted` entry and, when sent, `resource.url`
//! must be this action's) → simulation on chain → claim of the authorization with the usage
//! record (409 while another request holds it) → the tool runs → on success only the payment
//! is settled; on failure the authorization is given back unsettled.

use super::catalog::{self, Resolved};
use super::runner::{self, Call, ToolError};
use super::schema;
use super::usage::{self, NewUsage};
use crate::accounts::BudgetAuth;
use crate::auth::replay::{claim_request, replay_error, Effect};
use crate::auth::signed::{check_signed_ip, verify, Envelope, Signer};
use crate::credits::purchase::{payment_header, payment_refused, payment_required, settle_header};
use crate::deadline::Deadline;
use crate::error::{ApiError, ApiResult};
use crate::extract::{parse_object, read_body};
use crate::payments::networks::Offer;
use crate::payments::settle::{Broadcast, Outcome};
use crate::payments::verify::{self as pay_verify, Refusal};
use crate::ratelimit::ClientIp;
use crate::state::AppState;
use crate::time::now_ms;
use agentpmt_protocol::canonical::JsonValue;
use agentpmt_protocol::tools::{
    InvokeRequest, InvokeResponse, RunnerSpec, X402PaymentView, X402Receipt,
};
use agentpmt_protocol::wire::{credits_to_usd, ErrorBody, ValidationIssue};
use agentpmt_protocol::x402::{
    self, decode_payment_header, DecodedPayment, PaymentRequired, ResourceInfo, X402_VERSION,
};
use agentpmt_protocol::{ErrorCode, Scope, SignedAction, WalletAddress, ENVELOPE_FIELDS};
use axum::extract::{Path, Request, State};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::Json;
use secrecy::SecretString;
use serde_json::Value;
use std::net::IpAddr;
use std::time::Duration;

/// Invoke a tool action with credits (signed) or a direct x402 payment.
///
/// Credits: body `{wallet_address, session_nonce, request_id, signature, parameters}` signed
/// with `method:POST` and `path:/external/tools/{productSlug}/actions/{actionSlug}/invoke`
/// (the `/api` prefix, a trailing slash and the raw action name are accepted too; the
/// accepted forms are listed in `details.accepted_path_candidates` on a mismatch); the
/// payload hash is over `parameters` (absent: `{}`). Direct x402: body = the parameters,
/// no envelope fields; without a payment header the answer is 402 with the challenge.
#[utoipa::path(
    post,
    path = "/api/external/tools/{productSlug}/actions/{actionSlug}/invoke",
    tag = "tools",
    params(
        ("productSlug" = String, Path, description = "Product slug (or product id)"),
        ("actionSlug" = String, Path, description = "Action slug (or the raw action name)"),
        ("PAYMENT-SIGNATURE" = Option<String>, Header, description = "Direct x402: the payment payload (base64 JSON)"),
        ("X-PAYMENT" = Option<String>, Header, description = "Direct x402: legacy name of the payment header"),
    ),
    request_body(content = InvokeRequest, description = "Signed credit call; for direct x402 the body is the action's parameters"),
    responses(
        (status = 200, description = "The tool ran; credits charged or x402 payment settled at depth", body = InvokeResponse),
        (status = 202, description = "x402: the tool ran but its payment is not final yet (response is null); repeat the request with the same payment header to get the output", body = InvokeResponse),
        (status = 400, description = "Mixed payment modes or malformed payment header", body = ErrorBody),
        (status = 401, description = "Signature or session rejected", body = ErrorBody),
        (status = 402, description = "Not enough credits (INSUFFICIENT_CREDITS), x402 challenge, or payment refused"),
        (status = 404, description = "Unknown product or action, or action not enabled for direct x402", body = ErrorBody),
        (status = 409, description = "Ambiguous action slug, replayed request_id, or x402 payment already in progress/used", body = ErrorBody),
        (status = 422, description = "Invalid parameters (loc names the parameter)", body = ErrorBody),
        (status = 429, description = "Rate limited: per IP or per wallet (details.scope ip or wallet), or the payer's CPU budget of heavy built-ins is spent (scope heavy_cpu; nothing held or claimed)", body = ErrorBody),
        (status = 502, description = "The tool failed; nothing charged", body = ErrorBody),
        (status = 504, description = "The tool timed out; nothing charged", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all, fields(product = %product_slug, action = %action_slug))]
pub async fn invoke_action(
    State(state): State<AppState>,
    Path((product_slug, action_slug)): Path<(String, String)>,
    ClientIp(ip): ClientIp,
    deadline: Deadline,
    req: Request,
) -> ApiResult<Response> {
    let headers = req.headers().clone();
    let body = read_body(req, &state).await?;
    let json = parse_object(&body)?;
    let signed_mode = ENVELOPE_FIELDS.iter().any(|f| json.get(f).is_some());
    let paid = payment_header(&headers);
    if signed_mode && paid.is_some() {
        return Err(ApiError::new(
            ErrorCode::MIXED_PAYMENT_MODES,
            "Send either a signed credit invocation or a direct x402 payment, not both",
        ));
    }
    if signed_mode {
        let target = Target::Action {
            product: &product_slug,
            action: &action_slug,
        };
        return credit_call(&state, ip, target, &body, &json, &deadline).await;
    }
    state.limits.check_ip(ip).await.inspect_err(|_| {
        state.metrics.rate_limited("ip");
    })?;
    x402_call(&state, &product_slug, &action_slug, &body, paid, &deadline).await
}

/// Invoke a product's action (legacy route; signed credits only).
///
/// Message: `action:invoke`, `product:{productId}` (as in the URL), payload hash over
/// `parameters`. The action is `parameters.action` (its name or slug); a product with a
/// single action needs none. `parameters.action` is not passed to the tool.
#[utoipa::path(
    post,
    path = "/api/external/tools/{productId}/invoke",
    tag = "tools",
    params(("productId" = String, Path, description = "Product id (24 hex) or slug")),
    request_body = InvokeRequest,
    responses(
        (status = 200, description = "The tool ran; credits charged", body = InvokeResponse),
        (status = 401, description = "Signature or session rejected", body = ErrorBody),
        (status = 402, description = "Not enough credits", body = ErrorBody),
        (status = 404, description = "Unknown product or action", body = ErrorBody),
        (status = 409, description = "Ambiguous action or replayed request_id", body = ErrorBody),
        (status = 422, description = "Invalid body or parameters", body = ErrorBody),
        (status = 429, description = "Rate limited: per IP or per wallet (details.scope ip or wallet), or the payer's CPU budget of heavy built-ins is spent (scope heavy_cpu; nothing held)", body = ErrorBody),
        (status = 502, description = "The tool failed; nothing charged", body = ErrorBody),
        (status = 504, description = "The tool timed out; nothing charged", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all, fields(product = %product_id))]
pub async fn invoke_legacy(
    State(state): State<AppState>,
    Path(product_id): Path<String>,
    ClientIp(ip): ClientIp,
    deadline: Deadline,
    req: Request,
) -> ApiResult<Response> {
    let body = read_body(req, &state).await?;
    let json = parse_object(&body)?;
    credit_call(
        &state,
        ip,
        Target::Legacy {
            product: &product_id,
        },
        &body,
        &json,
        &deadline,
    )
    .await
}

/// What the URL names.
#[derive(Debug, Clone, Copy)]
enum Target<'a> {
    Action { product: &'a str, action: &'a str },
    Legacy { product: &'a str },
}

/// The body's `parameters` (absent → `{}`) as a JSON value.
fn body_parameters(body: &[u8]) -> ApiResult<Value> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid_field(&["body"], "json_invalid", e.to_string()))?;
    Ok(value
        .get("parameters")
        .cloned()
        .filter(|p| !p.is_null())
        .unwrap_or_else(|| Value::Object(Default::default())))
}

/// The signed paths accepted for an action call, primary (as the URL named it) first:
/// with and without `/api`, with and without a trailing slash, the product as named, by
/// slug and by id, the action as named, by slug and by raw name.
fn path_candidates(url_product: &str, url_action: &str, r: &Resolved) -> Vec<Scope> {
    let mut products = vec![
        url_product.to_owned(),
        r.product.slug.clone(),
        r.product.product_id.clone(),
    ];
    let mut actions = vec![
        url_action.to_owned(),
        r.action.slug.clone(),
        r.action.name.clone(),
    ];
    products.dedup();
    actions.dedup();
    let mut out: Vec<Scope> = Vec::new();
    for prefix in ["", "/api"] {
        for p in &products {
            for a in &actions {
                for slash in ["", "/"] {
                    let scope = Scope::method_path(
                        "POST",
                        format!("{prefix}/external/tools/{p}/actions/{a}/invoke{slash}"),
                    );
                    if !out.contains(&scope) {
                        out.push(scope);
                    }
                }
            }
        }
    }
    out
}

async fn credit_call(
    state: &AppState,
    ip: IpAddr,
    target: Target<'_>,
    body: &[u8],
    json: &JsonValue,
    deadline: &Deadline,
) -> ApiResult<Response> {
    check_signed_ip(state, ip).await?;
    let mut issues: Vec<ValidationIssue> = Vec::new();
    let envelope = Envelope::read(json, &mut issues);
    let Some(envelope) = envelope.filter(|_| issues.is_empty()) else {
        return Err(ApiError::validation(issues));
    };
    let mut parameters = body_parameters(body)?;
    if !parameters.is_object() {
        return Err(ApiError::invalid_field(
            &["body", "parameters"],
            "dict_type",
            "parameters must be a JSON object",
        ));
    }

    let (resolved, scopes, action) = {
        let mut conn = state.db.read().await?;
        match target {
            Target::Action { product, action } => {
                let r = catalog::resolve(&mut conn, product, action).await?;
                let scopes = path_candidates(product, action, &r);
                (r, scopes, SignedAction::ToolActionInvoke)
            }
            Target::Legacy { product } => {
                let p = catalog::find_product(&mut conn, product).await?;
                let actions = catalog::actions_of(&mut conn, &p.product_id).await?;
                let named = parameters
                    .get("action")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                let action = match (&named, actions.as_slice()) {
                    (Some(name), _) => catalog::pick_action(&p, &actions, name)?,
                    (None, [only]) => only.clone(),
                    (None, _) => {
                        return Err(ApiError::invalid_field(
                            &["body", "parameters", "action"],
                            "missing",
                            format!(
                                "name the action in parameters.action (one of: {})",
                                actions
                                    .iter()
                                    .map(|a| a.slug.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        ))
                    }
                };
                if named.is_some() {
                    if let Some(map) = parameters.as_object_mut() {
                        map.remove("action");
                    }
                }
                let vendor = catalog::vendor_of(&mut conn, &p).await?;
                let r = Resolved {
                    product: p,
                    action,
                    vendor,
                };
                (
                    r,
                    vec![Scope::action("invoke", product)],
                    SignedAction::Invoke,
                )
            }
        }
    };

    let signer = verify(state, ip, action.spec(), &scopes, json, envelope)
        .await
        .map_err(|e| {
            if e.code().as_str().starts_with("EXTERNAL_SIGNATURE_") {
                state.metrics.signature_failure(e.code().as_str());
            }
            // The canonical payload would echo `_credentials`.
            e.without_detail("payload_canonical")
        })?;

    let (tool_params, credentials, workflow_session) =
        schema::split_reserved(&parameters).map_err(|issue| ApiError::validation(vec![issue]))?;
    // What the tool gets is what was signed, number lexemes intact.
    let dropped: &[&str] = match target {
        Target::Legacy { .. } if tool_params.get("action").is_none() => &["action"],
        _ => &[],
    };
    let tool_params = runner::Params::verbatim(
        tool_params,
        &schema::sent_tool_parameters(json.get("parameters"), dropped),
    );
    schema::validate(&resolved.action.schema(), &tool_params.value)
        .map_err(ApiError::validation)?;
    if let Some(session_id) = &workflow_session {
        crate::workflows::sessions::check_attribution(
            &state.db,
            &signer.wallet.to_string(),
            session_id,
        )
        .await?;
    }
    let runner_spec = resolved.action.runner()?;
    let secret = vendor_secret(state, &resolved)?;

    let usage = NewUsage {
        usage_id: usage::new_usage_id(),
        product_id: resolved.product.product_id.clone(),
        product_slug: resolved.product.slug.clone(),
        action_slug: resolved.action.slug.clone(),
        mode: "credits",
        wallet_address: Some(signer.wallet.to_string()),
        payer_address: None,
        session_nonce: Some(signer.session_nonce.clone()),
        request_id: Some(signer.request_id.clone()),
        price_credits: resolved.action.price_credits,
        workflow_session_id: workflow_session.clone(),
        network: None,
        token: None,
        authorization_json: None,
        search_from_block: None,
        deadline_ms: now_ms() + deadline_margin_ms(&runner_spec),
        api_key_id: None,
        budget_id: None,
        owner_instance: Some(state.instance.id.to_string()),
    };
    let outcome = charged_call(
        state,
        Payer::Signed(&signer),
        ToolCall {
            resolved,
            runner: runner_spec,
            secret,
            parameters: tool_params,
            credentials,
        },
        &usage,
        deadline,
    )
    .await?;

    let balance = crate::ledger::balance(&mut state.db.read().await?, &signer.wallet).await?;
    if let Some(session_id) = &workflow_session {
        let record = crate::workflows::sessions::ToolCallRecord {
            usage_id: usage.usage_id.clone(),
            product_slug: usage.product_slug.clone(),
            action_slug: usage.action_slug.clone(),
            request_id: signer.request_id.clone(),
            succeeded: outcome.is_ok(),
            charged_credits: if outcome.is_ok() {
                usage.price_credits
            } else {
                0
            },
            response: outcome.as_ref().ok().cloned(),
            error: outcome.as_ref().err().map(|e| {
                let (code, message) = tool_error_parts(e);
                serde_json::json!({"error_code": code.as_str(), "message": message})
            }),
            at_ms: now_ms(),
        };
        if let Err(e) =
            crate::workflows::sessions::record_tool_call(&state.db, session_id, &record).await
        {
            tracing::warn!(usage_id = %usage.usage_id, error = %e, "could not record the tool call on its workflow session");
        }
    }
    match outcome {
        Ok(response) => {
            tracing::info!(usage_id = %usage.usage_id, wallet = %signer.wallet, price = usage.price_credits, "tool call charged");
            Ok(Json(InvokeResponse {
                success: true,
                response,
                warnings: Vec::new(),
                usage_id: usage.usage_id,
                product_slug: usage.product_slug,
                action_slug: usage.action_slug,
                charged_credits: usage.price_credits,
                price_credits: usage.price_credits,
                balance_credits: Some(balance),
                balance_usd: Some(credits_to_usd(balance)),
                credit_source: "credits".into(),
                workflow_session_id: workflow_session,
                x402: None,
            })
            .into_response())
        }
        Err(error) => {
            let (code, message) = tool_error_parts(&error);
            Err(ApiError::new(code, message.clone())
                .with_detail("reason", message)
                .with_detail("usage_id", usage.usage_id)
                .with_detail("charged_credits", 0)
                .with_detail("price_credits", usage.price_credits)
                .with_detail("balance_credits", balance))
        }
    }
}

/// Who pays a credit call, and what its hold transaction claims besides the hold.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Payer<'a> {
    /// A signed request: the signing wallet pays, and the request's replay record is
    /// claimed with the hold (a replay changes nothing).
    Signed(&'a Signer),
    /// An API-key + budget-key bearer (MCP): the price is reserved under the budget's cap
    /// with one conditional update in the hold's transaction (a call that does not fit runs
    /// nothing: 402 `BUDGET_EXHAUSTED`), and held on what the budget draws from, its wallet
    /// or (without one) the account. Voiding the hold gives the reservation back.
    Budget(&'a BudgetAuth),
}

/// What a hold transaction placed the hold on.
#[derive(Debug, Clone)]
enum Funding {
    Wallet(WalletAddress),
    Account(String),
}

impl Funding {
    fn holder(&self) -> usage::Holder<'_> {
        match self {
            Funding::Wallet(w) => usage::Holder::Wallet(w),
            Funding::Account(a) => usage::Holder::Account(a),
        }
    }
}

/// One transaction: claims what `payer` needs claimed (the replay record, the budget's
/// cap), holds the price and writes the usage record. Returns what holds the price.
async fn place_hold(state: &AppState, payer: Payer<'_>, usage: &NewUsage) -> ApiResult<Funding> {
    let mut tx = state.db.begin().await?;
    let funding = match payer {
        Payer::Signed(signer) => {
            let outcome = Some(Effect::Usage(&usage.usage_id));
            if !claim_request(&mut tx, signer, outcome).await? {
                return Err(replay_error(&mut tx, signer).await?);
            }
            Funding::Wallet(signer.wallet)
        }
        Payer::Budget(auth) => {
            match usage::reserve_budget(&mut tx, &auth.budget_id, usage.price_credits).await? {
                None => {
                    return Err(ApiError::new(
                        ErrorCode::BUDGET_EXHAUSTED,
                        format!(
                            "This call costs {} credits and the budget has less than that left under its cap",
                            usage.price_credits
                        ),
                    )
                    .with_detail("price_credits", usage.price_credits)
                    .with_detail("budget_id", auth.budget_id.clone()))
                }
                Some(Some(wallet)) => {
                    Funding::Wallet(wallet.parse().map_err(ApiError::internal)?)
                }
                Some(None) => Funding::Account(auth.account_id.clone()),
            }
        }
    };
    usage::hold(&mut tx, funding.holder(), usage).await?;
    tx.commit().await?;
    Ok(funding)
}

/// A resolved, validated tool call, ready to run.
#[derive(Debug)]
pub(crate) struct ToolCall {
    pub resolved: Resolved,
    pub runner: RunnerSpec,
    pub secret: Option<SecretString>,
    /// The tool's parameters (reserved `_…` fields removed), kept opaque.
    pub parameters: runner::Params,
    /// `_credentials`, passed to the vendor, never stored.
    pub credentials: Option<Value>,
}

/// The hold → run → post/void sequence of a credit-paid tool call, the one place where a
/// charge is made: signed credit invocations and MCP budget calls both go through it.
///
/// One transaction claims what `payer` needs claimed (a signed request's replay record; a
/// budget's cap, reserved atomically: 402 `BUDGET_EXHAUSTED`), holds the price on the
/// payer's wallet (or, for an account-funded budget, on the account) and writes the usage
/// record `usage` (402 `INSUFFICIENT_CREDITS`: nothing runs, nothing is consumed). The tool then runs in a task of its own (a client hanging up
/// cannot leave a hold half done), for at most what `deadline` leaves (less
/// [`POST_RESERVE`]); on success the hold is posted only if the answer can still be
/// delivered ([`Deadline::commit`]), on failure, timeout or a missed deadline it is voided
/// (released). Returns the tool's response, or why it produced none (nothing charged).
pub(crate) async fn charged_call(
    state: &AppState,
    payer: Payer<'_>,
    call: ToolCall,
    usage: &NewUsage,
    deadline: &Deadline,
) -> ApiResult<Result<Value, ToolError>> {
    // A heavy built-in is refused before anything is held when its payer has spent its
    // CPU budget; what it spends is charged once it ran.
    let heavy = runner::is_heavy(&call.runner).then(|| match payer {
        Payer::Signed(signer) => signer.wallet.to_string(),
        Payer::Budget(auth) => format!("account:{}", auth.account_id),
    });
    if let Some(key) = &heavy {
        check_heavy(state, key).await?;
    }
    let funding = place_hold(state, payer, usage).await?;
    state
        .metrics
        .ledger_posting(usage::kind::TOOL_HOLD, -usage.price_credits);

    // The tool runs and the hold is settled in a task of its own, so a client that hangs
    // up (or the request time limit) cannot leave the hold half done.
    let task_state = state.clone();
    let wallet = match &funding {
        Funding::Wallet(w) => Some(w.to_string()),
        Funding::Account(_) => None,
    };
    let usage_id = usage.usage_id.clone();
    let deadline = deadline.clone();
    let outcome = tokio::spawn(async move {
        let ToolCall {
            resolved,
            runner: runner_spec,
            secret,
            parameters: tool_params,
            credentials,
        } = call;
        let meter = runner::CpuMeter::default();
        let result = runner::run(
            &task_state.tools.http,
            &runner_spec,
            Call {
                product_slug: &resolved.product.slug,
                action_slug: &resolved.action.slug,
                usage_id: &usage_id,
                wallet_address: wallet.as_deref(),
                parameters: &tool_params,
                credentials: credentials.as_ref(),
                vendor_secret: secret.as_ref(),
                cpu: heavy.is_some().then_some(&meter),
            },
            deadline.remaining_after(POST_RESERVE),
        )
        .await;
        if let Some(key) = &heavy {
            task_state.limits.charge_heavy(key, meter.spent()).await;
        }
        // No charge without a delivered answer: past the request's deadline the hold is
        // voided, whatever the tool said.
        let result = result.and_then(|response| {
            if deadline.commit() {
                Ok(response)
            } else {
                Err(ToolError::Timeout)
            }
        });
        match result {
            Ok(response) => {
                if usage::post_hold(&task_state.db, &usage_id).await? {
                    Ok(Ok(response))
                } else {
                    Ok(Err(ToolError::Timeout))
                }
            }
            Err(error) => {
                let (code, message) = tool_error_parts(&error);
                usage::release_hold(&task_state.db, &usage_id, code.as_str(), &message).await?;
                Ok::<_, ApiError>(Err(error))
            }
        }
    })
    .await
    .map_err(|e| ApiError::internal(anyhow::anyhow!("tool task failed: {e}")))??;
    if outcome.is_err() {
        state
            .metrics
            .ledger_posting(usage::kind::TOOL_RELEASE, usage.price_credits);
    }
    Ok(outcome)
}

/// 429 (scope `heavy_cpu`) when `payer` has spent its CPU budget of heavy built-ins.
async fn check_heavy(state: &AppState, payer: &str) -> ApiResult<()> {
    state.limits.check_heavy(payer).await.inspect_err(|_| {
        state.metrics.rate_limited("heavy_cpu");
    })
}

/// What a credit call keeps of the request's time for posting its hold and answering.
pub(crate) const POST_RESERVE: Duration = Duration::from_secs(2);
/// What a direct x402 call keeps of the request's time for settling and answering.
pub(crate) const SETTLE_RESERVE: Duration = Duration::from_secs(8);

pub(crate) fn tool_error_parts(error: &ToolError) -> (ErrorCode, String) {
    match error {
        ToolError::Failed(reason) => (ErrorCode::TOOL_FAILED, format!("The tool failed: {reason}")),
        ToolError::Timeout => (
            ErrorCode::TOOL_TIMEOUT,
            "The tool did not answer in time".to_owned(),
        ),
    }
}

/// How long after its start a call is certainly over (the sweeper's deadline).
pub(crate) fn deadline_margin_ms(runner: &agentpmt_protocol::tools::RunnerSpec) -> i64 {
    let tool_ms = match runner {
        agentpmt_protocol::tools::RunnerSpec::Http { timeout_ms, .. } => timeout_ms
            .unwrap_or(runner::DEFAULT_TIMEOUT_MS)
            .min(runner::MAX_TIMEOUT_MS),
        agentpmt_protocol::tools::RunnerSpec::Builtin { .. } => 1_000,
    };
    i64::try_from(tool_ms).unwrap_or(i64::MAX / 4) + 60_000
}

/// The vendor's HMAC secret, opened for this call (never logged).
pub(crate) fn vendor_secret(state: &AppState, r: &Resolved) -> ApiResult<Option<SecretString>> {
    let Some(vendor) = &r.vendor else {
        return Ok(None);
    };
    if vendor.status != "active" {
        return Err(ApiError::new(
            ErrorCode::TOOL_NOT_FOUND,
            "The vendor of this product is inactive",
        ));
    }
    let Some(sealed) = &vendor.secret_sealed else {
        return Ok(None);
    };
    let key = state.tools.secrets.as_ref().ok_or_else(|| {
        ApiError::internal(anyhow::anyhow!(
            "vendor {} has a sealed secret but no secrets key is configured",
            vendor.slug
        ))
    })?;
    key.open(&vendor.vendor_id, sealed)
        .map(Some)
        .map_err(ApiError::internal)
}

// ---------------------------------------------------------------------------------------
// Direct x402.

/// The x402 offers for an action's price: every configured network and token, the default
/// network first.
fn offers(state: &AppState, price: i64) -> Vec<Offer> {
    let networks = &state.payments.networks;
    let mut chains: Vec<u64> = networks.networks.iter().map(|n| n.chain_id).collect();
    chains.sort_by_key(|c| (*c != networks.default_chain_id, *c));
    let mut out = Vec::new();
    for chain in chains {
        let Some(network) = networks.networks.iter().find(|n| n.chain_id == chain) else {
            continue;
        };
        for token in &network.tokens {
            if let Ok(offer) = networks.offer(price, Some(chain), Some(&token.symbol)) {
                out.push(offer);
            }
        }
    }
    out
}

fn required(offers: &[Offer], resource: &ResourceInfo, error: Option<String>) -> PaymentRequired {
    PaymentRequired {
        x402_version: X402_VERSION,
        error,
        resource: resource.clone(),
        accepts: offers.iter().map(|o| o.requirement.clone()).collect(),
        extensions: None,
    }
}

/// A refused x402 payment of a tool call: the error code, a fresh challenge that says why,
/// and the offer the payment named (for a failed settlement response). Each transport
/// presents it its own way: HTTP as the error envelope with the challenge in the body and in
/// `PAYMENT-REQUIRED`; MCP as a tool error carrying the challenge.
#[derive(Debug)]
pub(crate) struct PaymentRefused {
    pub code: ErrorCode,
    pub required: PaymentRequired,
    pub offer: Option<Offer>,
    pub refusal: Refusal,
    pub payer: String,
}

/// Why a direct x402 tool call produced no result.
#[derive(Debug)]
pub(crate) enum X402Error {
    /// The payment was refused (or settling it failed): answer with a fresh challenge.
    Refused(Box<PaymentRefused>),
    /// Any other error (a tool failure, an authorization in use, bad input, ...).
    Api(ApiError),
}

impl From<ApiError> for X402Error {
    fn from(e: ApiError) -> Self {
        X402Error::Api(e)
    }
}

impl From<sqlx::Error> for X402Error {
    fn from(e: sqlx::Error) -> Self {
        X402Error::Api(e.into())
    }
}

impl From<X402Error> for ApiError {
    fn from(e: X402Error) -> Self {
        match e {
            X402Error::Refused(r) => {
                payment_refused(r.code, &r.required, r.offer.as_ref(), &r.refusal, &r.payer)
            }
            X402Error::Api(e) => e,
        }
    }
}

/// A refused payment: the code, a fresh challenge with the reason, the offer and the payer.
fn refused(
    code: ErrorCode,
    offers: &[Offer],
    offer: Option<&Offer>,
    resource: &ResourceInfo,
    refusal: Refusal,
    payer: &str,
) -> X402Error {
    let required = required(
        offers,
        resource,
        Some(format!("{}: {}", refusal.reason, refusal.message)),
    );
    X402Error::Refused(Box::new(PaymentRefused {
        code,
        required,
        offer: offer.cloned(),
        refusal,
        payer: payer.to_owned(),
    }))
}

/// The offer a payment names: the `accepted` entry's network and asset (v2), or the v1
/// network; the default offer otherwise (verification then explains the mismatch).
fn offer_for<'a>(offers: &'a [Offer], payment: &DecodedPayment) -> Option<&'a Offer> {
    if let Some(accepted) = &payment.accepted {
        let network = accepted
            .get("network")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let asset = accepted
            .get("asset")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if let Some(o) = offers.iter().find(|o| {
            o.requirement.network == network && o.requirement.asset.eq_ignore_ascii_case(asset)
        }) {
            return Some(o);
        }
    } else if let Some(network) = &payment.network {
        if let Some(o) = offers.iter().find(|o| {
            o.requirement.network == *network
                || o.network.chain_id.to_string() == *network
                || network.eq_ignore_ascii_case(&o.network.name)
        }) {
            return Some(o);
        }
    }
    offers.first()
}

/// 404 `X402_NOT_AVAILABLE` unless the action may be paid per call with x402.
pub(crate) fn check_x402_enabled(resolved: &Resolved) -> ApiResult<()> {
    if resolved.action.x402_enabled == 0 {
        return Err(ApiError::new(
            ErrorCode::X402_NOT_AVAILABLE,
            format!(
                "{}/{} cannot be paid with x402; invoke it with credits",
                resolved.product.slug, resolved.action.slug
            ),
        )
        .with_detail("product_slug", resolved.product.slug.clone())
        .with_detail("action_slug", resolved.action.slug.clone()));
    }
    Ok(())
}

/// Direct x402 over HTTP: the body is the parameters, the payment comes in a header.
async fn x402_call(
    state: &AppState,
    product_ref: &str,
    action_ref: &str,
    body: &[u8],
    header: Option<&str>,
    deadline: &Deadline,
) -> ApiResult<Response> {
    let resolved = catalog::resolve(&mut state.db.read().await?, product_ref, action_ref).await?;
    check_x402_enabled(&resolved)?;
    let (parameters, sent): (Value, JsonValue) = if body.iter().all(u8::is_ascii_whitespace) {
        (Value::Object(Default::default()), JsonValue::empty_object())
    } else {
        let invalid = |e: String| ApiError::invalid_field(&["body"], "json_invalid", e);
        (
            serde_json::from_slice(body).map_err(|e| invalid(e.to_string()))?,
            agentpmt_protocol::canonical::parse(body).map_err(|e| invalid(e.to_string()))?,
        )
    };
    let (tool_params, credentials, workflow_session) = schema::split_reserved(&parameters)
        .map_err(|mut issue| {
            // Direct x402 bodies are the parameters themselves.
            issue.loc.retain(|l| *l != "parameters".into());
            ApiError::validation(vec![issue])
        })?;
    if workflow_session.is_some() {
        return Err(ApiError::invalid_field(
            &["body", agentpmt_protocol::tools::WORKFLOW_SESSION_PARAM],
            "value_error",
            "workflow sessions belong to wallets: attribute calls with a signed credit invocation",
        ));
    }
    let tool_params =
        runner::Params::verbatim(tool_params, &schema::sent_tool_parameters(Some(&sent), &[]));
    schema::validate(&resolved.action.schema(), &tool_params.value).map_err(|mut issues| {
        for issue in &mut issues {
            issue.loc.retain(|l| *l != "parameters".into());
        }
        ApiError::validation(issues)
    })?;
    let payment = header.map(decode_payment_header);
    match x402_paid_call(state, resolved, tool_params, credentials, payment, deadline).await? {
        X402Call::Challenge(required) => Ok(payment_required(&required)),
        X402Call::Ran(ran) => Ok(x402_response(*ran)),
    }
}

/// What a direct x402 call came to.
#[derive(Debug)]
pub(crate) enum X402Call {
    /// No payment was sent: the challenge for this action.
    Challenge(PaymentRequired),
    /// The tool ran: its payment is settled (with the output), or still open (the output is
    /// kept until it is final; repeating the request with the same payment fetches it).
    Ran(Box<X402Ran>),
}

/// A direct x402 call whose tool ran.
#[derive(Debug)]
pub(crate) struct X402Ran {
    pub usage_id: String,
    pub product_slug: String,
    pub action_slug: String,
    pub price_credits: i64,
    /// The tool's output when `settled`; `Value::Null` while the settlement is open.
    pub response: Value,
    /// True: the payment is on chain at the network's depth. False: not final yet (the
    /// reconciler finishes it; the output is delivered once it is).
    pub settled: bool,
    pub transaction: String,
    /// Why it is not final yet (when not settled).
    pub pending_reason: Option<String>,
    pub offer: Offer,
    pub payer: WalletAddress,
    pub resource_url: String,
}

/// The verification, claim, run and settle-after-success sequence of a direct x402 tool
/// call, whatever carried the payment (an HTTP header or MCP `_meta`): the one place where
/// a tool payment is settled. `payment` is the decoded payment (`None`: answer with the
/// challenge). `tool_params` were validated by the caller.
///
/// The output is delivered only with a payment the chain shows at depth. The tool gets what
/// `deadline` leaves less [`SETTLE_RESERVE`]; after it succeeded the call commits
/// ([`Deadline::commit`], else nothing is settled and the authorization is given back),
/// then settles within what is left. A settlement that is not final by then is answered as
/// pending and the output is kept on the usage record: the same payment sent again returns
/// it once the payment is final (or the refusal, if it failed).
pub(crate) async fn x402_paid_call(
    state: &AppState,
    resolved: Resolved,
    tool_params: runner::Params,
    credentials: Option<Value>,
    payment: Option<Result<DecodedPayment, x402::PaymentDecodeError>>,
    deadline: &Deadline,
) -> Result<X402Call, X402Error> {
    let price = resolved.action.price_credits;
    let offers = offers(state, price);
    let resource_url = format!(
        "{}/api/external/tools/{}/actions/{}/invoke",
        state.public_url, resolved.product.slug, resolved.action.slug
    );
    let resource = ResourceInfo {
        url: resource_url.clone(),
        description: Some(format!(
            "{} / {}: {}{}",
            resolved.product.name,
            resolved.action.name,
            resolved.action.description,
            if state.payments.networks.is_dev() {
                " - DEV NETWORK, no real payment"
            } else {
                ""
            }
        )),
        mime_type: Some("application/json".into()),
    };
    let Some(payment) = payment else {
        return Ok(X402Call::Challenge(required(
            &offers,
            &resource,
            Some("Payment required".into()),
        )));
    };
    let payment = payment.map_err(|e| {
        let code = if e.reason == "invalid_exact_evm_payload_signature" {
            ErrorCode::PAYMENT_INVALID
        } else {
            ErrorCode::PAYMENT_MALFORMED
        };
        refused(
            code,
            &offers,
            None,
            &resource,
            Refusal::new(e.reason, e.message),
            "",
        )
    })?;
    let offer = offer_for(&offers, &payment)
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("no payment network is configured")))?
        .clone();
    let from = payment.authorization.from.to_checksum(None);
    if let Some(url) = payment
        .resource
        .as_ref()
        .and_then(|r| r.get("url"))
        .and_then(Value::as_str)
    {
        // The action is identified by the path: instances behind a load balancer (or a
        // proxy) may see other hosts.
        if url_path(url) != url_path(&resource_url) {
            return Err(refused(
                ErrorCode::PAYMENT_INVALID,
                &offers,
                Some(&offer),
                &resource,
                Refusal::new(
                    "invalid_payment_requirements",
                    format!("the payment is for {url}, not for this action ({resource_url})"),
                ),
                &from,
            ));
        }
    }
    let now_secs = (now_ms() / 1000) as u64;
    let payer = pay_verify::verify(&payment, &offer, now_secs).map_err(|refusal| {
        refused(
            ErrorCode::PAYMENT_INVALID,
            &offers,
            Some(&offer),
            &resource,
            refusal,
            &from,
        )
    })?;
    let payer = WalletAddress::new(payer);
    let nonce_hex = format!("{:#x}", payment.authorization.nonce);
    let chain_id = offer.network.chain_id as i64;
    let asset = format!("{:#x}", offer.token.address);
    let holder = crate::payments::store::authorization_holder(
        &mut state.db.read().await?,
        chain_id,
        &asset,
        &payer.to_string(),
        &nonce_hex,
    )
    .await?;
    let context = PaidContext {
        offers: &offers,
        offer: &offer,
        resource: &resource,
        resource_url: &resource_url,
        payer,
    };
    if let Some((holder_id, status)) = holder {
        if status != "failed" {
            // The same payment again: the outcome of the call it paid for, if it is this one.
            return repeated_payment(state, &resolved, &holder_id, &status, &context, deadline)
                .await;
        }
    }
    let settler = state
        .payments
        .settler(offer.network.chain_id)
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("no settler for a configured chain")))?;
    let search_from = match settler.preflight(&offer, &payment).await {
        Ok(block) => block,
        Err(refusal) => {
            return Err(refused(
                ErrorCode::PAYMENT_INVALID,
                &offers,
                Some(&offer),
                &resource,
                refusal,
                &payer.to_string(),
            ))
        }
    };

    // Claim the authorization together with the usage record.
    let runner_spec = resolved.action.runner()?;
    // A heavy built-in is refused before the authorization is claimed when its payer has
    // spent its CPU budget (nothing is settled, the authorization stays usable).
    if runner::is_heavy(&runner_spec) {
        check_heavy(state, &payer.to_string()).await?;
    }
    let secret = vendor_secret(state, &resolved)?;
    let usage = NewUsage {
        usage_id: usage::new_usage_id(),
        product_id: resolved.product.product_id.clone(),
        product_slug: resolved.product.slug.clone(),
        action_slug: resolved.action.slug.clone(),
        mode: "x402",
        wallet_address: None,
        payer_address: Some(payer.to_string()),
        session_nonce: None,
        request_id: None,
        price_credits: price,
        workflow_session_id: None,
        network: Some(offer.requirement.network.clone()),
        token: Some(offer.token.symbol.clone()),
        authorization_json: Some(
            serde_json::to_string(&payment.to_payload(&offer.requirement))
                .map_err(ApiError::internal)?,
        ),
        search_from_block: i64::try_from(search_from).ok(),
        deadline_ms: now_ms()
            + deadline_margin_ms(&runner_spec)
            + state.payments.lease.as_millis() as i64,
        api_key_id: None,
        budget_id: None,
        owner_instance: Some(state.instance.id.to_string()),
    };
    {
        let mut tx = state.db.begin().await?;
        let claimed = crate::payments::store::claim_authorization(
            &mut tx,
            chain_id,
            &asset,
            &payer.to_string(),
            &nonce_hex,
            &usage.usage_id,
            now_ms(),
        )
        .await?;
        if !claimed {
            drop(tx);
            let (holder_id, status) = crate::payments::store::authorization_holder(
                &mut state.db.read().await?,
                chain_id,
                &asset,
                &payer.to_string(),
                &nonce_hex,
            )
            .await?
            .unwrap_or_default();
            return Err(in_use(&holder_id, &status).into());
        }
        usage::insert(&mut tx, &usage).await?;
        tx.commit().await?;
    }
    tracing::info!(usage_id = %usage.usage_id, payer = %payer, network = %offer.requirement.network, "x402 tool payment claimed");

    let task_state = state.clone();
    let usage_id = usage.usage_id.clone();
    let payer_text = payer.to_string();
    let task_offer = offer.clone();
    let task_deadline = deadline.clone();
    let heavy = runner::is_heavy(&runner_spec);
    let outcome = tokio::spawn(async move {
        let state = task_state;
        let deadline = task_deadline;
        let meter = runner::CpuMeter::default();
        let result = runner::run(
            &state.tools.http,
            &runner_spec,
            Call {
                product_slug: &resolved.product.slug,
                action_slug: &resolved.action.slug,
                usage_id: &usage_id,
                wallet_address: Some(&payer_text),
                parameters: &tool_params,
                credentials: credentials.as_ref(),
                vendor_secret: secret.as_ref(),
                cpu: heavy.then_some(&meter),
            },
            deadline.remaining_after(SETTLE_RESERVE),
        )
        .await;
        if heavy {
            state.limits.charge_heavy(&payer_text, meter.spent()).await;
        }
        // No settlement without a delivered answer: past the request's deadline nothing is
        // settled, whatever the tool said.
        let result = result.and_then(|response| {
            if deadline.commit() {
                Ok(response)
            } else {
                Err(ToolError::Timeout)
            }
        });
        let response = match result {
            Ok(response) => response,
            Err(error) => {
                // No result, no settlement: the authorization is given back unused.
                let (code, message) = tool_error_parts(&error);
                let mut tx = state.db.begin().await?;
                usage::finish(
                    &mut tx,
                    &usage_id,
                    usage::status::FAILED,
                    Some(code.as_str()),
                    Some(&message),
                )
                .await?;
                crate::payments::store::release_authorization(&mut tx, &usage_id).await?;
                tx.commit().await?;
                return Ok::<_, ApiError>(X402Outcome::ToolFailed(error));
            }
        };
        let output = serde_json::to_string(&response).map_err(ApiError::internal)?;
        {
            let mut conn = state.db.write().await?;
            usage::mark_settling(
                &mut conn,
                &usage_id,
                now_ms() + state.payments.lease.as_millis() as i64,
            )
            .await?;
            // Kept until the payment is final, so an open settlement never loses the output.
            usage::store_response(&mut conn, &usage_id, Some(&output)).await?;
        }
        let budget = deadline.remaining_after(Duration::from_secs(1));
        let settled = settle_payment(
            &state,
            &usage_id,
            &task_offer,
            &payment,
            None,
            Some(search_from),
            budget,
        )
        .await?;
        Ok(match settled {
            Settled::Yes(transaction) => X402Outcome::Settled {
                response,
                transaction,
            },
            Settled::No(refusal) => X402Outcome::SettlementFailed(refusal),
            Settled::Pending(reason) => X402Outcome::Pending { reason },
        })
    })
    .await
    .map_err(|e| ApiError::internal(anyhow::anyhow!("tool task failed: {e}")))??;

    match outcome {
        X402Outcome::Settled {
            response,
            transaction,
        } => Ok(context.ran(&usage, response, Ok(transaction))),
        X402Outcome::Pending { reason } => Ok(context.ran(&usage, Value::Null, Err(reason))),
        X402Outcome::ToolFailed(error) => {
            let (code, message) = tool_error_parts(&error);
            Err(ApiError::new(code, message.clone())
                .with_detail("reason", message)
                .with_detail("usage_id", usage.usage_id)
                .with_detail("settled", false)
                .into())
        }
        X402Outcome::SettlementFailed(refusal) => Err(context.settlement_failed(refusal)),
    }
}

/// What an x402 call's answers are built from.
#[derive(Debug)]
struct PaidContext<'a> {
    offers: &'a [Offer],
    offer: &'a Offer,
    resource: &'a ResourceInfo,
    resource_url: &'a str,
    payer: WalletAddress,
}

impl PaidContext<'_> {
    /// The tool ran: settled (`Ok(transaction)`, with the output) or not final yet
    /// (`Err(reason)`).
    fn ran(&self, usage: &NewUsage, response: Value, settled: Result<String, String>) -> X402Call {
        self.ran_parts(
            &usage.usage_id,
            &usage.product_slug,
            &usage.action_slug,
            usage.price_credits,
            response,
            settled,
        )
    }

    fn ran_parts(
        &self,
        usage_id: &str,
        product_slug: &str,
        action_slug: &str,
        price_credits: i64,
        response: Value,
        settled: Result<String, String>,
    ) -> X402Call {
        let (settled, transaction, pending_reason) = match settled {
            Ok(tx) => (true, tx, None),
            Err(reason) => (false, String::new(), Some(reason)),
        };
        X402Call::Ran(Box::new(X402Ran {
            usage_id: usage_id.to_owned(),
            product_slug: product_slug.to_owned(),
            action_slug: action_slug.to_owned(),
            price_credits,
            response,
            settled,
            transaction,
            pending_reason,
            offer: self.offer.clone(),
            payer: self.payer,
            resource_url: self.resource_url.to_owned(),
        }))
    }

    fn settlement_failed(&self, refusal: Refusal) -> X402Error {
        refused(
            ErrorCode::PAYMENT_SETTLEMENT_FAILED,
            self.offers,
            Some(self.offer),
            self.resource,
            refusal,
            &self.payer.to_string(),
        )
    }
}

/// The same payment sent again for a call it already paid (or is paying) for: the call's
/// outcome. Settled with its output kept → the output; failed → the refusal; open → settled
/// now from chain state when no one else holds it, else pending. Anything else (another
/// action, a purchase, a call whose output was already delivered) → 409.
async fn repeated_payment(
    state: &AppState,
    resolved: &Resolved,
    holder_id: &str,
    claim_status: &str,
    context: &PaidContext<'_>,
    deadline: &Deadline,
) -> Result<X402Call, X402Error> {
    let call = if holder_id.starts_with("use_") {
        usage::paid_call(&mut state.db.read().await?, holder_id).await?
    } else {
        None
    };
    let Some(call) = call.filter(|c| {
        c.product_slug == resolved.product.slug && c.action_slug == resolved.action.slug
    }) else {
        return Err(in_use(holder_id, claim_status).into());
    };
    let output = |call: &usage::PaidCall| -> Option<Value> {
        call.response_json
            .as_deref()
            .and_then(|json| serde_json::from_str(json).ok())
    };
    let ran = |call: &usage::PaidCall, response: Value, settled: Result<String, String>| {
        context.ran_parts(
            &call.usage_id,
            &call.product_slug,
            &call.action_slug,
            call.price_credits,
            response,
            settled,
        )
    };
    match call.status.as_str() {
        usage::status::SUCCEEDED => match output(&call) {
            Some(response) => Ok(ran(
                &call,
                response,
                Ok(call.transaction_hash.clone().unwrap_or_default()),
            )),
            None => Err(in_use(holder_id, claim_status).into()),
        },
        usage::status::SETTLEMENT_FAILED => Err(context.settlement_failed(Refusal::new(
            call.error_code.clone().unwrap_or_default(),
            call.error_message.clone().unwrap_or_default(),
        ))),
        usage::status::SETTLING | usage::status::SETTLEMENT_PENDING => {
            let until = now_ms() + state.payments.lease.as_millis() as i64;
            if !usage::take_settlement(
                &mut state.db.write().await?,
                &call.usage_id,
                now_ms(),
                until,
                Some(&state.instance.id),
            )
            .await?
            {
                // Another request (or instance) is settling it right now.
                return Err(in_use(holder_id, claim_status).into());
            }
            let budget = deadline.remaining_after(Duration::from_secs(1));
            match reconcile_one(state, &call.open(), budget).await? {
                Settled::Yes(tx) => {
                    let response = output(&call).unwrap_or(Value::Null);
                    Ok(ran(&call, response, Ok(tx)))
                }
                Settled::No(refusal) => Err(context.settlement_failed(refusal)),
                Settled::Pending(reason) => Ok(ran(&call, Value::Null, Err(reason))),
            }
        }
        _ => Err(in_use(holder_id, claim_status).into()),
    }
}

/// The HTTP answer of a direct x402 call that ran: 200 with the output, the x402 receipt and
/// `PAYMENT-RESPONSE` once settled; 202 without the output while the settlement is open.
fn x402_response(ran: X402Ran) -> Response {
    let X402Ran {
        usage_id,
        product_slug,
        action_slug,
        price_credits: price,
        response,
        settled,
        transaction,
        pending_reason,
        offer,
        payer,
        resource_url,
    } = ran;
    let payment_view = X402PaymentView {
        token: offer.token.symbol.clone(),
        asset: offer.token.address.to_checksum(None),
        amount_base_units: offer.amount.to_string(),
        amount_usd: credits_to_usd(price),
        payer_wallet_address: payer.to_string(),
        pay_to: offer.pay_to.to_checksum(None),
    };
    let receipt = X402Receipt {
        settled,
        transaction: transaction.clone(),
        network: offer.requirement.network.clone(),
        resource_url,
        settlement_recorded: settled,
        payment: payment_view,
    };
    let status = if settled {
        axum::http::StatusCode::OK
    } else {
        axum::http::StatusCode::ACCEPTED
    };
    let mut http = (
        status,
        Json(InvokeResponse {
            success: true,
            response,
            warnings: if settled {
                Vec::new()
            } else {
                vec![Value::String(format!(
                    "the payment is not final yet ({}); the tool's output is kept: repeat this request with the same payment header to get it once the payment is final (never sign a new payment)",
                    pending_reason.unwrap_or_default()
                ))]
            },
            usage_id,
            product_slug,
            action_slug,
            charged_credits: 0,
            price_credits: price,
            balance_credits: None,
            balance_usd: None,
            credit_source: "x402".into(),
            workflow_session_id: None,
            x402: Some(receipt),
        }),
    )
        .into_response();
    if settled {
        let header = settle_header(&offer, true, &transaction, &payer.to_string(), None);
        if let Ok(v) = HeaderValue::from_str(&header) {
            http.headers_mut()
                .insert(x402::HEADER_PAYMENT_RESPONSE, v.clone());
            http.headers_mut()
                .insert(x402::HEADER_X_PAYMENT_RESPONSE, v);
        }
    }
    http
}

/// How a tool payment's settlement ended.
#[derive(Debug)]
pub enum Settled {
    /// On chain at depth, claimed for this call: the transaction hash.
    Yes(String),
    /// It did not and cannot; the authorization was given back.
    No(Refusal),
    /// Not known yet (why); the reconciler will find out.
    Pending(String),
}

/// Settles (or, with `known`, records a reconciled outcome of) the x402 payment of a tool
/// call: a payment at depth is claimed once and the call succeeds; a failed one gives the
/// authorization back and drops the kept output; anything else stays open. The caller
/// holds the call's lease. `budget`: how long to wait for the chain.
pub async fn settle_payment(
    state: &AppState,
    usage_id: &str,
    offer: &Offer,
    payment: &DecodedPayment,
    known: Option<Outcome>,
    search_from: Option<u64>,
    budget: Duration,
) -> ApiResult<Settled> {
    let settler = state
        .payments
        .settler(offer.network.chain_id)
        .ok_or_else(|| {
            ApiError::internal(anyhow::anyhow!(
                "no settler for chain {}",
                offer.network.chain_id
            ))
        })?;
    let outcome = match known {
        Some(Outcome::Resubmit) | None => match settler.broadcast(offer, payment).await {
            Broadcast::Settled(paid) => Outcome::Settled(paid),
            Broadcast::Failed(refusal) => Outcome::Failed(refusal),
            Broadcast::Unknown(message) => Outcome::Unknown(message),
            Broadcast::Sent(tx) => {
                crate::db::macros::sql_execute!(
                    state.db.write().await?.conn(),
                    "UPDATE tool_usage SET transaction_hash = $2 WHERE usage_id = $1",
                    usage_id,
                    &tx
                )?;
                if state.payments.fault == Some(crate::payments::Fault::CrashAfterBroadcast) {
                    usage::set_deadline(&mut state.db.write().await?, usage_id, 0).await?;
                    return Err(ApiError::internal(anyhow::anyhow!(
                        "injected fault: crash after broadcast"
                    )));
                }
                settler
                    .confirm(offer, payment, &tx, search_from, budget)
                    .await
            }
        },
        Some(outcome) => outcome,
    };
    let mut tx = state.db.begin().await?;
    let outcome = match outcome {
        Outcome::Settled(paid) => {
            let claim = crate::payments::claims::NewClaim {
                chain_id: offer.network.chain_id as i64,
                paid: &paid,
                kind: crate::payments::claims::kind::TOOL_PAYMENT,
                holder_id: usage_id,
                asset: &format!("{:#x}", offer.token.address),
                payer: &format!("{:#x}", payment.authorization.from),
                pay_to: &format!("{:#x}", offer.pay_to),
                amount_base_units: &offer.amount.to_string(),
            };
            match crate::payments::claims::claim(&mut tx, &claim).await? {
                None => Outcome::Settled(paid),
                Some(other) => Outcome::Failed(Refusal::new(
                    "payment_already_used",
                    format!(
                        "this on-chain payment already paid for {} {}",
                        other.kind.replace('_', " "),
                        other.holder_id
                    ),
                )),
            }
        }
        other => other,
    };
    let settled = match outcome {
        Outcome::Settled(paid) => {
            usage::record_settlement(
                &mut tx,
                usage_id,
                usage::status::SUCCEEDED,
                Some(&paid.transaction),
                None,
            )
            .await?;
            crate::payments::store::settle_authorization(&mut tx, usage_id).await?;
            state.metrics.settlement("settled");
            tracing::info!(usage_id, transaction = %paid.transaction, log_index = paid.log_index,
                confirmations = paid.confirmations, "tool payment settled");
            Settled::Yes(paid.transaction)
        }
        Outcome::Failed(refusal) => {
            usage::record_settlement(
                &mut tx,
                usage_id,
                usage::status::SETTLEMENT_FAILED,
                None,
                Some((&refusal.reason, &refusal.message)),
            )
            .await?;
            usage::store_response(&mut tx, usage_id, None).await?;
            crate::payments::store::release_authorization(&mut tx, usage_id).await?;
            state.metrics.settlement("failed");
            tracing::info!(usage_id, reason = %refusal.reason, "tool payment failed");
            Settled::No(refusal)
        }
        Outcome::Unknown(message) => {
            crate::db::macros::sql_execute!(
                tx.conn(),
                "UPDATE tool_usage SET status = 'settlement_pending', error_code = 'settlement_pending', \
                 error_message = $2, deadline_ms = 0 WHERE usage_id = $1",
                usage_id,
                &message
            )?;
            state.metrics.settlement("pending");
            tracing::warn!(usage_id, %message, "tool payment outcome unknown; will reconcile");
            Settled::Pending(message)
        }
        Outcome::Resubmit => Settled::Pending("the payment will be submitted again".to_owned()),
    };
    tx.commit().await?;
    Ok(settled)
}

/// Reconciles one open tool payment whose lease this caller holds.
async fn reconcile_one(
    state: &AppState,
    row: &usage::OpenSettlement,
    budget: Duration,
) -> ApiResult<Settled> {
    let (offer, payment) = match stored_payment(state, row) {
        Ok(found) => found,
        Err(message) => {
            tracing::error!(usage_id = %row.usage_id, %message, "cannot reconcile tool payment");
            return Ok(Settled::Pending(message));
        }
    };
    let Some(settler) = state.payments.settler(offer.network.chain_id) else {
        return Ok(Settled::Pending(
            "the chain of this payment is no longer configured".to_owned(),
        ));
    };
    let search_from = row.search_from_block.and_then(|b| u64::try_from(b).ok());
    let outcome = settler
        .reconcile(
            &offer,
            &payment,
            row.transaction_hash.as_deref(),
            search_from,
            (now_ms() / 1000) as u64,
        )
        .await;
    settle_payment(
        state,
        &row.usage_id,
        &offer,
        &payment,
        Some(outcome),
        search_from,
        budget,
    )
    .await
}

/// Reconciles x402 tool payments left settling or pending past their lease (a crash, a
/// timeout, too few confirmations) from chain state, exactly like credit purchases: paid
/// at depth → succeeded; can no longer be paid → failed, authorization given back; unused
/// and still valid → submitted again (the payer never signs twice). Returns how many became
/// final.
pub async fn reconcile_payments(state: &AppState) -> ApiResult<usize> {
    let now = now_ms();
    let open = usage::open_settlements(&mut state.db.read().await?, now, 50).await?;
    let mut done = 0;
    let budget = Duration::from_secs(state.payments.networks.receipt_timeout_secs);
    for row in open {
        // A payment on a chain this instance cannot settle stays for an instance that can
        // (taking its lease would only delay that one).
        if let Ok((offer, _)) = stored_payment(state, &row) {
            if state.payments.settler(offer.network.chain_id).is_none() {
                continue;
            }
        }
        let until = now_ms() + state.payments.lease.as_millis() as i64;
        if !usage::take_settlement(
            &mut state.db.write().await?,
            &row.usage_id,
            now_ms(),
            until,
            Some(&state.instance.id),
        )
        .await?
        {
            continue;
        }
        match reconcile_one(state, &row, budget).await? {
            Settled::Yes(_) | Settled::No(_) => done += 1,
            Settled::Pending(_) => {}
        }
    }
    Ok(done)
}

/// The offer and payment a stored tool payment was made with (its `payTo` is the one the
/// payer authorized, whatever the configuration says now).
fn stored_payment(
    state: &AppState,
    row: &usage::OpenSettlement,
) -> Result<(Offer, DecodedPayment), String> {
    let chain_id = row
        .network
        .as_deref()
        .and_then(x402::parse_caip2)
        .ok_or("the usage record has no network")?;
    let mut offer =
        state
            .payments
            .networks
            .offer(row.price_credits, Some(chain_id), row.token.as_deref())?;
    let json = row
        .authorization_json
        .as_deref()
        .ok_or("the usage record has no stored payment")?;
    let value: Value = serde_json::from_str(json).map_err(|e| format!("stored payment: {e}"))?;
    let payment = x402::decode_payment_value(value).map_err(|e| e.to_string())?;
    offer.pay_to = payment.authorization.to;
    Ok((offer, payment))
}

#[cfg(test)]
mod tests {
    #[test]
    fn url_paths() {
        use super::url_path;
        assert_eq!(url_path("http://a:1/api/x/invoke"), "/api/x/invoke");
        assert_eq!(
            url_path("https://b.example/api/x/invoke/?q=1"),
            "/api/x/invoke"
        );
        assert_ne!(
            url_path("http://a/api/x/invoke"),
            url_path("http://a/api/y/invoke")
        );
        assert_eq!(url_path("http://a"), "");
    }
}

#[derive(Debug)]
enum X402Outcome {
    Settled {
        response: Value,
        transaction: String,
    },
    Pending {
        reason: String,
    },
    ToolFailed(ToolError),
    SettlementFailed(Refusal),
}

/// The path of an absolute URL (without query or fragment), trailing slash ignored.
fn url_path(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let path = rest.find('/').map_or("/", |i| &rest[i..]);
    let path = path.split(['?', '#']).next().unwrap_or(path);
    path.strip_suffix('/').unwrap_or(path)
}

fn in_use(holder: &str, status: &str) -> ApiError {
    let (code, message) = if status == "settled" {
        (
            ErrorCode::PAYMENT_ALREADY_USED,
            "This payment authorization has already been used",
        )
    } else {
        (
            ErrorCode::PAYMENT_IN_PROGRESS,
            "This payment authorization is being processed by another request",
        )
    };
    let mut err = ApiError::new(code, message).with_detail("status", status.to_owned());
    if holder.starts_with("use_") {
        err = err.with_detail("usage_id", holder.to_owned());
    } else if !holder.is_empty() {
        err = err.with_detail("purchase_id", holder.to_owned());
    }
    err
}
