//! Operations endpoints.
//!
//! Endpoints:
//! - `GET /healthz` — 200 while the process serves requests.
//! - `GET /readyz` — 200 when the database answers and its migrations are the ones this
//!   binary embeds; 503 with the failed checks otherwise.
//! - `GET /metrics` — Prometheus text exposition ([`metrics`]).

pub mod metrics;

use crate::state::AppState;
use agentpmt_protocol::wire::{HealthResponse, ReadinessCheck};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
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

/// Readiness: the database is reachable and its schema is current.
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
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<HealthResponse>) {
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
    for (chain_id, settler) in state.payments.settlers() {
        let reachable = if settler.reachable().await {
            Ok("reachable".to_owned())
        } else {
            Err("the chain node or facilitator does not answer".to_owned())
        };
        checks.push(check(&format!("payments eip155:{chain_id}"), reachable));
    }
    let ready = checks.iter().all(|c| c.status == "ok");
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
    responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain", body = String))
)]
pub async fn metrics_text(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
}
