//! One claim per on-chain payment: every transfer log the server counts as a payment is
//! claimed in `payment_claims`, keyed by (chain, transaction, log index), in the same
//! database transaction that grants what it pays for. Whatever path a transfer arrives by
//! (an x402 purchase, a transfer-hash purchase, a direct x402 tool payment, a facilitator
//! settlement), a second claim of the same log fails, so no transfer is credited twice.

use super::settle::Paid;
use crate::db::macros::{sql_execute, sql_fetch_all, sql_fetch_optional};
use crate::db::AsConn;
use crate::time::now_ms;

/// What a claim pays for.
pub mod kind {
    pub const PURCHASE: &str = "purchase";
    pub const TOOL_PAYMENT: &str = "tool_payment";
    pub const FACILITATOR: &str = "facilitator";
}

/// A payment about to be counted.
#[derive(Debug)]
pub struct NewClaim<'a> {
    pub chain_id: i64,
    pub paid: &'a Paid,
    pub kind: &'static str,
    pub holder_id: &'a str,
    pub asset: &'a str,
    pub payer: &'a str,
    pub pay_to: &'a str,
    pub amount_base_units: &'a str,
}

/// A stored claim.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClaimRow {
    pub chain_id: i64,
    pub transaction_hash: String,
    pub log_index: i64,
    pub kind: String,
    pub holder_id: String,
    pub asset: String,
    pub payer_address: String,
    pub pay_to: String,
    pub amount_base_units: String,
    pub block_number: i64,
    pub confirmations: i64,
    pub created_at_ms: i64,
}

const COLUMNS: &str = "chain_id, transaction_hash, log_index, kind, holder_id, asset, payer_address, pay_to, amount_base_units, block_number, confirmations, created_at_ms";

/// Claims `claim`'s transfer log for its holder, in `tx` (the transaction that grants).
/// `Ok(None)`: claimed now, or by this same holder before. `Ok(Some(other))`: the log already
/// pays for something else; the caller must not grant.
pub async fn claim(
    tx: &mut impl AsConn,
    claim: &NewClaim<'_>,
) -> Result<Option<ClaimRow>, sqlx::Error> {
    let hash = claim.paid.transaction.to_ascii_lowercase();
    let log_index = i64::try_from(claim.paid.log_index).unwrap_or(i64::MAX);
    sql_execute!(
        tx.conn(),
        "INSERT INTO payment_claims (chain_id, transaction_hash, log_index, kind, holder_id, asset, \
         payer_address, pay_to, amount_base_units, block_number, confirmations, created_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) ON CONFLICT DO NOTHING",
        claim.chain_id,
        &hash,
        log_index,
        claim.kind,
        claim.holder_id,
        &claim.asset.to_ascii_lowercase(),
        &claim.payer.to_ascii_lowercase(),
        &claim.pay_to.to_ascii_lowercase(),
        claim.amount_base_units,
        i64::try_from(claim.paid.block_number).unwrap_or(i64::MAX),
        i64::try_from(claim.paid.confirmations).unwrap_or(i64::MAX),
        now_ms()
    )?;
    let sql = format!(
        "SELECT {COLUMNS} FROM payment_claims WHERE chain_id = $1 AND transaction_hash = $2 AND log_index = $3"
    );
    let holder = sql_fetch_optional!(tx.conn(), ClaimRow, &sql, claim.chain_id, &hash, log_index)?;
    Ok(holder.filter(|h| !(h.kind == claim.kind && h.holder_id == claim.holder_id)))
}

/// The claims of transaction `hash` on `chain_id` (any of its logs).
pub async fn of_transaction(
    conn: &mut impl AsConn,
    chain_id: i64,
    hash: &str,
) -> Result<Vec<ClaimRow>, sqlx::Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM payment_claims WHERE chain_id = $1 AND transaction_hash = $2 ORDER BY log_index"
    );
    sql_fetch_all!(
        conn.conn(),
        ClaimRow,
        &sql,
        chain_id,
        &hash.to_ascii_lowercase()
    )
}

/// The claim held by (`kind`, `holder_id`).
pub async fn of_holder(
    conn: &mut impl AsConn,
    kind: &str,
    holder_id: &str,
) -> Result<Option<ClaimRow>, sqlx::Error> {
    let sql = format!("SELECT {COLUMNS} FROM payment_claims WHERE kind = $1 AND holder_id = $2");
    sql_fetch_optional!(conn.conn(), ClaimRow, &sql, kind, holder_id)
}

/// Every claim, oldest first, `limit` from `offset` (the audit pages through them).
pub async fn page(
    conn: &mut impl AsConn,
    offset: i64,
    limit: i64,
) -> Result<Vec<ClaimRow>, sqlx::Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM payment_claims ORDER BY created_at_ms, chain_id, transaction_hash, log_index LIMIT $1 OFFSET $2"
    );
    sql_fetch_all!(conn.conn(), ClaimRow, &sql, limit, offset)
}
