//! End-to-end test of `agentpmt jobs …` against a real server spawned in-process on port 0
//! (fresh SQLite database, fast verifier) and a local "social site" that shows posts.

use assert_cmd::assert::Assert;
use assert_cmd::Command;
use secrecy::SecretString;
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const KNOWN_KEY: &str = "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318";
const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
const TARGET: &str = "https://www.agentpmt.com/agent-workflow-skills/example";

struct TestServer {
    url: String,
    _db_dir: TempDir,
    home: TempDir,
}

async fn spawn_server() -> TestServer {
    let db_dir = tempfile::tempdir().expect("temp dir");
    let config = agentpmt_server::ServerConfig {
        bind: "127.0.0.1:0".parse().expect("address"),
        database_url: format!("sqlite://{}/db.sqlite", db_dir.path().display()),
        admin_token: Some(SecretString::from(ADMIN_TOKEN)),
        job_post_hosts: vec!["x=127.0.0.1".into()],
        job_verify_interval_ms: 50,
        job_verify_backoff_ms: 100,
        job_verify_timeout_ms: 1000,
        ..Default::default()
    };
    let server = agentpmt_server::Server::build(config)
        .await
        .expect("server starts");
    let url = format!("http://{}", server.local_addr());
    tokio::spawn(server.run_until(std::future::pending()));
    TestServer {
        url,
        _db_dir: db_dir,
        home: tempfile::tempdir().expect("temp dir"),
    }
}

/// A minimal social site: `GET /p/<name>` shows the post "published" as the file
/// `<dir>/<name>`.
async fn social_site(dir: std::path::PathBuf) -> String {
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
                let text = if name.bytes().all(|b| b.is_ascii_alphanumeric()) {
                    std::fs::read_to_string(dir.join(name)).unwrap_or_default()
                } else {
                    String::new()
                };
                // A post page names itself (canonical link), as platforms' post pages do.
                let host = request
                    .lines()
                    .find_map(|l| {
                        l.strip_prefix("Host: ")
                            .or_else(|| l.strip_prefix("host: "))
                    })
                    .unwrap_or_default()
                    .trim()
                    .to_owned();
                let body = format!(
                    "<html><head><link rel=\"canonical\" href=\"http://{host}{path}\"></head><body><p>Great tool: {}</p></body></html>",
                    text.trim().replace('&', "&amp;")
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

impl TestServer {
    fn cmd(&self) -> Command {
        let mut cmd = Command::cargo_bin("agentpmt").expect("the agentpmt binary");
        for name in [
            "AGENTPMT_PRIVATE_KEY",
            "AGENTPMT_KEYSTORE",
            "AGENTPMT_SERVER",
            "AGENTPMT_ADMIN_TOKEN",
        ] {
            cmd.env_remove(name);
        }
        cmd.env("AGENTPMT_HOME", self.home.path())
            .env("AGENTPMT_PRIVATE_KEY", KNOWN_KEY)
            .args(["--server", &self.url, "--json"]);
        cmd
    }

    async fn job(&self, title: &str) -> String {
        let response = reqwest::Client::new()
            .post(format!("{}/api/admin/jobs", self.url))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({
                "job_type": "social_share", "title": title,
                "public_description": "Share the example workflow",
                "private_instructions": "Post the tracked link on x", "reward_credits": 40,
                "target_url": TARGET, "platform": "x"
            }))
            .send()
            .await
            .expect("admin request");
        assert_eq!(response.status().as_u16(), 201);
        let body: Value = response.json().await.expect("JSON");
        body["job"]["job_id"].as_str().unwrap().to_owned()
    }
}

fn json_of(assert: &Assert) -> Value {
    let stdout = String::from_utf8(assert.get_output().stdout.clone()).expect("UTF-8");
    serde_json::from_str(&stdout).expect("one JSON object on stdout")
}

/// The worker's events (one JSON object per line) and its summary (the last one).
fn events_of(assert: &Assert) -> (Vec<Value>, Value) {
    let stdout = String::from_utf8(assert.get_output().stdout.clone()).expect("UTF-8");
    let events: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    let summary = events.last().cloned().expect("a summary");
    assert_eq!(summary["event"], json!("summary"), "{stdout}");
    (events, summary)
}

async fn run(mut cmd: Command) -> Assert {
    tokio::task::spawn_blocking(move || cmd.assert())
        .await
        .expect("CLI task")
}

/// The worker command: reads the job JSON, refuses to run if it can see the wallet key,
/// "posts" the tracked link on the social site (a file) and prints the proof.
const WORKER: &str = r#"
input=$(cat)
[ -n "$AGENTPMT_PRIVATE_KEY" ] && { echo "the key leaked" >&2; exit 3; }
link=$(printf '%s' "$input" | sed -n 's/.*"tracking_links":\["\([^"]*\)".*/\1/p')
[ -n "$link" ] || { echo "no link in $input" >&2; exit 4; }
printf '%s' "$link" > "$SOCIAL_DIR/$AGENTPMT_JOB_ID"
printf '{"proof_text":"Posted it","social_posts":[{"platform":"x","post_url":"%s/p/%s","target_url_used":"%s","message_text":""}]}' "$SOCIAL_SITE" "$AGENTPMT_JOB_ID" "$link"
"#;

#[tokio::test(flavor = "multi_thread")]
async fn jobs_list_reserve_complete_status_and_run() {
    let server = spawn_server().await;
    let posts = tempfile::tempdir().expect("temp dir");
    let site = social_site(posts.path().to_owned()).await;
    let first = server.job("Share it").await;

    let mut cmd = server.cmd();
    cmd.args(["jobs", "list"]);
    let list = json_of(&run(cmd).await.success());
    assert_eq!(list["jobs"][0]["job_id"], json!(first));

    // By hand: reserve, complete (the tracked link comes from the reservation), status.
    let mut cmd = server.cmd();
    cmd.args(["jobs", "reserve", &first]);
    let reserved = json_of(&run(cmd).await.success());
    let link = reserved["job"]["social_share"]["tracking_links"][0]
        .as_str()
        .unwrap();
    std::fs::write(posts.path().join(&first), link).expect("post written");
    let mut cmd = server.cmd();
    let post = format!("{site}/p/{first}");
    cmd.args([
        "jobs",
        "complete",
        &first,
        "--proof",
        "Posted",
        "--post-url",
        &post,
    ]);
    let done = json_of(&run(cmd).await.success());
    assert_eq!(done["job"]["status"], json!("submitted"));
    let mut paid = Value::Null;
    for _ in 0..100 {
        let mut cmd = server.cmd();
        cmd.args(["jobs", "status", &first]);
        paid = json_of(&run(cmd).await.success());
        if paid["payout"]["status"] == json!("paid") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        paid["payout"]["wallet_balance_credits"],
        json!(40),
        "{paid}"
    );

    // A refused request: a clear error code.
    let mut cmd = server.cmd();
    cmd.args(["jobs", "reserve", &first]);
    let refused = run(cmd).await.failure();
    assert_eq!(json_of(&refused)["error_code"], json!("JOB_NOT_AVAILABLE"));

    // The worker loop: one open job, handled by the command, verified and paid.
    let second = server.job("Share it again").await;
    let mut cmd = server.cmd();
    cmd.env("SOCIAL_SITE", &site)
        .env("SOCIAL_DIR", posts.path())
        .args([
            "jobs",
            "run",
            "--wait-secs",
            "30",
            "--poll-secs",
            "1",
            "--",
            "sh",
            "-c",
            WORKER,
        ]);
    let assert = run(cmd).await.success();
    let (events, ran) = events_of(&assert);
    let stderr = String::from_utf8_lossy(&assert.get_output().stderr).to_string();
    assert_eq!(
        ran["handled"].as_array().unwrap().len(),
        1,
        "{ran} {stderr}"
    );
    assert_eq!(ran["handled"][0]["job_id"], json!(second));
    assert_eq!(ran["handled"][0]["outcome"], json!("submitted"), "{stderr}");
    assert_eq!(
        ran["handled"][0]["verification"],
        json!("verified"),
        "{stderr}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["event"] == json!("reserved") && e["job_id"] == json!(second)),
        "{events:?}"
    );
    assert!(events.iter().all(|e| e["ts"].as_str().is_some()));
    let mut cmd = server.cmd();
    cmd.args(["jobs", "status", &second]);
    let status = json_of(&run(cmd).await.success());
    assert_eq!(status["payout"]["wallet_balance_credits"], json!(80));

    // A failing command abandons the job: nothing is submitted, and the worker says so
    // with its exit status (every job it handled was abandoned).
    let third = server.job("Share it a third time").await;
    let mut cmd = server.cmd();
    cmd.args(["jobs", "run", "--", "sh", "-c", "exit 9"]);
    let (_, ran) = events_of(&run(cmd).await.code(3));
    assert_eq!(ran["handled"][0]["job_id"], json!(third));
    assert_eq!(ran["handled"][0]["outcome"], json!("abandoned"));
    let mut cmd = server.cmd();
    cmd.args(["jobs", "status", &third]);
    let status = json_of(&run(cmd).await.success());
    assert!(status["submission"].is_null(), "{status}");
    assert_eq!(status["has_active_reservation"], json!(true));
}
