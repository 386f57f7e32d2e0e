//! End-to-end tests of `agentpmt workflows …` and `agentpmt schedules …` against a real
//! server spawned in-process on port 0 with a fresh SQLite database.

use assert_cmd::assert::Assert;
use assert_cmd::Command;
use base64::Engine as _;
use predicates::prelude::*;
use secrecy::SecretString;
use serde_json::{json, Value};
use tempfile::TempDir;

const KNOWN_KEY: &str = "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318";
const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

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

impl TestServer {
    /// The CLI against this server, without the developer's own AGENTPMT_* variables.
    fn cmd(&self) -> Command {
        let mut cmd = Command::cargo_bin("agentpmt").expect("the agentpmt binary");
        for name in [
            "AGENTPMT_PRIVATE_KEY",
            "AGENTPMT_KEYSTORE",
            "AGENTPMT_SERVER",
            "AGENTPMT_ADMIN_TOKEN",
            "AGENTPMT_BEARER_TOKEN",
            "AGENTPMT_API_KEY",
            "AGENTPMT_BUDGET_KEY",
        ] {
            cmd.env_remove(name);
        }
        cmd.env("AGENTPMT_HOME", self.home.path())
            .args(["--server", &self.url]);
        cmd
    }

    async fn admin(&self, path: &str, body: Value) -> Value {
        let response = reqwest::Client::new()
            .post(format!("{}{path}", self.url))
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

    /// A published workflow; returns its id.
    async fn workflow(&self, slug: &str) -> String {
        let created = self
            .admin(
                "/api/admin/workflows",
                json!({
                    "slug": slug, "name": "Daily digest", "publisher": "Acme",
                    "graph": {"nodes": [{"id": "p", "type": "prompt", "prompt": "Summarize"}], "edges": []}
                }),
            )
            .await;
        let id = created["workflow"]["workflow_id"]
            .as_str()
            .unwrap()
            .to_owned();
        self.admin(&format!("/api/admin/workflows/{id}/publish"), json!({}))
            .await;
        id
    }
}

fn json_of(assert: &Assert) -> Value {
    let stdout = String::from_utf8(assert.get_output().stdout.clone()).expect("UTF-8");
    serde_json::from_str(&stdout).expect("one JSON object on stdout")
}

/// The worker's summary: the last of its JSON lines.
fn summary_of(assert: &Assert) -> Value {
    let stdout = String::from_utf8(assert.get_output().stdout.clone()).expect("UTF-8");
    let last = stdout.lines().last().expect("a summary line");
    let summary: Value = serde_json::from_str(last).expect("one JSON object per line");
    assert_eq!(summary["event"], json!("summary"), "{stdout}");
    summary
}

async fn run(mut cmd: Command) -> Assert {
    tokio::task::spawn_blocking(move || cmd.assert())
        .await
        .expect("CLI task")
}

#[tokio::test(flavor = "multi_thread")]
async fn workflows_list_start_active_end() {
    let server = spawn_server().await;
    let id = server.workflow("digest").await;
    let mut cmd = server.cmd();
    cmd.args(["--json", "workflows", "list", "--query", "digest"]);
    let list = json_of(&run(cmd).await.success());
    assert_eq!(list["workflows"][0]["workflow_id"], json!(id));

    let signed = |args: &[&str]| {
        let mut cmd = server.cmd();
        cmd.env("AGENTPMT_PRIVATE_KEY", KNOWN_KEY)
            .arg("--json")
            .args(args);
        cmd
    };
    let a = json_of(
        &run(signed(&["workflows", "start", &id, "--instance", "a"]))
            .await
            .success(),
    );
    let b = json_of(
        &run(signed(&["workflows", "start", "digest", "--instance", "b"]))
            .await
            .success(),
    );
    assert_ne!(a["workflow_session_id"], b["workflow_session_id"]);
    let active = json_of(&run(signed(&["workflows", "active"])).await.success());
    assert_eq!(active["count"], json!(2));
    let session = a["workflow_session_id"].as_str().unwrap();
    let ended = json_of(
        &run(signed(&["workflows", "end", &id, "--session", session]))
            .await
            .success(),
    );
    assert_eq!(ended["session"]["status"], json!("ended"));
    let active = json_of(
        &run(signed(&["workflows", "active", "--instance", "b"]))
            .await
            .success(),
    );
    assert_eq!(active["count"], json!(1));
    let shown = json_of(&run(signed(&["workflows", "show", &id])).await.success());
    assert_eq!(shown["sessions"].as_array().unwrap().len(), 2);
    // Without a session id and one live session left, end picks it.
    let ended = json_of(&run(signed(&["workflows", "end", &id])).await.success());
    assert_eq!(ended["workflow_session_id"], b["workflow_session_id"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn schedules_work_runs_the_command_and_advances_or_releases() {
    let server = spawn_server().await;
    let workflow = server.workflow("nightly").await;
    let account = server
        .admin("/api/admin/accounts", json!({"name": "Ops"}))
        .await;
    let account_id = account["account"]["account_id"].as_str().unwrap();
    let key = server
        .admin(
            &format!("/api/admin/accounts/{account_id}/api-keys"),
            json!({}),
        )
        .await;
    let budget = server
        .admin(
            &format!("/api/admin/accounts/{account_id}/budgets"),
            json!({"name": "Nightly", "cap_credits": 100}),
        )
        .await;
    let budget_id = budget["budget"]["budget_id"].as_str().unwrap();
    for (name, start) in [
        ("ok", "2026-01-01T00:00:00Z"),
        ("fail", "2026-01-01T00:10:00Z"),
        ("retry", "2026-01-01T00:20:00Z"),
    ] {
        server
            .admin(
                &format!("/api/admin/budgets/{budget_id}/workflow-schedules"),
                json!({"workflow_id": workflow, "name": name, "prompt": format!("do {name}"),
                       "recurrence": {"interval_seconds": 86400}, "start_at": start}),
            )
            .await;
    }
    let api_key = key["api_key"].as_str().unwrap();
    let budget_key = budget["budget_key"].as_str().unwrap();

    // Without a bearer: a clear error.
    let mut cmd = server.cmd();
    cmd.args(["schedules", "due"]);
    run(cmd)
        .await
        .failure()
        .stderr(predicate::str::contains("AGENTPMT_BEARER_TOKEN"));

    let log = server.home.path().join("ran.txt");
    let script = format!(
        "echo \"$AGENTPMT_SCHEDULE_NAME $AGENTPMT_WORKFLOW_SLUG ${{AGENTPMT_API_KEY:-no-key}}\" >> {}; \
         case \"$AGENTPMT_SCHEDULE_NAME\" in ok) exit 0;; fail) exit 3;; *) exit 75;; esac",
        log.display()
    );
    let mut cmd = server.cmd();
    cmd.env("AGENTPMT_API_KEY", api_key)
        .env("AGENTPMT_BUDGET_KEY", budget_key)
        .args([
            "--json",
            "schedules",
            "work",
            "--lease-seconds",
            "60",
            "--",
            "sh",
            "-c",
            &script,
        ]);
    let worked = summary_of(&run(cmd).await.success());
    let handled = worked["handled"].as_array().unwrap();
    let actions: Vec<&str> = handled
        .iter()
        .map(|h| h["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["advanced", "advanced_failed", "released"],
        "{worked}"
    );
    assert_eq!(handled[1]["exit_code"], json!(3));
    assert!(handled[0]["next_due_at"].as_str().is_some());
    // The command saw its occurrence, and not the worker's keys.
    let ran = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        ran,
        "ok nightly no-key\nfail nightly no-key\nretry nightly no-key\n"
    );

    // The released one is still due; the others moved on. The bearer from one variable.
    let bearer =
        base64::engine::general_purpose::STANDARD.encode(format!("{api_key}:{budget_key}"));
    let mut cmd = server.cmd();
    cmd.env("AGENTPMT_BEARER_TOKEN", &bearer)
        .args(["--json", "schedules", "due"]);
    let due = json_of(&run(cmd).await.success());
    let names: Vec<&str> = due["data"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["retry"], "{due}");

    // Claim and advance by hand.
    let mut cmd = server.cmd();
    cmd.env("AGENTPMT_BEARER_TOKEN", &bearer).args([
        "--json",
        "schedules",
        "claim",
        "--lease-seconds",
        "30",
    ]);
    let claimed = json_of(&run(cmd).await.success());
    let item = &claimed["data"]["items"][0];
    let (id, due_at, token) = (
        item["schedule_id"].as_str().unwrap(),
        item["due_at"].as_str().unwrap(),
        item["claim_token"].as_str().unwrap(),
    );
    let mut cmd = server.cmd();
    cmd.env("AGENTPMT_BEARER_TOKEN", &bearer).args([
        "--json",
        "schedules",
        "advance",
        id,
        "--due-at",
        due_at,
        "--claim-token",
        token,
        "--outcome",
        "skipped",
    ]);
    let advanced = json_of(&run(cmd).await.success());
    assert_eq!(advanced["data"]["already_advanced"], json!(false));
    assert_eq!(
        advanced["data"]["schedule"]["last_outcome"],
        json!("skipped")
    );
    // Releasing the advanced occurrence: the server's 409 and its enum.
    let mut cmd = server.cmd();
    cmd.env("AGENTPMT_BEARER_TOKEN", &bearer).args([
        "schedules",
        "release",
        id,
        "--due-at",
        due_at,
        "--claim-token",
        token,
    ]);
    run(cmd)
        .await
        .failure()
        .stderr(predicate::str::contains("SCHEDULE_DUE_AT_MISMATCH"));
    // Nothing left: work does nothing.
    let mut cmd = server.cmd();
    cmd.env("AGENTPMT_BEARER_TOKEN", &bearer)
        .args(["schedules", "work", "--", "false"]);
    run(cmd)
        .await
        .success()
        .stdout(predicate::str::contains("nothing to do"));
}
