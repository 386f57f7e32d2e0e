//! The credit ledger: an append-only table of entries (unique id, wallet, signed amount,
//! kind, reference) and a per-wallet balance kept equal to the sum of its entries.
//!
//! Every balance change goes through [`post`], inside the caller's transaction: it moves
//! the balance with one conditional statement (a debit applies only while the balance
//! covers it, and `CHECK (balance_credits >= 0)` backs that up) and appends the entry with
//! the resulting balance. The entry id is the idempotency key of the change: posting the
//! same id twice fails with [`LedgerError::DuplicateEntry`] and the transaction rolls back.

use crate::db::macros::{sql_execute, sql_fetch_all, sql_fetch_optional, sql_scalar_optional};
use crate::db::{is_unique_violation, AsConn};
use crate::time::{now_ms, rfc3339_ms};
use agentpmt_protocol::wire::LedgerEntryView;
use agentpmt_protocol::WalletAddress;

/// Entry kinds written by this version.
pub mod kind {
    /// An operator's grant or removal through the admin API.
    pub const ADMIN_ADJUSTMENT: &str = "admin_adjustment";
    /// Credits bought with an x402 payment or an on-chain transfer.
    pub const CREDIT_PURCHASE: &str = "credit_purchase";
}

/// A change to post.
#[derive(Debug, Clone)]
pub struct NewEntry<'a> {
    /// Unique id; doubles as the idempotency key of the change.
    pub entry_id: &'a str,
    pub wallet: &'a WalletAddress,
    /// Positive credits in, negative out; never zero.
    pub amount_credits: i64,
    pub kind: &'a str,
    pub reference: Option<&'a str>,
    pub reason: Option<&'a str>,
    /// Digest of the request that caused the entry (to tell a retry from a different request).
    pub fingerprint: Option<&'a str>,
}

/// A stored entry.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Entry {
    pub entry_id: String,
    pub wallet_address: String,
    pub amount_credits: i64,
    pub kind: String,
    pub reference: Option<String>,
    pub reason: Option<String>,
    pub fingerprint: Option<String>,
    pub balance_after: i64,
    pub created_at_ms: i64,
}

impl Entry {
    /// The operator API's view.
    pub fn view(&self) -> LedgerEntryView {
        LedgerEntryView {
            entry_id: self.entry_id.clone(),
            wallet_address: self.wallet_address.clone(),
            amount_credits: self.amount_credits,
            kind: self.kind.clone(),
            reference: self.reference.clone(),
            reason: self.reason.clone(),
            balance_after: self.balance_after,
            created_at: rfc3339_ms(self.created_at_ms),
        }
    }
}

/// Why a change was not posted.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("insufficient credits: balance {balance}, change {requested}")]
    Insufficient { balance: i64, requested: i64 },
    #[error("an entry with this id already exists")]
    DuplicateEntry,
    #[error("a ledger entry amount must not be zero")]
    ZeroAmount,
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

const ENTRY_COLUMNS: &str =
    "entry_id, wallet_address, amount_credits, kind, reference, reason, fingerprint, balance_after, created_at_ms";

/// Posts one entry and moves the balance, in the caller's transaction.
pub async fn post(tx: &mut impl AsConn, entry: NewEntry<'_>) -> Result<Entry, LedgerError> {
    if entry.amount_credits == 0 {
        return Err(LedgerError::ZeroAmount);
    }
    let now = now_ms();
    let wallet = entry.wallet.to_string();
    let balance_after = if entry.amount_credits > 0 {
        sql_scalar_optional!(
            tx.conn(),
            i64,
            "INSERT INTO wallets (address, balance_credits, created_at_ms, updated_at_ms) VALUES ($1, $2, $3, $3) \
             ON CONFLICT (address) DO UPDATE SET balance_credits = wallets.balance_credits + excluded.balance_credits, \
             updated_at_ms = excluded.updated_at_ms RETURNING balance_credits",
            &wallet,
            entry.amount_credits,
            now
        )?
    } else {
        sql_scalar_optional!(
            tx.conn(),
            i64,
            "UPDATE wallets SET balance_credits = balance_credits + $1, updated_at_ms = $2 \
             WHERE address = $3 AND balance_credits + $1 >= 0 RETURNING balance_credits",
            entry.amount_credits,
            now,
            &wallet
        )?
    };
    let Some(balance_after) = balance_after else {
        return Err(LedgerError::Insufficient {
            balance: balance(tx, entry.wallet).await?,
            requested: entry.amount_credits,
        });
    };
    let inserted = sql_execute!(
        tx.conn(),
        "INSERT INTO ledger_entries (entry_id, wallet_address, amount_credits, kind, reference, reason, fingerprint, balance_after, created_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        entry.entry_id,
        &wallet,
        entry.amount_credits,
        entry.kind,
        entry.reference,
        entry.reason,
        entry.fingerprint,
        balance_after,
        now
    );
    match inserted {
        Ok(_) => {}
        Err(e) if is_unique_violation(&e) => return Err(LedgerError::DuplicateEntry),
        Err(e) => return Err(e.into()),
    }
    Ok(Entry {
        entry_id: entry.entry_id.to_owned(),
        wallet_address: wallet,
        amount_credits: entry.amount_credits,
        kind: entry.kind.to_owned(),
        reference: entry.reference.map(str::to_owned),
        reason: entry.reason.map(str::to_owned),
        fingerprint: entry.fingerprint.map(str::to_owned),
        balance_after,
        created_at_ms: now,
    })
}

/// The wallet's balance (0 for a wallet never seen).
pub async fn balance(conn: &mut impl AsConn, wallet: &WalletAddress) -> Result<i64, sqlx::Error> {
    let found = sql_scalar_optional!(
        conn.conn(),
        i64,
        "SELECT balance_credits FROM wallets WHERE address = $1",
        wallet.to_string()
    )?;
    Ok(found.unwrap_or(0))
}

/// One entry by id.
pub async fn entry(conn: &mut impl AsConn, entry_id: &str) -> Result<Option<Entry>, sqlx::Error> {
    let sql = format!("SELECT {ENTRY_COLUMNS} FROM ledger_entries WHERE entry_id = $1");
    sql_fetch_optional!(conn.conn(), Entry, &sql, entry_id)
}

/// The newest `limit` entries of a wallet, newest first.
pub async fn recent_entries(
    conn: &mut impl AsConn,
    wallet: &WalletAddress,
    limit: i64,
) -> Result<Vec<Entry>, sqlx::Error> {
    entries_page(conn, wallet, limit, 0).await
}

/// A page of a wallet's entries, newest first: `limit` entries after skipping `offset`.
pub async fn entries_page(
    conn: &mut impl AsConn,
    wallet: &WalletAddress,
    limit: i64,
    offset: i64,
) -> Result<Vec<Entry>, sqlx::Error> {
    let sql = format!(
        "SELECT {ENTRY_COLUMNS} FROM ledger_entries WHERE wallet_address = $1 \
         ORDER BY created_at_ms DESC, entry_id DESC LIMIT $2 OFFSET $3"
    );
    sql_fetch_all!(conn.conn(), Entry, &sql, wallet.to_string(), limit, offset)
}

/// Sum and count of a wallet's entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct EntryTotals {
    pub sum_credits: i64,
    pub entry_count: i64,
}

/// Sum and count of a wallet's entries (the sum always equals the balance).
pub async fn totals(
    conn: &mut impl AsConn,
    wallet: &WalletAddress,
) -> Result<EntryTotals, sqlx::Error> {
    let found = sql_fetch_optional!(
        conn.conn(),
        EntryTotals,
        "SELECT CAST(COALESCE(SUM(amount_credits), 0) AS BIGINT) AS sum_credits, COUNT(*) AS entry_count \
         FROM ledger_entries WHERE wallet_address = $1",
        wallet.to_string()
    )?;
    Ok(found.unwrap_or(EntryTotals {
        sum_credits: 0,
        entry_count: 0,
    }))
}
