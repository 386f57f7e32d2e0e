//! Abuse limits for the whole API: per IP on unauthenticated endpoints, per wallet on
//! signed ones (checked before signature recovery), 429 in the envelope with Retry-After.

use crate::backend_tests;
use crate::helpers::*;
use agentpmt_protocol::PrivateKey;
use reqwest::StatusCode;
use serde_json::json;

backend_tests!(
    per_ip_limit_guards_unauthenticated_endpoints,
    per_wallet_limit_applies_before_signature_recovery,
);

async fn per_ip_limit_guards_unauthenticated_endpoints(backend: Backend) {
    let app = spawn_app_with(
        backend,
        AppOptions::configured(|c| {
            c.ip_rate_per_sec = 1;
            c.ip_rate_burst = 2;
        }),
    )
    .await;
    let wallet = PrivateKey::random().address().to_string();
    let body = json!({"wallet_address": wallet});
    for _ in 0..2 {
        let (status, _, answer) = app
            .post_with_headers("/api/external/auth/session", &body, &[])
            .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
    }
    let (status, headers, answer) = app
        .post_with_headers(
            "/api/external/auth/session",
            &body,
            &[("x-forwarded-for", "192.0.2.1")],
        )
        .await;
    let details = assert_envelope(status, &answer, 429, "RATE_LIMITED");
    assert_eq!(details["scope"], json!("ip"));
    assert_eq!(answer["rate_limit"]["limit"], json!(1));
    assert_eq!(answer["rate_limit"]["window_seconds"], json!(1));
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry >= 1);
    assert_eq!(answer["rate_limit"]["retry_after_seconds"], json!(retry));
    // The same bucket guards agent-help and AgentAddress (before any database write).
    let (status, answer) = app
        .post("/api/external/agent-help", &json!({"message": "hi"}))
        .await;
    assert_envelope(status, &answer, 429, "RATE_LIMITED");
    let (status, answer) = app.post("/api/external/agentaddress", &json!({})).await;
    assert_envelope(status, &answer, 429, "RATE_LIMITED");
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM agent_help_tickets").await,
        0
    );
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM agentaddress_rate_limits")
            .await,
        0
    );
    assert_eq!(app.scalar("SELECT COUNT(*) FROM auth_sessions").await, 2);
}

async fn per_wallet_limit_applies_before_signature_recovery(backend: Backend) {
    let app = spawn_app_with(
        backend,
        AppOptions::configured(|c| {
            c.wallet_rate_per_sec = 1;
            c.wallet_rate_burst = 1;
        }),
    )
    .await;
    let key = PrivateKey::random();
    let wallet = key.address();
    let nonce = app.session(&wallet).await;
    // Signed by someone else: verification would say WALLET_MISMATCH.
    let mut forged = app.balance_body(&PrivateKey::random(), &nonce, "w-1");
    forged["wallet_address"] = json!(wallet.to_string());
    let (status, body) = app.post("/api/external/credits/balance", &forged).await;
    assert_envelope(status, &body, 401, "EXTERNAL_SIGNATURE_WALLET_MISMATCH");
    // Over the limit the request is refused before any recovery: 429, not 401.
    forged["request_id"] = json!("w-2");
    let (status, body) = app.post("/api/external/credits/balance", &forged).await;
    let details = assert_envelope(status, &body, 429, "RATE_LIMITED");
    assert_eq!(details["scope"], json!("wallet"));
    let (status, body) = app
        .post(
            "/api/external/credits/balance",
            &app.balance_body(&key, &nonce, "w-3"),
        )
        .await;
    assert_envelope(status, &body, 429, "RATE_LIMITED");
    assert_eq!(app.replay_count().await, 0, "nothing was written");
    // Another wallet is not affected.
    let other = PrivateKey::random();
    let other_nonce = app.session(&other.address()).await;
    let (status, body) = app
        .post(
            "/api/external/credits/balance",
            &app.balance_body(&other, &other_nonce, "o-1"),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let metrics = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("agentpmt_rate_limited_total{scope=\"wallet\"} 2"),
        "{metrics}"
    );
}
