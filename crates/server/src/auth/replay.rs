//! Group commit of replay claims for read-only signed endpoints.
//!
//! A read-only endpoint (balance) has no side effect to bind its replay claim to, so the
//! claim is a statement of its own. Instead of one write round trip per request (which
//! serializes every request on SQLite's single writer connection), a background task
//! collects the claims waiting at that moment and writes them with one multi-row
//! `INSERT … ON CONFLICT DO NOTHING RETURNING`: one round trip and one commit for the batch.
//! The rows it returns are the claims that won; duplicates within a batch are resolved
//! before the insert (the first one waiting gets the database's answer, the others are
//! replays), so exactly one copy of a request ever succeeds.
//!
//! The same statement reports each claiming wallet's credit balance at that instant, so
//! read-only endpoints that show it (balance, later job status) need no second query.

use crate::db::{ConnRef, Db};
use crate::time::now_ms;
use agentpmt_protocol::{SignedAction, WalletAddress};
use std::collections::{HashMap, HashSet};
use tokio::sync::{mpsc, oneshot};

/// Largest batch (5 bound values per row; well under SQLite's and PostgreSQL's limits).
const MAX_BATCH: usize = 256;

struct Pending {
    session_nonce: String,
    request_id: String,
    wallet: String,
    action: &'static str,
    reply: oneshot::Sender<Result<Option<i64>, String>>,
}

/// Handle to the claim-batching task.
#[derive(Debug, Clone)]
pub struct ReplayClaims {
    queue: mpsc::Sender<Pending>,
}

/// Why a batched claim failed.
#[derive(Debug, thiserror::Error)]
#[error("replay claim failed: {0}")]
pub struct ClaimError(String);

impl ReplayClaims {
    /// Starts the batching task on the current runtime. It ends when every handle is dropped.
    pub fn start(db: Db) -> Self {
        let (queue, receiver) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(run(db, receiver));
        ReplayClaims { queue }
    }

    /// Claims (session, request_id) in its own committed statement. `Ok(None)`: a replay;
    /// `Ok(Some(balance))`: claimed, with the wallet's credit balance at that moment.
    pub async fn claim(
        &self,
        session_nonce: &str,
        request_id: &str,
        wallet: &WalletAddress,
        action: SignedAction,
    ) -> Result<Option<i64>, ClaimError> {
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            session_nonce: session_nonce.to_owned(),
            request_id: request_id.to_owned(),
            wallet: wallet.to_string(),
            action: action.spec().name,
            reply,
        };
        self.queue
            .send(pending)
            .await
            .map_err(|_| ClaimError("the claim writer stopped".into()))?;
        answer
            .await
            .map_err(|_| ClaimError("the claim writer stopped".into()))?
            .map_err(ClaimError)
    }
}

async fn run(db: Db, mut receiver: mpsc::Receiver<Pending>) {
    let mut batch: Vec<Pending> = Vec::with_capacity(MAX_BATCH);
    while receiver.recv_many(&mut batch, MAX_BATCH).await > 0 {
        write_batch(&db, std::mem::take(&mut batch)).await;
    }
}

async fn write_batch(db: &Db, batch: Vec<Pending>) {
    // The first claim of each key goes to the database; later copies are replays.
    let mut seen: HashSet<(&str, &str)> = HashSet::with_capacity(batch.len());
    let is_first: Vec<bool> = batch
        .iter()
        .map(|p| seen.insert((p.session_nonce.as_str(), p.request_id.as_str())))
        .collect();
    let unique: Vec<usize> = (0..batch.len()).filter(|&i| is_first[i]).collect();
    let won: Result<HashMap<(String, String), i64>, String> = insert(db, &batch, &unique)
        .await
        .map(|rows| {
            rows.into_iter()
                .map(|(n, r, balance)| ((n, r), balance))
                .collect()
        })
        .map_err(|e| e.to_string());
    for (p, first) in batch.into_iter().zip(is_first) {
        let answer = match &won {
            Err(e) => Err(e.clone()),
            Ok(_) if !first => Ok(None),
            Ok(rows) => Ok(rows.get(&(p.session_nonce, p.request_id)).copied()),
        };
        let _ = p.reply.send(answer);
    }
}

async fn insert(
    db: &Db,
    batch: &[Pending],
    rows: &[usize],
) -> Result<Vec<(String, String, i64)>, sqlx::Error> {
    let mut sql = String::with_capacity(120 + rows.len() * 32);
    sql.push_str(
        "INSERT INTO request_replays (session_nonce, request_id, wallet_address, action, created_at_ms) VALUES ",
    );
    for n in 0..rows.len() {
        let b = n * 5;
        if n > 0 {
            sql.push(',');
        }
        sql.push_str(&format!(
            "(${},${},${},${},${})",
            b + 1,
            b + 2,
            b + 3,
            b + 4,
            b + 5
        ));
    }
    sql.push_str(
        " ON CONFLICT DO NOTHING RETURNING session_nonce, request_id, \
         COALESCE((SELECT w.balance_credits FROM wallets w WHERE w.address = request_replays.wallet_address), 0)",
    );
    let now = now_ms();
    let mut conn = db.write().await?;
    macro_rules! run_on {
        ($c:expr) => {{
            let mut query = sqlx::query_as::<_, (String, String, i64)>(&sql);
            for &i in rows {
                let p = &batch[i];
                query = query
                    .bind(&p.session_nonce)
                    .bind(&p.request_id)
                    .bind(&p.wallet)
                    .bind(p.action)
                    .bind(now);
            }
            query.fetch_all(&mut *$c).await
        }};
    }
    match conn.conn() {
        ConnRef::Sqlite(c) => run_on!(c),
        ConnRef::Postgres(c) => run_on!(c),
    }
}
