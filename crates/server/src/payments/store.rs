//! Storage of credit purchases, payment-authorization claims and transfer claims.

use crate::db::macros::{sql_execute, sql_fetch_all, sql_fetch_optional};
use crate::db::{is_unique_violation, AsConn};
use crate::ledger::{self, LedgerError, NewEntry};
use crate::time::now_ms;
use agentpmt_protocol::WalletAddress;

/// Purchase states.
pub mod status {
    pub const PENDING: &str = "pending";
    pub const BROADCAST: &str = "broadcast";
    pub const SETTLED: &str = "settled";
    pub const FAILED: &str = "failed";
}

/// A stored purchase.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PurchaseRow {
    pub purchase_id: String,
    pub wallet_address: String,
    pub request_id: Option<String>,
    pub fingerprint: String,
    pub method: String,
    pub settlement: String,
    pub chain_id: i64,
    pub token: String,
    pub asset: String,
    pub pay_to: String,
    pub payer_address: String,
    pub credits: i64,
    pub amount_base_units: String,
    pub authorization_json: Option<String>,
    pub auth_nonce: Option<String>,
    pub transaction_hash: Option<String>,
    pub status: String,
    pub lease_until_ms: i64,
    pub error_reason: Option<String>,
    pub error_message: Option<String>,
    pub created_at_ms: i64,
    pub email: Option<String>,
    /// x402: the block the authorization was seen unused at (its use is searched from here).
    pub search_from_block: Option<i64>,
    /// The instance holding the lease (see [`crate::instances`]).
    pub owner_instance: Option<String>,
}

impl PurchaseRow {
    /// The ledger entry id of this purchase's grant: derived from the payment itself, so one
    /// payment can grant credits once.
    pub fn entry_id(&self) -> String {
        match &self.auth_nonce {
            Some(nonce) => format!(
                "x402:{}:{}:{}:{}",
                self.chain_id, self.asset, self.payer_address, nonce
            ),
            None => format!(
                "transfer:{}:{}",
                self.chain_id,
                self.transaction_hash
                    .as_deref()
                    .unwrap_or(&self.purchase_id)
            ),
        }
    }
}

const COLUMNS: &str = "purchase_id, wallet_address, request_id, fingerprint, method, settlement, chain_id, token, asset, pay_to, payer_address, credits, amount_base_units, authorization_json, auth_nonce, transaction_hash, status, lease_until_ms, error_reason, error_message, created_at_ms, email, search_from_block, owner_instance";

/// Why a purchase could not be claimed.
#[derive(Debug)]
pub enum ClaimConflict {
    /// Another purchase of this wallet holds the request id.
    RequestId,
    /// The authorization or transfer already belongs to a purchase.
    Payment {
        purchase_id: String,
        status: String,
    },
    Db(sqlx::Error),
}

impl From<sqlx::Error> for ClaimConflict {
    fn from(e: sqlx::Error) -> Self {
        ClaimConflict::Db(e)
    }
}

/// Inserts `row` and claims its payment (authorization or transfer), in `tx`.
pub async fn insert_claimed(tx: &mut impl AsConn, row: &PurchaseRow) -> Result<(), ClaimConflict> {
    let sql = format!(
        "INSERT INTO credit_purchases ({COLUMNS}, updated_at_ms) VALUES \
         ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $21) \
         ON CONFLICT DO NOTHING"
    );
    let inserted = sql_execute!(
        tx.conn(),
        &sql,
        &row.purchase_id,
        &row.wallet_address,
        &row.request_id,
        &row.fingerprint,
        &row.method,
        &row.settlement,
        row.chain_id,
        &row.token,
        &row.asset,
        &row.pay_to,
        &row.payer_address,
        row.credits,
        &row.amount_base_units,
        &row.authorization_json,
        &row.auth_nonce,
        &row.transaction_hash,
        &row.status,
        row.lease_until_ms,
        &row.error_reason,
        &row.error_message,
        row.created_at_ms,
        &row.email,
        row.search_from_block,
        &row.owner_instance
    )?;
    if inserted == 0 {
        return Err(ClaimConflict::RequestId);
    }
    if let Some(nonce) = &row.auth_nonce {
        let claimed = claim_authorization(
            tx,
            row.chain_id,
            &row.asset,
            &row.payer_address,
            nonce,
            &row.purchase_id,
            row.created_at_ms,
        )
        .await?;
        if !claimed {
            let (purchase_id, status) =
                authorization_holder(tx, row.chain_id, &row.asset, &row.payer_address, nonce)
                    .await?
                    .unwrap_or_default();
            return Err(ClaimConflict::Payment {
                purchase_id,
                status,
            });
        }
    }
    if row.method == "transfer" {
        let hash = row.transaction_hash.as_deref().unwrap_or_default();
        let result = sql_execute!(
            tx.conn(),
            "INSERT INTO payment_transfers (chain_id, transaction_hash, purchase_id) VALUES ($1, $2, $3)",
            row.chain_id,
            hash,
            &row.purchase_id
        );
        match result {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {
                let holder = find_by_transfer(tx, row.chain_id, hash).await?;
                return Err(ClaimConflict::Payment {
                    purchase_id: holder
                        .as_ref()
                        .map(|h| h.purchase_id.clone())
                        .unwrap_or_default(),
                    status: holder.map(|h| h.status).unwrap_or_default(),
                });
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Claims the EIP-3009 authorization `(chain, asset, payer, nonce)` for `holder` (a purchase
/// or a tool call's usage record): a new claim, or one whose earlier holder failed. False
/// when an active or settled claim holds it.
pub async fn claim_authorization(
    conn: &mut impl AsConn,
    chain_id: i64,
    asset: &str,
    payer: &str,
    nonce: &str,
    holder: &str,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let claimed = crate::db::macros::sql_scalar_optional!(
        conn.conn(),
        String,
        "INSERT INTO payment_authorizations (chain_id, asset, payer_address, auth_nonce, purchase_id, status, updated_at_ms) \
         VALUES ($1, $2, $3, $4, $5, 'active', $6) \
         ON CONFLICT (chain_id, asset, payer_address, auth_nonce) DO UPDATE SET \
         purchase_id = excluded.purchase_id, status = 'active', updated_at_ms = excluded.updated_at_ms \
         WHERE payment_authorizations.status = 'failed' RETURNING purchase_id",
        chain_id,
        asset,
        payer,
        nonce,
        holder,
        now
    )?;
    Ok(claimed.is_some())
}

/// Marks `holder`'s authorization claim settled (used on chain).
pub async fn settle_authorization(conn: &mut impl AsConn, holder: &str) -> Result<(), sqlx::Error> {
    sql_execute!(
        conn.conn(),
        "UPDATE payment_authorizations SET status = 'settled', updated_at_ms = $2 WHERE purchase_id = $1",
        holder,
        now_ms()
    )?;
    Ok(())
}

/// Gives `holder`'s active authorization claim back (it will not settle): the payer may use
/// the authorization again.
pub async fn release_authorization(
    conn: &mut impl AsConn,
    holder: &str,
) -> Result<(), sqlx::Error> {
    sql_execute!(
        conn.conn(),
        "UPDATE payment_authorizations SET status = 'failed', updated_at_ms = $2 \
         WHERE purchase_id = $1 AND status = 'active'",
        holder,
        now_ms()
    )?;
    Ok(())
}

/// The purchase holding an authorization, and the claim's status, if it was ever claimed.
pub async fn authorization_holder(
    conn: &mut impl AsConn,
    chain_id: i64,
    asset: &str,
    payer: &str,
    nonce: &str,
) -> Result<Option<(String, String)>, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Holder {
        purchase_id: String,
        status: String,
    }
    let holder = sql_fetch_optional!(
        conn.conn(),
        Holder,
        "SELECT purchase_id, status FROM payment_authorizations \
         WHERE chain_id = $1 AND asset = $2 AND payer_address = $3 AND auth_nonce = $4",
        chain_id,
        asset,
        payer,
        nonce
    )?;
    Ok(holder.map(|h| (h.purchase_id, h.status)))
}

/// The purchase `id`.
pub async fn find(conn: &mut impl AsConn, id: &str) -> Result<Option<PurchaseRow>, sqlx::Error> {
    let sql = format!("SELECT {COLUMNS} FROM credit_purchases WHERE purchase_id = $1");
    sql_fetch_optional!(conn.conn(), PurchaseRow, &sql, id)
}

/// The purchase of `wallet` with idempotency key `request_id`.
pub async fn find_by_request(
    conn: &mut impl AsConn,
    wallet: &str,
    request_id: &str,
) -> Result<Option<PurchaseRow>, sqlx::Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM credit_purchases WHERE wallet_address = $1 AND request_id = $2"
    );
    sql_fetch_optional!(conn.conn(), PurchaseRow, &sql, wallet, request_id)
}

/// The purchase paid by transfer `hash` on `chain_id`.
pub async fn find_by_transfer(
    conn: &mut impl AsConn,
    chain_id: i64,
    hash: &str,
) -> Result<Option<PurchaseRow>, sqlx::Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM credit_purchases WHERE purchase_id = \
         (SELECT purchase_id FROM payment_transfers WHERE chain_id = $1 AND transaction_hash = $2)"
    );
    sql_fetch_optional!(conn.conn(), PurchaseRow, &sql, chain_id, hash)
}

/// Purchases whose outcome is open and whose lease expired (for reconciliation).
pub async fn open_purchases(
    conn: &mut impl AsConn,
    now: i64,
    limit: i64,
) -> Result<Vec<PurchaseRow>, sqlx::Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM credit_purchases WHERE status IN ('pending', 'broadcast') \
         AND lease_until_ms < $1 ORDER BY created_at_ms LIMIT $2"
    );
    sql_fetch_all!(conn.conn(), PurchaseRow, &sql, now, limit)
}

/// Takes over an open purchase whose lease expired; true when this caller now holds it.
pub async fn take_lease(
    conn: &mut impl AsConn,
    id: &str,
    until_ms: i64,
    owner: Option<&str>,
) -> Result<bool, sqlx::Error> {
    let n = sql_execute!(
        conn.conn(),
        "UPDATE credit_purchases SET lease_until_ms = $2, updated_at_ms = $3, owner_instance = $4 \
         WHERE purchase_id = $1 AND status IN ('pending', 'broadcast') AND lease_until_ms < $3",
        id,
        until_ms,
        now_ms(),
        owner
    )?;
    Ok(n == 1)
}

/// Gives up the lease (a fault-injection hook simulates a crash with it).
pub async fn drop_lease(conn: &mut impl AsConn, id: &str) -> Result<(), sqlx::Error> {
    sql_execute!(
        conn.conn(),
        "UPDATE credit_purchases SET lease_until_ms = 0 WHERE purchase_id = $1",
        id
    )?;
    Ok(())
}

/// Records the broadcast transaction of a pending purchase.
pub async fn record_broadcast(
    conn: &mut impl AsConn,
    id: &str,
    tx_hash: &str,
) -> Result<(), sqlx::Error> {
    sql_execute!(
        conn.conn(),
        "UPDATE credit_purchases SET status = 'broadcast', transaction_hash = $2, updated_at_ms = $3 \
         WHERE purchase_id = $1 AND status IN ('pending', 'broadcast')",
        id,
        tx_hash,
        now_ms()
    )?;
    Ok(())
}

/// How [`finalize_settled`] ended.
#[derive(Debug)]
pub enum Finalized {
    /// Credits granted now; the balance right after.
    Granted(i64),
    /// Another request finalized it first; the wallet's balance.
    AlreadyFinal(i64),
    /// The on-chain payment already pays for something else (its claim): nothing granted.
    ClaimedElsewhere(super::claims::ClaimRow),
}

/// Marks an open purchase settled by the on-chain payment `paid`, claims that payment and
/// grants the credits, all in `tx`, once. When the payment is already claimed by something
/// else, nothing is written (the caller rolls back and refuses).
pub async fn finalize_settled(
    tx: &mut impl AsConn,
    row: &PurchaseRow,
    paid: &super::settle::Paid,
) -> Result<Finalized, LedgerError> {
    let now = now_ms();
    let wallet: WalletAddress = row.wallet_address.parse().map_err(|_| {
        LedgerError::Db(sqlx::Error::Protocol(
            "stored wallet address is invalid".into(),
        ))
    })?;
    let updated = sql_execute!(
        tx.conn(),
        "UPDATE credit_purchases SET status = 'settled', transaction_hash = $2, error_reason = NULL, \
         error_message = NULL, lease_until_ms = 0, updated_at_ms = $3 \
         WHERE purchase_id = $1 AND status IN ('pending', 'broadcast')",
        &row.purchase_id,
        &paid.transaction,
        now
    )?;
    if updated == 0 {
        return Ok(Finalized::AlreadyFinal(ledger::balance(tx, &wallet).await?));
    }
    let claim = super::claims::NewClaim {
        chain_id: row.chain_id,
        paid,
        kind: super::claims::kind::PURCHASE,
        holder_id: &row.purchase_id,
        asset: &row.asset,
        payer: &row.payer_address,
        pay_to: &row.pay_to,
        amount_base_units: &row.amount_base_units,
    };
    if let Some(other) = super::claims::claim(tx, &claim).await? {
        return Ok(Finalized::ClaimedElsewhere(other));
    }
    settle_authorization(tx, &row.purchase_id).await?;
    let mut settled = row.clone();
    settled.transaction_hash = Some(paid.transaction.clone());
    let entry_id = settled.entry_id();
    let reason = format!(
        "{} credits bought with {} on eip155:{} (transaction {}, log {})",
        row.credits, row.token, row.chain_id, paid.transaction, paid.log_index
    );
    match ledger::post(
        tx,
        NewEntry {
            entry_id: &entry_id,
            wallet: &wallet,
            amount_credits: row.credits,
            kind: ledger::kind::CREDIT_PURCHASE,
            reference: Some(&row.purchase_id),
            reason: Some(&reason),
            fingerprint: Some(&row.fingerprint),
        },
    )
    .await
    {
        Ok(entry) => Ok(Finalized::Granted(entry.balance_after)),
        // The payment was already granted (cannot happen through the claims; kept exact).
        Err(LedgerError::DuplicateEntry) => {
            Ok(Finalized::AlreadyFinal(ledger::balance(tx, &wallet).await?))
        }
        Err(e) => Err(e),
    }
}

/// Marks an open purchase failed and gives its authorization back.
pub async fn mark_failed(
    conn: &mut impl AsConn,
    id: &str,
    reason: &str,
    message: &str,
) -> Result<(), sqlx::Error> {
    let now = now_ms();
    sql_execute!(
        conn.conn(),
        "UPDATE credit_purchases SET status = 'failed', error_reason = $2, error_message = $3, \
         lease_until_ms = 0, updated_at_ms = $4 WHERE purchase_id = $1 AND status IN ('pending', 'broadcast')",
        id,
        reason,
        message,
        now
    )?;
    release_authorization(conn, id).await
}

/// The balance right after this purchase's grant.
pub async fn granted_balance(
    conn: &mut impl AsConn,
    row: &PurchaseRow,
) -> Result<Option<i64>, sqlx::Error> {
    Ok(ledger::entry(conn, &row.entry_id())
        .await?
        .map(|e| e.balance_after))
}

/// Ends the leases of open purchases held by instances that are no longer alive (see
/// [`crate::instances`]): the reconciler takes them at once. Returns how many.
pub async fn expire_orphaned(
    conn: &mut impl AsConn,
    me: &str,
    alive_after: i64,
) -> Result<u64, sqlx::Error> {
    let sql = format!(
        "UPDATE credit_purchases SET lease_until_ms = 0 WHERE status IN ('pending', 'broadcast') \
         AND lease_until_ms > 0 AND {}",
        crate::instances::orphaned("credit_purchases", "$1", "$2")
    );
    sql_execute!(conn.conn(), &sql, me, alive_after)
}
