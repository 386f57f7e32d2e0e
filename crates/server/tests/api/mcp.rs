//! The MCP endpoint: the behaviours of existing MCP clients (one test each), auth in every
//! bearer form, budget-paid calls (charging, cap under concurrency, voided holds, usage by
//! API key and budget), the x402 MCP transport (dev network, and the official `@x402/evm`
//! signer on anvil), tool list pagination over 10^4 tools, and the official TypeScript SDK
//! client (`tests/mcp`).

use crate::backend_tests;
use crate::chain::{repo_root, Chain, GAS_KEY};
use crate::helpers::*;
use crate::purchase::now_secs;
use crate::schedules::{tenant, Tenant};
use crate::tools::{register_stub, spawn_tools, spawn_vendor, SECRETS_KEY};
use agentpmt_protocol::x402::{sign_authorization, PaymentRequirements, ResourceInfo};
use agentpmt_protocol::PrivateKey;
use alloy::primitives::U256;
use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine as _;
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

backend_tests!(
    mcp_clients_sending_protocol_version_2025_03_26_on_every_request,
    mcp_clients_sending_no_accept_header_get_json,
    mcp_clients_without_session_or_initialized_notification,
    mcp_clients_parsing_event_streams_get_one_event,
    mcp_one_request_at_a_time_without_client_timeout_is_bounded_by_the_server,
    mcp_errors_are_json_rpc_bodies_never_empty,
    mcp_notifications_are_accepted_and_ignored,
    mcp_every_bearer_form_and_revocation,
    mcp_tools_have_names_schemas_and_prices,
    mcp_budget_call_charges_and_records_usage,
    mcp_budget_cap_holds_under_concurrency,
    mcp_hold_voided_on_tool_failure_and_timeout,
    mcp_x402_payment_on_the_dev_network,
    mcp_x402_payment_for_one_tool_is_refused_on_another,
    mcp_x402_official_signer_on_anvil,
    mcp_x402_official_signer_on_the_dev_network,
    mcp_tools_list_pages_through_ten_thousand_tools,
    mcp_official_typescript_sdk_client,
);

const OK_TOOL: &str = "stub__ok-action";
const FAIL_TOOL: &str = "stub__fail";
const SLOW_TOOL: &str = "stub__slow";

/// A tenant whose budget has `cap` credits (account-funded, or drawing from `wallet`).
async fn tenant_with_cap(app: &TestApp, cap: i64, wallet: Option<&str>) -> Tenant {
    let mut t = tenant(app).await;
    let mut body = json!({"name": "MCP", "cap_credits": cap});
    if let Some(w) = wallet {
        body["wallet_address"] = json!(w);
    }
    let (status, budget) = app
        .admin(
            Method::POST,
            &format!("/api/admin/accounts/{}/budgets", t.account_id),
            Some(&body),
        )
        .await;
    assert_eq!(status, 201, "{budget}");
    t.budget_id = budget["budget"]["budget_id"].as_str().unwrap().to_owned();
    t.budget_key = budget["budget_key"].as_str().unwrap().to_owned();
    t
}

/// An MCP POST with `headers` (none added but content-type); status, headers, raw body.
async fn post_raw(
    app: &TestApp,
    path: &str,
    headers: &[(&str, String)],
    body: &Value,
) -> (StatusCode, HeaderMap, String) {
    let mut request = app
        .http
        .post(app.url(path))
        .header("content-type", "application/json")
        .body(body.to_string());
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    (status, headers, response.text().await.unwrap())
}

/// The headers an existing client sends: the 2025-03-26 version and the bearer, nothing else.
fn plain(t: &Tenant) -> Vec<(&'static str, String)> {
    vec![
        ("mcp-protocol-version", "2025-03-26".to_owned()),
        ("authorization", format!("Bearer {}", t.bearer())),
    ]
}

fn request(id: i64, method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

/// A JSON-RPC call as a plain client makes it; the parsed response (asserted JSON).
async fn rpc(
    app: &TestApp,
    headers: &[(&str, String)],
    method: &str,
    params: Value,
) -> (StatusCode, Value) {
    let (status, h, text) = post_raw(app, "/mcp", headers, &request(7, method, params)).await;
    assert!(
        h["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json"),
        "{h:?}"
    );
    let body: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text:?}"));
    assert_eq!(body["jsonrpc"], "2.0", "{body}");
    (status, body)
}

async fn call_tool(app: &TestApp, headers: &[(&str, String)], name: &str, args: Value) -> Value {
    let (status, body) = rpc(
        app,
        headers,
        "tools/call",
        json!({"name": name, "arguments": args}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["result"].clone()
}

async fn budget_spent(app: &TestApp, t: &Tenant) -> i64 {
    app.scalar(&format!(
        "SELECT spent_credits FROM budgets WHERE budget_id = '{}'",
        t.budget_id
    ))
    .await
}

async fn stub_app(backend: Backend) -> (TestApp, std::sync::Arc<crate::tools::Seen>) {
    let app = spawn_tools(backend).await;
    let (vendor, seen) = spawn_vendor().await;
    register_stub(&app, &vendor).await;
    (app, seen)
}

async fn mcp_clients_sending_protocol_version_2025_03_26_on_every_request(backend: Backend) {
    let (app, _) = stub_app(backend).await;
    let t = tenant_with_cap(&app, 100, None).await;
    let headers = plain(&t);
    let (status, init) = rpc(
        &app,
        &headers,
        "initialize",
        json!({"protocolVersion": "2025-03-26", "capabilities": {}, "clientInfo": {"name": "old", "version": "1"}}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(init["id"], 7);
    assert_eq!(init["result"]["protocolVersion"], "2025-03-26", "{init}");
    assert!(init["result"]["capabilities"]["tools"].is_object());
    let (_, list) = rpc(&app, &headers, "tools/list", json!({})).await;
    assert!(list["result"]["tools"].as_array().unwrap().len() >= 4);
    let result = call_tool(&app, &headers, OK_TOOL, json!({"q": "hi"})).await;
    assert_eq!(result["isError"], false, "{result}");
    // An unknown version on the header is refused with a JSON-RPC body.
    let (status, _, text) = post_raw(
        &app,
        "/mcp",
        &[("mcp-protocol-version", "1999-01-01".to_owned())],
        &request(1, "ping", json!({})),
    )
    .await;
    assert_eq!(status, 400);
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["error"]["code"], -32600, "{body}");
}

async fn mcp_clients_sending_no_accept_header_get_json(backend: Backend) {
    let (app, _) = stub_app(backend).await;
    let t = tenant_with_cap(&app, 100, None).await;
    // reqwest sends `Accept: */*` unless told otherwise: send none at all.
    let raw = tokio::net::TcpStream::connect(app.base_url.trim_start_matches("http://"))
        .await
        .unwrap();
    let body = request(
        1,
        "tools/call",
        json!({"name": OK_TOOL, "arguments": {"q": "raw"}}),
    )
    .to_string();
    let head = format!(
        "POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nMCP-Protocol-Version: 2025-03-26\r\n\
         Authorization: Bearer {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        t.bearer(),
        body.len()
    );
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut raw = raw;
    raw.write_all(head.as_bytes()).await.unwrap();
    let mut reply = String::new();
    raw.read_to_string(&mut reply).await.unwrap();
    let (head, body) = reply.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    let body: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(body["result"]["isError"], false, "{body}");
    assert_eq!(
        body["result"]["structuredContent"]["echo"],
        json!({"q": "raw"})
    );
}

async fn mcp_clients_without_session_or_initialized_notification(backend: Backend) {
    let (app, _) = stub_app(backend).await;
    let t = tenant_with_cap(&app, 100, None).await;
    let headers = plain(&t);
    // No initialize at all, no session id, no notifications/initialized: calls just work.
    let (status, h, text) = post_raw(
        &app,
        "/mcp",
        &headers,
        &request(
            1,
            "tools/call",
            json!({"name": OK_TOOL, "arguments": {"q": "a"}}),
        ),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert!(!h.contains_key("mcp-session-id"), "stateless: {h:?}");
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["result"]["isError"], false, "{body}");
    // initialize issues no session either, and the next request needs none.
    let (_, h, _) = post_raw(
        &app,
        "/mcp/",
        &headers,
        &request(2, "initialize", json!({"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "c", "version": "1"}})),
    )
    .await;
    assert!(!h.contains_key("mcp-session-id"));
    let (_, ping) = rpc(&app, &headers, "ping", json!({})).await;
    assert_eq!(ping["result"], json!({}));
    // A session id some client made up is ignored.
    let mut with_session = headers.clone();
    with_session.push(("mcp-session-id", "made-up".to_owned()));
    let (_, ping) = rpc(&app, &with_session, "ping", json!({})).await;
    assert_eq!(ping["result"], json!({}));
}

async fn mcp_clients_parsing_event_streams_get_one_event(backend: Backend) {
    let (app, _) = stub_app(backend).await;
    let t = tenant_with_cap(&app, 100, None).await;
    let mut headers = plain(&t);
    headers.push(("accept", "text/event-stream".to_owned()));
    let (status, h, text) = post_raw(
        &app,
        "/mcp",
        &headers,
        &request(
            3,
            "tools/call",
            json!({"name": OK_TOOL, "arguments": {"q": "sse"}}),
        ),
    )
    .await;
    assert_eq!(status, 200);
    assert!(h["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    // Join every data: line and parse once, as those clients do.
    let joined: String = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(str::trim_start)
        .collect::<Vec<_>>()
        .join("\n");
    let body: Value = serde_json::from_str(&joined).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(body["id"], 3);
    assert_eq!(
        body["result"]["structuredContent"]["echo"],
        json!({"q": "sse"})
    );
    // Accepting both gets plain JSON.
    headers.pop();
    headers.push(("accept", "application/json, text/event-stream".to_owned()));
    let (_, h, text) = post_raw(&app, "/mcp", &headers, &request(4, "ping", json!({}))).await;
    assert!(h["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap()["id"], 4);
}

async fn mcp_one_request_at_a_time_without_client_timeout_is_bounded_by_the_server(
    backend: Backend,
) {
    let (app, _) = stub_app(backend).await;
    // The slow vendor sleeps 3 s; its action's limit is 300 ms. The client (no timeout)
    // gets a JSON-RPC answer well within the server's limit, and is charged nothing.
    let t = tenant_with_cap(&app, 100, None).await;
    let started = Instant::now();
    let result = call_tool(&app, &plain(&t), SLOW_TOOL, json!({"q": "zzz"})).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(result["isError"], true, "{result}");
    assert_eq!(result["structuredContent"]["error_code"], "TOOL_TIMEOUT");
    assert_eq!(budget_spent(&app, &t).await, 0);
    // One at a time: the next request is served normally.
    let result = call_tool(&app, &plain(&t), OK_TOOL, json!({"q": "next"})).await;
    assert_eq!(result["isError"], false, "{result}");
}

async fn mcp_errors_are_json_rpc_bodies_never_empty(backend: Backend) {
    let (app, _) = stub_app(backend).await;
    let check = |status: StatusCode, text: &str, want_status: u16, want_code: i64| {
        assert_eq!(status, want_status, "{text}");
        assert!(!text.is_empty());
        let body: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert_eq!(body["jsonrpc"], "2.0", "{body}");
        assert_eq!(body["error"]["code"], want_code, "{body}");
        body
    };
    // A wrong bearer: 401 with a JSON-RPC error.
    let bad = [("authorization", "Bearer bm9wZTpub3Bl".to_owned())];
    let (status, _, text) =
        post_raw(&app, "/mcp", &bad, &request(1, "tools/list", json!({}))).await;
    let body = check(status, &text, 401, -32001);
    assert_eq!(body["error"]["data"]["error_code"], "BEARER_UNAUTHORIZED");
    // A budget-paid tool without any bearer: 401 too.
    let (status, _, text) = post_raw(
        &app,
        "/mcp",
        &[],
        &request(
            1,
            "tools/call",
            json!({"name": "stub__text", "arguments": {"q": "x"}}),
        ),
    )
    .await;
    let body = check(status, &text, 401, -32001);
    assert_eq!(body["id"], 1);
    // Parse error, unknown method, unknown tool, bad params.
    let response = app
        .http
        .post(app.url("/mcp"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    let status = response.status();
    check(status, &response.text().await.unwrap(), 200, -32700);
    let (status, _, text) =
        post_raw(&app, "/mcp", &[], &request(2, "nope/nothing", json!({}))).await;
    check(status, &text, 200, -32601);
    let (status, _, text) = post_raw(
        &app,
        "/mcp",
        &[],
        &request(3, "tools/call", json!({"name": "no__such"})),
    )
    .await;
    check(status, &text, 200, -32602);
    let (status, _, text) = post_raw(
        &app,
        "/mcp",
        &[],
        &request(4, "tools/list", json!({"cursor": "%%%"})),
    )
    .await;
    check(status, &text, 200, -32602);
    // A body over the limit: 413, JSON-RPC.
    let huge = json!({"jsonrpc": "2.0", "id": 5, "method": "ping", "params": {"pad": "x".repeat(200_000)}});
    let (status, _, text) = post_raw(&app, "/mcp", &[], &huge).await;
    check(status, &text, 413, -32600);
    // GET (no stream in a stateless server): 405 with a JSON-RPC body.
    let response = app.http.get(app.url("/mcp/")).send().await.unwrap();
    let status = response.status();
    check(status, &response.text().await.unwrap(), 405, -32600);
}

async fn mcp_notifications_are_accepted_and_ignored(backend: Backend) {
    let (app, _) = stub_app(backend).await;
    let t = tenant_with_cap(&app, 100, None).await;
    let headers = plain(&t);
    for method in [
        "notifications/initialized",
        "notifications/cancelled",
        "notifications/whatever",
    ] {
        let (status, _, text) = post_raw(
            &app,
            "/mcp",
            &headers,
            &json!({"jsonrpc": "2.0", "method": method, "params": {}}),
        )
        .await;
        assert_eq!(status, 202, "{method}: {text}");
    }
    // A batch: the notification is dropped, the requests answered in order.
    let (status, _, text) = post_raw(
        &app,
        "/mcp",
        &headers,
        &json!([
            {"jsonrpc": "2.0", "method": "notifications/initialized"},
            request(1, "ping", json!({})),
            request(2, "tools/call", json!({"name": OK_TOOL, "arguments": {"q": "b"}})),
        ]),
    )
    .await;
    assert_eq!(status, 200);
    let body: Value = serde_json::from_str(&text).unwrap();
    let items = body.as_array().unwrap();
    assert_eq!(items.len(), 2, "{body}");
    assert_eq!(items[0]["id"], 1);
    assert_eq!(items[1]["result"]["isError"], false, "{body}");
}

async fn mcp_every_bearer_form_and_revocation(backend: Backend) {
    let (app, _) = stub_app(backend).await;
    let t = tenant_with_cap(&app, 100, None).await;
    let json_pair = format!(
        r#"{{"api_key":"{}","budget_key":"{}"}}"#,
        t.api_key, t.budget_key
    );
    let forms: Vec<Vec<(&str, String)>> = vec![
        vec![("authorization", format!("Bearer {}", t.bearer()))],
        vec![(
            "authorization",
            format!("Bearer {}", URL_SAFE_NO_PAD.encode(&json_pair)),
        )],
        vec![(
            "authorization",
            format!("Bearer {}", URL_SAFE.encode(&json_pair)),
        )],
        vec![(
            "authorization",
            format!("Bearer {}", STANDARD.encode(&json_pair)),
        )],
        vec![
            ("x-api-key", t.api_key.clone()),
            ("x-budget-key", t.budget_key.clone()),
        ],
    ];
    for (i, headers) in forms.iter().enumerate() {
        let result = call_tool(&app, headers, OK_TOOL, json!({"q": format!("form {i}")})).await;
        assert_eq!(result["isError"], false, "form {i}: {result}");
    }
    assert_eq!(budget_spent(&app, &t).await, 3 * forms.len() as i64);
    // Revoked: refused at once, on every method.
    let (status, _) = app
        .admin(
            Method::POST,
            &format!("/api/admin/api-keys/{}/revoke", t.key_id),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let (status, _, text) = post_raw(&app, "/mcp", &forms[0], &request(1, "ping", json!({}))).await;
    assert_eq!(status, 401, "{text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        body["error"]["data"]["details"]["reason"],
        "api_key_revoked"
    );
    let (status, _, _) = post_raw(
        &app,
        "/mcp",
        &forms[4],
        &request(
            1,
            "tools/call",
            json!({"name": OK_TOOL, "arguments": {"q": "late"}}),
        ),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(budget_spent(&app, &t).await, 3 * forms.len() as i64);
}

async fn mcp_tools_have_names_schemas_and_prices(backend: Backend) {
    let (app, _) = stub_app(backend).await;
    let (_, list) = rpc(&app, &[], "tools/list", json!({})).await;
    let tools = list["result"]["tools"].as_array().unwrap().clone();
    let name_re = |n: &str| {
        (1..=64).contains(&n.len())
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    let mut names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert!(names.iter().all(|n| name_re(n)), "{names:?}");
    let count = names.len();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), count, "names are unique");
    let ok = tools
        .iter()
        .find(|t| t["name"] == OK_TOOL)
        .expect("stub tool listed");
    assert_eq!(ok["title"], "Stub tool / ok_action");
    assert!(
        ok["description"].as_str().unwrap().contains("3 credits"),
        "{ok}"
    );
    assert!(ok["annotations"]["title"]
        .as_str()
        .unwrap()
        .contains("3 credits"));
    assert_eq!(ok["_meta"]["agentpmt/price_credits"], 3);
    assert_eq!(ok["_meta"]["agentpmt/product"], "stub");
    assert_eq!(ok["_meta"]["agentpmt/action"], "ok-action");
    assert_eq!(ok["_meta"]["agentpmt/x402_enabled"], true);
    let schema = &ok["inputSchema"];
    assert_eq!(schema["type"], "object");
    assert_eq!(schema["properties"]["q"]["type"], "string", "{schema}");
    assert_eq!(schema["required"], json!(["q"]));
    // The discovery card describes the endpoint with a client configuration.
    let (status, card) = app.get("/.well-known/agent.json").await;
    assert_eq!(status, 200);
    assert_eq!(card["mcp"]["path"], "/mcp", "{card}");
    assert_eq!(
        card["mcp"]["client_config"]["mcpServers"]["agentpmt"]["url"],
        "<base_url>/mcp"
    );
    assert!(card["auth"]["budget_bearer"]["used_by"]
        .as_array()
        .unwrap()
        .contains(&json!("/mcp")));
    // The schema is enforced: a bad argument is a tool error the model can read.
    let t = tenant_with_cap(&app, 100, None).await;
    let result = call_tool(&app, &plain(&t), OK_TOOL, json!({"n": 99})).await;
    assert_eq!(result["isError"], true);
    assert_eq!(
        result["structuredContent"]["error_code"], "VALIDATION_ERROR",
        "{result}"
    );
    assert_eq!(budget_spent(&app, &t).await, 0);
}

async fn mcp_budget_call_charges_and_records_usage(backend: Backend) {
    let (app, seen) = stub_app(backend).await;
    let wallet = PrivateKey::random().address();
    app.adjust(&wallet, 10).await;
    let t = tenant_with_cap(&app, 100, Some(&wallet.to_string())).await;
    let result = call_tool(
        &app,
        &plain(&t),
        OK_TOOL,
        json!({"q": "paid", "_credentials": {"token": "s3cret"}}),
    )
    .await;
    assert_eq!(result["isError"], false, "{result}");
    assert_eq!(
        result["structuredContent"]["echo"],
        json!({"q": "paid"}),
        "credentials stripped"
    );
    assert_eq!(
        result["structuredContent"]["had_credentials"], true,
        "credentials passed to the vendor"
    );
    let text: Value = serde_json::from_str(result["content"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(text, result["structuredContent"]);
    assert_eq!(result["_meta"]["agentpmt/charged_credits"], 3);
    let usage_id = result["_meta"]["agentpmt/usage_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(seen.hits.load(Ordering::SeqCst), 1);
    // The wallet paid, the budget counts it.
    assert_eq!(
        app.scalar(&format!(
            "SELECT balance_credits FROM wallets WHERE address = '{wallet}'"
        ))
        .await,
        7
    );
    assert_eq!(budget_spent(&app, &t).await, 3);
    // Usage by API key and budget in the operator's usage endpoints.
    let (status, records) = app
        .admin(
            Method::GET,
            &format!("/api/admin/tools/usage/records?budget={}", t.budget_id),
            None,
        )
        .await;
    assert_eq!(status, 200, "{records}");
    let records = records.as_array().unwrap();
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["usage_id"], json!(usage_id));
    assert_eq!(records[0]["mode"], "budget");
    assert_eq!(records[0]["api_key_id"], json!(t.key_id));
    assert_eq!(records[0]["budget_id"], json!(t.budget_id));
    assert_eq!(records[0]["charged_credits"], 3);
    assert!(!records[0].to_string().contains("s3cret"));
    let (_, by_key) = app
        .admin(
            Method::GET,
            &format!("/api/admin/tools/usage/records?api_key={}", t.key_id),
            None,
        )
        .await;
    assert_eq!(by_key.as_array().unwrap().len(), 1);
    for (group, key) in [("budget", &t.budget_id), ("api_key", &t.key_id)] {
        let (status, report) = app
            .admin(
                Method::GET,
                &format!("/api/admin/tools/usage?group_by={group}"),
                None,
            )
            .await;
        assert_eq!(status, 200, "{report}");
        let row = report["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["key"] == json!(key))
            .unwrap_or_else(|| panic!("{report}"))
            .clone();
        assert_eq!(row["calls"], 1);
        assert_eq!(row["charged_credits"], 3);
    }
    // The wallet's 7 credits do not cover three more calls: the third is refused by the
    // wallet, not the budget, and charges nothing.
    for _ in 0..2 {
        let r = call_tool(&app, &plain(&t), OK_TOOL, json!({"q": "more"})).await;
        assert_eq!(r["isError"], false, "{r}");
    }
    let r = call_tool(&app, &plain(&t), OK_TOOL, json!({"q": "broke"})).await;
    assert_eq!(r["isError"], true);
    assert_eq!(
        r["structuredContent"]["error_code"], "INSUFFICIENT_CREDITS",
        "{r}"
    );
    assert_eq!(budget_spent(&app, &t).await, 9);
}

async fn mcp_budget_cap_holds_under_concurrency(backend: Backend) {
    let (app, seen) = stub_app(backend).await;
    // Room for exactly 57 calls of 3 credits.
    let t = tenant_with_cap(&app, 57 * 3, None).await;
    let headers = plain(&t);
    let calls = (0..200).map(|i| {
        let app = &app;
        let headers = &headers;
        async move {
            let (status, _, text) = post_raw(
                app,
                "/mcp",
                headers,
                &request(
                    i,
                    "tools/call",
                    json!({"name": OK_TOOL, "arguments": {"q": format!("c{i}")}}),
                ),
            )
            .await;
            assert_eq!(status, 200, "{text}");
            let body: Value = serde_json::from_str(&text).unwrap();
            body["result"].clone()
        }
    });
    let results = futures::future::join_all(calls).await;
    let ran = results.iter().filter(|r| r["isError"] == false).count();
    let refused = results
        .iter()
        .filter(|r| r["structuredContent"]["error_code"] == "BUDGET_EXHAUSTED")
        .count();
    assert_eq!(
        ran,
        57,
        "{:?}",
        results.iter().find(|r| r["isError"] == true)
    );
    assert_eq!(refused, 143);
    assert_eq!(
        seen.hits.load(Ordering::SeqCst),
        57,
        "refused calls never ran"
    );
    assert_eq!(budget_spent(&app, &t).await, 171);
    assert_eq!(
        app.scalar(&format!(
            "SELECT CAST(COALESCE(SUM(charged_credits), 0) AS BIGINT) FROM tool_usage WHERE budget_id = '{}'",
            t.budget_id
        ))
        .await,
        171
    );
}

async fn mcp_hold_voided_on_tool_failure_and_timeout(backend: Backend) {
    let (app, _) = stub_app(backend).await;
    let wallet = PrivateKey::random().address();
    app.adjust(&wallet, 50).await;
    let t = tenant_with_cap(&app, 3, Some(&wallet.to_string())).await;
    for tool in [FAIL_TOOL, SLOW_TOOL] {
        let result = call_tool(&app, &plain(&t), tool, json!({"q": "x"})).await;
        assert_eq!(result["isError"], true, "{result}");
        let want = if tool == FAIL_TOOL {
            "TOOL_FAILED"
        } else {
            "TOOL_TIMEOUT"
        };
        assert_eq!(result["structuredContent"]["error_code"], want, "{result}");
        assert_eq!(result["_meta"]["agentpmt/charged_credits"], 0);
        assert_eq!(budget_spent(&app, &t).await, 0, "{tool}: the cap came back");
        assert_eq!(
            app.scalar(&format!(
                "SELECT balance_credits FROM wallets WHERE address = '{wallet}'"
            ))
            .await,
            50,
            "{tool}: the hold was voided"
        );
    }
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM credit_holds WHERE status = 'released'")
            .await,
        2
    );
    // The cap (3) still has room for one call after two failures.
    let result = call_tool(&app, &plain(&t), OK_TOOL, json!({"q": "x"})).await;
    assert_eq!(result["isError"], false, "{result}");
    let result = call_tool(&app, &plain(&t), OK_TOOL, json!({"q": "x"})).await;
    assert_eq!(
        result["structuredContent"]["error_code"],
        "BUDGET_EXHAUSTED"
    );
}

/// The PaymentRequired of an unpaid call (anonymous) of `tool`.
async fn challenge(app: &TestApp, tool: &str, args: &Value) -> Value {
    let result = call_tool(app, &[], tool, args.clone()).await;
    assert_eq!(result["isError"], true, "{result}");
    let required = result["structuredContent"].clone();
    assert_eq!(required["x402Version"], 2, "{result}");
    let text: Value = serde_json::from_str(result["content"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(
        text, required,
        "the PaymentRequired is in content[0].text too"
    );
    required
}

/// A payment for `required` signed with the project's Rust signer.
fn pay(required: &Value, payer: &PrivateKey) -> Value {
    let requirement: PaymentRequirements =
        serde_json::from_value(required["accepts"][0].clone()).unwrap();
    let resource: ResourceInfo = serde_json::from_value(required["resource"].clone()).unwrap();
    serde_json::to_value(
        sign_authorization(payer, &requirement, Some(resource), now_secs()).unwrap(),
    )
    .unwrap()
}

async fn paid_call(app: &TestApp, tool: &str, args: &Value, payment: &Value) -> Value {
    let (status, body) = rpc(
        app,
        &[],
        "tools/call",
        json!({"name": tool, "arguments": args, "_meta": {"x402/payment": payment}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["result"].clone()
}

async fn mcp_x402_payment_on_the_dev_network(backend: Backend) {
    let (app, seen) = stub_app(backend).await;
    let args = json!({"q": "x402"});
    let required = challenge(&app, OK_TOOL, &args).await;
    assert_eq!(required["accepts"][0]["amount"], "30000");
    assert!(required["resource"]["url"]
        .as_str()
        .unwrap()
        .ends_with("/api/external/tools/stub/actions/ok-action/invoke"));
    assert_eq!(seen.hits.load(Ordering::SeqCst), 0);
    let payer = PrivateKey::random();
    let payment = pay(&required, &payer);
    let result = paid_call(&app, OK_TOOL, &args, &payment).await;
    assert_eq!(result["isError"], false, "{result}");
    assert_eq!(result["structuredContent"]["echo"], args);
    let settle = &result["_meta"]["x402/payment-response"];
    assert_eq!(settle["success"], true, "{result}");
    assert_eq!(settle["network"], required["accepts"][0]["network"]);
    assert!(settle["transaction"].as_str().unwrap().starts_with("0x"));
    // The same payment again pays nothing twice and runs nothing twice.
    let again = paid_call(&app, OK_TOOL, &args, &payment).await;
    assert_eq!(seen.hits.load(Ordering::SeqCst), 1, "{again}");
    // A failing tool: its payment is not settled, no output.
    let failing = challenge(&app, FAIL_TOOL, &args).await;
    let result = paid_call(&app, FAIL_TOOL, &args, &pay(&failing, &payer)).await;
    assert_eq!(result["isError"], true);
    assert_eq!(
        result["structuredContent"]["error_code"], "TOOL_FAILED",
        "{result}"
    );
    assert!(result["_meta"]["x402/payment-response"].is_null());
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM tool_usage WHERE mode = 'x402' AND status = 'succeeded'")
            .await,
        1
    );
    // A tool that is not x402-enabled: refused, nothing run.
    let result = paid_call(&app, "stub__text", &args, &payment).await;
    assert_eq!(
        result["structuredContent"]["error_code"], "X402_NOT_AVAILABLE",
        "{result}"
    );
    // An undecodable payment: a fresh challenge.
    let result = paid_call(&app, OK_TOOL, &args, &json!({"x402Version": 2})).await;
    assert_eq!(result["isError"], true);
    assert_eq!(result["structuredContent"]["x402Version"], 2, "{result}");
}

async fn mcp_x402_payment_for_one_tool_is_refused_on_another(backend: Backend) {
    let (app, seen) = stub_app(backend).await;
    let args = json!({"q": "x"});
    let payer = PrivateKey::random();
    // Same price (3 credits): only the resource tells them apart.
    let for_ok = pay(&challenge(&app, OK_TOOL, &args).await, &payer);
    let result = paid_call(&app, FAIL_TOOL, &args, &for_ok).await;
    assert_eq!(result["isError"], true);
    let refused = &result["structuredContent"];
    assert_eq!(refused["error_code"], "PAYMENT_INVALID", "{result}");
    assert_eq!(
        refused["accepts"][0]["amount"], "30000",
        "a fresh challenge"
    );
    assert_eq!(
        result["_meta"]["x402/payment-response"]["errorReason"], "invalid_payment_requirements",
        "{result}"
    );
    assert_eq!(seen.hits.load(Ordering::SeqCst), 0);
    // It still pays for the tool it was made for.
    let result = paid_call(&app, OK_TOOL, &args, &for_ok).await;
    assert_eq!(result["isError"], false, "{result}");
    assert_eq!(seen.hits.load(Ordering::SeqCst), 1);
}

fn with_key(config: &mut agentpmt_server::ServerConfig) {
    config.secrets_key = Some(SECRETS_KEY.to_owned().into());
}

/// Runs `tests/evm/x402-mcp-pay.mjs` (the official x402 client) against `app`'s MCP endpoint.
async fn official_mcp_payment(
    app: &TestApp,
    tool: &str,
    args: &Value,
    payer: &PrivateKey,
) -> Value {
    let script = repo_root().join("tests/evm/x402-mcp-pay.mjs");
    let output = tokio::process::Command::new("node")
        .arg(&script)
        .arg(app.url("/mcp"))
        .arg(tool)
        .arg(args.to_string())
        .env(
            "X402_PRIVATE_KEY",
            format!("0x{}", hex::encode(payer.secret_bytes())),
        )
        .output()
        .await
        .expect("node runs (./scripts/test installs tests/evm)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "x402-mcp-pay failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.trim().lines().last().unwrap()).unwrap()
}

async fn mcp_x402_official_signer_on_the_dev_network(backend: Backend) {
    let (app, seen) = stub_app(backend).await;
    let payer = PrivateKey::random();
    let out = official_mcp_payment(&app, OK_TOOL, &json!({"q": "dev"}), &payer).await;
    assert_eq!(out["challenge"]["isError"], true, "{out}");
    let result = &out["paid"];
    assert_eq!(result["isError"], false, "{out}");
    assert_eq!(result["structuredContent"]["echo"], json!({"q": "dev"}));
    assert_eq!(
        result["_meta"]["x402/payment-response"]["success"], true,
        "{out}"
    );
    assert_eq!(
        result["_meta"]["x402/payment-response"]["payer"]
            .as_str()
            .unwrap()
            .to_lowercase(),
        payer.address().to_string().to_lowercase()
    );
    assert_eq!(seen.hits.load(Ordering::SeqCst), 1);
}

async fn mcp_x402_official_signer_on_anvil(backend: Backend) {
    let chain = Chain::start().await;
    let app = spawn_app_with(
        backend,
        AppOptions {
            payments: Some(chain.payments()),
            settlement_key: Some(GAS_KEY.into()),
            configure: Some(with_key),
            ..AppOptions::default()
        },
    )
    .await;
    let (vendor, seen) = spawn_vendor().await;
    register_stub(&app, &vendor).await;
    let payer = PrivateKey::random();
    chain.mint(payer.address().address(), 1_000_000).await;
    let out = official_mcp_payment(&app, OK_TOOL, &json!({"q": "chain"}), &payer).await;
    assert_eq!(out["challenge"]["isError"], true, "{out}");
    let result = &out["paid"];
    assert_eq!(result["isError"], false, "{out}");
    assert_eq!(result["structuredContent"]["echo"], json!({"q": "chain"}));
    let settle = &result["_meta"]["x402/payment-response"];
    assert_eq!(settle["success"], true, "{out}");
    assert_eq!(chain.balance(chain.pay_to).await, U256::from(30_000u64));
    assert_eq!(
        chain.balance(payer.address().address()).await,
        U256::from(970_000u64)
    );
    assert_eq!(seen.hits.load(Ordering::SeqCst), 1);
}

async fn mcp_tools_list_pages_through_ten_thousand_tools(backend: Backend) {
    let app = spawn_app(backend).await;
    // 1,000 products of 10 actions, written directly (the admin API would take minutes).
    let now = 1_700_000_000_000i64;
    for chunk in 0..10 {
        let mut products = Vec::new();
        let mut actions = Vec::new();
        for p in chunk * 100..(chunk + 1) * 100 {
            let id = format!("{p:024x}");
            products.push(format!(
                "('{id}', 'bulk-{p:04}', 'Bulk {p}', 'Bulk product', '[]', NULL, 'active', 0, 'bulk', {now}, {now})"
            ));
            for a in 0..10 {
                actions.push(format!(
                    "('{id}', 'act-{a}', 'Act {a}', 'Does {a}', {}, 0, '{{}}', '{{\"type\":\"object\",\"properties\":{{}}}}', \
                     '{{\"kind\":\"builtin\",\"name\":\"time.now\"}}', 'active', {a}, {now}, {now})",
                    a + 1
                ));
            }
        }
        app.execute(&format!(
            "INSERT INTO products (product_id, slug, name, description, categories, vendor_id, status, is_private, search_text, created_at_ms, updated_at_ms) VALUES {}",
            products.join(", ")
        ))
        .await
        .unwrap();
        app.execute(&format!(
            "INSERT INTO product_actions (product_id, slug, name, description, price_credits, x402_enabled, schema_source, input_schema, runner, status, position, created_at_ms, updated_at_ms) VALUES {}",
            actions.join(", ")
        ))
        .await
        .unwrap();
    }
    let listed_before = app
        .scalar(
            "SELECT COUNT(*) FROM product_actions a JOIN products p ON p.product_id = a.product_id \
             WHERE p.status = 'active' AND p.is_private = 0 AND a.status = 'active'",
        )
        .await;
    assert!(listed_before >= 10_000);
    let started = Instant::now();
    let mut names = std::collections::HashSet::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let params = match &cursor {
            Some(c) => json!({"cursor": c}),
            None => json!({}),
        };
        let (status, body) = rpc(&app, &[], "tools/list", params).await;
        assert_eq!(status, 200, "{body}");
        pages += 1;
        for tool in body["result"]["tools"].as_array().unwrap() {
            assert!(
                names.insert(tool["name"].as_str().unwrap().to_owned()),
                "{tool}"
            );
        }
        match body["result"]["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
        assert!(pages < 1_000, "pagination must end");
    }
    let elapsed = started.elapsed();
    eprintln!(
        "MCP tools/list: {} tools in {pages} pages in {:?} ({backend:?})",
        names.len(),
        elapsed
    );
    assert_eq!(names.len() as i64, listed_before);
    assert!(names.contains("bulk-0999__act-9"));
}

async fn mcp_official_typescript_sdk_client(backend: Backend) {
    let (app, seen) = stub_app(backend).await;
    let t = tenant_with_cap(&app, 100, None).await;
    let script = repo_root().join("tests/mcp/sdk-client.mjs");
    let output = tokio::process::Command::new("node")
        .arg(&script)
        .arg(app.url("/mcp"))
        .arg(OK_TOOL)
        .arg(json!({"q": "sdk"}).to_string())
        .env("MCP_BEARER", t.bearer())
        .output()
        .await
        .expect("node runs (./scripts/test installs tests/mcp)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "sdk-client failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    let out: Value = serde_json::from_str(stdout.trim().lines().last().unwrap()).unwrap();
    assert_eq!(out["server"]["name"], "agentpmt", "{out}");
    assert!(
        out["names"].as_array().unwrap().contains(&json!(OK_TOOL)),
        "{out}"
    );
    assert_eq!(out["result"]["isError"], false, "{out}");
    assert_eq!(
        out["result"]["structuredContent"]["echo"],
        json!({"q": "sdk"})
    );
    assert_eq!(out["failed"]["isError"], true, "{out}");
    assert_eq!(
        out["challenge"]["structuredContent"]["x402Version"], 2,
        "{out}"
    );
    assert_eq!(seen.hits.load(Ordering::SeqCst), 2);
    assert_eq!(budget_spent(&app, &t).await, 3);
}
