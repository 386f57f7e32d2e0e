//! Storage: SQLite (default, embedded) or PostgreSQL, chosen by the database URL.
//!
//! Queries are written once, in SQL both engines accept (`$1` placeholders, `ON CONFLICT`,
//! `RETURNING`, BIGINT epoch-millisecond times), and run through the `sql_*!` macros,
//! which dispatch to the native sqlx driver of the connection at hand. Schema migrations
//! live per engine in `migrations/{sqlite,postgres}` and run at start-up.
//!
//! SQLite runs in WAL mode with `synchronous=NORMAL`: one writer connection (all write
//! transactions, serialized, so SQLite never sees competing writers within one process;
//! write transactions are `BEGIN IMMEDIATE`, so several processes on one file wait for
//! each other instead of failing) and a pool of
//! reader connections (`query_only`; not opened read-only, which breaks WAL readers that
//! race a checkpoint with SQLITE_IOERR_SHORT_READ).

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgConnection, PgPool, Postgres, Sqlite, SqliteConnection, SqlitePool, Transaction};
use std::str::FromStr;
use std::time::Duration;

pub mod macros;

/// Which engine a [`Db`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Connection pools of the configured engine.
#[derive(Debug, Clone)]
pub enum Db {
    Sqlite {
        writer: SqlitePool,
        reader: SqlitePool,
    },
    Postgres(PgPool),
}

/// Pool sizing and timeouts.
#[derive(Debug, Clone)]
pub struct DbOptions {
    /// PostgreSQL pool size; for SQLite, the number of read connections.
    pub max_connections: u32,
    /// How long a request waits for a free connection before failing with 503.
    pub acquire_timeout: Duration,
}

impl Default for DbOptions {
    fn default() -> Self {
        DbOptions {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

impl Db {
    /// Connects to `url`: `sqlite://path` (file created on first use, with its folder) or
    /// `postgres://…` / `postgresql://…`.
    pub async fn connect(url: &str, options: &DbOptions) -> Result<Db, sqlx::Error> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let connect = PgConnectOptions::from_str(url)?;
            let pool = PgPoolOptions::new()
                .max_connections(options.max_connections.max(1))
                .acquire_timeout(options.acquire_timeout)
                .connect_with(connect)
                .await?;
            return Ok(Db::Postgres(pool));
        }
        if !url.starts_with("sqlite:") {
            return Err(sqlx::Error::Configuration(
                "database URL must start with sqlite:, postgres:// or postgresql://".into(),
            ));
        }
        let base = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        if !in_memory {
            if let Some(dir) = base.get_filename().parent() {
                if !dir.as_os_str().is_empty() {
                    std::fs::create_dir_all(dir).map_err(sqlx::Error::Io)?;
                }
            }
        }
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(options.acquire_timeout)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(base.clone())
            .await?;
        // An in-memory database exists once per connection: read through the writer.
        let reader = if in_memory {
            writer.clone()
        } else {
            SqlitePoolOptions::new()
                .max_connections(options.max_connections.clamp(1, 8))
                .acquire_timeout(options.acquire_timeout)
                .connect_with(base.pragma("query_only", "ON"))
                .await?
        };
        Ok(Db::Sqlite { writer, reader })
    }

    /// The engine behind this handle.
    pub fn backend(&self) -> Backend {
        match self {
            Db::Sqlite { .. } => Backend::Sqlite,
            Db::Postgres(_) => Backend::Postgres,
        }
    }

    /// Applies pending migrations.
    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        match self {
            Db::Sqlite { writer, .. } => SQLITE_MIGRATOR.run(writer).await,
            Db::Postgres(pool) => POSTGRES_MIGRATOR.run(pool).await,
        }
    }

    /// Serializes start-up work (migrations, the catalog load) between server instances
    /// sharing this database: on PostgreSQL a session advisory lock, keyed by database and
    /// schema, held on a connection of its own until [`StartupLock::release`] (or until
    /// that connection closes, when start-up fails). SQLite needs none within one process
    /// (one writer connection); see the README for several processes on one file.
    pub async fn startup_lock(&self) -> Result<StartupLock, sqlx::Error> {
        match self {
            Db::Sqlite { .. } => Ok(StartupLock(None)),
            Db::Postgres(pool) => {
                // Detached: dropped on an error path, the connection closes and the
                // server releases the lock, instead of it going back to the pool held.
                let mut conn = pool.acquire().await?.detach();
                sqlx::query(STARTUP_LOCK_SQL).execute(&mut conn).await?;
                Ok(StartupLock(Some(conn)))
            }
        }
    }

    /// One trivial query: is the database answering?
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        match self {
            Db::Sqlite { reader, .. } => sqlx::query("SELECT 1").execute(reader).await.map(|_| ()),
            Db::Postgres(pool) => sqlx::query("SELECT 1").execute(pool).await.map(|_| ()),
        }
    }

    /// The latest successfully applied migration version, and the latest one this binary
    /// embeds.
    pub async fn migration_status(&self) -> Result<(Option<i64>, i64), sqlx::Error> {
        const SQL: &str = "SELECT MAX(version) FROM _sqlx_migrations WHERE success";
        let (applied, migrator) = match self {
            Db::Sqlite { reader, .. } => (
                sqlx::query_scalar::<_, Option<i64>>(SQL)
                    .fetch_one(reader)
                    .await?,
                &SQLITE_MIGRATOR,
            ),
            Db::Postgres(pool) => (
                sqlx::query_scalar::<_, Option<i64>>(SQL)
                    .fetch_one(pool)
                    .await?,
                &POSTGRES_MIGRATOR,
            ),
        };
        let expected = migrator.iter().map(|m| m.version).max().unwrap_or(0);
        Ok((applied, expected))
    }

    /// Starts a read-write transaction.
    ///
    /// On SQLite it is `BEGIN IMMEDIATE`: the write lock is taken (waiting up to the busy
    /// timeout) before the first read. A deferred transaction that reads and then writes
    /// fails at once with SQLITE_BUSY when another process (a second server instance on
    /// the same file, or the CLI) wrote in between, and the busy timeout does not help.
    pub async fn begin(&self) -> Result<Tx, sqlx::Error> {
        Ok(match self {
            Db::Sqlite { writer, .. } => Tx::Sqlite(writer.begin_with("BEGIN IMMEDIATE").await?),
            Db::Postgres(pool) => Tx::Postgres(pool.begin().await?),
        })
    }

    /// A connection for a single autocommit write (each statement is its own transaction).
    pub async fn write(&self) -> Result<Conn, sqlx::Error> {
        Ok(match self {
            Db::Sqlite { writer, .. } => Conn::Sqlite(writer.acquire().await?),
            Db::Postgres(pool) => Conn::Postgres(pool.acquire().await?),
        })
    }

    /// A connection for reads outside a transaction.
    pub async fn read(&self) -> Result<Conn, sqlx::Error> {
        Ok(match self {
            Db::Sqlite { reader, .. } => Conn::Sqlite(reader.acquire().await?),
            Db::Postgres(pool) => Conn::Postgres(pool.acquire().await?),
        })
    }

    /// Closes every pool (waits for checked-out connections to come back).
    pub async fn close(&self) {
        match self {
            Db::Sqlite { writer, reader } => {
                reader.close().await;
                writer.close().await;
            }
            Db::Postgres(pool) => pool.close().await,
        }
    }
}

/// The advisory lock of start-up: one key per database and schema (instances on other
/// schemas of the same database do not wait for each other).
const STARTUP_LOCK_SQL: &str =
    "SELECT pg_advisory_lock(hashtext('agentpmt-startup/' || current_database() || '/' || current_schema())::bigint)";

/// Held while an instance migrates and loads its catalog; see [`Db::startup_lock`].
#[derive(Debug)]
#[must_use = "the lock is held until released"]
pub struct StartupLock(Option<PgConnection>);

impl StartupLock {
    /// Releases the lock (closing its connection releases it too).
    pub async fn release(self) -> Result<(), sqlx::Error> {
        use sqlx::Connection;
        if let Some(conn) = self.0 {
            conn.close().await?;
        }
        Ok(())
    }
}

/// A read-write transaction. Dropped without [`Tx::commit`], it rolls back.
#[derive(Debug)]
pub enum Tx {
    Sqlite(Transaction<'static, Sqlite>),
    Postgres(Transaction<'static, Postgres>),
}

impl Tx {
    /// Commits the transaction.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Tx::Sqlite(tx) => tx.commit().await,
            Tx::Postgres(tx) => tx.commit().await,
        }
    }

    /// The connection the transaction runs on.
    pub fn conn(&mut self) -> ConnRef<'_> {
        match self {
            Tx::Sqlite(tx) => ConnRef::Sqlite(&mut *tx),
            Tx::Postgres(tx) => ConnRef::Postgres(&mut *tx),
        }
    }
}

/// A pooled connection outside any transaction.
#[derive(Debug)]
pub enum Conn {
    Sqlite(PoolConnection<Sqlite>),
    Postgres(PoolConnection<Postgres>),
}

impl Conn {
    /// The connection itself.
    pub fn conn(&mut self) -> ConnRef<'_> {
        match self {
            Conn::Sqlite(c) => ConnRef::Sqlite(&mut *c),
            Conn::Postgres(c) => ConnRef::Postgres(&mut *c),
        }
    }
}

/// Anything a query can run on: a transaction or a pooled connection.
pub trait AsConn {
    /// Borrows the underlying connection for one query.
    fn conn(&mut self) -> ConnRef<'_>;
}

impl AsConn for Tx {
    fn conn(&mut self) -> ConnRef<'_> {
        Tx::conn(self)
    }
}

impl AsConn for Conn {
    fn conn(&mut self) -> ConnRef<'_> {
        Conn::conn(self)
    }
}

/// A borrowed connection of either engine: what the `sql_*!` macros run on.
#[derive(Debug)]
pub enum ConnRef<'c> {
    Sqlite(&'c mut SqliteConnection),
    Postgres(&'c mut PgConnection),
}

/// The database clock, epoch ms (leases never depend on a server's own clock).
pub async fn db_now(conn: &mut impl AsConn, backend: Backend) -> sqlx::Result<i64> {
    let sql = match backend {
        Backend::Sqlite => "SELECT CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
        Backend::Postgres => "SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
    };
    macros::sql_scalar_optional!(conn.conn(), i64, sql)?.ok_or(sqlx::Error::RowNotFound)
}

/// `%…%` LIKE pattern of `text`, with LIKE's wildcards escaped (use with `ESCAPE '\\'`).
pub fn like_contains(text: &str) -> String {
    let mut out = String::from("%");
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// Whether `err` is a unique-constraint violation (a lost race on a key).
pub fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// Whether `err` means the database is unreachable or saturated (answered with 503).
pub fn is_unavailable(err: &sqlx::Error) -> bool {
    matches!(
        err,
        sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::macros::{sql_execute, sql_scalar_optional};

    /// Two handles on one SQLite file (two server instances, or the server and the CLI):
    /// a transaction that reads and then writes must wait for the other writer, not fail
    /// with SQLITE_BUSY because the other one committed after its read.
    #[tokio::test]
    async fn sqlite_transactions_of_two_processes_wait_for_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("two.db").display());
        let first = Db::connect(&url, &DbOptions::default()).await.unwrap();
        let second = Db::connect(&url, &DbOptions::default()).await.unwrap();
        let mut conn = first.write().await.unwrap();
        sql_execute!(conn.conn(), "CREATE TABLE t (id BIGINT PRIMARY KEY)").unwrap();
        drop(conn);

        let mut tx = first.begin().await.unwrap();
        let seen = sql_scalar_optional!(tx.conn(), i64, "SELECT COUNT(*) FROM t").unwrap();
        assert_eq!(seen, Some(0));
        let other = tokio::spawn(async move {
            let mut conn = second.write().await.unwrap();
            sql_execute!(conn.conn(), "INSERT INTO t (id) VALUES (2)").map(|_| ())
        });
        // Let the other writer run (or block on our lock) before we write.
        tokio::time::sleep(Duration::from_millis(200)).await;
        sql_execute!(tx.conn(), "INSERT INTO t (id) VALUES (1)").unwrap();
        tx.commit().await.unwrap();
        other.await.unwrap().unwrap();

        let mut conn = first.read().await.unwrap();
        let count = sql_scalar_optional!(conn.conn(), i64, "SELECT COUNT(*) FROM t").unwrap();
        assert_eq!(count, Some(2));
    }
}
