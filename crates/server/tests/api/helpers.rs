//! Test harness: spawns the real server on port 0 against a fresh database (a temporary
//! SQLite file, or a fresh schema in PostgreSQL), with typed request helpers.
//!
//! PostgreSQL comes from `AGENTPMT_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`). When it is unreachable the PostgreSQL
//! variants fail, unless `AGENTPMT_TEST_SKIP_POSTGRES=1` is set (the test script sets it,
//! loudly, only outside CI).

use agentpmt_protocol::signing::sign_body;
use agentpmt_protocol::{PrivateKey, SignedAction, WalletAddress};
use agentpmt_server::db::Db;
use agentpmt_server::{AppState, Server, ServerConfig};
use reqwest::StatusCode;
use secrecy::SecretString;
use serde_json::{json, Map, Value};
use std::sync::atomic::{AtomicU64, Ordering};

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Generates `sqlite` and `postgres` variants of async test functions taking a [`Backend`].
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if $crate::helpers::skip_postgres() {
                        return;
                    }
                    super::$name($crate::helpers::Backend::Postgres).await
                }
            )*
        }
    };
}

/// True when PostgreSQL tests are to be skipped (announced on stderr).
pub fn skip_postgres() -> bool {
    let skip = std::env::var("AGENTPMT_TEST_SKIP_POSTGRES").is_ok_and(|v| v == "1");
    if skip {
        eprintln!("!!! SKIPPING a PostgreSQL test: AGENTPMT_TEST_SKIP_POSTGRES=1 !!!");
    }
    skip
}

fn postgres_url() -> String {
    std::env::var("AGENTPMT_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh, empty schema in the test PostgreSQL database; returns a URL that uses it.
pub async fn fresh_postgres_schema() -> String {
    let base = postgres_url();
    let admin = sqlx::PgPool::connect(&base)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {base} is required for this test: {e}"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // Remove schemas that earlier runs left behind (older than an hour).
    let stale: Vec<String> = sqlx::query_scalar(
        "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'agentpmt_t_%'",
    )
    .fetch_all(&admin)
    .await
    .unwrap();
    for schema in stale {
        let created: u64 = schema
            .split('_')
            .nth(2)
            .and_then(|t| t.parse().ok())
            .unwrap_or(0);
        if created + 3600 < now {
            let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                .execute(&admin)
                .await;
        }
    }
    let schema = format!(
        "agentpmt_t_{now}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    let separator = if base.contains('?') { '&' } else { '?' };
    format!("{base}{separator}options=-c%20search_path%3D{schema}")
}

/// Options for [`spawn_app_with`].
#[derive(Debug, Clone)]
pub struct AppOptions {
    pub admin_token: bool,
    pub session_ttl_secs: u64,
    pub max_body_bytes: usize,
    /// Payment networks (None: the dev network).
    pub payments: Option<agentpmt_server::payments::networks::PaymentsFile>,
    /// Gas-paying key of evm settlement.
    pub settlement_key: Option<String>,
    pub fault: Option<agentpmt_server::payments::Fault>,
    pub reconcile_interval_secs: u64,
    /// Any further change to the configuration (limits, trusted proxies, ...).
    pub configure: Option<fn(&mut ServerConfig)>,
}

impl Default for AppOptions {
    fn default() -> Self {
        AppOptions {
            admin_token: true,
            session_ttl_secs: 900,
            max_body_bytes: 64 * 1024,
            payments: None,
            settlement_key: None,
            fault: None,
            reconcile_interval_secs: 3600,
            configure: None,
        }
    }
}

impl AppOptions {
    /// Default options with `configure` applied to the configuration.
    pub fn configured(configure: fn(&mut ServerConfig)) -> Self {
        AppOptions {
            configure: Some(configure),
            ..AppOptions::default()
        }
    }
}

/// A running server and what tests need to talk to it.
#[derive(Debug)]
pub struct TestApp {
    pub base_url: String,
    pub http: reqwest::Client,
    pub state: AppState,
    pub database_url: String,
    _dir: Option<tempfile::TempDir>,
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, AppOptions::default()).await
}

pub async fn spawn_app_with(backend: Backend, options: AppOptions) -> TestApp {
    let (database_url, dir) = match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().unwrap();
            (
                format!("sqlite://{}/agentpmt.db", dir.path().display()),
                Some(dir),
            )
        }
        Backend::Postgres => (fresh_postgres_schema().await, None),
    };
    let app = spawn_on(&database_url, options).await;
    TestApp { _dir: dir, ..app }
}

/// A second server on an existing database (several instances behind a load balancer).
pub async fn spawn_on(database_url: &str, options: AppOptions) -> TestApp {
    let server = Server::build(test_config(database_url, &options))
        .await
        .expect("server starts");
    let addr = server.local_addr();
    let state = server.state().clone();
    tokio::spawn(server.run_until(std::future::pending()));
    TestApp {
        base_url: format!("http://{addr}"),
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .build()
            .unwrap(),
        state,
        database_url: database_url.to_owned(),
        _dir: None,
    }
}

/// The configuration [`spawn_on`] starts a server with.
pub fn test_config(database_url: &str, options: &AppOptions) -> ServerConfig {
    let mut config = ServerConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        database_url: database_url.to_owned(),
        admin_token: options
            .admin_token
            .then(|| SecretString::from(ADMIN_TOKEN.to_owned())),
        session_ttl_secs: options.session_ttl_secs,
        max_body_bytes: options.max_body_bytes,
        db_max_connections: 8,
        payments: options.payments.clone(),
        settlement_private_key: options.settlement_key.clone().map(SecretString::from),
        fault: options.fault,
        reconcile_interval_secs: options.reconcile_interval_secs,
        receipt_poll_ms: 50,
        // Refusals are answered at once; the tarpit has tests of its own that turn it on.
        tarpit_ms: 0,
        ..ServerConfig::default()
    };
    if let Some(configure) = options.configure {
        configure(&mut config);
    }
    config
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// POSTs raw bytes; returns status and JSON body (Null when not JSON).
    pub async fn post_bytes(
        &self,
        path: &str,
        body: impl Into<reqwest::Body>,
    ) -> (StatusCode, Value) {
        self.post_to(self.url(path), body).await
    }

    /// POSTs raw bytes to an absolute URL (e.g. a probe server sharing this app's state).
    pub async fn post_to(
        &self,
        url: String,
        body: impl Into<reqwest::Body>,
    ) -> (StatusCode, Value) {
        let response = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let bytes = response.bytes().await.unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    pub async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.post_bytes(path, serde_json::to_vec(body).unwrap())
            .await
    }

    /// POSTs a JSON body with extra headers; returns status, headers and JSON body.
    pub async fn post_with_headers(
        &self,
        path: &str,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let mut request = self.http.post(self.url(path)).json(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        (
            status,
            headers,
            response.json().await.unwrap_or(Value::Null),
        )
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let response = self.http.get(self.url(path)).send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// A session nonce for `wallet`.
    pub async fn session(&self, wallet: &WalletAddress) -> String {
        let (status, body) = self
            .post(
                "/api/external/auth/session",
                &json!({"wallet_address": wallet.to_string()}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["session_nonce"].as_str().unwrap().to_owned()
    }

    /// Admin request with the test token.
    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method, self.url(path))
            .bearer_auth(ADMIN_TOKEN);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Grants (or removes) credits through the operator API.
    pub async fn adjust(&self, wallet: &WalletAddress, amount: i64) -> (StatusCode, Value) {
        self.admin(
            reqwest::Method::POST,
            &format!("/api/admin/wallets/{wallet}/credits"),
            Some(&json!({"amount_credits": amount, "reason": "test"})),
        )
        .await
    }

    /// A signed balance body.
    pub fn balance_body(&self, key: &PrivateKey, nonce: &str, request_id: &str) -> Value {
        signed(
            key,
            SignedAction::Balance,
            &[],
            nonce,
            request_id,
            Map::new(),
        )
    }

    /// Runs a scalar query (text result) on the server's database.
    pub async fn text(&self, sql: &str) -> String {
        match &self.state.db {
            Db::Sqlite { writer, .. } => sqlx::query_scalar::<_, String>(sql)
                .fetch_one(writer)
                .await
                .unwrap(),
            Db::Postgres(pool) => sqlx::query_scalar::<_, String>(sql)
                .fetch_one(pool)
                .await
                .unwrap(),
        }
    }

    /// Runs a scalar query (i64 result) on the server's database.
    pub async fn scalar(&self, sql: &str) -> i64 {
        match &self.state.db {
            Db::Sqlite { writer, .. } => sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(writer)
                .await
                .unwrap(),
            Db::Postgres(pool) => sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(pool)
                .await
                .unwrap(),
        }
    }

    /// Runs a query of one text column on the server's database.
    pub async fn strings(&self, sql: &str) -> Vec<String> {
        match &self.state.db {
            Db::Sqlite { writer, .. } => sqlx::query_scalar::<_, String>(sql)
                .fetch_all(writer)
                .await
                .unwrap(),
            Db::Postgres(pool) => sqlx::query_scalar::<_, String>(sql)
                .fetch_all(pool)
                .await
                .unwrap(),
        }
    }

    /// Executes a statement on the server's database.
    pub async fn execute(&self, sql: &str) -> Result<u64, sqlx::Error> {
        match &self.state.db {
            Db::Sqlite { writer, .. } => sqlx::query(sql)
                .execute(writer)
                .await
                .map(|r| r.rows_affected()),
            Db::Postgres(pool) => sqlx::query(sql)
                .execute(pool)
                .await
                .map(|r| r.rows_affected()),
        }
    }

    /// Stores a session directly (e.g. one that expired long ago).
    pub async fn insert_session(&self, nonce: &str, wallet: &WalletAddress, expires_at_ms: i64) {
        self.execute(&format!(
            "INSERT INTO auth_sessions (nonce, wallet_address, created_at_ms, expires_at_ms) \
             VALUES ('{nonce}', '{wallet}', {}, {expires_at_ms})",
            expires_at_ms - 900_000
        ))
        .await
        .unwrap();
    }

    /// The text of `GET /metrics`.
    pub async fn metrics(&self) -> String {
        self.http
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Rows written by signed requests so far.
    pub async fn replay_count(&self) -> i64 {
        self.scalar("SELECT COUNT(*) FROM request_replays").await
    }
}

/// A signed body for `action` with `fields`.
pub fn signed(
    key: &PrivateKey,
    action: SignedAction,
    params: &[(&str, &str)],
    nonce: &str,
    request_id: &str,
    fields: Map<String, Value>,
) -> Value {
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_owned())
    };
    let (body, _) = sign_body(key, action.spec(), param, nonce, request_id, fields).unwrap();
    Value::Object(body)
}

/// Asserts the fields every envelope (success or error) carries: `request_id`, `help_url`
/// and `help_doc`.
pub fn assert_request_and_help(body: &Value) {
    assert!(
        body["request_id"].as_str().is_some_and(|s| !s.is_empty()),
        "{body}"
    );
    assert!(
        body["help_url"]
            .as_str()
            .is_some_and(|s| s.ends_with("/api/external/agent-help")),
        "{body}"
    );
    assert!(
        body["help_doc"]
            .as_str()
            .is_some_and(|s| s.starts_with("http")),
        "{body}"
    );
}

/// Asserts the common error envelope and returns `details`.
pub fn assert_envelope(
    status: StatusCode,
    body: &Value,
    expected_status: u16,
    code: &str,
) -> Value {
    assert_eq!(
        status.as_u16(),
        expected_status,
        "unexpected status, body: {body}"
    );
    assert_eq!(body["success"], json!(false), "{body}");
    assert_eq!(body["error_code"], json!(code), "{body}");
    assert_eq!(body["code"], json!(code), "{body}");
    assert!(
        body["error"].as_str().is_some_and(|s| !s.is_empty()),
        "{body}"
    );
    assert!(
        body["message"].as_str().is_some_and(|s| !s.is_empty()),
        "{body}"
    );
    assert_request_and_help(body);
    let checklist = body["details"]["checklist"]
        .as_array()
        .expect("details.checklist");
    assert!(
        !checklist.is_empty() && checklist.iter().all(|c| c.is_string()),
        "{body}"
    );
    if expected_status == 422 {
        let issues = body["detail"].as_array().expect("422 detail is a list");
        assert!(!issues.is_empty());
        for issue in issues {
            assert!(
                issue["loc"].is_array() && issue["msg"].is_string() && issue["type"].is_string(),
                "{issue}"
            );
        }
    } else {
        assert!(body["detail"].is_string(), "detail is a string: {body}");
    }
    body["details"].clone()
}

/// Every log event of this test process, at TRACE level, as text.
#[derive(Clone, Default)]
pub struct Captured(pub std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub fn capture_logs() -> Captured {
    static CAPTURED: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
    CAPTURED
        .get_or_init(|| {
            let captured = Captured::default();
            let writer = captured.clone();
            tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(
                    "trace,hyper=debug,hyper_util=debug,h2=debug,reqwest=debug",
                ))
                .with_writer(move || writer.clone())
                .with_ansi(false)
                .init();
            captured
        })
        .clone()
}

impl Captured {
    /// Everything captured so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}
