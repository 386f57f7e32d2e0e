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
    signed_routes_have_a_per_ip_limit_fresh_wallets_do_not_escape,
    wallets_without_a_session_get_no_bucket,
    a_signature_matching_nothing_pays_for_every_recovery,
);

fn limiter_keys(metrics: &str, limiter: &str) -> u64 {
    let prefix = format!("agentpmt_rate_limit_keys{{limiter=\"{limiter}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix} in {metrics}"))
        .trim()
        .parse()
        .unwrap()
}

/// A random wallet, a random nonce and a signature of its own: what a flood of fresh
/// wallets sends.
fn random_wallet_body(i: usize) -> serde_json::Value {
    signed(
        &PrivateKey::random(),
        agentpmt_protocol::SignedAction::Balance,
        &[],
        &format!("no-such-session-{i}"),
        "r-1",
        serde_json::Map::new(),
    )
}

/// Signed endpoints count requests per client address before anything else: signing with
/// a fresh wallet for every request does not get a fresh limit.
async fn signed_routes_have_a_per_ip_limit_fresh_wallets_do_not_escape(backend: Backend) {
    let app = spawn_app_with(
        backend,
        AppOptions::configured(|c| {
            c.signed_ip_rate_per_sec = 1;
            c.signed_ip_rate_burst = 3;
        }),
    )
    .await;
    // A well-behaved wallet's session, opened before the flood (session creation has its
    // own limit).
    let key = PrivateKey::random();
    let nonce = app.session(&key.address()).await;
    for i in 0..3 {
        let (status, body) = app
            .post("/api/external/credits/balance", &random_wallet_body(i))
            .await;
        assert_envelope(
            status,
            &body,
            401,
            "EXTERNAL_SIGNATURE_SESSION_NONCE_INVALID",
        );
    }
    let (status, body) = app
        .post("/api/external/credits/balance", &random_wallet_body(9))
        .await;
    let details = assert_envelope(status, &body, 429, "RATE_LIMITED");
    assert_eq!(details["scope"], json!("ip"));
    // The same bucket guards every signed route, invoke included.
    let (status, body) = app
        .post(
            "/api/external/credits/balance",
            &app.balance_body(&key, &nonce, "good-1"),
        )
        .await;
    assert_envelope(status, &body, 429, "RATE_LIMITED");
    let mut invoke = app.balance_body(&key, &nonce, "good-2");
    invoke["parameters"] = json!({"text": "x"});
    let (status, body) = app
        .post(
            "/api/external/tools/text-tools/actions/extract-urls/invoke",
            &invoke,
        )
        .await;
    let details = assert_envelope(status, &body, 429, "RATE_LIMITED");
    assert_eq!(details["scope"], json!("ip"));
    assert_eq!(app.replay_count().await, 0, "nothing was written");
    assert!(app
        .metrics()
        .await
        .contains("agentpmt_rate_limited_total{scope=\"signed_ip\"} 3"));
}

/// The per-wallet limiter keeps a bucket only for wallets that have a session: a flood of
/// random wallets leaves it empty (bounded memory), and is refused before any recovery.
async fn wallets_without_a_session_get_no_bucket(backend: Backend) {
    let app = spawn_app(backend).await;
    for i in 0..300 {
        let (status, body) = app
            .post("/api/external/credits/balance", &random_wallet_body(i))
            .await;
        assert_envelope(
            status,
            &body,
            401,
            "EXTERNAL_SIGNATURE_SESSION_NONCE_INVALID",
        );
    }
    let metrics = app.metrics().await;
    assert_eq!(limiter_keys(&metrics, "wallet"), 0, "{metrics}");
    assert_eq!(limiter_keys(&metrics, "signed_ip"), 1, "{metrics}");
    let key = PrivateKey::random();
    let nonce = app.session(&key.address()).await;
    let (status, body) = app
        .post(
            "/api/external/credits/balance",
            &app.balance_body(&key, &nonce, "ok-1"),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(limiter_keys(&app.metrics().await, "wallet"), 1);
}

/// A tool invoke is accepted over many message variants (path prefix, trailing slash,
/// slug spellings, payload escapings). A signature that matches none of them costs one
/// recovery per distinct message, and the client's address pays a token for each: a
/// bogus invoke is not a cheap way to spend the server's CPU.
async fn a_signature_matching_nothing_pays_for_every_recovery(backend: Backend) {
    let app = spawn_app_with(
        backend,
        AppOptions::configured(|c| {
            c.signed_ip_rate_per_sec = 1;
            c.signed_ip_rate_burst = 12;
        }),
    )
    .await;
    let key = PrivateKey::random();
    let nonce = app.session(&key.address()).await;
    // Forged balance requests: one message each, one token each.
    for i in 0..3 {
        let mut forged = app.balance_body(&PrivateKey::random(), &nonce, &format!("f-{i}"));
        forged["wallet_address"] = json!(key.address().to_string());
        let (status, body) = app.post("/api/external/credits/balance", &forged).await;
        assert_envelope(status, &body, 401, "EXTERNAL_SIGNATURE_WALLET_MISMATCH");
    }
    // A forged invoke with a raw action spelling and a non-ASCII parameter: dozens of
    // accepted messages, so it empties the bucket.
    let mut forged = app.balance_body(&PrivateKey::random(), &nonce, "f-invoke");
    forged["wallet_address"] = json!(key.address().to_string());
    forged["parameters"] = json!({"text": "é https://example.org"});
    let (status, body) = app
        .post(
            "/api/external/tools/text-tools/actions/extract_urls/invoke",
            &forged,
        )
        .await;
    let details = assert_envelope(status, &body, 401, "EXTERNAL_SIGNATURE_WALLET_MISMATCH");
    let paths = details["accepted_path_candidates"]
        .as_array()
        .unwrap()
        .len();
    assert!(paths >= 8, "{details}");
    let (status, body) = app
        .post(
            "/api/external/credits/balance",
            &app.balance_body(&key, &nonce, "good-1"),
        )
        .await;
    let details = assert_envelope(status, &body, 429, "RATE_LIMITED");
    assert_eq!(details["scope"], json!("ip"));
}

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
