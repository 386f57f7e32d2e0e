//! The `agentpmt-server` binary: JSON logs with one line per request that never contain
//! signatures, session nonces, the admin token, or an AgentAddress's key and mnemonic;
//! graceful shutdown on SIGTERM.

use crate::backend_tests;
use crate::helpers::*;
use agentpmt_protocol::PrivateKey;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

backend_tests!(binary_logs_requests_without_secrets);

async fn binary_logs_requests_without_secrets(backend: Backend) {
    // A fresh database (and schema) prepared by the harness; the binary runs on it.
    let app = spawn_app(backend).await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_agentpmt-server"))
        .env_clear()
        .env("AGENTPMT_BIND", "127.0.0.1:0")
        .env("AGENTPMT_DATABASE_URL", &app.database_url)
        .env("AGENTPMT_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("AGENTPMT_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut lines: Vec<String> = Vec::new();
    let address = loop {
        let mut line = String::new();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "server exited early: {lines:?}"
        );
        let parsed: Value = serde_json::from_str(&line).expect("a JSON log line");
        lines.push(line);
        if let Some(address) = parsed["fields"]["address"].as_str() {
            break address.to_owned();
        }
    };
    let base = format!("http://{address}");
    let http = reqwest::Client::new();
    let key = PrivateKey::random();
    let session: Value = http
        .post(format!("{base}/api/external/auth/session"))
        .json(&json!({"wallet_address": key.address().to_string()}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let nonce = session["session_nonce"].as_str().unwrap().to_owned();
    let body = app.balance_body(&key, &nonce, "logged-request");
    let signature = body["signature"].as_str().unwrap().to_owned();
    for _ in 0..2 {
        http.post(format!("{base}/api/external/credits/balance"))
            .header("x-request-id", "corr-logs-1")
            .json(&body)
            .send()
            .await
            .unwrap();
    }
    http.post(format!(
        "{base}/api/admin/wallets/{}/credits",
        key.address()
    ))
    .bearer_auth(ADMIN_TOKEN)
    .json(&json!({"amount_credits": 5, "reason": "logs"}))
    .send()
    .await
    .unwrap();
    let created: Value = http
        .post(format!("{base}/api/external/agentaddress"))
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let created_key = created["data"]["evmPrivateKey"]
        .as_str()
        .unwrap()
        .to_owned();
    let mnemonic = created["data"]["mnemonic"].as_str().unwrap().to_owned();
    let first_words = mnemonic.split(' ').take(4).collect::<Vec<_>>().join(" ");

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "graceful shutdown exits 0, got {exit:?}");
    for line in stdout.lines() {
        lines.push(line.unwrap());
    }
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    let all = lines.join("\n") + &stderr;

    let requests: Vec<Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == json!("agentpmt::http"))
        .collect();
    assert_eq!(requests.len(), 5, "one line per request: {all}");
    let statuses: Vec<&Value> = requests.iter().map(|r| &r["fields"]["status"]).collect();
    assert_eq!(
        statuses,
        vec![
            &json!(200),
            &json!(200),
            &json!(409),
            &json!(201),
            &json!(200)
        ]
    );
    assert!(all.contains(created["data"]["evmAddress"].as_str().unwrap()));
    assert_eq!(requests[1]["fields"]["request_id"], json!("corr-logs-1"));
    assert_eq!(
        requests[1]["fields"]["route"],
        json!("/api/external/credits/balance")
    );
    for secret in [
        signature.as_str(),
        &signature[2..],
        nonce.as_str(),
        ADMIN_TOKEN,
        created_key.as_str(),
        &created_key[2..],
        mnemonic.as_str(),
        first_words.as_str(),
    ] {
        assert!(!all.contains(secret), "a secret reached the logs");
    }
}
