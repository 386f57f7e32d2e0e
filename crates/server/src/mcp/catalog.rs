//! The marketplace as MCP tools: one tool per active action of an active product.
//!
//! Names match `^[a-zA-Z0-9_-]{1,64}$` and map one-to-one to (product, action):
//! `<product slug>__<action slug>` (slugs are `[a-z0-9-]`, so `__` separates them), or,
//! when that is longer than 64 characters, its first 51 characters, `_` and 12 hex digits of
//! the SHA-256 of `product/action`. `inputSchema` is the action's parameter schema; the price
//! is in the description, in `annotations.title` and in `_meta` (`agentpmt/price_credits`,
//! `agentpmt/price_usd`, `agentpmt/x402_enabled`, `agentpmt/product`, `agentpmt/action`).
//!
//! `tools/list` pages in (product slug, action slug) order with an opaque cursor (the last
//! name's key, base64url), [`PAGE_SIZE`] tools a page, by keyset: each page is one indexed
//! query whatever its depth.

use super::RpcError;
use crate::db::macros::sql_fetch_all;
use crate::state::AppState;
use crate::tools::catalog::{self as tool_catalog, Resolved};
use agentpmt_protocol::wire::credits_to_usd;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rmcp::model::{JsonObject, MetaObject, Tool, ToolAnnotations};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::sync::Arc;

fn db_error(e: impl Into<crate::error::ApiError>) -> RpcError {
    RpcError::from_api(e.into())
}

/// Tools per `tools/list` page.
pub const PAGE_SIZE: i64 = 100;
/// Longest tool name.
pub const MAX_NAME_LEN: usize = 64;

/// The tool name of (product, action).
pub fn tool_name(product_slug: &str, action_slug: &str) -> String {
    let plain = format!("{product_slug}__{action_slug}");
    if plain.len() <= MAX_NAME_LEN && is_valid_name(&plain) {
        return plain;
    }
    let digest = hex::encode(Sha256::digest(format!("{product_slug}/{action_slug}")));
    let keep: String = plain
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(MAX_NAME_LEN - 13)
        .collect();
    format!("{keep}_{}", &digest[..12])
}

/// True for a name of `^[a-zA-Z0-9_-]{1,64}$`.
pub fn is_valid_name(name: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[derive(Debug, sqlx::FromRow)]
struct Row {
    product_slug: String,
    product_name: String,
    action_slug: String,
    action_name: String,
    description: String,
    price_credits: i64,
    x402_enabled: i64,
    input_schema: String,
}

const LISTED: &str = "FROM product_actions a JOIN products p ON p.product_id = a.product_id \
     WHERE p.status = 'active' AND p.is_private = 0 AND a.status = 'active'";

/// The MCP tool of a listed action.
fn tool_of(row: &Row) -> Tool {
    let name = tool_name(&row.product_slug, &row.action_slug);
    let price = price_text(row.price_credits, row.x402_enabled != 0);
    let title = format!("{} / {}", row.product_name, row.action_name);
    let description = if row.description.trim().is_empty() {
        format!("{title}. {price}")
    } else {
        format!("{}. {price}", row.description.trim().trim_end_matches('.'))
    };
    let schema = input_schema(&row.input_schema);
    let mut annotations = ToolAnnotations::with_title(format!("{title} ({price})"));
    annotations.open_world_hint = Some(true);
    annotations.read_only_hint = Some(false);
    annotations.destructive_hint = Some(false);
    annotations.idempotent_hint = Some(false);
    let mut meta = JsonObject::new();
    meta.insert("agentpmt/product".into(), json!(row.product_slug));
    meta.insert("agentpmt/action".into(), json!(row.action_slug));
    meta.insert("agentpmt/price_credits".into(), json!(row.price_credits));
    meta.insert(
        "agentpmt/price_usd".into(),
        json!(credits_to_usd(row.price_credits)),
    );
    meta.insert("agentpmt/x402_enabled".into(), json!(row.x402_enabled != 0));
    Tool::new(name, description, schema)
        .with_title(title)
        .with_annotations(annotations)
        .with_meta(MetaObject(meta))
}

/// "Price: N credits (U USD) per call[, payable per call with x402]".
fn price_text(credits: i64, x402: bool) -> String {
    format!(
        "Price: {credits} credits ({} USD) per call{}",
        credits_to_usd(credits),
        if x402 {
            ", payable per call with x402"
        } else {
            ""
        }
    )
}

/// The action's parameter schema as an MCP `inputSchema` (always `type: object`).
fn input_schema(stored: &str) -> Arc<JsonObject> {
    let mut schema = match serde_json::from_str::<Value>(stored) {
        Ok(Value::Object(map)) => map,
        _ => JsonObject::new(),
    };
    schema.insert("type".into(), json!("object"));
    Arc::new(schema)
}

/// The (product slug, action slug) a cursor resumes after.
fn decode_cursor(cursor: &str) -> Option<(String, String)> {
    let bytes = URL_SAFE_NO_PAD.decode(cursor.trim()).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (product, action) = text.split_once('\n')?;
    Some((product.to_owned(), action.to_owned()))
}

fn encode_cursor(product: &str, action: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{product}\n{action}"))
}

/// `tools/list`: a page of tools after `params.cursor`, with `nextCursor` while more follow.
pub async fn list(state: &AppState, params: &Value) -> Result<Value, RpcError> {
    let after = match params.get("cursor") {
        None | Some(Value::Null) => None,
        Some(Value::String(c)) => {
            Some(decode_cursor(c).ok_or_else(|| RpcError::invalid_params("Invalid cursor"))?)
        }
        Some(_) => return Err(RpcError::invalid_params("The cursor is a string")),
    };
    let (product, action) = after.unwrap_or_default();
    let mut conn = state.db.read().await.map_err(db_error)?;
    let mut rows = sql_fetch_all!(
        conn.conn(),
        Row,
        &format!(
            "SELECT p.slug AS product_slug, p.name AS product_name, a.slug AS action_slug, a.name AS action_name, \
             a.description, a.price_credits, a.x402_enabled, a.input_schema {LISTED} \
             AND (p.slug > $1 OR (p.slug = $1 AND a.slug > $2)) ORDER BY p.slug, a.slug LIMIT $3"
        ),
        &product,
        &action,
        PAGE_SIZE + 1
    )
    .map_err(db_error)?;
    let more = rows.len() as i64 > PAGE_SIZE;
    rows.truncate(PAGE_SIZE as usize);
    let tools: Vec<Tool> = rows.iter().map(tool_of).collect();
    let mut result = json!({ "tools": tools });
    if more {
        if let Some(last) = rows.last() {
            result["nextCursor"] = json!(encode_cursor(&last.product_slug, &last.action_slug));
        }
    }
    Ok(result)
}

/// The (product, action) a tool name names, or `None` for an unknown name.
pub async fn resolve(state: &AppState, name: &str) -> Result<Option<Resolved>, RpcError> {
    if !is_valid_name(name) {
        return Ok(None);
    }
    let mut conn = state.db.read().await.map_err(db_error)?;
    let slugs = match name.split_once("__") {
        Some((product, action)) if tool_name(product, action) == name => {
            Some((product.to_owned(), action.to_owned()))
        }
        _ => {
            // A long name: the action whose name it is.
            #[derive(sqlx::FromRow)]
            struct Slugs {
                product_slug: String,
                action_slug: String,
            }
            let all = sql_fetch_all!(
                conn.conn(),
                Slugs,
                "SELECT p.slug AS product_slug, a.slug AS action_slug FROM product_actions a \
                 JOIN products p ON p.product_id = a.product_id WHERE p.status = 'active' AND a.status = 'active'"
            )
            .map_err(db_error)?;
            all.into_iter()
                .find(|s| tool_name(&s.product_slug, &s.action_slug) == name)
                .map(|s| (s.product_slug, s.action_slug))
        }
    };
    let Some((product, action)) = slugs else {
        return Ok(None);
    };
    match tool_catalog::resolve(&mut conn, &product, &action).await {
        Ok(r)
            if r.product.slug == product
                && r.action.slug == action
                && r.action.status == "active" =>
        {
            Ok(Some(r))
        }
        Ok(_) => Ok(None),
        Err(e) if e.code().status() == 404 => Ok(None),
        Err(e) => Err(RpcError::from_api(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_valid_and_distinct() {
        assert_eq!(tool_name("clock", "now"), "clock__now");
        let long = "a".repeat(60);
        let a = tool_name(&long, "run");
        let b = tool_name(&long, "walk");
        assert!(is_valid_name(&a) && is_valid_name(&b), "{a} {b}");
        assert_ne!(a, b);
        assert_eq!(a.len(), MAX_NAME_LEN);
        assert!(!is_valid_name(""));
        assert!(!is_valid_name("a.b"));
        assert!(!is_valid_name(&"x".repeat(65)));
    }

    #[test]
    fn cursors_round_trip() {
        let c = encode_cursor("stub", "ok-action");
        assert_eq!(
            decode_cursor(&c),
            Some(("stub".to_owned(), "ok-action".to_owned()))
        );
        assert_eq!(decode_cursor("!!"), None);
    }
}
