//! `POST /api/external/credits/balance`.

use crate::backend_tests;
use crate::helpers::*;
use agentpmt_protocol::PrivateKey;
use serde_json::json;

backend_tests!(
    unknown_wallet_has_zero,
    balance_follows_the_ledger,
    sdk_reads_the_balance
);

async fn unknown_wallet_has_zero(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = PrivateKey::random();
    let nonce = app.session(&key.address()).await;
    let (status, body) = app
        .post(
            "/api/external/credits/balance",
            &app.balance_body(&key, &nonce, "r"),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["success"], json!(true));
    assert_eq!(body["balance_credits"], json!(0));
    assert_eq!(body["balance_usd"], json!(0.0));
    assert_eq!(body["credits_per_usd"], json!(100));
    // Reading a balance creates no wallet row.
    assert_eq!(app.scalar("SELECT COUNT(*) FROM wallets").await, 0);
}

async fn balance_follows_the_ledger(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = PrivateKey::random();
    assert_eq!(app.adjust(&key.address(), 1500).await.0, 201);
    assert_eq!(app.adjust(&key.address(), -7).await.0, 201);
    let nonce = app.session(&key.address()).await;
    let (status, body) = app
        .post(
            "/api/external/credits/balance",
            &app.balance_body(&key, &nonce, "r"),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["balance_credits"], json!(1493));
    assert_eq!(body["balance_usd"], json!(14.93));
}

async fn sdk_reads_the_balance(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = PrivateKey::random();
    app.adjust(&key.address(), 500).await;
    let client = agentpmt_sdk::Client::new(&app.base_url, key).unwrap();
    for _ in 0..3 {
        assert_eq!(client.balance().await.unwrap().balance_credits, 500);
    }
    // One cached session served all three calls.
    assert_eq!(app.scalar("SELECT COUNT(*) FROM auth_sessions").await, 1);
    assert_eq!(app.replay_count().await, 3);
}
