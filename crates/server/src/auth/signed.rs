//! Signed-request verification: the one piece every signed endpoint uses.
//!
//! A handler takes [`Signed<E>`] where `E` names the endpoint's row of the signing table
//! ([`SignedAction`]). Extraction reads and strictly parses the body, checks the envelope
//! fields, decodes the signature, checks the session, rebuilds the expected message (every
//! accepted payload form, every accepted signed path) and recovers the signer. The
//! (session, request_id) replay record is claimed by [`Signed::claim`] inside the handler's
//! own transaction, so the claim and the side effect commit or roll back together; the
//! body is only reachable through `claim`.
//!
//! Order of checks and their answers: per-IP rate limit of signed endpoints → 429
//! `RATE_LIMITED` (scope `ip`); body/envelope shape → 422; signature encoding → 401
//! `EXTERNAL_SIGNATURE_MALFORMED`; session unknown or another wallet's → 401
//! `…_SESSION_NONCE_INVALID`; expired → 401 `…_SESSION_NONCE_EXPIRED`; per-wallet rate
//! limit → 429 (scope `wallet`); recovered signer ≠ wallet → 401 `…_WALLET_MISMATCH` with
//! diagnostics; replay → 409 `…_REQUEST_REPLAY`.
//!
//! Recoveries: the accepted messages (scope variants × payload forms) are tried in order,
//! each distinct message once, primary first, so a client that signs the recommended
//! message costs one recovery. A signature that matches none costs one per distinct
//! message, and the client's address pays one rate-limit token for each recovery past the
//! first ([`crate::ratelimit::Limits::charge_signed_ip`]); past the first two recoveries
//! the task yields before each one. Any refused signature also pays the failure cost
//! ([`crate::ratelimit::Limits::charge_signed_failure`], `--signed-ip-failure-cost`).

use super::replay::{claim_request, replay_error};
use crate::db::{AsConn, Tx};
use crate::error::{ApiError, ApiResult};
use crate::extract::{deserialize, parse_object, read_body};
use crate::ratelimit::ClientIp;
use crate::state::AppState;
use crate::time::now_ms;
use agentpmt_protocol::canonical::{self, JsonValue};
use agentpmt_protocol::message::{build_message, ActionSpec};
use agentpmt_protocol::wire::{LocItem, ValidationIssue};
use agentpmt_protocol::{
    ErrorCode, Scope, Signature, SignedAction, WalletAddress, ENVELOPE_FIELDS,
};
use axum::extract::{FromRequest, FromRequestParts, RawPathParams, Request};
use serde::de::DeserializeOwned;
use serde_json::json;
use std::collections::HashSet;
use std::marker::PhantomData;
use std::net::IpAddr;

/// Longest accepted `request_id`.
pub const MAX_REQUEST_ID_LEN: usize = 128;
/// Longest accepted `session_nonce`.
pub const MAX_SESSION_NONCE_LEN: usize = 256;
/// Largest canonical payload echoed back in mismatch diagnostics.
const MAX_ECHOED_CANONICAL: usize = 4096;

/// A signed endpoint: its row of the signing table and its typed body.
pub trait SignedEndpoint: Send + Sync + 'static {
    /// The body fields besides the envelope (unknown fields are ignored).
    type Body: DeserializeOwned + Send + 'static;
    /// The endpoint's action.
    const ACTION: SignedAction;
}

/// Who signed a verified request.
#[derive(Debug, Clone)]
pub struct Signer {
    pub wallet: WalletAddress,
    pub session_nonce: String,
    pub request_id: String,
    pub action: SignedAction,
    /// Which canonical payload form matched (`utf8`, `ascii_escaped`, ...).
    pub payload_form: &'static str,
    /// SHA-256 of the whole body in canonical form: tells an identical replay (answered
    /// with the original's outcome) from another body under the same request_id.
    pub body_sha256: String,
}

/// A request whose signature has been verified; its body is released by [`Signed::claim`].
#[derive(Debug)]
pub struct Signed<E: SignedEndpoint> {
    signer: Signer,
    body: E::Body,
    _endpoint: PhantomData<E>,
}

impl<E: SignedEndpoint> Signed<E> {
    /// Claims the (session, request_id) replay record in `tx` and hands out the signer and
    /// the body. A replay answers 409 `EXTERNAL_SIGNATURE_REQUEST_REPLAY`.
    pub async fn claim(self, tx: &mut Tx) -> ApiResult<(Signer, E::Body)> {
        self.claim_on(tx).await
    }

    /// For endpoints without side effects (reads): claims the replay record in a statement
    /// of its own, batched with other requests' claims (see [`super::replay`]), so reading
    /// needs no write transaction. Also returns the wallet's credit balance at the claim.
    pub async fn claim_read_only(self, state: &AppState) -> ApiResult<(Signer, E::Body, i64)> {
        let claimed = state
            .replay_claims
            .claim(&self.signer)
            .await
            .map_err(ApiError::internal)?;
        match claimed {
            Some(balance) => Ok((self.signer, self.body, balance)),
            None => Err(replay_error(&mut state.db.read().await?, &self.signer).await?),
        }
    }

    async fn claim_on(self, conn: &mut impl AsConn) -> ApiResult<(Signer, E::Body)> {
        if !claim_request(conn, &self.signer, None).await? {
            return Err(replay_error(conn, &self.signer).await?);
        }
        Ok((self.signer, self.body))
    }
}

impl<E: SignedEndpoint> FromRequest<AppState> for Signed<E>
where
    E::Body: std::fmt::Debug,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        let Ok(ClientIp(ip)) = ClientIp::from_request_parts(&mut parts, state).await;
        check_signed_ip(state, ip).await?;
        let params = RawPathParams::from_request_parts(&mut parts, state)
            .await
            .map_err(|r| ApiError::invalid_field(&["path"], "value_error", r.body_text()))?;
        let params: Vec<(String, String)> = params
            .iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let bytes = read_body(Request::from_parts(parts, body), state).await?;
        let json = parse_object(&bytes)?;

        let mut issues = Vec::new();
        let envelope = Envelope::read(&json, &mut issues);
        let typed = deserialize::<E::Body>(&bytes, "body");
        let (envelope, body) = match (envelope, typed) {
            (Some(envelope), Ok(body)) if issues.is_empty() => (envelope, body),
            (_, typed) => {
                if let Err(issue) = typed {
                    issues.push(issue);
                }
                return Err(ApiError::validation(issues));
            }
        };

        let spec = E::ACTION.spec();
        let param = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let scope = spec.scope(param).ok_or_else(|| {
            ApiError::internal(anyhow::anyhow!(
                "route lacks a path parameter of {:?}",
                spec.action
            ))
        })?;
        let signer = verify(state, ip, spec, &[scope], &json, envelope)
            .await
            .inspect_err(|e| {
                if e.code().as_str().starts_with("EXTERNAL_SIGNATURE_") {
                    state.metrics.signature_failure(e.code().as_str());
                }
            })?;
        Ok(Signed {
            signer,
            body,
            _endpoint: PhantomData,
        })
    }
}

/// The four envelope fields, checked for shape.
#[derive(Debug)]
pub struct Envelope {
    pub wallet: WalletAddress,
    pub session_nonce: String,
    pub request_id: String,
    pub signature: String,
}

impl Envelope {
    /// Reads the envelope from a body object, adding a 422 issue per bad field.
    pub fn read(body: &JsonValue, issues: &mut Vec<ValidationIssue>) -> Option<Envelope> {
        let mut field = |name: &str| -> Option<String> {
            let loc = vec![LocItem::from("body"), LocItem::from(name)];
            match body.get(name) {
                None | Some(JsonValue::Null) => {
                    issues.push(ValidationIssue {
                        loc,
                        msg: "Field required".into(),
                        kind: "missing".into(),
                    });
                    None
                }
                Some(JsonValue::String(s)) => Some(s.clone()),
                Some(_) => {
                    issues.push(ValidationIssue {
                        loc,
                        msg: "Input should be a valid string".into(),
                        kind: "string_type".into(),
                    });
                    None
                }
            }
        };
        let wallet = field("wallet_address");
        let session_nonce = field("session_nonce");
        let request_id = field("request_id");
        let signature = field("signature");

        let wallet = wallet.and_then(|w| match w.parse::<WalletAddress>() {
            Ok(a) => Some(a),
            Err(e) => {
                issues.push(ValidationIssue {
                    loc: vec!["body".into(), "wallet_address".into()],
                    msg: e.to_string(),
                    kind: "value_error".into(),
                });
                None
            }
        });
        let session_nonce = session_nonce
            .and_then(|n| check_token(issues, "session_nonce", n, MAX_SESSION_NONCE_LEN));
        let request_id =
            request_id.and_then(|r| check_token(issues, "request_id", r, MAX_REQUEST_ID_LEN));
        Some(Envelope {
            wallet: wallet?,
            session_nonce: session_nonce?,
            request_id: request_id?,
            signature: signature?,
        })
    }
}

/// A nonce or request id: 1..=max characters, no control characters (a newline would
/// forge message lines).
fn check_token(
    issues: &mut Vec<ValidationIssue>,
    name: &str,
    value: String,
    max: usize,
) -> Option<String> {
    let len = value.chars().count();
    let msg = if len == 0 {
        "must not be empty".to_owned()
    } else if len > max {
        format!("must be at most {max} characters")
    } else if value.chars().any(char::is_control) {
        "must not contain control characters (newlines, tabs, ...)".to_owned()
    } else {
        return Some(value);
    };
    issues.push(ValidationIssue {
        loc: vec!["body".into(), name.into()],
        msg: format!("{name} {msg}"),
        kind: "value_error".into(),
    });
    None
}

/// One accepted payload line: the form's name, its canonical text and hash (`None` for an
/// empty `payload:` line).
struct PayloadLine {
    form: &'static str,
    canonical: Option<String>,
    hash: Option<String>,
}

fn payload_lines(spec: &ActionSpec, body: &JsonValue) -> Vec<PayloadLine> {
    let mut lines: Vec<PayloadLine> = Vec::new();
    for candidate in spec.payload.candidates(body) {
        match candidate {
            None => lines.push(PayloadLine {
                form: "empty",
                canonical: None,
                hash: None,
            }),
            Some(value) => {
                for form in canonical::accepted_forms(&value) {
                    if lines
                        .iter()
                        .all(|l| l.hash.as_deref() != Some(form.hash.as_str()))
                    {
                        lines.push(PayloadLine {
                            form: form.name,
                            canonical: Some(form.canonical),
                            hash: Some(form.hash),
                        });
                    }
                }
            }
        }
    }
    lines
}

/// The per-IP limit of signed endpoints (429 scope `ip`), before anything else is done.
pub async fn check_signed_ip(state: &AppState, ip: IpAddr) -> ApiResult<()> {
    state.limits.check_signed_ip(ip).await.inspect_err(|_| {
        state.metrics.rate_limited("signed_ip");
    })
}

/// Recoveries of one request run inline; past these, the task yields to the runtime before
/// each further one, so a signature that matches nothing cannot hold a worker thread for
/// its whole variant search while other requests wait.
const INLINE_RECOVERIES: usize = 2;

/// Checks signature, session and signer against every accepted (scope, payload) message,
/// primary first, recovering once per distinct message. `scopes` lists the accepted scope
/// lines, primary first. `ip` is the client's address: a refused signature (malformed,
/// unknown or expired session, mismatch) costs it the failure cost of the signed per-IP
/// limit, and one token per recovery past the first.
pub async fn verify(
    state: &AppState,
    ip: IpAddr,
    spec: &ActionSpec,
    scopes: &[Scope],
    body: &JsonValue,
    envelope: Envelope,
) -> ApiResult<Signer> {
    let verified = verify_signer(state, ip, spec, scopes, body, envelope).await;
    if let Err(e) = &verified {
        if e.code().as_str().starts_with("EXTERNAL_SIGNATURE_") {
            state.limits.charge_signed_failure(ip).await;
        }
    }
    verified
}

async fn verify_signer(
    state: &AppState,
    ip: IpAddr,
    spec: &ActionSpec,
    scopes: &[Scope],
    body: &JsonValue,
    envelope: Envelope,
) -> ApiResult<Signer> {
    let signature = Signature::parse(&envelope.signature).map_err(|e| {
        ApiError::new(
            ErrorCode::EXTERNAL_SIGNATURE_MALFORMED,
            format!("Malformed signature: {e}"),
        )
        .with_detail("reason", e.to_string())
    })?;

    let session = state
        .sessions
        .find(&state.db, &envelope.session_nonce)
        .await?;
    let wallet_text = envelope.wallet.to_string();
    let session = match session {
        Some(s) if s.wallet_address == wallet_text => s,
        _ => {
            return Err(ApiError::new(
                ErrorCode::EXTERNAL_SIGNATURE_SESSION_NONCE_INVALID,
                "The session nonce does not exist for this wallet",
            )
            .with_detail("wallet_address", wallet_text))
        }
    };
    if session.expires_at_ms <= now_ms() {
        return Err(ApiError::new(
            ErrorCode::EXTERNAL_SIGNATURE_SESSION_NONCE_EXPIRED,
            "The session nonce expired",
        )
        .with_detail("expired_at", crate::time::rfc3339_ms(session.expires_at_ms)));
    }
    // Abuse limit per wallet: the session is this wallet's, and no signature has been
    // recovered yet.
    state
        .limits
        .check_wallet(&envelope.wallet)
        .await
        .inspect_err(|_| {
            state.metrics.rate_limited("wallet");
        })?;

    let lines = payload_lines(spec, body);
    let mut primary_recovered: Option<WalletAddress> = None;
    let mut any_recovered = false;
    let mut tried: HashSet<String> = HashSet::new();
    for (si, scope) in scopes.iter().enumerate() {
        for (pi, line) in lines.iter().enumerate() {
            let message = build_message(
                &envelope.wallet,
                &envelope.session_nonce,
                &envelope.request_id,
                scope,
                line.hash.as_deref(),
            );
            if !tried.insert(message.clone()) {
                continue;
            }
            if tried.len() > INLINE_RECOVERIES {
                tokio::task::yield_now().await;
            }
            let Ok(recovered) = signature.recover_message(&message) else {
                continue;
            };
            any_recovered = true;
            if si == 0 && pi == 0 {
                primary_recovered = Some(recovered);
            }
            if recovered == envelope.wallet {
                return Ok(Signer {
                    wallet: envelope.wallet,
                    session_nonce: envelope.session_nonce,
                    request_id: envelope.request_id,
                    action: spec.action,
                    payload_form: line.form,
                    body_sha256: canonical::payload_hash(body),
                });
            }
        }
    }
    state
        .limits
        .charge_signed_ip(ip, u32::try_from(tried.len()).unwrap_or(u32::MAX))
        .await;
    if !any_recovered {
        return Err(ApiError::new(
            ErrorCode::EXTERNAL_SIGNATURE_MALFORMED,
            "No public key can be recovered from this signature",
        )
        .with_detail("reason", "unrecoverable"));
    }
    Err(mismatch(
        spec,
        scopes,
        body,
        &envelope,
        &lines,
        primary_recovered,
    ))
}

fn mismatch(
    spec: &ActionSpec,
    scopes: &[Scope],
    body: &JsonValue,
    envelope: &Envelope,
    lines: &[PayloadLine],
    recovered: Option<WalletAddress>,
) -> ApiError {
    let primary = &lines[0];
    let expected_message = build_message(
        &envelope.wallet,
        &envelope.session_nonce,
        &envelope.request_id,
        &scopes[0],
        primary.hash.as_deref(),
    );
    let accepted: Vec<_> = lines
        .iter()
        .map(|l| json!({"form": l.form, "payload_hash": l.hash.clone().unwrap_or_default()}))
        .collect();
    let canonical = primary
        .canonical
        .as_ref()
        .filter(|c| c.len() <= MAX_ECHOED_CANONICAL)
        .cloned();
    let payload_keys = spec
        .payload
        .primary(body)
        .map(|p| p.top_level_keys())
        .unwrap_or_default();
    let paths: Vec<&str> = scopes
        .iter()
        .filter_map(|s| match s {
            Scope::MethodPath { path, .. } => Some(path.as_str()),
            Scope::Action { .. } => None,
        })
        .collect();
    let (scope_lines, scope_values) = match &scopes[0] {
        Scope::Action { action, product } => {
            (["expected_action", "expected_product"], [action, product])
        }
        Scope::MethodPath { method, path } => {
            (["expected_method", "expected_path"], [method, path])
        }
    };
    let mut err = ApiError::new(
        ErrorCode::EXTERNAL_SIGNATURE_WALLET_MISMATCH,
        "The signature recovered to a different wallet than wallet_address",
    )
    .with_detail("expected_message", expected_message)
    .with_detail("expected_wallet", envelope.wallet.to_string())
    .with_detail(
        "recovered_wallet_for_expected_message",
        recovered.map(|r| r.to_string()).unwrap_or_default(),
    )
    .with_detail(
        "expected_payload_hash",
        primary.hash.clone().unwrap_or_default(),
    )
    .with_detail("accepted_payload_hashes", accepted)
    .with_detail("payload_canonical", canonical)
    .with_detail("payload_canonical_top_level_keys", payload_keys)
    .with_detail("accepted_path_candidates", paths)
    .with_detail("excluded_from_payload", ENVELOPE_FIELDS.to_vec());
    for (key, value) in scope_lines.into_iter().zip(scope_values) {
        err = err.with_detail(key, value.clone());
    }
    err
}
