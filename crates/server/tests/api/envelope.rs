//! The error envelope on unknown routes, wrong methods, oversized and malformed bodies,
//! and the correlation id.

use crate::backend_tests;
use crate::helpers::*;
use agentpmt_protocol::PrivateKey;
use serde_json::json;

backend_tests!(
    unknown_route_and_wrong_method,
    oversized_body_is_413_and_writes_nothing,
    malformed_json_is_422,
    request_id_is_echoed
);

async fn unknown_route_and_wrong_method(backend: Backend) {
    let app = spawn_app(backend).await;
    let (status, body) = app.get("/api/external/nope").await;
    assert_envelope(status, &body, 404, "NOT_FOUND");
    let (status, body) = app.get("/api/external/credits/balance").await;
    assert_envelope(status, &body, 405, "METHOD_NOT_ALLOWED");
}

async fn oversized_body_is_413_and_writes_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = PrivateKey::random();
    let nonce = app.session(&key.address()).await;
    let mut body = app.balance_body(&key, &nonce, "big");
    body["padding"] = json!("x".repeat(64 * 1024));
    let (status, response) = app.post("/api/external/credits/balance", &body).await;
    let details = assert_envelope(status, &response, 413, "PAYLOAD_TOO_LARGE");
    assert!(details["checklist"].is_array());
    let (status, response) = app
        .post(
            "/api/external/auth/session",
            &json!({"wallet_address": key.address().to_string(), "pad": "y".repeat(70_000)}),
        )
        .await;
    assert_envelope(status, &response, 413, "PAYLOAD_TOO_LARGE");
    assert_eq!(app.replay_count().await, 0);
    assert_eq!(app.scalar("SELECT COUNT(*) FROM auth_sessions").await, 1);
    // Just under the limit is fine.
    let mut body = app.balance_body(&key, &nonce, "almost");
    body["padding"] = json!("x".repeat(60 * 1024));
    assert_eq!(
        app.post("/api/external/credits/balance", &body).await.0,
        200
    );
}

async fn malformed_json_is_422(backend: Backend) {
    let app = spawn_app(backend).await;
    for (raw, kind) in [
        ("{\"wallet_address\":", "json_invalid"),
        ("{\"a\":1,\"a\":2}", "json_duplicate_key"),
        ("[]", "model_attributes_type"),
        ("{\"a\":\"\\ud800\"}", "json_invalid"),
    ] {
        let (status, body) = app.post_bytes("/api/external/credits/balance", raw).await;
        assert_envelope(status, &body, 422, "VALIDATION_ERROR");
        assert_eq!(body["detail"][0]["type"], json!(kind), "{raw}: {body}");
    }
    let deep = "[".repeat(200) + &"]".repeat(200);
    let (status, body) = app.post_bytes("/api/external/credits/balance", deep).await;
    assert_envelope(status, &body, 422, "VALIDATION_ERROR");
    assert_eq!(app.replay_count().await, 0);
}

async fn request_id_is_echoed(backend: Backend) {
    let app = spawn_app(backend).await;
    let response = app
        .http
        .get(app.url("/nope"))
        .header("x-request-id", "corr-123")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "corr-123");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["request_id"], json!("corr-123"));
    // Without the header one is generated, and differs per request.
    let (_, a) = app.get("/nope").await;
    let (_, b) = app.get("/nope").await;
    assert_ne!(a["request_id"], b["request_id"]);
}
