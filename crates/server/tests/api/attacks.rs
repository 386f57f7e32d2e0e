//! The money-safety adversarial suite, on a real local chain (anvil + the repository's
//! EIP-3009 token). Each test is an attack on a path where money or credits move; after
//! every one the money invariant is checked from the database and the chain
//! ([`assert_money_invariant`]: the payment audit is clean and the treasury holds exactly
//! what the claimed payments say).
//!
//! Transactions are ordered as an attacker would order them with automine off: the server's
//! settlement waits in the pool, the attacker's transaction (a cancel, a transfer away, the
//! same authorization submitted by someone else) gets a far higher tip, then a block is
//! mined. An RPC proxy in front of anvil plays a node that is down, erroring, or refusing
//! wide `eth_getLogs` ranges, as hosted nodes do.

use crate::backend_tests;
use crate::chain::{Chain, GAS_KEY};
use crate::helpers::*;
use crate::purchase::{balance, now_secs, pay, purchase, requirement_of, PURCHASE};
use agentpmt_protocol::x402::{encode_header, sign_authorization, PaymentRequirements};
use agentpmt_protocol::PrivateKey;
use agentpmt_server::payments::networks::PaymentsFile;
use alloy::primitives::U256;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

backend_tests!(
    cancel_front_run_of_a_purchase_grants_nothing,
    cancel_front_run_of_a_tool_payment_returns_no_output,
    funds_moved_away_before_settlement_grant_nothing,
    authorization_submitted_by_someone_else_is_credited_once,
    node_down_during_confirm_and_reconcile_is_pending_then_granted_once,
    node_refusing_wide_log_ranges_still_reconciles,
    receipt_timeout_then_late_success_is_granted_once,
    reorg_before_depth_resubmits_and_credits_once,
    reorg_before_depth_then_cancel_grants_nothing,
    transfer_purchase_waits_for_depth,
    one_payment_is_credited_once_across_paths,
    one_authorization_raced_across_purchase_and_tool_pays_once,
    a_late_tool_answer_is_never_charged,
    kill_9_between_broadcast_and_grant_is_credited_once_after_restart,
);

/// 500 credits in the test token's base units.
const PRICE: u64 = 5_000_000;
/// A tool action priced like a credit pack (500 credits): its x402 payment has the same
/// amount as a purchase.
const PACK_TOOL: &str = "/api/external/tools/pack-tool/actions/digest/invoke";
/// A secret in the RPC URL's path, as hosted providers put API keys; it must never reach a
/// client.
const RPC_SECRET: &str = "sk-rpc-SECRET-0123456789";

// ---------------------------------------------------------------------------------------
// An RPC node that misbehaves on demand.

/// How the proxy in front of anvil behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Node {
    /// Forwards everything.
    Up = 0,
    /// Answers every call with HTTP 503.
    Down = 1,
    /// Answers every call with a JSON-RPC error.
    Erroring = 2,
}

/// A JSON-RPC proxy in front of anvil at `{url}` (which carries [`RPC_SECRET`] in its
/// path). It always refuses `eth_getLogs` over more than 500 blocks or without both bounds
/// (a query "from block 0 to latest" included), as hosted nodes do, and counts the
/// refusals.
#[derive(Debug, Clone)]
struct Proxy {
    url: String,
    mode: Arc<AtomicU8>,
    wide_log_queries: Arc<std::sync::atomic::AtomicUsize>,
}

impl Proxy {
    async fn start(upstream: &str) -> Proxy {
        let mode = Arc::new(AtomicU8::new(Node::Up as u8));
        let wide = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let upstream = upstream.to_owned();
        let (m, w) = (mode.clone(), wide.clone());
        let http = reqwest::Client::new();
        let app = axum::Router::new().route(
            "/{*path}",
            axum::routing::post(move |body: axum::body::Bytes| {
                let (m, w, http, upstream) = (m.clone(), w.clone(), http.clone(), upstream.clone());
                async move { proxy(m, w, http, upstream, body).await }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v2/{RPC_SECRET}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Proxy {
            url,
            mode,
            wide_log_queries: wide,
        }
    }

    fn set(&self, node: Node) {
        self.mode.store(node as u8, Ordering::SeqCst);
    }
}

async fn proxy(
    mode: Arc<AtomicU8>,
    wide: Arc<std::sync::atomic::AtomicUsize>,
    http: reqwest::Client,
    upstream: String,
    body: axum::body::Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let error = |id: &Value, message: &str| {
        axum::Json(
            json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32000, "message": message}}),
        )
        .into_response()
    };
    match mode.load(Ordering::SeqCst) {
        1 => return (StatusCode::SERVICE_UNAVAILABLE, "node down").into_response(),
        2 => return error(&request["id"], "internal error"),
        _ => {}
    }
    let calls: Vec<&Value> = match &request {
        Value::Array(batch) => batch.iter().collect(),
        one => vec![one],
    };
    for call in &calls {
        if call["method"] == "eth_getLogs" {
            let filter = &call["params"][0];
            let block = |k: &str| -> Option<u64> {
                let text = filter[k].as_str()?;
                u64::from_str_radix(text.trim_start_matches("0x"), 16).ok()
            };
            let too_wide = match (block("fromBlock"), block("toBlock")) {
                (Some(from), Some(to)) => to.saturating_sub(from) >= 500,
                _ => true,
            };
            if too_wide {
                wide.fetch_add(1, Ordering::SeqCst);
                return error(
                    &call["id"],
                    "query exceeds max block range 500 (ranges from block 0 are not served)",
                );
            }
        }
    }
    match http
        .post(&upstream)
        .body(body)
        .header("content-type", "application/json")
        .send()
        .await
    {
        Ok(r) => {
            let status = StatusCode::from_u16(r.status().as_u16()).unwrap();
            let bytes = r.bytes().await.unwrap_or_default();
            (status, [("content-type", "application/json")], bytes).into_response()
        }
        Err(_) => (StatusCode::BAD_GATEWAY, "upstream").into_response(),
    }
}

// ---------------------------------------------------------------------------------------
// Set-up.

/// A server settling on `chain` through `proxy`, with `confirmations` and a receipt wait of
/// `receipt_secs`; the reconciler runs only when a test calls it (or every second with
/// `background`).
async fn spawn_on_chain(
    backend: Backend,
    chain: &Chain,
    proxy: &Proxy,
    confirmations: u64,
    receipt_secs: u64,
    background: bool,
) -> TestApp {
    spawn_app_with(
        backend,
        options(chain, proxy, confirmations, receipt_secs, background),
    )
    .await
}

fn payments(chain: &Chain, proxy: &Proxy, confirmations: u64, receipt_secs: u64) -> PaymentsFile {
    let mut payments = chain.payments();
    payments.receipt_timeout_secs = Some(receipt_secs);
    payments.networks[0].rpc_url = Some(proxy.url.clone());
    payments.networks[0].confirmations = Some(confirmations);
    payments
}

fn options(
    chain: &Chain,
    proxy: &Proxy,
    confirmations: u64,
    receipt_secs: u64,
    background: bool,
) -> AppOptions {
    AppOptions {
        payments: Some(payments(chain, proxy, confirmations, receipt_secs)),
        settlement_key: Some(GAS_KEY.into()),
        reconcile_interval_secs: if background { 1 } else { 3600 },
        ..AppOptions::default()
    }
}

/// A funded payer (tokens for `packs` purchases, and gas for its own transactions).
async fn payer(chain: &Chain, packs: u64) -> PrivateKey {
    let key = PrivateKey::random();
    chain.mint(key.address().address(), packs * PRICE).await;
    chain.fund_gas(key.address().address()).await;
    key
}

fn purchase_body(key: &PrivateKey) -> Value {
    json!({"wallet_address": key.address().to_string(), "credits": 500, "payment_method": "x402"})
}

/// The purchase challenge's requirement and a signed payment for it (and its nonce).
async fn signed_purchase(app: &TestApp, key: &PrivateKey) -> (PaymentRequirements, String, Value) {
    let (status, challenge, headers) = purchase(app, &purchase_body(key), None).await;
    let req = requirement_of(status, &challenge, &headers);
    let payload = sign_authorization(key, &req, None, now_secs()).unwrap();
    let value = serde_json::to_value(&payload).unwrap();
    (req, encode_header(&payload), value["payload"].clone())
}

fn nonce_of(payload: &Value) -> alloy::primitives::B256 {
    payload["authorization"]["nonce"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Registers `pack-tool/digest`: a built-in tool priced 500 credits, payable with x402.
async fn register_pack_tool(app: &TestApp) {
    let (status, body) = app
        .admin(
            Method::PUT,
            "/api/admin/tools/pack-tool",
            Some(&json!({
                "slug": "pack-tool", "name": "Pack-priced tool", "description": "SHA-256, at a pack's price",
                "categories": ["testing"],
                "actions": [{
                    "name": "digest", "description": "SHA-256 of a text", "price_credits": 500,
                    "x402_enabled": true,
                    "runner": {"kind": "builtin", "name": "text.sha256"},
                    "parameters": {"text": {"type": "string", "required": true}}
                }]
            })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

/// POSTs a direct x402 tool call.
async fn tool_call(
    app: &TestApp,
    path: &str,
    body: &Value,
    payment: Option<&str>,
) -> (StatusCode, Value, String) {
    let mut request = app.http.post(app.url(path)).json(body);
    if let Some(p) = payment {
        request = request.header("PAYMENT-SIGNATURE", p);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let headers = format!("{:?}", response.headers());
    let text = response.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::Null),
        headers + &text,
    )
}

/// Finishes whatever is open (both reconcilers, as the background task would), then checks
/// the money invariant: the payment audit is clean with nothing open, the treasury holds
/// exactly the sum of the claimed payments, every purchase credit has its claim.
async fn assert_money_invariant(app: &TestApp, chain: &Chain) {
    app.state
        .payments
        .reconcile_open(&app.state.db)
        .await
        .unwrap();
    agentpmt_server::tools::invoke::reconcile_payments(&app.state)
        .await
        .unwrap();
    let report = agentpmt_server::payments::audit::run(&app.state.db, &app.state.payments)
        .await
        .unwrap();
    assert!(
        report.clean,
        "the payment audit found discrepancies: {report:#?}"
    );
    assert_eq!(report.open_settlements, 0, "{report:#?}");
    let amounts = app
        .strings("SELECT amount_base_units FROM payment_claims")
        .await;
    let claimed: U256 = amounts
        .iter()
        .map(|a| a.parse::<U256>().unwrap())
        .fold(U256::ZERO, |a, b| a + b);
    assert_eq!(
        chain.balance(chain.pay_to).await,
        claimed,
        "the treasury holds exactly what the claimed payments say"
    );
    let credited = app
        .scalar("SELECT CAST(COALESCE(SUM(amount_credits), 0) AS BIGINT) FROM ledger_entries WHERE kind = 'credit_purchase'")
        .await;
    assert_eq!(credited, report.credits_purchased);
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM ledger_entries WHERE kind = 'credit_purchase'")
            .await,
        app.scalar("SELECT COUNT(*) FROM payment_claims WHERE kind = 'purchase'")
            .await,
        "one claim per purchase credit"
    );
}

/// Polls `check` (up to ~40 s).
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..800 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never happened: {what}");
}

fn assert_no_secret(text: &str) {
    assert!(
        !text.contains(RPC_SECRET),
        "the RPC URL's secret reached a client: {text}"
    );
}

// ---------------------------------------------------------------------------------------
// The attacks.

/// The payer front-runs the server's `transferWithAuthorization` with a higher-tip
/// `cancelAuthorization`: the settlement reverts, the authorization's state is "used", but no
/// payment happened. Nothing may be granted.
async fn cancel_front_run_of_a_purchase_grants_nothing(backend: Backend) {
    let chain = Chain::start().await;
    let proxy = Proxy::start(&chain.anvil.rpc_url).await;
    let app = spawn_on_chain(backend, &chain, &proxy, 0, 20, false).await;
    let key = payer(&chain, 1).await;
    let (_, header, payload) = signed_purchase(&app, &key).await;
    chain.set_automine(false).await;
    let request = {
        let (app_url, header, body) = (app.url(PURCHASE), header.clone(), purchase_body(&key));
        tokio::spawn(async move {
            let r = reqwest::Client::new()
                .post(app_url)
                .header("PAYMENT-SIGNATURE", header)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = r.status();
            (status, r.text().await.unwrap())
        })
    };
    chain.wait_for_settlement_in_pool().await;
    chain.cancel_authorization(&key, nonce_of(&payload)).await;
    chain.mine(1).await;
    chain.set_automine(true).await;
    let (status, text) = request.await.unwrap();
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{body}");
    assert_eq!(body["error_code"], "PAYMENT_SETTLEMENT_FAILED", "{body}");
    assert_no_secret(&text);
    assert_eq!(balance(&app, &key.address().to_string()).await, 0);
    assert_eq!(chain.balance(chain.pay_to).await, U256::ZERO);
    // The same payment again changes nothing.
    let (status, again, _) = purchase(
        &app,
        &purchase_body(&key),
        Some(("PAYMENT-SIGNATURE", &header)),
    )
    .await;
    assert!(status.is_client_error(), "{again}");
    assert_eq!(balance(&app, &key.address().to_string()).await, 0);
    assert_money_invariant(&app, &chain).await;
}

/// The same front-run against a direct x402 tool payment: no tool output without payment.
async fn cancel_front_run_of_a_tool_payment_returns_no_output(backend: Backend) {
    let chain = Chain::start().await;
    let proxy = Proxy::start(&chain.anvil.rpc_url).await;
    let app = spawn_on_chain(backend, &chain, &proxy, 0, 20, false).await;
    register_pack_tool(&app).await;
    let key = payer(&chain, 1).await;
    let body = json!({"text": "secret output"});
    let (status, challenge, _) = tool_call(&app, PACK_TOOL, &body, None).await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED);
    let req: PaymentRequirements = serde_json::from_value(challenge["accepts"][0].clone()).unwrap();
    let payload = sign_authorization(&key, &req, None, now_secs()).unwrap();
    let nonce = nonce_of(&serde_json::to_value(&payload).unwrap()["payload"]);
    let header = encode_header(&payload);
    chain.set_automine(false).await;
    let request = {
        let (url, header, body) = (app.url(PACK_TOOL), header.clone(), body.clone());
        tokio::spawn(async move {
            let r = reqwest::Client::new()
                .post(url)
                .header("PAYMENT-SIGNATURE", header)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = r.status();
            (status, r.text().await.unwrap())
        })
    };
    chain.wait_for_settlement_in_pool().await;
    chain.cancel_authorization(&key, nonce).await;
    chain.mine(1).await;
    chain.set_automine(true).await;
    let (status, text) = request.await.unwrap();
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{text}");
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        answer["error_code"], "PAYMENT_SETTLEMENT_FAILED",
        "{answer}"
    );
    // sha256("secret output") must not be in any answer.
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"secret output"));
    assert!(!text.contains(&digest), "the tool output leaked: {text}");
    let (_, again, raw) = tool_call(&app, PACK_TOOL, &body, Some(&header)).await;
    assert!(!raw.contains(&digest), "{again}");
    assert_no_secret(&raw);
    assert_eq!(chain.balance(chain.pay_to).await, U256::ZERO);
    assert_money_invariant(&app, &chain).await;
}

/// The payer moves its funds away (higher tip) after the server checked them: the
/// settlement reverts; nothing granted; once re-funded, the same authorization pays once.
async fn funds_moved_away_before_settlement_grant_nothing(backend: Backend) {
    let chain = Chain::start().await;
    let proxy = Proxy::start(&chain.anvil.rpc_url).await;
    let app = spawn_on_chain(backend, &chain, &proxy, 0, 20, false).await;
    let key = payer(&chain, 1).await;
    let (_, header, _) = signed_purchase(&app, &key).await;
    chain.set_automine(false).await;
    let request = {
        let (app_url, header, body) = (app.url(PURCHASE), header.clone(), purchase_body(&key));
        tokio::spawn(async move {
            let r = reqwest::Client::new()
                .post(app_url)
                .header("PAYMENT-SIGNATURE", header)
                .json(&body)
                .send()
                .await
                .unwrap();
            (r.status(), r.json::<Value>().await.unwrap())
        })
    };
    chain.wait_for_settlement_in_pool().await;
    chain.move_funds_away(&key, PRICE).await;
    chain.mine(1).await;
    chain.set_automine(true).await;
    let (status, body) = request.await.unwrap();
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{body}");
    assert_eq!(body["error_code"], "PAYMENT_SETTLEMENT_FAILED", "{body}");
    assert_eq!(body["details"]["reason"], "insufficient_funds", "{body}");
    assert_eq!(balance(&app, &key.address().to_string()).await, 0);
    assert_money_invariant(&app, &chain).await;
    // Never used on chain: once funded again the same authorization pays, once.
    chain.mint(key.address().address(), PRICE).await;
    let (status, paid, _) = purchase(
        &app,
        &purchase_body(&key),
        Some(("PAYMENT-SIGNATURE", &header)),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{paid}");
    assert_eq!(balance(&app, &key.address().to_string()).await, 500);
    assert_money_invariant(&app, &chain).await;
}

/// Someone submits the payer's signed authorization before the server does (higher tip).
/// The payment reached `payTo` in their transaction: it is found through the
/// `AuthorizationUsed` event (bounded log queries) and credited exactly once.
async fn authorization_submitted_by_someone_else_is_credited_once(backend: Backend) {
    let chain = Chain::start().await;
    let proxy = Proxy::start(&chain.anvil.rpc_url).await;
    let app = spawn_on_chain(backend, &chain, &proxy, 0, 20, false).await;
    let key = payer(&chain, 1).await;
    let (_, header, payload) = signed_purchase(&app, &key).await;
    chain.set_automine(false).await;
    let request = {
        let (app_url, header, body) = (app.url(PURCHASE), header.clone(), purchase_body(&key));
        tokio::spawn(async move {
            let r = reqwest::Client::new()
                .post(app_url)
                .header("PAYMENT-SIGNATURE", header)
                .json(&body)
                .send()
                .await
                .unwrap();
            (r.status(), r.json::<Value>().await.unwrap())
        })
    };
    chain.wait_for_settlement_in_pool().await;
    // Anvil's first account (the deployer) plays the third party.
    chain
        .front_run_with_authorization(crate::chain::DEPLOYER_KEY, &payload)
        .await;
    chain.mine(1).await;
    chain.set_automine(true).await;
    let (status, body) = request.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["balance_credits"], 500);
    assert_eq!(chain.balance(chain.pay_to).await, U256::from(PRICE));
    let (status, again, _) = purchase(
        &app,
        &purchase_body(&key),
        Some(("PAYMENT-SIGNATURE", &header)),
    )
    .await;
    assert!(
        status == StatusCode::CONFLICT || status == StatusCode::OK,
        "{again}"
    );
    assert_eq!(balance(&app, &key.address().to_string()).await, 500);
    assert_money_invariant(&app, &chain).await;
}

/// The node goes down after the broadcast: the purchase is pending (202), never granted
/// while the chain cannot be read (also during reconciliation), and granted exactly once
/// when the node is back. The node's URL (with its API key) never reaches the client.
async fn node_down_during_confirm_and_reconcile_is_pending_then_granted_once(backend: Backend) {
    let chain = Chain::start().await;
    let proxy = Proxy::start(&chain.anvil.rpc_url).await;
    let app = spawn_on_chain(backend, &chain, &proxy, 0, 2, false).await;
    let key = payer(&chain, 1).await;
    let wallet = key.address().to_string();
    let body = json!({"wallet_address": wallet, "credits": 500, "payment_method": "x402", "request_id": "down-1"});
    let (status, challenge, headers) = purchase(&app, &body, None).await;
    let req = requirement_of(status, &challenge, &headers);
    let header = pay(&key, &req);
    chain.set_automine(false).await;
    let request = {
        let (app_url, header, body) = (app.url(PURCHASE), header.clone(), body.clone());
        tokio::spawn(async move {
            let r = reqwest::Client::new()
                .post(app_url)
                .header("PAYMENT-SIGNATURE", header)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = r.status();
            (status, r.text().await.unwrap())
        })
    };
    chain.wait_for_settlement_in_pool().await;
    proxy.set(Node::Down);
    chain.mine(1).await;
    chain.set_automine(true).await;
    let (status, text) = request.await.unwrap();
    assert_eq!(status, StatusCode::ACCEPTED, "{text}");
    let pending: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(pending["status"], "pending");
    assert_no_secret(&text);
    // The transfer happened on chain; nothing is credited while the node cannot say so.
    assert_eq!(chain.balance(chain.pay_to).await, U256::from(PRICE));
    assert_eq!(balance(&app, &wallet).await, 0);
    for node in [Node::Down, Node::Erroring] {
        proxy.set(node);
        app.state
            .payments
            .reconcile_open(&app.state.db)
            .await
            .unwrap();
        assert_eq!(balance(&app, &wallet).await, 0, "{node:?}");
        let (status, again, _) = purchase(&app, &body, Some(("PAYMENT-SIGNATURE", &header))).await;
        assert!(
            status == StatusCode::ACCEPTED || status == StatusCode::CONFLICT,
            "{node:?}: {again}"
        );
        assert_no_secret(&again.to_string());
        let report = agentpmt_server::payments::audit::run(&app.state.db, &app.state.payments)
            .await
            .unwrap();
        assert_eq!(
            report.open_settlements, 1,
            "pending, never lost: {report:#?}"
        );
    }
    proxy.set(Node::Up);
    app.state
        .payments
        .reconcile_open(&app.state.db)
        .await
        .unwrap();
    assert_eq!(balance(&app, &wallet).await, 500);
    let (status, paid, _) = purchase(&app, &body, Some(("PAYMENT-SIGNATURE", &header))).await;
    assert_eq!(status, StatusCode::OK, "{paid}");
    assert_eq!(paid["balance_credits"], 500);
    assert_money_invariant(&app, &chain).await;
}

/// A node that refuses `eth_getLogs` from block 0 or over wide ranges (most hosted nodes):
/// after 1,200 more blocks, an authorization used by someone else is still found with
/// bounded queries, and credited once.
async fn node_refusing_wide_log_ranges_still_reconciles(backend: Backend) {
    let chain = Chain::start().await;
    let proxy = Proxy::start(&chain.anvil.rpc_url).await;
    let app = spawn_on_chain(backend, &chain, &proxy, 0, 2, false).await;
    let key = payer(&chain, 1).await;
    let (_, header, payload) = signed_purchase(&app, &key).await;
    chain.set_automine(false).await;
    let request = {
        let (app_url, header, body) = (app.url(PURCHASE), header.clone(), purchase_body(&key));
        tokio::spawn(async move {
            let r = reqwest::Client::new()
                .post(app_url)
                .header("PAYMENT-SIGNATURE", header)
                .json(&body)
                .send()
                .await
                .unwrap();
            (r.status(), r.json::<Value>().await.unwrap())
        })
    };
    chain.wait_for_settlement_in_pool().await;
    // The node is unreachable while the third party's transaction lands, so the request
    // cannot learn the outcome and answers pending.
    proxy.set(Node::Down);
    chain
        .front_run_with_authorization(crate::chain::DEPLOYER_KEY, &payload)
        .await;
    chain.mine(1).await;
    chain.set_automine(true).await;
    let (status, body) = request.await.unwrap();
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    chain.mine(1_200).await;
    proxy.set(Node::Up);
    app.state
        .payments
        .reconcile_open(&app.state.db)
        .await
        .unwrap();
    assert_eq!(balance(&app, &key.address().to_string()).await, 500);
    assert_eq!(
        proxy.wide_log_queries.load(Ordering::SeqCst),
        0,
        "every log query was bounded"
    );
    assert_money_invariant(&app, &chain).await;
}

/// The receipt does not arrive in time: 202 pending; when it lands, the background
/// reconciler grants once, and the same request returns the settled purchase.
async fn receipt_timeout_then_late_success_is_granted_once(backend: Backend) {
    let chain = Chain::start().await;
    let proxy = Proxy::start(&chain.anvil.rpc_url).await;
    let app = spawn_on_chain(backend, &chain, &proxy, 0, 1, true).await;
    let key = payer(&chain, 1).await;
    let wallet = key.address().to_string();
    let (_, header, _) = signed_purchase(&app, &key).await;
    chain.set_automine(false).await;
    let (status, body, _) = purchase(
        &app,
        &purchase_body(&key),
        Some(("PAYMENT-SIGNATURE", &header)),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(balance(&app, &wallet).await, 0);
    chain.mine(1).await;
    chain.set_automine(true).await;
    eventually("the reconciler grants the late settlement", || async {
        balance(&app, &wallet).await == 500
    })
    .await;
    let (status, paid, _) = purchase(
        &app,
        &purchase_body(&key),
        Some(("PAYMENT-SIGNATURE", &header)),
    )
    .await;
    assert!(
        status == StatusCode::CONFLICT || status == StatusCode::OK,
        "{paid}"
    );
    assert_eq!(balance(&app, &wallet).await, 500);
    assert_money_invariant(&app, &chain).await;
}

/// Depth 2: the settlement is mined (0 confirmations) and then reorged away. It is never
/// credited before depth; after the reorg the unused authorization is settled again and
/// credited once at depth.
async fn reorg_before_depth_resubmits_and_credits_once(backend: Backend) {
    let chain = Chain::start().await;
    let proxy = Proxy::start(&chain.anvil.rpc_url).await;
    let app = spawn_on_chain(backend, &chain, &proxy, 2, 1, false).await;
    let key = payer(&chain, 1).await;
    let wallet = key.address().to_string();
    let (_, header, _) = signed_purchase(&app, &key).await;
    let before = chain.snapshot().await;
    let (status, body, _) = purchase(
        &app,
        &purchase_body(&key),
        Some(("PAYMENT-SIGNATURE", &header)),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "mined, not deep: {body}");
    assert!(
        body["message"].as_str().unwrap().contains("confirmations"),
        "{body}"
    );
    assert_eq!(chain.balance(chain.pay_to).await, U256::from(PRICE));
    chain.mine(1).await;
    app.state
        .payments
        .reconcile_open(&app.state.db)
        .await
        .unwrap();
    assert_eq!(balance(&app, &wallet).await, 0, "1 of 2 confirmations");
    // The reorg: the blocks with the settlement are gone.
    chain.revert(before).await;
    assert_eq!(chain.balance(chain.pay_to).await, U256::ZERO);
    app.state
        .payments
        .reconcile_open(&app.state.db)
        .await
        .unwrap();
    assert_eq!(balance(&app, &wallet).await, 0);
    chain.mine(2).await;
    app.state
        .payments
        .reconcile_open(&app.state.db)
        .await
        .unwrap();
    assert_eq!(balance(&app, &wallet).await, 500, "settled again, at depth");
    assert_eq!(chain.balance(chain.pay_to).await, U256::from(PRICE));
    let (status, paid, _) = purchase(
        &app,
        &purchase_body(&key),
        Some(("PAYMENT-SIGNATURE", &header)),
    )
    .await;
    assert!(
        status == StatusCode::CONFLICT || status == StatusCode::OK,
        "{paid}"
    );
    assert_money_invariant(&app, &chain).await;
}

/// Depth 2, reorged before depth, and the payer cancels the authorization on the new chain:
/// nothing is ever credited.
async fn reorg_before_depth_then_cancel_grants_nothing(backend: Backend) {
    let chain = Chain::start().await;
    let proxy = Proxy::start(&chain.anvil.rpc_url).await;
    let app = spawn_on_chain(backend, &chain, &proxy, 2, 1, false).await;
    let key = payer(&chain, 1).await;
    let wallet = key.address().to_string();
    let (_, header, payload) = signed_purchase(&app, &key).await;
    let before = chain.snapshot().await;
    let (status, body, _) = purchase(
        &app,
        &purchase_body(&key),
        Some(("PAYMENT-SIGNATURE", &header)),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    chain.revert(before).await;
    chain.cancel_authorization(&key, nonce_of(&payload)).await;
    chain.mine(3).await;
    app.state
        .payments
        .reconcile_open(&app.state.db)
        .await
        .unwrap();
    assert_eq!(balance(&app, &wallet).await, 0);
    let (status, failed, _) = purchase(
        &app,
        &purchase_body(&key),
        Some(("PAYMENT-SIGNATURE", &header)),
    )
    .await;
    assert!(status.is_client_error(), "{failed}");
    assert_eq!(chain.balance(chain.pay_to).await, U256::ZERO);
    assert_eq!(balance(&app, &wallet).await, 0);
    assert_money_invariant(&app, &chain).await;
}

/// A transfer purchase at depth 2: pending until deep enough, then credited once.
async fn transfer_purchase_waits_for_depth(backend: Backend) {
    let chain = Chain::start().await;
    let proxy = Proxy::start(&chain.anvil.rpc_url).await;
    let app = spawn_on_chain(backend, &chain, &proxy, 2, 1, false).await;
    let key = payer(&chain, 1).await;
    let wallet = key.address().to_string();
    let tx = chain.transfer(&key, chain.pay_to, PRICE).await;
    let body = json!({"wallet_address": wallet, "credits": 500, "payment_method": "transfer", "transaction_hash": tx});
    let (status, pending, _) = purchase(&app, &body, None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{pending}");
    assert_eq!(balance(&app, &wallet).await, 0);
    chain.mine(2).await;
    let (status, paid, _) = purchase(&app, &body, None).await;
    assert_eq!(status, StatusCode::OK, "{paid}");
    assert_eq!(paid["balance_credits"], 500);
    let (status, again, _) = purchase(&app, &body, None).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["purchase_id"], paid["purchase_id"]);
    assert_eq!(balance(&app, &wallet).await, 500);
    assert_money_invariant(&app, &chain).await;
}

/// One on-chain payment presented on every path: the transaction of an x402 purchase and the
/// transaction of a direct x402 tool payment (priced like a pack) are each refused as a
/// `transfer` purchase.
async fn one_payment_is_credited_once_across_paths(backend: Backend) {
    let chain = Chain::start().await;
    let proxy = Proxy::start(&chain.anvil.rpc_url).await;
    let app = spawn_on_chain(backend, &chain, &proxy, 0, 20, false).await;
    register_pack_tool(&app).await;
    let key = payer(&chain, 2).await;
    let wallet = key.address().to_string();
    let (_, header, _) = signed_purchase(&app, &key).await;
    let (status, paid, _) = purchase(
        &app,
        &purchase_body(&key),
        Some(("PAYMENT-SIGNATURE", &header)),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{paid}");
    let x402_tx = paid["transaction_hash"].as_str().unwrap().to_owned();

    let (status, challenge, _) = tool_call(&app, PACK_TOOL, &json!({"text": "t"}), None).await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED);
    let req: PaymentRequirements = serde_json::from_value(challenge["accepts"][0].clone()).unwrap();
    let tool_header = encode_header(&sign_authorization(&key, &req, None, now_secs()).unwrap());
    let (status, ran, _) =
        tool_call(&app, PACK_TOOL, &json!({"text": "t"}), Some(&tool_header)).await;
    assert_eq!(status, StatusCode::OK, "{ran}");
    let tool_tx = ran["x402"]["transaction"].as_str().unwrap().to_owned();

    for (tx, by) in [(&x402_tx, "purchase"), (&tool_tx, "tool_payment")] {
        for wallet in [wallet.clone(), PrivateKey::random().address().to_string()] {
            let body = json!({"wallet_address": wallet, "credits": 500, "payment_method": "transfer", "transaction_hash": tx});
            let (status, err, _) = purchase(&app, &body, None).await;
            let details = assert_envelope(status, &err, 409, "PAYMENT_ALREADY_USED");
            assert_eq!(details["claimed_by"], by, "{err}");
        }
    }
    assert_eq!(balance(&app, &wallet).await, 500);
    assert_eq!(chain.balance(chain.pay_to).await, U256::from(2 * PRICE));
    assert_money_invariant(&app, &chain).await;
}

/// One authorization (valid for both: a purchase and a pack-priced tool call have the same
/// requirement) sent 10 times to each at once: one wins, one transfer.
async fn one_authorization_raced_across_purchase_and_tool_pays_once(backend: Backend) {
    let chain = Chain::start().await;
    let proxy = Proxy::start(&chain.anvil.rpc_url).await;
    let app = spawn_on_chain(backend, &chain, &proxy, 0, 20, false).await;
    register_pack_tool(&app).await;
    let key = payer(&chain, 3).await;
    let (req, header, _) = signed_purchase(&app, &key).await;
    let (_, challenge, _) = tool_call(&app, PACK_TOOL, &json!({"text": "t"}), None).await;
    assert_eq!(
        challenge["accepts"][0],
        serde_json::to_value(&req).unwrap(),
        "the same requirement"
    );
    let gas_nonce = chain.gas_key_nonce().await;
    let purchases = (0..10).map(|_| {
        let (app, header, body) = (&app, header.clone(), purchase_body(&key));
        async move {
            purchase(app, &body, Some(("PAYMENT-SIGNATURE", &header)))
                .await
                .0
        }
    });
    let tools = (0..10).map(|_| {
        let (app, header) = (&app, header.clone());
        async move {
            tool_call(app, PACK_TOOL, &json!({"text": "t"}), Some(&header))
                .await
                .0
        }
    });
    let (p, t) = futures::future::join(
        futures::future::join_all(purchases),
        futures::future::join_all(tools),
    )
    .await;
    let won = p
        .iter()
        .chain(t.iter())
        .filter(|s| **s == StatusCode::OK)
        .count();
    assert_eq!(won, 1, "purchases {p:?}, tools {t:?}");
    assert!(p
        .iter()
        .chain(t.iter())
        .all(|s| *s == StatusCode::OK || *s == StatusCode::CONFLICT));
    assert_eq!(
        chain.gas_key_nonce().await,
        gas_nonce + 1,
        "one transaction"
    );
    assert_eq!(chain.balance(chain.pay_to).await, U256::from(PRICE));
    assert_money_invariant(&app, &chain).await;
}

/// A tool that answers after the request's deadline is never charged: an operator cannot
/// configure a vendor timeout that does not fit (422), and a call whose catalog entry
/// predates a shorter deadline is cut at the deadline and voided, credits and x402 alike.
async fn a_late_tool_answer_is_never_charged(backend: Backend) {
    let chain = Chain::start().await;
    let proxy = Proxy::start(&chain.anvil.rpc_url).await;
    let first = spawn_on_chain(backend, &chain, &proxy, 0, 20, false).await;
    let (vendor, seen) = spawn_late_vendor().await;
    let (status, body) = first
        .admin(
            Method::PUT,
            "/api/admin/vendors/late-vendor",
            Some(&json!({"slug": "late-vendor", "name": "Late vendor"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let product = |timeout: u64| {
        json!({
            "slug": "late", "name": "Late tool", "description": "Answers after 4 s",
            "vendor": "late-vendor",
            "actions": [{
                "name": "answer", "description": "a slow answer", "price_credits": 5,
                "x402_enabled": true,
                "runner": {"kind": "http", "url": format!("{vendor}/late"), "timeout_ms": timeout},
                "parameters": {}
            }]
        })
    };
    // 30 s deadline: 25 s leaves too little for settling an x402 call (8 s).
    let (status, body) = first
        .admin(Method::PUT, "/api/admin/tools/late", Some(&product(25_000)))
        .await;
    assert_envelope(status, &body, 422, "VALIDATION_ERROR");
    assert_eq!(
        body["detail"][0]["loc"],
        json!(["body", "actions", "0", "runner", "timeout_ms"])
    );
    let (status, body) = first
        .admin(Method::PUT, "/api/admin/tools/late", Some(&product(20_000)))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // An instance with a 3 s deadline on the same catalog: the tool gets 1 s at most.
    fn short(config: &mut agentpmt_server::config::ServerConfig) {
        config.request_timeout_secs = 3;
    }
    let mut opts = options(&chain, &proxy, 0, 20, false);
    opts.configure = Some(short);
    let app = spawn_on(&first.database_url, opts).await;
    let key = PrivateKey::random();
    let (status, _) = app.adjust(&key.address(), 100).await;
    assert_eq!(status, StatusCode::CREATED);
    let nonce = app.session(&key.address()).await;
    let signed =
        crate::tools::invoke(&app, &key, &nonce, "late-1", "late", "answer", json!({})).await;
    assert_envelope(signed.0, &signed.1, 504, "TOOL_TIMEOUT");
    assert_eq!(
        balance(&app, &key.address().to_string()).await,
        100,
        "voided"
    );

    let payer = payer(&chain, 1).await;
    let path = "/api/external/tools/late/actions/answer/invoke";
    let (status, challenge, _) = tool_call(&app, path, &json!({}), None).await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{challenge}");
    let req: PaymentRequirements = serde_json::from_value(challenge["accepts"][0].clone()).unwrap();
    let header = encode_header(&sign_authorization(&payer, &req, None, now_secs()).unwrap());
    let gas_nonce = chain.gas_key_nonce().await;
    let (status, late, _) = tool_call(&app, path, &json!({}), Some(&header)).await;
    assert_envelope(status, &late, 504, "TOOL_TIMEOUT");
    // The vendor's late answers arrive; nothing is charged or settled afterwards. (The x402
    // call keeps 8 s for settling, so with a 3 s deadline its vendor call may be cut before
    // it reaches the vendor.)
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!((1..=2).contains(&seen.load(Ordering::SeqCst)));
    assert_eq!(
        chain.gas_key_nonce().await,
        gas_nonce,
        "nothing was settled"
    );
    assert_eq!(balance(&app, &key.address().to_string()).await, 100);
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM credit_holds WHERE status = 'posted'")
            .await,
        0
    );
    assert_money_invariant(&app, &chain).await;
}

/// A vendor whose `/late` answers after 4 s; counts calls.
async fn spawn_late_vendor() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let s = seen.clone();
    let app = axum::Router::new().route(
        "/late",
        axum::routing::post(move || {
            let s = s.clone();
            async move {
                s.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_secs(4)).await;
                axum::Json(json!({"late": true}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

/// The server process is killed (SIGKILL) after broadcasting a settlement and before
/// granting; the block is mined while it is down; the restarted process credits it exactly
/// once, and `agentpmt-server audit` agrees.
async fn kill_9_between_broadcast_and_grant_is_credited_once_after_restart(backend: Backend) {
    let chain = Chain::start().await;
    let proxy = Proxy::start(&chain.anvil.rpc_url).await;
    // The database the processes share (a fresh one of this backend).
    let holder = spawn_app(backend).await;
    let database_url = holder.database_url.clone();
    let dir = tempfile::tempdir().unwrap();
    let payments_file = dir.path().join("payments.toml");
    std::fs::write(&payments_file, payments_toml(&chain, &proxy)).unwrap();

    let first = ServerProcess::start(&database_url, &payments_file);
    let key = payer(&chain, 1).await;
    let wallet = key.address().to_string();
    let http = reqwest::Client::new();
    let body = json!({"wallet_address": wallet, "credits": 500, "payment_method": "x402", "request_id": "kill-1"});
    let challenge = http
        .post(format!("{}{PURCHASE}", first.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    let header_value = challenge.headers()["payment-required"]
        .to_str()
        .unwrap()
        .to_owned();
    let required: agentpmt_protocol::x402::PaymentRequired =
        agentpmt_protocol::x402::decode_header(&header_value).unwrap();
    let header = pay(&key, &required.accepts[0]);
    chain.set_automine(false).await;
    let request = {
        let (url, header, body) = (
            format!("{}{PURCHASE}", first.url),
            header.clone(),
            body.clone(),
        );
        tokio::spawn(async move {
            reqwest::Client::new()
                .post(url)
                .header("PAYMENT-SIGNATURE", header)
                .json(&body)
                .send()
                .await
        })
    };
    chain.wait_for_settlement_in_pool().await;
    first.kill9();
    assert!(
        request.await.unwrap().is_err(),
        "the process died mid-request"
    );
    chain.mine(1).await;
    chain.set_automine(true).await;
    assert_eq!(chain.balance(chain.pay_to).await, U256::from(PRICE));

    let second = ServerProcess::start(&database_url, &payments_file);
    let url = second.url.clone();
    let balance_of = || {
        let (http, url, wallet) = (http.clone(), url.clone(), wallet.clone());
        async move {
            let r = http
                .get(format!("{url}/api/admin/wallets/{wallet}"))
                .bearer_auth(ADMIN_TOKEN)
                .send()
                .await
                .unwrap();
            r.json::<Value>().await.unwrap()["balance_credits"]
                .as_i64()
                .unwrap_or(0)
        }
    };
    eventually("the restarted server credits the purchase", || {
        let b = balance_of();
        async move { b.await == 500 }
    })
    .await;
    let again = http
        .post(format!("{url}{PURCHASE}"))
        .header("PAYMENT-SIGNATURE", &header)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(balance_of().await, 500);
    drop(second);

    // The operator's audit command, on the same database and chain.
    let audit = std::process::Command::new(env!("CARGO_BIN_EXE_agentpmt-server"))
        .args(["audit", "--json", "--database-url", &database_url])
        .arg("--payments-config")
        .arg(&payments_file)
        .env("AGENTPMT_SETTLEMENT_PRIVATE_KEY", GAS_KEY)
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&audit.stdout).unwrap_or(Value::Null);
    assert!(
        audit.status.success(),
        "{report} {}",
        String::from_utf8_lossy(&audit.stderr)
    );
    assert_eq!(report["clean"], true, "{report}");
    assert_eq!(report["claims"], 1, "{report}");
    assert_eq!(report["checked_on_chain"], 1, "{report}");
    assert_no_secret(&String::from_utf8_lossy(&audit.stdout));
    // The in-process invariant, through an instance on the same database.
    let checker = spawn_on(&database_url, options(&chain, &proxy, 0, 20, false)).await;
    assert_money_invariant(&checker, &chain).await;
    drop(holder);
}

fn payments_toml(chain: &Chain, proxy: &Proxy) -> String {
    format!(
        r#"pay_to = "{pay_to}"
receipt_timeout_secs = 2

[[networks]]
chain_id = 31337
settlement = "evm"
rpc_url = "{rpc}"
name = "anvil"
confirmations = 0

[[networks.tokens]]
symbol = "USDC"
address = "{token}"
eip712_name = "USD Coin"
eip712_version = "2"
"#,
        pay_to = chain.pay_to.to_checksum(None),
        rpc = proxy.url,
        token = chain.token.to_checksum(None),
    )
}

/// The server binary as a child process on `database_url`, killed on drop.
struct ServerProcess {
    child: std::process::Child,
    url: String,
}

impl ServerProcess {
    fn start(database_url: &str, payments: &std::path::Path) -> ServerProcess {
        use std::io::{BufRead, BufReader};
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_agentpmt-server"))
            .args(["--bind", "127.0.0.1:0", "--database-url", database_url])
            .arg("--payments-config")
            .arg(payments)
            .args([
                "--reconcile-interval-secs",
                "1",
                "--catalog",
                "none",
                "--log-format",
                "json",
            ])
            .env("AGENTPMT_SETTLEMENT_PRIVATE_KEY", GAS_KEY)
            .env("AGENTPMT_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("the server binary starts");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let url = loop {
            let line = lines
                .next()
                .expect("the server logged its address")
                .expect("readable log");
            let Ok(event) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if let Some(address) = event["fields"]["address"].as_str() {
                break format!("http://{address}");
            }
        };
        std::thread::spawn(move || for _ in lines {});
        ServerProcess { child, url }
    }

    /// SIGKILL: no shutdown, no cleanup.
    fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
