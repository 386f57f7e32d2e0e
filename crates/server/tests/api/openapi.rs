//! The OpenAPI document covers every route.

use crate::backend_tests;
use crate::helpers::*;

backend_tests!(document_lists_every_route);

async fn document_lists_every_route(backend: Backend) {
    let app = spawn_app(backend).await;
    let (status, doc) = app.get("/openapi.json").await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/api/external/auth/session", "post"),
        ("/api/external/credits/balance", "post"),
        ("/api/external/credits/purchase", "post"),
        ("/api/admin/wallets/{address}", "get"),
        ("/api/admin/wallets/{address}/credits", "post"),
        ("/openapi.json", "get"),
        ("/api/external/agentaddress", "post"),
        ("/api/external/agent-help", "post"),
        ("/.well-known/agent.json", "get"),
        ("/docs", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
    ] {
        let operation = &paths[path][method];
        assert!(
            operation.is_object(),
            "{method} {path} missing from the document"
        );
        assert!(operation["responses"]
            .as_object()
            .is_some_and(|r| !r.is_empty()));
    }
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for schema in [
        "ErrorBody",
        "SessionRequest",
        "SessionResponse",
        "BalanceResponse",
        "SignedEnvelope",
        "PurchaseRequest",
        "PurchaseResponse",
        "AgentAddressResponse",
        "AgentAddressData",
        "AgentHelpRequest",
        "AgentHelpResponse",
        "RateLimitInfo",
        "HealthResponse",
    ] {
        assert!(schemas.contains_key(schema), "schema {schema} missing");
    }
    // Every documented path answers something other than 404 "No such route".
    for path in paths.keys() {
        let concrete = path.replace("{address}", "0x2c7536e3605d9c16a7a3d7b1898e529396a65c23");
        let response = app
            .http
            .post(app.url(&concrete))
            .body("{}")
            .send()
            .await
            .unwrap();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        assert_ne!(
            body["error_code"],
            serde_json::json!("NOT_FOUND"),
            "{path} is documented but not routed"
        );
    }
}
