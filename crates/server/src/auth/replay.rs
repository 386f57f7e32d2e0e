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
//!
//! Every replay record keeps the canonical hash of the accepted body and, for requests with
//! an effect, a pointer to it (a tool call's usage record, a job reservation), written in
//! the effect's own transaction. A replay whose body is identical to the accepted one is
//! answered 409 `EXTERNAL_SIGNATURE_REQUEST_REPLAY` with `details.original` (what became of
//! the original: [`ReplayOriginal`]), so a client that lost an answer learns whether it was
//! charged; another body under a used request_id gets the plain 409.

use super::signed::Signer;
use crate::db::macros::{sql_execute, sql_fetch_optional};
use crate::db::{AsConn, ConnRef, Db};
use crate::error::{ApiError, ApiResult};
use crate::time::now_ms;
use agentpmt_protocol::wire::{ReplayOriginal, ReplayState};
use agentpmt_protocol::ErrorCode;
use std::collections::{HashMap, HashSet};
use tokio::sync::{mpsc, oneshot};

/// Largest batch (6 bound values per row; well under SQLite's and PostgreSQL's limits).
const MAX_BATCH: usize = 256;

struct Pending {
    session_nonce: String,
    request_id: String,
    wallet: String,
    action: &'static str,
    body_sha256: String,
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
    pub async fn claim(&self, signer: &Signer) -> Result<Option<i64>, ClaimError> {
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            session_nonce: signer.session_nonce.clone(),
            request_id: signer.request_id.clone(),
            wallet: signer.wallet.to_string(),
            action: signer.action.spec().name,
            body_sha256: signer.body_sha256.clone(),
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
        "INSERT INTO request_replays (session_nonce, request_id, wallet_address, action, created_at_ms, body_sha256) VALUES ",
    );
    for n in 0..rows.len() {
        let b = n * 6;
        if n > 0 {
            sql.push(',');
        }
        sql.push_str(&format!(
            "(${},${},${},${},${},${})",
            b + 1,
            b + 2,
            b + 3,
            b + 4,
            b + 5,
            b + 6
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
                    .bind(now)
                    .bind(&p.body_sha256);
            }
            query.fetch_all(&mut *$c).await
        }};
    }
    match conn.conn() {
        ConnRef::Sqlite(c) => run_on!(c),
        ConnRef::Postgres(c) => run_on!(c),
    }
}

/// What an accepted signed request made, named on its replay record.
#[derive(Debug, Clone, Copy)]
pub enum Effect<'a> {
    /// A tool call: its usage record.
    Usage(&'a str),
    /// A job reservation: its reservation id.
    Reservation(&'a str),
}

impl Effect<'_> {
    fn parts(&self) -> (&'static str, &str) {
        match self {
            Effect::Usage(id) => (outcome::USAGE, id),
            Effect::Reservation(id) => (outcome::RESERVATION, id),
        }
    }
}

/// `request_replays.outcome_kind` values.
mod outcome {
    pub const USAGE: &str = "usage";
    pub const RESERVATION: &str = "reservation";
}

/// Records `signer`'s (session, request_id) as used, with the body's hash and, when it is
/// known already, what the request makes, inside the caller's transaction. Returns false
/// when it was already used (a replay: answer it with [`replay_error`]).
pub async fn claim_request(
    conn: &mut impl AsConn,
    signer: &Signer,
    effect: Option<Effect<'_>>,
) -> Result<bool, sqlx::Error> {
    let (kind, id) = match &effect {
        Some(o) => {
            let (kind, id) = o.parts();
            (Some(kind), Some(id))
        }
        None => (None, None),
    };
    let inserted = sql_execute!(
        conn.conn(),
        "INSERT INTO request_replays (session_nonce, request_id, wallet_address, action, created_at_ms, body_sha256, outcome_kind, outcome_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
        &signer.session_nonce,
        &signer.request_id,
        signer.wallet.to_string(),
        signer.action.spec().name,
        now_ms(),
        &signer.body_sha256,
        kind,
        id
    )?;
    Ok(inserted == 1)
}

/// Names what `signer`'s request made on its replay record, in the transaction of that
/// effect (so a replay never points at something that did not commit).
pub async fn record_outcome(
    conn: &mut impl AsConn,
    signer: &Signer,
    effect: Effect<'_>,
) -> Result<(), sqlx::Error> {
    let (kind, id) = effect.parts();
    sql_execute!(
        conn.conn(),
        "UPDATE request_replays SET outcome_kind = $3, outcome_id = $4 WHERE session_nonce = $1 AND request_id = $2",
        &signer.session_nonce,
        &signer.request_id,
        kind,
        id
    )?;
    Ok(())
}

/// The 409 `EXTERNAL_SIGNATURE_REQUEST_REPLAY` answer to a replay of `signer`'s request:
/// with `details.original` when its body is identical to the accepted one's.
pub async fn replay_error(conn: &mut impl AsConn, signer: &Signer) -> ApiResult<ApiError> {
    #[derive(sqlx::FromRow)]
    struct Record {
        body_sha256: Option<String>,
        outcome_kind: Option<String>,
        outcome_id: Option<String>,
    }
    let plain = ApiError::new(
        ErrorCode::EXTERNAL_SIGNATURE_REQUEST_REPLAY,
        "This request_id was already used for this session",
    )
    .with_detail("request_id", signer.request_id.clone());
    let record = sql_fetch_optional!(
        conn.conn(),
        Record,
        "SELECT body_sha256, outcome_kind, outcome_id FROM request_replays WHERE session_nonce = $1 AND request_id = $2",
        &signer.session_nonce,
        &signer.request_id
    )?;
    let Some(record) = record.filter(|r| r.body_sha256.as_deref() == Some(&*signer.body_sha256))
    else {
        return Ok(plain);
    };
    let original = match (record.outcome_kind.as_deref(), record.outcome_id) {
        (Some(outcome::USAGE), Some(usage_id)) => {
            #[derive(sqlx::FromRow)]
            struct Usage {
                status: String,
                charged_credits: i64,
                error_code: Option<String>,
            }
            let usage = sql_fetch_optional!(
                conn.conn(),
                Usage,
                "SELECT status, charged_credits, error_code FROM tool_usage WHERE usage_id = $1",
                &usage_id
            )?;
            match usage {
                Some(u) => of_tool_call(usage_id, &u.status, u.charged_credits, u.error_code),
                // Pruned, or never written: say nothing rather than guess.
                None => return Ok(plain),
            }
        }
        (Some(outcome::RESERVATION), Some(reservation_id)) => ReplayOriginal {
            reservation_id: Some(reservation_id),
            ..committed()
        },
        // Requests whose claim commits with their effect: the record exists, so it happened.
        (None, _) => committed(),
        _ => return Ok(plain),
    };
    let message = match original.state {
        ReplayState::InProgress => "This request_id was already used for this session: the original is still in progress (details.original); ask again shortly",
        ReplayState::Succeeded => "This request_id was already used for this session: the original succeeded (details.original says what it was charged)",
        ReplayState::Failed | ReplayState::Released => "This request_id was already used for this session: the original did not succeed and nothing was charged (details.original)",
    };
    Ok(
        ApiError::new(ErrorCode::EXTERNAL_SIGNATURE_REQUEST_REPLAY, message)
            .with_detail("request_id", signer.request_id.clone())
            .with_detail(
                "original",
                serde_json::to_value(original).map_err(ApiError::internal)?,
            ),
    )
}

/// The original of a request whose effect committed with its replay record.
fn committed() -> ReplayOriginal {
    ReplayOriginal {
        status: Some(200),
        state: ReplayState::Succeeded,
        charged_credits: 0,
        error_code: None,
        usage_id: None,
        reservation_id: None,
    }
}

/// The original of a tool call from its usage record: running → in progress; succeeded;
/// the tool failed → failed; given back without a result (timeout, a stopped instance's
/// call swept) → released.
fn of_tool_call(
    usage_id: String,
    status: &str,
    charged_credits: i64,
    error_code: Option<String>,
) -> ReplayOriginal {
    use crate::tools::usage::status as usage;
    let code = error_code
        .as_deref()
        .and_then(|c| c.parse::<ErrorCode>().ok());
    let (state, http) = match status {
        usage::RUNNING | usage::SETTLING | usage::SETTLEMENT_PENDING => {
            (ReplayState::InProgress, None)
        }
        usage::SUCCEEDED => (ReplayState::Succeeded, Some(200)),
        usage::FAILED if code == Some(ErrorCode::TOOL_FAILED) => {
            (ReplayState::Failed, code.map(ErrorCode::status))
        }
        usage::SETTLEMENT_FAILED => (ReplayState::Failed, code.map(ErrorCode::status)),
        _ => (ReplayState::Released, code.map(ErrorCode::status)),
    };
    ReplayOriginal {
        status: http,
        state,
        charged_credits,
        error_code,
        usage_id: Some(usage_id),
        reservation_id: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_call_states() {
        let running = of_tool_call("u".into(), "running", 0, None);
        assert_eq!(
            (running.state, running.status),
            (ReplayState::InProgress, None)
        );
        let done = of_tool_call("u".into(), "succeeded", 7, None);
        assert_eq!(
            (done.state, done.status, done.charged_credits),
            (ReplayState::Succeeded, Some(200), 7)
        );
        let failed = of_tool_call("u".into(), "failed", 0, Some("TOOL_FAILED".into()));
        assert_eq!(
            (failed.state, failed.status),
            (ReplayState::Failed, Some(502))
        );
        let timed_out = of_tool_call("u".into(), "failed", 0, Some("TOOL_TIMEOUT".into()));
        assert_eq!(
            (timed_out.state, timed_out.status),
            (ReplayState::Released, Some(504))
        );
        let swept = of_tool_call("u".into(), "failed", 0, Some("interrupted".into()));
        assert_eq!((swept.state, swept.status), (ReplayState::Released, None));
    }
}
