//! The operator console, over HTTP and in a real headless Chromium (Debian's `chromium` and
//! `chromium-driver`, driven through WebDriver with fantoccini; scripts/test installs them).
//!
//! Without chromium or chromedriver the browser tests are skipped with a loud warning,
//! except under `AGENTPMT_REQUIRE_POSTGRES=1` (CI), where they fail. `AGENTPMT_CHROMIUM`
//! and `AGENTPMT_CHROMEDRIVER` name other executables.

use crate::backend_tests;
use crate::helpers::{spawn_app_with, AppOptions, Backend, TestApp, ADMIN_TOKEN};
use crate::jobs::Agent;
use crate::schedules::{bearer_call, tenant};
use agentpmt_protocol::PrivateKey;
use fantoccini::{Client, ClientBuilder, Locator};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Duration;

backend_tests!(
    console_is_off_without_an_admin_token,
    session_cookie_flags_and_security_headers,
    wrong_tokens_are_refused_then_rate_limited,
    forms_without_the_csrf_token_are_refused,
    the_credit_form_posts_once_when_sent_twice,
    signed_out_sessions_are_refused,
    accounts_and_api_keys_are_created_and_keys_shown_once,
    workflows_are_drafted_published_and_searched,
    schedules_are_created_paused_and_resumed,
    usage_per_product_action_and_wallet,
    budgets_are_created_and_their_keys_shown_once,
    products_are_edited_in_place,
    vendors_are_created_without_showing_their_secret,
    help_tickets_are_closed_and_reopened,
    browser_operator_flows,
    browser_security,
    browser_creates_a_budget_and_a_schedule,
);

// ---- HTTP ----------------------------------------------------------------------------

/// A client that does not follow redirects (the sign-in's `Set-Cookie` is on the 303).
fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn set_cookies(response: &reqwest::Response) -> Vec<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

fn cookie_value(set_cookie: &[String], name: &str) -> Option<String> {
    set_cookie.iter().find_map(|c| {
        c.split(';')
            .next()?
            .strip_prefix(&format!("{name}="))
            .map(str::to_owned)
    })
}

/// The value of the first `name="csrf"` field of a page.
fn csrf_of(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    html[at..at + 64].to_owned()
}

/// An operator signed in over HTTP: the session cookie and the page's CSRF token.
struct Signed {
    http: reqwest::Client,
    cookie: String,
    csrf: String,
    set_cookie: Vec<String>,
}

impl Signed {
    async fn get(&self, app: &TestApp, path: &str) -> (StatusCode, String) {
        let r = self
            .http
            .get(app.url(path))
            .header("cookie", format!("agentpmt_console={}", self.cookie))
            .send()
            .await
            .unwrap();
        (r.status(), r.text().await.unwrap())
    }

    async fn post(&self, app: &TestApp, path: &str, form: &[(&str, &str)]) -> (StatusCode, String) {
        let r = self
            .http
            .post(app.url(path))
            .header("cookie", format!("agentpmt_console={}", self.cookie))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(serde_urlencoded::to_string(form).unwrap())
            .send()
            .await
            .unwrap();
        (r.status(), r.text().await.unwrap())
    }
}

/// Posts the sign-in form with `token`, as a browser would (double-submit cookie included).
async fn post_sign_in(app: &TestApp, http: &reqwest::Client, token: &str) -> reqwest::Response {
    let form = http.get(app.url("/console/login")).send().await.unwrap();
    assert_eq!(form.status(), StatusCode::OK);
    let pre = cookie_value(&set_cookies(&form), "agentpmt_console_signin").unwrap();
    let html = form.text().await.unwrap();
    assert_eq!(csrf_of(&html), pre);
    http.post(app.url("/console/login"))
        .header("cookie", format!("agentpmt_console_signin={pre}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(serde_urlencoded::to_string([("csrf", pre.as_str()), ("token", token)]).unwrap())
        .send()
        .await
        .unwrap()
}

async fn sign_in_http(app: &TestApp) -> Signed {
    let http = no_redirects();
    let response = post_sign_in(app, &http, ADMIN_TOKEN).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let set_cookie = set_cookies(&response);
    let cookie = cookie_value(&set_cookie, "agentpmt_console").expect("a session cookie");
    let mut signed = Signed {
        http,
        cookie,
        csrf: String::new(),
        set_cookie,
    };
    let (status, html) = signed.get(app, "/console").await;
    assert_eq!(status, StatusCode::OK, "{html}");
    signed.csrf = csrf_of(&html);
    signed
}

async fn console_is_off_without_an_admin_token(backend: Backend) {
    let app = spawn_app_with(
        backend,
        AppOptions {
            admin_token: false,
            ..AppOptions::default()
        },
    )
    .await;
    for path in ["/console", "/console/login", "/console/wallets"] {
        let r = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
    }
}

async fn session_cookie_flags_and_security_headers(backend: Backend) {
    let app = spawn_app_with(backend, AppOptions::default()).await;
    let signed = sign_in_http(&app).await;
    let session = signed
        .set_cookie
        .iter()
        .find(|c| c.starts_with("agentpmt_console="))
        .unwrap();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/console"] {
        assert!(session.contains(flag), "{session}");
    }
    assert!(!session.contains("Secure"), "plain http: {session}");
    // 256 random bits, and the server keeps only their digest: no table or log holds it.
    assert_eq!(signed.cookie.len(), 64);
    for path in [
        "/console",
        "/console/login",
        "/console/wallets",
        "/console/tools",
    ] {
        let r = signed
            .http
            .get(app.url(path))
            .header("cookie", format!("agentpmt_console={}", signed.cookie))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        let h = r.headers();
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'none'"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(
            !csp.contains("script-src"),
            "no script source at all: {csp}"
        );
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert_eq!(h["x-frame-options"], "DENY");
        assert_eq!(h["cache-control"], "no-store");
        assert_eq!(h["x-content-type-options"], "nosniff");
        let html = r.text().await.unwrap();
        assert!(!html.contains("<script"), "{path} carries no script");
        assert!(!html.contains(ADMIN_TOKEN));
    }

    // Served over https (public URL), the cookies are Secure too.
    let https = spawn_app_with(
        backend,
        AppOptions::configured(|c| c.public_url = Some("https://console.example".into())),
    )
    .await;
    let http = no_redirects();
    let response = post_sign_in(&https, &http, ADMIN_TOKEN).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let session = set_cookies(&response)
        .into_iter()
        .find(|c| c.starts_with("agentpmt_console="))
        .unwrap();
    assert!(session.contains("; Secure"), "{session}");
    assert!(session.contains("HttpOnly") && session.contains("SameSite=Strict"));
}

async fn wrong_tokens_are_refused_then_rate_limited(backend: Backend) {
    let app = spawn_app_with(backend, AppOptions::default()).await;
    let http = no_redirects();
    for _ in 0..5 {
        let r = post_sign_in(&app, &http, "not-the-admin-token-at-all").await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(cookie_value(&set_cookies(&r), "agentpmt_console").is_none());
        let html = r.text().await.unwrap();
        assert!(html.contains("That is not the admin token."), "{html}");
    }
    // The address is out of attempts: even the right token waits now.
    let r = post_sign_in(&app, &http, ADMIN_TOKEN).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().contains_key("retry-after"));
    assert!(cookie_value(&set_cookies(&r), "agentpmt_console").is_none());
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("Too many sign-in attempts"));
    // A client-chosen X-Forwarded-For does not buy new attempts (no trusted proxy).
    let form = http.get(app.url("/console/login")).send().await.unwrap();
    let pre = cookie_value(&set_cookies(&form), "agentpmt_console_signin").unwrap();
    let r = http
        .post(app.url("/console/login"))
        .header("cookie", format!("agentpmt_console_signin={pre}"))
        .header("x-forwarded-for", "198.51.100.9")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf={pre}&token={ADMIN_TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    // The sign-in form without its double-submit token is refused before the token is read.
    let r = http
        .post(app.url("/console/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={ADMIN_TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
}

async fn forms_without_the_csrf_token_are_refused(backend: Backend) {
    let app = spawn_app_with(backend, AppOptions::default()).await;
    let signed = sign_in_http(&app).await;
    let wallet = PrivateKey::random().address().to_string();
    let path = format!("/console/wallets/{wallet}/credits");
    let forged = [
        vec![("amount_credits", "500"), ("reason", "forged")],
        vec![
            ("csrf", ""),
            ("amount_credits", "500"),
            ("reason", "forged"),
        ],
        vec![
            (
                "csrf",
                "0000000000000000000000000000000000000000000000000000000000000000",
            ),
            ("amount_credits", "500"),
            ("reason", "forged"),
        ],
    ];
    for form in &forged {
        let (status, html) = signed.post(&app, &path, form).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{html}");
        assert!(html.contains("CSRF"), "{html}");
    }
    // Sign-out without the token does not sign out.
    let (status, _) = signed.post(&app, "/console/logout", &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM ledger_entries").await,
        0,
        "no forged form posted anything"
    );
    // The same form with the session's token posts.
    let csrf = signed.csrf.clone();
    let (status, html) = signed
        .post(
            &app,
            &path,
            &[
                ("csrf", &csrf),
                ("amount_credits", "500"),
                ("reason", "real"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains("Posted 500 credits"), "{html}");
    // Another session's token is not this session's.
    let other = sign_in_http(&app).await;
    let (status, _) = other
        .post(
            &app,
            &path,
            &[("csrf", &csrf), ("amount_credits", "1"), ("reason", "x")],
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

async fn the_credit_form_posts_once_when_sent_twice(backend: Backend) {
    let app = spawn_app_with(backend, AppOptions::default()).await;
    let signed = sign_in_http(&app).await;
    let wallet = PrivateKey::random().address().to_string();
    let (_, html) = signed
        .get(&app, &format!("/console/wallets/{wallet}"))
        .await;
    let at = html.find("name=\"idempotency_key\" value=\"").unwrap() + 30;
    let key = html[at..at + 64].to_owned();
    let path = format!("/console/wallets/{wallet}/credits");
    let form = [
        ("csrf", signed.csrf.as_str()),
        ("idempotency_key", key.as_str()),
        ("amount_credits", "700"),
        ("reason", "welcome bonus"),
    ];
    let (status, first) = signed.post(&app, &path, &form).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert!(first.contains("Posted 700 credits: balance 700 credits."));
    let (status, again) = signed.post(&app, &path, &form).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert!(again.contains("Already posted"), "{again}");
    let (_, view) = app
        .admin(Method::GET, &format!("/api/admin/wallets/{wallet}"), None)
        .await;
    assert_eq!(view["balance_credits"], json!(700));
    assert_eq!(view["ledger_entry_count"], json!(1));
    // A removal larger than the balance is refused with the operator API's error.
    let (status, html) = signed
        .post(
            &app,
            &path,
            &[
                ("csrf", signed.csrf.as_str()),
                ("amount_credits", "-701"),
                ("reason", "too much"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(html.contains("INSUFFICIENT_CREDITS"), "{html}");
    assert_eq!(app.scalar("SELECT COUNT(*) FROM ledger_entries").await, 1);
}

async fn signed_out_sessions_are_refused(backend: Backend) {
    let app = spawn_app_with(backend, AppOptions::default()).await;
    let signed = sign_in_http(&app).await;
    let csrf = signed.csrf.clone();
    let (status, _) = signed
        .post(&app, "/console/logout", &[("csrf", &csrf)])
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (status, _) = signed.get(&app, "/console").await;
    assert_eq!(status, StatusCode::SEE_OTHER, "redirected to the sign-in");
    let wallet = PrivateKey::random().address().to_string();
    let (status, _) = signed
        .post(
            &app,
            &format!("/console/wallets/{wallet}/credits"),
            &[("csrf", &csrf), ("amount_credits", "5"), ("reason", "late")],
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // A made-up session id is no session either.
    let fake = Signed {
        cookie: "ab".repeat(32),
        ..signed
    };
    let (status, _) = fake.get(&app, "/console/wallets").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(app.scalar("SELECT COUNT(*) FROM ledger_entries").await, 0);
}

async fn accounts_and_api_keys_are_created_and_keys_shown_once(backend: Backend) {
    let app = spawn_app_with(backend, AppOptions::default()).await;
    let signed = sign_in_http(&app).await;
    let csrf = signed.csrf.clone();
    let (status, html) = signed
        .post(
            &app,
            "/console/accounts",
            &[("csrf", &csrf), ("name", "Acme")],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{html}");
    let at = html.find("Account acc_").unwrap() + 8;
    let account = html[at..at + 28].split(' ').next().unwrap().to_owned();
    let (status, html) = signed
        .post(
            &app,
            "/console/api-keys",
            &[
                ("csrf", &csrf),
                ("account_id", &account),
                ("label", "worker"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{html}");
    let at = html.find("<code class=\"secret\">").expect("the new key") + 20;
    let key = html[at..].split('<').next().unwrap().to_owned();
    assert!(key.len() > 40, "{key}");
    // The server keeps only its digest ...
    let stored = app.strings("SELECT key_hash FROM api_keys").await;
    assert_eq!(stored.len(), 1);
    assert_ne!(stored[0], key, "only its digest is kept");
    // ... and is never shown again.
    let (_, again) = signed.get(&app, "/console/keys").await;
    assert!(again.contains("worker") && again.contains(&account));
    assert!(!again.contains(&key));
    // An unknown account is the operator API's 404.
    let (_, html) = signed
        .post(
            &app,
            "/console/api-keys",
            &[("csrf", &csrf), ("account_id", "acc_nope")],
        )
        .await;
    assert!(html.contains("NOT_FOUND"), "{html}");
}

/// The text between the first `start` after `from` and the next `end`.
fn between(html: &str, start: &str, end: &str) -> String {
    let at = html
        .find(start)
        .unwrap_or_else(|| panic!("no {start:?} in {html}"))
        + start.len();
    html[at..].split(end).next().unwrap().to_owned()
}

/// A CSRF-less copy of `form` is refused and changes nothing; the page says why.
async fn refused_without_csrf(app: &TestApp, signed: &Signed, path: &str, form: &[(&str, &str)]) {
    let forged: Vec<_> = form.iter().filter(|(k, _)| *k != "csrf").copied().collect();
    let (status, html) = signed.post(app, path, &forged).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {html}");
    assert!(html.contains("CSRF"), "{html}");
}

async fn workflows_are_drafted_published_and_searched(backend: Backend) {
    let app = spawn_app_with(backend, AppOptions::default()).await;
    let signed = sign_in_http(&app).await;
    let graph = crate::workflows::sample_graph().to_string();
    let form = [
        ("csrf", signed.csrf.as_str()),
        ("slug", "console-digest"),
        ("name", "Console <b>digest</b>"),
        ("description", "Made in the console"),
        ("publisher", "Ops"),
        ("categories", "research, ops"),
        ("industry_tags", ""),
        ("visibility", "public"),
        ("graph", graph.as_str()),
    ];
    refused_without_csrf(&app, &signed, "/console/workflows", &form).await;
    assert_eq!(app.scalar("SELECT COUNT(*) FROM workflows").await, 0);
    let (status, html) = signed.post(&app, "/console/workflows", &form).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(
        html.contains("Console &lt;b&gt;digest&lt;/b&gt;"),
        "escaped: {html}"
    );
    let id = between(&html, "Workflow console-digest (", ")");
    // The operator API sees the same draft.
    let (status, view) = app
        .admin(Method::GET, "/api/admin/workflows/console-digest", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["workflow"]["workflow_id"], json!(id));
    assert_eq!(view["workflow"]["status"], json!("draft"));
    assert_eq!(view["workflow"]["categories"], json!(["research", "ops"]));
    // An invalid graph is the operator API's 422, and nothing is stored.
    let mut bad = form;
    bad[1] = ("slug", "broken");
    bad[8] = ("graph", "{\"nodes\": [], \"edges\": []}");
    let (status, html) = signed.post(&app, "/console/workflows", &bad).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{html}");
    assert!(html.contains("VALIDATION_ERROR"), "{html}");
    assert_eq!(app.scalar("SELECT COUNT(*) FROM workflows").await, 1);

    // Publish: refused without the token, then published.
    let publish = format!("/console/workflows/{id}/publish");
    refused_without_csrf(&app, &signed, &publish, &[]).await;
    let (status, html) = signed.post(&app, &publish, &[("csrf", &signed.csrf)]).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(
        html.contains("Workflow console-digest is published."),
        "{html}"
    );
    let (_, view) = app
        .admin(Method::GET, &format!("/api/admin/workflows/{id}"), None)
        .await;
    assert_eq!(view["workflow"]["status"], json!("published"));
    let (status, html) = signed
        .post(
            &app,
            "/console/workflows/nope/publish",
            &[("csrf", &signed.csrf)],
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{html}");

    // Search: by name, and by id; a search of LIKE wildcards matches literally.
    let (_, html) = signed.get(&app, "/console/workflows?q=DIGEST").await;
    assert!(html.contains(&format!("id=\"workflow-{id}\"")), "{html}");
    let (_, html) = signed
        .get(&app, &format!("/console/workflows?q={id}"))
        .await;
    assert!(html.contains(&format!("id=\"workflow-{id}\"")), "{html}");
    let (_, html) = signed.get(&app, "/console/workflows?q=%25").await;
    assert!(html.contains("No workflow matches."), "{html}");
}

/// A schedule as the operator API shows it.
async fn schedule_view(app: &TestApp, id: &str) -> Value {
    let (status, view) = app
        .admin(
            Method::GET,
            &format!("/api/admin/workflow-schedules/{id}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{view}");
    view["schedule"].clone()
}

async fn schedules_are_created_paused_and_resumed(backend: Backend) {
    let app = spawn_app_with(backend, AppOptions::default()).await;
    let t = tenant(&app).await;
    crate::workflows::create_workflow(&app, "nightly-digest", json!({}), true).await;
    crate::workflows::create_workflow(&app, "still-draft", json!({}), false).await;
    let signed = sign_in_http(&app).await;
    let form = [
        ("csrf", signed.csrf.as_str()),
        ("budget_id", t.budget_id.as_str()),
        ("workflow_id", "nightly-digest"),
        ("name", "Nightly digest"),
        ("prompt", "Summarize yesterday"),
        ("interval_seconds", "3600"),
        ("cron", ""),
        ("time_zone", "UTC"),
        ("start_at", "2026-01-01T00:00:00Z"),
    ];
    refused_without_csrf(&app, &signed, "/console/schedules", &form).await;
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM workflow_schedules").await,
        0
    );
    let (status, html) = signed.post(&app, "/console/schedules", &form).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    let id = between(&html, "Schedule Nightly digest (", ")");
    assert!(id.starts_with("sch_"), "{id}");
    let view = schedule_view(&app, &id).await;
    assert_eq!(view["budget_id"], json!(t.budget_id));
    assert_eq!(view["status"], json!("active"));
    assert_eq!(view["recurrence"]["interval_seconds"], json!(3600));
    assert_eq!(view["due_at"], json!("2026-01-01T00:00:00.000Z"));
    // The budget's bearer sees it due.
    let (status, due) = bearer_call(
        &app,
        &t,
        Method::GET,
        "/api/external/workflow-schedules/due",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{due}");
    assert!(due.to_string().contains(&id), "{due}");

    // A draft workflow cannot be scheduled, nor an unknown budget: the operator API's errors.
    let mut draft = form;
    draft[2] = ("workflow_id", "still-draft");
    let (status, html) = signed.post(&app, "/console/schedules", &draft).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(html.contains("WORKFLOW_NOT_FOUND"), "{html}");
    let mut unknown = form;
    unknown[1] = ("budget_id", "bud_nope");
    let (_, html) = signed.post(&app, "/console/schedules", &unknown).await;
    assert!(html.contains("No such budget"), "{html}");
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM workflow_schedules").await,
        1
    );

    // Pause and resume, as PATCH status does.
    let pause = format!("/console/schedules/{id}/pause");
    refused_without_csrf(&app, &signed, &pause, &[]).await;
    assert_eq!(schedule_view(&app, &id).await["status"], json!("active"));
    let (status, html) = signed.post(&app, &pause, &[("csrf", &signed.csrf)]).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(
        html.contains(&format!("Schedule {id} is paused.")),
        "{html}"
    );
    assert_eq!(schedule_view(&app, &id).await["status"], json!("paused"));
    let (status, html) = signed
        .post(
            &app,
            &format!("/console/schedules/{id}/resume"),
            &[("csrf", &signed.csrf)],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert_eq!(schedule_view(&app, &id).await["status"], json!("active"));

    // The list finds it by name and by budget.
    for q in ["nightly", t.budget_id.as_str()] {
        let (_, html) = signed.get(&app, &format!("/console/schedules?q={q}")).await;
        assert!(
            html.contains(&format!("id=\"schedule-{id}\"")),
            "{q}: {html}"
        );
    }
    let (_, html) = signed.get(&app, "/console/schedules?q=weekly").await;
    assert!(html.contains("No schedule matches."), "{html}");
}

async fn usage_per_product_action_and_wallet(backend: Backend) {
    let app = spawn_app_with(backend, AppOptions::default()).await;
    let key = PrivateKey::random();
    let wallet = key.address().to_string();
    assert_eq!(app.adjust(&key.address(), 10).await.0, 201);
    let nonce = app.session(&key.address()).await;
    for request_id in ["u1", "u2"] {
        let (status, body) = crate::tools::invoke(
            &app,
            &key,
            &nonce,
            request_id,
            "agent-signing-kit",
            "canonical-json",
            json!({"value": {"a": 1}}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let signed = sign_in_http(&app).await;
    // Each grouping shows the operator usage report's row.
    for (group_by, key) in [
        ("product", "agent-signing-kit".to_owned()),
        ("action", "agent-signing-kit/canonical-json".to_owned()),
        ("wallet", wallet.clone()),
    ] {
        let (_, report) = app
            .admin(
                Method::GET,
                &format!("/api/admin/tools/usage?group_by={group_by}"),
                None,
            )
            .await;
        let row = report["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["key"] == json!(key))
            .unwrap_or_else(|| panic!("{report}"))
            .clone();
        assert_eq!(row["calls"], json!(2));
        let (status, html) = signed
            .get(&app, &format!("/console/tools?group_by={group_by}&days=0"))
            .await;
        assert_eq!(status, StatusCode::OK, "{html}");
        let usage = between(&html, "<table id=\"usage-table\">", "</table>");
        let cells = format!(
            "<code>{key}</code>{}</td><td>2</td><td>2</td><td>0</td><td>{} cr</td><td>0</td>",
            if group_by == "wallet" { "</a>" } else { "" },
            row["charged_credits"]
        );
        assert!(usage.contains(&cells), "{group_by}: {usage}");
    }
    assert!(signed
        .get(&app, "/console/tools?group_by=wallet")
        .await
        .1
        .contains(&format!("href=\"/console/wallets/{wallet}\"")));
    // An unknown grouping is the report's 422.
    let (status, html) = signed.get(&app, "/console/tools?group_by=planet").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{html}");
}

async fn budgets_are_created_and_their_keys_shown_once(backend: Backend) {
    let app = spawn_app_with(backend, AppOptions::default()).await;
    let t = tenant(&app).await;
    let signed = sign_in_http(&app).await;
    let form = [
        ("csrf", signed.csrf.as_str()),
        ("account_id", t.account_id.as_str()),
        ("name", "Console budget"),
        ("cap_credits", "900"),
        ("wallet_address", ""),
    ];
    refused_without_csrf(&app, &signed, "/console/budgets", &form).await;
    assert_eq!(app.scalar("SELECT COUNT(*) FROM budgets").await, 1);
    let (status, html) = signed.post(&app, "/console/budgets", &form).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    let budget_id = between(&html, "Budget <code>", "</code>");
    let budget_key = between(&html, "<code class=\"secret\">", "<");
    assert!(budget_key.starts_with("apmt_bk_"), "{budget_key}");
    assert_eq!(
        app.scalar(&format!(
            "SELECT cap_credits FROM budgets WHERE budget_id = '{budget_id}' AND account_id = '{}'",
            t.account_id
        ))
        .await,
        900
    );
    // The key is the budget's bearer (with the account's API key) ...
    let bearer = crate::schedules::Tenant {
        budget_id: budget_id.clone(),
        budget_key: budget_key.clone(),
        ..t.clone()
    };
    let (status, body) = bearer_call(
        &app,
        &bearer,
        Method::GET,
        "/api/external/workflow-schedules/due",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // ... and is never shown again; only its digest is stored.
    let (_, again) = signed.get(&app, "/console/keys").await;
    assert!(
        again.contains(&format!("id=\"budget-{budget_id}\"")),
        "{again}"
    );
    assert!(!again.contains(&budget_key));
    let stored = app
        .strings(&format!(
            "SELECT key_hash FROM budgets WHERE budget_id = '{budget_id}'"
        ))
        .await;
    assert_ne!(stored[0], budget_key);
    // The operator API's validation and 404.
    let mut bad = form;
    bad[3] = ("cap_credits", "-1");
    let (status, html) = signed.post(&app, "/console/budgets", &bad).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{html}");
    assert!(html.contains("cap_credits"), "{html}");
    let mut unknown = form;
    unknown[1] = ("account_id", "acc_nope");
    let (_, html) = signed.post(&app, "/console/budgets", &unknown).await;
    assert!(html.contains("No such account"), "{html}");
    assert_eq!(app.scalar("SELECT COUNT(*) FROM budgets").await, 2);
}

/// The operator API's view of one action of the demo catalog's signing kit.
async fn kit_action(app: &TestApp, action: &str) -> Value {
    let (status, tools) = app.admin(Method::GET, "/api/admin/tools", None).await;
    assert_eq!(status, StatusCode::OK, "{tools}");
    let kit = tools
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["slug"] == json!("agent-signing-kit"))
        .unwrap()
        .clone();
    let mut found = kit["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["slug"] == json!(action))
        .unwrap()
        .clone();
    found["product_status"] = kit["status"].clone();
    found
}

async fn products_are_edited_in_place(backend: Backend) {
    let app = spawn_app_with(backend, AppOptions::default()).await;
    let signed = sign_in_http(&app).await;
    let before = kit_action(&app, "canonical-json").await;
    let keccak = kit_action(&app, "keccak256").await;
    assert_eq!(keccak["x402_enabled"], json!(false));
    let path = "/console/tools/agent-signing-kit/actions/keccak256";
    let schema = json!({"type": "object", "properties": {"text": {"type": "string"}},
                        "required": ["text"]})
    .to_string();
    let form = [
        ("csrf", signed.csrf.as_str()),
        ("price_credits", "3"),
        ("x402_enabled", "on"),
        ("status", "active"),
        ("parameters", schema.as_str()),
    ];
    refused_without_csrf(&app, &signed, path, &form).await;
    assert_eq!(
        kit_action(&app, "keccak256").await["price_credits"],
        json!(1)
    );
    let (status, html) = signed.post(&app, path, &form).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(
        html.contains("Action agent-signing-kit/keccak256 saved: 3 cr, x402 on, active."),
        "{html}"
    );
    let after = kit_action(&app, "keccak256").await;
    assert_eq!(after["price_credits"], json!(3));
    assert_eq!(after["x402_enabled"], json!(true));
    assert_eq!(after["input_schema"]["required"], json!(["text"]));
    // The other actions are written back as they were.
    assert_eq!(kit_action(&app, "canonical-json").await, before);
    // The public listing shows the new price.
    let (_, listing) = app.get("/api/external/tools?query=signing").await;
    assert!(
        listing.to_string().contains("\"price_credits\":3"),
        "{listing}"
    );
    // An unchecked box turns x402 off; a bad price is the operator API's 422, nothing written.
    let off = [form[0], form[1], form[3], form[4]];
    let (status, _) = signed.post(&app, path, &off).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        kit_action(&app, "keccak256").await["x402_enabled"],
        json!(false)
    );
    let mut bad = form;
    bad[1] = ("price_credits", "0");
    let (status, html) = signed.post(&app, path, &bad).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{html}");
    assert!(html.contains("price_credits"), "{html}");
    assert_eq!(
        kit_action(&app, "keccak256").await["price_credits"],
        json!(3)
    );
    let (status, _) = signed
        .post(&app, "/console/tools/agent-signing-kit/actions/nope", &form)
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    // The product's status: inactive leaves the public listing.
    let status_path = "/console/tools/agent-signing-kit/status";
    let off = [("csrf", signed.csrf.as_str()), ("status", "inactive")];
    refused_without_csrf(&app, &signed, status_path, &off).await;
    let (status, html) = signed.post(&app, status_path, &off).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(
        html.contains("Product agent-signing-kit is inactive."),
        "{html}"
    );
    assert_eq!(
        kit_action(&app, "keccak256").await["product_status"],
        json!("inactive")
    );
    let (_, listing) = app.get("/api/external/tools?query=signing").await;
    assert!(
        !listing.to_string().contains("agent-signing-kit"),
        "{listing}"
    );
}

async fn vendors_are_created_without_showing_their_secret(backend: Backend) {
    let app = crate::tools::spawn_tools(backend).await;
    let signed = sign_in_http(&app).await;
    let secret = crate::tools::VENDOR_SECRET;
    let form = [
        ("csrf", signed.csrf.as_str()),
        ("slug", "acme-tools"),
        ("name", "Acme tools"),
        ("status", "active"),
        ("secret", secret),
    ];
    refused_without_csrf(&app, &signed, "/console/vendors", &form).await;
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM vendors WHERE slug = 'acme-tools'")
            .await,
        0
    );
    let (status, html) = signed.post(&app, "/console/vendors", &form).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(
        html.contains("Vendor acme-tools created (secret set)."),
        "{html}"
    );
    assert!(!html.contains(secret));
    let vendor = |vendors: Value| {
        vendors
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["slug"] == json!("acme-tools"))
            .cloned()
            .unwrap()
    };
    let (_, vendors) = app.admin(Method::GET, "/api/admin/vendors", None).await;
    assert_eq!(vendor(vendors)["has_secret"], json!(true));
    // Updating without a secret keeps it.
    let keep = [form[0], form[1], ("name", "Acme Tools Inc"), form[3]];
    let (status, html) = signed.post(&app, "/console/vendors", &keep).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(
        html.contains("Vendor acme-tools updated (secret set)."),
        "{html}"
    );
    let (_, vendors) = app.admin(Method::GET, "/api/admin/vendors", None).await;
    let v = vendor(vendors);
    assert_eq!(
        (v["name"].clone(), v["has_secret"].clone()),
        (json!("Acme Tools Inc"), json!(true))
    );
    let (_, page) = signed.get(&app, "/console/tools").await;
    assert!(page.contains("Acme Tools Inc") && !page.contains(secret));
    // A short secret is the operator API's 422.
    let short = [form[0], form[1], form[2], form[3], ("secret", "short")];
    let (status, html) = signed.post(&app, "/console/vendors", &short).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{html}");
}

/// A help ticket's status as the operator API lists it.
async fn ticket_status(app: &TestApp, ticket: &str) -> Value {
    let (_, list) = app
        .admin(Method::GET, "/api/admin/help-tickets", None)
        .await;
    list["tickets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["ticket_id"] == json!(ticket))
        .unwrap_or_else(|| panic!("{list}"))["status"]
        .clone()
}

async fn help_tickets_are_closed_and_reopened(backend: Backend) {
    let app = spawn_app_with(backend, AppOptions::default()).await;
    let (status, body) = app
        .post(
            "/api/external/agent-help",
            &json!({"message": "<i>stuck</i> on signing", "error_code": "EXTERNAL_SIGNATURE_INVALID"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let ticket = body["ticket_id"].as_str().unwrap().to_owned();
    let signed = sign_in_http(&app).await;
    let (_, overview) = signed.get(&app, "/console").await;
    assert!(
        overview.contains("<a href=\"/console/help-tickets\">1</a>"),
        "{overview}"
    );
    let (_, html) = signed.get(&app, "/console/help-tickets").await;
    let row = between(&html, &format!("<tr id=\"ticket-{ticket}\">"), "</tr>");
    assert!(row.contains("&lt;i&gt;stuck&lt;/i&gt; on signing"), "{row}");
    assert!(row.contains("<td class=\"status\">open"), "{row}");

    let close = format!("/console/help-tickets/{ticket}/close");
    refused_without_csrf(&app, &signed, &close, &[]).await;
    assert_eq!(ticket_status(&app, &ticket).await, json!("open"));
    let (status, html) = signed.post(&app, &close, &[("csrf", &signed.csrf)]).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(
        html.contains(&format!("Ticket {ticket} is closed.")),
        "{html}"
    );
    assert!(
        html.contains("No ticket."),
        "the open list is empty now: {html}"
    );
    assert_eq!(ticket_status(&app, &ticket).await, json!("closed"));
    let (_, closed) = signed
        .get(&app, "/console/help-tickets?status=closed")
        .await;
    assert!(
        closed.contains(&format!("id=\"ticket-{ticket}\"")),
        "{closed}"
    );
    let (_, overview) = signed.get(&app, "/console").await;
    assert!(overview.contains("<a href=\"/console/help-tickets\">0</a>"));
    let (_, html) = signed.post(&app, &close, &[("csrf", &signed.csrf)]).await;
    assert!(
        html.contains("was already closed: nothing changed."),
        "{html}"
    );

    let reopen = format!("/console/help-tickets/{ticket}/reopen");
    let (status, html) = signed.post(&app, &reopen, &[("csrf", &signed.csrf)]).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(
        html.contains(&format!("Ticket {ticket} is open.")),
        "{html}"
    );
    assert_eq!(ticket_status(&app, &ticket).await, json!("open"));
    let (status, _) = signed
        .post(
            &app,
            "/console/help-tickets/help_nope/close",
            &[("csrf", &signed.csrf)],
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = signed.get(&app, "/console/help-tickets?status=nope").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

// ---- Browser -------------------------------------------------------------------------

fn executable(env: &str, default: &str) -> Option<PathBuf> {
    let path = std::env::var_os(env)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default));
    path.is_file().then_some(path)
}

/// Headless Chromium under a chromedriver of its own; both end with the test.
struct Browser {
    client: Client,
    _driver: tokio::process::Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// `None` (announced) when chromium or chromedriver is missing outside CI.
    async fn start() -> Option<Browser> {
        let (Some(chromium), Some(driver)) = (
            executable("AGENTPMT_CHROMIUM", "/usr/bin/chromium"),
            executable("AGENTPMT_CHROMEDRIVER", "/usr/bin/chromedriver"),
        ) else {
            if std::env::var("AGENTPMT_REQUIRE_POSTGRES").is_ok_and(|v| v == "1") {
                panic!(
                    "chromium and chromedriver are required here (AGENTPMT_REQUIRE_POSTGRES=1): \
                     scripts/test installs Debian's chromium and chromium-driver"
                );
            }
            eprintln!(
                "!!! SKIPPING a console browser test: no /usr/bin/chromium or /usr/bin/chromedriver \
                 (run scripts/test, which installs them) !!!"
            );
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = tokio::process::Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver starts");
        let profile = tempfile::tempdir().unwrap();
        let caps: serde_json::Map<String, Value> = serde_json::from_value(json!({
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--no-first-run", "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.path().display()),
                ]
            }
        }))
        .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let started = std::time::Instant::now();
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(client) => break client,
                Err(e) if started.elapsed() < Duration::from_secs(20) => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("no WebDriver session: {e}"),
            }
        };
        Some(Browser {
            client,
            _driver: driver,
            _profile: profile,
        })
    }

    async fn close(self) {
        let _ = self.client.close().await;
    }

    /// The text of the first `css` element, waiting for it (up to 10 s) and reading it again
    /// when a navigation replaced the page between finding and reading.
    async fn text(&self, css: &str) -> String {
        let started = std::time::Instant::now();
        loop {
            let found = self.client.find(Locator::Css(css)).await;
            let read = match found {
                Ok(element) => element.text().await,
                Err(e) => Err(e),
            };
            match read {
                Ok(text) => return text,
                Err(e) if started.elapsed() > Duration::from_secs(10) => {
                    panic!("no {css}: {e}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Waits (up to 10 s) until the first `css` element's text is `want`: a click's page
    /// replaces the one before it some time after the click returns.
    async fn expect_text(&self, css: &str, want: impl AsRef<str>) {
        let want = want.as_ref();
        let started = std::time::Instant::now();
        loop {
            let text = self.text(css).await;
            if text == want {
                return;
            }
            if started.elapsed() > Duration::from_secs(10) {
                assert_eq!(text, want, "{css}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn fill(&self, css: &str, value: &str) {
        let field = self.client.find(Locator::Css(css)).await.unwrap();
        field.clear().await.unwrap();
        field.send_keys(value).await.unwrap();
    }

    /// Clicks the first `css` element (a link or a form's button) and waits (up to 10 s) until
    /// the page it leads to has replaced this one: reading right after the click could
    /// otherwise read the page before it, which has the same elements.
    async fn click(&self, css: &str) {
        let mark = "window.agentpmtBeforeClick = true; return true";
        self.client.execute(mark, vec![]).await.unwrap();
        self.press(css).await;
        let fresh = "return window.agentpmtBeforeClick === undefined \
                     && document.readyState === 'complete'";
        let started = std::time::Instant::now();
        loop {
            let replaced = self.client.execute(fresh, vec![]).await;
            if matches!(replaced, Ok(Value::Bool(true))) {
                return;
            }
            if started.elapsed() > Duration::from_secs(10) {
                panic!("clicking {css} led to no new page");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Clicks the first `css` element that does not navigate (an option of a select), waiting
    /// for it as [`Browser::text`] does.
    async fn press(&self, css: &str) {
        let started = std::time::Instant::now();
        loop {
            let clicked = match self.client.find(Locator::Css(css)).await {
                Ok(element) => element.click().await,
                Err(e) => Err(e),
            };
            match clicked {
                Ok(()) => return,
                Err(e) if started.elapsed() > Duration::from_secs(10) => {
                    panic!("cannot click {css}: {e}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Saves a screenshot as `name` in `AGENTPMT_CONSOLE_SCREENSHOTS` when that is set (the
    /// README's pictures come from here).
    async fn screenshot(&self, name: &str) {
        if let Some(dir) = std::env::var_os("AGENTPMT_CONSOLE_SCREENSHOTS") {
            let png = self.client.screenshot().await.unwrap();
            std::fs::write(PathBuf::from(dir).join(name), png).unwrap();
        }
    }

    async fn sign_in(&self, app: &TestApp, token: &str) {
        self.client.goto(&app.url("/console")).await.unwrap();
        let url = self.client.current_url().await.unwrap();
        assert_eq!(url.path(), "/console/login", "signed out: the sign-in page");
        self.fill("#token", token).await;
        self.click("#sign-in").await;
    }
}

async fn browser_operator_flows(backend: Backend) {
    let app = spawn_app_with(backend, AppOptions::configured(crate::jobs::configure)).await;
    let Some(browser) = Browser::start().await else {
        return;
    };
    let b = &browser;

    // Sign in: a wrong token first, then the right one.
    b.sign_in(&app, "not-the-admin-token-at-all").await;
    b.expect_text("#sign-in-error", "That is not the admin token.")
        .await;
    b.fill("#token", ADMIN_TOKEN).await;
    b.click("#sign-in").await;
    b.expect_text("h1", "Overview").await;
    let cookies = b.client.get_all_cookies().await.unwrap();
    let session = cookies
        .iter()
        .find(|c| c.name() == "agentpmt_console")
        .expect("the session cookie");
    assert_eq!(session.http_only(), Some(true));
    assert_eq!(format!("{:?}", session.same_site()), "Some(Strict)");

    // Grant credits and see the balance.
    let wallet = PrivateKey::random().address().to_string();
    b.click("nav a[href='/console/wallets']").await;
    b.expect_text("h1", "Wallets").await;
    b.client
        .goto(&app.url(&format!("/console/wallets/{wallet}")))
        .await
        .unwrap();
    b.fill("#amount_credits", "1200").await;
    b.fill("#reason", "launch credit").await;
    b.click("#adjust button").await;
    assert!(
        b.text(".notice.ok").await.contains("Posted 1200 credits"),
        "the grant is confirmed"
    );
    assert!(b.text("#balance").await.starts_with("1200 cr"));
    assert!(b.text("#ledger tbody").await.contains("launch credit"));
    let (_, view) = app
        .admin(Method::GET, &format!("/api/admin/wallets/{wallet}"), None)
        .await;
    assert_eq!(view["balance_credits"], json!(1200));
    // The wallet search finds it.
    b.client.goto(&app.url("/console/wallets")).await.unwrap();
    b.fill("#q", &wallet[2..12]).await;
    b.click("form.search button").await;
    assert!(b.text("#wallets tbody").await.contains(&wallet));

    // Create a tool and see it in the public listing.
    b.client.goto(&app.url("/console/tools")).await.unwrap();
    b.fill("#slug", "console-clock").await;
    b.fill("#name", "Console clock").await;
    b.fill("#description", "Tells the time").await;
    b.fill("#categories", "utilities").await;
    b.click("#product-form button").await;
    b.expect_text(".notice.ok", "Product console-clock created.")
        .await;
    assert!(b.text("#products").await.contains("Console clock"));
    let (status, listing) = app.get("/api/external/tools?query=console").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        listing["tools"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t.to_string().contains("console-clock")),
        "{listing}"
    );

    // Approve a submission and see the wallet paid exactly once.
    // The job is created from the console's form.
    b.client.goto(&app.url("/console/jobs")).await.unwrap();
    b.press("#job_type option[value='general']").await;
    b.fill("#title", "Write a guide").await;
    b.fill("#public_description", "A guide to the example workflow")
        .await;
    b.fill("#private_instructions", "Publish it anywhere public")
        .await;
    b.fill("#reward_credits", "250").await;
    b.click("#job-form button").await;
    let created = b.text(".notice.ok").await;
    let job = created
        .strip_prefix("Job ")
        .and_then(|r| r.strip_suffix(" created (open)."))
        .unwrap_or_else(|| panic!("{created}"))
        .to_owned();
    let (status, view) = app
        .admin(Method::GET, &format!("/api/admin/jobs/{job}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["job"]["job_type"], json!("general"));
    assert_eq!(view["job"]["reward_credits"], json!(250));
    let agent = Agent::new(&app).await;
    let (status, reserved) = agent.reserve(&app, &job).await;
    assert_eq!(status, StatusCode::OK, "{reserved}");
    let (status, done) = agent
        .complete(
            &app,
            &job,
            json!({"proof_text": "Wrote the guide at https://example.com/guide",
                   "reservation_id": reserved["job"]["reservation_id"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{done}");
    let id = done["submission"]["submission_id"]
        .as_str()
        .unwrap()
        .to_owned();
    b.client.goto(&app.url("/console")).await.unwrap();
    b.expect_text("#awaiting-review .big", "1").await;
    b.screenshot("console-overview.png").await;
    b.click("#awaiting-review a").await;
    let card = format!("#submission-{id}");
    assert!(b.text(&card).await.contains("Wrote the guide"));
    b.screenshot("console-review-queue.png").await;
    assert!(b
        .text(&format!("{card} .verification"))
        .await
        .contains("needs_human"));
    b.click(&format!("{card} button.approve")).await;
    b.expect_text(".notice.ok", format!("Submission {id} is approved."))
        .await;
    let paid_sql = format!(
        "SELECT COUNT(*) FROM ledger_entries WHERE kind = 'job_reward' AND wallet_address = '{}'",
        agent.wallet()
    );
    assert_eq!(app.scalar(&paid_sql).await, 1);
    // Approving again (the operator API, as a second operator would) pays nothing more.
    let (status, again) = app
        .admin(
            Method::POST,
            &format!("/api/admin/jobs/submissions/{id}/approve"),
            Some(&json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["changed"], json!(false));
    assert_eq!(app.scalar(&paid_sql).await, 1);
    b.client
        .goto(&app.url(&format!("/console/wallets/{}", agent.wallet())))
        .await
        .unwrap();
    assert!(b.text("#balance").await.starts_with("250 cr"));

    // Revoke a budget and see its bearer refused.
    let t = tenant(&app).await;
    let due = "/api/external/workflow-schedules/due";
    let (status, _) = bearer_call(&app, &t, Method::GET, due, None).await;
    assert_eq!(status, StatusCode::OK);
    b.click("nav a[href='/console/keys']").await;
    assert!(b.text("#budgets").await.contains("Nightly"));
    b.click(&format!("#budget-{} button.revoke", t.budget_id))
        .await;
    assert!(b.text(".notice.ok").await.contains("revoked"));
    let (status, body) = bearer_call(&app, &t, Method::GET, due, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["details"]["reason"], json!("budget_key_revoked"));
    // And an API key.
    b.click(&format!("#key-{} button.revoke", t.key_id)).await;
    assert!(b
        .text(&format!("#key-{}", t.key_id))
        .await
        .contains("revoked"));

    // Sign out and be refused.
    b.click("#sign-out").await;
    b.expect_text("h1", "Operator console").await;
    b.client.goto(&app.url("/console/keys")).await.unwrap();
    assert_eq!(
        b.client.current_url().await.unwrap().path(),
        "/console/login"
    );
    browser.close().await;
}

async fn browser_creates_a_budget_and_a_schedule(backend: Backend) {
    let app = spawn_app_with(backend, AppOptions::default()).await;
    let Some(browser) = Browser::start().await else {
        return;
    };
    let b = &browser;
    let (status, account) = app
        .admin(
            Method::POST,
            "/api/admin/accounts",
            Some(&json!({"name": "Browser Ops"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{account}");
    let account_id = account["account"]["account_id"]
        .as_str()
        .unwrap()
        .to_owned();
    crate::workflows::create_workflow(&app, "browser-digest", json!({}), true).await;
    b.sign_in(&app, ADMIN_TOKEN).await;
    b.expect_text("h1", "Overview").await;

    // A budget, from the keys page: its key is shown once.
    b.click("nav a[href='/console/keys']").await;
    b.fill("#budget_account", &account_id).await;
    b.fill("#budget_name", "Browser budget").await;
    b.fill("#budget_cap", "1500").await;
    b.click("#budget-form button").await;
    let created = b.text("#new-budget").await;
    assert!(created.contains("it is not shown again"), "{created}");
    let budget_id = b.text("#new-budget code").await;
    assert!(budget_id.starts_with("bud_"), "{budget_id}");
    assert!(b
        .text("#new-budget code.secret")
        .await
        .starts_with("apmt_bk_"));
    assert!(b.text("#budgets").await.contains("Browser budget"));
    assert_eq!(
        app.scalar(&format!(
            "SELECT cap_credits FROM budgets WHERE budget_id = '{budget_id}'"
        ))
        .await,
        1500
    );

    // A schedule of that budget, from the schedules page.
    b.click("nav a[href='/console/schedules']").await;
    b.expect_text("h1", "Workflow schedules").await;
    b.fill("#sc_budget", &budget_id).await;
    b.fill("#sc_workflow", "browser-digest").await;
    b.fill("#sc_name", "Browser nightly").await;
    b.fill("#sc_interval", "7200").await;
    b.fill("#sc_start", "2026-01-01T00:00:00Z").await;
    b.click("#schedule-form button").await;
    let notice = b.text(".notice.ok").await;
    assert!(
        notice.starts_with("Schedule Browser nightly (sch_"),
        "{notice}"
    );
    let id = between(&notice, "(", ")");
    assert!(b
        .text(&format!("#schedule-{id}"))
        .await
        .contains("every 7200 s"));
    let view = schedule_view(&app, &id).await;
    assert_eq!(view["budget_id"], json!(budget_id));
    assert_eq!(view["workflow_slug"], json!("browser-digest"));
    assert_eq!(view["status"], json!("active"));
    // Paused from its row.
    b.click(&format!("#schedule-{id} button.pause")).await;
    b.expect_text(".notice.ok", format!("Schedule {id} is paused."))
        .await;
    assert_eq!(schedule_view(&app, &id).await["status"], json!("paused"));
    // And found by the search.
    b.fill("#q", "browser").await;
    b.click("form.search button").await;
    assert!(b.text("#schedules tbody").await.contains("Browser nightly"));
    browser.close().await;
}

/// A page on another origin that frames the console.
async fn framing_site(target: String) -> String {
    let router = axum::Router::new().route(
        "/",
        axum::routing::get(move || {
            let target = target.clone();
            async move {
                axum::response::Html(format!(
                    "<!doctype html><title>framer</title><h1>framer</h1>\
                     <iframe id=\"victim\" src=\"{target}\" width=\"600\" height=\"400\"></iframe>"
                ))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://localhost:{}/",
        listener.local_addr().unwrap().port()
    );
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    url
}

async fn browser_security(backend: Backend) {
    let app = spawn_app_with(backend, AppOptions::default()).await;
    let Some(browser) = Browser::start().await else {
        return;
    };
    let b = &browser;
    let hostile = "<script>alert(1)</script>";
    let (status, body) = app
        .admin(
            Method::PUT,
            "/api/admin/tools/hostile",
            Some(&json!({
                "slug": "hostile", "name": hostile, "description": "<img src=x onerror=alert(2)>",
                "actions": [{"name": "run", "price_credits": 1, "runner": {"kind": "builtin", "name": "time.now"}}]
            })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    b.sign_in(&app, ADMIN_TOKEN).await;
    b.expect_text("h1", "Overview").await;

    // The product's name renders as text, and no script ran.
    b.client.goto(&app.url("/console/tools")).await.unwrap();
    b.text("#products").await;
    let mut names = Vec::new();
    for name in b
        .client
        .find_all(Locator::Css(".product-name"))
        .await
        .unwrap()
    {
        names.push(name.text().await.unwrap());
    }
    assert!(names.iter().any(|n| n == hostile), "{names:?}");
    assert!(
        b.client.get_alert_text().await.is_err(),
        "no alert dialog is open"
    );
    let scripts = b
        .client
        .find_all(Locator::Css("main script"))
        .await
        .unwrap();
    assert!(scripts.is_empty(), "the name did not become an element");

    // The session cookie is invisible to scripts.
    let visible = b
        .client
        .execute("return document.cookie", vec![])
        .await
        .unwrap();
    assert!(
        !visible.as_str().unwrap_or("").contains("agentpmt_console"),
        "{visible}"
    );

    // A console page loaded in a frame (another origin) is refused by the browser.
    let console_login = app.url("/console/login");
    b.client.goto(&console_login).await.unwrap();
    assert!(
        b.text("main").await.contains("Admin token"),
        "top-level: shown"
    );
    let framer = framing_site(console_login.clone()).await;
    b.client.goto(&framer).await.unwrap();
    b.expect_text("h1", "framer").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let frame = b.client.find(Locator::Id("victim")).await.unwrap();
    frame.enter_frame().await.unwrap();
    let inside = b
        .client
        .find(Locator::Css("body"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap_or_default();
    assert!(
        !inside.contains("Admin token") && !inside.contains("Operator console"),
        "the framed console rendered: {inside:?}"
    );
    assert!(b.client.find(Locator::Id("token")).await.is_err());
    b.client.enter_parent_frame().await.unwrap();
    browser.close().await;
}
