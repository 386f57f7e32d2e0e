//! Instances started at the same moment on one PostgreSQL database (issue 20): every one
//! starts, on an empty schema, on a migrated one without the catalog and on a populated
//! one, and the catalog is there once. Without the start-up lock, the four catalog loads on
//! a migrated schema fail within about ten rounds with `--catalog: Internal server error`
//! (a duplicate `products_slug_key` from two loads inserting the same product).

use crate::helpers::{fresh_postgres_schema, skip_postgres, test_config, AppOptions};
use agentpmt_server::{Server, ServerConfig};

const INSTANCES: usize = 4;
const ROUNDS: usize = 20;

fn without_catalog(config: &mut ServerConfig) {
    config.catalog = "none".to_owned();
}

/// Builds `INSTANCES` servers on `url` at once; the start-up errors of those that failed.
async fn start_together(url: &str) -> (Vec<Server>, Vec<String>) {
    let builds: Vec<_> = (0..INSTANCES)
        .map(|_| tokio::spawn(Server::build(test_config(url, &AppOptions::default()))))
        .collect();
    let mut servers = Vec::new();
    let mut failures = Vec::new();
    for build in builds {
        match build.await.unwrap() {
            Ok(server) => servers.push(server),
            Err(e) => failures.push(e.to_string()),
        }
    }
    (servers, failures)
}

async fn stop(servers: Vec<Server>) {
    for server in servers {
        server.state().db.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_four_instances_start_together_twenty_times() {
    if skip_postgres() {
        return;
    }
    let catalog = ServerConfig::default().catalog_file().unwrap().unwrap();
    for round in 0..ROUNDS {
        let url = fresh_postgres_schema().await;
        let (servers, failures) = start_together(&url).await;
        assert!(
            failures.is_empty(),
            "round {round}, empty database: {failures:?}"
        );
        stop(servers).await;
        if round % 4 == 0 {
            let (servers, failures) = start_together(&url).await;
            assert!(
                failures.is_empty(),
                "round {round}, populated database: {failures:?}"
            );
            stop(servers).await;
        }

        // Migrated but without a catalog: the four catalog loads start at the same moment
        // (the widest window for two of them inserting the same product).
        let bare = fresh_postgres_schema().await;
        let migrated = Server::build(test_config(&bare, &AppOptions::configured(without_catalog)))
            .await
            .unwrap();
        stop(vec![migrated]).await;
        let (servers, failures) = start_together(&bare).await;
        assert!(
            failures.is_empty(),
            "round {round}, migrated database without a catalog: {failures:?}"
        );
        stop(servers).await;
        drop_schema(&bare).await;

        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        let products: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM products")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(products as usize, catalog.products.len(), "round {round}");
        let vendors: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM vendors")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(vendors as usize, catalog.vendors.len(), "round {round}");
        let failed_migrations: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE NOT success")
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(failed_migrations, 0, "round {round}");
        pool.close().await;
        drop_schema(&url).await;
    }
}

async fn drop_schema(url: &str) {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    let schema: String = sqlx::query_scalar("SELECT current_schema()::text")
        .fetch_one(&pool)
        .await
        .unwrap();
    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
}
