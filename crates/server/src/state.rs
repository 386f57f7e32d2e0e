//! The state every area shares: the database, configuration, sessions, payments, limits,
//! metrics and the tool client. It sits below the areas: areas take [`AppState`] from here,
//! and only `app.rs` (which assembles the router) sits above them.

use crate::auth::replay::ReplayClaims;
use crate::auth::sessions::SessionStore;
use crate::config::ServerConfig;
use crate::db::Db;
use crate::ops::metrics::Metrics;
use crate::payments::Payments;
use crate::ratelimit::Limits;
use crate::tools;
use std::ops::Deref;
use std::sync::{Arc, OnceLock};

/// Builds the OpenAPI document of every route (given by the assembler, which knows them).
pub type OpenApiBuilder = fn() -> utoipa::openapi::OpenApi;

/// Everything handlers share.
#[derive(Debug)]
pub struct Inner {
    pub db: Db,
    pub config: ServerConfig,
    pub sessions: SessionStore,
    /// Batched replay claims of read-only signed endpoints.
    pub replay_claims: ReplayClaims,
    /// SHA-256 of the admin token; `None` disables the operator API.
    pub admin_token_digest: Option<[u8; 32]>,
    /// SHA-256 of the ops token guarding `/metrics` and `/readyz` details; `None`: public.
    pub ops_token_digest: Option<[u8; 32]>,
    /// The last probe of the payment networks, reused by `/readyz` for a few seconds.
    pub readiness: crate::ops::ReadinessCache,
    /// Absolute base URL of this server.
    pub public_url: Arc<str>,
    /// Payment networks and settlement backends.
    pub payments: Payments,
    /// In-memory per-IP and per-wallet limits.
    pub limits: Limits,
    /// This instance's identity and liveness settings.
    pub instance: crate::instances::Instance,
    /// This instance's Prometheus metrics.
    pub metrics: Metrics,
    /// The operator console's sessions and sign-in limit.
    pub console: crate::console::session::ConsoleSessions,
    /// The tool marketplace's vendor client and secrets key.
    pub tools: tools::Tools,
    /// Builds the OpenAPI document (see [`Inner::openapi_json`]).
    pub openapi_builder: OpenApiBuilder,
    /// The OpenAPI document as JSON, built on first use.
    pub openapi: OnceLock<Arc<serde_json::Value>>,
}

impl Inner {
    /// The OpenAPI document of every route (served at `/openapi.json`, rendered by `/docs`,
    /// summarized by `/.well-known/agent.json`).
    pub fn openapi_json(&self) -> Arc<serde_json::Value> {
        self.openapi
            .get_or_init(|| {
                let document = (self.openapi_builder)();
                let mut json = serde_json::to_value(&document).unwrap_or_default();
                crate::openapi::document_constraints(&mut json);
                Arc::new(json)
            })
            .clone()
    }
}

/// Cheaply clonable handle to [`Inner`].
#[derive(Debug, Clone)]
pub struct AppState(Arc<Inner>);

impl AppState {
    /// Wraps the shared state.
    pub fn new(inner: Inner) -> AppState {
        AppState(Arc::new(inner))
    }
}

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    /// The router assembler (`app.rs`) sits above the areas: no module below it imports
    /// from it (they take `AppState` from here).
    #[test]
    fn no_area_imports_the_assembler() {
        fn walk(dir: &std::path::Path, found: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(&path, found);
                    continue;
                }
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                if !name.ends_with(".rs")
                    || ["app.rs", "lib.rs", "main.rs"].contains(&name.as_str())
                {
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap();
                // Spelled in two halves so that this file does not match itself.
                let (crate_app, super_app) = (concat!("crate::", "app"), concat!("super::", "app"));
                if text.contains(crate_app) || text.contains(super_app) {
                    found.push(path.display().to_string());
                }
            }
        }
        let mut found = Vec::new();
        walk(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut found,
        );
        assert!(found.is_empty(), "these import from app.rs: {found:?}");
    }
}
