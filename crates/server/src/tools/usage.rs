//! Usage records and two-phase credit charges.
//!
//! A credit call holds its price before the tool runs: one ledger debit (entry
//! `hold:<usage id>`, kind `tool_hold`) in the transaction that also claims the signed
//! request's replay record and writes the usage record, so a call that cannot be paid runs
//! nothing and consumes nothing. When the tool succeeds the hold is posted (kept: the debit
//! is the charge); when it fails or times out it is released with the opposite entry
//! (`release:<usage id>`, kind `tool_release`). Both transitions are conditional on the hold
//! still being pending, so each happens at most once even when the sweeper (which finishes
//! calls of a crashed process after their deadline) races the request.
//!
//! A budget-paid call (mode `budget`) also reserves its price under the budget's cap in the
//! hold's transaction ([`reserve_budget`]); releasing the hold gives it back. An
//! account-funded budget's hold has no ledger entry: the reservation is the hold.

use crate::db::macros::{sql_execute, sql_fetch_all, sql_fetch_optional, sql_scalar_optional};
use crate::db::{AsConn, Db};
use crate::error::{ApiError, ApiResult};
use crate::ledger::{self, LedgerError, NewEntry};
use crate::time::{now_ms, rfc3339_ms};
use agentpmt_protocol::tools::{UsageRecordView, UsageRow};
use agentpmt_protocol::{ErrorCode, WalletAddress};

/// Ledger entry kinds of tool calls.
pub mod kind {
    pub const TOOL_HOLD: &str = "tool_hold";
    pub const TOOL_RELEASE: &str = "tool_release";
}

/// Usage statuses.
pub mod status {
    pub const RUNNING: &str = "running";
    pub const SETTLING: &str = "settling";
    pub const SUCCEEDED: &str = "succeeded";
    pub const FAILED: &str = "failed";
    pub const SETTLEMENT_FAILED: &str = "settlement_failed";
    pub const SETTLEMENT_PENDING: &str = "settlement_pending";
}

/// A usage record to write when a call starts.
#[derive(Debug, Clone)]
pub struct NewUsage {
    pub usage_id: String,
    pub product_id: String,
    pub product_slug: String,
    pub action_slug: String,
    pub mode: &'static str,
    pub wallet_address: Option<String>,
    pub payer_address: Option<String>,
    pub session_nonce: Option<String>,
    pub request_id: Option<String>,
    pub price_credits: i64,
    pub workflow_session_id: Option<String>,
    pub network: Option<String>,
    /// x402: the token symbol and the stored payment payload (JSON).
    pub token: Option<String>,
    pub authorization_json: Option<String>,
    /// x402: the block the authorization was seen unused at.
    pub search_from_block: Option<i64>,
    pub deadline_ms: i64,
    /// Budget calls: the API key and the budget of the bearer.
    pub api_key_id: Option<String>,
    pub budget_id: Option<String>,
    /// The instance running the call (see [`crate::instances`]).
    pub owner_instance: Option<String>,
}

/// Mode of a call paid from a budget (API-key + budget-key bearer, e.g. over MCP).
pub const MODE_BUDGET: &str = "budget";

/// What a hold is placed on.
#[derive(Debug, Clone, Copy)]
pub enum Holder<'a> {
    /// A wallet: the hold is a ledger debit.
    Wallet(&'a WalletAddress),
    /// An account-funded budget (the account is billed for what the budget spent): the
    /// hold is the budget's reserved cap alone, with no ledger entry.
    Account(&'a str),
}

/// Prefix of `credit_holds.wallet_address` for holds on an account.
const ACCOUNT_HOLDER_PREFIX: &str = "account:";

/// A new usage id.
pub fn new_usage_id() -> String {
    format!("use_{}", uuid::Uuid::new_v4().simple())
}

/// Writes the usage record (status `running`).
pub async fn insert(conn: &mut impl AsConn, u: &NewUsage) -> Result<(), sqlx::Error> {
    sql_execute!(
        conn.conn(),
        "INSERT INTO tool_usage (usage_id, product_id, product_slug, action_slug, mode, wallet_address, payer_address, \
         session_nonce, request_id, price_credits, charged_credits, status, workflow_session_id, network, token, authorization_json, \
         deadline_ms, created_at_ms, search_from_block, api_key_id, budget_id, owner_instance) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 0, 'running', $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)",
        &u.usage_id,
        &u.product_id,
        &u.product_slug,
        &u.action_slug,
        u.mode,
        &u.wallet_address,
        &u.payer_address,
        &u.session_nonce,
        &u.request_id,
        u.price_credits,
        &u.workflow_session_id,
        &u.network,
        &u.token,
        &u.authorization_json,
        u.deadline_ms,
        now_ms(),
        u.search_from_block,
        &u.api_key_id,
        &u.budget_id,
        &u.owner_instance
    )?;
    Ok(())
}

/// Holds `u.price_credits` on `holder` and writes the usage record, in `tx` (the caller
/// claimed what its payer needs claimed, e.g. the replay record or the budget's cap, in the
/// same transaction). A wallet without enough credits → 402 `INSUFFICIENT_CREDITS` with the
/// price and the balance.
pub async fn hold(tx: &mut impl AsConn, holder: Holder<'_>, u: &NewUsage) -> ApiResult<()> {
    let holder_key = match holder {
        Holder::Wallet(wallet) => {
            hold_on_wallet(tx, wallet, u).await?;
            wallet.to_string()
        }
        Holder::Account(account_id) => format!("{ACCOUNT_HOLDER_PREFIX}{account_id}"),
    };
    let now = now_ms();
    sql_execute!(
        tx.conn(),
        "INSERT INTO credit_holds (usage_id, wallet_address, amount_credits, status, created_at_ms, updated_at_ms, budget_id) \
         VALUES ($1, $2, $3, 'pending', $4, $4, $5)",
        &u.usage_id,
        &holder_key,
        u.price_credits,
        now,
        &u.budget_id
    )?;
    insert(tx, u).await?;
    Ok(())
}

/// The ledger debit of a hold on a wallet.
async fn hold_on_wallet(
    tx: &mut impl AsConn,
    wallet: &WalletAddress,
    u: &NewUsage,
) -> ApiResult<()> {
    let entry_id = format!("hold:{}", u.usage_id);
    let posted = ledger::post(
        tx,
        NewEntry {
            entry_id: &entry_id,
            wallet,
            amount_credits: -u.price_credits,
            kind: kind::TOOL_HOLD,
            reference: Some(&u.usage_id),
            reason: Some(&format!("{}/{}", u.product_slug, u.action_slug)),
            fingerprint: None,
        },
    )
    .await;
    match posted {
        Ok(_) => Ok(()),
        Err(LedgerError::Insufficient { balance, .. }) => Err(ApiError::new(
            ErrorCode::INSUFFICIENT_CREDITS,
            format!(
                "This call costs {} credits and the wallet has {balance}",
                u.price_credits
            ),
        )
        .with_detail("price_credits", u.price_credits)
        .with_detail("balance_credits", balance)
        .with_detail("required_credits", u.price_credits - balance)),
        Err(LedgerError::Db(e)) => Err(e.into()),
        Err(e) => Err(ApiError::internal(e)),
    }
}

/// Reserves `price` of a budget's cap, atomically (one conditional update, in the caller's
/// transaction): `None` when the budget is revoked or its cap has no room left; else the
/// wallet the budget draws from (`Some(None)`: the account).
pub async fn reserve_budget(
    tx: &mut impl AsConn,
    budget_id: &str,
    price: i64,
) -> Result<Option<Option<String>>, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Reserved {
        wallet_address: Option<String>,
    }
    let reserved = sql_fetch_optional!(
        tx.conn(),
        Reserved,
        "UPDATE budgets SET spent_credits = spent_credits + $2 \
         WHERE budget_id = $1 AND revoked_at_ms IS NULL AND spent_credits + $2 <= cap_credits \
         RETURNING wallet_address",
        budget_id,
        price
    )?;
    Ok(reserved.map(|r| r.wallet_address))
}

/// Posts the hold of a successful call. `false` when the hold was no longer pending (the
/// sweeper released it after the deadline): the call then counts as failed, uncharged.
pub async fn post_hold(db: &Db, usage_id: &str) -> ApiResult<bool> {
    let mut tx = db.begin().await?;
    let now = now_ms();
    let posted = sql_execute!(
        tx.conn(),
        "UPDATE credit_holds SET status = 'posted', updated_at_ms = $2 WHERE usage_id = $1 AND status = 'pending'",
        usage_id,
        now
    )?;
    if posted == 1 {
        sql_execute!(
            tx.conn(),
            "UPDATE tool_usage SET status = 'succeeded', charged_credits = price_credits, finished_at_ms = $2 WHERE usage_id = $1",
            usage_id,
            now
        )?;
    }
    tx.commit().await?;
    Ok(posted == 1)
}

/// Releases the hold of a failed call (once) and records the failure.
pub async fn release_hold(
    db: &Db,
    usage_id: &str,
    error_code: &str,
    message: &str,
) -> ApiResult<()> {
    let mut tx = db.begin().await?;
    release_in(&mut tx, usage_id, error_code, message).await?;
    tx.commit().await?;
    Ok(())
}

async fn release_in(
    tx: &mut impl AsConn,
    usage_id: &str,
    error_code: &str,
    message: &str,
) -> ApiResult<()> {
    #[derive(sqlx::FromRow)]
    struct Hold {
        wallet_address: String,
        amount_credits: i64,
        budget_id: Option<String>,
    }
    let now = now_ms();
    let hold = sql_fetch_optional!(
        tx.conn(),
        Hold,
        "UPDATE credit_holds SET status = 'released', updated_at_ms = $2 WHERE usage_id = $1 AND status = 'pending' \
         RETURNING wallet_address, amount_credits, budget_id",
        usage_id,
        now
    )?;
    if let Some(budget_id) = hold.as_ref().and_then(|h| h.budget_id.as_deref()) {
        // The budget's reserved cap comes back with the hold.
        sql_execute!(
            tx.conn(),
            "UPDATE budgets SET spent_credits = spent_credits - $2 WHERE budget_id = $1",
            budget_id,
            hold.as_ref().map_or(0, |h| h.amount_credits)
        )?;
    }
    if let Some(hold) = hold.filter(|h| !h.wallet_address.starts_with(ACCOUNT_HOLDER_PREFIX)) {
        let wallet: WalletAddress = hold.wallet_address.parse().map_err(ApiError::internal)?;
        let entry_id = format!("release:{usage_id}");
        ledger::post(
            tx,
            NewEntry {
                entry_id: &entry_id,
                wallet: &wallet,
                amount_credits: hold.amount_credits,
                kind: kind::TOOL_RELEASE,
                reference: Some(usage_id),
                reason: Some(error_code),
                fingerprint: None,
            },
        )
        .await
        .map_err(ApiError::internal)?;
    }
    finish(
        tx,
        usage_id,
        status::FAILED,
        Some(error_code),
        Some(message),
    )
    .await?;
    Ok(())
}

/// Sets a usage record's final status (only while it is still open).
pub async fn finish(
    conn: &mut impl AsConn,
    usage_id: &str,
    status: &str,
    error_code: Option<&str>,
    message: Option<&str>,
) -> Result<(), sqlx::Error> {
    let message = message.map(|m| m.chars().take(500).collect::<String>());
    sql_execute!(
        conn.conn(),
        "UPDATE tool_usage SET status = $2, error_code = $3, error_message = $4, finished_at_ms = $5 \
         WHERE usage_id = $1 AND status IN ('running', 'settling')",
        usage_id,
        status,
        error_code,
        &message,
        now_ms()
    )?;
    Ok(())
}

/// Marks an x402 call as settling (the tool succeeded; settlement starts) and holds it
/// until `lease_until_ms` (after that the reconciler may take it).
pub async fn mark_settling(
    conn: &mut impl AsConn,
    usage_id: &str,
    lease_until_ms: i64,
) -> Result<(), sqlx::Error> {
    sql_execute!(
        conn.conn(),
        "UPDATE tool_usage SET status = 'settling', deadline_ms = $2 WHERE usage_id = $1 AND status = 'running'",
        usage_id,
        lease_until_ms
    )?;
    Ok(())
}

/// Sets when an open x402 settlement may be reconciled (0: at once).
pub async fn set_deadline(
    conn: &mut impl AsConn,
    usage_id: &str,
    deadline_ms: i64,
) -> Result<(), sqlx::Error> {
    sql_execute!(
        conn.conn(),
        "UPDATE tool_usage SET deadline_ms = $2 WHERE usage_id = $1",
        usage_id,
        deadline_ms
    )?;
    Ok(())
}

/// An x402 call whose settlement is open (settling or pending).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OpenSettlement {
    pub usage_id: String,
    pub price_credits: i64,
    pub network: Option<String>,
    pub token: Option<String>,
    pub authorization_json: Option<String>,
    pub transaction_hash: Option<String>,
    pub search_from_block: Option<i64>,
}

/// Open x402 settlements whose lease passed.
pub async fn open_settlements(
    conn: &mut impl AsConn,
    now: i64,
    limit: i64,
) -> Result<Vec<OpenSettlement>, sqlx::Error> {
    sql_fetch_all!(
        conn.conn(),
        OpenSettlement,
        "SELECT usage_id, price_credits, network, token, authorization_json, transaction_hash, search_from_block FROM tool_usage \
         WHERE mode = 'x402' AND status IN ('settling', 'settlement_pending') AND deadline_ms < $1 \
         ORDER BY deadline_ms LIMIT $2",
        now,
        limit
    )
}

/// An x402 call as its payer's repeated request sees it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PaidCall {
    pub usage_id: String,
    pub product_slug: String,
    pub action_slug: String,
    pub status: String,
    pub price_credits: i64,
    pub network: Option<String>,
    pub token: Option<String>,
    pub authorization_json: Option<String>,
    pub transaction_hash: Option<String>,
    pub search_from_block: Option<i64>,
    pub response_json: Option<String>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
}

impl PaidCall {
    /// The open-settlement view of this call.
    pub fn open(&self) -> OpenSettlement {
        OpenSettlement {
            usage_id: self.usage_id.clone(),
            price_credits: self.price_credits,
            network: self.network.clone(),
            token: self.token.clone(),
            authorization_json: self.authorization_json.clone(),
            transaction_hash: self.transaction_hash.clone(),
            search_from_block: self.search_from_block,
        }
    }
}

/// The x402 call `usage_id`.
pub async fn paid_call(
    conn: &mut impl AsConn,
    usage_id: &str,
) -> Result<Option<PaidCall>, sqlx::Error> {
    sql_fetch_optional!(
        conn.conn(),
        PaidCall,
        "SELECT usage_id, product_slug, action_slug, status, price_credits, network, token, authorization_json, \
         transaction_hash, search_from_block, response_json, error_code, error_message FROM tool_usage \
         WHERE usage_id = $1 AND mode = 'x402'",
        usage_id
    )
}

/// Keeps (or, with `None`, drops) the output of an x402 call whose settlement is open.
pub async fn store_response(
    conn: &mut impl AsConn,
    usage_id: &str,
    response: Option<&str>,
) -> Result<(), sqlx::Error> {
    sql_execute!(
        conn.conn(),
        "UPDATE tool_usage SET response_json = $2 WHERE usage_id = $1",
        usage_id,
        response
    )?;
    Ok(())
}

/// How long the output of a paid x402 call stays fetchable (by repeating the request with the
/// same payment) after its payment became final.
pub const RESPONSE_RETENTION_MS: i64 = 24 * 3600 * 1000;

/// Drops kept outputs of x402 calls that became final before `before_ms`; returns how many.
pub async fn prune_responses(db: &Db, before_ms: i64) -> ApiResult<u64> {
    Ok(sql_execute!(
        db.write().await?.conn(),
        "UPDATE tool_usage SET response_json = NULL WHERE response_json IS NOT NULL \
         AND status IN ('succeeded', 'settlement_failed', 'failed') AND finished_at_ms < $1",
        before_ms
    )?)
}

/// Takes the lease of an open settlement; false when another request or instance holds it.
pub async fn take_settlement(
    conn: &mut impl AsConn,
    usage_id: &str,
    now: i64,
    until: i64,
    owner: Option<&str>,
) -> Result<bool, sqlx::Error> {
    let n = sql_execute!(
        conn.conn(),
        "UPDATE tool_usage SET deadline_ms = $3, owner_instance = $4 WHERE usage_id = $1 AND mode = 'x402' \
         AND status IN ('settling', 'settlement_pending') AND deadline_ms < $2",
        usage_id,
        now,
        until,
        owner
    )?;
    Ok(n == 1)
}

/// Records an x402 call's settlement.
pub async fn record_settlement(
    conn: &mut impl AsConn,
    usage_id: &str,
    status: &str,
    transaction: Option<&str>,
    error: Option<(&str, &str)>,
) -> Result<(), sqlx::Error> {
    sql_execute!(
        conn.conn(),
        "UPDATE tool_usage SET status = $2, transaction_hash = $3, error_code = $4, error_message = $5, finished_at_ms = $6 \
         WHERE usage_id = $1",
        usage_id,
        status,
        transaction,
        error.map(|e| e.0),
        error.map(|e| e.1),
        now_ms()
    )?;
    Ok(())
}

/// Ends the leases of calls (running, or settling their x402 payment) held by instances
/// that are no longer alive (see [`crate::instances`]): [`sweep_stale`] releases their
/// holds and the tool-payment reconciler takes their settlements. Returns how many.
pub async fn expire_orphaned(
    conn: &mut impl AsConn,
    me: &str,
    alive_after: i64,
) -> Result<u64, sqlx::Error> {
    let sql = format!(
        "UPDATE tool_usage SET deadline_ms = 0 WHERE status IN ('running', 'settling', 'settlement_pending') \
         AND deadline_ms > 0 AND {}",
        crate::instances::orphaned("tool_usage", "$1", "$2")
    );
    sql_execute!(conn.conn(), &sql, me, alive_after)
}

/// Finishes calls left running past their deadline (a crashed or stopped process):
/// releases their holds, gives x402 authorizations back. Returns how many.
pub async fn sweep_stale(db: &Db) -> ApiResult<usize> {
    #[derive(sqlx::FromRow)]
    struct Stale {
        usage_id: String,
        mode: String,
    }
    let stale = sql_fetch_all!(
        db.read().await?.conn(),
        Stale,
        "SELECT usage_id, mode FROM tool_usage WHERE status = 'running' AND deadline_ms < $1 LIMIT 100",
        now_ms()
    )?;
    for s in &stale {
        let mut tx = db.begin().await?;
        if s.mode != "x402" {
            release_in(
                &mut tx,
                &s.usage_id,
                "interrupted",
                "the call did not finish before its deadline",
            )
            .await?;
        } else {
            finish(
                &mut tx,
                &s.usage_id,
                status::FAILED,
                Some("interrupted"),
                Some("the call did not finish before its deadline"),
            )
            .await?;
            crate::payments::store::release_authorization(&mut tx, &s.usage_id).await?;
        }
        tx.commit().await?;
    }
    Ok(stale.len())
}

/// Usage totals grouped by `product`, `action` or `wallet`, since `since_ms`.
pub async fn report(
    conn: &mut impl AsConn,
    group_by: &str,
    since_ms: i64,
) -> ApiResult<Vec<UsageRow>> {
    let key = match group_by {
        "product" => "product_slug",
        "action" => "product_slug || '/' || action_slug",
        "wallet" => "COALESCE(wallet_address, payer_address)",
        "api_key" => "api_key_id",
        "budget" => "budget_id",
        _ => {
            return Err(ApiError::invalid_field(
                &["query", "group_by"],
                "value_error",
                "group_by is product, action, wallet, api_key or budget",
            ))
        }
    };
    let sql = format!(
        "SELECT {key} AS key, COUNT(*) AS calls, \
         CAST(SUM(CASE WHEN status = 'succeeded' THEN 1 ELSE 0 END) AS BIGINT) AS succeeded, \
         CAST(SUM(CASE WHEN status IN ('failed', 'settlement_failed') THEN 1 ELSE 0 END) AS BIGINT) AS failed, \
         CAST(COALESCE(SUM(charged_credits), 0) AS BIGINT) AS charged_credits, \
         CAST(SUM(CASE WHEN mode = 'x402' THEN 1 ELSE 0 END) AS BIGINT) AS x402_calls \
         FROM tool_usage WHERE created_at_ms >= $1 GROUP BY {key} ORDER BY calls DESC, key LIMIT 1000"
    );
    #[derive(sqlx::FromRow)]
    struct Row {
        key: Option<String>,
        calls: i64,
        succeeded: i64,
        failed: i64,
        charged_credits: i64,
        x402_calls: i64,
    }
    let rows = sql_fetch_all!(conn.conn(), Row, &sql, since_ms)?;
    Ok(rows
        .into_iter()
        .map(|r| UsageRow {
            key: r.key.unwrap_or_default(),
            calls: r.calls,
            succeeded: r.succeeded,
            failed: r.failed,
            charged_credits: r.charged_credits,
            x402_calls: r.x402_calls,
        })
        .collect())
}

#[derive(Debug, sqlx::FromRow)]
struct RecordRow {
    usage_id: String,
    product_slug: String,
    action_slug: String,
    mode: String,
    wallet_address: Option<String>,
    payer_address: Option<String>,
    price_credits: i64,
    charged_credits: i64,
    status: String,
    error_code: Option<String>,
    workflow_session_id: Option<String>,
    transaction_hash: Option<String>,
    api_key_id: Option<String>,
    budget_id: Option<String>,
    created_at_ms: i64,
    finished_at_ms: Option<i64>,
}

/// Filters of [`records`] (each `None`: any).
#[derive(Debug, Clone, Copy, Default)]
pub struct RecordFilter<'a> {
    pub product: Option<&'a str>,
    pub wallet: Option<&'a str>,
    pub api_key_id: Option<&'a str>,
    pub budget_id: Option<&'a str>,
}

/// The newest usage records, optionally of one product slug, wallet, API key and/or budget.
pub async fn records(
    conn: &mut impl AsConn,
    filter: RecordFilter<'_>,
    limit: i64,
) -> Result<Vec<UsageRecordView>, sqlx::Error> {
    let rows = sql_fetch_all!(
        conn.conn(),
        RecordRow,
        "SELECT usage_id, product_slug, action_slug, mode, wallet_address, payer_address, price_credits, charged_credits, \
         status, error_code, workflow_session_id, transaction_hash, api_key_id, budget_id, created_at_ms, finished_at_ms FROM tool_usage \
         WHERE ($1 = '' OR product_slug = $1) AND ($2 = '' OR wallet_address = $2 OR payer_address = $2) \
         AND ($4 = '' OR api_key_id = $4) AND ($5 = '' OR budget_id = $5) \
         ORDER BY created_at_ms DESC, usage_id DESC LIMIT $3",
        filter.product.unwrap_or(""),
        filter.wallet.unwrap_or(""),
        limit,
        filter.api_key_id.unwrap_or(""),
        filter.budget_id.unwrap_or("")
    )?;
    Ok(rows
        .into_iter()
        .map(|r| UsageRecordView {
            usage_id: r.usage_id,
            product_slug: r.product_slug,
            action_slug: r.action_slug,
            mode: r.mode,
            wallet_address: r.wallet_address,
            payer_address: r.payer_address,
            price_credits: r.price_credits,
            charged_credits: r.charged_credits,
            status: r.status,
            error_code: r.error_code,
            workflow_session_id: r.workflow_session_id,
            transaction_hash: r.transaction_hash,
            api_key_id: r.api_key_id,
            budget_id: r.budget_id,
            created_at: rfc3339_ms(r.created_at_ms),
            finished_at: r.finished_at_ms.map(rfc3339_ms),
        })
        .collect())
}

/// Count of usage records with `status` (tests and metrics).
pub async fn count_with_status(conn: &mut impl AsConn, status: &str) -> Result<i64, sqlx::Error> {
    Ok(sql_scalar_optional!(
        conn.conn(),
        i64,
        "SELECT COUNT(*) FROM tool_usage WHERE status = $1",
        status
    )?
    .unwrap_or(0))
}
