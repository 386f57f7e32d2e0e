//! `/healthz`, `/readyz`, `/metrics`.

use crate::backend_tests;
use crate::helpers::*;
use agentpmt_protocol::PrivateKey;
use reqwest::StatusCode;
use serde_json::json;

backend_tests!(
    health_and_readiness_report_their_checks,
    metrics_count_requests_signature_failures_and_ledger_postings,
    an_ops_token_guards_metrics_and_readiness_details,
);

/// With `--ops-token`, `/metrics` needs the ops (or admin) token and `/readyz` names its
/// checks only to such a caller; its status code is the same for everyone.
async fn an_ops_token_guards_metrics_and_readiness_details(backend: Backend) {
    let app = spawn_app_with(
        backend,
        AppOptions::configured(|c| {
            c.ops_token = Some("ops-secret-token".to_owned().into());
        }),
    )
    .await;
    let get = |path: &'static str, token: Option<&'static str>| {
        let mut request = app.http.get(app.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move {
            let response = request.send().await.unwrap();
            (response.status(), response.text().await.unwrap())
        }
    };
    let (status, text) = get("/metrics", None).await;
    let body: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_envelope(status, &body, 401, "ADMIN_UNAUTHORIZED");
    let (status, _) = get("/metrics", Some("wrong")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    for token in ["ops-secret-token", ADMIN_TOKEN] {
        let (status, text) = get("/metrics", Some(token)).await;
        assert_eq!(status, StatusCode::OK, "{text}");
        assert!(text.contains("agentpmt_http_requests_total"), "{text}");
        assert!(text.contains("agentpmt_rate_limit_keys"), "{text}");
    }

    let (status, text) = get("/readyz", None).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let body: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["status"], json!("ready"));
    assert_eq!(body["checks"], json!([]), "no details without the token");
    let (status, text) = get("/readyz", Some("ops-secret-token")).await;
    assert_eq!(status, StatusCode::OK);
    let body: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(body["checks"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["name"] == json!("database")));
    // Not ready: the status code says so to everyone, the reason only to the operator.
    app.execute(
        "DELETE FROM _sqlx_migrations WHERE version = (SELECT MAX(version) FROM _sqlx_migrations)",
    )
    .await
    .unwrap();
    let (status, text) = get("/readyz", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(!text.contains("migrations"), "{text}");
    let (status, text) = get("/readyz", Some("ops-secret-token")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(text.contains("migrations"), "{text}");
}

async fn health_and_readiness_report_their_checks(backend: Backend) {
    let app = spawn_app(backend).await;
    let (status, body) = app.get("/healthz").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], json!("ok"));
    let (status, body) = app.get("/readyz").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], json!("ready"));
    let checks = body["checks"].as_array().unwrap();
    assert!(checks
        .iter()
        .any(|c| c["name"] == json!("database") && c["status"] == json!("ok")));
    assert!(checks
        .iter()
        .any(|c| c["name"] == json!("migrations") && c["status"] == json!("ok")));

    // The newest migration is missing from the database: not ready, still alive.
    app.execute(
        "DELETE FROM _sqlx_migrations WHERE version = (SELECT MAX(version) FROM _sqlx_migrations)",
    )
    .await
    .unwrap();
    let (status, body) = app.get("/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["status"], json!("not_ready"));
    let migrations = body["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == json!("migrations"))
        .unwrap()
        .clone();
    assert_eq!(migrations["status"], json!("failed"), "{body}");
    let (status, _) = app.get("/healthz").await;
    assert_eq!(status, StatusCode::OK);
}

async fn metrics_count_requests_signature_failures_and_ledger_postings(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = PrivateKey::random();
    let wallet = key.address();
    let nonce = app.session(&wallet).await;
    let (status, _) = app.adjust(&wallet, 40).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = app.adjust(&wallet, -15).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = app
        .post(
            "/api/external/credits/balance",
            &app.balance_body(&key, &nonce, "m-1"),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let other = PrivateKey::random();
    let mut forged = app.balance_body(&other, &nonce, "m-2");
    forged["wallet_address"] = json!(wallet.to_string());
    let (status, _) = app.post("/api/external/credits/balance", &forged).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    app.get("/no/such/route").await;

    let response = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    for line in [
        "agentpmt_http_requests_total{method=\"POST\",route=\"/api/external/credits/balance\",status=\"200\"} 1",
        "agentpmt_http_requests_total{method=\"POST\",route=\"/api/external/credits/balance\",status=\"401\"} 1",
        "agentpmt_http_requests_total{method=\"POST\",route=\"/api/external/auth/session\",status=\"200\"} 1",
        "agentpmt_http_requests_total{method=\"GET\",route=\"unmatched\",status=\"404\"} 1",
        "agentpmt_signature_failures_total{error_code=\"EXTERNAL_SIGNATURE_WALLET_MISMATCH\"} 1",
        "agentpmt_ledger_postings_total{kind=\"admin_adjustment\",direction=\"grant\"} 1",
        "agentpmt_ledger_credits_total{kind=\"admin_adjustment\",direction=\"debit\"} 15",
        "agentpmt_http_request_duration_seconds_count{method=\"POST\",route=\"/api/external/credits/balance\"} 2",
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }
}
