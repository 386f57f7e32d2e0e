//! Query macros that run one SQL text on whichever engine a [`ConnRef`](super::ConnRef)
//! holds. Bound values and decoded types must be supported by both drivers (i64, bool,
//! String, &str, Option of those; `FromRow` structs of those).

/// Executes a statement; evaluates to `Result<u64, sqlx::Error>` (rows affected).
macro_rules! sql_execute {
    ($conn:expr, $sql:expr $(, $arg:expr)* $(,)?) => {
        match $conn {
            $crate::db::ConnRef::Sqlite(c) => sqlx::query($sql)$(.bind($arg))*
                .execute(&mut *c).await.map(|r| r.rows_affected()),
            $crate::db::ConnRef::Postgres(c) => sqlx::query($sql)$(.bind($arg))*
                .execute(&mut *c).await.map(|r| r.rows_affected()),
        }
    };
}

/// Fetches at most one row as `$ty` (a `FromRow` type).
macro_rules! sql_fetch_optional {
    ($conn:expr, $ty:ty, $sql:expr $(, $arg:expr)* $(,)?) => {
        match $conn {
            $crate::db::ConnRef::Sqlite(c) => sqlx::query_as::<_, $ty>($sql)$(.bind($arg))*
                .fetch_optional(&mut *c).await,
            $crate::db::ConnRef::Postgres(c) => sqlx::query_as::<_, $ty>($sql)$(.bind($arg))*
                .fetch_optional(&mut *c).await,
        }
    };
}

/// Fetches every row as `$ty` (a `FromRow` type).
macro_rules! sql_fetch_all {
    ($conn:expr, $ty:ty, $sql:expr $(, $arg:expr)* $(,)?) => {
        match $conn {
            $crate::db::ConnRef::Sqlite(c) => sqlx::query_as::<_, $ty>($sql)$(.bind($arg))*
                .fetch_all(&mut *c).await,
            $crate::db::ConnRef::Postgres(c) => sqlx::query_as::<_, $ty>($sql)$(.bind($arg))*
                .fetch_all(&mut *c).await,
        }
    };
}

/// Fetches the first column of at most one row as `$ty`.
macro_rules! sql_scalar_optional {
    ($conn:expr, $ty:ty, $sql:expr $(, $arg:expr)* $(,)?) => {
        match $conn {
            $crate::db::ConnRef::Sqlite(c) => sqlx::query_scalar::<_, $ty>($sql)$(.bind($arg))*
                .fetch_optional(&mut *c).await,
            $crate::db::ConnRef::Postgres(c) => sqlx::query_scalar::<_, $ty>($sql)$(.bind($arg))*
                .fetch_optional(&mut *c).await,
        }
    };
}

pub(crate) use {sql_execute, sql_fetch_all, sql_fetch_optional, sql_scalar_optional};
