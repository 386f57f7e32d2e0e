//! Credit purchases settled on a real chain (anvil + the repository's EIP-3009 token):
//! end to end, parallel replays of one authorization, refused payments, reverted
//! settlement, a crash between broadcast and credit, transfers, and the official x402 client.

use crate::backend_tests;
use crate::chain::{Chain, GAS_KEY};
use crate::helpers::{spawn_app_with, spawn_on, AppOptions, Backend, TestApp};
use crate::purchase::{balance, now_secs, pay, purchase, requirement_of, settle_response};
use agentpmt_protocol::x402::{encode_header, sign_authorization, PaymentRequirements};
use agentpmt_protocol::PrivateKey;
use agentpmt_server::payments::Fault;
use alloy::primitives::U256;
use reqwest::StatusCode;
use serde_json::{json, Value};

backend_tests!(
    purchase_settles_on_chain,
    one_authorization_in_twenty_parallel_purchases_pays_once,
    refused_payments_move_nothing,
    failed_settlement_grants_nothing,
    crash_after_broadcast_is_credited_once_after_restart,
    transfer_purchase_credits_once,
    official_x402_client_buys_credits,
    remote_facilitator_verifies_and_settles
);

const PRICE: u64 = 5_000_000;

async fn spawn(backend: Backend, chain: &Chain, fault: Option<Fault>) -> TestApp {
    spawn_app_with(
        backend,
        AppOptions {
            payments: Some(chain.payments()),
            settlement_key: Some(GAS_KEY.into()),
            fault,
            ..AppOptions::default()
        },
    )
    .await
}

async fn challenge(app: &TestApp, body: &Value) -> PaymentRequirements {
    let (status, challenge, headers) = purchase(app, body, None).await;
    requirement_of(status, &challenge, &headers)
}

async fn purchase_settles_on_chain(backend: Backend) {
    let chain = Chain::start().await;
    let app = spawn(backend, &chain, None).await;
    let payer = PrivateKey::random();
    chain.mint(payer.address().address(), 12 * PRICE).await;
    let wallet = payer.address().to_string();
    let body = json!({"wallet_address": wallet, "credits": 500, "payment_method": "x402", "chain_id": 31337, "token": "USDC"});
    let req = challenge(&app, &body).await;
    assert_eq!(req.network, "eip155:31337");
    assert_eq!(req.asset, chain.token.to_checksum(None));
    assert_eq!(req.pay_to, chain.pay_to.to_checksum(None));
    assert!(req.extra.get("settlement").is_none());
    let (status, paid, headers) =
        purchase(&app, &body, Some(("PAYMENT-SIGNATURE", &pay(&payer, &req)))).await;
    assert_eq!(status, StatusCode::OK, "{paid}");
    assert_eq!(paid["balance_credits"], 500);
    assert_eq!(paid["payment"]["settlement"], "evm");
    let settled = settle_response(&headers);
    assert!(settled.success);
    assert_eq!(settled.network, "eip155:31337");
    assert_eq!(settled.transaction, paid["transaction_hash"]);
    assert_eq!(chain.balance(chain.pay_to).await, U256::from(PRICE));
    assert_eq!(
        chain.balance(payer.address().address()).await,
        U256::from(11 * PRICE)
    );
    assert_eq!(balance(&app, &wallet).await, 500);
    // Readiness checks the chain node; metrics count the settlement.
    let (status, ready) = app.get("/readyz").await;
    assert_eq!(status, StatusCode::OK, "{ready}");
    assert!(
        ready["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "payments eip155:31337" && c["status"] == "ok"),
        "{ready}"
    );
    let metrics = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.lines().any(|l| l.contains("settlements")
            && l.contains("outcome=\"settled\"")
            && l.ends_with(" 1")),
        "{metrics}"
    );
    drop(chain);
    // The chain node's reachability is probed at most every 5 s: not ready within that.
    let stopped = std::time::Instant::now();
    loop {
        let (status, ready) = app.get("/readyz").await;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            break;
        }
        assert!(
            stopped.elapsed() < std::time::Duration::from_secs(10),
            "still ready 10 s after the chain stopped: {ready}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

async fn one_authorization_in_twenty_parallel_purchases_pays_once(backend: Backend) {
    let chain = Chain::start().await;
    let app = spawn(backend, &chain, None).await;
    let payer = PrivateKey::random();
    chain.mint(payer.address().address(), 10 * PRICE).await;
    let wallet = payer.address().to_string();
    let body = json!({"wallet_address": wallet, "credits": 500, "payment_method": "x402"});
    let req = challenge(&app, &body).await;
    let header = pay(&payer, &req);
    let gas_nonce = chain.gas_key_nonce().await;
    let results = futures::future::join_all(
        (0..20).map(|_| purchase(&app, &body, Some(("PAYMENT-SIGNATURE", header.as_str())))),
    )
    .await;
    let ok = results.iter().filter(|r| r.0 == StatusCode::OK).count();
    assert_eq!(
        ok,
        1,
        "{:?}",
        results
            .iter()
            .map(|r| (r.0, r.1["error_code"].clone()))
            .collect::<Vec<_>>()
    );
    for (status, body, _) in results.iter().filter(|r| r.0 != StatusCode::OK) {
        assert_eq!(*status, StatusCode::CONFLICT, "{body}");
        let code = body["error_code"].as_str().unwrap();
        assert!(
            code == "PAYMENT_IN_PROGRESS" || code == "PAYMENT_ALREADY_USED",
            "{code}"
        );
    }
    assert_eq!(
        chain.gas_key_nonce().await,
        gas_nonce + 1,
        "exactly one transaction"
    );
    assert_eq!(chain.balance(chain.pay_to).await, U256::from(PRICE));
    assert_eq!(balance(&app, &wallet).await, 500);
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM ledger_entries WHERE kind = 'credit_purchase'")
            .await,
        1
    );
}

async fn refused_payments_move_nothing(backend: Backend) {
    let chain = Chain::start().await;
    let app = spawn(backend, &chain, None).await;
    let payer = PrivateKey::random();
    chain.mint(payer.address().address(), 10 * PRICE).await;
    let wallet = payer.address().to_string();
    let body = json!({"wallet_address": wallet, "credits": 500, "payment_method": "x402"});
    let req = challenge(&app, &body).await;
    let gas_nonce = chain.gas_key_nonce().await;
    let now = now_secs();

    // The client signs for a tweaked requirement, signed at `at`; with `verbatim` it still
    // copies the offer itself into `accepted` (so only the signed fields differ).
    let other_address = PrivateKey::random().address().to_checksum();
    let signed_for = |tweak: &dyn Fn(&mut PaymentRequirements), at: u64, verbatim: bool| {
        let mut r = req.clone();
        tweak(&mut r);
        let mut v =
            serde_json::to_value(sign_authorization(&payer, &r, None, at).unwrap()).unwrap();
        if verbatim {
            v["accepted"] = serde_json::to_value(&req).unwrap();
        }
        v
    };
    let mut cases: Vec<(String, Value, &str)> = vec![
        (
            "wrong payTo".into(),
            signed_for(&|r| r.pay_to = other_address.clone(), now, true),
            "invalid_exact_evm_payload_recipient_mismatch",
        ),
        (
            "amount too small".into(),
            signed_for(&|r| r.amount = (PRICE - 1).to_string(), now, true),
            "invalid_exact_evm_payload_authorization_value",
        ),
        (
            "amount too large".into(),
            signed_for(&|r| r.amount = (PRICE + 1).to_string(), now, true),
            "invalid_exact_evm_payload_authorization_value",
        ),
        // Signed for another token contract (EIP-712 domain): the signature does not verify.
        (
            "wrong asset domain".into(),
            signed_for(&|r| r.asset = other_address.clone(), now, true),
            "invalid_exact_evm_payload_signature",
        ),
        (
            "wrong asset accepted".into(),
            signed_for(&|r| r.asset = other_address.clone(), now, false),
            "invalid_payment_requirements",
        ),
        (
            "wrong network".into(),
            signed_for(&|r| r.network = "eip155:8453".into(), now, false),
            "invalid_payment_requirements",
        ),
        (
            "signed for another chain".into(),
            signed_for(&|r| r.network = "eip155:8453".into(), now, true),
            "invalid_exact_evm_payload_signature",
        ),
        // Expired: signed long ago with a short window.
        (
            "expired".into(),
            signed_for(&|r| r.max_timeout_seconds = 60, now - 3600, true),
            "invalid_exact_evm_payload_authorization_valid_before",
        ),
    ];
    cases.extend(vec![
        {
            // Not yet valid: validAfter in the future (re-signed).
            let p = sign_authorization(&payer, &req, None, now).unwrap();
            let mut v = serde_json::to_value(&p).unwrap();
            v["payload"]["authorization"]["validAfter"] = json!((now + 3600).to_string());
            (
                "not yet valid (unsigned change)".into(),
                v,
                "invalid_exact_evm_payload_signature",
            )
        },
        {
            let mut future = sign_authorization(&payer, &req, None, now).unwrap();
            future.payload.authorization.valid_after = (now + 3600).to_string();
            future.payload.authorization.valid_before = (now + 7200).to_string();
            let auth = agentpmt_protocol::x402::decode_payment_header(&encode_header(&future))
                .unwrap()
                .authorization;
            let digest = agentpmt_protocol::x402::transfer_digest(&auth, &req.domain().unwrap());
            future.payload.signature = payer.sign_digest(&digest).to_hex();
            (
                "not yet valid".into(),
                serde_json::to_value(&future).unwrap(),
                "invalid_exact_evm_payload_authorization_valid_after",
            )
        },
        {
            // Signer is not authorization.from.
            let other = PrivateKey::random();
            let p = sign_authorization(&other, &req, None, now).unwrap();
            let mut v = serde_json::to_value(&p).unwrap();
            v["payload"]["authorization"]["from"] = json!(payer.address().to_checksum());
            (
                "signer is not from".into(),
                v,
                "invalid_exact_evm_payload_signature",
            )
        },
        {
            let p = sign_authorization(&payer, &req, None, now).unwrap();
            let mut v = serde_json::to_value(&p).unwrap();
            v["payload"]["signature"] = json!(format!("0x{}", "11".repeat(65)));
            (
                "bad signature".into(),
                v,
                "invalid_exact_evm_payload_signature",
            )
        },
    ]);
    for (name, payload, reason) in cases {
        let (status, err, headers) =
            purchase(&app, &body, Some(("X-PAYMENT", &encode_header(&payload)))).await;
        assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{name}: {err}");
        assert_eq!(err["error_code"], "PAYMENT_INVALID", "{name}");
        assert_eq!(err["details"]["reason"], reason, "{name}: {err}");
        let settled = settle_response(&headers);
        assert!(!settled.success && settled.transaction.is_empty(), "{name}");
        assert_eq!(settled.error_reason.as_deref(), Some(reason));
    }
    for (name, header) in [
        ("not base64", "%%%".to_owned()),
        ("not json", encode_header(&"x")),
    ] {
        let (status, err, _) = purchase(&app, &body, Some(("PAYMENT-SIGNATURE", &header))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name}: {err}");
        assert_eq!(err["error_code"], "PAYMENT_MALFORMED");
    }
    assert_eq!(
        chain.gas_key_nonce().await,
        gas_nonce,
        "no transaction was sent"
    );
    assert_eq!(chain.balance(chain.pay_to).await, U256::ZERO);
    assert_eq!(balance(&app, &wallet).await, 0);
    assert_eq!(app.scalar("SELECT COUNT(*) FROM credit_purchases").await, 0);
}

async fn failed_settlement_grants_nothing(backend: Backend) {
    let chain = Chain::start().await;
    let app = spawn(backend, &chain, None).await;
    // The payer signs a valid authorization but holds too few tokens.
    let payer = PrivateKey::random();
    chain.mint(payer.address().address(), PRICE - 1).await;
    let wallet = payer.address().to_string();
    let body = json!({"wallet_address": wallet, "credits": 500, "payment_method": "x402"});
    let req = challenge(&app, &body).await;
    let header = pay(&payer, &req);
    let (status, err, headers) = purchase(&app, &body, Some(("PAYMENT-SIGNATURE", &header))).await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{err}");
    assert_eq!(err["details"]["reason"], "insufficient_funds");
    let settled = settle_response(&headers);
    assert!(!settled.success);
    assert_eq!(settled.error_reason.as_deref(), Some("insufficient_funds"));
    assert_eq!(balance(&app, &wallet).await, 0);

    // Once funded, the same authorization pays (it was never used on chain).
    chain.mint(payer.address().address(), 1).await;
    let (status, paid, _) = purchase(&app, &body, Some(("PAYMENT-SIGNATURE", &header))).await;
    assert_eq!(status, StatusCode::OK, "{paid}");
    assert_eq!(balance(&app, &wallet).await, 500);
    assert_eq!(chain.balance(chain.pay_to).await, U256::from(PRICE));
}

async fn crash_after_broadcast_is_credited_once_after_restart(backend: Backend) {
    let chain = Chain::start().await;
    let app = spawn(backend, &chain, Some(Fault::CrashAfterBroadcast)).await;
    let payer = PrivateKey::random();
    chain.mint(payer.address().address(), PRICE).await;
    let wallet = payer.address().to_string();
    let body = json!({"wallet_address": wallet, "credits": 500, "payment_method": "x402", "request_id": "crash-1"});
    let req = challenge(&app, &body).await;
    let header = pay(&payer, &req);
    let (status, err, _) = purchase(&app, &body, Some(("PAYMENT-SIGNATURE", &header))).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{err}");
    // The transfer happened on chain (anvil mines it just after answering the broadcast),
    // the credit did not.
    let mut received = U256::ZERO;
    for _ in 0..100 {
        received = chain.balance(chain.pay_to).await;
        if received == U256::from(PRICE) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(received, U256::from(PRICE));
    assert_eq!(balance(&app, &wallet).await, 0);

    // A restarted server reconciles at start-up from chain state.
    let restarted = spawn_on(
        &app.database_url,
        AppOptions {
            payments: Some(chain.payments()),
            settlement_key: Some(GAS_KEY.into()),
            ..AppOptions::default()
        },
    )
    .await;
    let mut waited = 0;
    while balance(&restarted, &wallet).await == 0 && waited < 200 {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        waited += 1;
    }
    assert_eq!(balance(&restarted, &wallet).await, 500);
    // The client's retry gets the settled purchase; nothing is granted twice.
    let (status, paid, _) = purchase(&restarted, &body, Some(("PAYMENT-SIGNATURE", &header))).await;
    assert_eq!(status, StatusCode::OK, "{paid}");
    assert_eq!(paid["balance_credits"], 500);
    let (status, _, _) = purchase(
        &restarted,
        &json!({"wallet_address": wallet, "credits": 500, "payment_method": "x402"}),
        Some(("PAYMENT-SIGNATURE", &header)),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    restarted
        .state
        .payments
        .reconcile_open(&restarted.state.db)
        .await
        .unwrap();
    assert_eq!(balance(&restarted, &wallet).await, 500);
    assert_eq!(chain.balance(chain.pay_to).await, U256::from(PRICE));
    assert_eq!(
        restarted
            .scalar("SELECT COUNT(*) FROM ledger_entries WHERE kind = 'credit_purchase'")
            .await,
        1
    );
}

async fn transfer_purchase_credits_once(backend: Backend) {
    let chain = Chain::start().await;
    let app = spawn(backend, &chain, None).await;
    let payer = PrivateKey::random();
    chain.mint(payer.address().address(), 10 * PRICE).await;
    let wallet = payer.address().to_string();
    let tx = chain.transfer(&payer, chain.pay_to, PRICE).await;
    let body = json!({"wallet_address": wallet, "credits": 500, "payment_method": "transfer", "transaction_hash": tx});
    let (status, paid, _) = purchase(&app, &body, None).await;
    assert_eq!(status, StatusCode::OK, "{paid}");
    assert_eq!(paid["payment"]["method"], "transfer");
    assert_eq!(paid["transaction_hash"], tx);
    let (status, again, _) = purchase(&app, &body, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["purchase_id"], paid["purchase_id"]);
    // Someone else claiming the same transaction for their wallet.
    let thief = PrivateKey::random().address().to_string();
    let stolen = json!({"wallet_address": thief, "credits": 500, "payment_method": "transfer", "transaction_hash": tx});
    let (status, err, _) = purchase(&app, &stolen, None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{err}");
    assert_eq!(err["error_code"], "PAYMENT_ALREADY_USED");
    // A transfer of the wrong amount, and one the thief did not make.
    let short = chain.transfer(&payer, chain.pay_to, PRICE - 1).await;
    let body = json!({"wallet_address": wallet, "credits": 500, "payment_method": "transfer", "transaction_hash": short});
    let (status, err, _) = purchase(&app, &body, None).await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{err}");
    assert_eq!(err["error_code"], "TRANSFER_INVALID");
    let other = chain.transfer(&payer, chain.pay_to, PRICE).await;
    let stolen = json!({"wallet_address": thief, "credits": 500, "payment_method": "transfer", "transaction_hash": other});
    let (status, err, _) = purchase(&app, &stolen, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{err}");
    assert_eq!(err["error_code"], "SPONSOR_SIGNATURE_INVALID");
    assert_eq!(balance(&app, &wallet).await, 500);
    assert_eq!(balance(&app, &thief).await, 0);
}

async fn official_x402_client_buys_credits(backend: Backend) {
    let chain = Chain::start().await;
    let app = spawn(backend, &chain, None).await;
    let payer = PrivateKey::random();
    chain.mint(payer.address().address(), 3 * PRICE).await;
    let wallet = payer.address().to_string();
    let body = json!({"wallet_address": wallet, "credits": 500, "payment_method": "x402"});
    let result =
        crate::chain::official_x402_client(&app.url(crate::purchase::PURCHASE), &body, &payer)
            .await;
    assert_eq!(result["status"], 200, "{result}");
    assert_eq!(result["body"]["balance_credits"], 500);
    assert_eq!(result["paymentResponse"]["success"], true, "{result}");
    assert_eq!(
        result["paymentResponse"]["transaction"],
        result["body"]["transaction_hash"]
    );
    assert_eq!(balance(&app, &wallet).await, 500);
    assert_eq!(chain.balance(chain.pay_to).await, U256::from(PRICE));
    assert_eq!(
        chain.balance(payer.address().address()).await,
        U256::from(2 * PRICE)
    );
}

/// A small x402 facilitator over HTTP (`/verify`, `/settle`, `/supported`) that settles on
/// the test chain with its own key, as a remote facilitator would.
async fn spawn_facilitator(
    chain: std::sync::Arc<Chain>,
    settles: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> String {
    use axum::routing::{get, post};
    use axum::Json;
    const FACILITATOR_KEY: &str =
        "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a";
    let verify_chain = chain.clone();
    let verify = move |Json(body): Json<Value>| {
        let chain = verify_chain.clone();
        async move {
            let auth = &body["paymentPayload"]["payload"]["authorization"];
            let req = &body["paymentRequirements"];
            let from: alloy::primitives::Address = auth["from"]
                .as_str()
                .unwrap_or_default()
                .parse()
                .unwrap_or_default();
            let value =
                U256::from_str_radix(auth["value"].as_str().unwrap_or("0"), 10).unwrap_or_default();
            if auth["to"].as_str().map(str::to_lowercase)
                != req["payTo"].as_str().map(str::to_lowercase)
            {
                return Json(
                    json!({"isValid": false, "invalidReason": "invalid_exact_evm_payload_recipient_mismatch"}),
                );
            }
            if chain.balance(from).await < value {
                return Json(
                    json!({"isValid": false, "invalidReason": "insufficient_funds", "invalidMessage": "balance too low", "payer": auth["from"]}),
                );
            }
            Json(json!({"isValid": true, "payer": auth["from"]}))
        }
    };
    let settle = move |Json(body): Json<Value>| {
        let chain = chain.clone();
        let settles = settles.clone();
        async move {
            settles.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let network = body["paymentRequirements"]["network"].clone();
            match chain
                .submit_authorization(FACILITATOR_KEY, &body["paymentPayload"]["payload"])
                .await
            {
                Ok(tx) => Json(json!({"success": true, "transaction": tx, "network": network})),
                Err(e) => Json(
                    json!({"success": false, "transaction": "", "network": network,
                    "errorReason": "invalid_exact_evm_transaction_failed", "errorMessage": e}),
                ),
            }
        }
    };
    let app = axum::Router::new()
        .route("/facilitator/verify", post(verify))
        .route("/facilitator/settle", post(settle))
        .route("/facilitator/supported", get(|| async { Json(json!({"kinds": [{"x402Version": 2, "scheme": "exact", "network": "eip155:31337"}]})) }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/facilitator")
}

async fn remote_facilitator_verifies_and_settles(backend: Backend) {
    use agentpmt_server::payments::networks::SettlementKind;
    let chain = std::sync::Arc::new(Chain::start().await);
    let settles = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let url = spawn_facilitator(chain.clone(), settles.clone()).await;
    let mut payments = chain.payments();
    payments.networks[0].settlement = SettlementKind::Facilitator;
    payments.networks[0].facilitator_url = Some(url);
    let app = spawn_app_with(
        backend,
        AppOptions {
            payments: Some(payments),
            ..AppOptions::default()
        },
    )
    .await;

    // A payer without funds: the facilitator's verification refuses, nothing is settled.
    let poor = PrivateKey::random();
    let body = json!({"wallet_address": poor.address().to_string(), "credits": 500, "payment_method": "x402"});
    let req = challenge(&app, &body).await;
    let (status, err, _) =
        purchase(&app, &body, Some(("PAYMENT-SIGNATURE", &pay(&poor, &req)))).await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{err}");
    assert_eq!(err["details"]["reason"], "insufficient_funds");
    assert_eq!(settles.load(std::sync::atomic::Ordering::SeqCst), 0);

    let payer = PrivateKey::random();
    chain.mint(payer.address().address(), PRICE).await;
    let wallet = payer.address().to_string();
    let body = json!({"wallet_address": wallet, "credits": 500, "payment_method": "x402"});
    let req = challenge(&app, &body).await;
    let (status, paid, headers) =
        purchase(&app, &body, Some(("PAYMENT-SIGNATURE", &pay(&payer, &req)))).await;
    assert_eq!(status, StatusCode::OK, "{paid}");
    assert_eq!(paid["payment"]["settlement"], "facilitator");
    assert!(settle_response(&headers).success);
    assert_eq!(settles.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(chain.balance(chain.pay_to).await, U256::from(PRICE));
    assert_eq!(balance(&app, &wallet).await, 500);
}
