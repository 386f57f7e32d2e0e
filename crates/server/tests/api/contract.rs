//! The OpenAPI document describes what the server sends: schemathesis (pinned in
//! `tests/contract/requirements.txt`, installed by `scripts/test` into
//! `tests/contract/.venv`) fuzzes a real server, started on port 0 with a fresh database
//! and the admin token, from its own `/openapi.json`, with positive and negative data and
//! the checks `not_a_server_error`, `response_schema_conformance` and
//! `status_code_conformance`. Any failure fails the test.
//!
//! Bounded for CI: at most [`MAX_EXAMPLES`] cases per operation and [`MAX_TIME_SECS`] in
//! all. Without schemathesis the test is skipped with a loud warning, except under
//! `AGENTPMT_REQUIRE_POSTGRES=1` (CI), where it fails. `AGENTPMT_SCHEMATHESIS` names
//! another schemathesis executable.

use crate::helpers::*;
use agentpmt_server::config::ServerConfig;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Cases per operation (each phase).
const MAX_EXAMPLES: u32 = 15;
/// Time budget of the whole run.
const MAX_TIME_SECS: u32 = 150;

fn schemathesis() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("AGENTPMT_SCHEMATHESIS") {
        return Some(PathBuf::from(path));
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/contract/.venv/bin/schemathesis");
    venv.exists().then_some(venv)
}

/// Fuzzing sends far more requests from one address than a client would: no rate limits,
/// so every answer is the operation's own.
fn unlimited(config: &mut ServerConfig) {
    config.ip_rate_per_sec = 0;
    config.wallet_rate_per_sec = 0;
    config.signed_ip_rate_per_sec = 0;
    config.agentaddress_limit = 1_000_000;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_holds_under_schemathesis() {
    let Some(bin) = schemathesis() else {
        if std::env::var("AGENTPMT_REQUIRE_POSTGRES").is_ok_and(|v| v == "1") {
            panic!(
                "schemathesis is required here (AGENTPMT_REQUIRE_POSTGRES=1): scripts/test \
                 installs it into tests/contract/.venv from tests/contract/requirements.txt"
            );
        }
        eprintln!(
            "!!! SKIPPING the OpenAPI contract test: no tests/contract/.venv/bin/schemathesis \
             (scripts/test installs it) !!!"
        );
        return;
    };
    let app = spawn_app_with(Backend::Sqlite, AppOptions::configured(unlimited)).await;
    let report = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let output = tokio::process::Command::new(&bin)
        .arg("run")
        .arg(app.url("/openapi.json"))
        .args(["--url", &app.base_url])
        .args([
            "--checks",
            "not_a_server_error,response_schema_conformance,status_code_conformance",
        ])
        .args(["--mode", "all"])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--max-examples", &MAX_EXAMPLES.to_string()])
        .args(["--max-time", &MAX_TIME_SECS.to_string()])
        .args(["--workers", "2"])
        .args(["--seed", "14"])
        .args(["--generation-database", "none"])
        .args(["--request-timeout", "20"])
        .args(["--no-color", "--output-truncate", "true"])
        .args(["-H", &format!("Authorization: Bearer {ADMIN_TOKEN}")])
        .args(["--report-dir", &report.path().display().to_string()])
        .env("SCHEMATHESIS_HOOKS", "")
        // Its working files (.schemathesis/) go to the temporary folder, not the crate.
        .current_dir(report.path())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(u64::from(MAX_TIME_SECS) + 90), output)
        .await
        .expect("schemathesis overran its time budget")
        .expect("schemathesis runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!(
        "schemathesis took {:.0} s\n{stdout}\n{stderr}",
        started.elapsed().as_secs_f64()
    );
    assert!(
        output.status.success(),
        "schemathesis found failures ({}):\n{stdout}\n{stderr}",
        output.status
    );
}
