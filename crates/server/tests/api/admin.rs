//! The operator API: authentication, wallet view, credit adjustments, idempotency.

use crate::backend_tests;
use crate::helpers::*;
use agentpmt_protocol::PrivateKey;
use reqwest::Method;
use serde_json::json;

backend_tests!(
    disabled_without_token,
    wrong_or_missing_token_is_401,
    grant_and_view,
    removal_beyond_balance_is_refused,
    idempotency_key_semantics,
    concurrent_same_idempotency_key_posts_once,
    bad_input_is_422,
    help_tickets_are_closed_and_reopened,
);

async fn help_tickets_are_closed_and_reopened(backend: Backend) {
    let app = spawn_app(backend).await;
    let (status, body) = app
        .post(
            "/api/external/agent-help",
            &json!({"message": "stuck on signing"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let ticket = body["ticket_id"].as_str().unwrap().to_owned();
    let listed = |list: &serde_json::Value| {
        list["tickets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["ticket_id"] == json!(ticket))
            .cloned()
            .unwrap()
    };
    let (_, list) = app
        .admin(Method::GET, "/api/admin/help-tickets", None)
        .await;
    let open = listed(&list);
    assert_eq!(open["status"], json!("open"));
    assert!(open.get("closed_at").is_none(), "{open}");

    let close = format!("/api/admin/help-tickets/{ticket}/close");
    let (status, _) = app.post(&close, &json!({})).await;
    assert_eq!(status, 401, "the admin token is needed");
    let (status, closed) = app.admin(Method::POST, &close, None).await;
    assert_eq!(status, 200, "{closed}");
    assert_eq!(closed["changed"], json!(true));
    assert_eq!(closed["ticket"]["status"], json!("closed"));
    let at = closed["ticket"]["closed_at"].clone();
    assert!(at.is_string(), "{closed}");
    // Closing again changes nothing, and keeps the first closing time.
    let (status, again) = app.admin(Method::POST, &close, None).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["changed"], json!(false));
    assert_eq!(again["ticket"]["closed_at"], at);
    let (_, list) = app
        .admin(Method::GET, "/api/admin/help-tickets", None)
        .await;
    assert_eq!(listed(&list)["status"], json!("closed"));

    let (status, reopened) = app
        .admin(
            Method::POST,
            &format!("/api/admin/help-tickets/{ticket}/reopen"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{reopened}");
    assert_eq!(reopened["changed"], json!(true));
    assert_eq!(reopened["ticket"]["status"], json!("open"));
    assert!(reopened["ticket"].get("closed_at").is_none());
    let (status, missing) = app
        .admin(
            Method::POST,
            "/api/admin/help-tickets/help_nope/close",
            None,
        )
        .await;
    assert_eq!(status, 404, "{missing}");
    assert_eq!(missing["error_code"], json!("NOT_FOUND"));
}

async fn disabled_without_token(backend: Backend) {
    let app = spawn_app_with(
        backend,
        AppOptions {
            admin_token: false,
            ..AppOptions::default()
        },
    )
    .await;
    let wallet = PrivateKey::random().address();
    let (status, body) = app.adjust(&wallet, 100).await;
    assert_envelope(status, &body, 403, "ADMIN_API_DISABLED");
}

async fn wrong_or_missing_token_is_401(backend: Backend) {
    let app = spawn_app(backend).await;
    let wallet = PrivateKey::random().address();
    let url = app.url(&format!("/api/admin/wallets/{wallet}"));
    for request in [
        app.http.get(&url),
        app.http.get(&url).bearer_auth("wrong-token-wrong-token"),
        app.http
            .get(&url)
            .header("authorization", format!("Basic {ADMIN_TOKEN}")),
    ] {
        let response = request.send().await.unwrap();
        let status = response.status();
        let body = response.json().await.unwrap();
        assert_envelope(status, &body, 401, "ADMIN_UNAUTHORIZED");
    }
}

async fn grant_and_view(backend: Backend) {
    let app = spawn_app(backend).await;
    let wallet = PrivateKey::random().address();
    let (status, body) = app.adjust(&wallet, 2000).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["balance_credits"], json!(2000));
    assert_eq!(body["entry"]["kind"], json!("admin_adjustment"));
    assert_eq!(body["entry"]["reason"], json!("test"));
    assert_eq!(body["idempotent_replay"], json!(false));
    app.adjust(&wallet, -500).await;
    let (status, view) = app
        .admin(
            Method::GET,
            &format!("/api/admin/wallets/{}", wallet.to_checksum()),
            None,
        )
        .await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["wallet_address"], json!(wallet.to_string()));
    assert_eq!(view["balance_credits"], json!(1500));
    assert_eq!(view["ledger_sum_credits"], json!(1500));
    assert_eq!(view["ledger_entry_count"], json!(2));
    let entries = view["recent_entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0]["amount_credits"], json!(-500));
    assert_eq!(entries[0]["balance_after"], json!(1500));
    // An unknown wallet is simply empty.
    let other = PrivateKey::random().address();
    let (status, view) = app
        .admin(Method::GET, &format!("/api/admin/wallets/{other}"), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(view["balance_credits"], json!(0));
}

async fn removal_beyond_balance_is_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let wallet = PrivateKey::random().address();
    let (status, body) = app.adjust(&wallet, -1).await;
    assert_envelope(status, &body, 402, "INSUFFICIENT_CREDITS");
    app.adjust(&wallet, 100).await;
    let (status, body) = app.adjust(&wallet, -101).await;
    let details = assert_envelope(status, &body, 402, "INSUFFICIENT_CREDITS");
    assert_eq!(details["balance_credits"], json!(100));
    assert_eq!(app.scalar("SELECT COUNT(*) FROM ledger_entries").await, 1);
    assert_eq!(app.scalar("SELECT balance_credits FROM wallets").await, 100);
}

async fn idempotency_key_semantics(backend: Backend) {
    let app = spawn_app(backend).await;
    let wallet = PrivateKey::random().address();
    let path = format!("/api/admin/wallets/{wallet}/credits");
    let body = json!({"amount_credits": 700, "reason": "promo", "idempotency_key": "promo-1"});
    let (first_status, first) = app.admin(Method::POST, &path, Some(&body)).await;
    assert_eq!(first_status, 201, "{first}");
    let (again_status, again) = app.admin(Method::POST, &path, Some(&body)).await;
    assert_eq!(again_status, 200, "{again}");
    assert_eq!(again["idempotent_replay"], json!(true));
    assert_eq!(again["entry"], first["entry"]);
    let changed = json!({"amount_credits": 701, "reason": "promo", "idempotency_key": "promo-1"});
    let (status, response) = app.admin(Method::POST, &path, Some(&changed)).await;
    assert_envelope(status, &response, 409, "IDEMPOTENCY_KEY_REUSED");
    assert_eq!(app.scalar("SELECT COUNT(*) FROM ledger_entries").await, 1);
    assert_eq!(app.scalar("SELECT balance_credits FROM wallets").await, 700);
}

async fn concurrent_same_idempotency_key_posts_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let wallet = PrivateKey::random().address();
    let path = format!("/api/admin/wallets/{wallet}/credits");
    let body = json!({"amount_credits": 250, "reason": "race", "idempotency_key": "race-1"});
    let results =
        futures::future::join_all((0..20).map(|_| app.admin(Method::POST, &path, Some(&body))))
            .await;
    let created = results.iter().filter(|(s, _)| *s == 201).count();
    let replayed = results
        .iter()
        .filter(|(s, b)| *s == 200 && b["idempotent_replay"] == json!(true))
        .count();
    assert_eq!((created, replayed), (1, 19), "{results:?}");
    assert_eq!(app.scalar("SELECT COUNT(*) FROM ledger_entries").await, 1);
    assert_eq!(app.scalar("SELECT balance_credits FROM wallets").await, 250);
}

async fn bad_input_is_422(backend: Backend) {
    let app = spawn_app(backend).await;
    let wallet = PrivateKey::random().address();
    let path = format!("/api/admin/wallets/{wallet}/credits");
    for body in [
        json!({"amount_credits": 0, "reason": "x"}),
        json!({"amount_credits": 10_000_000_000i64, "reason": "x"}),
        // Found by schemathesis: i64::MIN overflowed abs() into a 500.
        json!({"amount_credits": i64::MIN, "reason": "x"}),
        json!({"amount_credits": 5, "reason": ""}),
        json!({"amount_credits": 5, "reason": "x".repeat(501)}),
        json!({"amount_credits": "5", "reason": "x"}),
        json!({"amount_credits": 5.5, "reason": "x"}),
        json!({"reason": "x"}),
        json!({"amount_credits": 5, "reason": "x", "surprise": true}),
        json!({"amount_credits": 5, "reason": "x", "idempotency_key": ""}),
    ] {
        let (status, response) = app.admin(Method::POST, &path, Some(&body)).await;
        assert_envelope(status, &response, 422, "VALIDATION_ERROR");
    }
    let (status, response) = app
        .admin(
            Method::POST,
            "/api/admin/wallets/0xnot-an-address/credits",
            Some(&json!({"amount_credits": 5, "reason": "x"})),
        )
        .await;
    assert_envelope(status, &response, 422, "VALIDATION_ERROR");
    assert_eq!(app.scalar("SELECT COUNT(*) FROM ledger_entries").await, 0);
}
