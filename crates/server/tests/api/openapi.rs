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
        ("/api/admin/help-tickets/{ticketId}/close", "post"),
        ("/api/admin/help-tickets/{ticketId}/reopen", "post"),
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
        "HelpTicketResponse",
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

/// Every bound, pattern and enumeration of `openapi/constraints.rs` lands on a schema,
/// property or parameter the document has (a renamed field would drop it silently).
#[test]
fn every_constraint_finds_its_place_in_the_document() {
    let mut doc = serde_json::to_value(agentpmt_server::app::openapi_document()).unwrap();
    assert_eq!(
        agentpmt_server::openapi::document_constraints(&mut doc),
        Vec::<String>::new()
    );
    assert_eq!(
        doc.pointer("/components/schemas/SessionRequest/properties/wallet_address/pattern"),
        Some(&serde_json::json!(r"^0[xX][0-9a-fA-F]{40}$"))
    );
    assert_eq!(
        doc.pointer(
            "/paths/~1api~1external~1jobs~1list/post/requestBody/content/application~1json\
             /schema/allOf/0/$ref"
        ),
        Some(&serde_json::json!("#/components/schemas/SignedEnvelope"))
    );
    assert!(doc
        .pointer("/paths/~1api~1admin~1workflows/post/responses/413")
        .is_some());
}
