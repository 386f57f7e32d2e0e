//! `tools/call`: a marketplace action run for an MCP client, paid from the caller's budget
//! or per call with x402.
//!
//! - A payment in `params._meta["x402/payment"]` (an x402 `PaymentPayload`): the x402 MCP
//!   transport, through the same verification, claim and settle-after-success sequence as
//!   a direct x402 invoke ([`x402_paid_call`]). Settled: the result carries
//!   `_meta["x402/payment-response"]` (the `SettleResponse`); refused or failed settlement:
//!   an `isError` result with a fresh `PaymentRequired` and no tool output.
//! - Otherwise, with an API-key + budget-key bearer: hold → run → post/void through
//!   [`charged_call`], the budget's cap reserved in the hold's transaction.
//! - Otherwise, an x402-enabled action: an `isError` result whose `structuredContent` (and
//!   `content[0].text`) is the `PaymentRequired` to sign; anything else: 401.
//!
//! Tool failures, timeouts, refused payments, an exhausted budget and invalid arguments are
//! `isError` results (`structuredContent.error_code`), so the model sees them; an unknown
//! tool is JSON-RPC `-32602`.

use super::{catalog, Caller, RpcError};
use crate::accounts::BudgetAuth;
use crate::deadline::Deadline;
use crate::error::ApiError;
use crate::state::AppState;
use crate::time::now_ms;
use crate::tools::catalog::Resolved;
use crate::tools::invoke::{
    charged_call, check_x402_enabled, deadline_margin_ms, tool_error_parts, vendor_secret,
    x402_paid_call, Payer, ToolCall, X402Call, X402Error, X402Ran,
};
use crate::tools::runner::{Params, ToolError};
use crate::tools::schema;
use crate::tools::usage::{self, NewUsage};
use agentpmt_protocol::tools::WORKFLOW_SESSION_PARAM;
use agentpmt_protocol::wire::ValidationIssue;
use agentpmt_protocol::x402::{self, SettleResponse};
use agentpmt_protocol::ErrorCode;
use rmcp::model::ErrorCode as RpcCode;
use serde_json::{json, Map, Value};

/// `_meta` key of the x402 payment of a call.
pub const META_PAYMENT: &str = "x402/payment";
/// `_meta` key of the settlement of a paid call.
pub const META_PAYMENT_RESPONSE: &str = "x402/payment-response";

/// Answers `tools/call`.
pub async fn call(
    state: &AppState,
    caller: &Caller,
    id: &Value,
    params: Value,
    deadline: &Deadline,
) -> Result<Value, RpcError> {
    let name = params
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| RpcError::invalid_params("params.name (the tool name) is required"))?;
    let arguments = match params.get("arguments") {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(Value::Object(map)) => Value::Object(map.clone()),
        Some(_) => {
            return Err(RpcError::invalid_params(
                "params.arguments must be an object",
            ))
        }
    };
    let payment = params
        .get("_meta")
        .and_then(|m| m.get(META_PAYMENT))
        .filter(|p| !p.is_null())
        .cloned();
    let Some(resolved) = catalog::resolve(state, name).await? else {
        return Err(RpcError::new(
            RpcCode::INVALID_PARAMS,
            format!("Unknown tool: {name}"),
            Some(json!({"error_code": ErrorCode::TOOL_NOT_FOUND.as_str()})),
        ));
    };
    let (tool_params, credentials) = match checked_arguments(&resolved, &arguments) {
        Ok(split) => split,
        Err(issues) => return Ok(tool_error(&ApiError::validation(issues))),
    };
    if let (Caller::Anonymous(ip), true) = (caller, resolved.action.x402_enabled != 0) {
        // As on the direct x402 route: per-IP limit for calls without an account.
        if let Err(e) = state.limits.check_ip(*ip).await {
            state.metrics.rate_limited("ip");
            return Ok(tool_error(&e));
        }
    }
    match (payment, caller) {
        (Some(payment), _) => {
            if let Err(e) = check_x402_enabled(&resolved) {
                return Ok(tool_error(&e));
            }
            let decoded = x402::decode_payment_value(payment);
            x402_call(
                state,
                resolved,
                tool_params,
                credentials,
                Some(decoded),
                deadline,
            )
            .await
        }
        (None, Caller::Budget(auth)) => {
            budget_call(
                state,
                auth,
                id,
                resolved,
                tool_params,
                credentials,
                deadline,
            )
            .await
        }
        (None, Caller::Anonymous(_)) => {
            if resolved.action.x402_enabled == 0 {
                return Err(RpcError::from_api(
                    ApiError::new(
                        ErrorCode::BEARER_UNAUTHORIZED,
                        "This tool is paid from a budget: send the API-key + budget-key bearer",
                    )
                    .with_detail("reason", "missing"),
                ));
            }
            x402_call(state, resolved, tool_params, credentials, None, deadline).await
        }
    }
}

/// The arguments split into the tool's parameters and `_credentials`, validated against the
/// action's schema.
fn checked_arguments(
    resolved: &Resolved,
    arguments: &Value,
) -> Result<(Value, Option<Value>), Vec<ValidationIssue>> {
    let (tool_params, credentials, workflow_session) =
        schema::split_reserved(arguments).map_err(|issue| vec![issue])?;
    if workflow_session.is_some() {
        return Err(vec![ValidationIssue {
            loc: vec!["arguments".into(), WORKFLOW_SESSION_PARAM.into()],
            msg: "workflow sessions belong to wallets: attribute calls with a signed credit invocation".into(),
            kind: "value_error".into(),
        }]);
    }
    schema::validate(&resolved.action.schema(), &tool_params)?;
    Ok((tool_params, credentials))
}

/// A budget-paid call: hold → run → post/void, the one shared sequence.
async fn budget_call(
    state: &AppState,
    auth: &BudgetAuth,
    id: &Value,
    resolved: Resolved,
    tool_params: Value,
    credentials: Option<Value>,
    deadline: &Deadline,
) -> Result<Value, RpcError> {
    let runner = resolved.action.runner().map_err(RpcError::from_api)?;
    let secret = match vendor_secret(state, &resolved) {
        Ok(secret) => secret,
        Err(e) if e.code().status() < 500 => return Ok(tool_error(&e)),
        Err(e) => return Err(RpcError::from_api(e)),
    };
    let usage = NewUsage {
        usage_id: usage::new_usage_id(),
        product_id: resolved.product.product_id.clone(),
        product_slug: resolved.product.slug.clone(),
        action_slug: resolved.action.slug.clone(),
        mode: usage::MODE_BUDGET,
        wallet_address: None,
        payer_address: None,
        session_nonce: None,
        request_id: Some(match id {
            Value::String(s) => s.chars().take(128).collect(),
            other => other.to_string(),
        }),
        price_credits: resolved.action.price_credits,
        workflow_session_id: None,
        network: None,
        token: None,
        authorization_json: None,
        search_from_block: None,
        deadline_ms: now_ms() + deadline_margin_ms(&runner),
        api_key_id: Some(auth.key_id.clone()),
        budget_id: Some(auth.budget_id.clone()),
        owner_instance: Some(state.instance.id.to_string()),
    };
    let call = ToolCall {
        resolved,
        runner,
        secret,
        // The JSON-RPC body is parsed as plain JSON: arguments reach the tool as parsed.
        parameters: Params::from_value(tool_params),
        credentials,
    };
    let outcome = match charged_call(state, Payer::Budget(auth), call, &usage, deadline).await {
        Ok(outcome) => outcome,
        Err(e) if e.code().status() < 500 => return Ok(tool_error(&e)),
        Err(e) => return Err(RpcError::from_api(e)),
    };
    let meta = json!({
        "agentpmt/usage_id": usage.usage_id,
        "agentpmt/budget_id": auth.budget_id,
        "agentpmt/price_credits": usage.price_credits,
    });
    match outcome {
        Ok(response) => {
            tracing::info!(usage_id = %usage.usage_id, budget_id = %auth.budget_id, price = usage.price_credits, "MCP tool call charged to a budget");
            let mut result = tool_output(response);
            result["_meta"] = meta;
            result["_meta"]["agentpmt/charged_credits"] = json!(usage.price_credits);
            Ok(result)
        }
        Err(error) => {
            let mut result = tool_failure(&error, &usage.usage_id);
            result["_meta"] = meta;
            result["_meta"]["agentpmt/charged_credits"] = json!(0);
            Ok(result)
        }
    }
}

/// A call paid per call with x402 (`payment: None`: answer with the challenge).
async fn x402_call(
    state: &AppState,
    resolved: Resolved,
    tool_params: Value,
    credentials: Option<Value>,
    payment: Option<Result<x402::DecodedPayment, x402::PaymentDecodeError>>,
    deadline: &Deadline,
) -> Result<Value, RpcError> {
    let tool_params = Params::from_value(tool_params);
    match x402_paid_call(state, resolved, tool_params, credentials, payment, deadline).await {
        Ok(X402Call::Challenge(required)) => {
            let required = serde_json::to_value(&required)
                .map_err(|e| RpcError::from_api(ApiError::internal(e)))?;
            Ok(payment_required(required, None))
        }
        Ok(X402Call::Ran(ran)) => Ok(paid_result(*ran)),
        Err(X402Error::Refused(refused)) => {
            let required = serde_json::to_value(&refused.required)
                .map_err(|e| RpcError::from_api(ApiError::internal(e)))?;
            let settle = refused.offer.as_ref().map(|offer| SettleResponse {
                success: false,
                transaction: String::new(),
                network: offer.requirement.network.clone(),
                payer: (!refused.payer.is_empty()).then(|| refused.payer.clone()),
                error_reason: Some(refused.refusal.reason.clone()),
                error_message: Some(refused.refusal.message.clone()),
            });
            let mut result = payment_required(required, settle);
            result["structuredContent"]["error_code"] = json!(refused.code.as_str());
            Ok(result)
        }
        Err(X402Error::Api(e)) if e.code().status() < 500 || is_tool_error(&e) => {
            Ok(tool_error(&e))
        }
        Err(X402Error::Api(e)) => Err(RpcError::from_api(e)),
    }
}

fn is_tool_error(e: &ApiError) -> bool {
    matches!(e.code(), ErrorCode::TOOL_FAILED | ErrorCode::TOOL_TIMEOUT)
}

/// The x402 MCP challenge: an `isError` result carrying the `PaymentRequired` object in
/// `structuredContent` and, as JSON text, in `content[0].text`.
fn payment_required(required: Value, settle: Option<SettleResponse>) -> Value {
    let mut result = json!({
        "content": [{"type": "text", "text": required.to_string()}],
        "structuredContent": required,
        "isError": true,
    });
    if let Some(settle) = settle {
        result["_meta"] = json!({ META_PAYMENT_RESPONSE: settle });
    }
    result
}

/// The result of a call whose x402 payment ran: the output with the settlement once the
/// payment is final; without the output while it is not (repeat the call with the same
/// payment to get it).
fn paid_result(ran: X402Ran) -> Value {
    let payer = ran.payer.to_string();
    if !ran.settled {
        let reason = ran.pending_reason.clone().unwrap_or_default();
        let body = json!({
            "error_code": "PAYMENT_PENDING",
            "message": format!("The payment is not final yet ({reason}); the tool's output is kept: repeat this call with the same payment (never sign a new one) to get it"),
            "usage_id": ran.usage_id,
        });
        return json!({
            "content": [{"type": "text", "text": body.to_string()}],
            "structuredContent": body,
            "isError": true,
        });
    }
    let settle = SettleResponse {
        success: true,
        transaction: ran.transaction.clone(),
        network: ran.offer.requirement.network.clone(),
        payer: Some(payer),
        error_reason: None,
        error_message: None,
    };
    let mut result = tool_output(ran.response);
    result["_meta"] = json!({
        META_PAYMENT_RESPONSE: settle,
        "agentpmt/usage_id": ran.usage_id,
        "agentpmt/price_credits": ran.price_credits,
    });
    result
}

/// A successful result: the output as JSON text and as `structuredContent` (an object:
/// outputs that are not are wrapped as `{"result": …}`).
fn tool_output(response: Value) -> Value {
    let text = match &response {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let structured = match response {
        Value::Object(map) => Value::Object(map),
        other => json!({ "result": other }),
    };
    json!({
        "content": [{"type": "text", "text": text}],
        "structuredContent": structured,
        "isError": false,
    })
}

/// An `isError` result for a tool that failed or timed out (nothing charged).
fn tool_failure(error: &ToolError, usage_id: &str) -> Value {
    let (code, message) = tool_error_parts(error);
    let body = json!({
        "error_code": code.as_str(),
        "message": message,
        "usage_id": usage_id,
        "charged_credits": 0,
    });
    json!({
        "content": [{"type": "text", "text": body.to_string()}],
        "structuredContent": body,
        "isError": true,
    })
}

/// An `isError` result for a call refused before or instead of running (invalid
/// arguments, an exhausted budget, a refused payment, a tool error answered by the shared
/// x402 path).
fn tool_error(e: &ApiError) -> Value {
    let mut body = json!({
        "error_code": e.code().as_str(),
        "message": e.message(),
    });
    if !e.details().is_empty() {
        body["details"] = Value::Object(e.details().clone());
    }
    if !e.validation_issues().is_empty() {
        body["detail"] = serde_json::to_value(e.validation_issues()).unwrap_or_default();
    }
    json!({
        "content": [{"type": "text", "text": body.to_string()}],
        "structuredContent": body,
        "isError": true,
    })
}
