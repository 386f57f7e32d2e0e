//! End-to-end tests of the two workers, `agentpmt jobs run` and `agentpmt schedules work`,
//! against a real server on a fresh SQLite database. The server runs on a runtime of its
//! own thread, so a test can kill it abruptly (its runtime is dropped with every task and
//! socket: no graceful drain, like kill -9) and start it again on the same port and
//! database. Workers are real `agentpmt` processes; signals are sent with kill(1).

use agentpmt_server::{Server, ServerConfig};
use base64::Engine as _;
use secrecy::SecretString;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const KEYS: [&str; 2] = [
    "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318",
    "0x1111111111111111111111111111111111111111111111111111111111111111",
];
const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
const TARGET: &str = "https://www.agentpmt.com/agent-workflow-skills/example";

/// A server on its own runtime thread; [`KillableServer::kill`] drops that runtime.
struct KillableServer {
    port: u16,
    db: PathBuf,
    reservation_secs: u64,
    kill: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn config(db: &Path, port: u16, reservation_secs: u64) -> ServerConfig {
    ServerConfig {
        job_reservation_secs: reservation_secs,
        bind: format!("127.0.0.1:{port}").parse().expect("address"),
        database_url: format!("sqlite://{}", db.display()),
        admin_token: Some(SecretString::from(ADMIN_TOKEN)),
        job_post_hosts: vec!["x=127.0.0.1".into()],
        job_verify_interval_ms: 50,
        job_verify_backoff_ms: 100,
        job_verify_timeout_ms: 1000,
        // Short sessions: the SDK renews with a margin relative to the lifetime.
        session_ttl_secs: 20,
        ..Default::default()
    }
}

impl KillableServer {
    fn start(db: &Path, port: u16, reservation_secs: u64) -> KillableServer {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (kill_tx, kill_rx) = tokio::sync::oneshot::channel::<()>();
        let db_path = db.to_owned();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let deadline = Instant::now() + Duration::from_secs(20);
                let server = loop {
                    match Server::build(config(&db_path, port, reservation_secs)).await {
                        Ok(s) => break s,
                        // The old listener's port may take a moment to free up.
                        Err(e) if Instant::now() < deadline => {
                            eprintln!("server start: {e}; retrying");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        Err(e) => panic!("server starts: {e}"),
                    }
                };
                addr_tx.send(server.local_addr().port()).expect("port");
                tokio::select! {
                    _ = server.run_until(std::future::pending()) => {}
                    _ = kill_rx => {}
                }
            });
            // Like kill -9: every task and socket dropped, nothing drained.
            runtime.shutdown_background();
        });
        let port = addr_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("server port");
        KillableServer {
            port,
            db: db.to_owned(),
            reservation_secs,
            kill: Some(kill_tx),
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn kill(&mut self) {
        if let Some(k) = self.kill.take() {
            let _ = k.send(());
        }
        if let Some(t) = self.thread.take() {
            t.join().expect("server thread");
        }
    }

    fn restart(&mut self) {
        self.kill();
        *self = KillableServer::start(&self.db.clone(), self.port, self.reservation_secs);
    }
}

impl Drop for KillableServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One test's world: a server, a budget with its bearer, a workflow, a social site.
struct World {
    server: KillableServer,
    dir: TempDir,
    http: reqwest::Client,
    bearer: String,
    budget_id: String,
    workflow_id: String,
    site: String,
}

impl World {
    async fn new() -> World {
        World::with_reservation_secs(1800).await
    }

    /// A world whose job reservations last `reservation_secs`.
    async fn with_reservation_secs(reservation_secs: u64) -> World {
        let dir = tempfile::tempdir().expect("temp dir");
        let server = KillableServer::start(&dir.path().join("db.sqlite"), 0, reservation_secs);
        std::fs::create_dir_all(dir.path().join("posts")).unwrap();
        let site = social_site(dir.path().join("posts")).await;
        let mut world = World {
            server,
            dir,
            http: reqwest::Client::new(),
            bearer: String::new(),
            budget_id: String::new(),
            workflow_id: String::new(),
            site,
        };
        let created = world
            .admin(
                "/api/admin/workflows",
                json!({"slug": "nightly", "name": "Nightly", "publisher": "Acme",
                   "graph": {"nodes": [{"id": "p", "type": "prompt", "prompt": "Go"}], "edges": []}}),
            )
            .await;
        world.workflow_id = created["workflow"]["workflow_id"]
            .as_str()
            .unwrap()
            .to_owned();
        world
            .admin(
                &format!("/api/admin/workflows/{}/publish", world.workflow_id),
                json!({}),
            )
            .await;
        let account = world
            .admin("/api/admin/accounts", json!({"name": "Ops"}))
            .await;
        let account_id = account["account"]["account_id"]
            .as_str()
            .unwrap()
            .to_owned();
        let key = world
            .admin(
                &format!("/api/admin/accounts/{account_id}/api-keys"),
                json!({}),
            )
            .await;
        let budget = world
            .admin(
                &format!("/api/admin/accounts/{account_id}/budgets"),
                json!({"name": "Nightly", "cap_credits": 1000}),
            )
            .await;
        world.budget_id = budget["budget"]["budget_id"].as_str().unwrap().to_owned();
        world.bearer = base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            key["api_key"].as_str().unwrap(),
            budget["budget_key"].as_str().unwrap()
        ));
        world
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    async fn admin(&self, path: &str, body: Value) -> Value {
        let response = self
            .http
            .post(format!("{}{path}", self.server.url()))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
            .await
            .expect("admin request");
        let status = response.status().as_u16();
        let body: Value = response.json().await.expect("JSON");
        assert!(status == 200 || status == 201, "{status}: {body}");
        body
    }

    /// A schedule first due at `start` (RFC 3339), daily; returns its id.
    async fn schedule(&self, name: &str, start: &str) -> String {
        let created = self
            .admin(
                &format!("/api/admin/budgets/{}/workflow-schedules", self.budget_id),
                json!({"workflow_id": self.workflow_id, "name": name, "prompt": format!("do {name}"),
                       "recurrence": {"interval_seconds": 86400}, "start_at": start}),
            )
            .await;
        let id = created["schedule"]["schedule_id"]
            .as_str()
            .or_else(|| created["data"]["schedule"]["schedule_id"].as_str())
            .or_else(|| created["schedule_id"].as_str());
        id.map(str::to_owned).unwrap_or_else(|| panic!("{created}"))
    }

    async fn job(&self, title: &str) -> String {
        let body = self
            .admin(
                "/api/admin/jobs",
                json!({
                    "job_type": "social_share", "title": title,
                    "public_description": "Share the example workflow",
                    "private_instructions": "Post the tracked link on x", "reward_credits": 40,
                    "target_url": TARGET, "platform": "x"
                }),
            )
            .await;
        body["job"]["job_id"].as_str().unwrap().to_owned()
    }

    /// `GET …/due` as the budget, as of 2 days after the server's clock: every (daily)
    /// schedule, with `claimed` and its current `due_at`.
    async fn due(&self) -> Vec<Value> {
        let get = |as_of: Option<String>| {
            let mut request = self
                .http
                .get(format!(
                    "{}/api/external/workflow-schedules/due",
                    self.server.url()
                ))
                .bearer_auth(&self.bearer)
                .query(&[("limit", "100")]);
            if let Some(as_of) = as_of {
                request = request.query(&[("as_of", as_of)]);
            }
            async move {
                let body: Value = request
                    .send()
                    .await
                    .expect("due")
                    .json()
                    .await
                    .expect("JSON");
                assert!(body["data"]["items"].is_array(), "a due list: {body}");
                body
            }
        };
        let now = get(None).await;
        let server_now =
            chrono::DateTime::parse_from_rfc3339(now["data"]["as_of"].as_str().unwrap())
                .expect("as_of");
        let ahead = (server_now + chrono::Duration::days(2))
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        get(Some(ahead)).await["data"]["items"]
            .as_array()
            .cloned()
            .unwrap()
    }

    /// The CLI against this server with no AGENTPMT_* of the developer's.
    fn cli(&self) -> Command {
        let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("agentpmt"));
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("AGENTPMT_") {
                cmd.env_remove(name);
            }
        }
        cmd.env("AGENTPMT_HOME", self.dir.path())
            .env("SOCIAL_SITE", &self.site)
            .env("SOCIAL_DIR", self.path("posts"))
            .env("LOG_DIR", self.dir.path())
            .args(["--server", &self.server.url(), "--json"]);
        cmd
    }

    fn schedules_worker(&self, args: &[&str], script: &str) -> Worker {
        let mut cmd = self.cli();
        cmd.env("AGENTPMT_BEARER_TOKEN", &self.bearer)
            .args(["schedules", "work"])
            .args(args)
            .args(["--", "sh", "-c", script]);
        Worker::spawn(cmd)
    }
}

/// A minimal social site: `GET /p/<name>` shows the file `<dir>/<name>` as a post page.
async fn social_site(dir: PathBuf) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let dir = dir.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let n = socket.read(&mut buf).await.unwrap_or(0);
                let request = String::from_utf8_lossy(&buf[..n]).to_string();
                let path = request.split_whitespace().nth(1).unwrap_or("/").to_owned();
                let name = path.trim_start_matches("/p/");
                let text = if name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                    std::fs::read_to_string(dir.join(name)).unwrap_or_default()
                } else {
                    String::new()
                };
                let body = format!(
                    "<html><head></head><body><p>Great tool: {}</p></body></html>",
                    text.trim()
                );
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    url
}

/// A running worker process.
struct Worker {
    child: Child,
}

/// A finished worker: exit status, its JSON events, stderr.
#[derive(Debug)]
struct Finished {
    code: Option<i32>,
    events: Vec<Value>,
    stderr: String,
}

impl Finished {
    fn summary(&self) -> &Value {
        let last = self
            .events
            .last()
            .unwrap_or_else(|| panic!("no events; stderr: {}", self.stderr));
        assert_eq!(last["event"], json!("summary"), "{self:?}");
        last
    }

    fn count(&self, event: &str) -> usize {
        self.events
            .iter()
            .filter(|e| e["event"] == json!(event))
            .count()
    }
}

impl Worker {
    fn spawn(mut cmd: Command) -> Worker {
        let child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("worker starts");
        Worker { child }
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits for the worker to exit (at most `limit`).
    async fn finish(mut self, limit: Duration) -> Finished {
        let deadline = Instant::now() + limit;
        while self.child.try_wait().expect("wait").is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let out = self.child.wait_with_output().expect("output");
                panic!(
                    "the worker did not exit in {limit:?}; stderr: {}\nstdout: {}",
                    String::from_utf8_lossy(&out.stderr),
                    String::from_utf8_lossy(&out.stdout)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let out = self.child.wait_with_output().expect("output");
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        let events = stdout
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l)
                    .unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {l}\n{stdout}"))
            })
            .collect::<Vec<_>>();
        for e in &events {
            assert!(
                e["ts"]
                    .as_str()
                    .is_some_and(|t| t.ends_with('Z') && t.contains('T')),
                "an RFC 3339 timestamp on every event: {e}"
            );
        }
        Finished {
            code: out.status.code(),
            events,
            stderr,
        }
    }
}

/// Waits until `path` exists (a CMD's "I started" marker).
async fn wait_for_file(path: &Path, limit: Duration) {
    let deadline = Instant::now() + limit;
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn rfc3339_in(secs: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::seconds(secs))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The job CMD: "posts" the tracked link (a file on the social site), logs the job id to
/// `$LOG_DIR/jobs.log`, and prints the proof. `$1` seconds of work first.
const JOB_CMD: &str = r#"
input=$(cat)
touch "$LOG_DIR/job-started-$AGENTPMT_JOB_ID"
sleep "${JOB_SLEEP:-0}"
link=$(printf '%s' "$input" | sed -n 's/.*"tracking_links":\["\([^"]*\)".*/\1/p')
printf '%s' "$link" > "$SOCIAL_DIR/$AGENTPMT_JOB_ID"
echo "$AGENTPMT_JOB_ID" >> "$LOG_DIR/jobs.log"
printf '{"proof_text":"Posted it","social_posts":[{"platform":"x","post_url":"%s/p/%s","target_url_used":"%s","message_text":""}]}' "$SOCIAL_SITE" "$AGENTPMT_JOB_ID" "$link"
"#;

/// The schedule CMD: logs `id due_at` to `$LOG_DIR/schedules.log` after `$SCHEDULE_SLEEP`.
const SCHEDULE_CMD: &str = r#"
touch "$LOG_DIR/schedule-started-$AGENTPMT_SCHEDULE_ID"
sleep "${SCHEDULE_SLEEP:-0}"
echo "$AGENTPMT_SCHEDULE_ID $AGENTPMT_SCHEDULE_DUE_AT" >> "$LOG_DIR/schedules.log"
"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_cmd_claims_and_reserves_nothing() {
    let world = World::new().await;
    world.schedule("a", "2026-01-01T00:00:00Z").await;
    let job = world.job("Share it").await;

    let mut cmd = world.cli();
    cmd.env("AGENTPMT_BEARER_TOKEN", &world.bearer).args([
        "schedules",
        "work",
        "--",
        "/no/such/cmd",
    ]);
    let done = Worker::spawn(cmd).finish(Duration::from_secs(20)).await;
    assert_eq!(done.code, Some(4), "{done:?}");
    let due = world.due().await;
    assert_eq!(due.len(), 1);
    assert_eq!(
        due[0]["claimed"],
        json!(false),
        "nothing was claimed: {due:?}"
    );

    let mut cmd = world.cli();
    cmd.env("AGENTPMT_PRIVATE_KEY", KEYS[0])
        .args(["jobs", "run", "--", "no-such-cmd-anywhere"]);
    let done = Worker::spawn(cmd).finish(Duration::from_secs(20)).await;
    assert_eq!(done.code, Some(4), "{done:?}");
    // The job is still open: another wallet can reserve it.
    let mut cmd = world.cli();
    cmd.env("AGENTPMT_PRIVATE_KEY", KEYS[1])
        .args(["jobs", "reserve", &job]);
    assert!(cmd.status().unwrap().success(), "the job was left open");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cmd_environment_carries_no_secrets() {
    let world = World::new().await;
    world.schedule("a", "2026-01-01T00:00:00Z").await;
    world.job("Share it").await;
    let secrets = [
        ("AGENTPMT_KEYSTORE_PASSWORD", "hunter2-password"),
        ("AGENTPMT_ADMIN_TOKEN", ADMIN_TOKEN),
        ("AGENTPMT_API_KEY", "some-api-key-value"),
        ("AGENTPMT_BUDGET_KEY", "some-budget-key-value"),
    ];
    let dump = |name: &str| format!("env > \"$LOG_DIR/{name}.env\"; {}", JOB_CMD);

    let mut cmd = world.cli();
    cmd.env("AGENTPMT_BEARER_TOKEN", &world.bearer)
        .envs(secrets)
        .args([
            "schedules",
            "work",
            "--",
            "sh",
            "-c",
            "env > \"$LOG_DIR/schedule.env\"",
        ]);
    let done = Worker::spawn(cmd).finish(Duration::from_secs(30)).await;
    assert_eq!(done.code, Some(0), "{done:?}");

    let mut cmd = world.cli();
    cmd.env("AGENTPMT_PRIVATE_KEY", KEYS[0])
        .envs(secrets)
        .args([
            "jobs",
            "run",
            "--wait-secs",
            "0",
            "--",
            "sh",
            "-c",
            &dump("job"),
        ]);
    let done = Worker::spawn(cmd).finish(Duration::from_secs(30)).await;
    assert_eq!(done.code, Some(0), "{done:?}");

    for (file, wanted) in [
        (
            "schedule.env",
            vec![
                "AGENTPMT_SCHEDULE_ID=",
                "AGENTPMT_SCHEDULE_DUE_AT=",
                "AGENTPMT_CLAIM_TOKEN=",
            ],
        ),
        (
            "job.env",
            vec!["AGENTPMT_JOB_ID=", "AGENTPMT_RESERVATION_ID="],
        ),
    ] {
        let env = std::fs::read_to_string(world.path(file)).expect("CMD ran");
        for w in wanted {
            assert!(env.contains(w), "{file} lacks {w}: {env}");
        }
        let secret_values = [KEYS[0].trim_start_matches("0x"), world.bearer.as_str()]
            .into_iter()
            .chain(secrets.iter().map(|(_, v)| *v));
        for value in secret_values {
            assert!(!env.contains(value), "{file} carries a secret: {env}");
        }
        for name in [
            "AGENTPMT_PRIVATE_KEY",
            "AGENTPMT_KEYSTORE_PASSWORD",
            "AGENTPMT_ADMIN_TOKEN",
            "AGENTPMT_BEARER_TOKEN",
            "AGENTPMT_API_KEY",
            "AGENTPMT_BUDGET_KEY",
        ] {
            assert!(!env.contains(&format!("{name}=")), "{file} has {name}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn exit_75_with_watch_backs_off_before_claiming_again() {
    let world = World::new().await;
    world.schedule("retry", "2026-01-01T00:00:00Z").await;
    let script = "echo run >> \"$LOG_DIR/runs.log\"; exit 75";
    let worker = world.schedules_worker(
        &[
            "--watch",
            "1",
            "--release-backoff-secs",
            "1",
            "--lease-seconds",
            "60",
        ],
        script,
    );
    tokio::time::sleep(Duration::from_secs(6)).await;
    worker.signal("TERM");
    let done = worker.finish(Duration::from_secs(15)).await;
    let runs = lines(&world.path("runs.log")).len();
    // Backoff 0.5-1 s, 1-2 s, 2-4 s, …: at most 5 claims in 6 s (without it: thousands).
    assert!((2..=5).contains(&runs), "{runs} runs: {done:?}");
    assert_eq!(done.count("released"), runs);
    assert!(done.count("backoff") >= runs - 1);
    // Every occurrence it handled was released: status 3.
    assert_eq!(done.code, Some(3), "{done:?}");
    let due = world.due().await;
    assert_eq!(
        due[0]["claimed"],
        json!(false),
        "released, not held: {due:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_cmd_completes_or_releases_never_holds() {
    let world = World::new().await;
    // A CMD that finishes within the grace period: its occurrence is advanced.
    let quick = world.schedule("quick", "2026-01-01T00:00:00Z").await;
    let mut cmd = world.cli();
    cmd.env("AGENTPMT_BEARER_TOKEN", &world.bearer)
        .env("SCHEDULE_SLEEP", "1")
        .args([
            "schedules",
            "work",
            "--watch",
            "1",
            "--grace-secs",
            "5",
            "--",
            "sh",
            "-c",
            SCHEDULE_CMD,
        ]);
    let worker = Worker::spawn(cmd);
    wait_for_file(
        &world.path(&format!("schedule-started-{quick}")),
        Duration::from_secs(20),
    )
    .await;
    worker.signal("TERM");
    let done = worker.finish(Duration::from_secs(15)).await;
    assert_eq!(done.code, Some(0), "{done:?}");
    assert_eq!(done.count("advanced"), 1, "{done:?}");
    assert_eq!(lines(&world.path("schedules.log")).len(), 1);

    // A CMD that outlives the grace period: terminated, and its occurrence released.
    let slow = world.schedule("slow", "2026-01-01T00:00:00Z").await;
    let mut cmd = world.cli();
    cmd.env("AGENTPMT_BEARER_TOKEN", &world.bearer)
        .env("SCHEDULE_SLEEP", "60")
        .args([
            "schedules",
            "work",
            "--watch",
            "1",
            "--grace-secs",
            "1",
            "--",
            "sh",
            "-c",
            SCHEDULE_CMD,
        ]);
    std::fs::remove_file(world.path("schedules.log")).unwrap();
    let worker = Worker::spawn(cmd);
    wait_for_file(
        &world.path(&format!("schedule-started-{slow}")),
        Duration::from_secs(20),
    )
    .await;
    let began = Instant::now();
    worker.signal("TERM");
    let done = worker.finish(Duration::from_secs(15)).await;
    assert!(
        began.elapsed() < Duration::from_secs(8),
        "grace 1 s + kill 2 s"
    );
    assert_eq!(done.count("released"), 1, "{done:?}");
    assert_eq!(done.code, Some(3), "{done:?}");
    let due = world.due().await;
    let slow: Vec<&Value> = due.iter().filter(|d| d["name"] == json!("slow")).collect();
    assert_eq!(
        slow[0]["claimed"],
        json!(false),
        "released, not held: {due:?}"
    );
    assert!(
        lines(&world.path("schedules.log")).is_empty(),
        "the CMD was stopped"
    );

    // A job whose CMD finishes within the grace period is completed.
    let job = world.job("Share it").await;
    let mut cmd = world.cli();
    cmd.env("AGENTPMT_PRIVATE_KEY", KEYS[0])
        .env("JOB_SLEEP", "1")
        .args([
            "jobs",
            "run",
            "--wait-secs",
            "0",
            "--watch",
            "1",
            "--grace-secs",
            "5",
            "--",
            "sh",
            "-c",
            JOB_CMD,
        ]);
    let worker = Worker::spawn(cmd);
    wait_for_file(
        &world.path(&format!("job-started-{job}")),
        Duration::from_secs(20),
    )
    .await;
    worker.signal("TERM");
    let done = worker.finish(Duration::from_secs(15)).await;
    assert_eq!(done.code, Some(0), "{done:?}");
    assert_eq!(done.summary()["counts"]["submitted"], json!(1), "{done:?}");

    // A second signal stops at once (130).
    let again = world.job("Share it again").await;
    let mut cmd = world.cli();
    cmd.env("AGENTPMT_PRIVATE_KEY", KEYS[0])
        .env("JOB_SLEEP", "60")
        .args([
            "jobs",
            "run",
            "--wait-secs",
            "0",
            "--grace-secs",
            "30",
            "--",
            "sh",
            "-c",
            JOB_CMD,
        ]);
    let worker = Worker::spawn(cmd);
    wait_for_file(
        &world.path(&format!("job-started-{again}")),
        Duration::from_secs(20),
    )
    .await;
    worker.signal("TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    worker.signal("INT");
    let done = worker.finish(Duration::from_secs(5)).await;
    assert_eq!(done.code, Some(130), "{done:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lease_that_expires_mid_cmd_is_logged_and_the_worker_goes_on() {
    let world = World::new().await;
    let slow = world.schedule("slow", "2026-01-01T00:00:00Z").await;
    world.schedule("fast", "2026-01-01T00:10:00Z").await;
    // The first run of "slow" outlives its 2 s lease; later runs are quick.
    let script = r#"
if [ "$AGENTPMT_SCHEDULE_NAME" = slow ] && [ ! -e "$LOG_DIR/slow-once" ]; then
  touch "$LOG_DIR/slow-once"; sleep 4
fi
echo "$AGENTPMT_SCHEDULE_NAME" >> "$LOG_DIR/runs.log"
"#;
    let worker = world.schedules_worker(&["--lease-seconds", "2"], script);
    let done = worker.finish(Duration::from_secs(30)).await;
    assert_eq!(done.code, Some(0), "{done:?}");
    let lost: Vec<&Value> = done
        .events
        .iter()
        .filter(|e| e["event"] == json!("lease_lost"))
        .collect();
    assert_eq!(lost.len(), 1, "{done:?}");
    assert_eq!(lost[0]["schedule_id"], json!(slow));
    assert!(lost[0]["due_at"].as_str().is_some());
    // Handled once: one successful advance per schedule, and nothing is due any more.
    let advanced: Vec<&Value> = done
        .events
        .iter()
        .filter(|e| e["event"] == json!("advanced"))
        .collect();
    assert_eq!(advanced.len(), 2, "{done:?}");
    let mut ids: Vec<&str> = advanced
        .iter()
        .map(|e| e["schedule_id"].as_str().unwrap())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 2);
    let due = world.due().await;
    assert_eq!(due.len(), 2, "{due:?}");
    assert!(
        due.iter()
            .all(|d| d["due_at"].as_str().unwrap() > "2026-01-02"),
        "both moved on: {due:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn workers_survive_a_server_killed_and_restarted_mid_cmd() {
    let mut world = World::new().await;
    let schedule = world.schedule("nightly", "2026-01-01T00:00:00Z").await;
    let job = world.job("Share it").await;
    let mut cmd = world.cli();
    cmd.env("AGENTPMT_BEARER_TOKEN", &world.bearer)
        .env("SCHEDULE_SLEEP", "3")
        .args([
            "schedules",
            "work",
            "--watch",
            "1",
            "--retry-max-secs",
            "1",
            "--",
            "sh",
            "-c",
            SCHEDULE_CMD,
        ]);
    let schedules = Worker::spawn(cmd);
    let mut cmd = world.cli();
    cmd.env("AGENTPMT_PRIVATE_KEY", KEYS[0])
        .env("JOB_SLEEP", "3")
        .args([
            "jobs",
            "run",
            "--wait-secs",
            "0",
            "--watch",
            "1",
            "--retry-max-secs",
            "1",
            "--",
            "sh",
            "-c",
            JOB_CMD,
        ]);
    let jobs = Worker::spawn(cmd);
    wait_for_file(
        &world.path(&format!("schedule-started-{schedule}")),
        Duration::from_secs(20),
    )
    .await;
    wait_for_file(
        &world.path(&format!("job-started-{job}")),
        Duration::from_secs(20),
    )
    .await;
    world.server.kill();
    // Down while both CMDs finish and the workers try to submit.
    tokio::time::sleep(Duration::from_secs(5)).await;
    world.server.restart();
    // Both items get handled after the restart.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let due = world.due().await;
        assert_eq!(due.len(), 1, "{due:?}");
        let moved = due
            .iter()
            .all(|d| d["due_at"].as_str().unwrap() > "2026-01-02");
        let mut cmd = world.cli();
        cmd.env("AGENTPMT_PRIVATE_KEY", KEYS[0])
            .args(["jobs", "status", &job]);
        let status: Value =
            serde_json::from_slice(&cmd.output().unwrap().stdout).unwrap_or_default();
        if moved && status["submission"].is_object() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not handled after the restart: {due:?} {status}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    schedules.signal("TERM");
    jobs.signal("TERM");
    let schedules = schedules.finish(Duration::from_secs(15)).await;
    let jobs = jobs.finish(Duration::from_secs(15)).await;
    for done in [&schedules, &jobs] {
        assert_eq!(done.code, Some(0), "{done:?}");
        assert!(done.count("retrying") >= 1, "it retried: {done:?}");
    }
    assert_eq!(schedules.count("advanced"), 1, "{schedules:?}");
    assert_eq!(jobs.summary()["counts"]["submitted"], json!(1), "{jobs:?}");
    assert_eq!(
        lines(&world.path("schedules.log")).len(),
        1,
        "the CMD ran once"
    );
    assert_eq!(
        lines(&world.path("jobs.log")),
        vec![job],
        "the CMD ran once"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_workers_of_each_kind_handle_every_item_exactly_once() {
    let world = World::new().await;
    // Schedules that fall due one after another over the run, and jobs: some open at the
    // start, more posted while the workers run.
    let mut schedules = Vec::new();
    for i in 0..16 {
        schedules.push(
            world
                .schedule(&format!("s{i}"), &rfc3339_in(i * 2 - 2))
                .await,
        );
    }
    let mut jobs = Vec::new();
    for i in 0..6 {
        jobs.push(world.job(&format!("Share it {i}")).await);
    }
    let mut workers = Vec::new();
    for _ in 0..2 {
        let mut cmd = world.cli();
        cmd.env("AGENTPMT_BEARER_TOKEN", &world.bearer)
            .env("SCHEDULE_SLEEP", "0.3")
            .args([
                "schedules",
                "work",
                "--watch",
                "1",
                "--",
                "sh",
                "-c",
                SCHEDULE_CMD,
            ]);
        workers.push(Worker::spawn(cmd));
    }
    for key in KEYS {
        let mut cmd = world.cli();
        cmd.env("AGENTPMT_PRIVATE_KEY", key)
            .env("JOB_SLEEP", "0.3")
            .args([
                "jobs",
                "run",
                "--wait-secs",
                "0",
                "--watch",
                "1",
                "--",
                "sh",
                "-c",
                JOB_CMD,
            ]);
        workers.push(Worker::spawn(cmd));
    }
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_secs(3)).await;
        if jobs.len() < 14 {
            jobs.push(world.job(&format!("Share it {}", jobs.len())).await);
        }
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut finished = Vec::new();
    for w in &workers {
        w.signal("TERM");
    }
    for w in workers {
        finished.push(w.finish(Duration::from_secs(20)).await);
    }
    for done in &finished {
        assert_eq!(done.code, Some(0), "{done:?}");
    }
    let advanced: usize = finished[..2]
        .iter()
        .map(|d| d.summary()["counts"]["advanced"].as_u64().unwrap() as usize)
        .sum();
    let submitted: usize = finished[2..]
        .iter()
        .map(|d| d.summary()["counts"]["submitted"].as_u64().unwrap() as usize)
        .sum();
    let ran_schedules = lines(&world.path("schedules.log"));
    let ran_jobs = lines(&world.path("jobs.log"));
    eprintln!(
        "two workers each: {} occurrences advanced ({} CMD runs), {} jobs submitted ({} CMD runs), per worker {:?}",
        advanced,
        ran_schedules.len(),
        submitted,
        ran_jobs.len(),
        finished.iter().map(|d| d.summary()["counts"].clone()).collect::<Vec<_>>()
    );
    let mut per_item: HashMap<String, usize> = HashMap::new();
    for l in ran_schedules.iter().chain(ran_jobs.iter()) {
        *per_item.entry(l.clone()).or_default() += 1;
    }
    assert!(
        per_item.values().all(|n| *n == 1),
        "handled twice: {per_item:?}"
    );
    assert_eq!(
        advanced,
        schedules.len(),
        "every occurrence: {ran_schedules:?}"
    );
    assert_eq!(ran_schedules.len(), schedules.len());
    assert_eq!(submitted, jobs.len(), "every job: {ran_jobs:?}");
    assert_eq!(ran_jobs.len(), jobs.len());
    // Both workers of each kind took part.
    for done in &finished {
        assert!(
            done.summary()["counts"]["handled"].as_u64().unwrap() > 0,
            "{done:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_timed_out_cmd_releases_and_an_abandoned_job_is_retried_after_its_reservation_lapsed() {
    let world = World::with_reservation_secs(3).await;
    // schedules: --timeout-secs stops CMD and releases its occurrence.
    let slow = world.schedule("slow", "2026-01-01T00:00:00Z").await;
    let mut cmd = world.cli();
    cmd.env("AGENTPMT_BEARER_TOKEN", &world.bearer)
        .env("SCHEDULE_SLEEP", "60")
        .args([
            "schedules",
            "work",
            "--timeout-secs",
            "1",
            "--lease-seconds",
            "5",
        ])
        .args(["--", "sh", "-c", SCHEDULE_CMD]);
    let began = Instant::now();
    let done = Worker::spawn(cmd).finish(Duration::from_secs(20)).await;
    assert!(
        began.elapsed() < Duration::from_secs(10),
        "timeout 1 s + kill 2 s"
    );
    let released: Vec<&Value> = done
        .events
        .iter()
        .filter(|e| e["event"] == json!("released"))
        .collect();
    assert_eq!(released.len(), 1, "{done:?}");
    assert_eq!(released[0]["schedule_id"], json!(slow));
    assert!(
        released[0]["note"].as_str().unwrap().contains("timed out"),
        "{done:?}"
    );
    // The lease covered timeout + grace + 30 s.
    assert_eq!(done.events[0]["lease_seconds"], json!(41), "{done:?}");
    let due = world.due().await;
    assert_eq!(
        due[0]["claimed"],
        json!(false),
        "released, not held: {due:?}"
    );

    // jobs: the first attempt fails; once the 3 s reservation lapsed the job is open again
    // and this worker tries it again (attempt 2), which succeeds.
    let job = world.job("Share it").await;
    let script = format!(
        "[ -e \"$LOG_DIR/failed-once\" ] || {{ touch \"$LOG_DIR/failed-once\"; exit 9; }}; {JOB_CMD}"
    );
    let mut cmd = world.cli();
    cmd.env("AGENTPMT_PRIVATE_KEY", KEYS[0]).args([
        "jobs",
        "run",
        "--wait-secs",
        "0",
        "--watch",
        "1",
        "--retry-backoff-secs",
        "1",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    let worker = Worker::spawn(cmd);
    let deadline = Instant::now() + Duration::from_secs(20);
    while lines(&world.path("jobs.log")).is_empty() {
        assert!(Instant::now() < deadline, "the job was never retried");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    worker.signal("TERM");
    let done = worker.finish(Duration::from_secs(15)).await;
    assert_eq!(done.code, Some(0), "{done:?}");
    let reserved: Vec<&Value> = done
        .events
        .iter()
        .filter(|e| e["event"] == json!("reserved"))
        .collect();
    assert_eq!(reserved.len(), 2, "{done:?}");
    assert_eq!(reserved[1]["job_id"], json!(job));
    assert_eq!(reserved[1]["attempt"], json!(2));
    assert_eq!(done.summary()["counts"]["submitted"], json!(1), "{done:?}");
    assert_eq!(done.summary()["counts"]["abandoned"], json!(1), "{done:?}");
}
