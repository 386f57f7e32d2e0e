//! Request extractors that answer bad input in the API's envelope: bodies over the limit
//! (413), malformed JSON, duplicate keys, missing or wrong-typed fields and bad path
//! parameters (422 with `detail: [{loc, msg, type}]`).

use crate::error::ApiError;
use agentpmt_protocol::canonical::{self, JsonError, JsonValue};
use agentpmt_protocol::wire::{LocItem, ValidationIssue};
use agentpmt_protocol::ErrorCode;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use bytes::Bytes;
use serde::de::DeserializeOwned;

/// The largest body the API reads, set on every request by the router (the server's
/// `--max-body-bytes`), and the state whose per-IP limit pays for draining oversized
/// bodies.
#[derive(Debug, Clone)]
pub struct BodyLimit(pub usize, pub Option<crate::state::AppState>);

/// Body limit when the router set none.
const FALLBACK_BODY_LIMIT: usize = 64 * 1024;
/// How much of an oversized body is read and dropped so that the client, still sending,
/// gets the 413 (closing without reading would reset its connection before it reads the
/// answer); a body larger than this, or slower than [`DRAIN_TIME`], gets the 413 and the
/// connection is closed.
const DRAIN_BYTES: usize = 8 * 1024 * 1024;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// Reads the body, answering 413 in the envelope when it is over the limit (after reading
/// and dropping the rest, within bounds, so the client sees the answer). Draining costs the
/// client's address one token of its per-IP limit per body-limit's worth of bytes dropped;
/// when its bucket is empty the rest is not read (the 413 is sent and the connection
/// closed), so one address cannot make the server read more than its rate × the limit per
/// second.
pub async fn read_body<S: Send + Sync>(req: Request, _state: &S) -> Result<Bytes, ApiError> {
    use http_body_util::BodyExt;
    let (limit, payer) = match req.extensions().get::<BodyLimit>() {
        Some(BodyLimit(limit, state)) => (*limit, state.clone()),
        None => (FALLBACK_BODY_LIMIT, None),
    };
    let payer = payer.map(|state| {
        let peer = req
            .extensions()
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| crate::config::canonical_ip(c.0.ip()))
            .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        let ip = crate::ratelimit::client_ip(peer, req.headers(), &state.config.trusted_proxies);
        (state, ip)
    });
    let read_error = |e: axum::Error| {
        ApiError::invalid_field(
            &["body"],
            "body_read_error",
            format!("Failed to read the body: {e}"),
        )
    };
    let mut body = req.into_body();
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(read_error)?.into_data() else {
            continue;
        };
        if buf.len() + data.len() > limit {
            let mut dropped = buf.len() + data.len();
            let mut paid = 0usize;
            let out_of_budget = tokio::time::timeout(DRAIN_TIME, async {
                while dropped <= DRAIN_BYTES {
                    // One token per `limit` bytes dropped, paid before reading them.
                    if let Some((state, ip)) = &payer {
                        while paid < dropped / limit.max(1) {
                            if !state.limits.take_ip(*ip).await {
                                return true;
                            }
                            paid += 1;
                        }
                    }
                    match body.frame().await {
                        Some(Ok(frame)) => {
                            dropped += frame.data_ref().map_or(0, Bytes::len);
                        }
                        _ => break,
                    }
                }
                false
            })
            .await
            .unwrap_or(false);
            if let (true, Some((state, _))) = (out_of_budget, &payer) {
                // Out of budget: the 413 is held (the tarpit), then the connection is
                // closed on the rest.
                state.limits.hold().await;
            }
            return Err(ApiError::new(
                ErrorCode::PAYLOAD_TOO_LARGE,
                "The request body is too large",
            ));
        }
        buf.extend_from_slice(&data);
    }
    Ok(buf.freeze())
}

/// Parses a body strictly (see [`canonical::parse`]) and requires a JSON object.
/// An empty body counts as `{}`.
pub fn parse_object(bytes: &[u8]) -> Result<JsonValue, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(JsonValue::empty_object());
    }
    let value = canonical::parse(bytes).map_err(json_error)?;
    if !matches!(value, JsonValue::Object(_)) {
        return Err(ApiError::invalid_field(
            &["body"],
            "model_attributes_type",
            "Input should be a JSON object",
        ));
    }
    Ok(value)
}

fn json_error(err: JsonError) -> ApiError {
    let kind = match err {
        JsonError::DuplicateKey { .. } => "json_duplicate_key",
        JsonError::TooDeep { .. } => "json_too_deep",
        JsonError::Syntax { .. } => "json_invalid",
    };
    ApiError::validation(vec![ValidationIssue {
        loc: vec!["body".into(), LocItem::Index(err.offset() as u64)],
        msg: err.to_string(),
        kind: kind.to_owned(),
    }])
}

/// Deserializes `T` from JSON bytes, mapping serde's error to a located 422 issue.
/// `root` is the first `loc` element (`body`, `query`, `path`).
pub fn deserialize<T: DeserializeOwned>(bytes: &[u8], root: &str) -> Result<T, ValidationIssue> {
    let input: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    let mut de = serde_json::Deserializer::from_slice(input);
    let err = match serde_path_to_error::deserialize(&mut de) {
        Ok(value) => return Ok(value),
        Err(err) => err,
    };
    integral_floats_as_integers(input, err).map_err(|err| serde_issue(root, err))
}

/// Most integral floats a field can be given for an integer: beyond 2^53 an `f64` is no
/// longer exact.
const MAX_EXACT_FLOAT: f64 = 9_007_199_254_740_992.0;

/// JSON Schema (and so the OpenAPI document) counts `607.0` or `6.07e2` as an integer;
/// serde does not. When a body fails only because an integer field holds such a number,
/// that one number is read as the integer it is and the body is tried again, until it
/// succeeds or fails for another reason (a fraction, a number beyond 2^53, any other
/// error: reported as before). Only the failing integer fields change: every other
/// value, including free-form objects such as tool parameters, keeps the number as sent.
fn integral_floats_as_integers<T: DeserializeOwned>(
    input: &[u8],
    first: serde_path_to_error::Error<serde_json::Error>,
) -> Result<T, serde_path_to_error::Error<serde_json::Error>> {
    /// Bounds the retries (each fixes one field).
    const MAX_FIXES: usize = 64;
    let mut err = first;
    let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(input) else {
        return Err(err);
    };
    for _ in 0..MAX_FIXES {
        if !err
            .inner()
            .to_string()
            .starts_with("invalid type: floating point")
        {
            return Err(err);
        }
        let Some(slot) = value_at(&mut value, err.path()) else {
            return Err(err);
        };
        let integral = slot
            .as_f64()
            .filter(|f| f.fract() == 0.0 && f.abs() <= MAX_EXACT_FLOAT);
        let Some(float) = integral else {
            return Err(err);
        };
        *slot = if float < 0.0 {
            serde_json::Value::from(float as i64)
        } else {
            serde_json::Value::from(float as u64)
        };
        match serde_path_to_error::deserialize(&value) {
            Ok(typed) => return Ok(typed),
            Err(next) => err = next,
        }
    }
    Err(err)
}

/// The value at a serde error's path.
fn value_at<'v>(
    value: &'v mut serde_json::Value,
    path: &serde_path_to_error::Path,
) -> Option<&'v mut serde_json::Value> {
    let mut slot = value;
    for segment in path.iter() {
        slot = match segment {
            serde_path_to_error::Segment::Seq { index } => slot.get_mut(*index)?,
            serde_path_to_error::Segment::Map { key } => slot.get_mut(key.as_str())?,
            _ => return None,
        };
    }
    Some(slot)
}

/// Turns a serde error with its path into a 422 issue in the FastAPI style.
pub fn serde_issue(
    root: &str,
    err: serde_path_to_error::Error<serde_json::Error>,
) -> ValidationIssue {
    let mut loc: Vec<LocItem> = vec![root.into()];
    for segment in err.path().iter() {
        match segment {
            serde_path_to_error::Segment::Seq { index } => loc.push(LocItem::Index(*index as u64)),
            serde_path_to_error::Segment::Map { key } => loc.push(LocItem::Key(key.clone())),
            serde_path_to_error::Segment::Enum { variant } => {
                loc.push(LocItem::Key(variant.clone()))
            }
            serde_path_to_error::Segment::Unknown => {}
        }
    }
    let full = err.into_inner().to_string();
    let msg = match full.find(" at line ") {
        Some(i) => full[..i].to_owned(),
        None => full,
    };
    let quoted = |prefix: &str| -> Option<String> {
        let rest = msg.strip_prefix(prefix)?;
        let start = rest.find('`')? + 1;
        let end = rest[start..].find('`')? + start;
        Some(rest[start..end].to_owned())
    };
    let kind = if let Some(field) = quoted("missing field") {
        loc.push(LocItem::Key(field));
        "missing"
    } else if let Some(field) = quoted("unknown field") {
        loc.push(LocItem::Key(field));
        "extra_forbidden"
    } else if msg.contains("expected a string") || msg.contains("expected a borrowed string") {
        "string_type"
    } else if msg.contains("expected i64")
        || msg.contains("expected u64")
        || msg.contains("expected i32")
        || msg.contains("expected u32")
        || msg.contains("integer")
    {
        "int_type"
    } else if msg.contains("expected a boolean") {
        "bool_type"
    } else if msg.contains("expected struct") || msg.contains("expected a map") {
        "model_attributes_type"
    } else if msg.contains("expected a sequence") {
        "list_type"
    } else {
        "value_error"
    };
    ValidationIssue {
        loc,
        msg,
        kind: kind.to_owned(),
    }
}

/// A JSON body parsed strictly (duplicate keys refused) and deserialized into `T`.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = read_body(req, state).await?;
        parse_object(&bytes)?;
        deserialize(&bytes, "body")
            .map(ApiJson)
            .map_err(|issue| ApiError::validation(vec![issue]))
    }
}

/// Path parameters deserialized into `T`, with 422 on failure.
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| ApiPath(p.0))
            .map_err(|rejection| {
                ApiError::invalid_field(&["path"], "value_error", rejection.body_text())
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Body {
        credits: i64,
        limit: Option<u32>,
        items: Vec<Item>,
        #[serde(default)]
        extra: Option<serde_json::Value>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Item {
        price: u64,
    }

    #[test]
    fn integral_floats_are_read_as_the_integers_they_are() {
        let body: Body = deserialize(
            br#"{"credits": -607.0, "limit": 5e1, "items": [{"price": 3}, {"price": 4.0}],
                 "extra": {"x": 1.0}}"#,
            "body",
        )
        .unwrap();
        assert_eq!(body.credits, -607);
        assert_eq!(body.limit, Some(50));
        assert_eq!(body.items, vec![Item { price: 3 }, Item { price: 4 }]);
        // A free-form value keeps the number as sent.
        assert_eq!(body.extra.unwrap()["x"].as_f64(), Some(1.0));
    }

    #[test]
    fn fractions_and_inexact_floats_are_still_refused() {
        for (text, at) in [
            (r#"{"credits": 1.5, "items": []}"#, "credits"),
            (r#"{"credits": 1e300, "items": []}"#, "credits"),
            (r#"{"credits": 1, "items": [{"price": -2.0}]}"#, "price"),
            (r#"{"credits": 1, "items": [], "limit": "5"}"#, "limit"),
        ] {
            let issue = deserialize::<Body>(text.as_bytes(), "body").unwrap_err();
            assert_eq!(issue.loc.last(), Some(&LocItem::Key(at.into())), "{text}");
        }
    }
}
