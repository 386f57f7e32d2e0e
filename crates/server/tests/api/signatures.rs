//! Signed-request verification: every error path, replay, concurrency, signature encodings.

use crate::backend_tests;
use crate::helpers::*;
use agentpmt_protocol::signature::CURVE_ORDER;
use agentpmt_protocol::{build_message, PrivateKey, Scope};
use serde_json::{json, Value};

const BALANCE: &str = "/api/external/credits/balance";

backend_tests!(
    valid_request_is_accepted,
    replay_is_409_and_changes_nothing,
    fifty_concurrent_copies_exactly_one_succeeds,
    nonce_of_another_wallet_is_invalid,
    unknown_nonce_is_invalid,
    expired_nonce_is_expired,
    tampered_fields_are_wallet_mismatch_with_diagnostics,
    signature_by_another_key_is_wallet_mismatch,
    malformed_signatures,
    high_s_twin_is_refused,
    v_zero_and_one_are_accepted,
    mixed_case_wallet_is_accepted,
    failed_verification_writes_nothing,
    replay_records_outlive_pruned_sessions,
    instances_on_one_database_share_sessions_and_replays,
);

async fn valid_request_is_accepted(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = PrivateKey::random();
    let nonce = app.session(&key.address()).await;
    let (status, body) = app
        .post(BALANCE, &app.balance_body(&key, &nonce, "req-1"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["wallet_address"], json!(key.address().to_string()));
    assert_eq!(app.replay_count().await, 1);
}

async fn replay_is_409_and_changes_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = PrivateKey::random();
    let nonce = app.session(&key.address()).await;
    let body = app.balance_body(&key, &nonce, "same-id");
    assert_eq!(app.post(BALANCE, &body).await.0, 200);
    let (status, response) = app.post(BALANCE, &body).await;
    let details = assert_envelope(status, &response, 409, "EXTERNAL_SIGNATURE_REQUEST_REPLAY");
    assert_eq!(details["request_id"], json!("same-id"));
    assert_eq!(app.replay_count().await, 1);
    // A fresh request_id in the same session works.
    assert_eq!(
        app.post(BALANCE, &app.balance_body(&key, &nonce, "other-id"))
            .await
            .0,
        200
    );
    // The same request_id in a new session is a different request.
    let nonce2 = app.session(&key.address()).await;
    assert_eq!(
        app.post(BALANCE, &app.balance_body(&key, &nonce2, "same-id"))
            .await
            .0,
        200
    );
}

async fn fifty_concurrent_copies_exactly_one_succeeds(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = PrivateKey::random();
    let nonce = app.session(&key.address()).await;
    let body = app.balance_body(&key, &nonce, "racing");
    let results = futures::future::join_all((0..50).map(|_| app.post(BALANCE, &body))).await;
    let ok = results.iter().filter(|(s, _)| *s == 200).count();
    let replays = results
        .iter()
        .filter(|(s, b)| *s == 409 && b["error_code"] == json!("EXTERNAL_SIGNATURE_REQUEST_REPLAY"))
        .count();
    assert_eq!(
        (ok, replays),
        (1, 49),
        "{:?}",
        results.iter().map(|(s, _)| s.as_u16()).collect::<Vec<_>>()
    );
    assert_eq!(app.replay_count().await, 1);
}

async fn nonce_of_another_wallet_is_invalid(backend: Backend) {
    let app = spawn_app(backend).await;
    let (alice, bob) = (PrivateKey::random(), PrivateKey::random());
    let bobs_nonce = app.session(&bob.address()).await;
    let (status, body) = app
        .post(BALANCE, &app.balance_body(&alice, &bobs_nonce, "r1"))
        .await;
    assert_envelope(
        status,
        &body,
        401,
        "EXTERNAL_SIGNATURE_SESSION_NONCE_INVALID",
    );
}

async fn unknown_nonce_is_invalid(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = PrivateKey::random();
    let (status, body) = app
        .post(BALANCE, &app.balance_body(&key, "no-such-nonce", "r1"))
        .await;
    assert_envelope(
        status,
        &body,
        401,
        "EXTERNAL_SIGNATURE_SESSION_NONCE_INVALID",
    );
}

async fn expired_nonce_is_expired(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = PrivateKey::random();
    let past = agentpmt_server::time::now_ms() - 1_000;
    app.insert_session("old-nonce", &key.address(), past).await;
    let (status, body) = app
        .post(BALANCE, &app.balance_body(&key, "old-nonce", "r1"))
        .await;
    let details = assert_envelope(
        status,
        &body,
        401,
        "EXTERNAL_SIGNATURE_SESSION_NONCE_EXPIRED",
    );
    assert!(details["expired_at"].is_string());
    assert_eq!(app.replay_count().await, 0);
}

async fn tampered_fields_are_wallet_mismatch_with_diagnostics(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = PrivateKey::random();
    let nonce = app.session(&key.address()).await;
    let mut body = app.balance_body(&key, &nonce, "signed-id");
    body["request_id"] = json!("tampered-id");
    let (status, response) = app.post(BALANCE, &body).await;
    let details = assert_envelope(status, &response, 401, "EXTERNAL_SIGNATURE_WALLET_MISMATCH");
    let expected = build_message(
        &key.address(),
        &nonce,
        "tampered-id",
        &Scope::action("balance", "-"),
        None,
    );
    assert_eq!(details["expected_message"], json!(expected));
    assert_eq!(details["expected_wallet"], json!(key.address().to_string()));
    let recovered = details["recovered_wallet_for_expected_message"]
        .as_str()
        .unwrap();
    assert!(recovered.starts_with("0x") && recovered != key.address().to_string());
    assert_eq!(details["expected_payload_hash"], json!(""));
    assert_eq!(details["expected_action"], json!("balance"));
    assert_eq!(details["expected_product"], json!("-"));
    assert!(details["payload_canonical_top_level_keys"].is_array());
    assert!(details["accepted_path_candidates"].is_array());
    // Signing exactly the expected message fixes it: the diagnostics are actionable.
    body["signature"] = json!(key.sign_message(&expected).to_hex());
    assert_eq!(app.post(BALANCE, &body).await.0, 200);
}

async fn signature_by_another_key_is_wallet_mismatch(backend: Backend) {
    let app = spawn_app(backend).await;
    let (owner, thief) = (PrivateKey::random(), PrivateKey::random());
    let nonce = app.session(&owner.address()).await;
    let message = build_message(
        &owner.address(),
        &nonce,
        "r1",
        &Scope::action("balance", "-"),
        None,
    );
    let mut body = app.balance_body(&owner, &nonce, "r1");
    body["signature"] = json!(thief.sign_message(&message).to_hex());
    let (status, response) = app.post(BALANCE, &body).await;
    let details = assert_envelope(status, &response, 401, "EXTERNAL_SIGNATURE_WALLET_MISMATCH");
    assert_eq!(
        details["recovered_wallet_for_expected_message"],
        json!(thief.address().to_string())
    );
}

async fn malformed_signatures(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = PrivateKey::random();
    let nonce = app.session(&key.address()).await;
    let good = app.balance_body(&key, &nonce, "r1")["signature"]
        .as_str()
        .unwrap()
        .to_owned();
    let cases: Vec<String> = vec![
        good[2..].to_owned(),                            // no 0x
        good[..130].to_owned(),                          // 64 bytes
        format!("{good}00"),                             // 66 bytes
        format!("{}zz", &good[..130]),                   // not hex
        format!("{}1d", &good[..130]),                   // v = 29
        format!("{}02", &good[..130]),                   // v = 2
        format!("0x{}{}", "00".repeat(32), &good[66..]), // r = 0
        format!("0x{}", "ff".repeat(65)),                // r, s out of range
        String::new(),
        "0x".to_owned(),
    ];
    for (i, bad) in cases.into_iter().enumerate() {
        let mut body = app.balance_body(&key, &nonce, &format!("m{i}"));
        body["signature"] = json!(bad);
        let (status, response) = app.post(BALANCE, &body).await;
        assert_envelope(status, &response, 401, "EXTERNAL_SIGNATURE_MALFORMED");
    }
    assert_eq!(app.replay_count().await, 0);
}

/// s' = n - s with v flipped: the same signature, encoded with a high S.
fn high_s_twin(signature_hex: &str) -> String {
    let mut bytes = hex::decode(&signature_hex[2..]).unwrap();
    let mut twin = [0u8; 32];
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let d = CURVE_ORDER[i] as i16 - bytes[32 + i] as i16 - borrow;
        twin[i] = d.rem_euclid(256) as u8;
        borrow = i16::from(d < 0);
    }
    bytes[32..64].copy_from_slice(&twin);
    bytes[64] = if bytes[64] == 27 { 28 } else { 27 };
    format!("0x{}", hex::encode(bytes))
}

async fn high_s_twin_is_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = PrivateKey::random();
    let nonce = app.session(&key.address()).await;
    let mut body = app.balance_body(&key, &nonce, "r1");
    body["signature"] = json!(high_s_twin(body["signature"].as_str().unwrap()));
    let (status, response) = app.post(BALANCE, &body).await;
    let details = assert_envelope(status, &response, 401, "EXTERNAL_SIGNATURE_MALFORMED");
    assert!(
        details["reason"].as_str().unwrap().contains("high s"),
        "{details}"
    );
}

async fn v_zero_and_one_are_accepted(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = PrivateKey::random();
    let nonce = app.session(&key.address()).await;
    let mut body = app.balance_body(&key, &nonce, "r1");
    let sig = body["signature"].as_str().unwrap().to_owned();
    let v = u8::from_str_radix(&sig[130..], 16).unwrap() - 27;
    body["signature"] = json!(format!("{}{:02x}", &sig[..130], v));
    assert_eq!(app.post(BALANCE, &body).await.0, 200);
}

async fn mixed_case_wallet_is_accepted(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = PrivateKey::random();
    let nonce = app.session(&key.address()).await;
    for (i, wallet) in [
        key.address().to_checksum(),
        key.address().to_string().to_uppercase().replace("0X", "0x"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut body = app.balance_body(&key, &nonce, &format!("r{i}"));
        body["wallet_address"] = json!(wallet);
        let (status, response) = app.post(BALANCE, &body).await;
        assert_eq!(status, 200, "{response}");
        assert_eq!(response["wallet_address"], json!(key.address().to_string()));
    }
}

async fn failed_verification_writes_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = PrivateKey::random();
    let nonce = app.session(&key.address()).await;
    let good = app.balance_body(&key, &nonce, "r1");
    let mut cases: Vec<Value> = Vec::new();
    for field in ["wallet_address", "session_nonce", "request_id", "signature"] {
        let mut missing = good.clone();
        missing.as_object_mut().unwrap().remove(field);
        cases.push(missing);
        let mut wrong_type = good.clone();
        wrong_type[field] = json!(12345);
        cases.push(wrong_type);
        let mut null = good.clone();
        null[field] = Value::Null;
        cases.push(null);
    }
    let mut newline = good.clone();
    newline["request_id"] = json!("r1\naction:balance");
    cases.push(newline);
    let mut long = good.clone();
    long["request_id"] = json!("x".repeat(129));
    cases.push(long);
    let mut empty = good.clone();
    empty["request_id"] = json!("");
    cases.push(empty);
    for case in &cases {
        let (status, response) = app.post(BALANCE, case).await;
        assert_envelope(status, &response, 422, "VALIDATION_ERROR");
    }
    // Missing fields are all reported at once, each with its location.
    let (status, response) = app.post(BALANCE, &json!({})).await;
    assert_envelope(status, &response, 422, "VALIDATION_ERROR");
    let locs: Vec<Value> = response["detail"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["loc"].clone())
        .collect();
    for field in ["wallet_address", "session_nonce", "request_id", "signature"] {
        assert!(locs.contains(&json!(["body", field])), "{locs:?}");
    }
    assert_eq!(app.replay_count().await, 0);
    // The untouched request still works afterwards: nothing was consumed.
    assert_eq!(app.post(BALANCE, &good).await.0, 200);
}

async fn replay_records_outlive_pruned_sessions(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = PrivateKey::random();
    let live = app.session(&key.address()).await;
    let body = app.balance_body(&key, &live, "kept");
    assert_eq!(app.post(BALANCE, &body).await.0, 200);
    let long_ago = agentpmt_server::time::now_ms() - 3 * 24 * 3600 * 1000;
    app.insert_session("dead", &key.address(), long_ago + 900_000)
        .await;
    app.execute(&format!(
        "INSERT INTO request_replays (session_nonce, request_id, wallet_address, action, created_at_ms) VALUES ('dead', 'old', '{}', 'balance', {long_ago})",
        key.address()
    ))
    .await
    .unwrap();
    // A session that expired ten minutes ago can no longer be used: its replay records
    // go, the session row stays (a late client hears "expired").
    let recently = agentpmt_server::time::now_ms() - 600_000;
    app.insert_session("expired", &key.address(), recently)
        .await;
    app.execute(&format!(
        "INSERT INTO request_replays (session_nonce, request_id, wallet_address, action, created_at_ms) VALUES ('expired', 'r', '{}', 'balance', {})",
        key.address(),
        recently - 60_000
    ))
    .await
    .unwrap();
    // (The server's own sweeper may have run first; either way the dead session is gone.)
    app.state.sessions.prune(&app.state.db).await.unwrap();
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM request_replays WHERE session_nonce = 'expired'")
            .await,
        0
    );
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM auth_sessions WHERE nonce = 'expired'")
            .await,
        1
    );
    let (status, response) = app
        .post(BALANCE, &app.balance_body(&key, "expired", "r"))
        .await;
    assert_eq!(status, 401, "{response}");
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM auth_sessions WHERE nonce = 'dead'")
            .await,
        0
    );
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM request_replays WHERE session_nonce = 'dead'")
            .await,
        0
    );
    // The live session's replay record survives pruning, so the replay is still refused.
    assert_eq!(app.replay_count().await, 1);
    let (status, response) = app.post(BALANCE, &body).await;
    assert_envelope(status, &response, 409, "EXTERNAL_SIGNATURE_REQUEST_REPLAY");
    // The pruned session is gone: reusing it is refused.
    let (status, response) = app
        .post(BALANCE, &app.balance_body(&key, "dead", "old"))
        .await;
    assert_envelope(
        status,
        &response,
        401,
        "EXTERNAL_SIGNATURE_SESSION_NONCE_INVALID",
    );
}

async fn instances_on_one_database_share_sessions_and_replays(backend: Backend) {
    let a = spawn_app(backend).await;
    let b = spawn_on(&a.database_url, AppOptions::default()).await;
    let key = PrivateKey::random();
    let nonce = a.session(&key.address()).await;
    // A session issued by one instance works on the other.
    assert_eq!(
        b.post(BALANCE, &b.balance_body(&key, &nonce, "on-b"))
            .await
            .0,
        200
    );
    // One signed request raced against both instances executes once.
    let body = a.balance_body(&key, &nonce, "raced");
    let results = futures::future::join_all((0..20).map(|i| {
        let app = if i % 2 == 0 { &a } else { &b };
        app.post(BALANCE, &body)
    }))
    .await;
    assert_eq!(results.iter().filter(|(s, _)| *s == 200).count(), 1);
    assert_eq!(results.iter().filter(|(s, _)| *s == 409).count(), 19);
}
