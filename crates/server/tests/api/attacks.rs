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
    a_copy_that_waits_out_its_time_for_the_first_answers_pending_then_the_first_result,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_killed_instance_work_is_taken_over_once_within_the_bound() {
    if skip_postgres() {
        return;
    }
    killed_instance_work_is_taken_over_once_within_the_bound().await;
}

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
        ServerProcess::start_with(database_url, payments, &["--reconcile-interval-secs", "1"])
    }

    /// [`ServerProcess::start`] with further flags.
    fn start_with(database_url: &str, payments: &std::path::Path, flags: &[&str]) -> ServerProcess {
        use std::io::{BufRead, BufReader};
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_agentpmt-server"))
            .args(["--bind", "127.0.0.1:0", "--database-url", database_url])
            .arg("--payments-config")
            .arg(payments)
            .args(["--catalog", "none", "--log-format", "json"])
            .args(flags)
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

// ---------------------------------------------------------------------------------------
// Instance liveness (issue 20).

/// The verifier of the surviving instances runs only when they take work over (their
/// periodic check is an hour away), so the killed instance is the one that claims the
/// submission first.
fn survivor(config: &mut agentpmt_server::ServerConfig) {
    crate::jobs::configure(config);
    config.job_verify_interval_ms = 3_600_000;
    config.job_verify_timeout_ms = 500;
    config.job_verify_backoff_ms = 3_600_000;
}

/// Instance A (a child process) holds a credit hold (a tool call its vendor never answers),
/// a settlement (an x402 purchase broadcast into a pool that does not mine) and a
/// verification lease (a post page that never answers), and is killed with SIGKILL. Two
/// in-process instances B and C, with the default liveness settings (heartbeat 2 s,
/// timeout 10 s), take each over within 15 s of the kill, once: the hold is released by
/// one of them (one release entry, the balance whole again), the settlement's lease is
/// theirs and, once mined, the purchase is credited once, and the submission was checked
/// again exactly once (attempt 2).
async fn killed_instance_work_is_taken_over_once_within_the_bound() {
    use crate::jobs::{create_job, Agent, Posts};
    const BOUND: Duration = Duration::from_secs(15);
    let chain = Chain::start().await;
    let proxy = Proxy::start(&chain.anvil.rpc_url).await;
    let url = fresh_postgres_schema().await;
    let dir = tempfile::tempdir().unwrap();
    let payments_file = dir.path().join("payments.toml");
    // A's settlement lease (its receipt wait + 10 s) outlasts the bound: only the takeover
    // can free it in time.
    let toml = payments_toml(&chain, &proxy)
        .replace("receipt_timeout_secs = 2", "receipt_timeout_secs = 30");
    std::fs::write(&payments_file, toml).unwrap();
    let survivor_options = || AppOptions {
        configure: Some(survivor),
        ..options(&chain, &proxy, 0, 20, false)
    };
    let b = spawn_on(&url, survivor_options()).await;
    let c = spawn_on(&url, survivor_options()).await;
    let a = ServerProcess::start_with(
        &url,
        &payments_file,
        &[
            "--job-post-hosts",
            "x=127.0.0.1",
            "--job-verify-interval-ms",
            "50",
            "--job-verify-timeout-ms",
            "60000",
        ],
    );
    let survivors = [
        b.state.instance.id.to_string(),
        c.state.instance.id.to_string(),
    ];
    let owner_is_a = |owner: &str| !owner.is_empty() && !survivors.iter().any(|s| s == owner);
    let http = reqwest::Client::new();

    // A tool whose vendor never answers (within the call's minute).
    let vendor = axum::Router::new().route(
        "/hang",
        axum::routing::post(|| async {
            tokio::time::sleep(Duration::from_secs(300)).await;
            "too late"
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let vendor_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, vendor).await.unwrap() });
    let (status, body) = b
        .admin(
            Method::PUT,
            "/api/admin/vendors/hang-vendor",
            Some(&json!({"slug": "hang-vendor", "name": "Hanging vendor"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = b
        .admin(
            Method::PUT,
            "/api/admin/tools/hang",
            Some(&json!({
                "slug": "hang", "name": "Hanging tool", "description": "Never answers",
                "categories": ["testing"], "vendor": "hang-vendor",
                "actions": [{"name": "wait", "description": "waits", "price_credits": 7,
                             "runner": {"kind": "http", "url": format!("{vendor_url}/hang"), "timeout_ms": 28000},
                             "parameters": {}}]
            })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // 1. The hold: a signed credit call through A.
    let agent = Agent::new(&b).await;
    let wallet = agent.wallet();
    let (status, body) = b
        .admin(
            Method::POST,
            &format!("/api/admin/wallets/{wallet}/credits"),
            Some(&json!({"amount_credits": 100, "reason": "test funds"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let call = {
        let mut fields = serde_json::Map::new();
        fields.insert("parameters".into(), json!({}));
        let body = signed(
            &agent.key,
            agentpmt_protocol::SignedAction::ToolActionInvoke,
            &[("productSlug", "hang"), ("actionSlug", "wait")],
            &agent.nonce,
            "takeover-call-1",
            fields,
        );
        let request = http
            .post(format!(
                "{}/api/external/tools/hang/actions/wait/invoke",
                a.url
            ))
            .json(&body);
        tokio::spawn(request.send())
    };

    // 2. The settlement: an x402 purchase through A, broadcast into a pool that does not mine.
    let key = payer(&chain, 1).await;
    let payer_wallet = key.address().to_string();
    let body = json!({"wallet_address": payer_wallet, "credits": 500, "payment_method": "x402", "request_id": "takeover-1"});
    let challenge = http
        .post(format!("{}{PURCHASE}", a.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    let required: agentpmt_protocol::x402::PaymentRequired =
        agentpmt_protocol::x402::decode_header(
            challenge.headers()["payment-required"].to_str().unwrap(),
        )
        .unwrap();
    let header = pay(&key, &required.accepts[0]);
    chain.set_automine(false).await;
    let purchase_request = tokio::spawn(
        http.post(format!("{}{PURCHASE}", a.url))
            .header("PAYMENT-SIGNATURE", header)
            .json(&body)
            .send(),
    );
    chain.wait_for_settlement_in_pool().await;

    // 3. The verification: a social-share proof whose post page never answers, claimed by A.
    let (posts_url, _posts) = Posts::start().await;
    let job = create_job(&b, json!({})).await;
    let reserver = Agent::new(&b).await;
    let (status, reserved) = reserver.reserve(&b, &job).await;
    assert_eq!(status, StatusCode::OK, "{reserved}");
    let link = reserved["job"]["social_share"]["tracking_links"][0]
        .as_str()
        .unwrap()
        .to_owned();
    let proof = json!({
        "proof_text": "Published the required AgentPMT social post.",
        "reservation_id": reserved["job"]["reservation_id"],
        "social_posts": [{"platform": "x", "post_url": format!("{posts_url}/hang"),
            "target_url_used": link, "message_text": format!("Paid AgentPMT share: {link}"),
            "posted_at": "2026-05-17T14:30:00Z"}]
    });
    let (status, body) = reserver.complete(&b, &job, proof).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // A holds all three.
    let owner = |table: &str, filter: &str| {
        let sql = format!("SELECT COALESCE(owner_instance, '') FROM {table} WHERE {filter}");
        let b = &b;
        async move { b.strings(&sql).await.pop().unwrap_or_default() }
    };
    eventually("A holds the call, the settlement and the check", || async {
        owner_is_a(&owner("tool_usage", "status = 'running'").await)
            && owner_is_a(&owner("credit_purchases", "status IN ('pending', 'broadcast')").await)
            && owner_is_a(&owner("job_submissions", "verification_status = 'running'").await)
    })
    .await;
    assert_eq!(
        balance(&b, &wallet).await,
        93,
        "7 credits held by the running call"
    );

    a.kill9();
    let killed = std::time::Instant::now();
    assert!(call.await.unwrap().is_err(), "A died during the call");
    assert!(
        purchase_request.await.unwrap().is_err(),
        "A died during the settlement"
    );

    let mut hold_at = None;
    let mut settlement_at = None;
    let mut check_at = None;
    while killed.elapsed() < BOUND
        && (hold_at.is_none() || settlement_at.is_none() || check_at.is_none())
    {
        if hold_at.is_none()
            && b.scalar("SELECT COUNT(*) FROM credit_holds WHERE status = 'released'")
                .await
                == 1
        {
            hold_at = Some(killed.elapsed());
        }
        if settlement_at.is_none() {
            let o = owner("credit_purchases", "status IN ('pending', 'broadcast')").await;
            if survivors.contains(&o) {
                settlement_at = Some(killed.elapsed());
            }
        }
        if check_at.is_none()
            && b.scalar("SELECT COUNT(*) FROM job_submissions WHERE attempts = 2")
                .await
                == 1
        {
            check_at = Some(killed.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("taken over after the kill: hold {hold_at:?}, settlement {settlement_at:?}, verification {check_at:?} (bound {BOUND:?})");
    assert!(
        hold_at.is_some(),
        "the hold was not released within {BOUND:?}"
    );
    assert!(
        settlement_at.is_some(),
        "the settlement was not taken over within {BOUND:?}"
    );
    assert!(
        check_at.is_some(),
        "the verification was not taken over within {BOUND:?}"
    );
    assert!(
        survivors.contains(&owner("job_submissions", "attempts = 2").await),
        "a survivor made the second check"
    );

    // Once: one release, the balance whole; the purchase credited once when mined; the
    // submission checked once more, not once per survivor.
    chain.mine(1).await;
    chain.set_automine(true).await;
    // The survivors reconcile only when taking over (their periodic reconciliation is an
    // hour away): the next pass of either credits the mined settlement.
    tokio::time::sleep(Duration::from_secs(3)).await;
    b.state.payments.reconcile_open(&b.state.db).await.unwrap();
    c.state.payments.reconcile_open(&c.state.db).await.unwrap();
    assert_eq!(balance(&b, &wallet).await, 100, "the held credits are back");
    assert_eq!(
        b.scalar("SELECT COUNT(*) FROM ledger_entries WHERE kind = 'tool_release'")
            .await,
        1
    );
    assert_eq!(
        b.scalar("SELECT COUNT(*) FROM ledger_entries WHERE kind = 'credit_purchase'")
            .await,
        1
    );
    assert_eq!(balance(&b, &payer_wallet).await, 500);
    assert_eq!(
        b.scalar("SELECT MAX(attempts) FROM job_submissions").await,
        2,
        "one takeover of the check"
    );
    assert_money_invariant(&c, &chain).await;
}

/// A purchase copy that finds the first copy settling waits for its outcome, for what is
/// left of its own request time (3 s here), then answers 202 `pending` with the same
/// purchase, never a second settlement; once the block is mined, the same request answers
/// the first result and the wallet is credited once.
async fn a_copy_that_waits_out_its_time_for_the_first_answers_pending_then_the_first_result(
    backend: Backend,
) {
    let chain = Chain::start().await;
    let proxy = Proxy::start(&chain.anvil.rpc_url).await;
    let app = spawn_app_with(
        backend,
        AppOptions {
            configure: Some(|c| c.request_timeout_secs = 3),
            ..options(&chain, &proxy, 0, 20, false)
        },
    )
    .await;
    let key = payer(&chain, 1).await;
    let wallet = key.address().to_string();
    let (_, header, _) = signed_purchase(&app, &key).await;
    let mut body = purchase_body(&key);
    body["request_id"] = json!("wait-for-first");
    chain.set_automine(false).await;
    let first = {
        let (app_url, header, body) = (app.url(PURCHASE), header.clone(), body.clone());
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
    let started = std::time::Instant::now();
    let (status, copy, _) = purchase(&app, &body, Some(("PAYMENT-SIGNATURE", &header))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{copy}");
    assert_eq!(copy["status"], json!("pending"), "{copy}");
    assert!(
        started.elapsed() >= Duration::from_millis(1000),
        "the copy waited for the first ({:?})",
        started.elapsed()
    );
    let (first_status, first_body) = first.await.unwrap();
    assert_eq!(first_status, StatusCode::ACCEPTED, "{first_body}");
    assert_eq!(
        copy["purchase_id"], first_body["purchase_id"],
        "one purchase"
    );
    let gas: alloy::signers::local::PrivateKeySigner = GAS_KEY.parse().unwrap();
    assert_eq!(
        chain.pending_from(gas.address()).await.len(),
        1,
        "one settlement in the pool"
    );
    assert_eq!(balance(&app, &wallet).await, 0);

    chain.mine(1).await;
    chain.set_automine(true).await;
    let (status, settled, _) = purchase(&app, &body, Some(("PAYMENT-SIGNATURE", &header))).await;
    assert_eq!(status, StatusCode::OK, "{settled}");
    assert_eq!(settled["status"], json!("settled"));
    assert_eq!(settled["purchase_id"], first_body["purchase_id"]);
    assert_eq!(balance(&app, &wallet).await, 500);
    assert_money_invariant(&app, &chain).await;
}
