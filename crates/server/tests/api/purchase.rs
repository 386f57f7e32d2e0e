//! Credit purchases on the embedded dev network: challenge, verification, idempotency,
//! sponsored purchases, pack sizes.

use crate::backend_tests;
use crate::helpers::{spawn_app, spawn_on, AppOptions, Backend, TestApp};
use agentpmt_protocol::wire::sponsor_message;
use agentpmt_protocol::x402::{
    decode_header, encode_header, sign_authorization, PaymentRequired, PaymentRequirements,
    SettleResponse,
};
use agentpmt_protocol::PrivateKey;
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::{json, Value};

backend_tests!(
    challenge_then_payment_grants_credits,
    invalid_packs_get_the_next_pack,
    request_id_is_an_idempotency_key,
    concurrent_copies_of_a_purchase_get_the_first_result,
    malformed_and_invalid_payments_change_nothing,
    sponsored_purchase_needs_the_payers_signature
);

pub const PURCHASE: &str = "/api/external/credits/purchase";

/// POSTs a purchase with an optional payment header (`name`, `value`).
pub async fn purchase(
    app: &TestApp,
    body: &Value,
    payment: Option<(&str, &str)>,
) -> (StatusCode, Value, HeaderMap) {
    let mut request = app.http.post(app.url(PURCHASE)).json(body);
    if let Some((name, value)) = payment {
        request = request.header(name, value);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body, headers)
}

/// The requirement of a 402 challenge (header and body must agree).
pub fn requirement_of(
    status: StatusCode,
    body: &Value,
    headers: &HeaderMap,
) -> PaymentRequirements {
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{body}");
    let header: PaymentRequired =
        decode_header(headers["payment-required"].to_str().unwrap()).unwrap();
    assert_eq!(header.x402_version, 2);
    assert_eq!(
        serde_json::to_value(&header).unwrap(),
        *body,
        "header and body differ"
    );
    assert_eq!(headers["cache-control"], "no-store");
    header.accepts[0].clone()
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A signed payment header for `requirement`.
pub fn pay(key: &PrivateKey, requirement: &PaymentRequirements) -> String {
    encode_header(&sign_authorization(key, requirement, None, now_secs()).unwrap())
}

pub fn settle_response(headers: &HeaderMap) -> SettleResponse {
    decode_header(headers["payment-response"].to_str().unwrap()).unwrap()
}

/// The credit balance of `wallet`, read from the database (0 for an unknown wallet).
pub async fn balance(app: &TestApp, wallet: &str) -> i64 {
    app.scalar(&format!(
        "SELECT COALESCE(MAX(balance_credits), 0) FROM wallets WHERE address = '{wallet}'"
    ))
    .await
}

async fn challenge_then_payment_grants_credits(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = PrivateKey::random();
    let wallet = key.address().to_string();
    let body = json!({"wallet_address": wallet, "credits": 500, "payment_method": "x402"});
    let (status, challenge, headers) = purchase(&app, &body, None).await;
    let req = requirement_of(status, &challenge, &headers);
    assert_eq!(req.amount, "5000000");
    assert_eq!(req.network, "eip155:1337");
    assert_eq!(req.extra["settlement"], "dev");
    assert_eq!(req.extra["name"], "USD Coin");
    assert!(challenge["resource"]["description"]
        .as_str()
        .unwrap()
        .contains("DEV NETWORK"));

    for header in ["PAYMENT-SIGNATURE", "X-PAYMENT", "PAYMENT"] {
        let payment = pay(&key, &req);
        let (status, paid, headers) = purchase(&app, &body, Some((header, &payment))).await;
        assert_eq!(status, StatusCode::OK, "{header}: {paid}");
        assert_eq!(paid["status"], "settled");
        assert_eq!(paid["credits_purchased"], 500);
        assert_eq!(paid["payment"]["amount_base_units"], "5000000");
        assert_eq!(paid["payment"]["amount_usd"], "5.00");
        assert_eq!(paid["payment"]["settlement"], "dev");
        let settled = settle_response(&headers);
        assert!(settled.success);
        assert_eq!(settled.transaction, paid["transaction_hash"]);

        // The same authorization again: refused, nothing granted.
        let (status, again, _) = purchase(&app, &body, Some((header, &payment))).await;
        assert_eq!(status, StatusCode::CONFLICT, "{again}");
        assert_eq!(again["error_code"], "PAYMENT_ALREADY_USED");
    }
    assert_eq!(balance(&app, &wallet).await, 1500);
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM ledger_entries WHERE kind = 'credit_purchase'")
            .await,
        3
    );
}

async fn invalid_packs_get_the_next_pack(backend: Backend) {
    let app = spawn_app(backend).await;
    let wallet = PrivateKey::random().address().to_string();
    for (credits, suggested) in [
        (0, 500),
        (1, 500),
        (499, 500),
        (501, 1000),
        (750, 1000),
        (-5, 500),
        (2001, 2500),
    ] {
        let body = json!({"wallet_address": wallet, "credits": credits, "payment_method": "x402"});
        let (status, err, _) = purchase(&app, &body, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{credits}: {err}");
        assert_eq!(err["error_code"], "INVALID_CREDIT_PACK");
        assert_eq!(err["suggested_credits"], suggested, "{credits}");
        assert_eq!(err["details"]["suggested_credits"], suggested);
    }
    let body = json!({"wallet_address": wallet, "credits": "500", "payment_method": "x402"});
    assert_eq!(
        purchase(&app, &body, None).await.0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let body = json!({"wallet_address": wallet, "credits": 500, "payment_method": "card"});
    assert_eq!(
        purchase(&app, &body, None).await.0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let body = json!({"wallet_address": wallet, "credits": 500, "payment_method": "x402", "chain_id": 8453});
    let (status, err, _) = purchase(&app, &body, None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["error_code"], "UNSUPPORTED_PAYMENT_NETWORK");
    assert_eq!(err["details"]["offered"][0]["chain_id"], 1337);
    assert_eq!(app.scalar("SELECT COUNT(*) FROM credit_purchases").await, 0);
}

async fn request_id_is_an_idempotency_key(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = PrivateKey::random();
    let wallet = key.address().to_string();
    let body = json!({"wallet_address": wallet, "credits": 1000, "payment_method": "x402", "request_id": "buy-1"});
    let (status, challenge, headers) = purchase(&app, &body, None).await;
    let req = requirement_of(status, &challenge, &headers);
    let (status, first, _) =
        purchase(&app, &body, Some(("PAYMENT-SIGNATURE", &pay(&key, &req)))).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    // Same key + same body (even with a fresh authorization): the first result again.
    let (status, second, headers) =
        purchase(&app, &body, Some(("PAYMENT-SIGNATURE", &pay(&key, &req)))).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_eq!(second["purchase_id"], first["purchase_id"]);
    assert_eq!(second["balance_credits"], 1000);
    assert!(settle_response(&headers).success);
    // Without a header too.
    let (status, third, _) = purchase(&app, &body, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(third["purchase_id"], first["purchase_id"]);
    // Same key + different body: refused.
    let other = json!({"wallet_address": wallet, "credits": 500, "payment_method": "x402", "request_id": "buy-1"});
    let (status, err, _) =
        purchase(&app, &other, Some(("PAYMENT-SIGNATURE", &pay(&key, &req)))).await;
    assert_eq!(status, StatusCode::CONFLICT, "{err}");
    assert_eq!(err["error_code"], "IDEMPOTENCY_KEY_REUSED");
    assert_eq!(err["details"]["differs"], json!(["credits"]), "{err}");
    assert_eq!(err["details"]["purchase_id"], first["purchase_id"]);
    // Only a field the purchase does not keep differs: the body as a whole is named.
    let other = json!({"wallet_address": wallet, "credits": 1000, "payment_method": "x402", "request_id": "buy-1", "sponsor_signature": "0x00"});
    let (status, err, _) = purchase(&app, &other, None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{err}");
    assert_eq!(err["details"]["differs"], json!(["body"]), "{err}");
    assert_eq!(balance(&app, &wallet).await, 1000);
}

/// Twenty copies of one purchase (same body and `request_id`) at once, spread over two
/// instances on one database: one grant, and every copy answers the first result (no
/// `PAYMENT_ALREADY_USED` naming its own purchase, no `PAYMENT_IN_PROGRESS`). Once with
/// the same payment header in every copy, once with a fresh authorization in each.
async fn concurrent_copies_of_a_purchase_get_the_first_result(backend: Backend) {
    const COPIES: usize = 20;
    let app = spawn_app(backend).await;
    let other = spawn_on(&app.database_url, AppOptions::default()).await;
    let key = PrivateKey::random();
    let wallet = key.address().to_string();
    let probe = json!({"wallet_address": wallet, "credits": 500, "payment_method": "x402"});
    let (status, challenge, headers) = purchase(&app, &probe, None).await;
    let req = requirement_of(status, &challenge, &headers);
    for (round, fresh_authorizations) in [false, true].into_iter().enumerate() {
        let body = json!({"wallet_address": wallet, "credits": 500, "payment_method": "x402",
            "request_id": format!("copies-{round}")});
        let shared = pay(&key, &req);
        let copies = (0..COPIES).map(|i| {
            let instance = if i % 2 == 0 { &app } else { &other };
            let payment = if fresh_authorizations {
                pay(&key, &req)
            } else {
                shared.clone()
            };
            let body = body.clone();
            async move {
                let (status, answer, _) =
                    purchase(instance, &body, Some(("PAYMENT-SIGNATURE", &payment))).await;
                (status, answer)
            }
        });
        let answers = futures::future::join_all(copies).await;
        let (status, first) = &answers[0];
        assert_eq!(*status, StatusCode::OK, "round {round}: {first}");
        assert_eq!(first["status"], "settled");
        for (i, (status, answer)) in answers.iter().enumerate() {
            assert_eq!(
                (*status, answer),
                (StatusCode::OK, first),
                "round {round}, copy {i}"
            );
        }
        assert_eq!(
            app.scalar(&format!(
                "SELECT COUNT(*) FROM credit_purchases WHERE request_id = 'copies-{round}'"
            ))
            .await,
            1
        );
    }
    assert_eq!(balance(&app, &wallet).await, 1000);
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM ledger_entries WHERE kind = 'credit_purchase'")
            .await,
        2
    );
}

async fn malformed_and_invalid_payments_change_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = PrivateKey::random();
    let wallet = key.address().to_string();
    let body = json!({"wallet_address": wallet, "credits": 500, "payment_method": "x402"});
    let (status, challenge, headers) = purchase(&app, &body, None).await;
    let req = requirement_of(status, &challenge, &headers);
    let b64 = |v: &Value| encode_header(v);
    for (header, reason) in [
        ("not base64 !!!".to_owned(), "invalid_payload"),
        (b64(&json!("just a string")), "invalid_payload"),
        (b64(&json!({"x402Version": 9})), "invalid_x402_version"),
        (
            b64(&json!({"x402Version": 2, "payload": {}})),
            "invalid_payload",
        ),
    ] {
        let (status, err, headers) =
            purchase(&app, &body, Some(("PAYMENT-SIGNATURE", &header))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
        assert_eq!(err["error_code"], "PAYMENT_MALFORMED");
        assert_eq!(err["details"]["reason"], reason);
        assert!(!settle_response(&headers).success);
        assert!(headers.contains_key("payment-required"));
    }
    // A payment signed by another key than authorization.from.
    let other = PrivateKey::random();
    let mut forged: Value =
        serde_json::to_value(sign_authorization(&other, &req, None, now_secs()).unwrap()).unwrap();
    forged["payload"]["authorization"]["from"] = json!(wallet);
    let (status, err, _) = purchase(&app, &body, Some(("PAYMENT-SIGNATURE", &b64(&forged)))).await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{err}");
    assert_eq!(
        err["details"]["reason"],
        "invalid_exact_evm_payload_signature"
    );
    assert_eq!(err["accepts"][0]["amount"], "5000000");
    assert_eq!(app.scalar("SELECT COUNT(*) FROM credit_purchases").await, 0);
    assert_eq!(balance(&app, &wallet).await, 0);
}

async fn sponsored_purchase_needs_the_payers_signature(backend: Backend) {
    let app = spawn_app(backend).await;
    let sponsor = PrivateKey::random();
    let agent = PrivateKey::random().address().to_string();
    let body = json!({"wallet_address": agent, "credits": 500, "payment_method": "x402",
        "payer_wallet_address": sponsor.address().to_string()});
    let (status, challenge, headers) = purchase(&app, &body, None).await;
    let req = requirement_of(status, &challenge, &headers);
    let payment = sign_authorization(&sponsor, &req, None, now_secs()).unwrap();
    let header = encode_header(&payment);
    let (status, err, _) = purchase(&app, &body, Some(("PAYMENT-SIGNATURE", &header))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{err}");
    assert_eq!(err["error_code"], "SPONSOR_SIGNATURE_INVALID");
    let expected = sponsor_message(
        &sponsor.address().to_string(),
        &agent,
        500,
        &format!("nonce:{}", payment.payload.authorization.nonce),
    );
    assert_eq!(err["details"]["expected_message"], expected);
    let mut signed = body.clone();
    signed["sponsor_signature"] = json!(sponsor.sign_message(&expected).to_hex());
    let (status, paid, _) = purchase(&app, &signed, Some(("PAYMENT-SIGNATURE", &header))).await;
    assert_eq!(status, StatusCode::OK, "{paid}");
    assert_eq!(paid["wallet_address"], agent);
    assert_eq!(
        paid["payment"]["payer_wallet_address"],
        sponsor.address().to_string()
    );
    assert_eq!(balance(&app, &agent).await, 500);
    assert_eq!(balance(&app, &sponsor.address().to_string()).await, 0);
}
