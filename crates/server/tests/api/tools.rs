//! The tool marketplace: listing and its pagination contract, signed credit invocation
//! (two-phase holds, signed-path variants, legacy route, `_credentials`), a real local HTTP
//! vendor (HMAC, failures, timeouts), the operator API.

use crate::backend_tests;
use crate::helpers::*;
use agentpmt_protocol::canonical::{payload_hash, JsonValue};
use agentpmt_protocol::{build_message, PrivateKey, Scope, SignedAction};
use agentpmt_server::config::ServerConfig;
use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use reqwest::{Method, StatusCode};
use serde_json::{json, Map, Value};
use sha2::Sha256;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

backend_tests!(
    pagination_contract,
    demo_catalog_is_listed_and_invocable,
    bad_requests_change_nothing,
    concurrent_invocations_spend_exactly_the_balance,
    vendor_failures_release_the_hold,
    signed_path_variants,
    legacy_route_invokes_the_named_action,
    workflow_session_attribution,
    credentials_never_stored_or_echoed,
    operator_api_and_usage,
    no_parameters_accept_an_empty_payload_line,
    signed_number_lexemes_reach_the_tool,
    the_tool_count_follows_every_change,
);

/// Hex secrets key of the test servers.
pub const SECRETS_KEY: &str = "5ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2";
/// The stub vendor's HMAC secret.
pub const VENDOR_SECRET: &str = "stub-vendor-secret-0123456789";

fn with_key(config: &mut ServerConfig) {
    config.secrets_key = Some(SECRETS_KEY.to_owned().into());
}

fn empty_catalog(config: &mut ServerConfig) {
    config.catalog = "none".into();
    config.secrets_key = Some(SECRETS_KEY.to_owned().into());
}

pub async fn spawn_tools(backend: Backend) -> TestApp {
    spawn_app_with(backend, AppOptions::configured(with_key)).await
}

/// What the stub vendor saw.
#[derive(Debug, Default)]
pub struct Seen {
    pub hits: AtomicUsize,
    pub bodies: Mutex<Vec<Value>>,
    pub bad_signatures: AtomicUsize,
    /// The request bodies as sent (number lexemes as they were on the wire).
    pub raw: Mutex<Vec<String>>,
}

/// A local HTTP vendor: `/ok` (echo, checks the HMAC), `/fail` (HTTP 500), `/slow` (answers
/// after 3 s), `/text` (not JSON).
pub async fn spawn_vendor() -> (String, Arc<Seen>) {
    use axum::routing::post;
    let seen = Arc::new(Seen::default());
    let record = |seen: Arc<Seen>, headers: HeaderMap, body: String| {
        seen.hits.fetch_add(1, Ordering::SeqCst);
        let ts = headers
            .get("x-agentpmt-timestamp")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let mut mac = Hmac::<Sha256>::new_from_slice(VENDOR_SECRET.as_bytes()).unwrap();
        mac.update(format!("{ts}.{body}").as_bytes());
        let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        let sent = headers
            .get("x-agentpmt-signature")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if sent != expected {
            seen.bad_signatures.fetch_add(1, Ordering::SeqCst);
        }
        let parsed: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        seen.bodies.lock().unwrap().push(parsed.clone());
        seen.raw.lock().unwrap().push(body);
        parsed
    };
    let (s1, s2, s3, s4) = (seen.clone(), seen.clone(), seen.clone(), seen.clone());
    let app = axum::Router::new()
        .route(
            "/ok",
            post(move |headers: HeaderMap, body: String| {
                let parsed = record(s1.clone(), headers, body);
                async move {
                    axum::Json(json!({
                        "echo": parsed["parameters"],
                        "had_credentials": parsed["credentials"] != json!({}),
                    }))
                }
            }),
        )
        .route(
            "/fail",
            post(move |headers: HeaderMap, body: String| {
                record(s2.clone(), headers, body);
                async { (StatusCode::INTERNAL_SERVER_ERROR, "boom") }
            }),
        )
        .route(
            "/slow",
            post(move |headers: HeaderMap, body: String| {
                record(s3.clone(), headers, body);
                async {
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    axum::Json(json!({"late": true}))
                }
            }),
        )
        .route(
            "/text",
            post(move |headers: HeaderMap, body: String| {
                record(s4.clone(), headers, body);
                async { "plain text" }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

/// Registers the stub vendor and a product `stub` with actions `ok` (price 3, x402),
/// `fail` (x402), `slow` (300 ms timeout) and `text`.
pub async fn register_stub(app: &TestApp, vendor_url: &str) {
    let (status, body) = app
        .admin(
            Method::PUT,
            "/api/admin/vendors/stub-vendor",
            Some(&json!({"slug": "stub-vendor", "name": "Stub vendor", "secret": VENDOR_SECRET})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["has_secret"], true);
    let action = |name: &str, path: &str, price: i64, x402: bool, timeout: Option<u64>| {
        let mut runner = json!({"kind": "http", "url": format!("{vendor_url}{path}")});
        if let Some(t) = timeout {
            runner["timeout_ms"] = json!(t);
        }
        json!({
            "name": name, "description": format!("{name} action"), "price_credits": price,
            "x402_enabled": x402, "runner": runner,
            "parameters": {"q": {"type": "string", "required": true, "maxLength": 50},
                           "n": {"type": "integer", "minimum": 1, "maximum": 10}}
        })
    };
    let (status, body) = app
        .admin(
            Method::PUT,
            "/api/admin/tools/stub",
            Some(&json!({
                "slug": "stub", "name": "Stub tool", "description": "A vendor stub",
                "categories": ["testing"], "vendor": "stub-vendor",
                "actions": [
                    action("ok_action", "/ok", 3, true, None),
                    action("fail", "/fail", 3, true, None),
                    action("slow", "/slow", 3, true, Some(300)),
                    action("text", "/text", 3, false, None),
                ]
            })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
}

/// A signed credit invocation of `product/action` (signed over the same path).
pub async fn invoke(
    app: &TestApp,
    key: &PrivateKey,
    nonce: &str,
    request_id: &str,
    product: &str,
    action: &str,
    parameters: Value,
) -> (StatusCode, Value) {
    let mut fields = Map::new();
    fields.insert("parameters".into(), parameters);
    let body = signed(
        key,
        SignedAction::ToolActionInvoke,
        &[("productSlug", product), ("actionSlug", action)],
        nonce,
        request_id,
        fields,
    );
    app.post(
        &format!("/api/external/tools/{product}/actions/{action}/invoke"),
        &body,
    )
    .await
}

/// A body signed over an arbitrary `path` line.
fn signed_over(
    key: &PrivateKey,
    nonce: &str,
    request_id: &str,
    path: &str,
    parameters: &Value,
) -> Value {
    let hash = payload_hash(&JsonValue::from_serde(parameters));
    let message = build_message(
        &key.address(),
        nonce,
        request_id,
        &Scope::method_path("POST", path),
        Some(&hash),
    );
    json!({
        "wallet_address": key.address().to_string(),
        "session_nonce": nonce,
        "request_id": request_id,
        "signature": key.sign_message(&message).to_hex(),
        "parameters": parameters,
    })
}

pub async fn ledger_sum(app: &TestApp, wallet: &str) -> i64 {
    app.scalar(&format!(
        "SELECT CAST(COALESCE(SUM(amount_credits), 0) AS BIGINT) FROM ledger_entries WHERE wallet_address = '{wallet}'"
    ))
    .await
}

pub async fn balance_of(app: &TestApp, wallet: &str) -> i64 {
    app.scalar(&format!(
        "SELECT COALESCE(MAX(balance_credits), 0) FROM wallets WHERE address = '{wallet}'"
    ))
    .await
}

async fn product(app: &TestApp, slug: &str, categories: &[&str], private: bool, status: &str) {
    let (code, body) = app
        .admin(
            Method::PUT,
            &format!("/api/admin/tools/{slug}"),
            Some(&json!({
                "slug": slug, "name": format!("Tool {slug}"), "description": format!("Finds {slug} things"),
                "categories": categories, "private": private, "status": status,
                "actions": [{"name": "run", "price_credits": 1, "runner": {"kind": "builtin", "name": "time.now"}}]
            })),
        )
        .await;
    assert_eq!(code, 201, "{body}");
}

async fn pagination_contract(backend: Backend) {
    let app = spawn_app_with(backend, AppOptions::configured(empty_catalog)).await;
    let check =
        |body: &Value, page: i64, size: i64, total: i64, pages: i64, next: Value, items: usize| {
            let p = &body["pagination"];
            assert_eq!(p["page"], page, "{body}");
            assert_eq!(p["page_size"], size, "{body}");
            assert_eq!(p["total_count"], total, "{body}");
            assert_eq!(p["total_pages"], pages, "{body}");
            assert_eq!(p["has_more"], json!(next.is_i64()), "{body}");
            assert_eq!(p["next_page"], next, "{body}");
            assert_eq!(p["default_page_size"], 100, "{body}");
            assert_eq!(p["max_page_size"], 1000, "{body}");
            assert_eq!(body["tools"].as_array().unwrap().len(), items, "{body}");
        };
    // Empty catalog: the whole contract, on plain, searched and filtered listings.
    for path in [
        "/api/external/tools",
        "/api/external/tools?query=x",
        "/api/external/tools?categories=a,b&page=3",
    ] {
        let (status, body) = app.get(path).await;
        assert_eq!(status, 200, "{body}");
        let page = if path.contains("page=3") { 3 } else { 1 };
        check(&body, page, 100, 0, 0, Value::Null, 0);
    }
    // 8 listable products (a..h), plus a private and an inactive one.
    for (i, slug) in [
        "a-tool", "b-tool", "c-tool", "d-tool", "e-tool", "f-tool", "g-tool", "h-tool",
    ]
    .iter()
    .enumerate()
    {
        let cats: &[&str] = if i % 2 == 0 {
            &["Even Ones", "all"]
        } else {
            &["odd", "all"]
        };
        product(&app, slug, cats, false, "active").await;
    }
    product(&app, "hidden-tool", &["all"], true, "active").await;
    product(&app, "old-tool", &["all"], false, "inactive").await;

    let (_, body) = app.get("/api/external/tools").await;
    check(&body, 1, 100, 8, 1, Value::Null, 8);
    let slugs: Vec<&str> = body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["product_slug"].as_str().unwrap())
        .collect();
    assert_eq!(
        slugs,
        ["a-tool", "b-tool", "c-tool", "d-tool", "e-tool", "f-tool", "g-tool", "h-tool"]
    );
    // Exact multiple: 8 / 4 → the second page is the last.
    let (_, body) = app.get("/api/external/tools?page_size=4").await;
    check(&body, 1, 4, 8, 2, json!(2), 4);
    let (_, body) = app.get("/api/external/tools?page_size=4&page=2").await;
    check(&body, 2, 4, 8, 2, Value::Null, 4);
    // Partial last page.
    let (_, body) = app.get("/api/external/tools?page_size=3&page=3").await;
    check(&body, 3, 3, 8, 3, Value::Null, 2);
    // Beyond the end.
    let (_, body) = app.get("/api/external/tools?page_size=3&page=9").await;
    check(&body, 9, 3, 8, 3, Value::Null, 0);
    // Filtered: category (normalized), search, both.
    let (_, body) = app
        .get("/api/external/tools?categories=even%20ones&page_size=3")
        .await;
    check(&body, 1, 3, 4, 2, json!(2), 3);
    let (_, body) = app.get("/api/external/tools?categories=odd,nothing").await;
    check(&body, 1, 100, 4, 1, Value::Null, 4);
    let (_, body) = app.get("/api/external/tools?query=FINDS%20C").await;
    check(&body, 1, 100, 1, 1, Value::Null, 1);
    assert_eq!(body["tools"][0]["product_slug"], "c-tool");
    let (_, body) = app.get("/api/external/tools?query=%25").await;
    check(&body, 1, 100, 0, 0, Value::Null, 0);
    // Private and inactive products are never listed.
    let (_, body) = app.get("/api/external/tools?query=hidden").await;
    check(&body, 1, 100, 0, 0, Value::Null, 0);
    // Bounds.
    for bad in [
        "page_size=0",
        "page_size=1001",
        "page=0",
        "page=-1",
        "page=x",
        "page_size=1e3",
    ] {
        let (status, body) = app.get(&format!("/api/external/tools?{bad}")).await;
        assert_envelope(status, &body, 422, "VALIDATION_ERROR");
        assert_eq!(body["detail"][0]["loc"][0], "query", "{body}");
    }
    let (status, _) = app.get("/api/external/tools?page_size=1000").await;
    assert_eq!(status, 200);
}

async fn demo_catalog_is_listed_and_invocable(backend: Backend) {
    let app = spawn_app(backend).await;
    let (status, body) = app.get("/api/external/tools").await;
    assert_eq!(status, 200);
    let tools = body["tools"].as_array().unwrap();
    let kit = tools
        .iter()
        .find(|t| t["product_slug"] == "agent-signing-kit")
        .expect("demo catalog loaded");
    assert_eq!(kit["product_id"].as_str().unwrap().len(), 24);
    assert_eq!(kit["vendor"], "agentpmt");
    let canonical = kit["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["action_slug"] == "canonical-json")
        .unwrap();
    assert_eq!(canonical["name"], "canonical_json");
    assert_eq!(canonical["unit_type"], "request");
    assert_eq!(canonical["x402_enabled"], true);
    assert_eq!(canonical["input_schema"]["required"], json!(["value"]));
    assert_eq!(canonical["parameters"]["value"]["required"], true);

    // Loading the catalog again (a second instance on the same database) changes nothing.
    let before = app.scalar("SELECT COUNT(*) FROM product_actions").await;
    let _second = spawn_on(&app.database_url, AppOptions::default()).await;
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM product_actions").await,
        before
    );
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM products").await,
        tools.len() as i64
    );

    let key = PrivateKey::random();
    let wallet = key.address().to_string();
    assert_eq!(app.adjust(&key.address(), 10).await.0, 201);
    let nonce = app.session(&key.address()).await;
    let (status, body) = invoke(
        &app,
        &key,
        &nonce,
        "r1",
        "agent-signing-kit",
        "canonical-json",
        json!({"value": {"b": 2, "a": [1, "é"]}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["success"], true);
    assert_eq!(body["response"]["canonical"], "{\"a\":[1,\"é\"],\"b\":2}");
    assert_eq!(body["charged_credits"], 1);
    assert_eq!(body["price_credits"], 1);
    assert_eq!(body["balance_credits"], 9);
    assert_eq!(body["balance_usd"], 0.09);
    assert_eq!(body["credit_source"], "credits");
    assert!(body["usage_id"].as_str().unwrap().starts_with("use_"));
    let (status, body) = invoke(
        &app,
        &key,
        &nonce,
        "r2",
        "text-tools",
        "stats",
        json!({"text": "one two three"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["response"]["words"], 3);
    assert_eq!(body["balance_credits"], 7);
    assert_eq!(ledger_sum(&app, &wallet).await, 7);
    // A replayed request_id runs nothing and charges nothing.
    let (status, body) = invoke(
        &app,
        &key,
        &nonce,
        "r2",
        "text-tools",
        "stats",
        json!({"text": "one two three"}),
    )
    .await;
    assert_envelope(status, &body, 409, "EXTERNAL_SIGNATURE_REQUEST_REPLAY");
    assert_eq!(balance_of(&app, &wallet).await, 7);
    // A built-in's refusal is a tool failure: released, nothing charged.
    let (status, body) = invoke(
        &app,
        &key,
        &nonce,
        "r3",
        "agent-signing-kit",
        "keccak256",
        json!({"hex": "zz"}),
    )
    .await;
    let details = assert_envelope(status, &body, 502, "TOOL_FAILED");
    assert_eq!(details["charged_credits"], 0);
    assert_eq!(details["balance_credits"], 7);
    assert_eq!(balance_of(&app, &wallet).await, 7);
    assert_eq!(ledger_sum(&app, &wallet).await, 7);
}

async fn bad_requests_change_nothing(backend: Backend) {
    let app = spawn_tools(backend).await;
    let (vendor, seen) = spawn_vendor().await;
    register_stub(&app, &vendor).await;
    let key = PrivateKey::random();
    let wallet = key.address().to_string();
    assert_eq!(app.adjust(&key.address(), 100).await.0, 201);
    let nonce = app.session(&key.address()).await;
    // Missing required parameter, wrong type, out of range: 422 naming the parameter.
    let (status, body) = invoke(
        &app,
        &key,
        &nonce,
        "p1",
        "stub",
        "ok-action",
        json!({"n": 3}),
    )
    .await;
    assert_envelope(status, &body, 422, "VALIDATION_ERROR");
    assert_eq!(
        body["detail"][0]["loc"],
        json!(["body", "parameters", "q"]),
        "{body}"
    );
    let (status, body) = invoke(
        &app,
        &key,
        &nonce,
        "p2",
        "stub",
        "ok-action",
        json!({"q": "x", "n": 99}),
    )
    .await;
    assert_envelope(status, &body, 422, "VALIDATION_ERROR");
    assert_eq!(
        body["detail"][0]["loc"],
        json!(["body", "parameters", "n"]),
        "{body}"
    );
    let (status, body) = invoke(
        &app,
        &key,
        &nonce,
        "p3",
        "stub",
        "ok-action",
        json!({"q": 5}),
    )
    .await;
    assert_envelope(status, &body, 422, "VALIDATION_ERROR");
    let (status, body) = invoke(&app, &key, &nonce, "p4", "stub", "ok-action", json!([1, 2])).await;
    assert_envelope(status, &body, 422, "VALIDATION_ERROR");
    // Unknown product / action: 404.
    let (status, body) = invoke(
        &app,
        &key,
        &nonce,
        "p5",
        "nope",
        "ok-action",
        json!({"q": "x"}),
    )
    .await;
    assert_envelope(status, &body, 404, "TOOL_NOT_FOUND");
    let (status, body) = invoke(&app, &key, &nonce, "p6", "stub", "nope", json!({"q": "x"})).await;
    let details = assert_envelope(status, &body, 404, "TOOL_NOT_FOUND");
    assert!(details["available_actions"]
        .as_array()
        .unwrap()
        .contains(&json!("ok-action")));
    // Bad envelope: 422; mixed modes: 400.
    let (status, body) = app
        .post(
            "/api/external/tools/stub/actions/ok-action/invoke",
            &json!({"wallet_address": wallet, "parameters": {}}),
        )
        .await;
    assert_envelope(status, &body, 422, "VALIDATION_ERROR");
    let mut fields = Map::new();
    fields.insert("parameters".into(), json!({"q": "x"}));
    let signed_body = signed(
        &key,
        SignedAction::ToolActionInvoke,
        &[("productSlug", "stub"), ("actionSlug", "ok-action")],
        &nonce,
        "p7",
        fields,
    );
    let (status, _, body) = app
        .post_with_headers(
            "/api/external/tools/stub/actions/ok-action/invoke",
            &signed_body,
            &[("x-payment", "e30=")],
        )
        .await;
    assert_envelope(status, &body, 400, "MIXED_PAYMENT_MODES");
    // Not enough credits: 402 with price and balance, nothing run.
    let poor = PrivateKey::random();
    assert_eq!(app.adjust(&poor.address(), 2).await.0, 201);
    let poor_nonce = app.session(&poor.address()).await;
    let (status, body) = invoke(
        &app,
        &poor,
        &poor_nonce,
        "p8",
        "stub",
        "ok-action",
        json!({"q": "x"}),
    )
    .await;
    let details = assert_envelope(status, &body, 402, "INSUFFICIENT_CREDITS");
    assert_eq!(details["price_credits"], 3);
    assert_eq!(details["balance_credits"], 2);
    // The same request_id can be used once the wallet has credits (nothing was consumed).
    assert_eq!(app.adjust(&poor.address(), 1).await.0, 201);
    let (status, body) = invoke(
        &app,
        &poor,
        &poor_nonce,
        "p8",
        "stub",
        "ok-action",
        json!({"q": "x"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["balance_credits"], 0);
    assert_eq!(
        seen.hits.load(Ordering::SeqCst),
        1,
        "only the paid call reached the vendor"
    );
    assert_eq!(balance_of(&app, &wallet).await, 100);
    assert_eq!(app.scalar("SELECT COUNT(*) FROM tool_usage").await, 1);
    // Ambiguous action: a slug that is also another action's name.
    let (status, body) = app
        .admin(
            Method::PUT,
            "/api/admin/tools/twins",
            Some(&json!({"slug": "twins", "name": "Twins", "actions": [
                {"name": "fetch_page", "price_credits": 1, "runner": {"kind": "builtin", "name": "time.now"}},
                {"name": "fetch-page", "slug": "fetch-page-v2", "price_credits": 1, "runner": {"kind": "builtin", "name": "time.now"}}
            ]})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = invoke(&app, &key, &nonce, "p9", "twins", "fetch-page", json!({})).await;
    let details = assert_envelope(status, &body, 409, "TOOL_ACTION_AMBIGUOUS");
    assert_eq!(details["candidates"].as_array().unwrap().len(), 2);
    let (status, body) = invoke(
        &app,
        &key,
        &nonce,
        "p10",
        "twins",
        "fetch-page-v2",
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

async fn concurrent_invocations_spend_exactly_the_balance(backend: Backend) {
    let app = spawn_tools(backend).await;
    let (vendor, seen) = spawn_vendor().await;
    register_stub(&app, &vendor).await;
    let key = PrivateKey::random();
    let wallet = key.address().to_string();
    assert_eq!(app.adjust(&key.address(), 57 * 3).await.0, 201);
    let nonce = app.session(&key.address()).await;
    let app = Arc::new(app);
    let mut tasks = Vec::new();
    for i in 0..200 {
        let (app, key, nonce) = (app.clone(), key.clone(), nonce.clone());
        tasks.push(tokio::spawn(async move {
            invoke(
                &app,
                &key,
                &nonce,
                &format!("c{i}"),
                "stub",
                "ok-action",
                json!({"q": format!("call {i}")}),
            )
            .await
        }));
    }
    let mut ok = 0;
    let mut poor = 0;
    for task in tasks {
        let (status, body) = task.await.unwrap();
        match status.as_u16() {
            200 => ok += 1,
            402 => {
                assert_eq!(body["error_code"], "INSUFFICIENT_CREDITS", "{body}");
                poor += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!((ok, poor), (57, 143));
    assert_eq!(
        seen.hits.load(Ordering::SeqCst),
        57,
        "exactly the paid calls ran"
    );
    assert_eq!(balance_of(&app, &wallet).await, 0);
    assert_eq!(ledger_sum(&app, &wallet).await, 0);
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM credit_holds WHERE status = 'posted'")
            .await,
        57
    );
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM credit_holds WHERE status <> 'posted'")
            .await,
        0
    );
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM wallets WHERE balance_credits < 0")
            .await,
        0
    );
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM tool_usage WHERE status = 'succeeded'")
            .await,
        57
    );
}

async fn vendor_failures_release_the_hold(backend: Backend) {
    let app = spawn_tools(backend).await;
    let (vendor, seen) = spawn_vendor().await;
    register_stub(&app, &vendor).await;
    let key = PrivateKey::random();
    let wallet = key.address().to_string();
    assert_eq!(app.adjust(&key.address(), 20).await.0, 201);
    let nonce = app.session(&key.address()).await;
    let (status, body) = invoke(&app, &key, &nonce, "f1", "stub", "fail", json!({"q": "x"})).await;
    let details = assert_envelope(status, &body, 502, "TOOL_FAILED");
    assert!(
        details["reason"].as_str().unwrap().contains("500"),
        "{body}"
    );
    assert_eq!(details["balance_credits"], 20);
    let (status, body) = invoke(&app, &key, &nonce, "f2", "stub", "slow", json!({"q": "x"})).await;
    let details = assert_envelope(status, &body, 504, "TOOL_TIMEOUT");
    assert_eq!(details["charged_credits"], 0);
    let (status, body) = invoke(&app, &key, &nonce, "f3", "stub", "text", json!({"q": "x"})).await;
    assert_envelope(status, &body, 502, "TOOL_FAILED");
    assert_eq!(balance_of(&app, &wallet).await, 20);
    assert_eq!(ledger_sum(&app, &wallet).await, 20);
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM credit_holds WHERE status = 'released'")
            .await,
        3
    );
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM ledger_entries WHERE kind = 'tool_release'")
            .await,
        3
    );
    // Success: charged once, and the vendor verified our HMAC on every call.
    let (status, body) = invoke(
        &app,
        &key,
        &nonce,
        "f4",
        "stub",
        "ok_action",
        json!({"q": "hello", "n": 2}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["response"]["echo"], json!({"q": "hello", "n": 2}));
    assert_eq!(body["charged_credits"], 3);
    assert_eq!(balance_of(&app, &wallet).await, 17);
    assert_eq!(ledger_sum(&app, &wallet).await, 17);
    assert_eq!(seen.hits.load(Ordering::SeqCst), 4);
    assert_eq!(seen.bad_signatures.load(Ordering::SeqCst), 0);
    let last = seen.bodies.lock().unwrap().last().cloned().unwrap();
    assert_eq!(last["product"], "stub");
    assert_eq!(last["action"], "ok-action");
    assert_eq!(last["wallet_address"], wallet);
    // A hold whose call died with the process is released by the sweeper after its deadline.
    app.execute("UPDATE credit_holds SET status = 'pending' WHERE usage_id IN (SELECT usage_id FROM tool_usage WHERE status = 'succeeded')")
        .await
        .unwrap();
    app.execute(
        "UPDATE tool_usage SET status = 'running', deadline_ms = 1 WHERE status = 'succeeded'",
    )
    .await
    .unwrap();
    let swept = agentpmt_server::tools::usage::sweep_stale(&app.state.db)
        .await
        .unwrap();
    assert_eq!(swept, 1);
    assert_eq!(balance_of(&app, &wallet).await, 20);
    assert_eq!(ledger_sum(&app, &wallet).await, 20);
    assert_eq!(
        agentpmt_server::tools::usage::sweep_stale(&app.state.db)
            .await
            .unwrap(),
        0
    );
}

async fn signed_path_variants(backend: Backend) {
    let app = spawn_tools(backend).await;
    let key = PrivateKey::random();
    let wallet = key.address().to_string();
    assert_eq!(app.adjust(&key.address(), 100).await.0, 201);
    let nonce = app.session(&key.address()).await;
    let (_, list) = app.get("/api/external/tools?query=url%20extraction").await;
    let product_id = list["tools"][0]["product_id"].as_str().unwrap().to_owned();
    let params = json!({"text": "see https://example.org"});
    let canonical_url = "/api/external/tools/text-tools/actions/extract-urls/invoke";
    let accepted = [
        (
            canonical_url,
            "/external/tools/text-tools/actions/extract-urls/invoke",
        ),
        (
            canonical_url,
            "/api/external/tools/text-tools/actions/extract-urls/invoke",
        ),
        (
            canonical_url,
            "/external/tools/text-tools/actions/extract-urls/invoke/",
        ),
        (
            canonical_url,
            "/api/external/tools/text-tools/actions/extract-urls/invoke/",
        ),
        (
            canonical_url,
            "/external/tools/text-tools/actions/extract_urls/invoke",
        ),
        (
            "/api/external/tools/text-tools/actions/extract_urls/invoke",
            "/external/tools/text-tools/actions/extract_urls/invoke",
        ),
        (
            "/api/external/tools/text-tools/actions/extract_urls/invoke",
            "/external/tools/text-tools/actions/extract-urls/invoke",
        ),
        (
            "/api/external/tools/text-tools/actions/extract-urls/invoke/",
            "/external/tools/text-tools/actions/extract-urls/invoke",
        ),
    ];
    for (i, (url, path)) in accepted.iter().enumerate() {
        let body = signed_over(&key, &nonce, &format!("v{i}"), path, &params);
        let (status, body) = app.post(url, &body).await;
        assert_eq!(status, 200, "url {url} signed {path}: {body}");
        assert_eq!(body["action_slug"], "extract-urls");
    }
    let by_id = format!("/external/tools/{product_id}/actions/extract-urls/invoke");
    let body = signed_over(&key, &nonce, "v-id", &by_id, &params);
    let (status, body) = app
        .post(
            &format!("/api/external/tools/{product_id}/actions/extract-urls/invoke"),
            &body,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let charged = 2 * (accepted.len() as i64 + 1);
    assert_eq!(balance_of(&app, &wallet).await, 100 - charged);
    // Another product's or action's path never verifies, and nothing is charged.
    for (i, path) in [
        "/external/tools/json-tools/actions/validate/invoke",
        "/external/tools/text-tools/actions/stats/invoke",
        "/external/tools/text-tools/actions/extract-urls/invoke?x=1",
        "/v1/external/tools/text-tools/actions/extract-urls/invoke",
    ]
    .iter()
    .enumerate()
    {
        let body = signed_over(&key, &nonce, &format!("x{i}"), path, &params);
        let (status, body) = app.post(canonical_url, &body).await;
        let details = assert_envelope(status, &body, 401, "EXTERNAL_SIGNATURE_WALLET_MISMATCH");
        let candidates = details["accepted_path_candidates"].as_array().unwrap();
        assert_eq!(
            candidates[0], "/external/tools/text-tools/actions/extract-urls/invoke",
            "{details}"
        );
        assert!(candidates.contains(&json!(
            "/api/external/tools/text-tools/actions/extract_urls/invoke/"
        )));
        assert!(!candidates
            .iter()
            .any(|c| c.as_str().unwrap().contains("json-tools")));
        assert_eq!(
            details["expected_path"],
            "/external/tools/text-tools/actions/extract-urls/invoke"
        );
    }
    assert_eq!(balance_of(&app, &wallet).await, 100 - charged);
    // The payload hash is over parameters: a missing parameters object hashes as {}.
    let body = signed_over(
        &key,
        &nonce,
        "empty",
        "/external/tools/clock/actions/now/invoke",
        &json!({}),
    );
    let mut body = body.as_object().unwrap().clone();
    body.remove("parameters");
    let (status, body) = app
        .post(
            "/api/external/tools/clock/actions/now/invoke",
            &Value::Object(body),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["response"]["unix_ms"].is_i64());
}

async fn legacy_route_invokes_the_named_action(backend: Backend) {
    let app = spawn_tools(backend).await;
    let key = PrivateKey::random();
    assert_eq!(app.adjust(&key.address(), 10).await.0, 201);
    let nonce = app.session(&key.address()).await;
    let (_, list) = app.get("/api/external/tools?query=url%20extraction").await;
    let product_id = list["tools"][0]["product_id"].as_str().unwrap().to_owned();
    let legacy = |request_id: &str, product: &str, params: Value| {
        let mut fields = Map::new();
        fields.insert("parameters".into(), params);
        signed(
            &key,
            SignedAction::Invoke,
            &[("productId", product)],
            &nonce,
            request_id,
            fields,
        )
    };
    let body = legacy(
        "l1",
        &product_id,
        json!({"action": "extract_urls", "text": "a https://x.example b"}),
    );
    let (status, body) = app
        .post(&format!("/api/external/tools/{product_id}/invoke"), &body)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["response"]["urls"], json!(["https://x.example"]));
    assert_eq!(body["action_slug"], "extract-urls");
    // The product slug works as productId too; the action may be named by slug.
    let body = legacy(
        "l2",
        "text-tools",
        json!({"action": "stats", "text": "a b"}),
    );
    let (status, body) = app
        .post("/api/external/tools/text-tools/invoke", &body)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["response"]["words"], 2);
    // No action named in a product with several: 422 on parameters.action.
    let body = legacy("l3", "text-tools", json!({"text": "a b"}));
    let (status, body) = app
        .post("/api/external/tools/text-tools/invoke", &body)
        .await;
    assert_envelope(status, &body, 422, "VALIDATION_ERROR");
    assert_eq!(
        body["detail"][0]["loc"],
        json!(["body", "parameters", "action"])
    );
    // Signed for another product id: mismatch.
    let body = legacy("l4", "json-tools", json!({"action": "stats", "text": "a"}));
    let (status, body) = app
        .post("/api/external/tools/text-tools/invoke", &body)
        .await;
    let details = assert_envelope(status, &body, 401, "EXTERNAL_SIGNATURE_WALLET_MISMATCH");
    assert_eq!(details["expected_product"], "text-tools");
    // A one-action product needs no action name.
    let body = legacy("l5", "clock", json!({}));
    let (status, body) = app.post("/api/external/tools/clock/invoke", &body).await;
    assert_eq!(status, 200, "{body}");
}

async fn credentials_never_stored_or_echoed(backend: Backend) {
    const SECRET: &str = "sk-live-TOPSECRET-credential-value";
    let logs = capture_logs();
    let app = spawn_tools(backend).await;
    let (vendor, seen) = spawn_vendor().await;
    register_stub(&app, &vendor).await;
    let key = PrivateKey::random();
    assert_eq!(app.adjust(&key.address(), 50).await.0, 201);
    let nonce = app.session(&key.address()).await;
    let creds = json!({"api_key": SECRET});
    let workflow = crate::workflows::create_workflow(&app, "creds-flow", json!({}), true).await;
    let (status, started) = crate::workflows::call(
        &app,
        &key,
        SignedAction::WorkflowStart,
        &workflow,
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "{started}");
    let session = started["workflow_session_id"].as_str().unwrap().to_owned();
    // Success: the vendor receives the credentials; the response does not carry them.
    let (status, body) = invoke(
        &app,
        &key,
        &nonce,
        "s1",
        "stub",
        "ok-action",
        json!({"q": "x", "_credentials": creds, "_workflow_session_id": session}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["response"]["had_credentials"], true);
    assert_eq!(
        body["response"]["echo"],
        json!({"q": "x"}),
        "reserved fields stripped before the tool"
    );
    assert_eq!(body["workflow_session_id"], session.as_str());
    assert!(!body.to_string().contains(SECRET));
    let sent = seen.bodies.lock().unwrap().last().cloned().unwrap();
    assert_eq!(sent["credentials"]["api_key"], SECRET);
    assert!(sent["parameters"].get("_workflow_session_id").is_none());
    // Failures: validation, signature mismatch, tool failure — no error body echoes them.
    let cases = [
        invoke(
            &app,
            &key,
            &nonce,
            "s2",
            "stub",
            "ok-action",
            json!({"n": 1000, "_credentials": creds}),
        )
        .await,
        invoke(
            &app,
            &key,
            &nonce,
            "s3",
            "stub",
            "fail",
            json!({"q": "x", "_credentials": creds}),
        )
        .await,
        invoke(
            &app,
            &key,
            &nonce,
            "s4",
            "stub",
            "ok-action",
            json!({"q": "x", "_credentials": "not-an-object"}),
        )
        .await,
    ];
    for (status, body) in &cases {
        assert!(
            status.is_client_error() || status.is_server_error(),
            "{body}"
        );
        assert!(!body.to_string().contains(SECRET), "{body}");
    }
    let tampered = {
        let mut b = signed_over(
            &key,
            &nonce,
            "s5",
            "/external/tools/stub/actions/ok-action/invoke",
            &json!({"q": "x", "_credentials": creds}),
        );
        b["parameters"]["q"] = json!("changed");
        b
    };
    let (status, body) = app
        .post(
            "/api/external/tools/stub/actions/ok-action/invoke",
            &tampered,
        )
        .await;
    assert_envelope(status, &body, 401, "EXTERNAL_SIGNATURE_WALLET_MISMATCH");
    assert!(!body.to_string().contains(SECRET), "{body}");
    // The logs (every event of this process so far, at TRACE level) never hold them.
    let text = logs.text();
    assert!(
        text.contains("tool call charged"),
        "the capture saw the calls"
    );
    let leaks: Vec<&str> = text.lines().filter(|l| l.contains("TOPSECRET")).collect();
    assert!(leaks.is_empty(), "{leaks:#?}");
    // The usage records hold the session id, never parameters or credentials.
    assert_eq!(
        app.scalar(&format!(
            "SELECT COUNT(*) FROM tool_usage WHERE workflow_session_id = '{session}'"
        ))
        .await,
        1
    );
    for (table, column) in [
        ("tool_usage", "error_message"),
        ("tool_usage", "error_code"),
        ("tool_usage", "request_id"),
        ("ledger_entries", "reason"),
        ("ledger_entries", "reference"),
        ("request_replays", "request_id"),
    ] {
        let hits = app
            .scalar(&format!(
                "SELECT COUNT(*) FROM {table} WHERE {column} LIKE '%TOPSECRET%'"
            ))
            .await;
        assert_eq!(hits, 0, "{table}.{column}");
    }
}

async fn operator_api_and_usage(backend: Backend) {
    // Without a secrets key, vendor secrets cannot be stored.
    let plain = spawn_app(backend).await;
    let (status, body) = plain
        .admin(
            Method::PUT,
            "/api/admin/vendors/v1",
            Some(&json!({"slug": "v1", "name": "V", "secret": VENDOR_SECRET})),
        )
        .await;
    assert_envelope(status, &body, 400, "SECRETS_KEY_MISSING");
    // The operator API cannot make the server read one of its own environment variables
    // into a vendor secret (`secret_env` is for catalog files only).
    let (status, body) = plain
        .admin(
            Method::PUT,
            "/api/admin/vendors/v1",
            Some(&json!({"slug": "v1", "name": "V", "secret_env": "HOME"})),
        )
        .await;
    assert_envelope(status, &body, 422, "VALIDATION_ERROR");
    assert_eq!(
        body["detail"][0]["loc"],
        json!(["body", "secret_env"]),
        "{body}"
    );
    assert_eq!(plain.scalar("SELECT COUNT(*) FROM vendors").await, 0);
    let (status, body) = plain
        .admin(
            Method::PUT,
            "/api/admin/vendors/v1",
            Some(&json!({"slug": "v1", "name": "V"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["has_secret"], false);
    // Admin token required.
    let (status, body) = plain.get("/api/admin/tools").await;
    assert_envelope(status, &body, 401, "ADMIN_UNAUTHORIZED");

    let app = spawn_tools(backend).await;
    let (vendor, _seen) = spawn_vendor().await;
    register_stub(&app, &vendor).await;
    // The sealed secret is not the secret.
    assert_eq!(
        app.scalar(&format!(
            "SELECT COUNT(*) FROM vendors WHERE secret_sealed LIKE '%{VENDOR_SECRET}%'"
        ))
        .await,
        0
    );
    let (status, vendors) = app.admin(Method::GET, "/api/admin/vendors", None).await;
    assert_eq!(status, 200);
    assert!(!vendors.to_string().contains(VENDOR_SECRET));
    // Invalid documents: 422 naming the field; slug conflicts: 409.
    let bad = [
        json!({"slug": "Bad Slug", "name": "x"}),
        json!({"slug": "ok", "name": "x", "actions": [{"name": "a", "price_credits": 0, "runner": {"kind": "builtin", "name": "time.now"}}]}),
        json!({"slug": "ok", "name": "x", "actions": [{"name": "a", "price_credits": 1, "runner": {"kind": "builtin", "name": "nope"}}]}),
        json!({"slug": "ok", "name": "x", "actions": [{"name": "a", "price_credits": 1, "runner": {"kind": "builtin", "name": "time.now"}, "parameters": {"p": 3}}]}),
        json!({"slug": "ok", "name": "x", "vendor": "missing"}),
    ];
    for doc in &bad {
        let slug = doc["slug"].as_str().unwrap();
        let (status, body) = app
            .admin(
                Method::PUT,
                &format!("/api/admin/tools/{}", slug.replace(' ', "%20")),
                Some(doc),
            )
            .await;
        assert_envelope(status, &body, 422, "VALIDATION_ERROR");
    }
    let (status, body) = app
        .admin(Method::PUT, "/api/admin/tools/stub-copy", Some(&json!({"slug": "stub-copy", "name": "x", "product_id": agentpmt_server::tools::catalog::derived_id("product", "stub")})))
        .await;
    assert_envelope(status, &body, 409, "CATALOG_CONFLICT");

    // Usage per product and per wallet.
    let key = PrivateKey::random();
    let wallet = key.address().to_string();
    assert_eq!(app.adjust(&key.address(), 50).await.0, 201);
    let nonce = app.session(&key.address()).await;
    assert_eq!(
        invoke(
            &app,
            &key,
            &nonce,
            "u1",
            "stub",
            "ok-action",
            json!({"q": "a"})
        )
        .await
        .0,
        200
    );
    assert_eq!(
        invoke(
            &app,
            &key,
            &nonce,
            "u2",
            "stub",
            "ok-action",
            json!({"q": "b"})
        )
        .await
        .0,
        200
    );
    assert_eq!(
        invoke(&app, &key, &nonce, "u3", "stub", "fail", json!({"q": "c"}))
            .await
            .0,
        502
    );
    assert_eq!(
        invoke(&app, &key, &nonce, "u4", "clock", "now", json!({}))
            .await
            .0,
        200
    );
    let (status, report) = app
        .admin(Method::GET, "/api/admin/tools/usage?group_by=product", None)
        .await;
    assert_eq!(status, 200, "{report}");
    let stub = report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["key"] == "stub")
        .unwrap();
    assert_eq!(
        (
            stub["calls"].as_i64(),
            stub["succeeded"].as_i64(),
            stub["failed"].as_i64(),
            stub["charged_credits"].as_i64()
        ),
        (Some(3), Some(2), Some(1), Some(6))
    );
    let (_, report) = app
        .admin(Method::GET, "/api/admin/tools/usage?group_by=wallet", None)
        .await;
    let mine = report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["key"] == wallet.as_str())
        .unwrap();
    assert_eq!(
        (mine["calls"].as_i64(), mine["charged_credits"].as_i64()),
        (Some(4), Some(7))
    );
    let (status, body) = app
        .admin(Method::GET, "/api/admin/tools/usage?group_by=planet", None)
        .await;
    assert_envelope(status, &body, 422, "VALIDATION_ERROR");
    let (_, records) = app
        .admin(
            Method::GET,
            &format!("/api/admin/tools/usage/records?wallet={wallet}&limit=2"),
            None,
        )
        .await;
    assert_eq!(records.as_array().unwrap().len(), 2);
    assert_eq!(records[0]["product_slug"], "clock");
    // Deactivation: unlisted and not invocable; PUT brings it back.
    let (status, _) = app
        .admin(Method::DELETE, "/api/admin/tools/clock", None)
        .await;
    assert_eq!(status, 200);
    let (_, list) = app.get("/api/external/tools?query=clock").await;
    assert_eq!(list["pagination"]["total_count"], 0);
    let (status, body) = invoke(&app, &key, &nonce, "u5", "clock", "now", json!({})).await;
    assert_envelope(status, &body, 404, "TOOL_NOT_FOUND");
    let (_, all) = app.admin(Method::GET, "/api/admin/tools", None).await;
    let clock = all
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["slug"] == "clock")
        .unwrap();
    assert_eq!(clock["status"], "inactive");
}

async fn workflow_session_attribution(backend: Backend) {
    let app = spawn_tools(backend).await;
    let workflow = crate::workflows::create_workflow(&app, "attributed", json!({}), true).await;
    let owner = PrivateKey::random();
    let stranger = PrivateKey::random();
    for key in [&owner, &stranger] {
        assert_eq!(app.adjust(&key.address(), 20).await.0, 201);
    }
    let (status, started) = crate::workflows::call(
        &app,
        &owner,
        SignedAction::WorkflowStart,
        &workflow,
        json!({"instance_id": "one"}),
    )
    .await;
    assert_eq!(status, 200, "{started}");
    let session = started["workflow_session_id"].as_str().unwrap().to_owned();
    let owner_nonce = app.session(&owner.address()).await;
    let stranger_nonce = app.session(&stranger.address()).await;
    let params = |sid: &str| json!({"text": "a b c", "_workflow_session_id": sid});

    // The owner's call is recorded on the session and shows in fetch results.
    let (status, body) = invoke(
        &app,
        &owner,
        &owner_nonce,
        "a1",
        "text-tools",
        "stats",
        params(&session),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["workflow_session_id"], session.as_str());
    assert_eq!(
        body["response"]["words"], 3,
        "the session id is not a tool parameter"
    );
    let (status, fetched) = crate::workflows::call(
        &app,
        &owner,
        SignedAction::WorkflowFetch,
        &workflow,
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "{fetched}");
    let results = fetched["sessions"][0]["results"].as_array().unwrap();
    assert_eq!(results.len(), 1, "{fetched}");
    assert_eq!(results[0]["request_id"], "a1");
    assert_eq!(results[0]["status"], "succeeded");
    assert_eq!(results[0]["charged_credits"], 2);
    assert_eq!(results[0]["response"]["words"], 3);
    // One id for one call: the session's result carries the invoke's usage_id.
    assert!(
        body["usage_id"].as_str().unwrap().starts_with("use_"),
        "{body}"
    );
    assert_eq!(results[0]["usage_id"], body["usage_id"], "{fetched}");
    assert!(results[0].get("call_id").is_none(), "{fetched}");

    // Another wallet cannot attribute to it; unknown ids are refused; nothing is charged.
    let (status, body) = invoke(
        &app,
        &stranger,
        &stranger_nonce,
        "b1",
        "text-tools",
        "stats",
        params(&session),
    )
    .await;
    assert_envelope(status, &body, 403, "WORKFLOW_SESSION_FOREIGN");
    let (status, body) = invoke(
        &app,
        &stranger,
        &stranger_nonce,
        "b2",
        "text-tools",
        "stats",
        params("ws_does_not_exist"),
    )
    .await;
    assert_envelope(status, &body, 404, "WORKFLOW_SESSION_NOT_FOUND");
    assert_eq!(balance_of(&app, &stranger.address().to_string()).await, 20);

    // Once ended, the session takes no more calls.
    let (status, ended) = crate::workflows::call(
        &app,
        &owner,
        SignedAction::WorkflowEnd,
        &workflow,
        json!({"workflow_session_id": session}),
    )
    .await;
    assert_eq!(status, 200, "{ended}");
    let (status, body) = invoke(
        &app,
        &owner,
        &owner_nonce,
        "a2",
        "text-tools",
        "stats",
        params(&session),
    )
    .await;
    assert_envelope(status, &body, 409, "WORKFLOW_SESSION_ENDED");
    assert_eq!(balance_of(&app, &owner.address().to_string()).await, 18);
    assert_eq!(app.scalar("SELECT COUNT(*) FROM tool_usage").await, 1);
}

/// Seed 002: "leave the payload: line empty when the endpoint has no payload body". An
/// invoke without `parameters` (or with `{}`) is accepted signed over an empty line as well
/// as over sha256("{}").
async fn no_parameters_accept_an_empty_payload_line(backend: Backend) {
    let app = spawn_tools(backend).await;
    let key = PrivateKey::random();
    assert_eq!(app.adjust(&key.address(), 20).await.0, 201);
    let nonce = app.session(&key.address()).await;
    let path = "/external/tools/clock/actions/now/invoke";
    let sign = |request_id: &str, payload: Option<&str>| {
        let message = build_message(
            &key.address(),
            &nonce,
            request_id,
            &Scope::method_path("POST", path),
            payload,
        );
        key.sign_message(&message).to_hex()
    };
    let envelope = |request_id: &str, signature: String| {
        json!({
            "wallet_address": key.address().to_string(),
            "session_nonce": nonce,
            "request_id": request_id,
            "signature": signature,
        })
    };
    let url = format!("/api{path}");
    // No parameters at all, empty payload line.
    let body = envelope("e1", sign("e1", None));
    let (status, answer) = app.post(&url, &body).await;
    assert_eq!(status, 200, "{answer}");
    // `parameters: {}`, empty payload line.
    let mut body = envelope("e2", sign("e2", None));
    body["parameters"] = json!({});
    let (status, answer) = app.post(&url, &body).await;
    assert_eq!(status, 200, "{answer}");
    // No parameters, sha256("{}") (as before).
    let empty = payload_hash(&JsonValue::empty_object());
    let body = envelope("e3", sign("e3", Some(&empty)));
    let (status, answer) = app.post(&url, &body).await;
    assert_eq!(status, 200, "{answer}");
    // Parameters that are not empty still need their hash: an empty line is refused.
    let mut body = envelope("e4", sign("e4", None));
    body["parameters"] = json!({"x": 1});
    let (status, answer) = app.post(&url, &body).await;
    assert_eq!(status, 401, "{answer}");
}

/// The signed bytes are the bytes the tool gets: numbers that serde_json would round
/// (`123456789012345678901234567890`, `0.30000000000000000001`) reach the vendor and the
/// built-in `json.canonicalize` exactly as they were signed.
async fn signed_number_lexemes_reach_the_tool(backend: Backend) {
    let app = spawn_tools(backend).await;
    let (vendor_url, seen) = spawn_vendor().await;
    register_stub(&app, &vendor_url).await;
    let number = json!({"type": "number"});
    let (status, body) = app
        .admin(
            Method::PUT,
            "/api/admin/tools/numbers",
            Some(&json!({
                "slug": "numbers", "name": "Numbers", "description": "Number lexemes",
                "categories": ["testing"], "vendor": "stub-vendor",
                "actions": [
                    {"name": "echo", "description": "vendor echo", "price_credits": 1,
                     "runner": {"kind": "http", "url": format!("{vendor_url}/ok")},
                     "parameters": {"big": number, "x": number, "tiny": number}},
                    {"name": "canon", "description": "canonical JSON", "price_credits": 1,
                     "runner": {"kind": "builtin", "name": "json.canonicalize"},
                     "parameters": {"value": {"type": "object"}}}
                ]
            })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let key = PrivateKey::random();
    assert_eq!(app.adjust(&key.address(), 20).await.0, 201);
    let nonce = app.session(&key.address()).await;
    // The body is written by hand: a serde_json value would round the numbers already.
    let send = |action: &'static str, request_id: &'static str, parameters: String| {
        let sent = agentpmt_protocol::canonical::parse(parameters.as_bytes()).unwrap();
        let message = build_message(
            &key.address(),
            &nonce,
            request_id,
            &Scope::method_path(
                "POST",
                format!("/external/tools/numbers/actions/{action}/invoke"),
            ),
            Some(&payload_hash(&sent)),
        );
        let body = format!(
            r#"{{"wallet_address":"{}","session_nonce":"{nonce}","request_id":"{request_id}","signature":"{}","parameters":{parameters}}}"#,
            key.address(),
            key.sign_message(&message).to_hex()
        );
        let url = format!("/api/external/tools/numbers/actions/{action}/invoke");
        let app = &app;
        async move { app.post_to(app.url(&url), body).await }
    };
    let numbers =
        r#"{"big": 123456789012345678901234567890, "x": 0.30000000000000000001, "tiny": 1e-07}"#;
    let sorted =
        r#"{"big":123456789012345678901234567890,"tiny":1e-07,"x":0.30000000000000000001}"#;

    let (status, answer) = send("echo", "n1", numbers.to_owned()).await;
    assert_eq!(status, 200, "{answer}");
    let raw = seen.raw.lock().unwrap().last().cloned().unwrap();
    assert!(
        raw.contains(&format!(r#""parameters":{sorted}"#)),
        "the vendor got {raw}"
    );
    assert_eq!(
        seen.bad_signatures.load(Ordering::SeqCst),
        0,
        "HMAC over the sent bytes"
    );

    let (status, answer) = send("canon", "n2", format!(r#"{{"value": {numbers}}}"#)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["response"]["canonical"], json!(sorted), "{answer}");
    assert_eq!(
        answer["response"]["sha256"],
        json!(agentpmt_protocol::canonical::sha256_hex(sorted))
    );
}

/// The unfiltered list's total_count comes from a counter that triggers keep: it follows
/// inserts and every change of status and visibility, and always equals a count of rows.
async fn the_tool_count_follows_every_change(backend: Backend) {
    let app = spawn_app_with(backend, AppOptions::configured(empty_catalog)).await;
    async fn listed(app: &TestApp) -> i64 {
        let (status, body) = app.get("/api/external/tools?page_size=1").await;
        assert_eq!(status, 200, "{body}");
        let counted = app
            .scalar("SELECT COUNT(*) FROM products WHERE status = 'active' AND is_private = 0")
            .await;
        assert_eq!(body["pagination"]["total_count"], json!(counted), "{body}");
        counted
    }
    async fn put(app: &TestApp, slug: &str, category: &str, private: bool, status: &str) {
        let (code, body) = app
            .admin(
                Method::PUT,
                &format!("/api/admin/tools/{slug}"),
                Some(&json!({
                    "slug": slug, "name": format!("Tool {slug}"), "description": format!("Finds {slug} things"),
                    "categories": [category], "private": private, "status": status,
                    "actions": [{"name": "run", "price_credits": 1, "runner": {"kind": "builtin", "name": "time.now"}}]
                })),
            )
            .await;
        assert!(code == 200 || code == 201, "{code} {body}");
    }
    assert_eq!(listed(&app).await, 0);
    put(&app, "a", "x", false, "active").await;
    put(&app, "b", "x", false, "active").await;
    put(&app, "c", "x", true, "active").await;
    put(&app, "d", "x", false, "inactive").await;
    assert_eq!(listed(&app).await, 2);
    // Each change of visibility or status moves the count, in either direction.
    put(&app, "a", "x", true, "active").await;
    assert_eq!(listed(&app).await, 1);
    put(&app, "c", "x", false, "active").await;
    assert_eq!(listed(&app).await, 2);
    put(&app, "d", "x", false, "active").await;
    assert_eq!(listed(&app).await, 3);
    put(&app, "b", "x", false, "inactive").await;
    assert_eq!(listed(&app).await, 2);
    // An upsert that changes neither leaves it alone.
    put(&app, "c", "y", false, "active").await;
    assert_eq!(listed(&app).await, 2);
    // Filtered lists still count their matches.
    let (_, found) = app.get("/api/external/tools?query=tool%20c").await;
    assert_eq!(found["pagination"]["total_count"], json!(1), "{found}");
    let (_, found) = app.get("/api/external/tools?categories=x").await;
    assert_eq!(found["pagination"]["total_count"], json!(1), "{found}");
}
