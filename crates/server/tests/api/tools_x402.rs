//! Direct x402 tool invocation: on the dev network (challenge, payment, cross-action reuse,
//! one authorization in parallel, tool failure) and on anvil (the official `@x402/fetch`
//! client, no settlement when the tool fails).

use crate::backend_tests;
use crate::chain::{Chain, GAS_KEY};
use crate::helpers::*;
use crate::purchase::{now_secs, requirement_of};
use crate::tools::{register_stub, spawn_tools, spawn_vendor, SECRETS_KEY};
use agentpmt_protocol::x402::{
    decode_header, encode_header, sign_authorization, PaymentRequirements, ResourceInfo,
    SettleResponse,
};
use agentpmt_protocol::PrivateKey;
use alloy::primitives::U256;
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;

backend_tests!(
    challenge_then_payment_runs_the_tool,
    payment_for_one_action_is_refused_on_another,
    one_authorization_in_parallel_runs_once,
    tool_failure_settles_nothing,
    official_client_pays_a_tool_on_chain,
    crash_after_broadcast_is_reconciled_once,
    a_spent_cpu_budget_claims_no_authorization
);

const OK: &str = "/api/external/tools/stub/actions/ok-action/invoke";
const FAIL: &str = "/api/external/tools/stub/actions/fail/invoke";

async fn call(
    app: &TestApp,
    path: &str,
    body: &Value,
    payment: Option<&str>,
) -> (StatusCode, Value, HeaderMap) {
    let mut request = app.http.post(app.url(path)).json(body);
    if let Some(p) = payment {
        request = request.header("PAYMENT-SIGNATURE", p);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    (
        status,
        response.json().await.unwrap_or(Value::Null),
        headers,
    )
}

/// The challenge of `path` and a payment for it (with the challenge's resource).
async fn paid(
    app: &TestApp,
    path: &str,
    body: &Value,
    payer: &PrivateKey,
) -> (PaymentRequirements, String) {
    let (status, challenge, headers) = call(app, path, body, None).await;
    let requirement = requirement_of(status, &challenge, &headers);
    let resource: ResourceInfo = serde_json::from_value(challenge["resource"].clone()).unwrap();
    let payload = sign_authorization(payer, &requirement, Some(resource), now_secs()).unwrap();
    (requirement, encode_header(&payload))
}

async fn challenge_then_payment_runs_the_tool(backend: Backend) {
    let app = spawn_tools(backend).await;
    let (vendor, seen) = spawn_vendor().await;
    register_stub(&app, &vendor).await;
    let body = json!({"q": "direct"});
    let (status, challenge, headers) = call(&app, OK, &body, None).await;
    let requirement = requirement_of(status, &challenge, &headers);
    assert_eq!(challenge["x402Version"], 2);
    assert_eq!(challenge["resource"]["url"], app.url(OK));
    assert_eq!(challenge["resource"]["mimeType"], "application/json");
    assert_eq!(requirement.amount, "30000", "3 credits = 0.03 USDC");
    assert_eq!(requirement.scheme, "exact");
    assert_eq!(seen.hits.load(Ordering::SeqCst), 0);
    // Invalid parameters are refused before any challenge; an action without x402: 404.
    let (status, body_422, _) = call(&app, OK, &json!({"q": 7}), None).await;
    assert_envelope(status, &body_422, 422, "VALIDATION_ERROR");
    assert_eq!(body_422["detail"][0]["loc"], json!(["body", "q"]));
    let (status, not_x402, _) = call(
        &app,
        "/api/external/tools/stub/actions/text/invoke",
        &body,
        None,
    )
    .await;
    assert_envelope(status, &not_x402, 404, "X402_NOT_AVAILABLE");
    // Malformed payment header: 400.
    let (status, bad, _) = call(&app, OK, &body, Some("%%%")).await;
    assert_envelope(status, &bad, 400, "PAYMENT_MALFORMED");

    let payer = PrivateKey::random();
    let resource: ResourceInfo = serde_json::from_value(challenge["resource"].clone()).unwrap();
    let payment = encode_header(
        &sign_authorization(&payer, &requirement, Some(resource), now_secs()).unwrap(),
    );
    let (status, result, headers) = call(&app, OK, &body, Some(&payment)).await;
    assert_eq!(status, 200, "{result}");
    assert_eq!(result["success"], true);
    assert_eq!(result["response"]["echo"], json!({"q": "direct"}));
    assert_eq!(result["credit_source"], "x402");
    assert_eq!(result["charged_credits"], 0);
    let x = &result["x402"];
    assert_eq!(x["settled"], true);
    assert_eq!(x["settlement_recorded"], true);
    assert_eq!(x["network"], requirement.network);
    assert_eq!(x["resource_url"], app.url(OK));
    assert!(x["transaction"].as_str().unwrap().starts_with("0x"));
    assert_eq!(x["payment"]["amount_base_units"], "30000");
    assert_eq!(x["payment"]["amount_usd"], 0.03);
    assert_eq!(x["payment"]["token"], "USDC");
    assert_eq!(
        x["payment"]["payer_wallet_address"],
        payer.address().to_string()
    );
    assert_eq!(
        x["payment"]["pay_to"].as_str().unwrap().to_lowercase(),
        requirement.pay_to.to_lowercase()
    );
    let settled: SettleResponse =
        decode_header(headers["payment-response"].to_str().unwrap()).unwrap();
    assert!(settled.success);
    assert_eq!(settled.transaction, x["transaction"].as_str().unwrap());
    assert_eq!(seen.hits.load(Ordering::SeqCst), 1);
    // The same authorization again: the same answer (a client that lost it gets it back),
    // nothing run again.
    let (status, again, _) = call(&app, OK, &body, Some(&payment)).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["usage_id"], result["usage_id"]);
    assert_eq!(again["response"], result["response"]);
    assert_eq!(again["x402"]["transaction"], x["transaction"]);
    assert_eq!(seen.hits.load(Ordering::SeqCst), 1);
    // On another action it is not this call's payment: refused.
    let (status, other, _) = call(&app, FAIL, &body, Some(&payment)).await;
    assert!(status == 402 || status == 409, "{other}");
    assert_eq!(seen.hits.load(Ordering::SeqCst), 1);
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM tool_usage WHERE mode = 'x402' AND status = 'succeeded'")
            .await,
        1
    );
    // Mixed: a payment header with signature fields is refused.
    let mixed = json!({"wallet_address": payer.address().to_string(), "parameters": body});
    let (status, mixed, _) = call(&app, OK, &mixed, Some(&payment)).await;
    assert_envelope(status, &mixed, 400, "MIXED_PAYMENT_MODES");
}

async fn payment_for_one_action_is_refused_on_another(backend: Backend) {
    let app = spawn_tools(backend).await;
    let (vendor, seen) = spawn_vendor().await;
    register_stub(&app, &vendor).await;
    let payer = PrivateKey::random();
    let body = json!({"q": "x"});
    // Same price (3 credits), other action: the resource differs.
    let (_, for_ok) = paid(&app, OK, &body, &payer).await;
    let (status, refused, headers) = call(&app, FAIL, &body, Some(&for_ok)).await;
    let details = assert_envelope(status, &refused, 402, "PAYMENT_INVALID");
    assert_eq!(details["reason"], "invalid_payment_requirements");
    assert!(headers.contains_key("payment-required"));
    assert_eq!(
        refused["accepts"][0]["amount"], "30000",
        "a fresh challenge comes with the refusal"
    );
    // Another price: the accepted requirement differs.
    let (_, for_clock) = paid(
        &app,
        "/api/external/tools/clock/actions/now/invoke",
        &json!({}),
        &payer,
    )
    .await;
    let (status, refused, _) = call(&app, OK, &body, Some(&for_clock)).await;
    let details = assert_envelope(status, &refused, 402, "PAYMENT_INVALID");
    assert_eq!(details["reason"], "invalid_payment_requirements");
    assert_eq!(seen.hits.load(Ordering::SeqCst), 0);
    // The first payment still works where it belongs (it was never claimed).
    let (status, ok, _) = call(&app, OK, &body, Some(&for_ok)).await;
    assert_eq!(status, 200, "{ok}");
    assert_eq!(seen.hits.load(Ordering::SeqCst), 1);
}

async fn one_authorization_in_parallel_runs_once(backend: Backend) {
    let app = Arc::new(spawn_tools(backend).await);
    let (vendor, seen) = spawn_vendor().await;
    register_stub(&app, &vendor).await;
    let payer = PrivateKey::random();
    let body = json!({"q": "race"});
    let (_, payment) = paid(&app, OK, &body, &payer).await;
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (app, body, payment) = (app.clone(), body.clone(), payment.clone());
        tasks.push(tokio::spawn(async move {
            call(&app, OK, &body, Some(&payment)).await
        }));
    }
    let mut ok = 0;
    let mut usage_ids = std::collections::HashSet::new();
    for task in tasks {
        let (status, body, _) = task.await.unwrap();
        match status.as_u16() {
            // The winner, and copies that arrived after it settled (the same answer).
            200 => {
                ok += 1;
                usage_ids.insert(body["usage_id"].as_str().unwrap().to_owned());
            }
            409 => assert!(
                ["PAYMENT_IN_PROGRESS", "PAYMENT_ALREADY_USED"]
                    .contains(&body["error_code"].as_str().unwrap()),
                "{body}"
            ),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(ok >= 1);
    assert_eq!(usage_ids.len(), 1, "one call answered, however often");
    assert_eq!(seen.hits.load(Ordering::SeqCst), 1, "the tool ran once");
    assert_eq!(app.scalar("SELECT COUNT(*) FROM tool_usage").await, 1);
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM payment_authorizations WHERE status = 'settled'")
            .await,
        1
    );
}

async fn tool_failure_settles_nothing(backend: Backend) {
    let app = spawn_tools(backend).await;
    let (vendor, seen) = spawn_vendor().await;
    register_stub(&app, &vendor).await;
    let payer = PrivateKey::random();
    let body = json!({"q": "x"});
    let (_, payment) = paid(&app, FAIL, &body, &payer).await;
    let (status, failed, headers) = call(&app, FAIL, &body, Some(&payment)).await;
    let details = assert_envelope(status, &failed, 502, "TOOL_FAILED");
    assert_eq!(details["settled"], false);
    assert!(!headers.contains_key("payment-response"));
    assert_eq!(
        app.scalar(
            "SELECT COUNT(*) FROM tool_usage WHERE status = 'failed' AND transaction_hash IS NULL"
        )
        .await,
        1
    );
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM payment_authorizations WHERE status = 'failed'")
            .await,
        1
    );
    // The unsettled authorization was given back: a retry may use it (and fails again).
    let (status, _, _) = call(&app, FAIL, &body, Some(&payment)).await;
    assert_eq!(status, 502);
    assert_eq!(seen.hits.load(Ordering::SeqCst), 2);
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM payment_authorizations WHERE status = 'settled'")
            .await,
        0
    );
}

fn with_key(config: &mut agentpmt_server::config::ServerConfig) {
    config.secrets_key = Some(SECRETS_KEY.to_owned().into());
}

async fn official_client_pays_a_tool_on_chain(backend: Backend) {
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

    // A failing tool: verified and claimed, but nothing moves on chain.
    let body = json!({"q": "chain"});
    let (_, payment) = paid(&app, FAIL, &body, &payer).await;
    let (status, failed, _) = call(&app, FAIL, &body, Some(&payment)).await;
    assert_envelope(status, &failed, 502, "TOOL_FAILED");
    assert_eq!(
        chain.balance(payer.address().address()).await,
        U256::from(1_000_000u64)
    );
    assert_eq!(chain.balance(chain.pay_to).await, U256::ZERO);

    // The official client: 402, sign, retry, settled on chain.
    let result = crate::chain::official_x402_client(&app.url(OK), &body, &payer).await;
    assert_eq!(result["status"], 200, "{result}");
    assert_eq!(result["body"]["response"]["echo"], json!({"q": "chain"}));
    assert_eq!(result["body"]["x402"]["settled"], true);
    assert_eq!(result["paymentResponse"]["success"], true, "{result}");
    assert_eq!(
        result["paymentResponse"]["transaction"],
        result["body"]["x402"]["transaction"]
    );
    assert_eq!(chain.balance(chain.pay_to).await, U256::from(30_000u64));
    assert_eq!(
        chain.balance(payer.address().address()).await,
        U256::from(970_000u64)
    );
    assert_eq!(seen.hits.load(Ordering::SeqCst), 2);
}

async fn crash_after_broadcast_is_reconciled_once(backend: Backend) {
    let chain = Chain::start().await;
    let options = |fault| AppOptions {
        payments: Some(chain.payments()),
        settlement_key: Some(GAS_KEY.into()),
        fault,
        configure: Some(with_key),
        ..AppOptions::default()
    };
    let first = spawn_app_with(
        backend,
        options(Some(agentpmt_server::payments::Fault::CrashAfterBroadcast)),
    )
    .await;
    let (vendor, seen) = spawn_vendor().await;
    register_stub(&first, &vendor).await;
    let payer = PrivateKey::random();
    chain.mint(payer.address().address(), 1_000_000).await;
    let body = json!({"q": "crash"});
    let (_, payment) = paid(&first, OK, &body, &payer).await;
    // The tool ran and the settlement was broadcast, then the process "died".
    let (status, _, _) = call(&first, OK, &body, Some(&payment)).await;
    assert_eq!(status, 500);
    assert_eq!(seen.hits.load(Ordering::SeqCst), 1);
    assert_eq!(first.scalar("SELECT COUNT(*) FROM tool_usage WHERE status = 'settling' AND transaction_hash IS NOT NULL").await, 1);
    // A retry while the settlement is open (its lease given up, as by a dead process)
    // settles it from chain state and returns the kept output; the tool does not run again.
    let (status, retry, _) = call(&first, OK, &body, Some(&payment)).await;
    assert_eq!(status, 200, "{retry}");
    assert_eq!(retry["response"]["echo"], json!({"q": "crash"}));
    assert_eq!(retry["x402"]["settled"], true);
    assert_eq!(seen.hits.load(Ordering::SeqCst), 1);

    // A second instance on the same database reconciles at start-up: settled once.
    let second = spawn_on(&first.database_url, options(None)).await;
    let mut settled = 0;
    for _ in 0..100 {
        settled = second.scalar("SELECT COUNT(*) FROM tool_usage WHERE status = 'succeeded' AND transaction_hash IS NOT NULL").await;
        if settled == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(settled, 1, "reconciled from chain state");
    assert_eq!(
        second
            .scalar("SELECT COUNT(*) FROM payment_authorizations WHERE status = 'settled'")
            .await,
        1
    );
    assert_eq!(
        chain.balance(chain.pay_to).await,
        U256::from(30_000u64),
        "paid exactly once"
    );
    let (status, again, _) = call(&second, OK, &body, Some(&payment)).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["usage_id"], retry["usage_id"]);
    assert_eq!(seen.hits.load(Ordering::SeqCst), 1);
}

/// A direct x402 payer of heavy built-ins has a CPU budget too. Once it is spent, the next
/// paid `json-tools/validate` call gets 429 before its authorization is claimed: nothing is
/// recorded or settled, and the same payment runs once the budget has refilled.
async fn a_spent_cpu_budget_claims_no_authorization(backend: Backend) {
    let app = spawn_app_with(
        backend,
        AppOptions::configured(|c| {
            c.heavy_cpu_ms_per_sec = 1;
            c.heavy_cpu_ms_burst = 1;
        }),
    )
    .await;
    const VALIDATE: &str = "/api/external/tools/json-tools/actions/validate/invoke";
    let items: Vec<String> = (0..200).map(|_| format!("{}b", "a".repeat(18))).collect();
    let body = json!({
        "schema": {"type": "array", "items": {"type": "string", "pattern": "^(a+)+\\1$"}},
        "document": items,
    });
    let payer = PrivateKey::random();
    let (_, first) = paid(&app, VALIDATE, &body, &payer).await;
    let (status, ran, _) = call(&app, VALIDATE, &body, Some(&first)).await;
    assert_eq!(status, StatusCode::OK, "{ran}");
    let (_, second) = paid(&app, VALIDATE, &body, &payer).await;
    let (status, refused, headers) = call(&app, VALIDATE, &body, Some(&second)).await;
    let details = assert_envelope(status, &refused, 429, "RATE_LIMITED");
    assert_eq!(details["scope"], json!("heavy_cpu"), "{details}");
    assert!(!headers.contains_key("payment-response"));
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM payment_authorizations")
            .await,
        1,
        "the refused payment was not claimed"
    );
    assert_eq!(app.scalar("SELECT COUNT(*) FROM tool_usage").await, 1);
    // The budget refills (one CPU millisecond per second): the same payment then runs.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (status, ran, _) = call(&app, VALIDATE, &body, Some(&second)).await;
    assert_eq!(status, StatusCode::OK, "{ran}");
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM payment_authorizations")
            .await,
        2
    );
}
