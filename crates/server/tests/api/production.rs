//! The production posture: `--production` refuses to start with development settings and
//! names every one; with real settings it starts.

use agentpmt_server::payments::networks::PaymentsFile;
use agentpmt_server::{Server, ServerConfig};

fn config(dir: &tempfile::TempDir) -> ServerConfig {
    ServerConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        database_url: format!("sqlite://{}/agentpmt.db", dir.path().display()),
        ..ServerConfig::default()
    }
}

fn real_chain() -> PaymentsFile {
    toml::from_str(
        r#"
        pay_to = "0x1111111111111111111111111111111111111111"
        [[networks]]
        chain_id = 8453
        settlement = "evm"
        rpc_url = "http://127.0.0.1:1"
        "#,
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_refuses_development_settings_and_names_each() {
    let dir = tempfile::tempdir().unwrap();
    // A development server (the default) starts with them, and migrates the database.
    let dev = Server::build(config(&dir))
        .await
        .expect("dev defaults start");
    let db = dev.state().db.clone();
    drop(dev);
    // A vendor whose secret was sealed with a key this start-up lacks.
    let insert = "INSERT INTO vendors (vendor_id, slug, name, status, secret_sealed, created_at_ms, updated_at_ms) VALUES ('v1', 'v1', 'V', 'active', 'sealed', 1, 1)";
    match &db {
        agentpmt_server::db::Db::Sqlite { writer, .. } => {
            sqlx::query(insert).execute(writer).await.unwrap();
        }
        agentpmt_server::db::Db::Postgres(pool) => {
            sqlx::query(insert).execute(pool).await.unwrap();
        }
    }
    db.close().await;
    let mut production = config(&dir);
    production.production = true;
    production.trusted_proxies = vec!["0.0.0.0/0".parse().unwrap()];
    let err = Server::build(production)
        .await
        .expect_err("refused")
        .to_string();
    for missing in [
        "--production: refusing to start",
        "--payments-config: the dev settlement network",
        "--admin-token",
        "--secrets-key: 1 vendor(s)",
        "--trusted-proxies: a wildcard",
    ] {
        assert!(err.contains(missing), "{missing} not named in: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_starts_with_real_settings() {
    let dir = tempfile::tempdir().unwrap();
    let mut production = config(&dir);
    production.production = true;
    production.payments = Some(real_chain());
    production.settlement_private_key = Some(
        "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"
            .to_owned()
            .into(),
    );
    production.admin_token = Some("an-operator-token-of-some-length".to_owned().into());
    production.trusted_proxies = vec!["10.0.0.0/8".parse().unwrap()];
    let server = Server::build(production).await.expect("starts");
    drop(server);
}
