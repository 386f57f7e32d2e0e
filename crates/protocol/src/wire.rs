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
    #[cfg_attr(feature = "openapi", schema(pattern = r"^0[xX][0-9a-fA-F]{40}$"))]
    pub wallet_address: String,
    /// Session nonce issued by `POST /api/external/auth/session` to this wallet.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 256))]
    pub session_nonce: String,
    /// Client-generated id, unique per session (1-128 characters, no control characters).
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 128))]
    pub request_id: String,
    /// EIP-191 personal-sign signature of the message: 0x + 130 hex digits.
    #[cfg_attr(feature = "openapi", schema(pattern = r"^0[xX][0-9a-fA-F]{130}$"))]
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

/// What became of an accepted signed request: `details.original` of a 409
/// `EXTERNAL_SIGNATURE_REQUEST_REPLAY` answered to a copy with the identical body (a copy
/// with another body under a used `request_id` gets the plain 409). A client that lost the
/// answer of a call learns from it whether the call ran and what it was charged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReplayOriginal {
    /// The HTTP status the original was (or would have been) answered with; null while it
    /// is in progress.
    pub status: Option<u16>,
    /// `in_progress` (the call still runs: ask again shortly), `succeeded`, `failed` (it ran
    /// and failed; nothing charged) or `released` (its hold was given back without a
    /// result: timed out, or the instance running it stopped).
    pub state: ReplayState,
    /// Credits charged for it (0 unless `succeeded`).
    pub charged_credits: i64,
    /// The error code of a failed or released original.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    /// The tool call's usage record (tool invocations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_id: Option<String>,
    /// The job reservation it made (job reservations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reservation_id: Option<String>,
}

/// The state of the original of a replayed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ReplayState {
    InProgress,
    Succeeded,
    Failed,
    Released,
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
    #[cfg_attr(feature = "openapi", schema(schema_with = detail_schema))]
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
    /// Only on 429 `RATE_LIMITED`: the limit that was hit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitInfo>,
}

/// `ErrorBody.detail`: a string, or the list of validation issues.
#[cfg(feature = "openapi")]
fn detail_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, Type};
    use utoipa::openapi::Ref;
    let one_of = OneOfBuilder::new()
        .item(ObjectBuilder::new().schema_type(Type::String))
        .item(ArrayBuilder::new().items(Ref::from_schema_name("ValidationIssue")))
        .description(Some(
            "A string repeating `message`, or for 422 the list of validation issues.",
        ))
        .build();
    Schema::OneOf(one_of)
}

/// The limit a 429 answer refers to (the same wait is in the `Retry-After` header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RateLimitInfo {
    /// Requests allowed per window.
    pub limit: u64,
    /// Window length in seconds.
    pub window_seconds: u64,
    /// Seconds to wait before the next request can succeed.
    pub retry_after_seconds: u64,
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
    /// Credits to add (positive) or remove (negative); not zero, at most 10^9 either way.
    #[cfg_attr(
        feature = "openapi",
        schema(minimum = -1_000_000_000, maximum = 1_000_000_000)
    )]
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

/// Credits are sold in packs that are multiples of this.
pub const CREDIT_PACK_SIZE: i64 = 500;

/// The next valid pack for a requested amount (at least one pack).
pub fn suggested_pack(credits: i64) -> i64 {
    if credits <= CREDIT_PACK_SIZE {
        return CREDIT_PACK_SIZE;
    }
    credits
        .checked_add(CREDIT_PACK_SIZE - 1)
        .map(|c| c / CREDIT_PACK_SIZE * CREDIT_PACK_SIZE)
        .unwrap_or(i64::MAX / CREDIT_PACK_SIZE * CREDIT_PACK_SIZE)
}

/// Exact decimal text of `cents / 100` (no floating point): `505` → `"5.05"`.
pub fn cents_text(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let abs = cents.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

/// The message a sponsor (the paying wallet) signs with EIP-191 when it pays for another
/// wallet's credits. `reference` is `nonce:<authorization nonce>` for x402 payments or
/// `tx:<transaction hash>` for transfers.
pub fn sponsor_message(payer: &str, recipient: &str, credits: i64, reference: &str) -> String {
    format!(
        "agentpmt-external-sponsor\npayer:{}\nrecipient:{}\ncredits:{credits}\n{reference}",
        payer.to_ascii_lowercase(),
        recipient.to_ascii_lowercase()
    )
}

/// `POST /api/external/credits/purchase` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PurchaseRequest {
    /// Wallet receiving the credits.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub wallet_address: WalletAddress,
    /// Credits to buy: a positive multiple of 500 (100 credits = 1 USD).
    pub credits: i64,
    /// `x402` (pay with an EIP-3009 authorization in the payment header) or `transfer`
    /// (`transaction_hash` of a token transfer the payer already made to `payTo`).
    pub payment_method: String,
    /// The paying wallet, when it differs from `wallet_address` (sponsored purchase).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub payer_wallet_address: Option<WalletAddress>,
    /// Idempotency key: the same key and body return the first result again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// On-chain transfer paying for the purchase (`payment_method: transfer`); also an
    /// idempotency key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_hash: Option<String>,
    /// Contact e-mail for the receipt (stored, optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Chain of the payment (default: the server's default network, Base on production).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain_id: Option<u64>,
    /// Token symbol (`USDC` or `EURC`; default `USDC`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// EIP-191 signature of the payer over [`sponsor_message`], required when the payer is
    /// not `wallet_address`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sponsor_signature: Option<String>,
}

/// How a purchase was paid.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PurchasePayment {
    /// `x402` or `transfer`.
    pub method: String,
    /// CAIP-2 network (`eip155:8453`).
    pub network: String,
    /// Chain id.
    pub chain_id: u64,
    /// Token symbol.
    pub token: String,
    /// Token contract.
    pub asset: String,
    /// Price in the token's atomic units (decimal string).
    pub amount_base_units: String,
    /// Price in USD, exact decimal text.
    pub amount_usd: String,
    /// The paying wallet.
    pub payer_wallet_address: String,
    /// The receiving wallet.
    pub pay_to: String,
    /// Settlement transaction hash.
    pub transaction: String,
    /// `evm` (settled by this server), `facilitator`, or `dev` (no chain: test credits).
    pub settlement: String,
}

/// `POST /api/external/credits/purchase` response (200 settled, 202 pending).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PurchaseResponse {
    pub success: bool,
    /// `settled` (credits granted) or `pending` (settlement broadcast, outcome not known yet:
    /// repeat the same request to learn it; never sign again).
    pub status: String,
    /// Purchase id.
    pub purchase_id: String,
    /// Credited wallet (lowercase).
    pub wallet_address: String,
    /// Credits bought.
    pub credits_purchased: i64,
    /// Balance after the purchase (null while pending).
    pub balance_credits: Option<i64>,
    /// The idempotency key sent, if any.
    pub request_id: Option<String>,
    /// Settlement transaction hash (empty while unknown).
    pub transaction_hash: String,
    /// Payment details.
    pub payment: PurchasePayment,
    /// Human-readable summary.
    pub message: String,
}

/// `POST /api/external/agentaddress` response: a freshly generated wallet. The private key
/// and mnemonic are sent exactly once; `Debug` never shows them.
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AgentAddressResponse {
    /// Always true.
    pub success: bool,
    pub data: AgentAddressData,
}

/// The new wallet: address, private key and the mnemonic backing it.
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AgentAddressData {
    /// EIP-55 checksummed address of the new wallet.
    #[serde(rename = "evmAddress")]
    #[cfg_attr(
        feature = "openapi",
        schema(example = "0x9858EfFD232B4033E47d90003D41EC34EcaEda94")
    )]
    pub evm_address: String,
    /// Hex private key (32 bytes, 0x-prefixed) at m/44'/60'/0'/0/0. Returned once.
    #[serde(rename = "evmPrivateKey")]
    pub evm_private_key: String,
    /// 12-word BIP-39 English mnemonic the key derives from. Returned once.
    pub mnemonic: String,
}

impl std::fmt::Debug for AgentAddressResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentAddressResponse")
            .field("success", &self.success)
            .field("data", &self.data)
            .finish()
    }
}

impl std::fmt::Debug for AgentAddressData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentAddressData")
            .field("evm_address", &self.evm_address)
            .field("evm_private_key", &"<redacted>")
            .field("mnemonic", &"<redacted>")
            .finish()
    }
}

impl Drop for AgentAddressData {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.evm_private_key.zeroize();
        self.mnemonic.zeroize();
    }
}

/// Longest accepted `message` of an agent-help request, in characters.
pub const MAX_HELP_MESSAGE_CHARS: usize = 4000;
/// Largest accepted `context` of an agent-help request, as JSON bytes.
pub const MAX_HELP_CONTEXT_BYTES: usize = 16 * 1024;

/// `POST /api/external/agent-help` body: a question or a failing request, for operators.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AgentHelpRequest {
    /// What went wrong or what the agent needs (1-4000 characters).
    pub message: String,
    /// The `request_id` of the failing response, if any.
    #[serde(default)]
    pub request_id: Option<String>,
    /// The `error_code` of the failing response, if any; known codes get an automatic hint.
    #[serde(default)]
    pub error_code: Option<String>,
    /// Anything else that helps (the request sent, the response received), at most 16 KiB
    /// of JSON (any JSON value; usually an object). Never put private keys or mnemonics here.
    #[serde(default)]
    pub context: Option<serde_json::Value>,
}

/// `POST /api/external/agent-help` response.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AgentHelpResponse {
    pub success: bool,
    /// The stored ticket; quote it when following up.
    pub ticket_id: String,
    /// Always `received`.
    pub status: String,
    /// Automatic advice for a known `error_code`, else null.
    pub hint: Option<AgentHelpHint>,
    /// Absolute URL of the human-readable API docs.
    pub docs_url: String,
}

/// Automatic advice for a known error code.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AgentHelpHint {
    pub error_code: String,
    pub http_status: u16,
    pub meaning: String,
    pub recovery: String,
    pub checklist: Vec<String>,
}

/// One check of `GET /readyz`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReadinessCheck {
    /// `database`, `migrations`, ...
    pub name: String,
    /// `ok` or `failed`.
    pub status: String,
    /// What failed, or a short fact (e.g. the migration version).
    pub detail: String,
}

/// `GET /readyz` and `GET /healthz` response.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HealthResponse {
    /// `ok` (healthz), `ready` or `not_ready` (readyz).
    pub status: String,
    #[serde(default)]
    pub checks: Vec<ReadinessCheck>,
}

/// One agent-help ticket as the operator API shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HelpTicketView {
    pub ticket_id: String,
    pub message: String,
    pub request_id: Option<String>,
    pub error_code: Option<String>,
    /// The request's `context` as sent (any JSON value), known secret shapes redacted.
    pub context: Option<serde_json::Value>,
    /// Client IP address the ticket came from.
    pub source: String,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// `open`, or `closed` once an operator closed it.
    #[serde(default)]
    pub status: String,
    /// When an operator closed it (RFC 3339, UTC); absent while open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_at: Option<String>,
}

/// `POST /api/admin/help-tickets/{ticketId}/close` and `/reopen` response.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HelpTicketResponse {
    pub success: bool,
    /// `true` when the ticket's status changed (closing a closed ticket changes nothing).
    pub changed: bool,
    pub ticket: HelpTicketView,
}

/// `GET /api/admin/help-tickets` response: newest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HelpTicketList {
    pub success: bool,
    pub limit: i64,
    pub tickets: Vec<HelpTicketView>,
}

/// One thing the payment audit found that does not hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PaymentDiscrepancy {
    /// What is wrong: `credited_without_payment`, `claim_without_holder`, `amount_mismatch`,
    /// `not_on_chain`, `below_depth`, `chain_unreachable` or `unclaimed_tool_payment`.
    pub kind: String,
    /// The ledger entry, purchase, usage record or claim (`eip155:<chain>:<tx>:<log>`)
    /// concerned.
    pub reference: String,
    /// Human-readable details.
    pub detail: String,
}

/// The payment audit: every payment-derived credit and every counted on-chain payment
/// re-checked against the database and the chain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PaymentAuditReport {
    /// True when nothing is wrong (no discrepancies).
    pub clean: bool,
    /// Payment-derived ledger entries checked.
    pub ledger_entries: u64,
    /// Counted on-chain payments (claims) checked.
    pub claims: u64,
    /// Claims re-read from a chain (dev-network claims have no chain).
    pub checked_on_chain: u64,
    /// Settlements still open (pending, broadcast, settling): neither granted nor lost.
    pub open_settlements: u64,
    /// Credits granted by purchases, in total.
    pub credits_purchased: i64,
    /// Everything that does not hold.
    pub discrepancies: Vec<PaymentDiscrepancy>,
}
