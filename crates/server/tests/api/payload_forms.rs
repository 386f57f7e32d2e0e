//! The verifier with non-empty payloads: raw UTF-8 and ASCII-escaped canonical forms,
//! number lexemes, key orders, the method/path scope and mismatch diagnostics.
//!
//! The spine has one signed endpoint (balance, empty payload), so these tests mount probe
//! routes that use the same `Signed<E>` extractor with the payload rules of later
//! endpoints (job completion, job list, tool-action invoke), served with the server's
//! own middleware, state and database.

use crate::backend_tests;
use crate::helpers::*;
use agentpmt_protocol::canonical::{self, sha256_hex, Escaping, JsonValue, KeyOrder};
use agentpmt_protocol::{build_message, PrivateKey, Scope, SignedAction};
use agentpmt_server::auth::{Signed, SignedEndpoint};
use agentpmt_server::error::ApiResult;
use agentpmt_server::AppState;
use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Debug, Deserialize)]
struct AnyBody {}

macro_rules! probe {
    ($name:ident, $action:expr) => {
        #[derive(Debug)]
        struct $name;
        impl SignedEndpoint for $name {
            type Body = AnyBody;
            const ACTION: SignedAction = $action;
        }
    };
}
probe!(Complete, SignedAction::JobComplete);
probe!(List, SignedAction::JobList);
probe!(Invoke, SignedAction::ToolActionInvoke);

async fn accept<E: SignedEndpoint>(
    State(state): State<AppState>,
    signed: Signed<E>,
) -> ApiResult<Json<Value>>
where
    E::Body: std::fmt::Debug,
{
    let mut tx = state.db.begin().await?;
    let (signer, _) = signed.claim(&mut tx).await?;
    tx.commit().await?;
    Ok(Json(
        json!({"payload_form": signer.payload_form, "wallet": signer.wallet.to_string()}),
    ))
}

/// Serves the probe routes with the app's state; returns their base URL.
async fn spawn_probe(app: &TestApp) -> String {
    let routes: Router<AppState> = Router::new()
        .route(
            "/api/external/jobs/{jobId}/complete",
            post(accept::<Complete>),
        )
        .route("/api/external/jobs/list", post(accept::<List>))
        .route(
            "/api/external/tools/{productSlug}/actions/{actionSlug}/invoke",
            post(accept::<Invoke>),
        );
    let router = agentpmt_server::app::with_middleware(routes, app.state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}")
}

/// Signs `scope` over the payload text `payload_canonical` (already canonical) by hand.
fn sign_text(
    key: &PrivateKey,
    nonce: &str,
    request_id: &str,
    scope: &Scope,
    payload_canonical: &str,
) -> String {
    let message = build_message(
        &key.address(),
        nonce,
        request_id,
        scope,
        Some(&sha256_hex(payload_canonical)),
    );
    key.sign_message(&message).to_hex()
}

backend_tests!(
    raw_and_escaped_forms_are_both_accepted,
    number_lexemes_are_hashed_as_sent,
    utf16_key_order_is_accepted,
    tampered_payload_reports_the_expected_hash,
    fields_rule_accepts_omitted_and_null,
    tool_invoke_signs_method_and_path,
);

fn complete_scope() -> Scope {
    Scope::action("job_complete", "job-1")
}

async fn raw_and_escaped_forms_are_both_accepted(backend: Backend) {
    let app = spawn_app(backend).await;
    let probe = spawn_probe(&app).await;
    let key = PrivateKey::random();
    let nonce = app.session(&key.address()).await;
    let payload = json!({"proof_text": "Publié ✓ 😀 \u{2028}", "social_posts": [{"platform": "x", "note": "é\n\"q\""}]});
    let value = JsonValue::from_serde(&payload);
    for (i, escaping, form) in [
        (0, Escaping::Utf8, "utf8"),
        (1, Escaping::Ascii, "ascii_escaped"),
    ] {
        let canonical = canonical::to_canonical(&value, escaping, KeyOrder::CodePoint);
        let request_id = format!("r{i}");
        let mut body = payload.clone();
        body["wallet_address"] = json!(key.address().to_string());
        body["session_nonce"] = json!(nonce);
        body["request_id"] = json!(request_id);
        body["signature"] = json!(sign_text(
            &key,
            &nonce,
            &request_id,
            &complete_scope(),
            &canonical
        ));
        // Send the body the way that client would: a Python client escapes, JS does not.
        let text = match escaping {
            Escaping::Ascii => canonical::to_canonical(
                &JsonValue::from_serde(&body),
                Escaping::Ascii,
                KeyOrder::CodePoint,
            ),
            Escaping::Utf8 => serde_json::to_string_pretty(&body).unwrap(),
        };
        let (status, response) = app
            .post_to(format!("{probe}/api/external/jobs/job-1/complete"), text)
            .await;
        assert_eq!(status, 200, "{form}: {response}");
        assert_eq!(response["payload_form"], json!(form));
    }
}

async fn number_lexemes_are_hashed_as_sent(backend: Backend) {
    let app = spawn_app(backend).await;
    let probe = spawn_probe(&app).await;
    let key = PrivateKey::random();
    let nonce = app.session(&key.address()).await;
    let payload_text =
        r#"{"big":123456789012345678901234567890,"f":1.0,"e":1e+16,"neg":-0,"tiny":1.5e-07}"#;
    let canonical = canonical::to_canonical(
        &canonical::parse(payload_text.as_bytes()).unwrap(),
        Escaping::Utf8,
        KeyOrder::CodePoint,
    );
    assert_eq!(
        canonical,
        r#"{"big":123456789012345678901234567890,"e":1e+16,"f":1.0,"neg":-0,"tiny":1.5e-07}"#
    );
    let signature = sign_text(&key, &nonce, "n1", &complete_scope(), &canonical);
    let body = format!(
        r#"{{"wallet_address":"{}","session_nonce":"{nonce}","request_id":"n1","signature":"{signature}","proof_text":{payload_text}}}"#,
        key.address()
    );
    // The payload is the body without the envelope: {"proof_text": {...}}.
    let (status, response) = app
        .post_to(
            format!("{probe}/api/external/jobs/job-1/complete"),
            body.clone(),
        )
        .await;
    assert_envelope(status, &response, 401, "EXTERNAL_SIGNATURE_WALLET_MISMATCH");
    let wrapped = format!(r#"{{"proof_text":{canonical}}}"#);
    let signature = sign_text(&key, &nonce, "n2", &complete_scope(), &wrapped);
    let body = format!(
        r#"{{"wallet_address":"{}","session_nonce":"{nonce}","request_id":"n2","signature":"{signature}","proof_text":{payload_text}}}"#,
        key.address()
    );
    let (status, response) = app
        .post_to(format!("{probe}/api/external/jobs/job-1/complete"), body)
        .await;
    assert_eq!(status, 200, "{response}");
}

async fn utf16_key_order_is_accepted(backend: Backend) {
    let app = spawn_app(backend).await;
    let probe = spawn_probe(&app).await;
    let key = PrivateKey::random();
    let nonce = app.session(&key.address()).await;
    let payload = json!({"proof_text": "p", "\u{1F600}": 1, "\u{FF61}": 2});
    let js_canonical = canonical::to_canonical(
        &JsonValue::from_serde(&payload),
        Escaping::Utf8,
        KeyOrder::Utf16,
    );
    assert!(js_canonical.find('\u{1F600}') < js_canonical.find('\u{FF61}'));
    let mut body = payload.clone();
    body["wallet_address"] = json!(key.address().to_string());
    body["session_nonce"] = json!(nonce);
    body["request_id"] = json!("u1");
    body["signature"] = json!(sign_text(
        &key,
        &nonce,
        "u1",
        &complete_scope(),
        &js_canonical
    ));
    let (status, response) = app
        .post_to(
            format!("{probe}/api/external/jobs/job-1/complete"),
            body.to_string(),
        )
        .await;
    assert_eq!(status, 200, "{response}");
    assert_eq!(response["payload_form"], json!("utf8_utf16_key_order"));
}

async fn tampered_payload_reports_the_expected_hash(backend: Backend) {
    let app = spawn_app(backend).await;
    let probe = spawn_probe(&app).await;
    let key = PrivateKey::random();
    let nonce = app.session(&key.address()).await;
    let mut fields = serde_json::Map::new();
    fields.insert("proof_text".into(), json!("honest"));
    fields.insert("reservation_id".into(), json!("res-1"));
    let mut body = signed(
        &key,
        SignedAction::JobComplete,
        &[("jobId", "job-1")],
        &nonce,
        "t1",
        fields,
    );
    body["proof_text"] = json!("tampered");
    let (status, response) = app
        .post_to(
            format!("{probe}/api/external/jobs/job-1/complete"),
            body.to_string(),
        )
        .await;
    let details = assert_envelope(status, &response, 401, "EXTERNAL_SIGNATURE_WALLET_MISMATCH");
    let sent_canonical = r#"{"proof_text":"tampered","reservation_id":"res-1"}"#;
    assert_eq!(
        details["expected_payload_hash"],
        json!(sha256_hex(sent_canonical))
    );
    assert_eq!(details["payload_canonical"], json!(sent_canonical));
    assert_eq!(
        details["payload_canonical_top_level_keys"],
        json!(["proof_text", "reservation_id"])
    );
    assert_eq!(details["expected_product"], json!("job-1"));
    assert!(details["accepted_payload_hashes"]
        .as_array()
        .is_some_and(|a| !a.is_empty()));
    // Another job id in the URL than the one signed is also a mismatch.
    let mut fields = serde_json::Map::new();
    fields.insert("proof_text".into(), json!("p"));
    let body = signed(
        &key,
        SignedAction::JobComplete,
        &[("jobId", "job-1")],
        &nonce,
        "t2",
        fields,
    );
    let (status, response) = app
        .post_to(
            format!("{probe}/api/external/jobs/job-2/complete"),
            body.to_string(),
        )
        .await;
    assert_envelope(status, &response, 401, "EXTERNAL_SIGNATURE_WALLET_MISMATCH");
    assert_eq!(app.replay_count().await, 0);
}

async fn fields_rule_accepts_omitted_and_null(backend: Backend) {
    let app = spawn_app(backend).await;
    let probe = spawn_probe(&app).await;
    let key = PrivateKey::random();
    let nonce = app.session(&key.address()).await;
    let scope = Scope::action("job_list", "-");
    for (i, hashed) in [r#"{"limit":5}"#, r#"{"limit":5,"skip":null}"#]
        .into_iter()
        .enumerate()
    {
        let request_id = format!("l{i}");
        let body = json!({
            "wallet_address": key.address().to_string(), "session_nonce": nonce, "request_id": request_id,
            "signature": sign_text(&key, &nonce, &request_id, &scope, hashed), "limit": 5,
        });
        let (status, response) = app
            .post_to(format!("{probe}/api/external/jobs/list"), body.to_string())
            .await;
        assert_eq!(status, 200, "{hashed}: {response}");
    }
}

async fn tool_invoke_signs_method_and_path(backend: Backend) {
    let app = spawn_app(backend).await;
    let probe = spawn_probe(&app).await;
    let key = PrivateKey::random();
    let nonce = app.session(&key.address()).await;
    let params = [("productSlug", "weather"), ("actionSlug", "get-forecast")];
    let mut fields = serde_json::Map::new();
    fields.insert("parameters".into(), json!({"city": "Zürich", "days": 3}));
    let body = signed(
        &key,
        SignedAction::ToolActionInvoke,
        &params,
        &nonce,
        "i1",
        fields.clone(),
    );
    let url = format!("{probe}/api/external/tools/weather/actions/get-forecast/invoke");
    let (status, response) = app.post_to(url.clone(), body.to_string()).await;
    assert_eq!(status, 200, "{response}");

    // Signing action/product lines instead of method/path is refused, with the path to sign.
    let canonical = r#"{"city":"Zürich","days":3}"#;
    let wrong = sign_text(
        &key,
        &nonce,
        "i2",
        &Scope::action("invoke", "weather"),
        canonical,
    );
    let mut body = signed(
        &key,
        SignedAction::ToolActionInvoke,
        &params,
        &nonce,
        "i2",
        fields.clone(),
    );
    body["signature"] = json!(wrong);
    let (status, response) = app.post_to(url.clone(), body.to_string()).await;
    let details = assert_envelope(status, &response, 401, "EXTERNAL_SIGNATURE_WALLET_MISMATCH");
    assert_eq!(
        details["accepted_path_candidates"],
        json!(["/external/tools/weather/actions/get-forecast/invoke"])
    );
    assert_eq!(details["expected_method"], json!("POST"));

    // A missing `parameters` hashes as {}.
    let body = signed(
        &key,
        SignedAction::ToolActionInvoke,
        &params,
        &nonce,
        "i3",
        serde_json::Map::new(),
    );
    let message = build_message(
        &key.address(),
        &nonce,
        "i3",
        &Scope::method_path(
            "POST",
            "/external/tools/weather/actions/get-forecast/invoke",
        ),
        Some(&sha256_hex("{}")),
    );
    assert_eq!(
        body["signature"],
        json!(key.sign_message(&message).to_hex())
    );
    assert_eq!(app.post_to(url, body.to_string()).await.0, 200);
}
