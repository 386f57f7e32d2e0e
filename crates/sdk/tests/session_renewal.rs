//! Session handling against a stub server that expires nonces on demand: the client renews
//! once with a fresh request id, and surfaces the error when renewal does not help.

use agentpmt_protocol::{build_message, PrivateKey, Scope, Signature};
use agentpmt_sdk::{Client, Error, ErrorCode};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct Stub {
    sessions: usize,
    /// (session_nonce, request_id) of every balance call.
    calls: Vec<(String, String)>,
    /// Nonces the stub treats as expired.
    expired: Vec<String>,
    always_invalid: bool,
    /// `expires_in` of new sessions [default: 900].
    lifetime: Option<u64>,
}

type Shared = Arc<Mutex<Stub>>;

async fn session(State(stub): State<Shared>) -> Json<Value> {
    let mut stub = stub.lock().unwrap();
    stub.sessions += 1;
    let lifetime = stub.lifetime.unwrap_or(900);
    Json(
        json!({"session_nonce": format!("n{}", stub.sessions), "expires_in": lifetime,
        "expires_at": "2030-01-01T00:00:00.000Z", "wallet_address": "0x"}),
    )
}

fn error(code: &str) -> (StatusCode, Json<Value>) {
    (
        StatusCode::UNAUTHORIZED,
        Json(
            json!({"success": false, "error": "Unauthorized", "message": "nope",
        "error_code": code, "code": code, "detail": "nope", "details": {"checklist": ["make a new session"]}}),
        ),
    )
}

async fn balance(State(stub): State<Shared>, Json(body): Json<Value>) -> (StatusCode, Json<Value>) {
    let mut stub = stub.lock().unwrap();
    let nonce = body["session_nonce"].as_str().unwrap().to_owned();
    let request_id = body["request_id"].as_str().unwrap().to_owned();
    let wallet = body["wallet_address"].as_str().unwrap().parse().unwrap();
    // The stub checks the signature like a real server would.
    let message = build_message(
        &wallet,
        &nonce,
        &request_id,
        &Scope::action("balance", "-"),
        None,
    );
    let recovered = Signature::parse(body["signature"].as_str().unwrap())
        .unwrap()
        .recover_message(&message)
        .unwrap();
    assert_eq!(recovered, wallet);
    stub.calls.push((nonce.clone(), request_id));
    if stub.always_invalid {
        return error("EXTERNAL_SIGNATURE_SESSION_NONCE_INVALID");
    }
    if stub.calls.len() == 1 {
        stub.expired.push(nonce.clone());
    }
    if stub.expired.contains(&nonce) {
        return error("EXTERNAL_SIGNATURE_SESSION_NONCE_EXPIRED");
    }
    (
        StatusCode::OK,
        Json(
            json!({"success": true, "wallet_address": wallet.to_string(), "balance_credits": 42,
        "balance_usd": 0.42, "credits_per_usd": 100}),
        ),
    )
}

async fn spawn_stub(stub: Shared) -> String {
    let app = Router::new()
        .route("/api/external/auth/session", post(session))
        .route("/api/external/credits/balance", post(balance))
        .with_state(stub);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

#[tokio::test]
async fn renews_an_expired_session_once_with_a_fresh_request_id() {
    let stub = Shared::default();
    let client = Client::new(&spawn_stub(stub.clone()).await, PrivateKey::random()).unwrap();
    assert_eq!(client.balance().await.unwrap().balance_credits, 42);
    {
        let s = stub.lock().unwrap();
        assert_eq!(s.sessions, 2);
        assert_eq!(s.calls.len(), 2);
        assert_eq!(s.calls[0].0, "n1");
        assert_eq!(s.calls[1].0, "n2");
        assert_ne!(s.calls[0].1, s.calls[1].1, "a fresh request_id on retry");
    }
    // The renewed session is cached and reused.
    client.balance().await.unwrap();
    let s = stub.lock().unwrap();
    assert_eq!(s.sessions, 2);
    assert_eq!(s.calls[2].0, "n2");
}

#[tokio::test]
async fn gives_up_after_one_renewal_and_surfaces_the_error() {
    let stub = Shared::default();
    stub.lock().unwrap().always_invalid = true;
    let client = Client::new(&spawn_stub(stub.clone()).await, PrivateKey::random()).unwrap();
    let err = client.balance().await.unwrap_err();
    assert_eq!(
        err.code(),
        Some(ErrorCode::EXTERNAL_SIGNATURE_SESSION_NONCE_INVALID)
    );
    let Error::Api(failure) = err else {
        panic!("an API error")
    };
    assert_eq!(failure.status, 401);
    assert_eq!(failure.checklist, vec!["make a new session".to_owned()]);
    assert_eq!(stub.lock().unwrap().calls.len(), 2, "exactly one retry");
}

#[tokio::test]
async fn a_short_session_is_reused_not_renewed_on_every_call() {
    let stub = Shared::default();
    stub.lock().unwrap().lifetime = Some(20);
    let client = Client::new(&spawn_stub(stub.clone()).await, PrivateKey::random()).unwrap();
    for _ in 0..3 {
        client.balance().await.unwrap();
    }
    // The stub expires the first nonce (one renewal); after that the 20 s session serves
    // every call (with a fixed 30 s margin each call would open a new one: 4 sessions).
    assert_eq!(
        stub.lock().unwrap().sessions,
        2,
        "one 20 s session for the later calls"
    );
    assert_eq!(
        agentpmt_sdk::session_renew_margin(std::time::Duration::from_secs(20)),
        std::time::Duration::from_secs(5)
    );
    assert_eq!(
        agentpmt_sdk::session_renew_margin(std::time::Duration::from_secs(900)),
        std::time::Duration::from_secs(30)
    );
}

#[tokio::test]
async fn classifies_transport_and_configuration_errors() {
    // Nothing listens on a port we just freed: a transient connect error.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = Client::new(&format!("http://127.0.0.1:{port}"), PrivateKey::random()).unwrap();
    let err = client.balance().await.unwrap_err();
    assert!(err.is_transient() && !err.is_configuration(), "{err}");
    // A refused signature that renewal does not fix is no configuration error by itself
    // (the session codes are the client's to renew), and not transient either.
    let stub = Shared::default();
    stub.lock().unwrap().always_invalid = true;
    let client = Client::new(&spawn_stub(stub.clone()).await, PrivateKey::random()).unwrap();
    let err = client.balance().await.unwrap_err();
    assert!(!err.is_transient() && !err.is_configuration(), "{err}");
    assert!(Error::InvalidUrl("x".into()).is_configuration());
}

#[tokio::test]
async fn refuses_non_http_urls() {
    assert!(matches!(
        Client::new("ftp://x", PrivateKey::random()),
        Err(Error::InvalidUrl(_))
    ));
}
