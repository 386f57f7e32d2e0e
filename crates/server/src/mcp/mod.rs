//! The MCP endpoint: the marketplace's tools for MCP clients, paid from a budget (API-key +
//! budget-key bearer) or per call with x402.
//!
//! Endpoints: `POST /mcp` and `POST /mcp/` (MCP streamable HTTP); `GET`/`DELETE` answer 405
//! (there is no server-to-client stream and no session to end).
//!
//! Stateless: no `Mcp-Session-Id` is issued or needed, `notifications/initialized` is not
//! awaited, and every request gets exactly one JSON-RPC response in the HTTP response to
//! its POST: `application/json`, unless the client accepts only `text/event-stream`, which
//! gets the same response as one SSE `message` event. Notifications (and client responses)
//! get 202 with no body; a request never gets an empty body, errors included (401, 413,
//! 5xx and the server's time limit carry a JSON-RPC error object with `data.error_code`).
//!
//! Methods: `initialize`, `ping`, `tools/list` (cursor pagination), `tools/call`;
//! `resources/list`, `resources/templates/list` and `prompts/list` answer empty lists;
//! `notifications/*` are accepted and ignored. Tool names, schemas and prices:
//! [`catalog`]; how a call is paid: [`call`].

pub mod call;
pub mod catalog;

use crate::accounts::BudgetAuth;
use crate::deadline::Deadline;
use crate::error::ApiError;
use crate::extract::read_body;
use crate::ratelimit::ClientIp;
use crate::state::AppState;
use agentpmt_protocol::ErrorCode;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use rmcp::model::{ErrorCode as RpcCode, ErrorData};
use serde_json::{json, Value};
use std::time::Duration;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Protocol versions this server speaks, newest first.
pub const PROTOCOL_VERSIONS: &[&str] = &["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];

/// JSON-RPC error code of an authentication failure (HTTP 401).
pub const UNAUTHORIZED: RpcCode = RpcCode(-32001);
/// JSON-RPC error code of a request that ran out of the server's time (HTTP 503).
pub const TIMED_OUT: RpcCode = RpcCode(-32002);

/// What the MCP handler keeps of the request's time to answer in JSON-RPC before the
/// server-wide time limit would answer with the REST envelope.
const ANSWER_RESERVE: Duration = Duration::from_millis(750);

/// This area's routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(mcp))
        .route("/mcp", axum::routing::get(no_stream).delete(no_stream))
        .route(
            "/mcp/",
            axum::routing::post(mcp).get(no_stream).delete(no_stream),
        )
}

/// A JSON-RPC error answered with an HTTP status.
#[derive(Debug)]
pub struct RpcError {
    pub status: StatusCode,
    pub error: ErrorData,
}

impl RpcError {
    /// A 200 JSON-RPC error.
    pub fn new(code: RpcCode, message: impl Into<String>, data: Option<Value>) -> RpcError {
        RpcError {
            status: StatusCode::OK,
            error: ErrorData::new(code, message.into(), data),
        }
    }

    /// An invalid-params error naming what is wrong.
    pub fn invalid_params(message: impl Into<String>) -> RpcError {
        RpcError::new(RpcCode::INVALID_PARAMS, message, None)
    }

    /// A JSON-RPC error from an API error, with its HTTP status for 401 and 5xx (5xx
    /// messages stay opaque; the cause goes to the log).
    pub fn from_api(e: ApiError) -> RpcError {
        let status = StatusCode::from_u16(e.code().status()).unwrap_or(StatusCode::OK);
        let code = match status.as_u16() {
            401 => UNAUTHORIZED,
            503 if e.code() == ErrorCode::REQUEST_TIMEOUT => TIMED_OUT,
            500..=599 => RpcCode::INTERNAL_ERROR,
            _ => RpcCode::INVALID_REQUEST,
        };
        let message = if status.is_server_error() {
            e.log_cause();
            match e.code() {
                ErrorCode::REQUEST_TIMEOUT => "The request took too long".to_owned(),
                _ => "Internal error".to_owned(),
            }
        } else {
            e.message().to_owned()
        };
        let mut data = json!({"error_code": e.code().as_str()});
        if !status.is_server_error() && !e.details().is_empty() {
            data["details"] = Value::Object(e.details().clone());
        }
        RpcError {
            status: if status == StatusCode::UNAUTHORIZED || status.is_server_error() {
                status
            } else {
                StatusCode::OK
            },
            error: ErrorData::new(code, message, Some(data)),
        }
    }
}

/// Who is calling: a live API key + budget key, or nobody (x402 per call only, under the
/// per-IP limit of direct x402 invokes).
#[derive(Debug, Clone)]
pub enum Caller {
    Budget(BudgetAuth),
    Anonymous(std::net::IpAddr),
}

/// MCP over streamable HTTP (stateless; one JSON-RPC response per request).
///
/// Body: one JSON-RPC message or a batch. Auth: `Authorization: Bearer <base64 of
/// api_key:budget_key, or of {"api_key","budget_key"}>` or `X-API-Key` + `X-Budget-Key`
/// (budget-paid calls); without credentials only `initialize`, `ping`, `tools/list` and
/// x402 per-call payments work. Wrong or revoked keys: 401 with a JSON-RPC error body.
#[utoipa::path(
    post,
    path = "/mcp",
    tag = "mcp",
    params(
        ("MCP-Protocol-Version" = Option<String>, Header, description = "Negotiated protocol version (2024-11-05 to 2025-11-25)"),
        ("X-API-Key" = Option<String>, Header, description = "API key (with X-Budget-Key), instead of the bearer"),
        ("X-Budget-Key" = Option<String>, Header, description = "Budget key (with X-API-Key)"),
    ),
    request_body(content = serde_json::Value, description = "A JSON-RPC 2.0 request, notification or batch (initialize, ping, tools/list, tools/call, notifications/*)"),
    security((), ("budget_bearer" = [])),
    responses(
        (status = 200, description = "The JSON-RPC response (application/json, or one SSE message event for clients accepting only text/event-stream)"),
        (status = 202, description = "Notifications only: accepted, no body"),
        (status = 400, description = "Unsupported MCP-Protocol-Version (JSON-RPC error body)"),
        (status = 401, description = "Wrong, revoked or (for budget-paid calls) missing API-key + budget-key bearer (JSON-RPC error body)"),
        (status = 413, description = "Body too large (JSON-RPC error body)"),
        (status = 503, description = "The server's time limit (JSON-RPC error body)"),
    )
)]
#[tracing::instrument(skip_all)]
pub async fn mcp(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    deadline: Deadline,
    req: Request,
) -> Response {
    let sse = wants_sse(req.headers());
    let (mut parts, body) = req.into_parts();
    if let Some(version) = parts
        .headers
        .get("mcp-protocol-version")
        .and_then(|v| v.to_str().ok())
    {
        if !PROTOCOL_VERSIONS.contains(&version.trim()) {
            let error = RpcError {
                status: StatusCode::BAD_REQUEST,
                error: ErrorData::new(
                    RpcCode::INVALID_REQUEST,
                    format!(
                        "Unsupported MCP-Protocol-Version {version}; supported: {}",
                        PROTOCOL_VERSIONS.join(", ")
                    ),
                    None,
                ),
            };
            return reply(error.status, error_message(Value::Null, error.error), sse);
        }
    }
    let caller = match authenticate(&mut parts, &state, ip).await {
        Ok(caller) => caller,
        Err(e) => {
            let e = RpcError::from_api(e);
            return reply(e.status, error_message(Value::Null, e.error), sse);
        }
    };
    let body = match read_body(Request::from_parts(parts, body), &state).await {
        Ok(body) => body,
        Err(e) => {
            let mut e = RpcError::from_api(e);
            e.status = StatusCode::PAYLOAD_TOO_LARGE;
            return reply(e.status, error_message(Value::Null, e.error), sse);
        }
    };
    let parsed: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            let error = ErrorData::new(RpcCode::PARSE_ERROR, format!("Parse error: {e}"), None);
            return reply(StatusCode::OK, error_message(Value::Null, error), sse);
        }
    };
    let work = answer(&state, &caller, parsed, &deadline);
    tokio::pin!(work);
    let limit = deadline
        .at()
        .checked_sub(ANSWER_RESERVE)
        .unwrap_or_else(|| deadline.at());
    tokio::select! {
        answered = &mut work => match answered {
            Some((status, body)) => reply(status, body, sse),
            None => StatusCode::ACCEPTED.into_response(),
        },
        _ = tokio::time::sleep_until(limit) => {
            // Close the commit gate ourselves, so the answer is JSON-RPC: nothing is charged
            // past it (a running tool call voids its hold). A call that already committed
            // (posting its hold, settling its payment) is waited for.
            if deadline.expire() {
                let error = ErrorData::new(
                    TIMED_OUT,
                    "The server's time limit for this request passed; nothing was charged",
                    Some(json!({"error_code": ErrorCode::REQUEST_TIMEOUT.as_str()})),
                );
                reply(StatusCode::SERVICE_UNAVAILABLE, error_message(Value::Null, error), sse)
            } else {
                match work.await {
                    Some((status, body)) => reply(status, body, sse),
                    None => StatusCode::ACCEPTED.into_response(),
                }
            }
        }
    }
}

/// `GET`/`DELETE /mcp`: 405, no stream and no session in this stateless server.
async fn no_stream() -> Response {
    let error = ErrorData::new(
        RpcCode::INVALID_REQUEST,
        "This MCP server is stateless: POST JSON-RPC messages to /mcp (no SSE stream, no session)",
        None,
    );
    let mut response = reply(
        StatusCode::METHOD_NOT_ALLOWED,
        error_message(Value::Null, error),
        false,
    );
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("POST"));
    response
}

/// The caller: credentials presented → they must be live (else 401); none → anonymous.
async fn authenticate(
    parts: &mut axum::http::request::Parts,
    state: &AppState,
    ip: std::net::IpAddr,
) -> Result<Caller, ApiError> {
    let presented = ["authorization", "x-api-key", "x-budget-key"]
        .iter()
        .any(|h| parts.headers.contains_key(*h));
    if !presented {
        return Ok(Caller::Anonymous(ip));
    }
    BudgetAuth::from_request_parts(parts, state)
        .await
        .map(Caller::Budget)
}

/// True when the client accepts `text/event-stream` but not JSON.
fn wants_sse(headers: &HeaderMap) -> bool {
    let accept = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",")
        .to_ascii_lowercase();
    accept.contains("text/event-stream")
        && !accept.contains("application/json")
        && !accept.contains("*/*")
}

/// The HTTP response carrying `body` (a JSON-RPC response or batch).
fn reply(status: StatusCode, body: Value, sse: bool) -> Response {
    let text = body.to_string();
    let mut response = if sse {
        (
            status,
            [(header::CONTENT_TYPE, "text/event-stream")],
            format!("event: message\ndata: {text}\n\n"),
        )
            .into_response()
    } else {
        (status, [(header::CONTENT_TYPE, "application/json")], text).into_response()
    };
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn error_message(id: Value, error: ErrorData) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": error})
}

fn result_message(id: Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

/// Answers a message or a batch: `None` when there is nothing to answer (notifications and
/// client responses only).
async fn answer(
    state: &AppState,
    caller: &Caller,
    parsed: Value,
    deadline: &Deadline,
) -> Option<(StatusCode, Value)> {
    match parsed {
        Value::Array(batch) if batch.is_empty() => Some((
            StatusCode::OK,
            error_message(
                Value::Null,
                ErrorData::new(RpcCode::INVALID_REQUEST, "Empty batch", None),
            ),
        )),
        Value::Array(batch) => {
            // One at a time: each call of a batch is paid and limited like a single one.
            let mut out = Vec::new();
            for message in batch {
                if let Some((_, response)) = one(state, caller, message, deadline).await {
                    out.push(response);
                }
            }
            (!out.is_empty()).then_some((StatusCode::OK, Value::Array(out)))
        }
        message => one(state, caller, message, deadline).await,
    }
}

/// Answers one message.
async fn one(
    state: &AppState,
    caller: &Caller,
    message: Value,
    deadline: &Deadline,
) -> Option<(StatusCode, Value)> {
    let Some(object) = message.as_object() else {
        return Some((
            StatusCode::OK,
            error_message(
                Value::Null,
                ErrorData::new(
                    RpcCode::INVALID_REQUEST,
                    "A JSON-RPC message is an object",
                    None,
                ),
            ),
        ));
    };
    let id = object.get("id").cloned();
    let method = object.get("method").and_then(Value::as_str);
    let (Some(id), Some(method)) = (id, method) else {
        if object.contains_key("method")
            || object.contains_key("result")
            || object.contains_key("error")
        {
            // A notification or a client's response: accepted, nothing to answer.
            return None;
        }
        return Some((
            StatusCode::OK,
            error_message(
                object.get("id").cloned().unwrap_or(Value::Null),
                ErrorData::new(RpcCode::INVALID_REQUEST, "Not a JSON-RPC 2.0 message", None),
            ),
        ));
    };
    if !(id.is_string() || id.is_i64() || id.is_u64()) {
        return Some((
            StatusCode::OK,
            error_message(
                Value::Null,
                ErrorData::new(
                    RpcCode::INVALID_REQUEST,
                    "The id must be a string or an integer",
                    None,
                ),
            ),
        ));
    }
    let params = object.get("params").cloned().unwrap_or(Value::Null);
    let outcome = dispatch(state, caller, method, &id, params, deadline).await;
    Some(match outcome {
        Ok(result) => (StatusCode::OK, result_message(id, result)),
        Err(e) => (e.status, error_message(id, e.error)),
    })
}

async fn dispatch(
    state: &AppState,
    caller: &Caller,
    method: &str,
    id: &Value,
    params: Value,
    deadline: &Deadline,
) -> Result<Value, RpcError> {
    match method {
        "initialize" => Ok(initialize(state, &params)),
        "ping" => Ok(json!({})),
        "tools/list" => catalog::list(state, &params).await,
        "tools/call" => call::call(state, caller, id, params, deadline).await,
        "resources/list" => Ok(json!({"resources": []})),
        "resources/templates/list" => Ok(json!({"resourceTemplates": []})),
        "prompts/list" => Ok(json!({"prompts": []})),
        "logging/setLevel" => Ok(json!({})),
        other => Err(RpcError::new(
            RpcCode::METHOD_NOT_FOUND,
            format!("Method not found: {other}"),
            None,
        )),
    }
}

/// The `initialize` result: the client's version when supported, else the newest.
fn initialize(state: &AppState, params: &Value) -> Value {
    let asked = params
        .get("protocolVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let version = PROTOCOL_VERSIONS
        .iter()
        .find(|v| **v == asked)
        .unwrap_or(&PROTOCOL_VERSIONS[0]);
    json!({
        "protocolVersion": version,
        "capabilities": {"tools": {"listChanged": false}},
        "serverInfo": {
            "name": "agentpmt",
            "title": "AgentPMT tool marketplace",
            "version": env!("CARGO_PKG_VERSION"),
            "websiteUrl": state.public_url.as_ref(),
        },
        "instructions": "Each tool is a marketplace action; its price (credits, 100 = 1 USD) is in its description and _meta. \
            Calls are paid from the budget of the API-key + budget-key bearer; without one, x402-enabled tools answer with an \
            x402 PaymentRequired (isError result): retry the call with the signed payment in params._meta[\"x402/payment\"].",
    })
}
