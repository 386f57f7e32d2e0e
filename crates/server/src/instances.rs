//! Instance liveness: every server instance registers itself in the database and
//! heartbeats there (on the database clock, so the instances' own clocks do not matter).
//!
//! Work an instance leases names it as `owner_instance`: a tool call's hold or settlement
//! (`tool_usage`), a purchase's settlement (`credit_purchases`), a submission's automated
//! check (`job_submissions`). When an instance stops heartbeating for
//! `--instance-timeout-secs` (or stops cleanly), the others end those leases at once
//! ([`orphaned`] finds the rows) and the usual recovery takes the work over: the stale-call
//! sweep releases the holds, the reconcilers take the settlements, the verifier checks the
//! submissions again. Taking over is the same conditional update as taking an expired
//! lease, so each piece of work is taken by one instance, once, however many race for it.
//!
//! The bound: an instance is declared dead `timeout` after its last heartbeat, and the
//! others look every `heartbeat` interval, so its work is taken over within
//! `timeout + heartbeat` (12 s with the defaults), plus the time of the recovery itself.

use crate::config::ServerConfig;
use crate::db::macros::sql_execute;
use crate::db::{db_now, Db};
use std::sync::Arc;
use std::time::Duration;

/// How long the rows of instances gone silent are kept (their ids stay in old records).
const RETENTION_MS: i64 = 24 * 3600 * 1000;

/// This server instance, as the others see it in the database.
#[derive(Debug, Clone)]
pub struct Instance {
    /// Random id, fresh at each start.
    pub id: Arc<str>,
    /// Time between two heartbeats.
    pub heartbeat: Duration,
    /// Silence after which an instance counts as dead.
    pub timeout: Duration,
}

impl Instance {
    /// A new identity with the liveness settings of `config`.
    pub fn new(config: &ServerConfig) -> Instance {
        Instance {
            id: format!("inst_{}", uuid::Uuid::new_v4().simple()).into(),
            heartbeat: Duration::from_secs(config.heartbeat_interval_secs.max(1)),
            timeout: Duration::from_secs(config.instance_timeout_secs.max(2)),
        }
    }

    /// Writes this instance's row (before it serves anything: work it leases must never
    /// name an instance the others do not know to be alive).
    pub async fn register(&self, db: &Db) -> sqlx::Result<()> {
        let mut conn = db.write().await?;
        let now = db_now(&mut conn, db.backend()).await?;
        sql_execute!(
            conn.conn(),
            "INSERT INTO server_instances (instance_id, started_at_ms, heartbeat_at_ms) VALUES ($1, $2, $2)",
            &*self.id,
            now
        )?;
        Ok(())
    }

    /// Records that this instance is alive; returns the database clock (epoch ms).
    pub async fn heartbeat(&self, db: &Db) -> sqlx::Result<i64> {
        let mut conn = db.write().await?;
        let now = db_now(&mut conn, db.backend()).await?;
        let updated = sql_execute!(
            conn.conn(),
            "UPDATE server_instances SET heartbeat_at_ms = $2 WHERE instance_id = $1 AND stopped_at_ms IS NULL",
            &*self.id,
            now
        )?;
        if updated == 0 {
            // Pruned by another instance after a long stall, or marked stopped: this
            // instance's leases may already have been taken over; from now on it is alive
            // again under the same id (the conditional updates of the work itself decide
            // who finishes what).
            tracing::warn!(instance = %self.id, "this instance had been declared dead; registering again");
            sql_execute!(
                conn.conn(),
                "DELETE FROM server_instances WHERE instance_id = $1",
                &*self.id
            )?;
            sql_execute!(
                conn.conn(),
                "INSERT INTO server_instances (instance_id, started_at_ms, heartbeat_at_ms) VALUES ($1, $2, $2)",
                &*self.id,
                now
            )?;
        }
        Ok(now)
    }

    /// Marks this instance stopped (a clean shutdown): its leftover work is taken over at
    /// the others' next heartbeat instead of after the timeout.
    pub async fn stop(&self, db: &Db) -> sqlx::Result<()> {
        let mut conn = db.write().await?;
        let now = db_now(&mut conn, db.backend()).await?;
        sql_execute!(
            conn.conn(),
            "UPDATE server_instances SET stopped_at_ms = $2 WHERE instance_id = $1",
            &*self.id,
            now
        )?;
        Ok(())
    }

    /// The earliest heartbeat of an instance still alive at database time `now`.
    pub fn alive_after(&self, now: i64) -> i64 {
        now.saturating_sub(i64::try_from(self.timeout.as_millis()).unwrap_or(i64::MAX))
    }

    /// Drops the rows of instances silent for a day.
    pub async fn prune(db: &Db) -> sqlx::Result<u64> {
        let mut conn = db.write().await?;
        let now = db_now(&mut conn, db.backend()).await?;
        sql_execute!(
            conn.conn(),
            "DELETE FROM server_instances WHERE heartbeat_at_ms < $1",
            now - RETENTION_MS
        )
    }
}

/// SQL condition on `table`'s `owner_instance`: the row is leased by an instance other
/// than `$me` that is no longer alive (stopped, silent since before `$alive_after`, or
/// unknown). `me` and `alive_after` are the placeholders of those two values.
pub fn orphaned(table: &str, me: &str, alive_after: &str) -> String {
    format!(
        "{table}.owner_instance IS NOT NULL AND {table}.owner_instance <> {me} AND NOT EXISTS \
         (SELECT 1 FROM server_instances i WHERE i.instance_id = {table}.owner_instance \
          AND i.stopped_at_ms IS NULL AND i.heartbeat_at_ms >= {alive_after})"
    )
}
