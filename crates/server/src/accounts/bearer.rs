//! The API-key + budget-key bearer: [`BudgetAuth`], the extractor of the workflow-schedule
//! endpoints.
//!
//! Accepted forms (every form seen in clients):
//! - `Authorization: Bearer <base64("api_key:budget_key")>`;
//! - `Authorization: Bearer <base64(JSON {"api_key": …, "budget_key": …})>`, standard or
//!   URL-safe alphabet, padded or not;
//! - `X-API-Key: <api_key>` with `X-Budget-Key: <budget_key>` (they win over
//!   `Authorization` when both headers are present).
//!
//! Both keys are looked up by their SHA-256 and the stored digests compared in constant
//! time. The API key and the budget must be unrevoked and belong to the same account;
//! anything else is 401 `BEARER_UNAUTHORIZED` with `details.reason`. Keys are never logged.

use super::key_digest;
use crate::db::macros::sql_fetch_optional;
use crate::error::ApiError;
use crate::state::AppState;
use agentpmt_protocol::ErrorCode;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use base64::Engine as _;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// Longest accepted bearer token or key header.
const MAX_TOKEN_LEN: usize = 2048;

/// A request authenticated with a live API key and budget key of one account.
#[derive(Debug, Clone)]
pub struct BudgetAuth {
    pub account_id: String,
    pub key_id: String,
    pub budget_id: String,
}

fn unauthorized(reason: &'static str, message: &str) -> ApiError {
    ApiError::new(ErrorCode::BEARER_UNAUTHORIZED, message).with_detail("reason", reason)
}

/// The (api_key, budget_key) pair of a decoded bearer token.
fn split_pair(decoded: &str) -> Option<(Zeroizing<String>, Zeroizing<String>)> {
    let decoded = decoded.trim();
    if decoded.starts_with('{') {
        let value: serde_json::Value = serde_json::from_str(decoded).ok()?;
        let api = value.get("api_key")?.as_str()?;
        let budget = value.get("budget_key")?.as_str()?;
        return Some((
            Zeroizing::new(api.to_owned()),
            Zeroizing::new(budget.to_owned()),
        ));
    }
    let (api, budget) = decoded.split_once(':')?;
    Some((
        Zeroizing::new(api.to_owned()),
        Zeroizing::new(budget.to_owned()),
    ))
}

/// Decodes a bearer token in any accepted form.
pub fn decode_token(token: &str) -> Option<(Zeroizing<String>, Zeroizing<String>)> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let token = token.trim();
    for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
        let Ok(bytes) = engine.decode(token) else {
            continue;
        };
        let bytes = Zeroizing::new(bytes);
        let Ok(text) = std::str::from_utf8(&bytes) else {
            continue;
        };
        if let Some(pair) = split_pair(text) {
            return Some(pair);
        }
    }
    None
}

fn header<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    parts.headers.get(name).and_then(|v| v.to_str().ok())
}

/// The presented (api_key, budget_key).
fn presented(parts: &Parts) -> Result<(Zeroizing<String>, Zeroizing<String>), ApiError> {
    if let (Some(api), Some(budget)) = (header(parts, "x-api-key"), header(parts, "x-budget-key")) {
        return Ok((
            Zeroizing::new(api.trim().to_owned()),
            Zeroizing::new(budget.trim().to_owned()),
        ));
    }
    let Some(auth) = header(parts, "authorization") else {
        return Err(unauthorized(
            "missing",
            "Missing API-key + budget-key bearer token",
        ));
    };
    let token = auth
        .get(..7)
        .filter(|scheme| scheme.eq_ignore_ascii_case("bearer "))
        .map(|_| &auth[7..])
        .ok_or_else(|| {
            unauthorized(
                "malformed",
                "The Authorization header must be Bearer <token>",
            )
        })?;
    if token.len() > MAX_TOKEN_LEN {
        return Err(unauthorized("malformed", "The bearer token is too long"));
    }
    decode_token(token).ok_or_else(|| {
        unauthorized(
            "malformed",
            "The bearer token is not base64 of api_key:budget_key or of {\"api_key\",\"budget_key\"}",
        )
    })
}

#[derive(Debug, sqlx::FromRow)]
struct KeyRow {
    key_id: String,
    account_id: String,
    key_hash: String,
    revoked_at_ms: Option<i64>,
}

#[derive(Debug, sqlx::FromRow)]
struct BudgetRow {
    budget_id: String,
    account_id: String,
    key_hash: String,
    revoked_at_ms: Option<i64>,
}

fn same_digest(stored: &str, computed: &str) -> bool {
    bool::from(stored.as_bytes().ct_eq(computed.as_bytes()))
}

impl FromRequestParts<AppState> for BudgetAuth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let (api_key, budget_key) = presented(parts)?;
        if api_key.is_empty()
            || budget_key.is_empty()
            || api_key.len() > MAX_TOKEN_LEN
            || budget_key.len() > MAX_TOKEN_LEN
        {
            return Err(unauthorized("malformed", "Empty or oversized key"));
        }
        let api_digest = key_digest(&api_key);
        let budget_digest = key_digest(&budget_key);
        let mut conn = state.db.read().await?;
        let key = sql_fetch_optional!(
            conn.conn(),
            KeyRow,
            "SELECT key_id, account_id, key_hash, revoked_at_ms FROM api_keys WHERE key_hash = $1",
            &api_digest
        )?;
        let key = match key {
            Some(k) if same_digest(&k.key_hash, &api_digest) => k,
            _ => return Err(unauthorized("api_key_invalid", "Unknown API key")),
        };
        if key.revoked_at_ms.is_some() {
            return Err(unauthorized("api_key_revoked", "The API key was revoked"));
        }
        let budget = sql_fetch_optional!(
            conn.conn(),
            BudgetRow,
            "SELECT budget_id, account_id, key_hash, revoked_at_ms FROM budgets WHERE key_hash = $1",
            &budget_digest
        )?;
        let budget = match budget {
            Some(b) if same_digest(&b.key_hash, &budget_digest) => b,
            _ => return Err(unauthorized("budget_key_invalid", "Unknown budget key")),
        };
        if budget.revoked_at_ms.is_some() {
            return Err(unauthorized(
                "budget_key_revoked",
                "The budget key was revoked",
            ));
        }
        if budget.account_id != key.account_id {
            return Err(unauthorized(
                "budget_not_in_account",
                "The budget belongs to another account than the API key",
            ));
        }
        Ok(BudgetAuth {
            account_id: key.account_id,
            key_id: key.key_id,
            budget_id: budget.budget_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

    #[test]
    fn decodes_every_form() {
        let colon = STANDARD.encode("apmt_ak_1:apmt_bk_2");
        let json = r#"{"api_key":"apmt_ak_1","budget_key":"apmt_bk_2"}"#;
        for token in [colon, STANDARD.encode(json), URL_SAFE_NO_PAD.encode(json)] {
            let (a, b) = decode_token(&token).expect(&token);
            assert_eq!((a.as_str(), b.as_str()), ("apmt_ak_1", "apmt_bk_2"));
        }
        assert!(decode_token("not base64 at all!").is_none());
        assert!(decode_token(&STANDARD.encode("no-colon")).is_none());
    }
}
