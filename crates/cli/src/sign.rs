//! `agentpmt sign`: builds and signs one request message and shows every intermediate, so
//! a client author can compare their own canonical payload, hash, message and signature.
//!
//! Two scopes: `--action A [--product P]` (the `action:`/`product:` lines) or
//! `--method M --path P` (the `method:`/`path:` lines of tool-action invokes).

use crate::keys;
use crate::output::{self, Output};
use agentpmt_protocol::canonical;
use agentpmt_protocol::signing::{sign_parts, SignedParts};
use agentpmt_protocol::{Scope, SignedAction};
use agentpmt_sdk::Client;
use anyhow::{bail, Result};
use clap::{ArgGroup, Args};
use serde_json::{json, Value};
use std::path::Path;

/// Options of `agentpmt sign`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("scope").required(true).args(["action", "method"])))]
pub struct SignArgs {
    /// Action name for the `action:` line, e.g. balance, job_reserve, workflow_start.
    #[arg(long)]
    action: Option<String>,

    /// Value of the `product:` line with --action (a tool, workflow or job id) [default: -].
    #[arg(long, requires = "action", conflicts_with = "method")]
    product: Option<String>,

    /// HTTP method for the `method:` line (tool-action invokes); written in upper case.
    #[arg(long, requires = "path")]
    method: Option<String>,

    /// Path for the `path:` line, e.g. /external/tools/weather/actions/forecast/invoke.
    #[arg(long, requires = "method", conflicts_with = "action")]
    path: Option<String>,

    /// Payload as JSON, hashed in canonical form. Without it the `payload:` line is empty;
    /// `--payload '{}'` hashes an empty object.
    #[arg(long, value_name = "JSON")]
    payload: Option<String>,

    /// Session nonce [default: a new session created on the server].
    #[arg(long, value_name = "NONCE")]
    session: Option<String>,

    /// Request id [default: a fresh UUID v4].
    #[arg(long, value_name = "ID")]
    request_id: Option<String>,
}

impl SignArgs {
    /// The scope lines (clap guarantees exactly one of --action and --method/--path).
    fn scope(&self) -> Result<Scope> {
        let scope = match (&self.action, &self.method, &self.path) {
            (Some(action), _, _) => Scope::action(action, self.product.as_deref().unwrap_or("-")),
            (None, Some(method), Some(path)) => {
                Scope::method_path(method.to_ascii_uppercase(), path)
            }
            _ => bail!("give --action, or --method with --path"),
        };
        let values: [(&str, Option<&String>); 6] = [
            ("action", self.action.as_ref()),
            ("product", self.product.as_ref()),
            ("method", self.method.as_ref()),
            ("path", self.path.as_ref()),
            ("session", self.session.as_ref()),
            ("request-id", self.request_id.as_ref()),
        ];
        // A line break would add lines of the caller's choosing to the signed message.
        for (name, value) in values {
            if value.is_some_and(|v| v.contains(['\n', '\r'])) {
                bail!("--{name} must not contain line breaks");
            }
        }
        Ok(scope)
    }
}

/// Signs the message described by `args` with the loaded key.
pub async fn run(args: SignArgs, server: &str, keystore: &Path, out: &Output) -> Result<()> {
    let scope = args.scope()?;
    let payload = match &args.payload {
        Some(text) => Some(
            canonical::parse(text.as_bytes())
                .map_err(|e| anyhow::anyhow!("--payload is not valid JSON: {e}"))?,
        ),
        None => None,
    };
    if let (Some(action), false) = (&args.action, out.is_json()) {
        if SignedAction::from_name(action).is_none() {
            eprintln!("note: {action:?} is not an action this CLI knows; signing it anyway");
        }
    }
    let loaded = keys::load_key(keystore)?;
    let (session, created) = match args.session {
        Some(session) => (session, None),
        None => {
            let client = Client::new(server, loaded.key.clone())?;
            let fresh = client
                .create_session()
                .await
                .map_err(|e| output::sdk_error(e, server))?;
            (fresh.session_nonce.clone(), Some(fresh))
        }
    };
    let request_id = args
        .request_id
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let parts = sign_parts(&loaded.key, &session, &request_id, scope, payload.as_ref());

    let wallet = loaded.key.address().to_string();
    if out.is_json() {
        out.print_json(&json!({
            "wallet_address": wallet,
            "session_nonce": session,
            "session_created": created.is_some(),
            "session_expires_at": created.as_ref().map(|s| s.expires_at.clone()),
            "request_id": request_id,
            "scope": scope_json(&parts.scope),
            "payload_canonical": parts.payload_canonical,
            "payload_hash": parts.payload_hash,
            "message": parts.message,
            "signature": parts.signature.to_hex(),
        }));
        return Ok(());
    }
    let session_note = match &created {
        Some(fresh) => format!(
            "{session} (created on {server}, expires in {} s)",
            fresh.expires_in
        ),
        None => session.clone(),
    };
    print!(
        "{}",
        human_text(&wallet, &session_note, &request_id, &parts)
    );
    Ok(())
}

fn scope_json(scope: &Scope) -> Value {
    match scope {
        Scope::Action { action, product } => json!({ "action": action, "product": product }),
        Scope::MethodPath { method, path } => json!({ "method": method, "path": path }),
    }
}

/// The text form: the inputs, the payload steps, the message verbatim between markers
/// (it has no trailing newline), and the signature.
fn human_text(wallet: &str, session: &str, request_id: &str, parts: &SignedParts) -> String {
    let empty = || "(empty)".to_owned();
    let mut rows = vec![
        ("wallet", wallet.to_owned()),
        ("session", session.to_owned()),
        ("request", request_id.to_owned()),
    ];
    match &parts.scope {
        Scope::Action { action, product } => {
            rows.push(("action", action.clone()));
            rows.push(("product", product.clone()));
        }
        Scope::MethodPath { method, path } => {
            rows.push(("method", method.clone()));
            rows.push(("path", path.clone()));
        }
    }
    rows.push((
        "canonical payload",
        parts.payload_canonical.clone().unwrap_or_else(empty),
    ));
    rows.push((
        "payload sha256",
        parts.payload_hash.clone().unwrap_or_else(empty),
    ));
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut text = output::rows_text_padded(&rows, width);
    text.push_str("message (lines joined by \\n, no trailing newline):\n");
    text.push_str("-----BEGIN MESSAGE-----\n");
    text.push_str(&parts.message);
    text.push_str("\n-----END MESSAGE-----\n");
    let signature = [("signature", parts.signature.to_hex())];
    text.push_str(&output::rows_text_padded(&signature, width));
    text
}
