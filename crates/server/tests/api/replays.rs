//! A replayed signed request (issue 20): the identical body answers 409
//! `EXTERNAL_SIGNATURE_REQUEST_REPLAY` with `details.original` (what became of the accepted
//! request: succeeded and what it cost, failed, ...), on any instance; another body under a
//! used request_id gets the plain 409.

use crate::backend_tests;
use crate::helpers::{assert_envelope, signed, spawn_app, spawn_on, AppOptions, Backend};
use crate::tools::{balance_of, ledger_sum};
use agentpmt_protocol::{PrivateKey, SignedAction};
use serde_json::{json, Map, Value};

backend_tests!(
    replayed_tool_call_names_its_original,
    replayed_read_names_its_original,
    sdk_resolves_a_lost_call
);

fn invoke_body(
    key: &PrivateKey,
    nonce: &str,
    request_id: &str,
    product: &str,
    action: &str,
    parameters: Value,
) -> Value {
    let mut fields = Map::new();
    fields.insert("parameters".into(), parameters);
    signed(
        key,
        SignedAction::ToolActionInvoke,
        &[("productSlug", product), ("actionSlug", action)],
        nonce,
        request_id,
        fields,
    )
}

async fn replayed_tool_call_names_its_original(backend: Backend) {
    let app = spawn_app(backend).await;
    let other = spawn_on(&app.database_url, AppOptions::default()).await;
    let key = PrivateKey::random();
    let wallet = key.address().to_string();
    assert_eq!(app.adjust(&key.address(), 10).await.0, 201);
    let nonce = app.session(&key.address()).await;
    let stats = "/api/external/tools/text-tools/actions/stats/invoke";

    // Accepted and charged; its answer "lost": the same body again, on the other instance.
    let body = invoke_body(
        &key,
        &nonce,
        "r1",
        "text-tools",
        "stats",
        json!({"text": "a b"}),
    );
    let (status, first) = app.post(stats, &body).await;
    assert_eq!(status, 200, "{first}");
    let (status, again) = other.post(stats, &body).await;
    let details = assert_envelope(status, &again, 409, "EXTERNAL_SIGNATURE_REQUEST_REPLAY");
    assert_eq!(
        details["original"],
        json!({"status": 200, "state": "succeeded", "charged_credits": 2,
               "usage_id": first["usage_id"]}),
        "{again}"
    );
    assert_eq!(balance_of(&app, &wallet).await, 8);

    // Another body under the used request_id: the plain 409, nothing about the original.
    let changed = invoke_body(
        &key,
        &nonce,
        "r1",
        "text-tools",
        "stats",
        json!({"text": "c"}),
    );
    let (status, plain) = other.post(stats, &changed).await;
    let details = assert_envelope(status, &plain, 409, "EXTERNAL_SIGNATURE_REQUEST_REPLAY");
    assert!(details.get("original").is_none(), "{plain}");

    // A call that ran and failed: the replay says so, and that nothing was charged.
    let keccak = "/api/external/tools/agent-signing-kit/actions/keccak256/invoke";
    let body = invoke_body(
        &key,
        &nonce,
        "r2",
        "agent-signing-kit",
        "keccak256",
        json!({"hex": "zz"}),
    );
    let (status, failed) = app.post(keccak, &body).await;
    let failure = assert_envelope(status, &failed, 502, "TOOL_FAILED");
    let (status, again) = other.post(keccak, &body).await;
    let details = assert_envelope(status, &again, 409, "EXTERNAL_SIGNATURE_REQUEST_REPLAY");
    assert_eq!(
        details["original"],
        json!({"status": 502, "state": "failed", "charged_credits": 0,
               "error_code": "TOOL_FAILED", "usage_id": failure["usage_id"]}),
        "{again}"
    );
    assert_eq!(balance_of(&app, &wallet).await, 8);
    assert_eq!(ledger_sum(&app, &wallet).await, 8);

    // A call refused before anything was held (too few credits) claimed nothing: the same
    // body is not a replay, and runs once there are credits.
    let validate = "/api/external/tools/json-tools/actions/validate/invoke";
    let schema = json!({"schema": {"type": "object"}, "document": {}});
    let body = invoke_body(&key, &nonce, "r3", "json-tools", "validate", schema.clone());
    assert_eq!(app.adjust(&key.address(), -5).await.0, 201);
    let (status, refused) = app.post(validate, &body).await;
    assert_envelope(status, &refused, 402, "INSUFFICIENT_CREDITS");
    assert_eq!(app.adjust(&key.address(), 5).await.0, 201);
    let (status, ran) = other.post(validate, &body).await;
    assert_eq!(status, 200, "{ran}");
}

async fn replayed_read_names_its_original(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = PrivateKey::random();
    let nonce = app.session(&key.address()).await;
    let body = app.balance_body(&key, &nonce, "b1");
    let (status, first) = app.post("/api/external/credits/balance", &body).await;
    assert_eq!(status, 200, "{first}");
    let (status, again) = app.post("/api/external/credits/balance", &body).await;
    let details = assert_envelope(status, &again, 409, "EXTERNAL_SIGNATURE_REQUEST_REPLAY");
    assert_eq!(
        details["original"],
        json!({"status": 200, "state": "succeeded", "charged_credits": 0})
    );

    // Documented where agents look: the OpenAPI document and the discovery card.
    let (_, openapi) = app.get("/openapi.json").await;
    let schema = &openapi["components"]["schemas"]["ReplayOriginal"];
    for field in [
        "status",
        "state",
        "charged_credits",
        "usage_id",
        "reservation_id",
    ] {
        assert!(
            schema["properties"].get(field).is_some(),
            "{field}: {schema}"
        );
    }
    let (_, card) = app.get("/.well-known/agent.json").await;
    assert_eq!(
        card["auth"]["replays"]["states"],
        json!(["in_progress", "succeeded", "failed", "released"])
    );
}

/// A proxy to `upstream` that loses the answer of the first tool invocation it carries
/// (forwards it, waits for the server's answer, then closes the client's connection
/// without it) and carries everything else faithfully. Clients must not reuse connections.
async fn proxy_losing_first_invoke_answer(upstream: std::net::SocketAddr) -> String {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let lost = Arc::new(AtomicBool::new(false));
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let lost = lost.clone();
            tokio::spawn(async move {
                let server = tokio::net::TcpStream::connect(upstream).await.unwrap();
                let (mut from_client, mut to_client) = client.into_split();
                let (mut from_server, mut to_server) = server.into_split();
                let mut head = vec![0u8; 64 * 1024];
                let n = from_client.read(&mut head).await.unwrap_or(0);
                to_server.write_all(&head[..n]).await.unwrap();
                let is_invoke = String::from_utf8_lossy(&head[..n]).contains("/invoke ");
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut from_client, &mut to_server).await;
                });
                if is_invoke && !lost.swap(true, Ordering::SeqCst) {
                    // The server answers; the client never hears it.
                    let mut byte = [0u8; 1];
                    let _ = from_server.read(&mut byte).await;
                    return;
                }
                let _ = tokio::io::copy(&mut from_server, &mut to_client).await;
            });
        }
    });
    format!("http://{addr}")
}

/// The SDK resolves a call whose answer was lost: it sends the identical body again and
/// gets `Error::Replay` saying the call succeeded and what it cost (charged once).
async fn sdk_resolves_a_lost_call(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = PrivateKey::random();
    let wallet = key.address().to_string();
    assert_eq!(app.adjust(&key.address(), 10).await.0, 201);
    let upstream: std::net::SocketAddr =
        app.base_url.trim_start_matches("http://").parse().unwrap();
    let proxy = proxy_losing_first_invoke_answer(upstream).await;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let client = agentpmt_sdk::Client::with_http_client(&proxy, key.clone(), http).unwrap();
    let outcome = client
        .invoke("text-tools", "stats", json!({"text": "lost answer"}))
        .await;
    let usage_id = app
        .text(&format!(
            "SELECT usage_id FROM tool_usage WHERE wallet_address = '{wallet}'"
        ))
        .await;
    match outcome {
        Err(agentpmt_sdk::Error::Replay { original }) => {
            assert_eq!(
                original.state,
                agentpmt_protocol::wire::ReplayState::Succeeded
            );
            assert_eq!(original.charged_credits, 2);
            assert_eq!(original.status, Some(200));
            assert_eq!(original.usage_id.as_deref(), Some(usage_id.as_str()));
        }
        other => panic!("expected Error::Replay, got {other:?}"),
    }
    assert_eq!(balance_of(&app, &wallet).await, 8);
}
