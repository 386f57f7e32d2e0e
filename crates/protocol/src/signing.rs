//! Building and signing requests (client side): what the SDK, the CLI's `sign` command and
//! the load generator use, so they sign exactly what the server verifies.

use crate::canonical::{self, JsonValue};
use crate::message::{build_message, ActionSpec, Scope, ENVELOPE_FIELDS};
use crate::signature::{PrivateKey, Signature};
use serde_json::{Map, Value};

/// Every intermediate of a signature, for display and debugging.
#[derive(Debug, Clone)]
pub struct SignedParts {
    pub scope: Scope,
    /// Canonical JSON of the payload (`None`: empty payload line).
    pub payload_canonical: Option<String>,
    /// Lowercase-hex SHA-256 of `payload_canonical`.
    pub payload_hash: Option<String>,
    /// The exact text signed.
    pub message: String,
    pub signature: Signature,
}

/// Signs a message for `scope` and `payload` (`None` for an empty payload line).
pub fn sign_parts(
    key: &PrivateKey,
    session_nonce: &str,
    request_id: &str,
    scope: Scope,
    payload: Option<&JsonValue>,
) -> SignedParts {
    let payload_canonical = payload.map(|p| {
        canonical::to_canonical(p, canonical::Escaping::Utf8, canonical::KeyOrder::CodePoint)
    });
    let payload_hash = payload_canonical.as_deref().map(canonical::sha256_hex);
    let message = build_message(
        &key.address(),
        session_nonce,
        request_id,
        &scope,
        payload_hash.as_deref(),
    );
    let signature = key.sign_message(&message);
    SignedParts {
        scope,
        payload_canonical,
        payload_hash,
        message,
        signature,
    }
}

/// Why a request could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    #[error("path parameter {0} is missing")]
    MissingPathParam(String),
    #[error("body field {0} is reserved for the signature envelope")]
    ReservedField(String),
}

/// Builds the JSON body of a signed request: `fields` (the endpoint's own fields) plus the
/// four envelope fields, signed as `spec` prescribes. `param` resolves path parameters.
pub fn sign_body(
    key: &PrivateKey,
    spec: &ActionSpec,
    param: impl Fn(&str) -> Option<String>,
    session_nonce: &str,
    request_id: &str,
    mut fields: Map<String, Value>,
) -> Result<(Map<String, Value>, SignedParts), BuildError> {
    if let Some(reserved) = ENVELOPE_FIELDS.iter().find(|f| fields.contains_key(**f)) {
        return Err(BuildError::ReservedField((*reserved).to_owned()));
    }
    let missing = std::cell::RefCell::new(None);
    let scope = spec
        .scope(|name| {
            let found = param(name);
            if found.is_none() {
                *missing.borrow_mut() = Some(name.to_owned());
            }
            found
        })
        .ok_or_else(|| BuildError::MissingPathParam(missing.take().unwrap_or_default()))?;
    let body_value = JsonValue::from_serde(&Value::Object(fields.clone()));
    let payload = spec.payload.primary(&body_value);
    let parts = sign_parts(key, session_nonce, request_id, scope, payload.as_ref());
    fields.insert(
        "wallet_address".into(),
        Value::String(key.address().to_string()),
    );
    fields.insert(
        "session_nonce".into(),
        Value::String(session_nonce.to_owned()),
    );
    fields.insert("request_id".into(), Value::String(request_id.to_owned()));
    fields.insert("signature".into(), Value::String(parts.signature.to_hex()));
    Ok((fields, parts))
}
