//! The tool marketplace on the wire: the catalog listing with its pagination contract, tool
//! invocation (signed credits or direct x402) and the operator API's catalog documents.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `page_size` when the caller sends none.
pub const DEFAULT_PAGE_SIZE: i64 = 100;
/// Largest accepted `page_size`.
pub const MAX_PAGE_SIZE: i64 = 1000;

/// Parameter-object keys the marketplace reads and removes before a tool runs.
pub const CREDENTIALS_PARAM: &str = "_credentials";
/// Attributes a tool call to a workflow session (hashed, then removed before the tool runs).
pub const WORKFLOW_SESSION_PARAM: &str = "_workflow_session_id";

/// Action slug for an action name: lowercase, `_` and spaces become `-`.
pub fn action_slug(name: &str) -> String {
    name.trim()
        .chars()
        .map(|c| match c {
            '_' | ' ' => '-',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

/// The pagination block of `GET /api/external/tools` (seed `003_*`): the same fields on
/// every response, including empty and filtered ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Pagination {
    /// The page returned (1-based).
    pub page: i64,
    /// Items per page used for this response.
    pub page_size: i64,
    /// Matching tools over all pages.
    pub total_count: i64,
    /// `ceil(total_count / page_size)` (0 when nothing matches).
    pub total_pages: i64,
    /// Whether a later page has items.
    pub has_more: bool,
    /// `page + 1` while `has_more`, else null.
    pub next_page: Option<i64>,
    /// 100.
    pub default_page_size: i64,
    /// 1000.
    pub max_page_size: i64,
}

impl Pagination {
    /// The block for `page` of `page_size` items out of `total_count`.
    pub fn new(page: i64, page_size: i64, total_count: i64) -> Pagination {
        let total_pages = if total_count == 0 {
            0
        } else {
            (total_count + page_size - 1) / page_size
        };
        let has_more = page < total_pages;
        Pagination {
            page,
            page_size,
            total_count,
            total_pages,
            has_more,
            next_page: has_more.then_some(page + 1),
            default_page_size: DEFAULT_PAGE_SIZE,
            max_page_size: MAX_PAGE_SIZE,
        }
    }
}

/// One action of a listed tool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ToolActionView {
    /// URL slug (`name` with `_` → `-`).
    pub action_slug: String,
    /// The action's raw name (also accepted in the URL and the signed path).
    pub name: String,
    pub description: String,
    /// Price per call in credits (100 credits = 1 USD).
    pub price_credits: i64,
    /// `price_credits / 100`.
    pub price_usd: f64,
    /// Always `request`: one charge per successful call.
    pub unit_type: String,
    /// Whether the action can be paid per call with x402 (no account).
    pub x402_enabled: bool,
    /// The parameters as JSON Schema (an object schema).
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub input_schema: Value,
    /// The same parameters in the flat vendor form
    /// `{param: {type, description, required, enum, default, minimum, maximum}}`.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub parameters: Value,
    /// Where to POST an invocation (relative to the server).
    pub invoke_path: String,
}

/// One listed tool (a product).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ToolView {
    /// 24 hex digits.
    pub product_id: String,
    pub product_slug: String,
    pub name: String,
    pub description: String,
    pub categories: Vec<String>,
    /// The vendor's slug (`agentpmt` for built-in tools).
    pub vendor: String,
    pub actions: Vec<ToolActionView>,
}

/// `GET /api/external/tools` response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ToolListResponse {
    pub success: bool,
    pub tools: Vec<ToolView>,
    pub pagination: Pagination,
}

/// Body of a signed credit invocation besides the envelope.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InvokeRequest {
    /// Wallet that signed (envelope).
    #[cfg_attr(feature = "openapi", schema(pattern = r"^0[xX][0-9a-fA-F]{40}$"))]
    pub wallet_address: String,
    /// Session nonce (envelope).
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 256))]
    pub session_nonce: String,
    /// Unique per session (envelope; 1-128 characters, no control characters).
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 128))]
    pub request_id: String,
    /// EIP-191 signature (envelope): 0x + 130 hex digits.
    #[cfg_attr(feature = "openapi", schema(pattern = r"^0[xX][0-9a-fA-F]{130}$"))]
    pub signature: String,
    /// The action's parameters; the payload hash is over this object (absent hashes as `{}`).
    /// `_credentials` is passed to the tool and never stored; `_workflow_session_id`
    /// attributes the call to a workflow session.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    #[serde(default)]
    pub parameters: Option<Value>,
}

/// The payment of a direct x402 invocation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct X402PaymentView {
    /// Token symbol, e.g. `USDC`.
    pub token: String,
    /// Token contract address.
    pub asset: String,
    pub amount_base_units: String,
    pub amount_usd: f64,
    pub payer_wallet_address: String,
    pub pay_to: String,
}

/// The `x402` block of a direct x402 invocation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct X402Receipt {
    /// True when the payment was settled on chain.
    pub settled: bool,
    /// Settlement transaction hash.
    pub transaction: String,
    /// CAIP-2 network.
    pub network: String,
    /// The action's URL (the x402 resource).
    pub resource_url: String,
    /// Whether the settlement is recorded on the usage record.
    pub settlement_recorded: bool,
    pub payment: X402PaymentView,
}

/// A successful invocation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InvokeResponse {
    pub success: bool,
    /// The tool's JSON reply.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub response: Value,
    /// Non-fatal warnings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Object>))]
    pub warnings: Vec<Value>,
    /// Id of the usage record of this call.
    pub usage_id: String,
    pub product_slug: String,
    pub action_slug: String,
    /// Credits charged for this call (signed credit calls; 0 for x402).
    pub charged_credits: i64,
    /// The action's price in credits.
    pub price_credits: i64,
    /// Balance after the charge (signed credit calls).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balance_credits: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balance_usd: Option<f64>,
    /// `credits` or `x402`.
    pub credit_source: String,
    /// The workflow session the call was attributed to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow_session_id: Option<String>,
    /// Present only for direct x402 payments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x402: Option<X402Receipt>,
}

/// How an action runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RunnerSpec {
    /// A tool built into the server (see the README's list).
    Builtin {
        /// The built-in's name, e.g. `text.stats`.
        name: String,
    },
    /// The vendor's HTTP endpoint: the server POSTs `{product, action, parameters,
    /// credentials, usage_id}` with an HMAC-SHA256 signature header.
    Http {
        url: String,
        /// Milliseconds before the call counts as failed (default 20,000).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_ms: Option<u64>,
    },
}

/// An action in a catalog document (operator API and catalog file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ActionSpecDoc {
    /// Raw action name (letters, digits, `_`, `-`); the slug is derived from it unless given.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slug: Option<String>,
    #[serde(default)]
    pub description: String,
    /// Price per call in credits (>= 1).
    pub price_credits: i64,
    /// Allow direct x402 payment per call.
    #[serde(default)]
    pub x402_enabled: bool,
    /// JSON Schema (object) or the flat `{param: {type, required, ...}}` form.
    #[serde(default = "empty_object")]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub parameters: Value,
    pub runner: RunnerSpec,
    /// `active` (default) or `inactive`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

fn empty_object() -> Value {
    Value::Object(Map::new())
}

/// A product in a catalog document (operator API and catalog file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ProductSpecDoc {
    /// Lowercase letters, digits and `-`.
    pub slug: String,
    /// 24 hex digits; derived from the slug when absent (stable across loads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_id: Option<String>,
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub categories: Vec<String>,
    /// The vendor's slug; absent for built-in tools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    /// `active` (default) or `inactive`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Private products are invocable but not listed.
    #[serde(default)]
    pub private: bool,
    #[serde(default)]
    pub actions: Vec<ActionSpecDoc>,
}

/// A vendor in a catalog document (operator API and catalog file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct VendorSpecDoc {
    pub slug: String,
    pub name: String,
    /// HMAC secret for the vendor's signature header (operator API only; returned never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Catalog files: the environment variable holding the secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_env: Option<String>,
    /// `active` (default) or `inactive`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

/// A vendor as the operator API shows it (never with its secret).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VendorView {
    pub vendor_id: String,
    pub slug: String,
    pub name: String,
    pub status: String,
    pub has_secret: bool,
    pub updated_at: String,
}

/// A product as the operator API shows it (including inactive and private ones).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProductAdminView {
    pub product_id: String,
    pub slug: String,
    pub name: String,
    pub description: String,
    pub categories: Vec<String>,
    pub vendor: String,
    pub status: String,
    pub private: bool,
    pub actions: Vec<ActionAdminView>,
    pub updated_at: String,
}

/// An action as the operator API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ActionAdminView {
    pub slug: String,
    pub name: String,
    pub description: String,
    pub price_credits: i64,
    pub x402_enabled: bool,
    pub status: String,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub input_schema: Value,
    pub runner: RunnerSpec,
}

/// Usage totals of one group (a product, an action or a wallet).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UsageRow {
    /// The product slug, `product/action`, or the wallet address.
    pub key: String,
    pub calls: i64,
    pub succeeded: i64,
    pub failed: i64,
    /// Credits charged to wallets.
    pub charged_credits: i64,
    /// Calls paid with x402.
    pub x402_calls: i64,
}

/// `GET /api/admin/tools/usage` response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UsageReport {
    pub success: bool,
    /// `product`, `action` or `wallet`.
    pub group_by: String,
    pub rows: Vec<UsageRow>,
}

/// One usage record (operator API).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UsageRecordView {
    pub usage_id: String,
    pub product_slug: String,
    pub action_slug: String,
    /// `credits` (signed), `budget` (API-key + budget-key bearer, e.g. MCP) or `x402`.
    pub mode: String,
    pub wallet_address: Option<String>,
    pub payer_address: Option<String>,
    pub price_credits: i64,
    pub charged_credits: i64,
    /// `running`, `succeeded`, `failed`, `settlement_failed`, `settlement_pending`.
    pub status: String,
    pub error_code: Option<String>,
    pub workflow_session_id: Option<String>,
    pub transaction_hash: Option<String>,
    /// Budget calls: the API key and the budget that paid.
    #[serde(default)]
    pub api_key_id: Option<String>,
    #[serde(default)]
    pub budget_id: Option<String>,
    pub created_at: String,
    pub finished_at: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pagination_edges() {
        let empty = Pagination::new(1, 100, 0);
        assert_eq!(
            (empty.total_pages, empty.has_more, empty.next_page),
            (0, false, None)
        );
        let exact = Pagination::new(2, 5, 10);
        assert_eq!(
            (exact.total_pages, exact.has_more, exact.next_page),
            (2, false, None)
        );
        let first = Pagination::new(1, 5, 11);
        assert_eq!(
            (first.total_pages, first.has_more, first.next_page),
            (3, true, Some(2))
        );
        let beyond = Pagination::new(9, 5, 11);
        assert!(!beyond.has_more);
    }

    #[test]
    fn slugs() {
        assert_eq!(action_slug("get_current_time"), "get-current-time");
        assert_eq!(action_slug("Fetch Page"), "fetch-page");
    }
}
