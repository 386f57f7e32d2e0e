//! End-to-end tests of the `agentpmt` binary: wallets on a temporary home, and the commands
//! that talk to a real server spawned in-process on port 0 with a fresh SQLite database.

use agentpmt_protocol::canonical::sha256_hex;
use agentpmt_protocol::Signature;
use agentpmt_server::{Server, ServerConfig};
use assert_cmd::assert::Assert;
use assert_cmd::Command;
use predicates::prelude::*;
use secrecy::SecretString;
use serde_json::{json, Value};
use tempfile::TempDir;

/// The key of the `wallet import` example and its address.
const KNOWN_KEY: &str = "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318";
const KNOWN_ADDRESS: &str = "0x2c7536e3605d9c16a7a3d7b1898e529396a65c23";
const PASSWORD: &str = "correct horse battery staple";
const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// A temporary CLI home; every command gets it and the keystore password, and none of the
/// developer's own AGENTPMT_* variables.
struct Home {
    dir: TempDir,
}

impl Home {
    fn new() -> Self {
        Home {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

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
        cmd.env("AGENTPMT_HOME", self.dir.path())
            .env("AGENTPMT_KEYSTORE_PASSWORD", PASSWORD);
        cmd
    }

    fn keystore(&self) -> std::path::PathBuf {
        self.dir.path().join("keystore").join("wallet.json")
    }

    /// Creates a wallet and returns its address.
    fn new_wallet(&self) -> String {
        let assert = self
            .cmd()
            .args(["--json", "wallet", "new"])
            .assert()
            .success();
        json_of(&assert)["address"]
            .as_str()
            .expect("address")
            .to_owned()
    }

    /// The address `wallet show --json` prints, checking it shows no private key.
    fn shown_address(&self) -> String {
        let shown = self
            .cmd()
            .args(["--json", "wallet", "show"])
            .assert()
            .success();
        let view = json_of(&shown);
        assert!(
            view.get("private_key").is_none(),
            "private key printed without the flag"
        );
        view["address"].as_str().expect("address").to_owned()
    }
}

fn stdout_of(assert: &Assert) -> String {
    String::from_utf8(assert.get_output().stdout.clone()).expect("UTF-8 stdout")
}

fn json_of(assert: &Assert) -> Value {
    serde_json::from_str(&stdout_of(assert)).expect("one JSON object on stdout")
}

/// Runs the CLI off the async runtime (it blocks while the in-process server answers).
async fn run(mut cmd: Command) -> Assert {
    tokio::task::spawn_blocking(move || cmd.assert())
        .await
        .expect("CLI task")
}

/// A server on 127.0.0.1 with a fresh database, serving until the test ends.
struct TestServer {
    url: String,
    _db_dir: TempDir,
}

async fn spawn_server() -> TestServer {
    let db_dir = tempfile::tempdir().expect("temp dir");
    let config = ServerConfig {
        bind: "127.0.0.1:0".parse().expect("address"),
        database_url: format!("sqlite://{}/db.sqlite", db_dir.path().display()),
        admin_token: Some(SecretString::from(ADMIN_TOKEN)),
        ..Default::default()
    };
    let server = Server::build(config).await.expect("server starts");
    let url = format!("http://{}", server.local_addr());
    tokio::spawn(server.run_until(std::future::pending()));
    TestServer {
        url,
        _db_dir: db_dir,
    }
}

async fn fund(server: &TestServer, wallet: &str, credits: i64) {
    let response = reqwest::Client::new()
        .post(format!("{}/api/admin/wallets/{wallet}/credits", server.url))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "amount_credits": credits, "reason": "test" }))
        .send()
        .await
        .expect("admin request");
    assert_eq!(
        response.status().as_u16(),
        201,
        "{}",
        response.text().await.unwrap_or_default()
    );
}

#[test]
fn wallet_new_then_show_hides_the_private_key_unless_asked() {
    let home = Home::new();
    let created = home.cmd().args(["wallet", "new"]).assert().success();
    let created_text = stdout_of(&created);
    assert!(
        created_text.contains(&home.keystore().display().to_string()),
        "{created_text}"
    );
    let address = home.shown_address();
    assert!(created_text.contains(&address), "{created_text}");

    let shown = home.cmd().args(["wallet", "show"]).assert().success();
    let shown_text = stdout_of(&shown);
    assert!(shown_text.contains(&address));
    assert!(shown_text.contains("checksum:"));

    let with_key = home
        .cmd()
        .args(["--json", "wallet", "show", "--show-private-key"])
        .assert()
        .success();
    let view = json_of(&with_key);
    assert_eq!(view["address"], address.as_str());
    assert_eq!(view["source"], "keystore");
    let private_key = view["private_key"]
        .as_str()
        .expect("private key shown")
        .to_owned();
    let key = agentpmt_protocol::PrivateKey::from_hex(&private_key).expect("a valid key");
    assert_eq!(key.address().to_string(), address);
    let digits = &private_key[2..];
    assert!(
        !created_text.contains(digits) && !shown_text.contains(digits),
        "key leaked without the flag"
    );

    let text_with_key = home
        .cmd()
        .args(["wallet", "show", "--show-private-key"])
        .assert()
        .success();
    assert!(stdout_of(&text_with_key).contains(&private_key));
}

#[test]
fn wallet_new_refuses_to_overwrite_a_keystore() {
    let home = Home::new();
    home.new_wallet();
    let before = std::fs::read(home.keystore()).expect("keystore written");
    home.cmd().args(["wallet", "new"]).assert().code(1).stderr(
        predicate::str::contains("already exists")
            .and(predicate::str::contains("refusing to overwrite")),
    );
    assert_eq!(
        std::fs::read(home.keystore()).expect("keystore kept"),
        before
    );
}

#[test]
fn wallet_import_reads_the_key_from_the_environment() {
    let home = Home::new();
    let imported = home
        .cmd()
        .args(["--json", "wallet", "import"])
        .env("AGENTPMT_PRIVATE_KEY", KNOWN_KEY)
        .assert()
        .success();
    let view = json_of(&imported);
    assert_eq!(view["address"], KNOWN_ADDRESS);
    assert_eq!(
        view["checksum_address"],
        "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23"
    );
    assert!(!stdout_of(&imported).contains(&KNOWN_KEY[2..]));

    // Read back from the keystore alone.
    home.cmd()
        .args(["wallet", "show"])
        .assert()
        .success()
        .stdout(predicate::str::contains(KNOWN_ADDRESS));
}

#[test]
fn wallet_import_refuses_a_bad_key_without_echoing_it() {
    let home = Home::new();
    home.cmd()
        .args(["wallet", "import"])
        .env("AGENTPMT_PRIVATE_KEY", "0x1234not-a-key")
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains("private key")
                .and(predicate::str::contains("not-a-key").not()),
        );
    assert!(!home.keystore().exists());
}

#[test]
fn wrong_password_is_a_clear_error() {
    let home = Home::new();
    home.new_wallet();
    home.cmd()
        .args(["wallet", "show"])
        .env("AGENTPMT_KEYSTORE_PASSWORD", "not the password")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("wrong password"));
}

#[test]
fn missing_wallet_says_how_to_create_one() {
    let home = Home::new();
    home.cmd().args(["wallet", "show"]).assert().code(1).stderr(
        predicate::str::contains("no wallet at")
            .and(predicate::str::contains("agentpmt wallet new")),
    );
}

#[test]
fn keystore_option_overrides_the_home() {
    let home = Home::new();
    let elsewhere = home.dir.path().join("other.json");
    home.cmd()
        .arg("--keystore")
        .arg(&elsewhere)
        .args(["wallet", "new"])
        .assert()
        .success();
    assert!(elsewhere.exists());
    assert!(!home.keystore().exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn balance_is_zero_then_shows_admin_credits() {
    let server = spawn_server().await;
    let home = Home::new();
    let wallet = home.new_wallet();

    let mut cmd = home.cmd();
    cmd.args(["--server", &server.url, "balance"]);
    let zero = stdout_of(&run(cmd).await.success());
    assert!(zero.contains(&wallet), "{zero}");
    assert!(
        zero.lines()
            .any(|l| l.starts_with("credits:") && l.ends_with(" 0")),
        "{zero}"
    );

    fund(&server, &wallet, 1500).await;
    let mut cmd = home.cmd();
    cmd.env("AGENTPMT_SERVER", &server.url)
        .args(["--json", "balance"]);
    let funded = json_of(&run(cmd).await.success());
    assert_eq!(funded["wallet_address"], wallet.as_str());
    assert_eq!(funded["balance_credits"], 1500);
    assert_eq!(funded["balance_usd"], 15.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn balance_with_a_key_from_the_environment_needs_no_keystore() {
    let server = spawn_server().await;
    let home = Home::new();
    let mut cmd = home.cmd();
    cmd.env("AGENTPMT_PRIVATE_KEY", KNOWN_KEY)
        .args(["--server", &server.url, "--json", "balance"]);
    let balance = json_of(&run(cmd).await.success());
    assert_eq!(balance["wallet_address"], KNOWN_ADDRESS);
    assert_eq!(balance["balance_credits"], 0);
    assert!(!home.keystore().exists());
}

#[test]
fn sign_reproduces_a_hand_built_message() {
    let home = Home::new();
    let payload = r#"{ "b": 1, "a": [1.50, "é", {"z": null, "y": true}] }"#;
    let assert = home
        .cmd()
        .env("AGENTPMT_PRIVATE_KEY", KNOWN_KEY)
        .args([
            "--json",
            "sign",
            "--action",
            "job_reserve",
            "--product",
            "job-42",
            "--payload",
            payload,
        ])
        .args(["--session", "nonce-1", "--request-id", "req-1"])
        .assert()
        .success();
    let signed = json_of(&assert);
    // Sorted keys, no whitespace, number lexemes kept, raw UTF-8.
    let canonical = r#"{"a":[1.50,"é",{"y":true,"z":null}],"b":1}"#;
    let hash = sha256_hex(canonical);
    let message = format!(
        "agentpmt-external\nwallet:{KNOWN_ADDRESS}\nsession:nonce-1\nrequest:req-1\naction:job_reserve\nproduct:job-42\npayload:{hash}"
    );
    assert_eq!(signed["payload_canonical"], canonical);
    assert_eq!(signed["payload_hash"], hash.as_str());
    assert_eq!(signed["message"], message.as_str());
    assert_eq!(signed["session_created"], false);
    let signature = Signature::parse(signed["signature"].as_str().expect("signature"))
        .expect("valid signature");
    assert_eq!(
        signature
            .recover_message(&message)
            .expect("recovers")
            .to_string(),
        KNOWN_ADDRESS
    );
}

#[test]
fn sign_payload_absent_is_an_empty_line_and_empty_object_is_hashed() {
    let home = Home::new();
    let sign = |extra: &[&str]| {
        let assert = home
            .cmd()
            .env("AGENTPMT_PRIVATE_KEY", KNOWN_KEY)
            .args([
                "sign",
                "--action",
                "balance",
                "--session",
                "s",
                "--request-id",
                "r",
            ])
            .args(extra)
            .assert()
            .success();
        stdout_of(&assert)
    };
    let absent = sign(&[]);
    assert!(
        absent.contains("product:-\npayload:\n-----END MESSAGE-----"),
        "{absent}"
    );
    assert!(
        absent
            .lines()
            .any(|l| l.starts_with("payload sha256:") && l.ends_with(" (empty)")),
        "{absent}"
    );

    let empty_object = sign(&["--payload", "{}"]);
    let hash = sha256_hex("{}");
    assert_eq!(
        hash,
        "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
    );
    assert!(
        empty_object.contains(&format!("\npayload:{hash}\n-----END MESSAGE-----")),
        "{empty_object}"
    );
    assert!(
        empty_object.contains("-----BEGIN MESSAGE-----\nagentpmt-external\n"),
        "{empty_object}"
    );
}

#[test]
fn sign_method_path_scope() {
    let home = Home::new();
    home.cmd()
        .args(["wallet", "import"])
        .env("AGENTPMT_PRIVATE_KEY", KNOWN_KEY)
        .assert()
        .success();
    let path = "/external/tools/x/actions/y/invoke";
    let assert = home
        .cmd()
        .args([
            "--json",
            "sign",
            "--method",
            "POST",
            "--path",
            path,
            "--payload",
            r#"{"city":"Paris"}"#,
        ])
        .args(["--session", "s", "--request-id", "r"])
        .assert()
        .success();
    let signed = json_of(&assert);
    let message = signed["message"].as_str().expect("message");
    assert!(
        message.contains(&format!("\nrequest:r\nmethod:POST\npath:{path}\npayload:")),
        "{message}"
    );
    assert!(!message.contains("action:"));
    assert_eq!(signed["scope"], json!({ "method": "POST", "path": path }));
    let signature =
        Signature::parse(signed["signature"].as_str().expect("signature")).expect("valid");
    assert_eq!(
        signature
            .recover_message(message)
            .expect("recovers")
            .to_string(),
        KNOWN_ADDRESS
    );
}

#[test]
fn sign_usage_errors_exit_2() {
    let home = Home::new();
    let usage = |args: &[&str]| {
        home.cmd()
            .env("AGENTPMT_PRIVATE_KEY", KNOWN_KEY)
            .arg("sign")
            .args(args)
            .assert()
            .code(2);
    };
    usage(&["--action", "balance", "--method", "POST", "--path", "/p"]);
    usage(&["--method", "POST"]);
    usage(&["--action", "balance", "--path", "/p"]);
    usage(&["--method", "POST", "--path", "/p", "--product", "x"]);
    usage(&[]);
    home.cmd()
        .env("AGENTPMT_PRIVATE_KEY", KNOWN_KEY)
        .args([
            "sign",
            "--action",
            "balance",
            "--session",
            "s",
            "--payload",
            "{nope",
        ])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("--payload is not valid JSON"));
}

#[tokio::test(flavor = "multi_thread")]
async fn sign_creates_a_session_the_server_accepts() {
    let server = spawn_server().await;
    let home = Home::new();
    let mut cmd = home.cmd();
    cmd.env("AGENTPMT_PRIVATE_KEY", KNOWN_KEY).args([
        "--server",
        &server.url,
        "--json",
        "sign",
        "--action",
        "balance",
    ]);
    let signed = json_of(&run(cmd).await.success());
    assert_eq!(signed["session_created"], true);
    let request_id = signed["request_id"].as_str().expect("request id");
    assert_eq!(request_id.len(), 36, "a UUID: {request_id}");

    // The printed envelope is accepted by the server as is.
    let body = json!({
        "wallet_address": signed["wallet_address"],
        "session_nonce": signed["session_nonce"],
        "request_id": signed["request_id"],
        "signature": signed["signature"],
    });
    let response = reqwest::Client::new()
        .post(format!("{}/api/external/credits/balance", server.url))
        .json(&body)
        .send()
        .await
        .expect("balance request");
    assert_eq!(
        response.status().as_u16(),
        200,
        "{}",
        response.text().await.unwrap_or_default()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn server_errors_show_the_envelope() {
    let server = spawn_server().await;
    let home = Home::new();
    // Under an unknown prefix every route answers 404 NOT_FOUND in the error envelope.
    let wrong_base = format!("{}/nope", server.url);

    let mut cmd = home.cmd();
    cmd.env("AGENTPMT_PRIVATE_KEY", KNOWN_KEY)
        .args(["--server", &wrong_base, "balance"]);
    run(cmd).await.code(1).stderr(
        predicate::str::contains("404 Not Found")
            .and(predicate::str::contains("NOT_FOUND"))
            .and(predicate::str::contains(
                "- Check the path against /openapi.json.",
            )),
    );

    let mut cmd = home.cmd();
    cmd.env("AGENTPMT_PRIVATE_KEY", KNOWN_KEY)
        .args(["--server", &wrong_base, "--json", "balance"]);
    let body = json_of(&run(cmd).await.code(1));
    assert_eq!(body["http_status"], 404);
    assert_eq!(body["error_code"], "NOT_FOUND");
    assert!(body["details"]["checklist"]
        .as_array()
        .is_some_and(|c| !c.is_empty()));
}

#[test]
fn server_down_is_a_clear_error() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("address").port()
    };
    let url = format!("http://127.0.0.1:{port}");
    let home = Home::new();
    home.cmd()
        .env("AGENTPMT_PRIVATE_KEY", KNOWN_KEY)
        .args(["--server", &url, "balance"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(format!(
            "cannot reach the server at {url}"
        )));
    let assert = home
        .cmd()
        .env("AGENTPMT_PRIVATE_KEY", KNOWN_KEY)
        .args(["--server", &url, "--json", "sign", "--action", "balance"])
        .assert()
        .code(1);
    let body = json_of(&assert);
    assert_eq!(body["success"], false);
    assert!(body["error"]
        .as_str()
        .is_some_and(|e| e.contains("cannot reach the server")));
}

#[tokio::test(flavor = "multi_thread")]
async fn credits_buy_pays_the_challenge_and_shows_the_new_balance() {
    let server = spawn_server().await;
    let home = Home::new();
    let wallet = home.new_wallet();
    let mut cmd = home.cmd();
    cmd.args(["--server", &server.url, "credits", "buy", "1000"]);
    let assert = run(cmd).await.success();
    let text = stdout_of(&assert);
    let progress = String::from_utf8_lossy(&assert.get_output().stderr).into_owned();
    assert!(progress.contains("authorization signed"), "{progress}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("balance:") && l.ends_with(" 1000")),
        "{text}"
    );
    assert!(text.contains("eip155:1337"), "{text}");

    let mut cmd = home.cmd();
    cmd.args(["--server", &server.url, "--json", "credits", "buy", "500"]);
    let bought = json_of(&run(cmd).await.success());
    assert_eq!(bought["wallet_address"], wallet.as_str());
    assert_eq!(bought["balance_credits"], 1500);
    assert_eq!(bought["status"], "settled");

    // An invalid pack is the server's clear error, and the suggestion is shown.
    let mut cmd = home.cmd();
    cmd.args(["--server", &server.url, "credits", "buy", "600"]);
    let failed = run(cmd).await.failure();
    let err = String::from_utf8_lossy(&failed.get_output().stderr).into_owned();
    assert!(
        err.contains("INVALID_CREDIT_PACK") && err.contains("1000"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn wallet_new_remote_stores_the_server_generated_key() {
    let server = spawn_server().await;
    let home = Home::new();
    let mut cmd = home.cmd();
    cmd.args([
        "--server",
        &server.url,
        "--json",
        "wallet",
        "new",
        "--remote",
        "--show-mnemonic",
    ]);
    let created = json_of(&run(cmd).await.success());
    assert_eq!(created["generated"], "remote");
    assert_eq!(created["source"], "keystore");
    let mnemonic = created["mnemonic"].as_str().expect("mnemonic shown");
    assert_eq!(mnemonic.split(' ').count(), 12);
    let address = created["address"].as_str().expect("address").to_owned();
    assert_eq!(home.shown_address(), address);
    let keystore = std::fs::read_to_string(home.keystore()).expect("keystore");
    assert!(
        !keystore.contains(mnemonic),
        "the keystore holds only the encrypted key"
    );

    // Without --show-mnemonic nothing secret is printed; the server allows one per minute
    // per IP, so the second request is refused and no keystore is written.
    let other = Home::new();
    let mut cmd = other.cmd();
    cmd.args(["--server", &server.url, "wallet", "new", "--remote"]);
    let refused = run(cmd).await.code(1);
    let stderr = String::from_utf8_lossy(&refused.get_output().stderr).into_owned();
    assert!(stderr.contains("RATE_LIMITED"), "{stderr}");
    assert!(!other.keystore().exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_commands_grant_remove_and_show() {
    let server = spawn_server().await;
    let home = Home::new();
    let admin = |args: &[&str]| {
        let mut cmd = home.cmd();
        cmd.env("AGENTPMT_ADMIN_TOKEN", ADMIN_TOKEN)
            .args(["--server", &server.url, "--json", "admin"])
            .args(args);
        cmd
    };
    let grant = [
        "credits",
        "grant",
        KNOWN_ADDRESS,
        "500",
        "--reason",
        "promo",
        "--idempotency-key",
        "k1",
    ];
    let granted = json_of(&run(admin(&grant)).await.success());
    assert_eq!(granted["balance_credits"], 500);
    assert_eq!(granted["idempotent_replay"], false);
    let repeated = json_of(&run(admin(&grant)).await.success());
    assert_eq!(repeated["balance_credits"], 500);
    assert_eq!(repeated["idempotent_replay"], true);
    let removed = json_of(
        &run(admin(&[
            "credits",
            "remove",
            KNOWN_ADDRESS,
            "200",
            "--reason",
            "fix",
        ]))
        .await
        .success(),
    );
    assert_eq!(removed["entry"]["amount_credits"], -200);
    assert_eq!(removed["balance_credits"], 300);
    let too_much = run(admin(&[
        "credits",
        "remove",
        KNOWN_ADDRESS,
        "301",
        "--reason",
        "x",
    ]))
    .await
    .code(1);
    assert!(String::from_utf8_lossy(&too_much.get_output().stderr).contains("INSUFFICIENT_CREDITS"));
    let view = json_of(&run(admin(&["wallet", KNOWN_ADDRESS])).await.success());
    assert_eq!(view["balance_credits"], 300);
    assert_eq!(view["ledger_entry_count"], 2);

    let help = reqwest::Client::new()
        .post(format!("{}/api/external/agent-help", server.url))
        .json(&json!({"message": "where are my credits?", "error_code": "INSUFFICIENT_CREDITS"}))
        .send()
        .await
        .expect("agent-help");
    assert_eq!(help.status().as_u16(), 201);
    let tickets = json_of(
        &run(admin(&["help-tickets", "--limit", "5"]))
            .await
            .success(),
    );
    assert_eq!(tickets["tickets"][0]["message"], "where are my credits?");
    assert_eq!(tickets["tickets"][0]["error_code"], "INSUFFICIENT_CREDITS");

    let mut cmd = home.cmd();
    cmd.args(["--server", &server.url, "admin", "wallet", KNOWN_ADDRESS]);
    let refused = run(cmd).await.code(1);
    assert!(String::from_utf8_lossy(&refused.get_output().stderr).contains("AGENTPMT_ADMIN_TOKEN"));
    let mut cmd = home.cmd();
    cmd.env("AGENTPMT_ADMIN_TOKEN", "wrong-token-0123456789")
        .args(["--server", &server.url, "admin", "wallet", KNOWN_ADDRESS]);
    let refused = run(cmd).await.code(1);
    assert!(String::from_utf8_lossy(&refused.get_output().stderr).contains("ADMIN_UNAUTHORIZED"));
}

#[tokio::test(flavor = "multi_thread")]
async fn tools_list_show_and_invoke() {
    let server = spawn_server().await;
    let home = Home::new();
    let wallet = home.new_wallet();

    // The demo catalog, as a table with the page position.
    let mut cmd = home.cmd();
    cmd.args(["--server", &server.url, "tools", "list", "--page-size", "2"]);
    let text = stdout_of(&run(cmd).await.success());
    assert!(text.starts_with("TOOL"), "{text}");
    assert!(text.contains("page 1 of"), "{text}");
    assert!(text.contains("next: --page 2"), "{text}");
    let mut cmd = home.cmd();
    cmd.args([
        "--server",
        &server.url,
        "--json",
        "tools",
        "list",
        "--category",
        "text",
    ]);
    let listing = json_of(&run(cmd).await.success());
    assert_eq!(listing["pagination"]["total_count"], 1, "{listing}");
    assert_eq!(listing["tools"][0]["product_slug"], "text-tools");

    let mut cmd = home.cmd();
    cmd.args(["--server", &server.url, "tools", "show", "text-tools"]);
    let text = stdout_of(&run(cmd).await.success());
    assert!(text.contains("stats (2 credits, x402)"), "{text}");
    assert!(text.contains("--param text=<string> (required)"), "{text}");

    // Credits: refused without credits (the server's error), then charged once funded.
    let mut cmd = home.cmd();
    cmd.args([
        "--server",
        &server.url,
        "tools",
        "invoke",
        "text-tools",
        "stats",
        "--param",
        "text=one two",
    ]);
    let failed = run(cmd).await.failure();
    let err = String::from_utf8_lossy(&failed.get_output().stderr).into_owned();
    assert!(err.contains("INSUFFICIENT_CREDITS"), "{err}");
    fund(&server, &wallet, 10).await;
    let mut cmd = home.cmd();
    cmd.args([
        "--server",
        &server.url,
        "--json",
        "tools",
        "invoke",
        "text-tools",
        "stats",
        "--param",
        "text=one two",
    ]);
    let result = json_of(&run(cmd).await.success());
    assert_eq!(result["response"]["words"], 2);
    assert_eq!(result["charged_credits"], 2);
    assert_eq!(result["balance_credits"], 8);
    let mut cmd = home.cmd();
    cmd.args([
        "--server",
        &server.url,
        "tools",
        "invoke",
        "agent-signing-kit",
        "canonical_json",
        "--params",
        r#"{"value": {"b": 1, "a": 2}}"#,
    ]);
    let text = stdout_of(&run(cmd).await.success());
    assert!(
        text.contains("charged:") && text.contains("1 credits"),
        "{text}"
    );
    assert!(text.contains(r#"{\"a\":2,\"b\":1}"#), "{text}");

    // x402 per call on the dev network: no credits used.
    let mut cmd = home.cmd();
    cmd.args([
        "--server",
        &server.url,
        "--json",
        "tools",
        "invoke",
        "clock",
        "now",
        "--x402",
    ]);
    let paid = json_of(&run(cmd).await.success());
    assert_eq!(paid["credit_source"], "x402");
    assert_eq!(paid["x402"]["settled"], true);
    assert_eq!(
        paid["x402"]["payment"]["payer_wallet_address"],
        wallet.as_str()
    );
    let mut cmd = home.cmd();
    cmd.args(["--server", &server.url, "--json", "balance"]);
    assert_eq!(json_of(&run(cmd).await.success())["balance_credits"], 7);
}

/// `--help` describes the CLI as it is: every command group is named in its summary, and
/// not only "wallets, balance, and signing".
#[test]
fn help_describes_every_command_group() {
    let home = Home::new();
    let out = home.cmd().arg("--help").assert().success();
    let text = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    let summary = text.lines().next().unwrap_or_default().to_lowercase();
    for group in [
        "wallet",
        "balance",
        "credits",
        "tools",
        "workflows",
        "schedules",
        "jobs",
        "operator",
        "signing",
    ] {
        assert!(summary.contains(group), "{group} missing from: {summary}");
    }
    for command in [
        "wallet",
        "balance",
        "credits",
        "tools",
        "sign",
        "admin",
        "workflows",
        "schedules",
        "jobs",
    ] {
        assert!(
            text.lines().any(|l| l.trim_start().starts_with(command)),
            "{command} not listed: {text}"
        );
    }
}
