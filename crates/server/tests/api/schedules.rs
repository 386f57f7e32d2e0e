//! Accounts, API keys and budgets; the API-key + budget-key bearer in every form; BYO-agent
//! workflow schedules: due, claim (exclusive leases, expiry, idempotent request_id),
//! advance (next occurrence in the schedule's time zone, already_advanced), release, and
//! the seed's 409 enums.

use crate::backend_tests;
use crate::helpers::*;
use crate::workflows::create_workflow;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;

backend_tests!(
    every_bearer_form_is_accepted,
    bad_bearers_are_refused,
    concurrent_claims_lease_an_occurrence_once,
    expired_leases_are_claimable_again_and_old_tokens_refused,
    advance_moves_on_once_and_reports_already_advanced,
    release_returns_the_occurrence_without_moving_it,
    claim_request_id_is_idempotent_and_empty_queue_is_200,
    due_lists_and_bad_input_is_400,
    cron_schedules_advance_in_their_time_zone,
    operator_schedule_changes,
    concurrent_retries_of_one_claim_return_it,
    account_admin_input_is_checked,
);

/// An account with an API key and a budget.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub account_id: String,
    pub key_id: String,
    pub api_key: String,
    pub budget_id: String,
    pub budget_key: String,
}

impl Tenant {
    /// The standard bearer: base64 of `api_key:budget_key`.
    pub fn bearer(&self) -> String {
        STANDARD.encode(format!("{}:{}", self.api_key, self.budget_key))
    }
}

pub async fn tenant(app: &TestApp) -> Tenant {
    let (status, account) = app
        .admin(
            Method::POST,
            "/api/admin/accounts",
            Some(&json!({"name": "Acme Ops"})),
        )
        .await;
    assert_eq!(status, 201, "{account}");
    let account_id = account["account"]["account_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, key) = app
        .admin(
            Method::POST,
            &format!("/api/admin/accounts/{account_id}/api-keys"),
            Some(&json!({"label": "worker"})),
        )
        .await;
    assert_eq!(status, 201, "{key}");
    let (status, budget) = app
        .admin(
            Method::POST,
            &format!("/api/admin/accounts/{account_id}/budgets"),
            Some(&json!({"name": "Nightly", "cap_credits": 5000})),
        )
        .await;
    assert_eq!(status, 201, "{budget}");
    assert_eq!(budget["budget"]["draws_from"], json!("account"));
    Tenant {
        account_id,
        key_id: key["key"]["key_id"].as_str().unwrap().to_owned(),
        api_key: key["api_key"].as_str().unwrap().to_owned(),
        budget_id: budget["budget"]["budget_id"].as_str().unwrap().to_owned(),
        budget_key: budget["budget_key"].as_str().unwrap().to_owned(),
    }
}

/// Creates a schedule for the tenant's budget; returns it.
pub async fn schedule(app: &TestApp, tenant: &Tenant, workflow: &str, extra: Value) -> Value {
    let mut body = json!({
        "workflow_id": workflow,
        "name": "Nightly digest",
        "prompt": "Summarize yesterday",
        "metadata": {"channel": "#ops"},
        "recurrence": {"interval_seconds": 3600},
        "start_at": "2026-01-01T00:00:00Z",
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let (status, created) = app
        .admin(
            Method::POST,
            &format!("/api/admin/budgets/{}/workflow-schedules", tenant.budget_id),
            Some(&body),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    created["schedule"].clone()
}

/// A request with the tenant's standard bearer.
pub async fn bearer_call(
    app: &TestApp,
    tenant: &Tenant,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> (StatusCode, Value) {
    let mut request = app
        .http
        .request(method, app.url(path))
        .header("authorization", format!("Bearer {}", tenant.bearer()));
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn claim(app: &TestApp, tenant: &Tenant, body: Value) -> (StatusCode, Value) {
    bearer_call(
        app,
        tenant,
        Method::POST,
        "/api/external/workflow-schedules/claim",
        Some(&body),
    )
    .await
}

async fn advance(app: &TestApp, tenant: &Tenant, id: &str, body: Value) -> (StatusCode, Value) {
    bearer_call(
        app,
        tenant,
        Method::POST,
        &format!("/api/external/workflow-schedules/{id}/advance"),
        Some(&body),
    )
    .await
}

async fn release(app: &TestApp, tenant: &Tenant, id: &str, body: Value) -> (StatusCode, Value) {
    bearer_call(
        app,
        tenant,
        Method::POST,
        &format!("/api/external/workflow-schedules/{id}/release"),
        Some(&body),
    )
    .await
}

/// Asserts a schedule 409 with the seed's `error` enum.
fn assert_conflict(status: StatusCode, body: &Value, error: &str, code: &str) {
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"], json!(error), "{body}");
    assert_eq!(body["error_code"], json!(code), "{body}");
    for field in ["message", "request_id", "help_url", "help_doc"] {
        assert!(
            body[field].as_str().is_some_and(|s| !s.is_empty()),
            "{field}: {body}"
        );
    }
}

/// Asserts a 400 `SCHEDULE_REQUEST_INVALID` in the envelope, with a `detail[]` list (the
/// 422 shape under the seeds' status for these endpoints); returns `details`.
fn assert_bad_request(status: StatusCode, body: &Value) -> Value {
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["success"], json!(false), "{body}");
    assert_eq!(
        body["error_code"],
        json!("SCHEDULE_REQUEST_INVALID"),
        "{body}"
    );
    assert_eq!(body["error"], json!("Bad Request"), "{body}");
    for field in ["message", "request_id", "help_url", "help_doc"] {
        assert!(
            body[field].as_str().is_some_and(|s| !s.is_empty()),
            "{field}: {body}"
        );
    }
    let issues = body["detail"].as_array().expect("detail[]");
    assert!(!issues.is_empty());
    for issue in issues {
        assert!(
            issue["loc"].is_array() && issue["msg"].is_string(),
            "{issue}"
        );
    }
    body["details"].clone()
}

fn assert_success_envelope(body: &Value) {
    assert_eq!(body["success"], json!(true), "{body}");
    assert_request_and_help(body);
}

async fn setup(app: &TestApp) -> (Tenant, String, Value) {
    let workflow = create_workflow(app, "digest", json!({}), true).await;
    let tenant = tenant(app).await;
    let schedule = schedule(app, &tenant, &workflow, json!({})).await;
    (tenant, workflow, schedule)
}

async fn every_bearer_form_is_accepted(backend: Backend) {
    let app = spawn_app(backend).await;
    let (tenant, _, _) = setup(&app).await;
    let pair = json!({"api_key": tenant.api_key, "budget_key": tenant.budget_key}).to_string();
    let due = app.url("/api/external/workflow-schedules/due");
    let requests = [
        app.http
            .get(&due)
            .header("authorization", format!("Bearer {}", tenant.bearer())),
        app.http.get(&due).header(
            "authorization",
            format!("bearer {}", STANDARD.encode(&pair)),
        ),
        app.http.get(&due).header(
            "authorization",
            format!("Bearer {}", URL_SAFE_NO_PAD.encode(&pair)),
        ),
        app.http
            .get(&due)
            .header("x-api-key", &tenant.api_key)
            .header("x-budget-key", &tenant.budget_key),
    ];
    for (i, request) in requests.into_iter().enumerate() {
        let response = request.send().await.unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert_eq!(status, 200, "form {i}: {body}");
        assert_success_envelope(&body);
        assert_eq!(body["data"]["count"], json!(1), "form {i}: {body}");
        assert_eq!(
            body["data"]["items"][0]["budget_id"],
            json!(tenant.budget_id)
        );
    }
    // Keys are stored hashed: neither secret is in the database.
    for secret in [&tenant.api_key, &tenant.budget_key] {
        let sql = format!(
            "SELECT (SELECT COUNT(*) FROM api_keys WHERE key_hash = '{secret}' OR key_prefix = '{secret}') \
                  + (SELECT COUNT(*) FROM budgets WHERE key_hash = '{secret}' OR key_prefix = '{secret}')"
        );
        assert_eq!(app.scalar(&sql).await, 0);
    }
}

async fn bad_bearers_are_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let (tenant, _, _) = setup(&app).await;
    let other = tenant_of_other_account(&app).await;
    let due = app.url("/api/external/workflow-schedules/due");
    let mut tampered = tenant.api_key.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'a' { 'b' } else { 'a' });
    let cases: Vec<(reqwest::RequestBuilder, &str)> = vec![
        (app.http.get(&due), "missing"),
        (
            app.http.get(&due).header("authorization", "Basic abc"),
            "malformed",
        ),
        (
            app.http
                .get(&due)
                .header("authorization", "Bearer %%%not-base64%%%"),
            "malformed",
        ),
        (
            app.http.get(&due).header(
                "authorization",
                format!(
                    "Bearer {}",
                    STANDARD.encode(format!("{tampered}:{}", tenant.budget_key))
                ),
            ),
            "api_key_invalid",
        ),
        (
            app.http.get(&due).header(
                "authorization",
                format!(
                    "Bearer {}",
                    STANDARD.encode(format!("{}:{}x", tenant.api_key, tenant.budget_key))
                ),
            ),
            "budget_key_invalid",
        ),
        // My API key with another account's budget.
        (
            app.http.get(&due).header(
                "authorization",
                format!(
                    "Bearer {}",
                    STANDARD.encode(format!("{}:{}", tenant.api_key, other.budget_key))
                ),
            ),
            "budget_not_in_account",
        ),
        (
            app.http
                .get(&due)
                .header("x-api-key", &tenant.api_key)
                .header("x-budget-key", &tenant.api_key),
            "budget_key_invalid",
        ),
    ];
    for (request, reason) in cases {
        let response = request.send().await.unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        let details = assert_envelope(status, &body, 401, "BEARER_UNAUTHORIZED");
        assert_eq!(details["reason"], json!(reason), "{body}");
    }
    // Revoked API key, then (with a fresh key) a revoked budget.
    let (status, _) = bearer_call(
        &app,
        &tenant,
        Method::GET,
        "/api/external/workflow-schedules/due",
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, revoked) = app
        .admin(
            Method::POST,
            &format!("/api/admin/api-keys/{}/revoke", tenant.key_id),
            None,
        )
        .await;
    assert_eq!(status, 200, "{revoked}");
    let (status, body) = bearer_call(
        &app,
        &tenant,
        Method::GET,
        "/api/external/workflow-schedules/due",
        None,
    )
    .await;
    let details = assert_envelope(status, &body, 401, "BEARER_UNAUTHORIZED");
    assert_eq!(details["reason"], json!("api_key_revoked"));
    let (status, body) = claim(&app, &tenant, json!({})).await;
    assert_envelope(status, &body, 401, "BEARER_UNAUTHORIZED");
    let (_, key) = app
        .admin(
            Method::POST,
            &format!("/api/admin/accounts/{}/api-keys", tenant.account_id),
            Some(&json!({})),
        )
        .await;
    let fresh = Tenant {
        api_key: key["api_key"].as_str().unwrap().to_owned(),
        ..tenant.clone()
    };
    let (status, _) = bearer_call(
        &app,
        &fresh,
        Method::GET,
        "/api/external/workflow-schedules/due",
        None,
    )
    .await;
    assert_eq!(status, 200);
    app.admin(
        Method::POST,
        &format!("/api/admin/budgets/{}/revoke", fresh.budget_id),
        None,
    )
    .await;
    let (status, body) = bearer_call(
        &app,
        &fresh,
        Method::GET,
        "/api/external/workflow-schedules/due",
        None,
    )
    .await;
    let details = assert_envelope(status, &body, 401, "BEARER_UNAUTHORIZED");
    assert_eq!(details["reason"], json!("budget_key_revoked"));
    // Nothing was claimed by any refused request.
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM workflow_schedules WHERE claim_token IS NOT NULL")
            .await,
        0
    );
}

async fn tenant_of_other_account(app: &TestApp) -> Tenant {
    tenant(app).await
}

async fn concurrent_claims_lease_an_occurrence_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let (tenant, _, schedule) = setup(&app).await;
    let app = std::sync::Arc::new(app);
    let mut tasks = Vec::new();
    for i in 0..20 {
        let app = app.clone();
        let tenant = tenant.clone();
        tasks.push(tokio::spawn(async move {
            claim(
                &app,
                &tenant,
                json!({"limit": 5, "request_id": format!("worker-{i}")}),
            )
            .await
        }));
    }
    let mut leases = Vec::new();
    for task in tasks {
        let (status, body) = task.await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert_success_envelope(&body);
        for item in body["data"]["items"].as_array().unwrap() {
            leases.push(item.clone());
        }
    }
    assert_eq!(leases.len(), 1, "exactly one lease: {leases:?}");
    let lease = &leases[0];
    assert_eq!(lease["schedule_id"], schedule["schedule_id"]);
    assert_eq!(lease["due_at"], json!("2026-01-01T00:00:00.000Z"));
    assert_eq!(lease["execution_mode"], json!("external_due"));
    assert_eq!(lease["claim_lease_seconds"], json!(900));
    assert_eq!(lease["workflow_slug"], json!("digest"));
    assert_eq!(lease["metadata"], json!({"channel": "#ops"}));
    assert_eq!(lease["recurrence"]["interval_seconds"], json!(3600));
    assert!(lease["claim_token"]
        .as_str()
        .is_some_and(|t| t.starts_with("clm_")));
    assert!(lease["claim_expires_at"].as_str().is_some());
    assert_eq!(
        app.scalar("SELECT claim_epoch FROM workflow_schedules")
            .await,
        1
    );
}

async fn expired_leases_are_claimable_again_and_old_tokens_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let (tenant, _, schedule) = setup(&app).await;
    let id = schedule["schedule_id"].as_str().unwrap();
    let (_, first) = claim(&app, &tenant, json!({"lease_seconds": 1})).await;
    let old = first["data"]["items"][0].clone();
    assert_eq!(old["claim_lease_seconds"], json!(1));
    // Still leased: nothing to claim.
    let (_, none) = claim(&app, &tenant, json!({})).await;
    assert_eq!(none["data"]["items"], json!([]));
    tokio::time::sleep(Duration::from_millis(1300)).await;
    // The expired holder cannot advance.
    let (status, body) = advance(
        &app,
        &tenant,
        id,
        json!({"due_at": old["due_at"], "claim_token": old["claim_token"]}),
    )
    .await;
    assert_conflict(status, &body, "claim_expired", "SCHEDULE_CLAIM_EXPIRED");
    // Claimable again, with a new token.
    let (_, second) = claim(&app, &tenant, json!({"lease_seconds": 60})).await;
    let new = second["data"]["items"][0].clone();
    assert_eq!(new["schedule_id"], json!(id));
    assert_ne!(new["claim_token"], old["claim_token"]);
    // The old token after the new claim: claim_mismatch, for advance and release.
    let (status, body) = advance(
        &app,
        &tenant,
        id,
        json!({"due_at": old["due_at"], "claim_token": old["claim_token"]}),
    )
    .await;
    assert_conflict(status, &body, "claim_mismatch", "SCHEDULE_CLAIM_MISMATCH");
    let (status, body) = release(
        &app,
        &tenant,
        id,
        json!({"due_at": old["due_at"], "claim_token": old["claim_token"]}),
    )
    .await;
    assert_conflict(status, &body, "claim_mismatch", "SCHEDULE_CLAIM_MISMATCH");
    // A wrong due_at: due_at_mismatch.
    let (status, body) = advance(
        &app,
        &tenant,
        id,
        json!({"due_at": "2026-01-01T01:00:00Z", "claim_token": new["claim_token"]}),
    )
    .await;
    assert_conflict(status, &body, "due_at_mismatch", "SCHEDULE_DUE_AT_MISMATCH");
    let (status, body) = release(
        &app,
        &tenant,
        id,
        json!({"due_at": "2025-12-31T23:00:00Z", "claim_token": new["claim_token"]}),
    )
    .await;
    assert_conflict(status, &body, "due_at_mismatch", "SCHEDULE_DUE_AT_MISMATCH");
    // The same instant in another offset is the same due_at.
    let (status, body) = advance(
        &app,
        &tenant,
        id,
        json!({"due_at": "2025-12-31T19:00:00-05:00", "claim_token": new["claim_token"]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        app.scalar("SELECT claim_epoch FROM workflow_schedules")
            .await,
        2
    );
}

async fn advance_moves_on_once_and_reports_already_advanced(backend: Backend) {
    let app = spawn_app(backend).await;
    let (tenant, _, schedule) = setup(&app).await;
    let id = schedule["schedule_id"].as_str().unwrap();
    // Advancing without a claim.
    let (status, body) = advance(
        &app,
        &tenant,
        id,
        json!({"due_at": schedule["due_at"], "claim_token": "clm_x"}),
    )
    .await;
    assert_conflict(status, &body, "claim_required", "SCHEDULE_CLAIM_REQUIRED");
    let (_, claimed) = claim(&app, &tenant, json!({})).await;
    let item = claimed["data"]["items"][0].clone();
    let body = json!({"due_at": item["due_at"], "claim_token": item["claim_token"],
        "outcome": "failed", "external_run_id": "run-42", "note": "tool timed out"});
    let (status, first) = advance(&app, &tenant, id, body.clone()).await;
    assert_eq!(status, 200, "{first}");
    assert_success_envelope(&first);
    assert_eq!(first["data"]["already_advanced"], json!(false));
    let moved = &first["data"]["schedule"];
    assert_eq!(moved["last_outcome"], json!("failed"));
    assert_eq!(moved["last_external_run_id"], json!("run-42"));
    assert_eq!(moved["claimed"], json!(false));
    // Missed hourly occurrences since 2026-01-01 are coalesced: the next one is in the
    // future, on the hour, within the next hour.
    let next = chrono::DateTime::parse_from_rfc3339(moved["due_at"].as_str().unwrap()).unwrap();
    let now = chrono::Utc::now();
    assert!(
        next > now && next.timestamp() - now.timestamp() <= 3600,
        "{next}"
    );
    assert_eq!(next.timestamp() % 3600, 0, "{next}");
    // The same advance again: already_advanced, nothing changes.
    let (status, again) = advance(&app, &tenant, id, body.clone()).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["data"]["already_advanced"], json!(true));
    assert_eq!(again["data"]["schedule"]["due_at"], moved["due_at"]);
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM workflow_schedule_runs")
            .await,
        1
    );
    // The next occurrence is not due yet.
    let (_, empty) = claim(&app, &tenant, json!({})).await;
    assert_eq!(empty["data"]["items"], json!([]));
    // Bad outcome → 400; another budget cannot see the schedule → 404.
    let (status, body) = advance(
        &app,
        &tenant,
        id,
        json!({"due_at": item["due_at"], "claim_token": "x", "outcome": "great"}),
    )
    .await;
    assert_bad_request(status, &body);
    let other = tenant_of_other_account(&app).await;
    let (status, body) = advance(
        &app,
        &other,
        id,
        json!({"due_at": item["due_at"], "claim_token": item["claim_token"]}),
    )
    .await;
    assert_envelope(status, &body, 404, "SCHEDULE_NOT_FOUND");
}

async fn release_returns_the_occurrence_without_moving_it(backend: Backend) {
    let app = spawn_app(backend).await;
    let (tenant, _, schedule) = setup(&app).await;
    let id = schedule["schedule_id"].as_str().unwrap();
    let (_, claimed) = claim(&app, &tenant, json!({})).await;
    let item = claimed["data"]["items"][0].clone();
    let (status, released) = release(&app, &tenant, id, json!({"due_at": item["due_at"], "claim_token": item["claim_token"], "note": "worker_shutdown"})).await;
    assert_eq!(status, 200, "{released}");
    assert_success_envelope(&released);
    assert_eq!(released["data"]["released"], json!(true));
    assert_eq!(released["data"]["schedule"]["due_at"], item["due_at"]);
    assert_eq!(released["data"]["schedule"]["claimed"], json!(false));
    assert_eq!(
        released["data"]["schedule"]["last_note"],
        json!("worker_shutdown")
    );
    // Releasing again: there is no claim, and release says so as advance does.
    let again = json!({"due_at": item["due_at"], "claim_token": item["claim_token"]});
    let (status, body) = release(&app, &tenant, id, again.clone()).await;
    assert_conflict(status, &body, "claim_required", "SCHEDULE_CLAIM_REQUIRED");
    let (status, body) = advance(&app, &tenant, id, again).await;
    assert_conflict(status, &body, "claim_required", "SCHEDULE_CLAIM_REQUIRED");
    // Back in the queue at the same due_at.
    let (_, again) = claim(&app, &tenant, json!({})).await;
    assert_eq!(again["data"]["items"][0]["due_at"], item["due_at"]);
    assert_ne!(
        again["data"]["items"][0]["claim_token"],
        item["claim_token"]
    );
}

async fn claim_request_id_is_idempotent_and_empty_queue_is_200(backend: Backend) {
    let app = spawn_app(backend).await;
    let (tenant, workflow, _) = setup(&app).await;
    schedule(
        &app,
        &tenant,
        &workflow,
        json!({"name": "Second", "start_at": "2026-01-01T00:30:00Z"}),
    )
    .await;
    let (_, first) = claim(&app, &tenant, json!({"limit": 1, "request_id": "retry-me"})).await;
    assert_eq!(first["data"]["count"], json!(1));
    let (_, retried) = claim(&app, &tenant, json!({"limit": 1, "request_id": "retry-me"})).await;
    assert_eq!(
        retried["data"], first["data"],
        "a retry returns the same claim"
    );
    // A new request_id gets the other schedule, then the queue is empty.
    let (_, second) = claim(&app, &tenant, json!({"limit": 10, "request_id": "next"})).await;
    assert_eq!(second["data"]["count"], json!(1));
    assert_ne!(
        second["data"]["items"][0]["schedule_id"],
        first["data"]["items"][0]["schedule_id"]
    );
    let (status, empty) = claim(&app, &tenant, json!({})).await;
    assert_eq!(status, 200, "{empty}");
    assert_success_envelope(&empty);
    assert_eq!(empty["data"]["items"], json!([]));
    assert_eq!(empty["data"]["count"], json!(0));
    assert_eq!(empty["data"]["claim_lease_seconds"], json!(900));
    // Another budget's queue is separate (and empty).
    let other = tenant_of_other_account(&app).await;
    let (_, theirs) = claim(&app, &other, json!({"request_id": "retry-me"})).await;
    assert_eq!(theirs["data"]["items"], json!([]));
    // Only claims that leased something were kept; once pruned, a retry claims afresh
    // (and finds nothing: both occurrences are still leased).
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM workflow_schedule_claims")
            .await,
        2
    );
    let pruned = agentpmt_server::workflows::schedules::prune_claim_records(
        &app.state.db,
        agentpmt_server::time::now_ms() + 1,
    )
    .await
    .unwrap();
    assert_eq!(pruned, 2);
    let (_, afresh) = claim(&app, &tenant, json!({"limit": 1, "request_id": "retry-me"})).await;
    assert_eq!(afresh["data"]["items"], json!([]));
}

async fn due_lists_and_bad_input_is_400(backend: Backend) {
    let app = spawn_app(backend).await;
    let (tenant, workflow, _) = setup(&app).await;
    schedule(
        &app,
        &tenant,
        &workflow,
        json!({"name": "Later", "start_at": "2999-01-01T00:00:00Z"}),
    )
    .await;
    let (status, due) = bearer_call(
        &app,
        &tenant,
        Method::GET,
        "/api/external/workflow-schedules/due?limit=50",
        None,
    )
    .await;
    assert_eq!(status, 200, "{due}");
    assert_eq!(
        due["data"]["count"],
        json!(1),
        "only the past occurrence is due"
    );
    assert_eq!(due["data"]["items"][0]["claimed"], json!(false));
    let (_, early) = bearer_call(
        &app,
        &tenant,
        Method::GET,
        "/api/external/workflow-schedules/due?as_of=2025-01-01T00:00:00Z",
        None,
    )
    .await;
    assert_eq!(early["data"]["count"], json!(0));
    // Due is read-only: it claims nothing.
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM workflow_schedules WHERE claim_token IS NOT NULL")
            .await,
        0
    );
    // A leased item is listed as leased, until its lease's end.
    let (_, claimed) = claim(&app, &tenant, json!({"lease_seconds": 600})).await;
    let lease = claimed["data"]["items"][0].clone();
    let (_, leased) = bearer_call(
        &app,
        &tenant,
        Method::GET,
        "/api/external/workflow-schedules/due",
        None,
    )
    .await;
    let listed = &leased["data"]["items"][0];
    assert_eq!(listed["schedule_id"], lease["schedule_id"], "{leased}");
    assert_eq!(listed["claimed"], json!(true), "{leased}");
    assert_eq!(
        listed["claim_expires_at"], lease["claim_expires_at"],
        "{leased}"
    );
    let (_, released) = release(
        &app,
        &tenant,
        lease["schedule_id"].as_str().unwrap(),
        json!({"due_at": lease["due_at"], "claim_token": lease["claim_token"]}),
    )
    .await;
    assert_eq!(released["data"]["released"], json!(true), "{released}");
    for query in [
        "limit=0",
        "limit=1000000",
        "limit=x",
        "as_of=tomorrow",
        "as_of=2999-01-01T00:00:00Z",
    ] {
        let (status, body) = bearer_call(
            &app,
            &tenant,
            Method::GET,
            &format!("/api/external/workflow-schedules/due?{query}"),
            None,
        )
        .await;
        assert_bad_request(status, &body);
    }
    for body in [
        json!({"limit": 0}),
        json!({"limit": 1000000000}),
        json!({"limit": "one"}),
        json!({"lease_seconds": 0}),
        json!({"lease_seconds": 100000000}),
        json!({"as_of": "not a time"}),
        json!({"request_id": ""}),
        json!({"unknown": 1}),
        json!([1, 2]),
    ] {
        let (status, answer) = claim(&app, &tenant, body.clone()).await;
        let details = assert_bad_request(status, &answer);
        assert!(details["checklist"].is_array(), "{body}");
    }
    let (status, body) = advance(
        &app,
        &tenant,
        "sch_x",
        json!({"due_at": "garbage", "claim_token": "t"}),
    )
    .await;
    assert_bad_request(status, &body);
    let (status, body) = advance(&app, &tenant, "sch_x", json!({"claim_token": "t"})).await;
    assert_bad_request(status, &body);
    let (status, body) = advance(
        &app,
        &tenant,
        "sch_missing",
        json!({"due_at": "2026-01-01T00:00:00Z", "claim_token": "t"}),
    )
    .await;
    assert_envelope(status, &body, 404, "SCHEDULE_NOT_FOUND");
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM workflow_schedules WHERE claim_token IS NOT NULL")
            .await,
        0
    );
}

async fn cron_schedules_advance_in_their_time_zone(backend: Backend) {
    use agentpmt_server::workflows::recurrence::Schedule;
    let app = spawn_app(backend).await;
    let workflow = create_workflow(&app, "morning", json!({}), true).await;
    let tenant = tenant(&app).await;
    let created = schedule(
        &app,
        &tenant,
        &workflow,
        json!({"recurrence": {"cron": "0 9 * * *"}, "time_zone": "America/New_York",
               "start_at": "2026-03-07T14:00:00Z"}),
    )
    .await;
    assert_eq!(created["recurrence"]["type"], json!("cron"));
    assert_eq!(created["time_zone"], json!("America/New_York"));
    let id = created["schedule_id"].as_str().unwrap();
    let (_, claimed) = claim(&app, &tenant, json!({})).await;
    let item = claimed["data"]["items"][0].clone();
    assert_eq!(item["recurrence"]["cron"], json!("0 9 * * *"));
    let (status, advanced) = advance(
        &app,
        &tenant,
        id,
        json!({"due_at": item["due_at"], "claim_token": item["claim_token"]}),
    )
    .await;
    assert_eq!(status, 200, "{advanced}");
    let next = chrono::DateTime::parse_from_rfc3339(
        advanced["data"]["schedule"]["due_at"].as_str().unwrap(),
    )
    .unwrap()
    .with_timezone(&chrono_tz::America::New_York);
    use chrono::Timelike;
    assert_eq!(
        (next.hour(), next.minute()),
        (9, 0),
        "09:00 New York time: {next}"
    );
    let expected = Schedule::new(Some("0 9 * * *"), None, "America/New_York")
        .unwrap()
        .next_after(agentpmt_server::time::now_ms() - 5_000)
        .unwrap();
    assert_eq!(next.timestamp_millis(), expected);
    // Bad recurrences are refused at creation.
    for (recurrence, zone) in [
        (json!({"cron": "0 25 * * *"}), "UTC"),
        (json!({"cron": "0 9 * * *", "interval_seconds": 60}), "UTC"),
        (json!({}), "UTC"),
        (json!({"interval_seconds": 1}), "UTC"),
        (json!({"cron": "0 9 * * *"}), "Atlantis/Lost"),
    ] {
        let (status, body) = app
            .admin(
                Method::POST,
                &format!("/api/admin/budgets/{}/workflow-schedules", tenant.budget_id),
                Some(&json!({"workflow_id": workflow, "name": "x", "recurrence": recurrence, "time_zone": zone})),
            )
            .await;
        assert_envelope(status, &body, 422, "VALIDATION_ERROR");
    }
}

async fn operator_schedule_changes(backend: Backend) {
    let app = spawn_app(backend).await;
    let (tenant, _, schedule) = setup(&app).await;
    let id = schedule["schedule_id"].as_str().unwrap();
    let (_, claimed) = claim(&app, &tenant, json!({})).await;
    let item = claimed["data"]["items"][0].clone();
    // Pausing keeps the occurrence out of the queue.
    let (status, paused) = app
        .admin(
            Method::PATCH,
            &format!("/api/admin/workflow-schedules/{id}"),
            Some(&json!({"status": "paused", "prompt": "New prompt"})),
        )
        .await;
    assert_eq!(status, 200, "{paused}");
    assert_eq!(paused["schedule"]["status"], json!("paused"));
    assert_eq!(paused["schedule"]["prompt"], json!("New prompt"));
    // Moving the due time drops the claim: the holder now mismatches.
    let (status, moved) = app
        .admin(
            Method::PATCH,
            &format!("/api/admin/workflow-schedules/{id}"),
            Some(&json!({"status": "active", "due_at": "2026-02-01T00:00:00Z"})),
        )
        .await;
    assert_eq!(status, 200, "{moved}");
    assert_eq!(moved["schedule"]["claimed"], json!(false));
    let (status, body) = advance(
        &app,
        &tenant,
        id,
        json!({"due_at": item["due_at"], "claim_token": item["claim_token"]}),
    )
    .await;
    assert_conflict(status, &body, "due_at_mismatch", "SCHEDULE_DUE_AT_MISMATCH");
    let (status, body) = advance(
        &app,
        &tenant,
        id,
        json!({"due_at": "2026-02-01T00:00:00Z", "claim_token": item["claim_token"]}),
    )
    .await;
    assert_conflict(status, &body, "claim_required", "SCHEDULE_CLAIM_REQUIRED");
    // Unknown budget / workflow at creation.
    let (status, body) = app
        .admin(
            Method::POST,
            "/api/admin/budgets/bud_nope/workflow-schedules",
            Some(&json!({"workflow_id": "digest", "name": "x", "recurrence": {"interval_seconds": 60}})),
        )
        .await;
    assert_envelope(status, &body, 404, "NOT_FOUND");
    let (status, body) = app
        .admin(
            Method::POST,
            &format!("/api/admin/budgets/{}/workflow-schedules", tenant.budget_id),
            Some(&json!({"workflow_id": "nope", "name": "x", "recurrence": {"interval_seconds": 60}})),
        )
        .await;
    assert_envelope(status, &body, 404, "WORKFLOW_NOT_FOUND");
}

async fn concurrent_retries_of_one_claim_return_it(backend: Backend) {
    let app = spawn_app(backend).await;
    let (tenant, workflow, _) = setup(&app).await;
    schedule(&app, &tenant, &workflow, json!({"name": "Second"})).await;
    let app = std::sync::Arc::new(app);
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let (app, tenant) = (app.clone(), tenant.clone());
        tasks.push(tokio::spawn(async move {
            claim(
                &app,
                &tenant,
                json!({"limit": 1, "request_id": "one-claim"}),
            )
            .await
        }));
    }
    let mut answers = Vec::new();
    for task in tasks {
        let (status, body) = task.await.unwrap();
        assert_eq!(status, 200, "{body}");
        answers.push(body["data"].clone());
    }
    assert_eq!(answers[0]["count"], json!(1), "{:?}", answers[0]);
    assert!(answers.iter().all(|a| *a == answers[0]), "{answers:?}");
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM workflow_schedules WHERE claim_token IS NOT NULL")
            .await,
        1,
        "the retries leased nothing more"
    );
}

async fn account_admin_input_is_checked(backend: Backend) {
    let app = spawn_app(backend).await;
    let t = tenant(&app).await;
    let budgets = format!("/api/admin/accounts/{}/budgets", t.account_id);
    for (body, field) in [
        (json!({"name": "x", "cap_credits": -1}), "cap_credits"),
        (
            json!({"name": "x", "cap_credits": 2_000_000_000i64}),
            "cap_credits",
        ),
        (json!({"name": "", "cap_credits": 1}), "name"),
        (
            json!({"name": "x", "cap_credits": 1, "wallet_address": "0x123"}),
            "wallet_address",
        ),
    ] {
        let (status, answer) = app.admin(Method::POST, &budgets, Some(&body)).await;
        assert_envelope(status, &answer, 422, "VALIDATION_ERROR");
        assert_eq!(
            answer["detail"][0]["loc"],
            json!(["body", field]),
            "{answer}"
        );
    }
    let (status, answer) = app
        .admin(
            Method::POST,
            "/api/admin/accounts",
            Some(&json!({"name": " "})),
        )
        .await;
    assert_envelope(status, &answer, 422, "VALIDATION_ERROR");
    for path in [
        "/api/admin/accounts/acc_nope/budgets",
        "/api/admin/accounts/acc_nope/api-keys",
    ] {
        let (status, answer) = app
            .admin(
                Method::POST,
                path,
                Some(&json!({"name": "x", "cap_credits": 1})),
            )
            .await;
        if path.ends_with("api-keys") {
            // {name, cap_credits} is not an API-key body: refused before the lookup.
            assert_envelope(status, &answer, 422, "VALIDATION_ERROR");
            let (status, answer) = app.admin(Method::POST, path, Some(&json!({}))).await;
            assert_envelope(status, &answer, 404, "NOT_FOUND");
        } else {
            assert_envelope(status, &answer, 404, "NOT_FOUND");
        }
    }
    for path in [
        "/api/admin/api-keys/key_nope/revoke",
        "/api/admin/budgets/bud_nope/revoke",
    ] {
        let (status, answer) = app.admin(Method::POST, path, None).await;
        assert_envelope(status, &answer, 404, "NOT_FOUND");
    }
    // A budget drawing from a wallet; revoking twice keeps the first time.
    let wallet = agentpmt_protocol::PrivateKey::random().address();
    let (status, created) = app
        .admin(
            Method::POST,
            &budgets,
            Some(&json!({"name": "Wallet budget", "cap_credits": 0,
                         "wallet_address": wallet.to_checksum()})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["budget"]["draws_from"], json!("wallet"));
    assert_eq!(
        created["budget"]["wallet_address"],
        json!(wallet.to_string())
    );
    assert!(created["budget_key"]
        .as_str()
        .unwrap()
        .starts_with("apmt_bk_"));
    let revoke = format!(
        "/api/admin/budgets/{}/revoke",
        created["budget"]["budget_id"].as_str().unwrap()
    );
    let (_, first) = app.admin(Method::POST, &revoke, None).await;
    let (_, second) = app.admin(Method::POST, &revoke, None).await;
    assert_eq!(first["revoked_at"], second["revoked_at"]);
    // The operator API needs the admin token.
    let response = app
        .http
        .post(app.url("/api/admin/accounts"))
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let answer: Value = response.json().await.unwrap();
    assert_envelope(status, &answer, 401, "ADMIN_UNAUTHORIZED");
}
