//! The AgentAddress creation limit: N new addresses per source address per window, shared
//! by every server instance on the same database.
//!
//! A fixed window per source, kept in `agentaddress_rate_limits` and advanced by ONE
//! atomic upsert (`INSERT … ON CONFLICT … DO UPDATE … RETURNING`) on the database's own
//! clock, so instances with skewed clocks still agree. Any database error is returned to
//! the caller, which refuses the request (fail closed).

use crate::db::macros::{sql_execute, sql_fetch_optional};
use crate::db::{Backend, Db};

/// The database clock in epoch milliseconds, per engine.
const SQLITE_NOW: &str = "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)";
const POSTGRES_NOW: &str = "CAST(EXTRACT(EPOCH FROM now()) * 1000 AS BIGINT)";

/// `$1` source, `$2` window in ms. `NOW` is replaced by the engine's clock expression;
/// every `SET` expression reads the row as it was before the statement.
const HIT_SQL: &str = "INSERT INTO agentaddress_rate_limits (source, window_start_ms, hits) \
     VALUES ($1, NOW, 1) \
     ON CONFLICT (source) DO UPDATE SET \
       hits = CASE WHEN agentaddress_rate_limits.window_start_ms + $2 <= NOW \
                   THEN 1 ELSE agentaddress_rate_limits.hits + 1 END, \
       window_start_ms = CASE WHEN agentaddress_rate_limits.window_start_ms + $2 <= NOW \
                   THEN NOW ELSE agentaddress_rate_limits.window_start_ms END \
     RETURNING hits, window_start_ms, NOW AS now_ms";

static SQLITE_HIT: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| HIT_SQL.replace("NOW", SQLITE_NOW));
static POSTGRES_HIT: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| HIT_SQL.replace("NOW", POSTGRES_NOW));

#[derive(Debug, sqlx::FromRow)]
struct Hit {
    hits: i64,
    window_start_ms: i64,
    now_ms: i64,
}

/// The answer of the limiter for one creation attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    /// Over the limit; the window ends in this many seconds (at least 1).
    Limited {
        retry_after_secs: u64,
    },
}

/// Counts one creation attempt by `source` and decides.
pub async fn hit(
    db: &Db,
    source: &str,
    limit: u64,
    window_secs: u64,
) -> Result<Decision, sqlx::Error> {
    let window_ms = i64::try_from(window_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    let sql: &str = match db.backend() {
        Backend::Sqlite => &SQLITE_HIT,
        Backend::Postgres => &POSTGRES_HIT,
    };
    let mut conn = db.write().await?;
    let row = sql_fetch_optional!(conn.conn(), Hit, sql, source, window_ms)?
        .ok_or(sqlx::Error::RowNotFound)?;
    if u64::try_from(row.hits).unwrap_or(u64::MAX) <= limit {
        return Ok(Decision::Allowed);
    }
    let remaining_ms = (row.window_start_ms + window_ms - row.now_ms).max(0);
    Ok(Decision::Limited {
        retry_after_secs: (u64::try_from(remaining_ms).unwrap_or(0))
            .div_ceil(1000)
            .max(1),
    })
}

/// Deletes windows that ended before `before_ms` (epoch ms).
pub async fn prune(db: &Db, before_ms: i64) -> Result<u64, sqlx::Error> {
    let mut conn = db.write().await?;
    sql_execute!(
        conn.conn(),
        "DELETE FROM agentaddress_rate_limits WHERE window_start_ms < $1",
        before_ms
    )
}
