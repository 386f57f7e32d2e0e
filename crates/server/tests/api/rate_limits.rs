//! Abuse limits for the whole API: per IP on unauthenticated endpoints, per wallet on
//! signed ones (checked before signature recovery), 429 in the envelope with Retry-After.

use crate::backend_tests;
use crate::helpers::*;
use agentpmt_protocol::PrivateKey;
use reqwest::StatusCode;
use serde_json::json;

backend_tests!(
    per_ip_limit_guards_unauthenticated_endpoints,
    per_wallet_limit_applies_before_signature_recovery,
    signed_routes_have_a_per_ip_limit_fresh_wallets_do_not_escape,
    wallets_without_a_session_get_no_bucket,
    a_signature_matching_nothing_pays_for_every_recovery,
    refused_signatures_cost_more_and_refusals_are_held,
    heavy_builtins_are_budgeted_in_cpu_time_per_payer,
);

fn limiter_keys(metrics: &str, limiter: &str) -> u64 {
    let prefix = format!("agentpmt_rate_limit_keys{{limiter=\"{limiter}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix} in {metrics}"))
        .trim()
        .parse()
        .unwrap()
}

/// A random wallet, a random nonce and a signature of its own: what a flood of fresh
/// wallets sends.
fn random_wallet_body(i: usize) -> serde_json::Value {
    signed(
        &PrivateKey::random(),
        agentpmt_protocol::SignedAction::Balance,
        &[],
        &format!("no-such-session-{i}"),
        "r-1",
        serde_json::Map::new(),
    )
}

/// Signed endpoints count requests per client address before anything else: signing with
/// a fresh wallet for every request does not get a fresh limit.
async fn signed_routes_have_a_per_ip_limit_fresh_wallets_do_not_escape(backend: Backend) {
    let app = spawn_app_with(
        backend,
        AppOptions::configured(|c| {
            c.signed_ip_rate_per_sec = 1;
            c.signed_ip_rate_burst = 3;
            // One token per request, refused or not (the failure cost has its own test).
            c.signed_ip_failure_cost = 0;
        }),
    )
    .await;
    // A well-behaved wallet's session, opened before the flood (session creation has its
    // own limit).
    let key = PrivateKey::random();
    let nonce = app.session(&key.address()).await;
    for i in 0..3 {
        let (status, body) = app
            .post("/api/external/credits/balance", &random_wallet_body(i))
            .await;
        assert_envelope(
            status,
            &body,
            401,
            "EXTERNAL_SIGNATURE_SESSION_NONCE_INVALID",
        );
    }
    let (status, body) = app
        .post("/api/external/credits/balance", &random_wallet_body(9))
        .await;
    let details = assert_envelope(status, &body, 429, "RATE_LIMITED");
    assert_eq!(details["scope"], json!("ip"));
    // The same bucket guards every signed route, invoke included.
    let (status, body) = app
        .post(
            "/api/external/credits/balance",
            &app.balance_body(&key, &nonce, "good-1"),
        )
        .await;
    assert_envelope(status, &body, 429, "RATE_LIMITED");
    let mut invoke = app.balance_body(&key, &nonce, "good-2");
    invoke["parameters"] = json!({"text": "x"});
    let (status, body) = app
        .post(
            "/api/external/tools/text-tools/actions/extract-urls/invoke",
            &invoke,
        )
        .await;
    let details = assert_envelope(status, &body, 429, "RATE_LIMITED");
    assert_eq!(details["scope"], json!("ip"));
    assert_eq!(app.replay_count().await, 0, "nothing was written");
    assert!(app
        .metrics()
        .await
        .contains("agentpmt_rate_limited_total{scope=\"signed_ip\"} 3"));
}

/// The per-wallet limiter keeps a bucket only for wallets that have a session: a flood of
/// random wallets leaves it empty (bounded memory), and is refused before any recovery.
async fn wallets_without_a_session_get_no_bucket(backend: Backend) {
    let app = spawn_app_with(
        backend,
        AppOptions::configured(|c| c.signed_ip_failure_cost = 0),
    )
    .await;
    for i in 0..300 {
        let (status, body) = app
            .post("/api/external/credits/balance", &random_wallet_body(i))
            .await;
        assert_envelope(
            status,
            &body,
            401,
            "EXTERNAL_SIGNATURE_SESSION_NONCE_INVALID",
        );
    }
    let metrics = app.metrics().await;
    assert_eq!(limiter_keys(&metrics, "wallet"), 0, "{metrics}");
    assert_eq!(limiter_keys(&metrics, "signed_ip"), 1, "{metrics}");
    let key = PrivateKey::random();
    let nonce = app.session(&key.address()).await;
    let (status, body) = app
        .post(
            "/api/external/credits/balance",
            &app.balance_body(&key, &nonce, "ok-1"),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(limiter_keys(&app.metrics().await, "wallet"), 1);
}

/// A tool invoke is accepted over many message variants (path prefix, trailing slash,
/// slug spellings, payload escapings). A signature that matches none of them costs one
/// recovery per distinct message, and the client's address pays a token for each: a
/// bogus invoke is not a cheap way to spend the server's CPU.
async fn a_signature_matching_nothing_pays_for_every_recovery(backend: Backend) {
    let app = spawn_app_with(
        backend,
        AppOptions::configured(|c| {
            c.signed_ip_rate_per_sec = 1;
            c.signed_ip_rate_burst = 12;
            c.signed_ip_failure_cost = 0;
        }),
    )
    .await;
    let key = PrivateKey::random();
    let nonce = app.session(&key.address()).await;
    // Forged balance requests: one message each, one token each.
    for i in 0..3 {
        let mut forged = app.balance_body(&PrivateKey::random(), &nonce, &format!("f-{i}"));
        forged["wallet_address"] = json!(key.address().to_string());
        let (status, body) = app.post("/api/external/credits/balance", &forged).await;
        assert_envelope(status, &body, 401, "EXTERNAL_SIGNATURE_WALLET_MISMATCH");
    }
    // A forged invoke with a raw action spelling and a non-ASCII parameter: dozens of
    // accepted messages, so it empties the bucket.
    let mut forged = app.balance_body(&PrivateKey::random(), &nonce, "f-invoke");
    forged["wallet_address"] = json!(key.address().to_string());
    forged["parameters"] = json!({"text": "é https://example.org"});
    let (status, body) = app
        .post(
            "/api/external/tools/text-tools/actions/extract_urls/invoke",
            &forged,
        )
        .await;
    let details = assert_envelope(status, &body, 401, "EXTERNAL_SIGNATURE_WALLET_MISMATCH");
    let paths = details["accepted_path_candidates"]
        .as_array()
        .unwrap()
        .len();
    assert!(paths >= 8, "{details}");
    let (status, body) = app
        .post(
            "/api/external/credits/balance",
            &app.balance_body(&key, &nonce, "good-1"),
        )
        .await;
    let details = assert_envelope(status, &body, 429, "RATE_LIMITED");
    assert_eq!(details["scope"], json!("ip"));
}

/// A signed per-IP bucket of ten tokens, refused signatures costing `failure_cost`, and
/// refusals held 400 ms.
fn tarpitted(c: &mut agentpmt_server::ServerConfig, failure_cost: u32) {
    c.signed_ip_rate_per_sec = 1;
    c.signed_ip_rate_burst = 10;
    c.signed_ip_failure_cost = failure_cost;
    c.tarpit_ms = 400;
}

/// A refused signature costs its address `signed_ip_failure_cost` tokens: a flood of
/// forged signatures is refused long before the same number of honest requests would be.
/// The 429 is held for the tarpit's time before it is answered.
async fn refused_signatures_cost_more_and_refusals_are_held(backend: Backend) {
    for failure_cost in [1u32, 5] {
        let app = spawn_app_with(
            backend,
            AppOptions::configured(if failure_cost == 1 {
                |c| tarpitted(c, 1)
            } else {
                |c| tarpitted(c, 5)
            }),
        )
        .await;
        let key = PrivateKey::random();
        let nonce = app.session(&key.address()).await;
        for i in 0..2 {
            let (status, body) = app
                .post("/api/external/credits/balance", &random_wallet_body(i))
                .await;
            assert_envelope(
                status,
                &body,
                401,
                "EXTERNAL_SIGNATURE_SESSION_NONCE_INVALID",
            );
        }
        let started = std::time::Instant::now();
        let (status, body) = app
            .post(
                "/api/external/credits/balance",
                &app.balance_body(&key, &nonce, "good-1"),
            )
            .await;
        if failure_cost == 1 {
            // Two refusals cost two tokens of ten: the honest request is served.
            assert_eq!(status, StatusCode::OK, "{body}");
            continue;
        }
        // Two refusals at five tokens each emptied the bucket of ten.
        let details = assert_envelope(status, &body, 429, "RATE_LIMITED");
        assert_eq!(details["scope"], json!("ip"));
        assert!(
            started.elapsed() >= std::time::Duration::from_millis(400),
            "the refusal was answered after {:?}, before the tarpit's 400 ms",
            started.elapsed()
        );
        assert_eq!(app.replay_count().await, 0, "nothing was written");
    }
}

/// `json-tools/validate` spends CPU the caller controls (a backtracking pattern per item).
/// Its payer has a CPU budget: once spent, the next heavy call is refused with 429 before
/// anything is held; other payers, and cheap tools of the same payer, are still served.
async fn heavy_builtins_are_budgeted_in_cpu_time_per_payer(backend: Backend) {
    let app = spawn_app_with(
        backend,
        AppOptions::configured(|c| {
            c.heavy_cpu_ms_per_sec = 1;
            c.heavy_cpu_ms_burst = 1;
        }),
    )
    .await;
    // Every item takes the whole backtracking budget of its pattern: many CPU milliseconds.
    let items: Vec<String> = (0..200).map(|_| format!("{}b", "a".repeat(18))).collect();
    let costly = json!({
        "schema": {"type": "array", "items": {"type": "string", "pattern": "^(a+)+\\1$"}},
        "document": items,
    });
    let key = PrivateKey::random();
    app.adjust(&key.address(), 1000).await;
    let nonce = app.session(&key.address()).await;
    let (status, body) = crate::tools::invoke(
        &app,
        &key,
        &nonce,
        "h-1",
        "json-tools",
        "validate",
        costly.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["response"]["valid"], json!(false), "{body}");
    let charged = body["balance_credits"].as_i64().unwrap();
    let (status, body) = crate::tools::invoke(
        &app,
        &key,
        &nonce,
        "h-2",
        "json-tools",
        "validate",
        costly.clone(),
    )
    .await;
    let details = assert_envelope(status, &body, 429, "RATE_LIMITED");
    assert_eq!(details["scope"], json!("heavy_cpu"), "{details}");
    assert_eq!(details["limit_unit"], json!("cpu_ms"), "{details}");
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM tool_usage").await,
        1,
        "the refused call left no usage record"
    );
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM credit_holds").await,
        1,
        "the refused call placed no hold"
    );
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM credit_holds WHERE status <> 'posted'")
            .await,
        0,
        "every hold was settled: the one call that ran was posted"
    );
    let (status, balance) = app
        .post(
            "/api/external/credits/balance",
            &app.balance_body(&key, &nonce, "h-balance"),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{balance}");
    assert_eq!(balance["balance_credits"].as_i64().unwrap(), charged);
    // A cheap tool of the same payer is not budgeted.
    let (status, body) = crate::tools::invoke(
        &app,
        &key,
        &nonce,
        "h-3",
        "text-tools",
        "extract-urls",
        json!({"text": "see https://example.org"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Another payer has a budget of its own.
    let other = PrivateKey::random();
    app.adjust(&other.address(), 1000).await;
    let other_nonce = app.session(&other.address()).await;
    let (status, body) = crate::tools::invoke(
        &app,
        &other,
        &other_nonce,
        "o-1",
        "json-tools",
        "validate",
        costly,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(app
        .metrics()
        .await
        .contains("agentpmt_rate_limited_total{scope=\"heavy_cpu\"} 1"));
}

async fn per_ip_limit_guards_unauthenticated_endpoints(backend: Backend) {
    let app = spawn_app_with(
        backend,
        AppOptions::configured(|c| {
            c.ip_rate_per_sec = 1;
            c.ip_rate_burst = 2;
        }),
    )
    .await;
    let wallet = PrivateKey::random().address().to_string();
    let body = json!({"wallet_address": wallet});
    for _ in 0..2 {
        let (status, _, answer) = app
            .post_with_headers("/api/external/auth/session", &body, &[])
            .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
    }
    let (status, headers, answer) = app
        .post_with_headers(
            "/api/external/auth/session",
            &body,
            &[("x-forwarded-for", "192.0.2.1")],
        )
        .await;
    let details = assert_envelope(status, &answer, 429, "RATE_LIMITED");
    assert_eq!(details["scope"], json!("ip"));
    assert_eq!(answer["rate_limit"]["limit"], json!(1));
    assert_eq!(answer["rate_limit"]["window_seconds"], json!(1));
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry >= 1);
    assert_eq!(answer["rate_limit"]["retry_after_seconds"], json!(retry));
    // The same bucket guards agent-help and AgentAddress (before any database write).
    let (status, answer) = app
        .post("/api/external/agent-help", &json!({"message": "hi"}))
        .await;
    assert_envelope(status, &answer, 429, "RATE_LIMITED");
    let (status, answer) = app.post("/api/external/agentaddress", &json!({})).await;
    assert_envelope(status, &answer, 429, "RATE_LIMITED");
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM agent_help_tickets").await,
        0
    );
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM agentaddress_rate_limits")
            .await,
        0
    );
    assert_eq!(app.scalar("SELECT COUNT(*) FROM auth_sessions").await, 2);
}

async fn per_wallet_limit_applies_before_signature_recovery(backend: Backend) {
    let app = spawn_app_with(
        backend,
        AppOptions::configured(|c| {
            c.wallet_rate_per_sec = 1;
            c.wallet_rate_burst = 1;
        }),
    )
    .await;
    let key = PrivateKey::random();
    let wallet = key.address();
    let nonce = app.session(&wallet).await;
    // Signed by someone else: verification would say WALLET_MISMATCH.
    let mut forged = app.balance_body(&PrivateKey::random(), &nonce, "w-1");
    forged["wallet_address"] = json!(wallet.to_string());
    let (status, body) = app.post("/api/external/credits/balance", &forged).await;
    assert_envelope(status, &body, 401, "EXTERNAL_SIGNATURE_WALLET_MISMATCH");
    // Over the limit the request is refused before any recovery: 429, not 401.
    forged["request_id"] = json!("w-2");
    let (status, body) = app.post("/api/external/credits/balance", &forged).await;
    let details = assert_envelope(status, &body, 429, "RATE_LIMITED");
    assert_eq!(details["scope"], json!("wallet"));
    let (status, body) = app
        .post(
            "/api/external/credits/balance",
            &app.balance_body(&key, &nonce, "w-3"),
        )
        .await;
    assert_envelope(status, &body, 429, "RATE_LIMITED");
    assert_eq!(app.replay_count().await, 0, "nothing was written");
    // Another wallet is not affected.
    let other = PrivateKey::random();
    let other_nonce = app.session(&other.address()).await;
    let (status, body) = app
        .post(
            "/api/external/credits/balance",
            &app.balance_body(&other, &other_nonce, "o-1"),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
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
        metrics.contains("agentpmt_rate_limited_total{scope=\"wallet\"} 2"),
        "{metrics}"
    );
}

// ---------------------------------------------------------------------------------------
// Limits across instances (issue 20): two instances on one PostgreSQL database, the
// per-wallet limit 1/s with a burst of 5, requests alternating between them.

/// Wallet burst of the cross-instance tests.
const BURST: usize = 5;

fn shared_by(
    backend: agentpmt_server::config::RateLimitBackend,
) -> fn(&mut agentpmt_server::ServerConfig) {
    use agentpmt_server::config::RateLimitBackend;
    fn wallet_limit(c: &mut agentpmt_server::ServerConfig) {
        c.wallet_rate_per_sec = 1;
        c.wallet_rate_burst = BURST as u32;
    }
    match backend {
        RateLimitBackend::Memory => wallet_limit,
        RateLimitBackend::Postgres => |c| {
            wallet_limit(c);
            c.rate_limit_backend = RateLimitBackend::Postgres;
        },
        RateLimitBackend::Redis => |c| {
            wallet_limit(c);
            c.rate_limit_backend = RateLimitBackend::Redis;
            c.redis_url = Some(secrecy::SecretString::from(redis_url()));
            // Each test process counts in keys of its own.
            c.redis_key_prefix = REDIS_PREFIX.clone();
        },
    }
}

static REDIS_PREFIX: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| format!("agentpmt-test:{}", uuid::Uuid::new_v4().simple()));

fn redis_url() -> String {
    std::env::var("AGENTPMT_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into())
}

/// Sends `n` signed balance requests for one wallet, alternating between `a` and `b`;
/// returns how many were answered 200 and the details of the last 429.
async fn alternate(a: &TestApp, b: &TestApp, n: usize) -> (usize, Option<serde_json::Value>) {
    let key = PrivateKey::random();
    let nonce = a.session(&key.address()).await;
    let mut ok = 0;
    let mut refused = None;
    for i in 0..n {
        let app = if i % 2 == 0 { a } else { b };
        let (status, body) = app
            .post(
                "/api/external/credits/balance",
                &app.balance_body(&key, &nonce, &format!("x-{i}")),
            )
            .await;
        match status {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                let mut details = assert_envelope(status, &body, 429, "RATE_LIMITED").clone();
                details["rate_limit"] = body["rate_limit"].clone();
                refused = Some(details)
            }
            other => panic!("{other}: {body}"),
        }
    }
    (ok, refused)
}

async fn two_instances(backend: agentpmt_server::config::RateLimitBackend) -> (TestApp, TestApp) {
    let url = fresh_postgres_schema().await;
    let a = spawn_on(&url, AppOptions::configured(shared_by(backend))).await;
    let b = spawn_on(&url, AppOptions::configured(shared_by(backend))).await;
    (a, b)
}

/// In memory (the default) each instance counts on its own: two instances allow twice the
/// burst, and the 429 says the limit is per instance.
#[tokio::test]
async fn postgres_in_memory_limits_are_per_instance_and_say_so() {
    if skip_postgres() {
        return;
    }
    let (a, b) = two_instances(agentpmt_server::config::RateLimitBackend::Memory).await;
    let started = std::time::Instant::now();
    let (ok, refused) = alternate(&a, &b, 4 * BURST).await;
    let refill = started.elapsed().as_secs() as usize + 1;
    assert!(
        ok >= 2 * BURST && ok <= 2 * (BURST + refill),
        "{ok} allowed"
    );
    let details = refused.expect("some requests were refused");
    assert_eq!(details["scope"], json!("wallet"));
    assert_eq!(details["limit_backend"], json!("memory"));
    assert_eq!(details["per_instance"], json!(true));
}

/// `--rate-limit-backend postgres`: one count for both instances.
#[tokio::test]
async fn postgres_shared_limits_in_postgres_hold_across_instances() {
    if skip_postgres() {
        return;
    }
    shared_limits_hold_across_instances(agentpmt_server::config::RateLimitBackend::Postgres).await;
}

/// `--rate-limit-backend redis` (the machine's Redis; in CI its absence is a failure).
#[tokio::test]
async fn postgres_shared_limits_in_redis_hold_across_instances() {
    if skip_postgres() {
        return;
    }
    shared_limits_hold_across_instances(agentpmt_server::config::RateLimitBackend::Redis).await;
}

async fn shared_limits_hold_across_instances(backend: agentpmt_server::config::RateLimitBackend) {
    let (a, b) = two_instances(backend).await;
    let started = std::time::Instant::now();
    let (ok, refused) = alternate(&a, &b, 4 * BURST).await;
    let refill = started.elapsed().as_secs() as usize + 1;
    assert!(
        ok >= BURST && ok <= BURST + refill,
        "{ok} allowed across two instances"
    );
    let details = refused.expect("requests past the shared burst were refused");
    assert_eq!(details["scope"], json!("wallet"));
    assert_eq!(details["limit_backend"], json!(backend.as_str()));
    assert_eq!(details["per_instance"], json!(false));
    assert!(
        details["rate_limit"]["retry_after_seconds"]
            .as_u64()
            .unwrap_or(0)
            >= 1,
        "{details}"
    );
    assert_eq!(details["rate_limit"]["limit"], json!(1), "{details}");
}

/// A shared backend that cannot be used refuses to start with a clear message, without the
/// URL (it may carry a password).
#[tokio::test]
async fn unusable_shared_backends_refuse_to_start() {
    use agentpmt_server::config::RateLimitBackend;
    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite://{}/agentpmt.db", dir.path().display());
    let mut config = test_config(&sqlite, &AppOptions::default());
    config.rate_limit_backend = RateLimitBackend::Postgres;
    let err = agentpmt_server::Server::build(config)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("--rate-limit-backend") && err.contains("PostgreSQL"),
        "{err}"
    );

    let mut config = test_config(&sqlite, &AppOptions::default());
    config.rate_limit_backend = RateLimitBackend::Redis;
    let err = agentpmt_server::Server::build(config)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("--redis-url"), "{err}");

    let mut config = test_config(&sqlite, &AppOptions::default());
    config.rate_limit_backend = RateLimitBackend::Redis;
    config.redis_url = Some(secrecy::SecretString::from(
        "redis://:hunter2-secret@127.0.0.1:1/0".to_owned(),
    ));
    let err = agentpmt_server::Server::build(config)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("redis"), "{err}");
    assert!(
        !err.contains("hunter2"),
        "the password reached the error: {err}"
    );
}
