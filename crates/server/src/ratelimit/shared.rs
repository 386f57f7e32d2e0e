//! Limits counted in a store every instance shares (`--rate-limit-backend postgres|redis`).
//!
//! Each bucket is one GCRA cell: the bucket's theoretical arrival time (`tat`), in
//! microseconds of the store's own clock (PostgreSQL's `clock_timestamp()`, Redis' `TIME`),
//! so the instances' clocks do not matter. Taking `cost` microseconds of work from a bucket
//! with tolerance `tol` (the burst) is allowed when `max(tat, now) + cost - now <= tol`, and
//! moves `tat` there; one atomic statement (an upsert, a Lua script) decides and records, so
//! instances racing on one bucket never both take its last token.

use crate::db::{ConnRef, Db};
use redis::aio::ConnectionManager;

/// The Redis side of [`take`]: KEYS[1] the bucket; ARGV cost, tolerance (µs), drain (0/1).
/// Returns 0 when taken, else the wait in µs.
const REDIS_GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local cost = tonumber(ARGV[1])
local tol = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new = tat + cost
if ARGV[3] ~= '1' and new - now > tol then
  return math.max(1, new - tol - now)
end
if new > now + tol then new = now + tol end
redis.call('SET', KEYS[1], string.format('%.0f', new), 'PX', string.format('%.0f', math.ceil((new - now) / 1000) + 1))
return 0
";

/// The PostgreSQL side of [`take`]: $1 bucket, $2 cost, $3 tolerance, $4 drain. The
/// inserted value is `now + cost`, so `EXCLUDED.tat_us - $2` is the statement's `now`.
const POSTGRES_GCRA: &str = "INSERT INTO rate_limit_buckets AS b (bucket, tat_us) \
     VALUES ($1, CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000 AS BIGINT) + $2) \
     ON CONFLICT (bucket) DO UPDATE SET tat_us = \
       LEAST(GREATEST(b.tat_us, EXCLUDED.tat_us - $2) + $2, EXCLUDED.tat_us - $2 + $3) \
     WHERE $4 OR GREATEST(b.tat_us, EXCLUDED.tat_us - $2) + $2 - (EXCLUDED.tat_us - $2) <= $3 \
     RETURNING tat_us";

/// Where shared buckets live.
pub enum SharedStore {
    Postgres(Db),
    Redis {
        connection: ConnectionManager,
        script: redis::Script,
        prefix: String,
    },
}

impl std::fmt::Debug for SharedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the URL: it may carry a password.
        f.write_str(match self {
            SharedStore::Postgres(_) => "SharedStore::Postgres",
            SharedStore::Redis { .. } => "SharedStore::Redis",
        })
    }
}

/// Why a shared bucket could not be used (a fixed text: no URL, no password).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unavailable(pub &'static str);

impl SharedStore {
    /// Connects to Redis at `url` (an error names neither the URL nor its password).
    pub async fn redis(url: &str, prefix: &str) -> Result<SharedStore, Unavailable> {
        let client =
            redis::Client::open(url).map_err(|_| Unavailable("the Redis URL is not valid"))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(std::time::Duration::from_secs(5))
            .set_response_timeout(std::time::Duration::from_secs(2));
        let connection = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            ConnectionManager::new_with_config(client, config),
        )
        .await
        .map_err(|_| Unavailable("Redis did not answer"))?
        .map_err(|_| Unavailable("cannot connect to Redis"))?;
        Ok(SharedStore::Redis {
            connection,
            script: redis::Script::new(REDIS_GCRA),
            prefix: prefix.to_owned(),
        })
    }

    /// Takes `cost_us` from `bucket` (tolerance `tol_us`): `Ok(None)` when taken,
    /// `Ok(Some(wait_us))` when refused. `drain`: always taken, the bucket emptied at most.
    pub async fn take(
        &self,
        bucket: &str,
        cost_us: i64,
        tol_us: i64,
        drain: bool,
    ) -> Result<Option<i64>, Unavailable> {
        let cost_us = if drain { cost_us.min(tol_us) } else { cost_us };
        match self {
            SharedStore::Postgres(db) => {
                let mut conn = db
                    .write()
                    .await
                    .map_err(|_| Unavailable("the database is unavailable"))?;
                let ConnRef::Postgres(c) = conn.conn() else {
                    return Err(Unavailable("shared limits need PostgreSQL"));
                };
                // A bucket update lost in a database crash is harmless: its commit does not
                // wait for the WAL flush (only this transaction's; money writes still do).
                let failed = |_| Unavailable("the limit query failed");
                let mut tx = sqlx::Connection::begin(&mut *c).await.map_err(failed)?;
                sqlx::query("SET LOCAL synchronous_commit = off")
                    .execute(&mut *tx)
                    .await
                    .map_err(failed)?;
                let taken: Option<i64> = sqlx::query_scalar(POSTGRES_GCRA)
                    .bind(bucket)
                    .bind(cost_us)
                    .bind(tol_us)
                    .bind(drain)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(failed)?;
                tx.commit().await.map_err(failed)?;
                if taken.is_some() {
                    return Ok(None);
                }
                let ahead: Option<i64> = sqlx::query_scalar(
                    "SELECT tat_us - CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000 AS BIGINT) \
                     FROM rate_limit_buckets WHERE bucket = $1",
                )
                .bind(bucket)
                .fetch_optional(&mut *c)
                .await
                .map_err(|_| Unavailable("the limit query failed"))?;
                Ok(Some((ahead.unwrap_or(0) + cost_us - tol_us).max(1)))
            }
            SharedStore::Redis {
                connection,
                script,
                prefix,
            } => {
                let mut connection = connection.clone();
                let wait: i64 = script
                    .key(format!("{prefix}:{bucket}"))
                    .arg(cost_us)
                    .arg(tol_us)
                    .arg(if drain { 1 } else { 0 })
                    .invoke_async(&mut connection)
                    .await
                    .map_err(|_| Unavailable("the Redis limit script failed"))?;
                Ok((wait > 0).then_some(wait))
            }
        }
    }

    /// Drops PostgreSQL buckets that are full again (Redis keys expire by themselves).
    pub async fn prune(&self) -> Result<u64, Unavailable> {
        let SharedStore::Postgres(db) = self else {
            return Ok(0);
        };
        let mut conn = db
            .write()
            .await
            .map_err(|_| Unavailable("the database is unavailable"))?;
        let ConnRef::Postgres(c) = conn.conn() else {
            return Ok(0);
        };
        sqlx::query(
            "DELETE FROM rate_limit_buckets \
             WHERE tat_us < CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000 AS BIGINT)",
        )
        .execute(&mut *c)
        .await
        .map(|r| r.rows_affected())
        .map_err(|_| Unavailable("the limit query failed"))
    }
}
