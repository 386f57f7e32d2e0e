//! Migrations over existing data: `0007_payment_claims` claims the payments a database
//! counted before the claims table existed (log index -1), so the payment audit covers them,
//! and a second purchase credited for the same transaction (the double credit the claims now
//! prevent) stays unclaimed, so the audit lists it.

use crate::backend_tests;
use crate::helpers::{fresh_postgres_schema, Backend};
use agentpmt_server::db::{Db, DbOptions};
use std::path::PathBuf;

backend_tests!(payments_counted_before_the_claims_table_are_claimed_once);

const TX: &str = "0x00000000000000000000000000000000000000000000000000000000000000aa";
const TOOL_TX: &str = "0x00000000000000000000000000000000000000000000000000000000000000bb";

async fn payments_counted_before_the_claims_table_are_claimed_once(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let url = match backend {
        Backend::Sqlite => format!("sqlite://{}/legacy.db", dir.path().display()),
        Backend::Postgres => fresh_postgres_schema().await,
    };
    let engine = match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    // The migrations before 0007, as an older server applied them.
    let all = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(engine);
    let older = dir.path().join("older");
    std::fs::create_dir(&older).unwrap();
    for entry in std::fs::read_dir(&all).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.as_str() < "0007" {
            std::fs::copy(&path, older.join(&name)).unwrap();
        }
    }
    let db = Db::connect(&url, &DbOptions::default()).await.unwrap();
    let migrator = sqlx::migrate::Migrator::new(older.as_path()).await.unwrap();
    let run = |sql: String| {
        let db = db.clone();
        async move {
            match &db {
                Db::Sqlite { writer, .. } => sqlx::query(&sql).execute(writer).await.map(|_| ()),
                Db::Postgres(pool) => sqlx::query(&sql).execute(pool).await.map(|_| ()),
            }
            .unwrap()
        }
    };
    match &db {
        Db::Sqlite { writer, .. } => migrator.run(writer).await.unwrap(),
        Db::Postgres(pool) => migrator.run(pool).await.unwrap(),
    }
    let purchase = |id: &str, method: &str, tx: &str, created: i64| {
        format!(
            "INSERT INTO credit_purchases (purchase_id, wallet_address, fingerprint, method, settlement, chain_id, token, asset, pay_to, payer_address, credits, amount_base_units, transaction_hash, status, created_at_ms, updated_at_ms) \
             VALUES ('{id}', '0x1111111111111111111111111111111111111111', 'f', '{method}', 'evm', 8453, 'USDC', '0x833589fcd6edb6e08f4c7c32d4f71b54bda02913', '0x2222222222222222222222222222222222222222', '0x1111111111111111111111111111111111111111', 500, '5000000', '{tx}', 'settled', {created}, {created})"
        )
    };
    run(purchase("p-x402", "x402", TX, 1)).await;
    // The double credit: the same transaction accepted again as a transfer purchase.
    run(purchase("p-twice", "transfer", TX, 2)).await;
    run(purchase(
        "p-transfer",
        "transfer",
        "0x00000000000000000000000000000000000000000000000000000000000000cc",
        3,
    ))
    .await;
    let stored = serde_json::json!({
        "x402Version": 2,
        "accepted": {"scheme": "exact", "network": "eip155:8453", "amount": "30000",
                     "asset": "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913",
                     "payTo": "0x2222222222222222222222222222222222222222",
                     "maxTimeoutSeconds": 300, "extra": {"name": "USD Coin", "version": "2"}},
        "payload": {"signature": "0x00", "authorization": {
            "from": "0x3333333333333333333333333333333333333333",
            "to": "0x2222222222222222222222222222222222222222", "value": "30000",
            "validAfter": "0", "validBefore": "9", "nonce": "0x01"}}
    });
    run(format!(
        "INSERT INTO tool_usage (usage_id, product_id, product_slug, action_slug, mode, payer_address, price_credits, status, network, token, authorization_json, transaction_hash, deadline_ms, created_at_ms, finished_at_ms) \
         VALUES ('use_legacy', 'p', 'stub', 'ok', 'x402', '0x3333333333333333333333333333333333333333', 3, 'succeeded', 'eip155:8453', 'USDC', '{}', '{TOOL_TX}', 0, 5, 6)",
        stored
    ))
    .await;

    db.migrate().await.unwrap();

    let rows: Vec<(String, String, i64, String, String, String, String)> = match &db {
        Db::Sqlite { writer, .. } => sqlx::query_as(
            "SELECT kind, holder_id, log_index, transaction_hash, payer_address, pay_to, amount_base_units FROM payment_claims ORDER BY created_at_ms",
        )
        .fetch_all(writer)
        .await
        .unwrap(),
        Db::Postgres(pool) => sqlx::query_as(
            "SELECT kind, holder_id, log_index, transaction_hash, payer_address, pay_to, amount_base_units FROM payment_claims ORDER BY created_at_ms",
        )
        .fetch_all(pool)
        .await
        .unwrap(),
    };
    let summary: Vec<(&str, &str, i64)> = rows
        .iter()
        .map(|r| (r.0.as_str(), r.1.as_str(), r.2))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("purchase", "p-x402", -1),
            ("purchase", "p-transfer", -1),
            ("tool_payment", "use_legacy", -1),
        ],
        "the double credit p-twice has no claim"
    );
    let tool = &rows[2];
    assert_eq!(tool.3, TOOL_TX);
    assert_eq!(tool.4, "0x3333333333333333333333333333333333333333");
    assert_eq!(tool.5, "0x2222222222222222222222222222222222222222");
    assert_eq!(tool.6, "30000");
    db.close().await;
}
