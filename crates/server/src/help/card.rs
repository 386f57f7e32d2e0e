//! `GET /.well-known/agent.json`: what an agent needs to use this server, in one document.
//!
//! Built from the running configuration (base URL, limits), the signing table
//! ([`agentpmt_protocol::message::ACTIONS`]), the credit price and the OpenAPI document.
//! Absolute URLs in the card are all fetchable with GET; other endpoints are listed as
//! `{method, path}`.

use crate::state::AppState;
use agentpmt_protocol::message::{PayloadRule, ProductRule, ScopeRule, ACTIONS, MESSAGE_HEADER};
use agentpmt_protocol::wire::CREDITS_PER_USD;
use agentpmt_protocol::ENVELOPE_FIELDS;
use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

/// Credits are sold in packs of this size.
pub const CREDIT_PACK: i64 = 500;

/// The accepted payment networks and assets, from the server's payment configuration.
pub fn payment_networks(state: &AppState) -> Vec<Value> {
    let networks = &state.payments.networks;
    networks
        .networks
        .iter()
        .map(|n| {
            json!({
                "name": n.name,
                "chain_id": n.chain_id,
                "network": n.caip2(),
                "default": n.chain_id == networks.default_chain_id,
                "settlement": n.settlement.as_str(),
                "confirmations": n.confirmations,
                "pay_to": networks.pay_to.to_checksum(None),
                "assets": n.tokens.iter().map(|t| json!({
                    "symbol": t.symbol,
                    "address": t.address.to_checksum(None),
                    "decimals": t.decimals,
                    "eip712": {"name": t.eip712_name, "version": t.eip712_version},
                })).collect::<Vec<_>>(),
            })
        })
        .collect()
}

fn describe_payload(rule: PayloadRule) -> String {
    let list = |fields: &[&str]| {
        if fields.is_empty() {
            "{}".to_owned()
        } else {
            format!("{{{}}}", fields.join(", "))
        }
    };
    match rule {
        PayloadRule::Empty => "empty payload: line".to_owned(),
        PayloadRule::Fields(fields) => format!("sha256 of canonical JSON of {}", list(fields)),
        PayloadRule::FieldsOrEmpty(fields) => format!(
            "sha256 of canonical JSON of {} when present, else an empty payload: line",
            list(fields)
        ),
        PayloadRule::Field(name) => {
            format!("sha256 of canonical JSON of the `{name}` object (absent: {{}})")
        }
        PayloadRule::BodyWithoutEnvelope => {
            "sha256 of canonical JSON of the body without the envelope fields".to_owned()
        }
    }
}

/// The signing table as the card shows it.
fn actions() -> Vec<Value> {
    ACTIONS
        .iter()
        .map(|spec| {
            let (scope, lines) = match spec.scope {
                ScopeRule::Action(product) => (
                    "action",
                    json!({
                        "action": spec.name,
                        "product": match product {
                            ProductRule::Dash => "-".to_owned(),
                            ProductRule::PathParam(p) => format!("{{{p}}}"),
                        },
                    }),
                ),
                ScopeRule::MethodPath { path } => {
                    ("method_path", json!({"method": spec.method, "path": path}))
                }
            };
            json!({
                "name": spec.name,
                "method": spec.method,
                "path": spec.route,
                "scope": scope,
                "scope_lines": lines,
                "payload": describe_payload(spec.payload),
            })
        })
        .collect()
}

/// Every operation of the OpenAPI document as `{method, path, summary}`.
pub fn endpoints(document: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    if let Some(paths) = document.get("paths").and_then(Value::as_object) {
        for (path, item) in paths {
            let Some(item) = item.as_object() else {
                continue;
            };
            for (method, operation) in item {
                if !matches!(method.as_str(), "get" | "post" | "put" | "patch" | "delete") {
                    continue;
                }
                out.push(json!({
                    "method": method.to_uppercase(),
                    "path": path,
                    "summary": operation.get("summary").cloned().unwrap_or(Value::Null),
                    "tags": operation.get("tags").cloned().unwrap_or(json!([])),
                }));
            }
        }
    }
    out
}

/// The card for the server behind `state`.
pub fn build(state: &AppState) -> Value {
    let base = state.public_url.as_ref();
    let config = &state.config;
    json!({
        "schema_version": "1",
        "name": "AgentPMT External Agent API",
        "description": "Wallet-authenticated HTTP API for autonomous AI agents: anonymous wallet \
            identities (AgentAddress), wallet sessions, EIP-191 signed requests, credits bought \
            with x402 payments, a tool marketplace (pay with credits or per call with x402), \
            workflows and BYO-agent workflow schedules. No API keys required for agents.",
        "version": env!("CARGO_PKG_VERSION"),
        "base_url": base,
        "links": {
            "self": format!("{base}/.well-known/agent.json"),
            "openapi": format!("{base}/openapi.json"),
            "docs": format!("{base}/docs"),
            "health": format!("{base}/healthz"),
            "ready": format!("{base}/readyz"),
            "tools": format!("{base}/api/external/tools"),
        },
        "auth": {
            "scheme": "wallet_signature",
            "signature": "EIP-191 personal_sign over the UTF-8 message, 0x + 130 hex digits (r, s, v with v in 27/28)",
            "session": {"method": "POST", "path": "/api/external/auth/session",
                        "body": {"wallet_address": "0x..."},
                        "lifetime_seconds": config.session_ttl_secs},
            "envelope_fields": ENVELOPE_FIELDS,
            "message_format": {
                "lines": [
                    MESSAGE_HEADER,
                    "wallet:<lowercase wallet address>",
                    "session:<session_nonce>",
                    "request:<request_id>",
                    "action:<action>  (or method:<HTTP method> for method/path actions)",
                    "product:<product or ->  (or path:<signed path>)",
                    "payload:<sha256 hex of canonical JSON, or empty>",
                ],
                "separator": "\n",
                "trailing_newline": false,
                "canonical_json": "sorted keys at every depth, ',' and ':' separators, no whitespace, UTF-8 (the ASCII-escaped form is accepted too)",
            },
            "actions": actions(),
            "replays": {
                "rule": "request_id is unique per session: a reused one is 409 EXTERNAL_SIGNATURE_REQUEST_REPLAY and changes nothing",
                "identical_body": "a copy of an accepted request with the identical body (a lost answer sent again) carries details.original: what became of the first copy",
                "original_fields": ["status", "state", "charged_credits", "error_code", "usage_id", "reservation_id"],
                "states": ["in_progress", "succeeded", "failed", "released"],
                "other_body": "another body under a used request_id: the plain 409, without details.original",
                "lost_answer": "send the identical body again (same request_id and signature), never a new request_id: it either runs (the first never arrived) or answers details.original; ask again while state is in_progress",
            },
            "budget_bearer": {
                "used_by": ["/api/external/workflow-schedules/*", "/mcp"],
                "forms": [
                    "Authorization: Bearer base64(\"<api_key>:<budget_key>\")",
                    "Authorization: Bearer base64 or base64url of {\"api_key\": ..., \"budget_key\": ...}",
                    "X-API-Key: <api_key> and X-Budget-Key: <budget_key>",
                ],
            },
            "job_workflow_token": {
                "used_by": ["/api/external/jobs/{jobId}/workflow/*"],
                "header": "X-Job-Workflow-Token: Bearer <workflow_access.access_token>",
                "issued_by": "POST /api/external/jobs/{jobId}/reserve (workflow_creation jobs)",
            },
        },
        "jobs": {
            "reservation_seconds": config.job_reservation_secs,
            "job_types": ["social_share", "workflow_creation", "general"],
            "tracked_link_parameters": ["utm_source=<platform>", "utm_medium=agent_social",
                                        "utm_campaign=agent_job_<jobId>", "utm_content=<tracking code>"],
            "verification_statuses": ["queued", "running", "verified", "rejected", "transient_error", "needs_human"],
            "platforms": crate::jobs::PostHosts::parse(&config.job_post_hosts).unwrap_or_default().platforms(),
        },
        "identity": {
            "agentaddress": {
                "method": "POST",
                "path": "/api/external/agentaddress",
                "body": {},
                "derivation_path": crate::identity::wallet::DERIVATION_PATH,
                "rate_limit": {"limit": config.agentaddress_limit,
                               "window_seconds": config.agentaddress_window_secs,
                               "per": "source IP address"},
            },
        },
        "payment": {
            "protocol": "x402",
            "x402_version": 2,
            "scheme": "exact",
            "headers": {"challenge": "PAYMENT-REQUIRED", "payment": "PAYMENT-SIGNATURE",
                        "receipt": "PAYMENT-RESPONSE", "legacy": ["PAYMENT", "X-PAYMENT"]},
            "credits_per_usd": CREDITS_PER_USD,
            "credit_pack_size": CREDIT_PACK,
            "usdc_base_units_per_credit": 1_000_000 / CREDITS_PER_USD,
            "purchase": {"method": "POST", "path": "/api/external/credits/purchase"},
            "paid_when": "a successful receipt at the network's confirmations carries the exact AuthorizationUsed and Transfer(from, payTo, amount) logs; until then purchases answer 202 pending (repeat the same request, never sign again)",
            "networks": payment_networks(state),
        },
        "tools": {
            "list": {"method": "GET", "path": "/api/external/tools",
                     "query": ["query", "categories", "page", "page_size"],
                     "page_size": {"default": agentpmt_protocol::tools::DEFAULT_PAGE_SIZE,
                                   "max": agentpmt_protocol::tools::MAX_PAGE_SIZE}},
            "invoke": {"method": "POST",
                       "path": "/api/external/tools/{productSlug}/actions/{actionSlug}/invoke",
                       "credits": "signed: method:POST, path:/external/tools/{productSlug}/actions/{actionSlug}/invoke, payload = sha256(canonical(parameters))",
                       "x402": "body = the parameters; answer the 402 challenge with PAYMENT-SIGNATURE (actions with x402_enabled); 202 = the tool ran but its payment is not final yet: repeat with the same payment header to get the output",
                       "reserved_parameters": [agentpmt_protocol::tools::CREDENTIALS_PARAM,
                                               agentpmt_protocol::tools::WORKFLOW_SESSION_PARAM]},
        },
        "mcp": {
            "method": "POST",
            "path": "/mcp",
            "transport": "streamable-http (stateless: no session, one JSON response per request)",
            "protocol_versions": crate::mcp::PROTOCOL_VERSIONS,
            "methods": ["initialize", "ping", "tools/list", "tools/call", "notifications/*"],
            "tool_names": "<productSlug>__<actionSlug> (^[a-zA-Z0-9_-]{1,64}$; longer ones end in _<12 hex digits>)",
            "auth": "the budget_bearer: calls are paid from the budget (its wallet, or the account), under its cap",
            "x402": {
                "challenge": "tools/call without a bearer on an x402-enabled tool: isError result, structuredContent = PaymentRequired (also in content[0].text)",
                "payment": "params._meta[\"x402/payment\"] = the PaymentPayload",
                "receipt": "result._meta[\"x402/payment-response\"] = the SettleResponse",
            },
            "stdio_relay": "agentpmt mcp (AGENTPMT_SERVER, AGENTPMT_BEARER_TOKEN)",
            "client_config": {"mcpServers": {"agentpmt": {
                "type": "http",
                "url": "<base_url>/mcp",
                "headers": {"Authorization": "Bearer <base64 of api_key:budget_key>"},
            }}},
        },
        "endpoints": endpoints(&state.openapi_json()),
        "contact": {
            "agent_help": {"method": "POST", "path": "/api/external/agent-help",
                           "body": {"message": "...", "request_id": "optional", "error_code": "optional", "context": {}}},
            "docs": format!("{base}/docs"),
        },
    })
}

/// The discovery card of this server.
#[utoipa::path(
    get,
    path = "/.well-known/agent.json",
    tag = "meta",
    responses((status = 200, description = "Discovery card: auth scheme and signing table, payment networks, endpoints, links", content_type = "application/json", body = serde_json::Value))
)]
pub async fn agent_card(State(state): State<AppState>) -> Json<Value> {
    Json(build(&state))
}

/// The server root: what this is and where to read on.
#[utoipa::path(
    get,
    path = "/",
    tag = "meta",
    responses((status = 200, description = "Name of the service and links to the discovery card, the docs and the OpenAPI document", content_type = "application/json", body = serde_json::Value))
)]
pub async fn index(State(state): State<AppState>) -> Json<Value> {
    let base = state.public_url.as_ref();
    Json(json!({
        "name": "AgentPMT External Agent API",
        "version": env!("CARGO_PKG_VERSION"),
        "agent_card": format!("{base}/.well-known/agent.json"),
        "docs": format!("{base}/docs"),
        "openapi": format!("{base}/openapi.json"),
    }))
}
