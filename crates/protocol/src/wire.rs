//! Request and response bodies of the API, shared by the server and the SDK.

use crate::address::WalletAddress;
use serde::{Deserialize, Serialize};

/// Credits per US dollar: 100 credits = 1 USD.
pub const CREDITS_PER_USD: i64 = 100;

/// USD value of a credit amount.
pub fn credits_to_usd(credits: i64) -> f64 {
    credits as f64 / CREDITS_PER_USD as f64
}

/// `POST /api/external/auth/session` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionRequest {
    /// Wallet address requesting a session nonce (0x + 40 hex digits, any case).
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "0x2c7536e3605d9c16a7a3d7b1898e529396a65c23"))]
    pub wallet_address: WalletAddress,
}

/// `POST /api/external/auth/session` response.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionResponse {
    /// Server-generated nonce (256 random bits, hex) to put on the `session:` line.
    pub session_nonce: String,
    /// Seconds until the nonce expires.
    pub expires_in: u64,
    /// When the nonce expires (RFC 3339, UTC).
    pub expires_at: String,
    /// The wallet the nonce is bound to (lowercase).
    pub wallet_address: String,
}

/// The signature envelope fields every signed request body carries.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SignedEnvelope {
    /// Wallet address that signed the request.
    pub wallet_address: String,
    /// Session nonce issued by `POST /api/external/auth/session` to this wallet.
    pub session_nonce: String,
    /// Client-generated id, unique per session (1-128 characters, no control characters).
    pub request_id: String,
    /// EIP-191 personal-sign signature of the message: 0x + 130 hex digits.
    pub signature: String,
}

/// `POST /api/external/credits/balance` response.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BalanceResponse {
    pub success: bool,
    /// The signed wallet (lowercase).
    pub wallet_address: String,
    /// Spendable credits.
    pub balance_credits: i64,
    /// `balance_credits / 100`.
    pub balance_usd: f64,
    /// Always 100.
    pub credits_per_usd: i64,
}

/// One item of a 422 `detail` list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ValidationIssue {
    /// Where the problem is: `["body", "<field>", ...]`, `["path", "<param>"]`, `["query", "<param>"]`.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<serde_json::Value>))]
    pub loc: Vec<LocItem>,
    /// What is wrong.
    pub msg: String,
    /// Machine-readable kind: `missing`, `string_type`, `int_type`, `json_invalid`, `value_error`, ...
    #[serde(rename = "type")]
    pub kind: String,
}

/// A `loc` element: a field name or an array index (or byte offset for JSON syntax errors).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LocItem {
    Index(u64),
    Key(String),
}

impl From<&str> for LocItem {
    fn from(s: &str) -> Self {
        LocItem::Key(s.to_owned())
    }
}

/// The error envelope every error response uses. Clients should read `error_code` (the
/// same value is in `code`), `message`, and `details.checklist`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// Always false.
    #[serde(default)]
    pub success: bool,
    /// Short HTTP-style label ("Unauthorized").
    #[serde(default)]
    pub error: String,
    /// Human-readable message.
    #[serde(default)]
    pub message: String,
    /// Stable machine-readable code.
    #[serde(default)]
    pub error_code: String,
    /// Same as `error_code`.
    #[serde(default)]
    pub code: String,
    /// A string repeating `message`, or for 422 the list of validation issues.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub detail: serde_json::Value,
    /// Correlation id, echoed from `x-request-id` when supplied.
    #[serde(default)]
    pub request_id: String,
    /// Absolute URL of `POST /api/external/agent-help`.
    #[serde(default)]
    pub help_url: String,
    /// Absolute URL of the human help page.
    #[serde(default)]
    pub help_doc: String,
    /// Structured details; always has `checklist`.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub details: serde_json::Value,
}

impl ErrorBody {
    /// `details.checklist` as strings.
    pub fn checklist(&self) -> Vec<String> {
        self.details
            .get("checklist")
            .and_then(|c| c.as_array())
            .map(|items| {
                items
                    .iter()
                    .filter_map(|i| i.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The 422 issues, when `detail` is a list.
    pub fn validation_issues(&self) -> Vec<ValidationIssue> {
        serde_json::from_value(self.detail.clone()).unwrap_or_default()
    }
}

/// Operator request: grant (positive) or remove (negative) credits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreditAdjustmentRequest {
    /// Credits to add (positive) or remove (negative); not zero.
    pub amount_credits: i64,
    /// Why (kept on the ledger entry; 1-500 characters).
    pub reason: String,
    /// Optional idempotency key: the same key with the same body returns the first result;
    /// with a different body it is refused with 409 `IDEMPOTENCY_KEY_REUSED`.
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

/// One ledger entry as the operator API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LedgerEntryView {
    pub entry_id: String,
    pub wallet_address: String,
    /// Signed amount: positive credits in, negative out.
    pub amount_credits: i64,
    /// `admin_adjustment`, later also `purchase`, `tool_charge`, `job_payout`, ...
    pub kind: String,
    pub reference: Option<String>,
    pub reason: Option<String>,
    /// Balance right after this entry.
    pub balance_after: i64,
    /// RFC 3339, UTC.
    pub created_at: String,
}

/// Operator response for a credit adjustment.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreditAdjustmentResponse {
    pub success: bool,
    pub entry: LedgerEntryView,
    pub balance_credits: i64,
    /// True when this answer repeats an earlier request with the same idempotency key.
    pub idempotent_replay: bool,
}

/// Operator view of a wallet.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AdminWalletView {
    pub success: bool,
    pub wallet_address: String,
    pub balance_credits: i64,
    pub balance_usd: f64,
    /// Sum of all ledger entries (always equal to `balance_credits`).
    pub ledger_sum_credits: i64,
    pub ledger_entry_count: i64,
    /// The most recent entries, newest first (at most 100).
    pub recent_entries: Vec<LedgerEntryView>,
}
