//! Session nonces and replay records.
//!
//! A session nonce is 256 bits from the operating system's randomness, hex-encoded, bound
//! to one wallet, valid for the configured lifetime (900 s by default). Sessions never
//! change once written, so positive lookups are cached in memory (safe with several
//! server instances on one database). Replay records — one per accepted (session,
//! request_id) — are pruned only together with their session, a day after it expired.

use crate::db::macros::{sql_execute, sql_fetch_optional};
use crate::db::Db;
use crate::time::now_ms;
use agentpmt_protocol::WalletAddress;
use moka::sync::Cache;
use std::time::Duration;

/// A session as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SessionRecord {
    pub nonce: String,
    pub wallet_address: String,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
}

/// How long expired sessions are kept, so that late clients hear "expired" rather than
/// "invalid".
const EXPIRED_RETENTION_MS: i64 = 24 * 3600 * 1000;
/// How long after its session expired a replay record is kept (instances' clocks may
/// differ a little on when a session stops being accepted).
pub const REPLAY_GRACE_MS: i64 = 5 * 60 * 1000;

/// Creates, finds and prunes sessions.
#[derive(Debug, Clone)]
pub struct SessionStore {
    ttl_ms: i64,
    cache: Cache<String, SessionRecord>,
}

impl SessionStore {
    /// A store issuing sessions valid for `ttl`.
    pub fn new(ttl: Duration, cache_capacity: u64) -> Self {
        SessionStore {
            ttl_ms: ttl.as_millis() as i64,
            cache: Cache::builder()
                .max_capacity(cache_capacity)
                .time_to_live(ttl)
                .build(),
        }
    }

    /// The session lifetime in seconds.
    pub fn ttl_secs(&self) -> u64 {
        (self.ttl_ms / 1000) as u64
    }

    /// Issues a fresh nonce for `wallet`.
    pub async fn create(
        &self,
        db: &Db,
        wallet: &WalletAddress,
    ) -> Result<SessionRecord, sqlx::Error> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)
            .map_err(|e| sqlx::Error::Protocol(format!("randomness: {e}")))?;
        let now = now_ms();
        let record = SessionRecord {
            nonce: hex::encode(bytes),
            wallet_address: wallet.to_string(),
            created_at_ms: now,
            expires_at_ms: now + self.ttl_ms,
        };
        // One autocommit statement: no transaction round trips for a single insert.
        let mut conn = db.write().await?;
        sql_execute!(
            conn.conn(),
            "INSERT INTO auth_sessions (nonce, wallet_address, created_at_ms, expires_at_ms) VALUES ($1, $2, $3, $4)",
            &record.nonce,
            &record.wallet_address,
            record.created_at_ms,
            record.expires_at_ms
        )?;
        self.cache.insert(record.nonce.clone(), record.clone());
        Ok(record)
    }

    /// Finds a session by nonce (cache first).
    pub async fn find(&self, db: &Db, nonce: &str) -> Result<Option<SessionRecord>, sqlx::Error> {
        if let Some(hit) = self.cache.get(nonce) {
            return Ok(Some(hit));
        }
        let mut conn = db.read().await?;
        let found = sql_fetch_optional!(
            conn.conn(),
            SessionRecord,
            "SELECT nonce, wallet_address, created_at_ms, expires_at_ms FROM auth_sessions WHERE nonce = $1",
            nonce
        )?;
        if let Some(record) = &found {
            if record.expires_at_ms > now_ms() {
                self.cache.insert(record.nonce.clone(), record.clone());
            }
        }
        Ok(found)
    }

    /// Deletes the replay records of sessions that can no longer be used (expired more than
    /// [`REPLAY_GRACE_MS`] ago: a request signed with an expired session is refused before
    /// its replay record is looked at), and sessions that expired more than a day ago, in
    /// one transaction. Returns the number of sessions removed.
    pub async fn prune(&self, db: &Db) -> Result<u64, sqlx::Error> {
        let now = now_ms();
        let cutoff = now - EXPIRED_RETENTION_MS;
        let mut tx = db.begin().await?;
        sql_execute!(
            tx.conn(),
            "DELETE FROM request_replays WHERE session_nonce IN (SELECT nonce FROM auth_sessions WHERE expires_at_ms < $1)",
            now - REPLAY_GRACE_MS
        )?;
        let removed = sql_execute!(
            tx.conn(),
            "DELETE FROM auth_sessions WHERE expires_at_ms < $1",
            cutoff
        )?;
        tx.commit().await?;
        Ok(removed)
    }
}
