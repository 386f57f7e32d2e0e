//! Operations endpoints.
//!
//! Endpoints:
//! - `GET /healthz` — 200 while the process serves requests.
//! - `GET /readyz` — 200 when the database answers and its migrations are the ones this
//!   binary embeds; 503 with the failed checks otherwise.
//! - `GET /metrics` — Prometheus text exposition ([`metrics`]).
//!
//! With `--ops-token`, `/metrics` answers 401 without `Authorization: Bearer <ops token>`
//! (or the admin token), and `/readyz` keeps its status code but names its checks only to
//! such a caller. The payment networks' reachability is probed at most every
//! [`READINESS_PROBE_TTL`], however often `/readyz` is called: an unauthenticated client
//! cannot turn it into a flood of requests to the chain nodes.

pub mod metrics;

use crate::error::ApiError;
use crate::state::AppState;
use agentpmt_protocol::wire::{ErrorBody, HealthResponse, ReadinessCheck};
use agentpmt_protocol::ErrorCode;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// This area's routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics_text))
}

/// Liveness: the process is up.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "meta",
    responses((status = 200, description = "The process is up", body = HealthResponse))
)]
pub async fn healthz() -> Json<HealthResponse> {
    Json(HealthResponse {
        status: "ok".to_owned(),
        checks: Vec::new(),
    })
}

/// How long one probe of the payment networks answers `/readyz`.
pub const READINESS_PROBE_TTL: Duration = Duration::from_secs(5);

/// The last probe of the payment networks and when it was made.
#[derive(Debug, Default)]
pub struct ReadinessCache(tokio::sync::Mutex<Option<(Instant, Vec<ReadinessCheck>)>>);

/// Whether the request may see operations details: no ops token is configured, or it
/// carries the ops token or the admin token.
fn ops_allowed(state: &AppState, headers: &HeaderMap) -> bool {
    let Some(expected) = state.ops_token_digest else {
        return true;
    };
    let Some(presented) = crate::admin::bearer(headers) else {
        return false;
    };
    let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
    let ops = bool::from(digest.ct_eq(&expected));
    let admin = state
        .admin_token_digest
        .is_some_and(|admin| bool::from(digest.ct_eq(&admin)));
    ops | admin
}

/// The payment networks' checks, probed at most every [`READINESS_PROBE_TTL`].
pub(crate) async fn payment_checks(state: &AppState) -> Vec<ReadinessCheck> {
    let mut cached = state.readiness.0.lock().await;
    if let Some((at, checks)) = cached.as_ref() {
        if at.elapsed() < READINESS_PROBE_TTL {
            return checks.clone();
        }
    }
    let mut checks = Vec::new();
    for (chain_id, settler) in state.payments.settlers() {
        let reachable = if settler.reachable().await {
            Ok("reachable".to_owned())
        } else {
            Err("the chain node or facilitator does not answer".to_owned())
        };
        checks.push(check(&format!("payments eip155:{chain_id}"), reachable));
    }
    *cached = Some((Instant::now(), checks.clone()));
    checks
}

fn check(name: &str, result: Result<String, String>) -> ReadinessCheck {
    let (status, detail) = match result {
        Ok(detail) => ("ok", detail),
        Err(detail) => ("failed", detail),
    };
    ReadinessCheck {
        name: name.to_owned(),
        status: status.to_owned(),
        detail,
    }
}

/// Readiness: the database is reachable, its schema is current and the payment networks
/// answer (probed at most every 5 s). With `--ops-token`, the checks are listed only to a
/// caller with the ops or admin token; the status code is the same for everyone.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "meta",
    responses(
        (status = 200, description = "Ready to serve", body = HealthResponse),
        (status = 503, description = "Not ready; see the failed checks", body = HealthResponse),
    )
)]
#[tracing::instrument(skip_all)]
pub async fn readyz(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> (StatusCode, Json<HealthResponse>) {
    let database = state
        .db
        .ping()
        .await
        .map(|()| "reachable".to_owned())
        .map_err(|e| {
            tracing::warn!(error = %e, "readiness: database check failed");
            "the database does not answer".to_owned()
        });
    let migrations = match state.db.migration_status().await {
        Ok((Some(applied), expected)) if applied == expected => Ok(format!("version {applied}")),
        Ok((applied, expected)) => Err(format!(
            "applied version {} but this binary expects {expected}",
            applied.map_or("none".to_owned(), |v| v.to_string())
        )),
        Err(e) => {
            tracing::warn!(error = %e, "readiness: migration check failed");
            Err("the migration table cannot be read".to_owned())
        }
    };
    let mut checks = vec![check("database", database), check("migrations", migrations)];
    // Chain nodes and facilitators of the configured payment networks.
    checks.extend(payment_checks(&state).await);
    let ready = checks.iter().all(|c| c.status == "ok");
    if !ops_allowed(&state, &headers) {
        checks.clear();
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(HealthResponse {
            status: if ready { "ready" } else { "not_ready" }.to_owned(),
            checks,
        }),
    )
}

/// Prometheus metrics of this instance (text exposition format).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "meta",
    responses(
        (status = 200, description = "Prometheus text exposition", content_type = "text/plain", body = String),
        (status = 401, description = "An ops token is configured and was not presented", body = ErrorBody),
    )
)]
pub async fn metrics_text(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if !ops_allowed(&state, &headers) {
        return ApiError::new(
            ErrorCode::ADMIN_UNAUTHORIZED,
            "Metrics need the ops token: Authorization: Bearer <ops token>",
        )
        .into_response();
    }
    state.metrics.limiter_keys(&state.limits.tracked_keys());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}
