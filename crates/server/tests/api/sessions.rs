//! `POST /api/external/auth/session`.

use crate::backend_tests;
use crate::helpers::*;
use agentpmt_protocol::PrivateKey;
use serde_json::json;

backend_tests!(
    issues_fresh_nonces_bound_to_the_wallet,
    invalid_wallet_is_422_and_writes_nothing,
    lifetime_is_configurable
);

async fn issues_fresh_nonces_bound_to_the_wallet(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = PrivateKey::random();
    let mixed = key.address().to_checksum();
    let (status, first) = app
        .post(
            "/api/external/auth/session",
            &json!({"wallet_address": mixed}),
        )
        .await;
    assert_eq!(status, 200, "{first}");
    let nonce = first["session_nonce"].as_str().unwrap();
    assert_eq!(nonce.len(), 64);
    assert!(nonce.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(first["expires_in"], json!(900));
    assert_eq!(first["wallet_address"], json!(key.address().to_string()));
    let expires_at =
        chrono::DateTime::parse_from_rfc3339(first["expires_at"].as_str().unwrap()).unwrap();
    let in_secs = expires_at.timestamp() - chrono::Utc::now().timestamp();
    assert!((895..=901).contains(&in_secs), "expires in {in_secs}s");

    let (_, second) = app
        .post(
            "/api/external/auth/session",
            &json!({"wallet_address": mixed}),
        )
        .await;
    assert_ne!(first["session_nonce"], second["session_nonce"]);
    assert_eq!(app.scalar("SELECT COUNT(*) FROM auth_sessions").await, 2);
}

async fn invalid_wallet_is_422_and_writes_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    for (body, loc) in [
        (
            json!({"wallet_address": "0x123"}),
            json!(["body", "wallet_address"]),
        ),
        (
            json!({"wallet_address": "0xZZ7536e3605d9c16a7a3d7b1898e529396a65c23"}),
            json!(["body", "wallet_address"]),
        ),
        (
            json!({"wallet_address": 42}),
            json!(["body", "wallet_address"]),
        ),
        (json!({}), json!(["body", "wallet_address"])),
        (
            json!({"wallet": "0x2c7536e3605d9c16a7a3d7b1898e529396a65c23"}),
            json!(["body", "wallet_address"]),
        ),
    ] {
        let (status, response) = app.post("/api/external/auth/session", &body).await;
        assert_envelope(status, &response, 422, "VALIDATION_ERROR");
        assert_eq!(response["detail"][0]["loc"], loc, "{response}");
    }
    for raw in [
        "not json",
        "[1,2]",
        "{\"wallet_address\":",
        "\"0x2c7536e3605d9c16a7a3d7b1898e529396a65c23\"",
    ] {
        let (status, response) = app.post_bytes("/api/external/auth/session", raw).await;
        assert_envelope(status, &response, 422, "VALIDATION_ERROR");
    }
    assert_eq!(app.scalar("SELECT COUNT(*) FROM auth_sessions").await, 0);
}

async fn lifetime_is_configurable(backend: Backend) {
    let app = spawn_app_with(
        backend,
        AppOptions {
            session_ttl_secs: 60,
            ..AppOptions::default()
        },
    )
    .await;
    let key = PrivateKey::random();
    let (status, body) = app
        .post(
            "/api/external/auth/session",
            &json!({"wallet_address": key.address().to_string()}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["expires_in"], json!(60));
}
