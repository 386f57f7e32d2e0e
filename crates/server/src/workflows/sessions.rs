//! Wallet-scoped workflow sessions and the tool calls attributed to them.
//!
//! A session belongs to one wallet, one workflow and one instance id (`''` when the agent
//! gave none); at most one is active per triple (a partial unique index). Each session
//! keeps the idle limit in force when it started: once `last_activity + idle_timeout`
//! passes it is over, whether or not a write has marked it yet ([`SessionRow::is_live`]);
//! writes mark such sessions `ended` with `end_reason = 'idle'`.
//!
//! For the tool invoke handler: [`check_attribution`] refuses an unknown, foreign or ended
//! `_workflow_session_id`; [`record_tool_call`] stores the call (the session's results in
//! `fetch`) and counts as activity.

use crate::db::macros::{sql_execute, sql_fetch_all, sql_fetch_optional};
use crate::db::{AsConn, Db};
use crate::error::{ApiError, ApiResult};
use crate::time::{now_ms, rfc3339_ms};
use agentpmt_protocol::workflows::{WorkflowCallView, WorkflowSessionView};
use agentpmt_protocol::ErrorCode;
use serde_json::Value;

/// Columns of [`SessionRow`].
pub const SESSION_COLUMNS: &str = "workflow_session_id, workflow_id, wallet_address, instance_id, \
     status, started_at_ms, last_activity_at_ms, idle_timeout_ms, ended_at_ms, end_reason";

/// A session as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SessionRow {
    pub workflow_session_id: String,
    pub workflow_id: String,
    pub wallet_address: String,
    pub instance_id: String,
    pub status: String,
    pub started_at_ms: i64,
    pub last_activity_at_ms: i64,
    pub idle_timeout_ms: i64,
    pub ended_at_ms: Option<i64>,
    pub end_reason: Option<String>,
}

impl SessionRow {
    /// When the session ends by itself unless used before.
    pub fn idle_deadline_ms(&self) -> i64 {
        self.last_activity_at_ms
            .saturating_add(self.idle_timeout_ms)
    }

    /// Active and not idle past its limit at `now`.
    pub fn is_live(&self, now: i64) -> bool {
        self.status == "active" && self.idle_deadline_ms() > now
    }

    /// The wire view at `now` (an idle-expired session shows as ended, reason `idle`).
    pub fn view(&self, now: i64, results: Option<Vec<WorkflowCallView>>) -> WorkflowSessionView {
        let live = self.is_live(now);
        let (status, ended_at, end_reason) = if live {
            ("active", None, None)
        } else if self.status == "active" {
            (
                "ended",
                Some(self.idle_deadline_ms()),
                Some("idle".to_owned()),
            )
        } else {
            ("ended", self.ended_at_ms, self.end_reason.clone())
        };
        WorkflowSessionView {
            workflow_session_id: self.workflow_session_id.clone(),
            workflow_id: self.workflow_id.clone(),
            wallet_address: self.wallet_address.clone(),
            instance_id: (!self.instance_id.is_empty()).then(|| self.instance_id.clone()),
            status: status.to_owned(),
            started_at: rfc3339_ms(self.started_at_ms),
            last_activity_at: rfc3339_ms(self.last_activity_at_ms),
            idle_expires_at: live.then(|| rfc3339_ms(self.idle_deadline_ms())),
            ended_at: ended_at.map(rfc3339_ms),
            end_reason,
            results,
        }
    }
}

/// A tool call to record against a session.
#[derive(Debug, Clone)]
pub struct ToolCallRecord {
    /// The call's usage id (`use_…`), shown as the result's `usage_id`.
    pub usage_id: String,
    pub product_slug: String,
    pub action_slug: String,
    /// The invoke's request_id.
    pub request_id: String,
    /// True for `succeeded`, false for `failed`.
    pub succeeded: bool,
    pub charged_credits: i64,
    /// The tool's response (succeeded calls).
    pub response: Option<Value>,
    /// The error body (failed calls).
    pub error: Option<Value>,
    /// When the call happened (epoch ms).
    pub at_ms: i64,
}

/// Marks `wallet`'s sessions that idled past their limit as ended (reason `idle`).
pub async fn expire_idle(conn: &mut impl AsConn, wallet: &str, now: i64) -> sqlx::Result<u64> {
    sql_execute!(
        conn.conn(),
        "UPDATE workflow_sessions SET status = 'ended', \
           ended_at_ms = last_activity_at_ms + idle_timeout_ms, end_reason = 'idle' \
         WHERE wallet_address = $1 AND status = 'active' \
           AND last_activity_at_ms + idle_timeout_ms <= $2",
        wallet,
        now
    )
}

/// One session by id.
pub async fn find(conn: &mut impl AsConn, id: &str) -> sqlx::Result<Option<SessionRow>> {
    let sql =
        format!("SELECT {SESSION_COLUMNS} FROM workflow_sessions WHERE workflow_session_id = $1");
    sql_fetch_optional!(conn.conn(), SessionRow, &sql, id)
}

/// `wallet`'s live sessions (optionally of one workflow / instance), most recently used first.
pub async fn live_sessions(
    conn: &mut impl AsConn,
    wallet: &str,
    workflow_id: Option<&str>,
    instance_id: Option<&str>,
    now: i64,
) -> sqlx::Result<Vec<SessionRow>> {
    let sql = format!(
        "SELECT {SESSION_COLUMNS} FROM workflow_sessions \
         WHERE wallet_address = $1 AND status = 'active' \
           AND last_activity_at_ms + idle_timeout_ms > $2 \
           AND ($3 IS NULL OR workflow_id = $3) AND ($4 IS NULL OR instance_id = $4) \
         ORDER BY last_activity_at_ms DESC, workflow_session_id LIMIT 100"
    );
    sql_fetch_all!(
        conn.conn(),
        SessionRow,
        &sql,
        wallet,
        now,
        workflow_id,
        instance_id
    )
}

/// `wallet`'s most recent sessions of `workflow_id` (any status), newest first.
pub async fn recent_sessions(
    conn: &mut impl AsConn,
    wallet: &str,
    workflow_id: &str,
    limit: i64,
) -> sqlx::Result<Vec<SessionRow>> {
    let sql = format!(
        "SELECT {SESSION_COLUMNS} FROM workflow_sessions \
         WHERE wallet_address = $1 AND workflow_id = $2 \
         ORDER BY started_at_ms DESC, workflow_session_id DESC LIMIT $3"
    );
    sql_fetch_all!(conn.conn(), SessionRow, &sql, wallet, workflow_id, limit)
}

#[derive(Debug, sqlx::FromRow)]
struct CallRow {
    call_id: String,
    product_slug: String,
    action_slug: String,
    request_id: String,
    status: String,
    charged_credits: i64,
    response: Option<String>,
    error: Option<String>,
    created_at_ms: i64,
}

/// The calls recorded against a session, oldest first (at most 200).
pub async fn calls(
    conn: &mut impl AsConn,
    session_id: &str,
) -> sqlx::Result<Vec<WorkflowCallView>> {
    let rows = sql_fetch_all!(
        conn.conn(),
        CallRow,
        "SELECT call_id, product_slug, action_slug, request_id, status, charged_credits, \
           response, error, created_at_ms \
         FROM workflow_session_calls WHERE workflow_session_id = $1 \
         ORDER BY created_at_ms, call_id LIMIT 200",
        session_id
    )?;
    let json = |text: Option<String>| text.and_then(|t| serde_json::from_str(&t).ok());
    Ok(rows
        .into_iter()
        .map(|r| WorkflowCallView {
            usage_id: r.call_id,
            product_slug: r.product_slug,
            action_slug: r.action_slug,
            request_id: r.request_id,
            status: r.status,
            charged_credits: r.charged_credits,
            response: json(r.response),
            error: json(r.error),
            created_at: rfc3339_ms(r.created_at_ms),
        })
        .collect())
}

/// Refuses to attribute a tool call of `wallet` to `workflow_session_id` unless the
/// session exists, belongs to `wallet` and is live: 404 `WORKFLOW_SESSION_NOT_FOUND`, 403
/// `WORKFLOW_SESSION_FOREIGN`, 409 `WORKFLOW_SESSION_ENDED` (ended by the agent or idle).
pub async fn check_attribution(db: &Db, wallet: &str, workflow_session_id: &str) -> ApiResult<()> {
    let id = workflow_session_id.trim();
    if id.is_empty() || id.len() > 128 {
        return Err(ApiError::invalid_field(
            &["body", "parameters", "_workflow_session_id"],
            "value_error",
            "_workflow_session_id must be a workflow_session_id returned by start",
        ));
    }
    let mut conn = db.read().await?;
    let Some(session) = find(&mut conn, id).await? else {
        return Err(ApiError::new(
            ErrorCode::WORKFLOW_SESSION_NOT_FOUND,
            "No workflow session has this _workflow_session_id",
        )
        .with_detail("workflow_session_id", id.to_owned()));
    };
    if !session.wallet_address.eq_ignore_ascii_case(wallet) {
        return Err(ApiError::new(
            ErrorCode::WORKFLOW_SESSION_FOREIGN,
            "The workflow session belongs to another wallet",
        )
        .with_detail("workflow_session_id", id.to_owned()));
    }
    let now = now_ms();
    if !session.is_live(now) {
        let view = session.view(now, None);
        return Err(ApiError::new(
            ErrorCode::WORKFLOW_SESSION_ENDED,
            "The workflow session has ended",
        )
        .with_detail("workflow_session_id", id.to_owned())
        .with_detail("workflow_id", session.workflow_id)
        .with_detail("ended_at", view.ended_at)
        .with_detail("end_reason", view.end_reason));
    }
    Ok(())
}

/// Records a tool call against a session (shown by `fetch` as the session's results) and
/// counts it as activity of the session (it postpones the idle end of a live session).
pub async fn record_tool_call(
    db: &Db,
    workflow_session_id: &str,
    call: &ToolCallRecord,
) -> Result<(), sqlx::Error> {
    let to_text = |v: &Option<Value>| v.as_ref().map(|v| v.to_string());
    let mut tx = db.begin().await?;
    sql_execute!(
        tx.conn(),
        "INSERT INTO workflow_session_calls (call_id, workflow_session_id, product_slug, \
           action_slug, request_id, status, charged_credits, response, error, created_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        &call.usage_id,
        workflow_session_id,
        &call.product_slug,
        &call.action_slug,
        &call.request_id,
        if call.succeeded {
            "succeeded"
        } else {
            "failed"
        },
        call.charged_credits.max(0),
        to_text(&call.response),
        to_text(&call.error),
        call.at_ms
    )?;
    sql_execute!(
        tx.conn(),
        "UPDATE workflow_sessions SET last_activity_at_ms = $1 \
         WHERE workflow_session_id = $2 AND status = 'active' \
           AND last_activity_at_ms + idle_timeout_ms > $1 AND last_activity_at_ms < $1",
        now_ms(),
        workflow_session_id
    )?;
    tx.commit().await
}
