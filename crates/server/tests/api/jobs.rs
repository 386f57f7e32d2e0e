//! Jobs board: listing, exclusive reservations (100 concurrent reserves, expiry and
//! fencing), completion proof checks, the verifier against a real local HTTP server
//! (link present / absent, transient then recovered, never answering), payout exactly
//! once (approve twice, verify and approve concurrently), and workflow-creation jobs with
//! their scoped token.

use crate::backend_tests;
use crate::helpers::{
    assert_envelope, signed, spawn_app_with, spawn_on, AppOptions, Backend, TestApp, ADMIN_TOKEN,
};
use agentpmt_protocol::{PrivateKey, SignedAction};
use agentpmt_server::ServerConfig;
use axum::extract::{Path, State};
use reqwest::{Method, StatusCode};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

backend_tests!(
    social_share_job_is_listed_reserved_completed_verified_and_paid,
    hundred_concurrent_reserves_grant_exactly_one,
    expired_reservation_reopens_and_fences_the_old_holder,
    bad_completions_are_refused_and_change_nothing,
    verifier_rejects_a_page_without_the_link,
    verifier_does_not_pay_a_page_that_is_not_the_post,
    verifier_retries_transient_failures_then_verifies,
    verifier_gives_up_on_a_silent_server_and_operator_pays_once,
    verify_and_approve_concurrently_pay_once,
    workflow_creation_job_and_token_scope,
    list_paging_and_limits,
    operator_input_and_rejection,
    two_instances_share_the_verification_queue,
    job_routes_are_documented,
    concurrent_completions_of_one_reservation_submit_once,
    a_short_configured_window_expires_on_the_database_clock,
    sdk_drives_a_workflow_creation_job,
    a_partial_workflow_update_keeps_what_it_leaves_out,
    the_holders_repeated_reserve_returns_its_reservation,
    the_board_merges_open_and_lapsed_jobs_newest_first,
);

/// Fast verifier, 127.0.0.1 accepted as the post host of x and linkedin.
pub fn configure(config: &mut ServerConfig) {
    config.job_post_hosts = vec![
        "x=127.0.0.1".into(),
        "linkedin=127.0.0.1".into(),
        "x=x.com".into(),
    ];
    config.job_verify_interval_ms = 50;
    config.job_verify_backoff_ms = 100;
    config.job_verify_max_attempts = 3;
    config.job_verify_timeout_ms = 700;
}

async fn app(backend: Backend) -> TestApp {
    spawn_app_with(backend, AppOptions::configured(configure)).await
}

static REQUEST: AtomicU64 = AtomicU64::new(0);

fn request_id() -> String {
    format!("job-req-{}", REQUEST.fetch_add(1, Ordering::Relaxed))
}

/// A wallet with a session.
pub struct Agent {
    pub key: PrivateKey,
    pub nonce: String,
}

impl Agent {
    pub async fn new(app: &TestApp) -> Agent {
        let key = PrivateKey::random();
        let nonce = app.session(&key.address()).await;
        Agent { key, nonce }
    }

    pub fn wallet(&self) -> String {
        self.key.address().to_string()
    }

    fn body(&self, action: SignedAction, job: &str, fields: Value) -> Value {
        let fields: Map<String, Value> = fields.as_object().cloned().unwrap_or_default();
        signed(
            &self.key,
            action,
            &[("jobId", job)],
            &self.nonce,
            &request_id(),
            fields,
        )
    }

    pub async fn list(&self, app: &TestApp, fields: Value) -> (StatusCode, Value) {
        app.post(
            "/api/external/jobs/list",
            &self.body(SignedAction::JobList, "", fields),
        )
        .await
    }

    pub async fn reserve(&self, app: &TestApp, job: &str) -> (StatusCode, Value) {
        app.post(
            &format!("/api/external/jobs/{job}/reserve"),
            &self.body(SignedAction::JobReserve, job, json!({})),
        )
        .await
    }

    pub async fn complete(&self, app: &TestApp, job: &str, fields: Value) -> (StatusCode, Value) {
        app.post(
            &format!("/api/external/jobs/{job}/complete"),
            &self.body(SignedAction::JobComplete, job, fields),
        )
        .await
    }

    pub async fn status(&self, app: &TestApp, job: &str) -> Value {
        let (status, body) = app
            .post(
                &format!("/api/external/jobs/{job}/status"),
                &self.body(SignedAction::JobStatus, job, json!({})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }
}

/// Creates a job; returns its id.
pub async fn create_job(app: &TestApp, fields: Value) -> String {
    let mut body = json!({
        "job_type": "social_share",
        "title": "Share the example workflow",
        "public_description": "Post one tracked link on the platform",
        "private_instructions": "SECRET-INSTRUCTIONS: say something nice",
        "reward_credits": 250,
        "target_url": "https://www.agentpmt.com/agent-workflow-skills/example",
        "platform": "x",
    });
    for (k, v) in fields.as_object().unwrap() {
        body[k] = v.clone();
    }
    let (status, created) = app
        .admin(Method::POST, "/api/admin/jobs", Some(&body))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    created["job"]["job_id"].as_str().unwrap().to_owned()
}

/// A local post host: `/post/{id}` pages (optionally failing first, or slow), `/hang`.
#[derive(Clone, Default)]
pub struct Posts {
    pages: Arc<Mutex<HashMap<String, Page>>>,
}

#[derive(Clone, Default)]
struct Page {
    body: String,
    fail_first: u32,
    delay_ms: u64,
    hits: u32,
}

impl Posts {
    pub async fn start() -> (String, Posts) {
        let posts = Posts::default();
        let router = axum::Router::new()
            .route("/post/{id}", axum::routing::get(serve_post))
            .route(
                "/hang",
                axum::routing::get(|| async {
                    tokio::time::sleep(Duration::from_secs(120)).await;
                    "too late"
                }),
            )
            .with_state(posts.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        (url, posts)
    }

    fn put(&self, id: &str, body: String, fail_first: u32, delay_ms: u64) {
        self.pages.lock().unwrap().insert(
            id.to_owned(),
            Page {
                body,
                fail_first,
                delay_ms,
                hits: 0,
            },
        );
    }

    fn hits(&self, id: &str) -> u32 {
        self.pages.lock().unwrap().get(id).map_or(0, |p| p.hits)
    }
}

async fn serve_post(
    State(posts): State<Posts>,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
) -> (StatusCode, axum::response::Html<String>) {
    let page = {
        let mut pages = posts.pages.lock().unwrap();
        let Some(page) = pages.get_mut(&id) else {
            return (StatusCode::NOT_FOUND, axum::response::Html("gone".into()));
        };
        page.hits += 1;
        page.clone()
    };
    if page.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(page.delay_ms)).await;
    }
    if page.hits <= page.fail_first {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::response::Html("try later".into()),
        );
    }
    // A post page names itself (canonical link) as platforms do.
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let body = page.body.replace(SELF, &format!("http://{host}/post/{id}"));
    (StatusCode::OK, axum::response::Html(body))
}

/// Replaced by the page's own URL when served.
const SELF: &str = "{{SELF}}";

/// An HTML post page showing `text` the way social sites do (the `&` of the link escaped),
/// naming itself with a canonical link.
fn html(text: &str) -> String {
    let escaped = text.replace('&', "&amp;");
    format!("<html><head><link rel=\"canonical\" href=\"{SELF}\"></head><body><article><p>{escaped}</p></article></body></html>")
}

/// A page that shows `text` but does not say it is a post (a search page, a soft 404).
fn html_without_identity(text: &str) -> String {
    let escaped = text.replace('&', "&amp;");
    format!("<html><head><title>Search</title></head><body><p>{escaped}</p></body></html>")
}

/// The proof of a social-share reservation: one post at `post_url` using `tracked`.
fn proof(reservation: &Value, post_url: &str, tracked: &str) -> Value {
    json!({
        "proof_text": "Published the required AgentPMT social post.",
        "reservation_id": reservation["job"]["reservation_id"],
        "social_posts": [{
            "platform": "x",
            "post_url": post_url,
            "target_url_used": tracked,
            "message_text": format!("Paid AgentPMT share: {tracked}"),
            "posted_at": "2026-05-17T14:30:00Z"
        }]
    })
}

fn tracked(reservation: &Value) -> String {
    reservation["job"]["social_share"]["tracking_links"][0]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Polls the caller's status until the verification reaches a final state (or panics).
async fn wait_verification(app: &TestApp, agent: &Agent, job: &str, want: &[&str]) -> Value {
    for _ in 0..400 {
        let status = agent.status(app, job).await;
        let v = status["submission"]["verification"]["status"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if want.contains(&v.as_str()) {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("verification never reached {want:?}");
}

async fn rewards(app: &TestApp) -> i64 {
    app.scalar("SELECT COUNT(*) FROM ledger_entries WHERE kind = 'job_reward'")
        .await
}

async fn social_share_job_is_listed_reserved_completed_verified_and_paid(backend: Backend) {
    let app = app(backend).await;
    let (posts_url, posts) = Posts::start().await;
    let job = create_job(&app, json!({})).await;
    let agent = Agent::new(&app).await;

    let (status, listed) = agent.list(&app, json!({"limit": 50, "skip": 0})).await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    assert_eq!(listed["jobs"][0]["job_id"], json!(job));
    assert_eq!(listed["jobs"][0]["status"], json!("open"));
    assert_eq!(listed["jobs"][0]["job_type"], json!("social_share"));
    assert_eq!(listed["jobs"][0]["reward_credits"], json!(250));
    assert!(
        !listed.to_string().contains("SECRET-INSTRUCTIONS"),
        "{listed}"
    );

    let (status, reserved) = agent.reserve(&app, &job).await;
    assert_eq!(status, StatusCode::OK, "{reserved}");
    let r = &reserved["job"];
    assert_eq!(r["status"], json!("reserved"));
    assert_eq!(
        r["job_instructions"],
        json!("SECRET-INSTRUCTIONS: say something nice")
    );
    assert_eq!(r["reward_credits"], json!(250));
    assert_eq!(r["reservation_id"], json!(format!("{job}-r1")));
    let code = r["social_share"]["tracking_code"].as_str().unwrap();
    assert_eq!(r["social_share"]["platform"], json!("x"));
    assert_eq!(
        r["social_share"]["tracking_links"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let link = tracked(&reserved);
    assert_eq!(
        link,
        format!(
            "https://www.agentpmt.com/agent-workflow-skills/example?utm_source=x&utm_medium=agent_social&utm_campaign=agent_job_{job}&utm_content={code}"
        )
    );
    let until = chrono::DateTime::parse_from_rfc3339(r["reserved_until"].as_str().unwrap())
        .unwrap()
        .timestamp();
    let expected = chrono::Utc::now().timestamp() + 1800;
    assert!(
        (until - expected).abs() < 60,
        "30-minute window, got {until}"
    );

    // Reserved jobs leave the board; the holder's status shows the reservation.
    let (_, listed) = agent.list(&app, json!({})).await;
    assert_eq!(listed["count"], json!(0), "{listed}");
    let status = agent.status(&app, &job).await;
    assert_eq!(status["wallet_address"], json!(agent.wallet()));
    assert_eq!(status["has_active_reservation"], json!(true));
    assert_eq!(status["can_submit"], json!(true));
    assert_eq!(
        status["reservation"]["reservation_id"],
        json!(format!("{job}-r1"))
    );
    assert_eq!(
        status["reservation"]["social_share"]["tracking_links"][0],
        json!(link)
    );
    assert_eq!(status["payout"]["status"], json!("none"));

    let post = format!("{posts_url}/post/{job}");
    posts.put(&job, html(&format!("Paid AgentPMT share: {link}")), 0, 0);
    let (status, done) = agent
        .complete(&app, &job, proof(&reserved, &post, &link))
        .await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(done["job"]["status"], json!("submitted"));
    assert_eq!(done["submission"]["status"], json!("submitted"));
    assert!(["queued", "running"].contains(
        &done["submission"]["verification"]["status"]
            .as_str()
            .unwrap()
    ));

    let status = wait_verification(&app, &agent, &job, &["verified"]).await;
    assert_eq!(
        status["submission"]["status"],
        json!("approved"),
        "{status}"
    );
    assert_eq!(
        status["submission"]["verification"]["method"],
        json!("automated")
    );
    assert_eq!(status["payout"]["status"], json!("paid"));
    assert_eq!(status["payout"]["wallet_balance_credits"], json!(250));
    assert_eq!(
        status["payout"]["entry_id"],
        json!(format!("job_reward:{job}:1"))
    );
    assert_eq!(status["job"]["status"], json!("approved"));
    assert_eq!(rewards(&app).await, 1);
    assert!(posts.hits(&job) >= 1);
    // A finished job cannot be reserved again.
    let other = Agent::new(&app).await;
    let (status, body) = other.reserve(&app, &job).await;
    let details = assert_envelope(status, &body, 409, "JOB_NOT_AVAILABLE");
    assert_eq!(details["reason"], json!("completed"));
}

async fn hundred_concurrent_reserves_grant_exactly_one(backend: Backend) {
    let app = app(backend).await;
    let job = create_job(&app, json!({})).await;
    let mut agents = Vec::new();
    for _ in 0..100 {
        agents.push(Agent::new(&app).await);
    }
    let app = Arc::new(app);
    let mut tasks = Vec::new();
    for agent in agents {
        let (app, job) = (app.clone(), job.clone());
        tasks.push(tokio::spawn(async move { agent.reserve(&app, &job).await }));
    }
    let mut granted = 0;
    for task in tasks {
        let (status, body) = task.await.unwrap();
        if status == StatusCode::OK {
            granted += 1;
        } else {
            let details = assert_envelope(status, &body, 409, "JOB_NOT_AVAILABLE");
            assert_eq!(details["reason"], json!("reserved"), "{body}");
        }
    }
    assert_eq!(granted, 1);
    assert_eq!(app.scalar("SELECT reservation_epoch FROM jobs").await, 1);
    assert_eq!(app.scalar("SELECT COUNT(*) FROM job_reservations").await, 1);
    let metrics = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for (outcome, count) in [("job_granted", " 1"), ("job_conflict", " 99")] {
        assert!(
            metrics.lines().any(|l| l.contains("reservations")
                && l.contains(&format!("outcome=\"{outcome}\""))
                && l.ends_with(count)),
            "{metrics}"
        );
    }
}

/// Moves a job's live reservation into the past.
async fn expire(app: &TestApp, job: &str) {
    app.execute(&format!(
        "UPDATE jobs SET reserved_until_ms = reserved_until_ms - 7200000 WHERE job_id = '{job}'"
    ))
    .await
    .unwrap();
    app.execute(&format!(
        "UPDATE job_reservations SET expires_at_ms = expires_at_ms - 7200000 WHERE job_id = '{job}'"
    ))
    .await
    .unwrap();
}

async fn expired_reservation_reopens_and_fences_the_old_holder(backend: Backend) {
    let app = app(backend).await;
    let (posts_url, posts) = Posts::start().await;
    let job = create_job(&app, json!({})).await;
    let (old, new) = (Agent::new(&app).await, Agent::new(&app).await);
    let (status, first) = old.reserve(&app, &job).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let (status, body) = new.reserve(&app, &job).await;
    assert_envelope(status, &body, 409, "JOB_NOT_AVAILABLE");

    expire(&app, &job).await;
    let (_, listed) = new.list(&app, json!({})).await;
    assert_eq!(listed["jobs"][0]["job_id"], json!(job), "{listed}");
    assert_eq!(listed["jobs"][0]["status"], json!("open"));

    let (status, second) = new.reserve(&app, &job).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_eq!(second["job"]["reservation_id"], json!(format!("{job}-r2")));
    assert_ne!(tracked(&first), tracked(&second));

    // The old holder's late completion is refused, with or without its reservation id.
    let old_link = tracked(&first);
    let post = format!("{posts_url}/post/{job}");
    let (status, body) = old
        .complete(&app, &job, proof(&first, &post, &old_link))
        .await;
    let details = assert_envelope(status, &body, 409, "JOB_RESERVATION_REQUIRED");
    assert_eq!(details["reason"], json!("expired"));
    let mut no_id = proof(&first, &post, &old_link);
    no_id.as_object_mut().unwrap().remove("reservation_id");
    let (status, body) = old.complete(&app, &job, no_id).await;
    assert_envelope(status, &body, 409, "JOB_RESERVATION_REQUIRED");
    let old_status = old.status(&app, &job).await;
    assert_eq!(old_status["can_submit"], json!(false));

    let link = tracked(&second);
    posts.put(&job, html(&format!("Paid AgentPMT share: {link}")), 0, 0);
    let (status, body) = new.complete(&app, &job, proof(&second, &post, &link)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let status = wait_verification(&app, &new, &job, &["verified"]).await;
    assert_eq!(status["payout"]["wallet_balance_credits"], json!(250));
    assert_eq!(
        status["payout"]["entry_id"],
        json!(format!("job_reward:{job}:2"))
    );
    let old_status = old.status(&app, &job).await;
    assert_eq!(old_status["payout"]["wallet_balance_credits"], json!(0));
    assert_eq!(rewards(&app).await, 1);
}

async fn bad_completions_are_refused_and_change_nothing(backend: Backend) {
    let app = app(backend).await;
    let (posts_url, posts) = Posts::start().await;
    let job = create_job(&app, json!({})).await;
    let (holder, other) = (Agent::new(&app).await, Agent::new(&app).await);
    let (_, reserved) = holder.reserve(&app, &job).await;
    let link = tracked(&reserved);
    let post = format!("{posts_url}/post/{job}");
    posts.put(&job, html(&link), 0, 0);
    let good = proof(&reserved, &post, &link);
    let replays = app.replay_count().await;

    let mut wrong_url = good.clone();
    wrong_url["social_posts"][0]["target_url_used"] =
        json!(link.replace("utm_source=x", "utm_source=linkedin"));
    let mut two = good.clone();
    two["social_posts"] = json!([good["social_posts"][0], good["social_posts"][0]]);
    let mut zero = good.clone();
    zero["social_posts"] = json!([]);
    let mut missing = good.clone();
    missing.as_object_mut().unwrap().remove("social_posts");
    let mut wrong_platform = good.clone();
    wrong_platform["social_posts"][0]["platform"] = json!("linkedin");
    let mut foreign_host = good.clone();
    foreign_host["social_posts"][0]["post_url"] = json!("https://evil.example/post/1");
    let mut echo = good.clone();
    echo["social_posts"][0]["post_url"] = json!(format!(
        "{posts_url}/post/{job}?share={}",
        link.replace('&', "%26")
            .replace('?', "%3F")
            .replace('=', "%3D")
    ));
    // The tracked URL in the path with its code percent-encoded (a platform page that echoes
    // its decoded path would show the link), once and twice.
    let code = reserved["job"]["social_share"]["tracking_code"]
        .as_str()
        .unwrap()
        .to_owned();
    let escape = |text: &str| -> String { text.bytes().map(|b| format!("%{b:02X}")).collect() };
    let mut encoded_path = good.clone();
    encoded_path["social_posts"][0]["post_url"] = json!(format!(
        "{posts_url}/post/{job}/{}",
        link.replace(&code, &escape(&code)).replace(['?', '&'], "/")
    ));
    let mut double_encoded_path = good.clone();
    double_encoded_path["social_posts"][0]["post_url"] = json!(format!(
        "{posts_url}/post/{}",
        escape(&code).replace('%', "%25")
    ));
    let mut no_proof = good.clone();
    no_proof["proof_text"] = json!("   ");
    let mut long_proof = good.clone();
    long_proof["proof_text"] = json!("x".repeat(4001));
    for (body, loc) in [
        (
            wrong_url,
            json!(["body", "social_posts", "0", "target_url_used"]),
        ),
        (two, json!(["body", "social_posts"])),
        (zero, json!(["body", "social_posts"])),
        (missing, json!(["body", "social_posts"])),
        (
            wrong_platform,
            json!(["body", "social_posts", "0", "platform"]),
        ),
        (
            foreign_host,
            json!(["body", "social_posts", "0", "post_url"]),
        ),
        (echo, json!(["body", "social_posts", "0", "post_url"])),
        (
            encoded_path,
            json!(["body", "social_posts", "0", "post_url"]),
        ),
        (
            double_encoded_path,
            json!(["body", "social_posts", "0", "post_url"]),
        ),
    ] {
        let (status, answer) = holder.complete(&app, &job, body).await;
        assert_envelope(status, &answer, 422, "JOB_PROOF_INVALID");
        assert_eq!(answer["detail"][0]["loc"], loc, "{answer}");
    }
    for body in [no_proof, long_proof] {
        let (status, answer) = holder.complete(&app, &job, body).await;
        assert_envelope(status, &answer, 422, "VALIDATION_ERROR");
    }
    let mut wrong_id = good.clone();
    wrong_id["reservation_id"] = json!(format!("{job}-r7"));
    let (status, answer) = holder.complete(&app, &job, wrong_id).await;
    let details = assert_envelope(status, &answer, 409, "JOB_RESERVATION_MISMATCH");
    assert_eq!(details["active_reservation_id"], json!(format!("{job}-r1")));
    // Someone else submitting under the holder's reservation.
    let (status, answer) = other.complete(&app, &job, good.clone()).await;
    let details = assert_envelope(status, &answer, 409, "JOB_RESERVATION_REQUIRED");
    assert_eq!(details["reason"], json!("held_by_another_agent"));
    // An unknown job.
    let (status, answer) = holder.complete(&app, "nosuchjob", good.clone()).await;
    assert_envelope(status, &answer, 404, "JOB_NOT_FOUND");

    // Nothing changed: no submission, the job still reserved by the holder, no replay record.
    assert_eq!(app.scalar("SELECT COUNT(*) FROM job_submissions").await, 0);
    assert_eq!(app.replay_count().await, replays);
    let status = holder.status(&app, &job).await;
    assert_eq!(status["can_submit"], json!(true));
    assert_eq!(status["job"]["status"], json!("reserved"));

    let (status, answer) = holder.complete(&app, &job, good).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    // A second completion of the same reservation is refused.
    let again = proof(&reserved, &post, &link);
    let (status, answer) = holder.complete(&app, &job, again).await;
    let details = assert_envelope(status, &answer, 409, "JOB_RESERVATION_REQUIRED");
    assert_eq!(details["reason"], json!("already_submitted"));
    assert_eq!(app.scalar("SELECT COUNT(*) FROM job_submissions").await, 1);
}

async fn verifier_does_not_pay_a_page_that_is_not_the_post(backend: Backend) {
    let app = app(backend).await;
    let (posts_url, posts) = Posts::start().await;
    let job = create_job(&app, json!({})).await;
    let agent = Agent::new(&app).await;
    let (_, reserved) = agent.reserve(&app, &job).await;
    let link = tracked(&reserved);
    // A page on an accepted host that shows the link and the message (it echoes what it was
    // given, like a search or soft-404 page) but does not name itself as the post.
    posts.put(
        &job,
        html_without_identity(&format!("Paid AgentPMT share: {link}")),
        0,
        0,
    );
    let post = format!("{posts_url}/post/{job}");
    let (status, body) = agent
        .complete(&app, &job, proof(&reserved, &post, &link))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let status = wait_verification(&app, &agent, &job, &["needs_human"]).await;
    assert_eq!(
        status["submission"]["status"],
        json!("submitted"),
        "{status}"
    );
    assert_eq!(status["payout"]["wallet_balance_credits"], json!(0));
    assert_eq!(rewards(&app).await, 0);
}

async fn verifier_rejects_a_page_without_the_link(backend: Backend) {
    let app = app(backend).await;
    let (posts_url, posts) = Posts::start().await;
    let job = create_job(&app, json!({})).await;
    let agent = Agent::new(&app).await;
    let (_, reserved) = agent.reserve(&app, &job).await;
    let link = tracked(&reserved);
    posts.put(&job, html("A post about something else entirely"), 0, 0);
    let post = format!("{posts_url}/post/{job}");
    let (status, body) = agent
        .complete(&app, &job, proof(&reserved, &post, &link))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let status = wait_verification(&app, &agent, &job, &["rejected"]).await;
    assert_eq!(status["submission"]["status"], json!("rejected"));
    assert_eq!(status["payout"]["status"], json!("rejected"));
    assert_eq!(status["payout"]["wallet_balance_credits"], json!(0));
    // on_reject defaults to reopen; the rejected wallet may try again.
    assert_eq!(status["job"]["status"], json!("open"));
    assert_eq!(rewards(&app).await, 0);
    let (status, again) = agent.reserve(&app, &job).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["job"]["reservation_id"], json!(format!("{job}-r2")));
}

async fn verifier_retries_transient_failures_then_verifies(backend: Backend) {
    let app = app(backend).await;
    let (posts_url, posts) = Posts::start().await;
    let job = create_job(&app, json!({})).await;
    let agent = Agent::new(&app).await;
    let (_, reserved) = agent.reserve(&app, &job).await;
    let link = tracked(&reserved);
    posts.put(&job, html(&format!("Paid AgentPMT share: {link}")), 1, 0);
    let post = format!("{posts_url}/post/{job}");
    let (status, body) = agent
        .complete(&app, &job, proof(&reserved, &post, &link))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let status =
        wait_verification(&app, &agent, &job, &["verified", "needs_human", "rejected"]).await;
    assert_eq!(
        status["submission"]["verification"]["status"],
        json!("verified"),
        "{status}"
    );
    assert_eq!(status["submission"]["verification"]["attempts"], json!(2));
    assert_eq!(posts.hits(&job), 2);
    assert_eq!(status["payout"]["wallet_balance_credits"], json!(250));
}

async fn verifier_gives_up_on_a_silent_server_and_operator_pays_once(backend: Backend) {
    let app = app(backend).await;
    let (posts_url, _posts) = Posts::start().await;
    let job = create_job(&app, json!({})).await;
    let agent = Agent::new(&app).await;
    let (_, reserved) = agent.reserve(&app, &job).await;
    let link = tracked(&reserved);
    let post = format!("{posts_url}/hang");
    let (status, body) = agent
        .complete(&app, &job, proof(&reserved, &post, &link))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let status =
        wait_verification(&app, &agent, &job, &["needs_human", "verified", "rejected"]).await;
    let v = &status["submission"]["verification"];
    assert_eq!(v["status"], json!("needs_human"), "{status}");
    assert_eq!(v["attempts"], json!(3));
    assert_eq!(status["payout"]["status"], json!("pending"));
    assert_eq!(rewards(&app).await, 0);

    let (code, queue) = app
        .admin(Method::GET, "/api/admin/jobs/submissions", None)
        .await;
    assert_eq!(code, StatusCode::OK, "{queue}");
    assert_eq!(queue["count"], json!(1));
    let id = queue["submissions"][0]["submission_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let approve = format!("/api/admin/jobs/submissions/{id}/approve");
    let (code, first) = app
        .admin(
            Method::POST,
            &approve,
            Some(&json!({"reason": "checked by hand"})),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{first}");
    assert_eq!(first["changed"], json!(true));
    assert_eq!(
        first["submission"]["verification"]["method"],
        json!("operator")
    );
    let (code, second) = app.admin(Method::POST, &approve, Some(&json!({}))).await;
    assert_eq!(code, StatusCode::OK, "{second}");
    assert_eq!(second["changed"], json!(false));
    let (code, body) = app
        .admin(
            Method::POST,
            &format!("/api/admin/jobs/submissions/{id}/reject"),
            Some(&json!({"reason": "changed my mind"})),
        )
        .await;
    assert_envelope(code, &body, 409, "JOB_SUBMISSION_ALREADY_REVIEWED");
    assert_eq!(rewards(&app).await, 1);
    let status = agent.status(&app, &job).await;
    assert_eq!(status["payout"]["wallet_balance_credits"], json!(250));
    let (_, queue) = app
        .admin(Method::GET, "/api/admin/jobs/submissions", None)
        .await;
    assert_eq!(queue["count"], json!(0));
}

async fn verify_and_approve_concurrently_pay_once(backend: Backend) {
    let app = app(backend).await;
    let (posts_url, posts) = Posts::start().await;
    for _ in 0..3 {
        let job = create_job(&app, json!({})).await;
        let agent = Agent::new(&app).await;
        let (_, reserved) = agent.reserve(&app, &job).await;
        let link = tracked(&reserved);
        // The page answers slowly, so the verifier is mid-check while operators approve.
        posts.put(&job, html(&format!("Paid AgentPMT share: {link}")), 0, 150);
        let post = format!("{posts_url}/post/{job}");
        let (status, done) = agent
            .complete(&app, &job, proof(&reserved, &post, &link))
            .await;
        assert_eq!(status, StatusCode::OK, "{done}");
        let id = done["submission"]["submission_id"]
            .as_str()
            .unwrap()
            .to_owned();
        tokio::time::sleep(Duration::from_millis(80)).await;
        let approve = format!("/api/admin/jobs/submissions/{id}/approve");
        let empty = json!({});
        let calls = (0..4).map(|_| app.admin(Method::POST, &approve, Some(&empty)));
        let answers = futures::future::join_all(calls).await;
        let changed = answers
            .iter()
            .filter(|(s, b)| *s == StatusCode::OK && b["changed"] == json!(true))
            .count();
        assert!(
            answers.iter().all(|(s, _)| *s == StatusCode::OK),
            "{answers:?}"
        );
        assert!(changed <= 1);
        wait_verification(&app, &agent, &job, &["verified"]).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let status = agent.status(&app, &job).await;
        assert_eq!(
            status["payout"]["wallet_balance_credits"],
            json!(250),
            "{status}"
        );
        assert_eq!(
            app.scalar(&format!(
                "SELECT COUNT(*) FROM ledger_entries WHERE entry_id = 'job_reward:{job}:1'"
            ))
            .await,
            1
        );
    }
    assert_eq!(rewards(&app).await, 3);
}

fn workflow_body() -> Value {
    json!({
        "name": "Handle inbound support ticket",
        "description": "Creates ticket, triages, and posts summary",
        "nodes": [
            {"id": "triage", "type": "prompt", "prompt": "Triage the ticket"},
            {"id": "tell", "type": "notify_human", "message": "Summary ready"}
        ],
        "edges": [{"id": "e1", "from": "triage", "to": "tell"}]
    })
}

async fn token_call(
    app: &TestApp,
    method: Method,
    path: &str,
    headers: &[(&str, String)],
    body: &Value,
) -> (StatusCode, Value) {
    let mut request = app.http.request(method, app.url(path)).json(body);
    for (k, v) in headers {
        request = request.header(*k, v);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn workflow_creation_job_and_token_scope(backend: Backend) {
    let app = app(backend).await;
    let wf = json!({"job_type": "workflow_creation", "target_url": null, "platform": null});
    let job = create_job(&app, wf.clone()).await;
    let other_job = create_job(&app, wf).await;
    let agent = Agent::new(&app).await;
    let (status, reserved) = agent.reserve(&app, &job).await;
    assert_eq!(status, StatusCode::OK, "{reserved}");
    assert!(reserved["job"].get("social_share").is_none());
    let token = reserved["workflow_access"]["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        reserved["workflow_access"]["expires_at"],
        reserved["job"]["reserved_until"]
    );
    let header = [("X-Job-Workflow-Token", format!("Bearer {token}"))];
    let create = format!("/api/external/jobs/{job}/workflow/create");

    // Refused: on another job, as a general bearer, without the header, unknown.
    let (status, body) = token_call(
        &app,
        Method::POST,
        &format!("/api/external/jobs/{other_job}/workflow/create"),
        &header,
        &workflow_body(),
    )
    .await;
    let details = assert_envelope(status, &body, 401, "JOB_WORKFLOW_TOKEN_INVALID");
    assert_eq!(details["reason"], json!("other_job"));
    let bearer = [("Authorization", format!("Bearer {token}"))];
    let (status, body) = token_call(&app, Method::POST, &create, &bearer, &workflow_body()).await;
    let details = assert_envelope(status, &body, 401, "JOB_WORKFLOW_TOKEN_INVALID");
    assert_eq!(details["reason"], json!("missing"));
    let (status, body) = token_call(
        &app,
        Method::POST,
        "/api/external/workflow-schedules/claim",
        &bearer,
        &json!({"request_id": "x", "limit": 1}),
    )
    .await;
    assert_envelope(status, &body, 401, "BEARER_UNAUTHORIZED");
    let (status, body) =
        token_call(&app, Method::POST, "/api/admin/jobs", &bearer, &json!({})).await;
    assert_envelope(status, &body, 401, "ADMIN_UNAUTHORIZED");
    let wrong = [("X-Job-Workflow-Token", "Bearer jwt_not_a_token".to_owned())];
    let (status, body) = token_call(&app, Method::POST, &create, &wrong, &workflow_body()).await;
    let details = assert_envelope(status, &body, 401, "JOB_WORKFLOW_TOKEN_INVALID");
    assert_eq!(details["reason"], json!("unknown"));
    assert_eq!(app.scalar("SELECT COUNT(*) FROM workflows").await, 0);

    // A graph whose edge points nowhere is refused.
    let mut bad = workflow_body();
    bad["edges"] = json!([{"id": "e1", "from": "triage", "to": "nowhere"}]);
    let (status, body) = token_call(&app, Method::POST, &create, &header, &bad).await;
    assert_envelope(status, &body, 422, "VALIDATION_ERROR");

    let (status, created) =
        token_call(&app, Method::POST, &create, &header, &workflow_body()).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let wf_id = created["workflow"]["workflow_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(created["workflow"]["status"], json!("draft"));
    assert_eq!(created["workflow"]["visibility"], json!("private"));
    let mut renamed = workflow_body();
    renamed["name"] = json!("Handle inbound tickets v2");
    let (status, updated) = token_call(
        &app,
        Method::PUT,
        &format!("/api/external/jobs/{job}/workflow/{wf_id}"),
        &header,
        &renamed,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["workflow"]["version"], json!(2));

    // Completing before publishing is refused.
    let completion = json!({"proof_text": "Built the workflow", "reservation_id": reserved["job"]["reservation_id"], "workflow_id": wf_id});
    let (status, body) = agent.complete(&app, &job, completion.clone()).await;
    assert_envelope(status, &body, 422, "JOB_PROOF_INVALID");
    let (status, published) = token_call(
        &app,
        Method::POST,
        &format!("/api/external/jobs/{job}/workflow/{wf_id}/publish"),
        &header,
        &json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{published}");
    assert_eq!(published["workflow"]["status"], json!("published"));
    assert_eq!(published["workflow"]["visibility"], json!("private"));
    // A workflow that this reservation did not create is refused as proof.
    let mut foreign = completion.clone();
    foreign["workflow_id"] = json!("0123456789abcdef01234567");
    let (status, body) = agent.complete(&app, &job, foreign).await;
    assert_envelope(status, &body, 422, "JOB_PROOF_INVALID");

    let (status, body) = agent.complete(&app, &job, completion).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let status = wait_verification(&app, &agent, &job, &["verified", "rejected"]).await;
    assert_eq!(
        status["submission"]["verification"]["status"],
        json!("verified"),
        "{status}"
    );
    assert_eq!(status["payout"]["wallet_balance_credits"], json!(250));
    // After submission the token is dead.
    let (status, body) = token_call(&app, Method::POST, &create, &header, &workflow_body()).await;
    let details = assert_envelope(status, &body, 401, "JOB_WORKFLOW_TOKEN_INVALID");
    assert_eq!(details["reason"], json!("reservation_ended"));

    // An expired token is refused.
    let (_, reserved) = agent.reserve(&app, &other_job).await;
    let token = reserved["workflow_access"]["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let header = [("X-Job-Workflow-Token", format!("Bearer {token}"))];
    let create = format!("/api/external/jobs/{other_job}/workflow/create");
    expire(&app, &other_job).await;
    let (status, body) = token_call(&app, Method::POST, &create, &header, &workflow_body()).await;
    let details = assert_envelope(status, &body, 401, "JOB_WORKFLOW_TOKEN_INVALID");
    assert_eq!(details["reason"], json!("expired"));
}

async fn list_paging_and_limits(backend: Backend) {
    let app = app(backend).await;
    let agent = Agent::new(&app).await;
    let mut jobs = Vec::new();
    for i in 0..3 {
        jobs.push(create_job(&app, json!({"title": format!("Job {i}")})).await);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (status, page) = agent.list(&app, json!({"limit": 2, "skip": 0})).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["count"], json!(2));
    assert_eq!(page["has_more"], json!(true));
    assert_eq!(page["jobs"][0]["job_id"], json!(jobs[2]));
    assert_eq!(page["jobs"][1]["job_id"], json!(jobs[1]));
    let (_, page) = agent.list(&app, json!({"limit": 2, "skip": 2})).await;
    assert_eq!(page["jobs"][0]["job_id"], json!(jobs[0]));
    assert_eq!(page["has_more"], json!(false));
    for (fields, field) in [
        (json!({"limit": 0}), "limit"),
        (json!({"limit": 101}), "limit"),
        (json!({"limit": 1_000_000_000_000i64}), "limit"),
        (json!({"skip": -1}), "skip"),
        (json!({"skip": 100_001}), "skip"),
    ] {
        let (status, body) = agent.list(&app, fields).await;
        assert_envelope(status, &body, 422, "VALIDATION_ERROR");
        assert_eq!(body["detail"][0]["loc"], json!(["body", field]), "{body}");
    }
    let (status, body) = agent.list(&app, json!({"limit": "ten"})).await;
    assert_envelope(status, &body, 422, "VALIDATION_ERROR");
}

async fn operator_input_and_rejection(backend: Backend) {
    let app = app(backend).await;
    let (posts_url, posts) = Posts::start().await;
    for (fields, field) in [
        (json!({"job_type": "dance"}), "job_type"),
        (json!({"reward_credits": 0}), "reward_credits"),
        (json!({"target_url": "ftp://x"}), "target_url"),
        (
            json!({"target_url": "https://www.agentpmt.com/p?utm_source=a"}),
            "target_url",
        ),
        (json!({"platform": "myspace"}), "platform"),
        (json!({"max_completions": 0}), "max_completions"),
        (json!({"on_reject": "explode"}), "on_reject"),
        (json!({"title": ""}), "title"),
    ] {
        let mut body = json!({
            "job_type": "social_share", "title": "t", "public_description": "d",
            "private_instructions": "p", "reward_credits": 5,
            "target_url": "https://www.agentpmt.com/p", "platform": "x",
        });
        for (k, v) in fields.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (status, answer) = app
            .admin(Method::POST, "/api/admin/jobs", Some(&body))
            .await;
        assert_envelope(status, &answer, 422, "VALIDATION_ERROR");
        assert_eq!(
            answer["detail"][0]["loc"],
            json!(["body", field]),
            "{answer}"
        );
    }
    let response = app
        .http
        .post(app.url("/api/admin/jobs"))
        .bearer_auth(format!("{ADMIN_TOKEN}-wrong"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.scalar("SELECT COUNT(*) FROM jobs").await, 0);

    // A general job closes when its submission is rejected.
    let job = create_job(
        &app,
        json!({"job_type": "general", "on_reject": "close", "target_url": null, "platform": null}),
    )
    .await;
    let agent = Agent::new(&app).await;
    let (status, reserved) = agent.reserve(&app, &job).await;
    assert_eq!(status, StatusCode::OK, "{reserved}");
    let (status, done) = agent
        .complete(&app, &job, json!({"proof_text": "Did the thing", "reservation_id": reserved["job"]["reservation_id"]}))
        .await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(
        done["submission"]["verification"]["status"],
        json!("needs_human")
    );
    let id = done["submission"]["submission_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let reject = format!("/api/admin/jobs/submissions/{id}/reject");
    let (status, body) = app.admin(Method::POST, &reject, Some(&json!({}))).await;
    assert_envelope(status, &body, 422, "VALIDATION_ERROR");
    let (status, body) = app
        .admin(
            Method::POST,
            &reject,
            Some(&json!({"reason": "no evidence"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["job"]["status"], json!("rejected"));
    assert_eq!(
        body["submission"]["verification"]["reason"],
        json!("no evidence")
    );
    let (status, body) = app
        .admin(
            Method::POST,
            "/api/admin/jobs/submissions/nope/approve",
            Some(&json!({})),
        )
        .await;
    assert_envelope(status, &body, 404, "JOB_SUBMISSION_NOT_FOUND");
    let other = Agent::new(&app).await;
    let (status, body) = other.reserve(&app, &job).await;
    assert_envelope(status, &body, 409, "JOB_NOT_AVAILABLE");

    // max_completions 2: reopens after the first paid completion, then finishes.
    let job = create_job(&app, json!({"max_completions": 2})).await;
    for round in 1..=2 {
        let agent = Agent::new(&app).await;
        let (status, reserved) = agent.reserve(&app, &job).await;
        assert_eq!(status, StatusCode::OK, "{reserved}");
        let link = tracked(&reserved);
        let key = format!("{job}-{round}");
        posts.put(&key, html(&format!("Paid AgentPMT share: {link}")), 0, 0);
        let post = format!("{posts_url}/post/{key}");
        let (status, body) = agent
            .complete(&app, &job, proof(&reserved, &post, &link))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        wait_verification(&app, &agent, &job, &["verified"]).await;
        // The paid wallet cannot take the job again.
        let (status, body) = agent.reserve(&app, &job).await;
        assert_envelope(status, &body, 409, "JOB_NOT_AVAILABLE");
    }
    let (_, view) = app
        .admin(Method::GET, &format!("/api/admin/jobs/{job}"), None)
        .await;
    assert_eq!(view["job"]["status"], json!("approved"), "{view}");
    assert_eq!(view["job"]["completions"], json!(2));
}

async fn two_instances_share_the_verification_queue(backend: Backend) {
    let app = app(backend).await;
    let second = spawn_on(&app.database_url, AppOptions::configured(configure)).await;
    let (posts_url, posts) = Posts::start().await;
    let mut done = Vec::new();
    for i in 0..6 {
        // Alternate instances for every call; both verifiers poll the same queue.
        let via = if i % 2 == 0 { &app } else { &second };
        let job = create_job(via, json!({})).await;
        let agent = Agent::new(via).await;
        let (status, reserved) = agent.reserve(via, &job).await;
        assert_eq!(status, StatusCode::OK, "{reserved}");
        let link = tracked(&reserved);
        posts.put(&job, html(&format!("Paid AgentPMT share: {link}")), 0, 60);
        let post = format!("{posts_url}/post/{job}");
        let (status, body) = agent
            .complete(via, &job, proof(&reserved, &post, &link))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        done.push((agent, job));
    }
    for (agent, job) in &done {
        let status = wait_verification(&app, agent, job, &["verified"]).await;
        assert_eq!(status["payout"]["wallet_balance_credits"], json!(250));
        // Checked once: exactly one instance claimed each submission.
        assert_eq!(posts.hits(job), 1, "job {job}");
    }
    assert_eq!(rewards(&app).await, 6);
}

async fn job_routes_are_documented(backend: Backend) {
    let app = app(backend).await;
    let (status, doc) = app.get("/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    let paths = &doc["paths"];
    for (path, method) in [
        ("/api/external/jobs/list", "post"),
        ("/api/external/jobs/{jobId}/reserve", "post"),
        ("/api/external/jobs/{jobId}/complete", "post"),
        ("/api/external/jobs/{jobId}/status", "post"),
        ("/api/external/jobs/{jobId}/workflow/create", "post"),
        ("/api/external/jobs/{jobId}/workflow/{workflowId}", "put"),
        (
            "/api/external/jobs/{jobId}/workflow/{workflowId}/publish",
            "post",
        ),
        ("/api/admin/jobs", "post"),
        ("/api/admin/jobs/{jobId}", "get"),
        ("/api/admin/jobs/submissions", "get"),
        ("/api/admin/jobs/submissions/{submissionId}/approve", "post"),
        ("/api/admin/jobs/submissions/{submissionId}/reject", "post"),
    ] {
        let operation = &paths[path][method];
        assert!(operation.is_object(), "{method} {path} missing");
        assert!(
            operation["responses"]["200"].is_object() || operation["responses"]["201"].is_object()
        );
    }
    assert!(doc["components"]["securitySchemes"]["job_workflow_token"].is_object());
    let (status, card) = app.get("/.well-known/agent.json").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(card["jobs"]["reservation_seconds"], json!(1800));
    assert_eq!(card["jobs"]["platforms"], json!(["linkedin", "x"]));
    assert!(card["auth"]["job_workflow_token"]["header"].is_string());
    for schema in [
        "JobReserveResponse",
        "JobCompleteBody",
        "JobStatusResponse",
        "JobListResponse",
    ] {
        assert!(doc["components"]["schemas"][schema].is_object(), "{schema}");
    }
}

async fn concurrent_completions_of_one_reservation_submit_once(backend: Backend) {
    let app = app(backend).await;
    let (posts_url, posts) = Posts::start().await;
    let job = create_job(&app, json!({})).await;
    let holder = Arc::new(Agent::new(&app).await);
    let (_, reserved) = holder.reserve(&app, &job).await;
    let link = tracked(&reserved);
    posts.put(&job, html(&format!("Paid AgentPMT share: {link}")), 0, 0);
    let post = format!("{posts_url}/post/{job}");
    let body = proof(&reserved, &post, &link);
    let app = Arc::new(app);
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let (app, holder, job, body) = (app.clone(), holder.clone(), job.clone(), body.clone());
            tokio::spawn(async move { holder.complete(&app, &job, body).await })
        })
        .collect();
    let mut accepted = 0;
    for task in tasks {
        let (status, answer) = task.await.unwrap();
        if status == StatusCode::OK {
            accepted += 1;
        } else {
            let details = assert_envelope(status, &answer, 409, "JOB_RESERVATION_REQUIRED");
            assert_eq!(details["reason"], json!("already_submitted"), "{answer}");
        }
    }
    assert_eq!(accepted, 1);
    assert_eq!(app.scalar("SELECT COUNT(*) FROM job_submissions").await, 1);
    wait_verification(&app, &holder, &job, &["verified"]).await;
    assert_eq!(rewards(&app).await, 1);
}

fn one_second_window(config: &mut ServerConfig) {
    configure(config);
    config.job_reservation_secs = 1;
    // Leave expiry to the reserve statement itself (no sweeper run in between).
    config.job_verify_interval_ms = 3_600_000;
}

async fn a_short_configured_window_expires_on_the_database_clock(backend: Backend) {
    let app = spawn_app_with(backend, AppOptions::configured(one_second_window)).await;
    let job = create_job(&app, json!({})).await;
    let (first, second) = (Agent::new(&app).await, Agent::new(&app).await);
    let (status, reserved) = first.reserve(&app, &job).await;
    assert_eq!(status, StatusCode::OK, "{reserved}");
    let until =
        chrono::DateTime::parse_from_rfc3339(reserved["job"]["reserved_until"].as_str().unwrap())
            .unwrap()
            .timestamp_millis();
    assert!(
        (until - chrono::Utc::now().timestamp_millis()).abs() < 1500,
        "{reserved}"
    );
    let (status, body) = second.reserve(&app, &job).await;
    let details = assert_envelope(status, &body, 409, "JOB_NOT_AVAILABLE");
    assert_eq!(details["reason"], json!("reserved"));
    assert!(details["reserved_until"].is_string());
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let (status, body) = second.reserve(&app, &job).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["job"]["reservation_id"], json!(format!("{job}-r2")));
    let status = first.status(&app, &job).await;
    assert_eq!(status["has_active_reservation"], json!(false));
}

async fn sdk_drives_a_workflow_creation_job(backend: Backend) {
    use agentpmt_protocol::jobs::{JobCompleteBody, JobCreateRequest, JobWorkflowWriteRequest};
    let app = app(backend).await;
    let admin = agentpmt_sdk::admin::AdminClient::new(
        &app.base_url,
        zeroize::Zeroizing::new(ADMIN_TOKEN.to_owned()),
    )
    .unwrap();
    let created = admin
        .create_job(&JobCreateRequest {
            job_type: "workflow_creation".into(),
            title: "Build a triage workflow".into(),
            public_description: "A workflow that triages tickets".into(),
            private_instructions: "Two nodes: triage, then tell a human".into(),
            reward_credits: 75,
            target_url: None,
            platform: None,
            max_completions: None,
            on_reject: None,
        })
        .await
        .unwrap();
    let job = created.job.summary.job_id.clone();
    let client = agentpmt_sdk::Client::new(&app.base_url, PrivateKey::random()).unwrap();
    let listed = client.list_jobs(Some(10), None).await.unwrap();
    assert_eq!(listed.jobs[0].job_id, job);
    let reserved = client.reserve_job(&job).await.unwrap();
    let token = reserved.workflow_access.unwrap().access_token;
    let graph: JobWorkflowWriteRequest = serde_json::from_value(workflow_body()).unwrap();
    let draft = client
        .create_job_workflow(&job, &token, &graph)
        .await
        .unwrap();
    let id = draft.workflow.summary.workflow_id.clone();
    let updated = client
        .update_job_workflow(&job, &id, &token, &graph)
        .await
        .unwrap();
    assert_eq!(updated.workflow.summary.version, 2);
    client
        .publish_job_workflow(&job, &id, &token)
        .await
        .unwrap();
    let done = client
        .complete_job(
            &job,
            &JobCompleteBody {
                proof_text: "Published the triage workflow".into(),
                reservation_id: Some(reserved.job.reservation_id.clone()),
                social_posts: None,
                workflow_id: Some(id.clone()),
            },
        )
        .await
        .unwrap();
    assert_eq!(done.job.status, "submitted");
    let mut paid = None;
    for _ in 0..200 {
        let status = client.job_status(&job).await.unwrap();
        if status.payout.status == "paid" {
            paid = Some(status);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let paid = paid.expect("the workflow job is verified and paid");
    assert_eq!(paid.payout.wallet_balance_credits, 75);
    // A refused call surfaces the error code.
    let err = client.reserve_job(&job).await.unwrap_err();
    assert_eq!(
        err.code(),
        Some(agentpmt_protocol::ErrorCode::JOB_NOT_AVAILABLE)
    );
    let decided = admin.job_submissions(Some("approved")).await.unwrap();
    assert_eq!(decided.count, 1);
    let again = admin
        .review_submission(&decided.submissions[0].submission_id, true, None)
        .await
        .unwrap();
    assert!(!again.changed);
    assert_eq!(rewards(&app).await, 1);
}

/// Seed 004's "Update Workflow Draft" sends only `{"description": ...}`: the other fields
/// keep their value. Graph errors point at the top-level `nodes`/`edges` that were sent.
async fn a_partial_workflow_update_keeps_what_it_leaves_out(backend: Backend) {
    let app = app(backend).await;
    let job = create_job(
        &app,
        json!({"job_type": "workflow_creation", "target_url": null, "platform": null}),
    )
    .await;
    let agent = Agent::new(&app).await;
    let (status, reserved) = agent.reserve(&app, &job).await;
    assert_eq!(status, StatusCode::OK, "{reserved}");
    let token = reserved["workflow_access"]["access_token"]
        .as_str()
        .unwrap();
    let header = [("X-Job-Workflow-Token", format!("Bearer {token}"))];
    let create = format!("/api/external/jobs/{job}/workflow/create");

    let mut bad = workflow_body();
    bad["edges"] = json!([{"id": "e1", "from": "triage", "to": "nowhere"}]);
    let (status, body) = token_call(&app, Method::POST, &create, &header, &bad).await;
    assert_envelope(status, &body, 422, "VALIDATION_ERROR");
    assert_eq!(
        body["detail"][0]["loc"],
        json!(["body", "edges", 0, "to"]),
        "{body}"
    );

    let (status, created) =
        token_call(&app, Method::POST, &create, &header, &workflow_body()).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["workflow"]["workflow_id"].as_str().unwrap();
    let update = format!("/api/external/jobs/{job}/workflow/{id}");
    let (status, updated) = token_call(
        &app,
        Method::PUT,
        &update,
        &header,
        &json!({"description": "Updated draft after testing"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    let workflow = &updated["workflow"];
    assert_eq!(
        workflow["description"],
        json!("Updated draft after testing")
    );
    assert_eq!(workflow["name"], created["workflow"]["name"]);
    assert_eq!(workflow["graph"], created["workflow"]["graph"]);
    assert_eq!(workflow["version"], json!(2));

    // Only the edges: the nodes stay; a bad edge is located where it was sent.
    let (status, body) = token_call(
        &app,
        Method::PUT,
        &update,
        &header,
        &json!({"edges": [{"id": "e9", "from": "tell", "to": "gone"}]}),
    )
    .await;
    assert_envelope(status, &body, 422, "VALIDATION_ERROR");
    assert_eq!(body["detail"][0]["loc"], json!(["body", "edges", 0, "to"]));
    let (status, body) =
        token_call(&app, Method::PUT, &update, &header, &json!({"name": ""})).await;
    assert_envelope(status, &body, 422, "VALIDATION_ERROR");
    let (status, body) =
        token_call(&app, Method::PUT, &update, &header, &json!({"other": 1})).await;
    assert_envelope(status, &body, 422, "VALIDATION_ERROR");
    let (status, same) = token_call(&app, Method::PUT, &update, &header, &json!({})).await;
    assert_eq!(status, StatusCode::OK, "{same}");
    assert_eq!(
        same["workflow"]["description"],
        json!("Updated draft after testing")
    );
    assert_eq!(same["workflow"]["graph"], created["workflow"]["graph"]);
}

/// A reserve answer lost in transit is recoverable: the holder reserving again gets its
/// live reservation (same id and window, the private instructions, the same tracked link)
/// and, for a workflow job, a fresh token that replaces the old one.
async fn the_holders_repeated_reserve_returns_its_reservation(backend: Backend) {
    let app = app(backend).await;
    let job = create_job(
        &app,
        json!({"job_type": "workflow_creation", "target_url": null, "platform": null}),
    )
    .await;
    let agent = Agent::new(&app).await;
    let (status, first) = agent.reserve(&app, &job).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let (status, again) = agent.reserve(&app, &job).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    for field in [
        "reservation_id",
        "reserved_until",
        "job_instructions",
        "status",
    ] {
        assert_eq!(again["job"][field], first["job"][field], "{field}: {again}");
    }
    assert_eq!(
        again["job"]["job_instructions"],
        json!("SECRET-INSTRUCTIONS: say something nice")
    );
    let old = first["workflow_access"]["access_token"].as_str().unwrap();
    let new = again["workflow_access"]["access_token"].as_str().unwrap();
    assert_ne!(old, new);
    assert_eq!(
        again["workflow_access"]["expires_at"],
        first["workflow_access"]["expires_at"]
    );
    let create = format!("/api/external/jobs/{job}/workflow/create");
    let (status, body) = token_call(
        &app,
        Method::POST,
        &create,
        &[("X-Job-Workflow-Token", format!("Bearer {old}"))],
        &workflow_body(),
    )
    .await;
    assert_envelope(status, &body, 401, "JOB_WORKFLOW_TOKEN_INVALID");
    let (status, body) = token_call(
        &app,
        Method::POST,
        &create,
        &[("X-Job-Workflow-Token", format!("Bearer {new}"))],
        &workflow_body(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // Another agent is still refused.
    let other = Agent::new(&app).await;
    let (status, body) = other.reserve(&app, &job).await;
    let details = assert_envelope(status, &body, 409, "JOB_NOT_AVAILABLE");
    assert_eq!(details["reason"], json!("reserved"));

    // A social share job: the same tracked link again.
    let share = create_job(&app, json!({})).await;
    let (_, first) = agent.reserve(&app, &share).await;
    let (status, again) = agent.reserve(&app, &share).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(
        again["job"]["reservation_id"],
        first["job"]["reservation_id"]
    );
    assert_eq!(again["job"]["social_share"], first["job"]["social_share"]);
    assert!(tracked(&again).contains("http"), "{again}");
}

/// The board reads open jobs and lapsed reservations separately (each in index order) and
/// merges them: one order, newest first, across pages; live reservations never listed.
async fn the_board_merges_open_and_lapsed_jobs_newest_first(backend: Backend) {
    let app = app(backend).await;
    let mut jobs = Vec::new();
    for _ in 0..5 {
        jobs.push(create_job(&app, json!({})).await);
    }
    // Distinct creation times, jobs[0] the oldest.
    for (i, job) in jobs.iter().enumerate() {
        app.execute(&format!(
            "UPDATE jobs SET created_at_ms = {} WHERE job_id = '{job}'",
            1_000_000 + i as i64
        ))
        .await
        .unwrap();
    }
    let agent = Agent::new(&app).await;
    // jobs[1] and jobs[3]: reservations that ran out (listed again); jobs[4]: live.
    for job in [&jobs[1], &jobs[3], &jobs[4]] {
        let (status, body) = agent.reserve(&app, job).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    expire(&app, &jobs[1]).await;
    expire(&app, &jobs[3]).await;
    let expected = [&jobs[3], &jobs[2], &jobs[1], &jobs[0]];

    let (status, all) = agent.list(&app, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{all}");
    let ids: Vec<&str> = all["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["job_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, expected.map(String::as_str), "{all}");
    assert_eq!(all["has_more"], json!(false));
    // Page by page, one job a page: the same order, has_more until the last.
    for (skip, job) in expected.iter().enumerate() {
        let (status, page) = agent.list(&app, json!({"limit": 1, "skip": skip})).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert_eq!(page["jobs"][0]["job_id"], json!(job), "skip {skip}: {page}");
        assert_eq!(page["has_more"], json!(skip + 1 < expected.len()), "{page}");
    }
    let (_, past) = agent.list(&app, json!({"limit": 2, "skip": 4})).await;
    assert_eq!(past["count"], json!(0), "{past}");
}
