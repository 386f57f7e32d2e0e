//! `agentpmt mcp` with an official Rust SDK (`rmcp`) client: the client spawns the relay
//! over stdio (as Claude Desktop or any stdio-only client would) and the relay talks to a
//! real server's `/mcp` with the bearer from the environment.

use assert_cmd::cargo::cargo_bin;
use base64::Engine as _;
use rmcp::model::CallToolRequestParams;
use rmcp::transport::TokioChildProcess;
use rmcp::ServiceExt as _;
use secrecy::SecretString;
use serde_json::{json, Value};
use tempfile::TempDir;

const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

async fn spawn_server() -> (String, TempDir) {
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
    (url, db_dir)
}

async fn admin(url: &str, path: &str, body: Value) -> Value {
    let response = reqwest::Client::new()
        .post(format!("{url}{path}"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&body)
        .send()
        .await
        .expect("admin request");
    assert!(
        response.status().is_success(),
        "{path}: {}",
        response.status()
    );
    response.json().await.expect("JSON")
}

/// A fresh API key and budget (cap `cap`); the standard bearer.
async fn bearer(url: &str, cap: i64) -> (String, String) {
    let account = admin(url, "/api/admin/accounts", json!({"name": "relay"})).await;
    let account_id = account["account"]["account_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let key = admin(
        url,
        &format!("/api/admin/accounts/{account_id}/api-keys"),
        json!({"label": "relay"}),
    )
    .await;
    let budget = admin(
        url,
        &format!("/api/admin/accounts/{account_id}/budgets"),
        json!({"name": "relay", "cap_credits": cap}),
    )
    .await;
    let token = base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        key["api_key"].as_str().unwrap(),
        budget["budget_key"].as_str().unwrap()
    ));
    (
        token,
        budget["budget"]["budget_id"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rmcp_client_through_the_stdio_relay() {
    let (url, _db) = spawn_server().await;
    let (token, _budget) = bearer(&url, 2).await;
    let mut command = tokio::process::Command::new(cargo_bin("agentpmt"));
    for name in ["AGENTPMT_API_KEY", "AGENTPMT_BUDGET_KEY", "AGENTPMT_SERVER"] {
        command.env_remove(name);
    }
    command
        .env("AGENTPMT_BEARER_TOKEN", &token)
        .args(["--server", &url, "mcp"]);
    let transport = TokioChildProcess::new(command).expect("the relay starts");
    let client = ().serve(transport).await.expect("initialize through the relay");
    let info = client.peer_info().expect("server info");
    assert_eq!(
        info.server_info.as_ref().map(|s| s.name.as_str()),
        Some("agentpmt")
    );

    let tools = client.list_all_tools().await.expect("tools/list");
    let clock = tools
        .iter()
        .find(|t| t.name == "clock__now")
        .expect("the demo catalog's clock tool");
    assert!(clock
        .description
        .as_deref()
        .unwrap_or_default()
        .contains("credits"));
    assert_eq!(clock.input_schema.get("type"), Some(&json!("object")));

    // The budget (2 credits) pays for the clock (1 credit) twice, then is exhausted.
    for _ in 0..2 {
        let result = client
            .call_tool(CallToolRequestParams::new("clock__now"))
            .await
            .expect("tools/call");
        assert_eq!(result.is_error, Some(false), "{result:?}");
        assert!(result.structured_content.is_some(), "{result:?}");
    }
    let result = client
        .call_tool(CallToolRequestParams::new("clock__now"))
        .await
        .expect("tools/call");
    assert_eq!(result.is_error, Some(true));
    assert_eq!(
        result.structured_content.as_ref().unwrap()["error_code"],
        "BUDGET_EXHAUSTED",
        "{result:?}"
    );
    // An unknown tool is a JSON-RPC error, relayed as such.
    assert!(client
        .call_tool(CallToolRequestParams::new("no__such"))
        .await
        .is_err());
    client.cancel().await.expect("the relay stops");
}
