//! Assembling and running the server: routes, middleware, background work. The shared
//! state lives below the areas, in [`crate::state`].

use crate::auth::replay::ReplayClaims;
use crate::auth::sessions::SessionStore;
use crate::config::{ConfigError, ServerConfig};
use crate::db::{Db, DbOptions};
use crate::deadline::Deadline;
use crate::error::{ApiError, RequestContext, REQUEST_CONTEXT};
use crate::ops::metrics::Metrics;
use crate::payments::Payments;
use crate::ratelimit::Limits;
use crate::state::{AppState, Inner};
use crate::workflows::schedules;
use crate::{admin, auth, credits, help, identity, openapi, ops, tools};
use agentpmt_protocol::ErrorCode;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;
use utoipa_axum::router::OpenApiRouter;

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("network: {0}")]
    Io(#[from] std::io::Error),
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("audit: {0}")]
    Audit(String),
}

/// The router with every API route and its OpenAPI document.
pub fn api_router() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(openapi::base_document())
        .merge(auth::router())
        .merge(credits::router())
        .merge(admin::router())
        .merge(identity::router())
        .merge(help::router())
        .merge(ops::router())
        .merge(tools::router())
        .merge(crate::workflows::router())
        .merge(crate::accounts::router())
        .merge(crate::jobs::router())
        .merge(crate::mcp::router())
        .split_for_parts()
}

/// The payment networks and settlement backends `config` describes.
fn payments_of(config: &ServerConfig) -> Result<Payments, Error> {
    use secrecy::ExposeSecret;
    let networks = config.networks()?;
    Ok(Payments::new(
        networks,
        config
            .settlement_private_key
            .as_ref()
            .map(|k| k.expose_secret()),
        Duration::from_millis(config.receipt_poll_ms.max(10)),
        config.fault,
    )
    .map_err(ConfigError::from)?)
}

/// Runs the payment audit against the database and chains `config` names, without serving
/// (`agentpmt-server audit`). The database must be migrated (a server ran on it).
pub async fn audit(
    config: &ServerConfig,
) -> Result<agentpmt_protocol::wire::PaymentAuditReport, Error> {
    let payments = payments_of(config)?;
    let db = Db::connect(
        &config.database_url,
        &DbOptions {
            max_connections: config.db_max_connections,
            ..DbOptions::default()
        },
    )
    .await?;
    let report = crate::payments::audit::run(&db, &payments)
        .await
        .map_err(|e| Error::Audit(e.message().to_owned()));
    db.close().await;
    report
}

/// Whether the server runs in its production posture (`--production`, or
/// `AGENTPMT_ENV=production`).
pub fn is_production(config: &ServerConfig) -> bool {
    config.production
        || std::env::var("AGENTPMT_ENV").is_ok_and(|v| v.eq_ignore_ascii_case("production"))
}

/// In production, refuses to start with any development setting, naming every one; else
/// says loudly that this is a development set-up.
async fn production_posture(
    config: &ServerConfig,
    payments: &Payments,
    db: &Db,
) -> Result<(), Error> {
    if !is_production(config) {
        tracing::warn!(
            "DEVELOPMENT set-up: not running with --production (dev defaults are allowed: the dev payment network, no operator token, ...); production deployments set --production"
        );
        return Ok(());
    }
    let mut problems = Vec::new();
    if payments
        .networks
        .networks
        .iter()
        .any(|n| n.settlement == crate::payments::networks::SettlementKind::Dev)
    {
        problems.push(
            "--payments-config: the dev settlement network moves no funds; configure real chains"
                .to_owned(),
        );
    }
    for n in payments.networks.networks.iter().filter(|n| {
        n.confirmations == 0 && n.settlement != crate::payments::networks::SettlementKind::Dev
    }) {
        problems.push(format!(
            "--payments-config: chain {} counts payments at depth 0; set confirmations",
            n.chain_id
        ));
    }
    if config.admin_token.is_none() && config.admin_token_sha256.is_none() {
        problems.push(
            "--admin-token (or --admin-token-sha256): the operator API needs a token".to_owned(),
        );
    }
    if config.secrets_key.is_none() {
        let sealed = crate::db::macros::sql_scalar_optional!(
            db.read().await?.conn(),
            i64,
            "SELECT COUNT(*) FROM vendors WHERE secret_sealed IS NOT NULL"
        )?
        .unwrap_or(0);
        if sealed > 0 {
            problems.push(format!("--secrets-key: {sealed} vendor(s) have sealed secrets that cannot be opened without it"));
        }
    }
    if config.trusted_proxies.iter().any(|p| p.is_everything()) {
        problems.push("--trusted-proxies: a wildcard (0.0.0.0/0 or ::/0) lets every client choose its own address".to_owned());
    }
    if problems.is_empty() {
        tracing::info!("production posture: every required setting is present");
        Ok(())
    } else {
        Err(ConfigError::Production(problems).into())
    }
}

/// The per-IP and per-wallet limits of `config`, in the store it names.
async fn limits_of(config: &ServerConfig, db: &Db) -> Result<Limits, Error> {
    use crate::config::RateLimitBackend;
    use crate::ratelimit::shared::SharedStore;
    let limits = Limits::new(config);
    let store = match config.rate_limit_backend {
        RateLimitBackend::Memory => return Ok(limits),
        RateLimitBackend::Postgres => {
            if db.backend() != crate::db::Backend::Postgres {
                return Err(ConfigError::RateLimitBackend(
                    "postgres needs --database-url to be a PostgreSQL database".to_owned(),
                )
                .into());
            }
            SharedStore::Postgres(db.clone())
        }
        RateLimitBackend::Redis => {
            use secrecy::ExposeSecret;
            let Some(url) = &config.redis_url else {
                return Err(
                    ConfigError::RateLimitBackend("redis needs --redis-url".to_owned()).into(),
                );
            };
            SharedStore::redis(url.expose_secret(), &config.redis_key_prefix)
                .await
                .map_err(|e| ConfigError::RateLimitBackend(format!("redis: {}", e.0)))?
        }
    };
    tracing::info!(
        backend = config.rate_limit_backend.as_str(),
        "rate limits are shared by every instance"
    );
    Ok(limits.shared_in(store, config.rate_limit_backend))
}

/// The OpenAPI document of every route, as served at `/openapi.json`.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    let (_, mut document) = api_router();
    openapi::document_self(&mut document);
    document
}

/// A socket listening on `addr` with a queue of `backlog` connections not yet accepted
/// (the kernel caps it at `net.core.somaxconn`). `TcpListener::bind` would queue 128: a
/// connection flood overflows that, and the SYN of a well-behaved client is then dropped
/// and retried only after a second.
fn listen(addr: std::net::SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As `TcpListener::bind`: a restarted server binds while old connections linger.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// A server bound to its port, ready to run.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    state: AppState,
    router: Router,
}

impl Server {
    /// Connects to the database, applies migrations and binds the listening socket.
    pub async fn build(config: ServerConfig) -> Result<Server, Error> {
        let admin_token_digest = config.admin_token_digest()?;
        config.check_liveness()?;
        let ops_token_digest = config.ops_token.as_ref().map(|token| {
            use secrecy::ExposeSecret;
            use sha2::{Digest, Sha256};
            Sha256::digest(token.expose_secret().as_bytes()).into()
        });
        let instance = crate::instances::Instance::new(&config);
        let mut payments = payments_of(&config)?;
        payments.owner = Some(instance.id.clone());
        if payments.networks.is_dev() {
            tracing::warn!(
                network = "eip155:1337",
                "payments run on the DEV NETWORK: signatures and fields are checked, no chain is used and no funds move; configure --payments-config for real chains"
            );
        }
        let db = Db::connect(
            &config.database_url,
            &DbOptions {
                max_connections: config.db_max_connections,
                ..DbOptions::default()
            },
        )
        .await?;
        // Instances started together on one database take turns: the first migrates and
        // loads the catalog, the others find both done (each step is idempotent).
        let startup = db.startup_lock().await?;
        db.migrate().await?;
        crate::jobs::PostHosts::parse(&config.job_post_hosts).map_err(ConfigError::JobPostHosts)?;
        let secrets = config.secrets_key()?;
        production_posture(&config, &payments, &db).await?;
        if let Some(file) = config.catalog_file()? {
            let (vendors, products) =
                tools::catalog::load(&db, &file, secrets.as_ref(), config.request_timeout_secs)
                    .await
                    .map_err(|e| {
                        // The cause of an internal failure goes to the log, not the message.
                        e.log_cause();
                        ConfigError::Catalog(e.message().to_owned())
                    })?;
            tracing::info!(catalog = %config.catalog, vendors, products, "catalog loaded");
        }
        startup.release().await?;
        instance.register(&db).await?;
        let listener = listen(config.bind, config.listen_backlog)?;
        let local = listener.local_addr()?;
        let public_url: Arc<str> = config
            .public_url
            .clone()
            .map(|u| u.trim_end_matches('/').to_owned())
            .unwrap_or_else(|| format!("http://{local}"))
            .into();
        let sessions = SessionStore::new(Duration::from_secs(config.session_ttl_secs), 100_000);
        let replay_claims = ReplayClaims::start(db.clone());
        let limits = limits_of(&config, &db).await?;
        let state = AppState::new(Inner {
            db,
            config,
            sessions,
            replay_claims,
            admin_token_digest,
            ops_token_digest,
            readiness: crate::ops::ReadinessCache::default(),
            public_url,
            payments,
            limits,
            instance,
            metrics: Metrics::new(),
            console: Default::default(),
            tools: tools::Tools::new(secrets),
            openapi_builder: openapi_document,
            openapi: OnceLock::new(),
        });
        let router = build_router(state.clone());
        Ok(Server {
            listener,
            state,
            router,
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The shared state (tests use its database handle).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` completes, then finishes in-flight requests and stops
    /// background work.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let sweeper = tokio::spawn(sweep(self.state.clone(), stop_rx.clone()));
        let reconciler = tokio::spawn(reconcile_payments(self.state.clone(), stop_rx.clone()));
        let verifier = tokio::spawn(crate::jobs::verify::run(
            self.state.clone(),
            stop_rx.clone(),
        ));
        let liveness = tokio::spawn(liveness(self.state.clone(), stop_rx));
        tracing::info!(address = %self.local_addr(), public_url = %self.state.public_url,
            backend = ?self.state.db.backend(), "serving the External Agent API");
        let limits = crate::serve::ConnectionLimits {
            header_read_timeout: Duration::from_secs(
                self.state.config.header_read_timeout_secs.max(1),
            ),
            max_connections: self.state.config.max_connections,
        };
        let served = crate::serve::serve(self.listener, self.router, limits, shutdown).await;
        let _ = stop_tx.send(true);
        let _ = sweeper.await;
        let _ = reconciler.await;
        let _ = verifier.await;
        let _ = liveness.await;
        self.state.db.close().await;
        served.map_err(Error::Io)
    }
}

/// Every route plus fallbacks and middleware, around `state`.
pub fn build_router(state: AppState) -> Router {
    let (api, _) = api_router();
    let api = api
        .route(
            "/openapi.json",
            axum::routing::get(|State(state): State<AppState>| async move {
                axum::Json(state.openapi_json().as_ref().clone())
            }),
        )
        .merge(crate::console::router(&state));
    with_middleware(api, state)
}

/// The matched route template of a response, set by [`tag_route`] (absent for 404s).
#[derive(Debug, Clone)]
struct RouteLabel(String);

/// Runs inside routing, where the matched template is known, and hands it outward.
async fn tag_route(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let mut response = next.run(req).await;
    if let Some(route) = route {
        response.extensions_mut().insert(RouteLabel(route));
    }
    response
}

/// Adds the envelope fallbacks (404, 405) and the middleware every route runs under
/// (request context and log line, body limit, time limit, panic guard) to `routes`.
pub fn with_middleware(routes: Router<AppState>, state: AppState) -> Router {
    let timeout = Duration::from_secs(state.config.request_timeout_secs.max(1));
    routes
        .route_layer(middleware::from_fn(tag_route))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(CatchPanicLayer::custom(
            |_panic: Box<dyn std::any::Any + Send>| {
                ApiError::internal(anyhow::anyhow!("handler panicked")).into_response()
            },
        ))
        .layer(middleware::from_fn_with_state(timeout, enforce_timeout))
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .layer(axum::Extension(crate::extract::BodyLimit(
            state.config.max_body_bytes,
            Some(state.clone()),
        )))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            request_context,
        ))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NOT_FOUND, "No such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        ErrorCode::METHOD_NOT_ALLOWED,
        "This route does not accept this HTTP method",
    )
}

/// The request time limit, with the commit gate of [`Deadline`]: at the limit the answer is
/// 503 `REQUEST_TIMEOUT` unless the handler already committed to an effect that must be
/// answered (a posted hold, a settled payment); then its answer is awaited.
async fn enforce_timeout(State(limit): State<Duration>, mut req: Request, next: Next) -> Response {
    let deadline = Deadline::after(limit);
    req.extensions_mut().insert(deadline.clone());
    let handler = next.run(req);
    tokio::pin!(handler);
    tokio::select! {
        response = &mut handler => response,
        _ = tokio::time::sleep_until(deadline.at()) => {
            if deadline.expire() {
                ApiError::new(ErrorCode::REQUEST_TIMEOUT, "The request took too long").into_response()
            } else {
                handler.await
            }
        }
    }
}

/// Sets the correlation id (echoing a sane `x-request-id`, else a fresh UUID), runs the
/// request inside its [`RequestContext`], and logs one line per request: method, route,
/// status, latency, id; and counts it in the metrics (by matched route, `unmatched` for
/// unknown paths). Bodies and headers are never logged.
async fn request_context(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let request_id: Arc<str> = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(Arc::from)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string().into());
    let method = req.method().clone();
    let path: String = req.uri().path().chars().take(200).collect();
    let started = Instant::now();
    let ctx = RequestContext {
        request_id: request_id.clone(),
        public_url: state.public_url.clone(),
    };
    let mut response = REQUEST_CONTEXT.scope(ctx, next.run(req)).await;
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", value);
    }
    let elapsed = started.elapsed();
    let matched = response
        .extensions()
        .get::<RouteLabel>()
        .map(|r| r.0.as_str());
    state.metrics.request(
        method.as_str(),
        matched.unwrap_or("unmatched"),
        response.status().as_u16(),
        elapsed,
    );
    let route = matched.unwrap_or(&path);
    tracing::info!(
        target: "agentpmt::http",
        method = %method,
        route = %route,
        status = response.status().as_u16(),
        latency_us = elapsed.as_micros() as u64,
        request_id = %request_id,
        "request"
    );
    response
}

/// Background upkeep every ten minutes, until shutdown: prunes long-expired sessions and
/// their replay records, ended AgentAddress limiter windows, idle in-memory buckets,
/// workflow-schedule claim records older than a day, and kept outputs of paid x402 calls a
/// day after their payment became final, and help tickets older than 30 days.
async fn sweep(state: AppState, mut stop: tokio::sync::watch::Receiver<bool>) {
    let period = Duration::from_secs(600);
    // The first sweep comes one period after start-up, not at once.
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                match state.sessions.prune(&state.db).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(sessions = n, "pruned expired sessions"),
                    Err(e) => tracing::warn!(error = %e, "session pruning failed"),
                }
                let window_ms = i64::try_from(state.config.agentaddress_window_secs * 1000).unwrap_or(i64::MAX);
                let before = crate::time::now_ms().saturating_sub(window_ms.saturating_mul(2));
                if let Err(e) = identity::limiter::prune(&state.db, before).await {
                    tracing::warn!(error = %e, "AgentAddress limiter pruning failed");
                }
                let claims_before = crate::time::now_ms() - schedules::CLAIM_RECORD_RETENTION_MS;
                if let Err(e) = schedules::prune_claim_records(&state.db, claims_before).await {
                    tracing::warn!(error = %e, "schedule claim record pruning failed");
                }
                let outputs_before = crate::time::now_ms() - tools::usage::RESPONSE_RETENTION_MS;
                if let Err(e) = tools::usage::prune_responses(&state.db, outputs_before).await {
                    tracing::warn!(error = %e.message(), "pruning kept tool outputs failed");
                }
                let tickets_before = crate::time::now_ms() - crate::help::HELP_TICKET_RETENTION_MS;
                if let Err(e) = crate::help::prune_tickets(&state.db, tickets_before).await {
                    tracing::warn!(error = %e, "help ticket pruning failed");
                }
                state.limits.prune().await;
                if let Err(e) = crate::instances::Instance::prune(&state.db).await {
                    tracing::warn!(error = %e, "instance pruning failed");
                }
            }
            _ = stop.changed() => return,
        }
    }
}

/// Heartbeats this instance every `--heartbeat-interval-secs` and, at each beat, takes over
/// the work of instances that stopped beating (see [`crate::instances`]). At shutdown, marks
/// this instance stopped so that the others do not wait for the timeout.
async fn liveness(state: AppState, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(state.instance.heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let recovering = Arc::new(tokio::sync::Mutex::new(()));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                match state.instance.heartbeat(&state.db).await {
                    Ok(now) => {
                        // The recovery can wait on chains and post pages: it runs beside the
                        // heartbeat, one round at a time.
                        if let Ok(guard) = recovering.clone().try_lock_owned() {
                            let state = state.clone();
                            tokio::spawn(async move {
                                take_over(&state, now).await;
                                drop(guard);
                            });
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "instance heartbeat failed"),
                }
            }
            _ = stop.changed() => {
                if let Err(e) = state.instance.stop(&state.db).await {
                    tracing::warn!(error = %e, "could not mark this instance stopped");
                }
                return;
            }
        }
    }
}

/// Ends the leases held by instances that are no longer alive at database time `now`, then
/// runs the recovery that takes each kind of work over (conditional updates: one taker).
async fn take_over(state: &AppState, now: i64) {
    let me = state.instance.id.clone();
    let alive_after = state.instance.alive_after(now);
    let expired = async {
        let mut tx = state.db.begin().await?;
        let calls = tools::usage::expire_orphaned(&mut tx, &me, alive_after).await?;
        let purchases = crate::payments::store::expire_orphaned(&mut tx, &me, alive_after).await?;
        let checks = crate::jobs::verify::expire_orphaned(&mut tx, &me, alive_after).await?;
        tx.commit().await?;
        Ok::<_, sqlx::Error>((calls, purchases, checks))
    }
    .await;
    let (calls, purchases, checks) = match expired {
        Ok(counts) => counts,
        Err(e) => {
            tracing::warn!(error = %e, "taking over the work of stopped instances failed");
            return;
        }
    };
    if calls + purchases + checks == 0 {
        return;
    }
    tracing::warn!(
        calls,
        purchases,
        checks,
        "taking over the work of instances that stopped heartbeating"
    );
    if calls > 0 {
        if let Err(e) = tools::usage::sweep_stale(&state.db).await {
            tracing::warn!(error = %e.message(), "tool call sweep failed");
        }
        if let Err(e) = tools::invoke::reconcile_payments(state).await {
            tracing::warn!(error = %e.message(), "tool payment reconciliation failed");
        }
    }
    if purchases > 0 {
        if let Err(e) = state.payments.reconcile_open(&state.db).await {
            tracing::warn!(error = %e.message(), "settlement reconciliation failed");
        }
    }
    if checks > 0 {
        match crate::jobs::verify::client(state) {
            Ok(http) => {
                if let Err(e) = crate::jobs::verify::run_once(state, &http).await {
                    tracing::warn!(error = %e.message(), "job verification failed");
                }
            }
            Err(e) => tracing::warn!(error = %e, "the job verifier has no HTTP client"),
        }
    }
}

/// Reconciles settlements whose outcome is unknown: once at start-up (a crash between
/// broadcast and credit), then every `reconcile_interval_secs`.
async fn reconcile_payments(state: AppState, mut stop: tokio::sync::watch::Receiver<bool>) {
    let period = Duration::from_secs(state.config.reconcile_interval_secs.max(1));
    let mut tick = tokio::time::interval(period);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                match state.payments.reconcile_open(&state.db).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(purchases = n, "reconciled open settlements"),
                    Err(e) => tracing::warn!(error = %e.message(), "settlement reconciliation failed"),
                }
                match tools::invoke::reconcile_payments(&state).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(calls = n, "reconciled open tool payments"),
                    Err(e) => tracing::warn!(error = %e.message(), "tool payment reconciliation failed"),
                }
                match tools::usage::sweep_stale(&state.db).await {
                    Ok(0) => {}
                    Ok(n) => tracing::warn!(calls = n, "finished tool calls left running past their deadline (holds released)"),
                    Err(e) => tracing::warn!(error = %e.message(), "tool call sweep failed"),
                }
            }
            _ = stop.changed() => return,
        }
    }
}
