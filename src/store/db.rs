//! One SQL interface over the two history backends: SQLite (rusqlite, the
//! embedded default) and PostgreSQL (the blocking `postgres` client), so
//! every query of the store is written once.
//!
//! Statements are written with SQLite's numbered placeholders (`?1`, `?2`)
//! and in the SQL both databases speak: `INSERT ... ON CONFLICT`,
//! `RETURNING id`, `CAST(x AS BIGINT)` around sums, `coalesce`. For
//! PostgreSQL the placeholders become `$1`, `$2` once per statement, and
//! prepared statements are cached per connection like rusqlite's
//! `prepare_cached`. Arguments are [`Arg`]s (integers, reals, text, bytes,
//! null) and columns are read through [`Get`], so no caller names a driver
//! type. Integer columns are `BIGINT` on PostgreSQL.
//!
//! The PostgreSQL connection is lazy and self-healing: it connects (and
//! brings the schema up to date) on first use, and after a failure that
//! closed it, the next call connects again; a transaction whose `BEGIN`
//! finds its session ended by the server (a restart, an administrator)
//! starts on a new connection at once. A [`Db`] is used from one
//! blocking thread at a time (the store's invariant), never on the async
//! runtime: the `postgres` client runs its own small runtime per call.
//! Transactions are explicit `BEGIN`/`COMMIT` ([`Db::begin`]), rolled
//! back when dropped uncommitted.

use std::cell::RefCell;
use std::collections::HashMap;
use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

use bytes::BytesMut;
use postgres::types::{IsNull, ToSql, Type};

/// A value bound to a placeholder.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Arg<'a> {
    Null,
    Int(i64),
    Real(f64),
    Text(&'a str),
    Blob(&'a [u8]),
}

impl From<i64> for Arg<'_> {
    fn from(v: i64) -> Self {
        Arg::Int(v)
    }
}
impl From<i32> for Arg<'_> {
    fn from(v: i32) -> Self {
        Arg::Int(i64::from(v))
    }
}
impl From<u32> for Arg<'_> {
    fn from(v: u32) -> Self {
        Arg::Int(i64::from(v))
    }
}
impl From<bool> for Arg<'_> {
    fn from(v: bool) -> Self {
        Arg::Int(i64::from(v))
    }
}
impl From<f64> for Arg<'_> {
    fn from(v: f64) -> Self {
        Arg::Real(v)
    }
}
impl<'a> From<&'a str> for Arg<'a> {
    fn from(v: &'a str) -> Self {
        Arg::Text(v)
    }
}
impl<'a> From<&'a String> for Arg<'a> {
    fn from(v: &'a String) -> Self {
        Arg::Text(v)
    }
}
impl<'a> From<&'a [u8]> for Arg<'a> {
    fn from(v: &'a [u8]) -> Self {
        Arg::Blob(v)
    }
}
impl<'a> From<&'a Vec<u8>> for Arg<'a> {
    fn from(v: &'a Vec<u8>) -> Self {
        Arg::Blob(v)
    }
}
impl<'a, T: Into<Arg<'a>>> From<Option<T>> for Arg<'a> {
    fn from(v: Option<T>) -> Self {
        v.map_or(Arg::Null, Into::into)
    }
}
impl<'a, T: Into<Arg<'a>> + Copy> From<&Option<T>> for Arg<'a> {
    fn from(v: &Option<T>) -> Self {
        v.map_or(Arg::Null, Into::into)
    }
}
impl<'a> From<&'a Option<String>> for Arg<'a> {
    fn from(v: &'a Option<String>) -> Self {
        v.as_deref().map_or(Arg::Null, Arg::Text)
    }
}
impl<'a> From<&'a Option<Vec<u8>>> for Arg<'a> {
    fn from(v: &'a Option<Vec<u8>>) -> Self {
        v.as_deref().map_or(Arg::Null, Arg::Blob)
    }
}

/// `args![a, b]`: a slice of [`Arg`]s from anything convertible.
macro_rules! args {
    ($($v:expr),* $(,)?) => {
        &[$($crate::store::db::Arg::from($v)),*][..]
    };
}
pub(crate) use args;

impl rusqlite::ToSql for Arg<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match *self {
            Arg::Null => ValueRef::Null,
            Arg::Int(v) => ValueRef::Integer(v),
            Arg::Real(v) => ValueRef::Real(v),
            Arg::Text(v) => ValueRef::Text(v.as_bytes()),
            Arg::Blob(v) => ValueRef::Blob(v),
        }))
    }
}

impl ToSql for Arg<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        match *self {
            Arg::Null => Ok(IsNull::Yes),
            Arg::Int(v) => match *ty {
                Type::INT4 => i32::try_from(v)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(v)?.to_sql(ty, out),
                Type::BOOL => (v != 0).to_sql(ty, out),
                Type::FLOAT8 => (v as f64).to_sql(ty, out),
                _ => v.to_sql(ty, out),
            },
            Arg::Real(v) => v.to_sql(ty, out),
            Arg::Text(v) => v.to_sql(ty, out),
            Arg::Blob(v) => v.to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

/// Why a statement failed, from either driver, or a column that could
/// not be read as the type asked for.
#[derive(Debug)]
pub enum DbError {
    Sqlite(rusqlite::Error),
    Postgres(postgres::Error),
    /// A column held something else than the caller expected.
    Column(String),
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DbError::Sqlite(e) => write!(f, "{e}"),
            // The driver's own Display omits the server's detail.
            DbError::Postgres(e) => match e.as_db_error() {
                Some(db) => write!(f, "{}: {}", db.severity(), db.message()),
                None => match e.source() {
                    Some(src) => write!(f, "{e}: {src}"),
                    None => write!(f, "{e}"),
                },
            },
            DbError::Column(s) => f.write_str(s),
        }
    }
}

impl StdError for DbError {}

impl From<rusqlite::Error> for DbError {
    fn from(e: rusqlite::Error) -> Self {
        DbError::Sqlite(e)
    }
}
impl From<postgres::Error> for DbError {
    fn from(e: postgres::Error) -> Self {
        DbError::Postgres(e)
    }
}

impl DbError {
    /// SQLite's error code, for the busy and corrupt checks.
    pub(crate) fn sqlite_code(&self) -> Option<rusqlite::ErrorCode> {
        match self {
            DbError::Sqlite(e) => e.sqlite_error_code(),
            _ => None,
        }
    }
}

pub(crate) type DbResult<T> = Result<T, DbError>;

/// One row being read.
pub(crate) enum Row<'a> {
    Sqlite(&'a rusqlite::Row<'a>),
    Pg(&'a postgres::Row),
}

impl Row<'_> {
    pub(crate) fn get<T: Get>(&self, idx: usize) -> DbResult<T> {
        match self {
            Row::Sqlite(r) => T::sqlite(r, idx),
            Row::Pg(r) => T::pg(r, idx),
        }
    }
}

/// A type a column can be read as, on both backends.
pub(crate) trait Get: Sized {
    fn sqlite(row: &rusqlite::Row<'_>, idx: usize) -> DbResult<Self>;
    fn pg(row: &postgres::Row, idx: usize) -> DbResult<Self>;
}

fn pg_int(row: &postgres::Row, idx: usize) -> DbResult<Option<i64>> {
    let ty = row
        .columns()
        .get(idx)
        .map(|c| c.type_().clone())
        .ok_or_else(|| DbError::Column(format!("no column {idx}")))?;
    Ok(match ty {
        Type::INT8 => row.try_get::<_, Option<i64>>(idx)?,
        Type::INT4 => row.try_get::<_, Option<i32>>(idx)?.map(i64::from),
        Type::INT2 => row.try_get::<_, Option<i16>>(idx)?.map(i64::from),
        Type::BOOL => row.try_get::<_, Option<bool>>(idx)?.map(i64::from),
        other => {
            return Err(DbError::Column(format!(
                "column {idx} is {other}, not an integer"
            )))
        }
    })
}

fn null_at(idx: usize) -> DbError {
    DbError::Column(format!("column {idx} is NULL"))
}

macro_rules! get_via {
    ($t:ty, $opt:ty) => {
        impl Get for $t {
            fn sqlite(row: &rusqlite::Row<'_>, idx: usize) -> DbResult<Self> {
                Ok(row.get(idx)?)
            }
            fn pg(row: &postgres::Row, idx: usize) -> DbResult<Self> {
                Ok(row.try_get(idx)?)
            }
        }
        impl Get for Option<$t> {
            fn sqlite(row: &rusqlite::Row<'_>, idx: usize) -> DbResult<Self> {
                Ok(row.get(idx)?)
            }
            fn pg(row: &postgres::Row, idx: usize) -> DbResult<Self> {
                Ok(row.try_get::<_, Option<$opt>>(idx)?.map(Into::into))
            }
        }
    };
}
get_via!(String, String);
get_via!(Vec<u8>, Vec<u8>);
get_via!(f64, f64);

impl Get for i64 {
    fn sqlite(row: &rusqlite::Row<'_>, idx: usize) -> DbResult<Self> {
        Ok(row.get(idx)?)
    }
    fn pg(row: &postgres::Row, idx: usize) -> DbResult<Self> {
        pg_int(row, idx)?.ok_or_else(|| null_at(idx))
    }
}
impl Get for Option<i64> {
    fn sqlite(row: &rusqlite::Row<'_>, idx: usize) -> DbResult<Self> {
        Ok(row.get(idx)?)
    }
    fn pg(row: &postgres::Row, idx: usize) -> DbResult<Self> {
        pg_int(row, idx)
    }
}
impl Get for bool {
    fn sqlite(row: &rusqlite::Row<'_>, idx: usize) -> DbResult<Self> {
        Ok(row.get(idx)?)
    }
    fn pg(row: &postgres::Row, idx: usize) -> DbResult<Self> {
        Ok(i64::pg(row, idx)? != 0)
    }
}
impl Get for u32 {
    fn sqlite(row: &rusqlite::Row<'_>, idx: usize) -> DbResult<Self> {
        Ok(row.get(idx)?)
    }
    fn pg(row: &postgres::Row, idx: usize) -> DbResult<Self> {
        let v = i64::pg(row, idx)?;
        u32::try_from(v).map_err(|_| DbError::Column(format!("column {idx}: {v} out of range")))
    }
}

/// `?N` placeholders to PostgreSQL's `$N`, outside quoted text.
pub(crate) fn to_pg_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut quote: Option<char> = None;
    for c in sql.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '\'' || c == '"' => quote = Some(c),
            None if c == '?' => {
                out.push('$');
                continue;
            }
            None => {}
        }
        out.push(c);
    }
    out
}

/// `rows` groups of `width` numbered placeholders from `?1`, each group
/// wrapped as `(CAST(?n AS BIGINT), ...)` for the first `typed` columns
/// (where PostgreSQL cannot infer a type, as in `IN (VALUES ...)`) and
/// plain after: `(?1, ?2), (?3, ?4)`. For multi-row statements, which
/// PostgreSQL needs to write a batch in a few round trips.
pub(crate) fn value_rows(rows: usize, width: usize, typed: usize) -> String {
    let mut out = String::with_capacity(rows * width * 6);
    for r in 0..rows {
        out.push_str(if r == 0 { "(" } else { ", (" });
        for c in 0..width {
            if c > 0 {
                out.push_str(", ");
            }
            let n = r * width + c + 1;
            if c < typed {
                out.push_str(&format!("CAST(?{n} AS BIGINT)"));
            } else {
                out.push_str(&format!("?{n}"));
            }
        }
        out.push(')');
    }
    out
}

/// Rows per multi-row statement: few round trips, and far below either
/// database's limit on placeholders (PostgreSQL 65,535).
pub(crate) const ROWS_PER_STATEMENT: usize = 500;

/// How long a PostgreSQL connection attempt may take before the call
/// fails (and the caller's retry or buffer takes over).
const PG_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A lazily (re)connected PostgreSQL client with its statement cache.
pub(crate) struct PgConn {
    config: postgres::Config,
    client: Option<postgres::Client>,
    statements: HashMap<String, postgres::Statement>,
    /// Runs once on every new connection before it is used (the schema
    /// migration); an error leaves the connection unused.
    on_connect: fn(&mut postgres::Client) -> Result<(), DbError>,
}

impl PgConn {
    fn client(&mut self) -> DbResult<&mut postgres::Client> {
        if self.client.as_ref().is_some_and(|c| c.is_closed()) {
            self.client = None;
        }
        if self.client.is_none() {
            self.statements.clear();
            let tls = tokio_postgres_rustls::MakeRustlsConnect::new(pg_tls_config());
            let mut client = self.config.connect(tls)?;
            (self.on_connect)(&mut client)?;
            self.client = Some(client);
        }
        self.client
            .as_mut()
            .ok_or_else(|| DbError::Column("no PostgreSQL connection".into()))
    }

    fn statement(&mut self, sql: &str) -> DbResult<postgres::Statement> {
        if let Some(s) = self.statements.get(sql) {
            if self.client.as_ref().is_some_and(|c| !c.is_closed()) {
                return Ok(s.clone());
            }
        }
        let prepared = self.client()?.prepare(&to_pg_placeholders(sql))?;
        self.statements.insert(sql.to_owned(), prepared.clone());
        Ok(prepared)
    }

    /// Drops a connection that a failure left closed, so the next call
    /// connects again.
    fn after<T>(&mut self, r: DbResult<T>) -> DbResult<T> {
        if r.is_err() && self.client.as_ref().is_some_and(|c| c.is_closed()) {
            self.client = None;
        }
        r
    }
}

impl Drop for PgConn {
    /// The blocking client closes its connection on its own small runtime,
    /// which panics on a thread that drives async tasks: a store dropped
    /// there (a task ending) closes it on a thread of its own.
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            if tokio::runtime::Handle::try_current().is_ok() {
                let _ = std::thread::Builder::new()
                    .name("lookout-pg-close".into())
                    .spawn(move || drop(client));
            }
        }
    }
}

/// The TLS settings for the history connection: the system's roots, the
/// process's one crypto provider. Used when the URL asks for TLS
/// (`sslmode=prefer`, the default, or `require`).
fn pg_tls_config() -> rustls::ClientConfig {
    rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map(|b| {
        b.with_root_certificates(crate::probe::tlsutil::system_roots().clone())
            .with_no_client_auth()
    })
    .unwrap_or_else(|_| {
        rustls::ClientConfig::builder()
            .with_root_certificates(crate::probe::tlsutil::system_roots().clone())
            .with_no_client_auth()
    })
}

enum Backend {
    Sqlite(rusqlite::Connection),
    Pg(Box<RefCell<PgConn>>),
}

/// A connection to either backend. See the module documentation.
pub(crate) struct Db {
    backend: Backend,
}

impl Db {
    pub(crate) fn sqlite(conn: rusqlite::Connection) -> Db {
        Db {
            backend: Backend::Sqlite(conn),
        }
    }

    /// A PostgreSQL connection to `url`, made on first use; `on_connect`
    /// runs on every new connection before anything else.
    pub(crate) fn postgres(
        url: &str,
        on_connect: fn(&mut postgres::Client) -> Result<(), DbError>,
    ) -> DbResult<Db> {
        let mut config: postgres::Config = url.parse()?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(PG_CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("lookout");
        }
        Ok(Db {
            backend: Backend::Pg(Box::new(RefCell::new(PgConn {
                config,
                client: None,
                statements: HashMap::new(),
                on_connect,
            }))),
        })
    }

    pub(crate) fn is_postgres(&self) -> bool {
        matches!(self.backend, Backend::Pg(_))
    }

    /// The SQLite connection, for what only SQLite has (pragmas, backfill).
    pub(crate) fn as_sqlite(&self) -> Option<&rusqlite::Connection> {
        match &self.backend {
            Backend::Sqlite(c) => Some(c),
            Backend::Pg(_) => None,
        }
    }

    /// Runs the PostgreSQL client directly (advisory locks, the results
    /// feed); `None` on SQLite.
    pub(crate) fn with_pg<T>(
        &self,
        f: impl FnOnce(&mut postgres::Client) -> DbResult<T>,
    ) -> Option<DbResult<T>> {
        match &self.backend {
            Backend::Sqlite(_) => None,
            Backend::Pg(pg) => {
                let mut pg = pg.borrow_mut();
                let r = pg.client().and_then(f);
                Some(pg.after(r))
            }
        }
    }

    /// Runs one statement; the number of rows it changed.
    pub(crate) fn execute(&self, sql: &str, args: &[Arg<'_>]) -> DbResult<usize> {
        match &self.backend {
            Backend::Sqlite(c) => Ok(c
                .prepare_cached(sql)?
                .execute(rusqlite::params_from_iter(args))?),
            Backend::Pg(pg) => {
                let mut pg = pg.borrow_mut();
                let r = pg.statement(sql).and_then(|st| {
                    let params: Vec<&(dyn ToSql + Sync)> =
                        args.iter().map(|a| a as &(dyn ToSql + Sync)).collect();
                    Ok(pg.client()?.execute(&st, &params)? as usize)
                });
                pg.after(r)
            }
        }
    }

    /// Runs one query and reads each row with `read`.
    pub(crate) fn query<T>(
        &self,
        sql: &str,
        args: &[Arg<'_>],
        mut read: impl FnMut(&Row<'_>) -> DbResult<T>,
    ) -> DbResult<Vec<T>> {
        match &self.backend {
            Backend::Sqlite(c) => {
                let mut stmt = c.prepare_cached(sql)?;
                let mut rows = stmt.query(rusqlite::params_from_iter(args))?;
                let mut out = Vec::new();
                while let Some(row) = rows.next()? {
                    out.push(read(&Row::Sqlite(row))?);
                }
                Ok(out)
            }
            Backend::Pg(pg) => {
                let mut pg = pg.borrow_mut();
                let r = pg.statement(sql).and_then(|st| {
                    let params: Vec<&(dyn ToSql + Sync)> =
                        args.iter().map(|a| a as &(dyn ToSql + Sync)).collect();
                    Ok(pg.client()?.query(&st, &params)?)
                });
                let rows = pg.after(r)?;
                rows.iter().map(|r| read(&Row::Pg(r))).collect()
            }
        }
    }

    /// The first row of a query, if any.
    pub(crate) fn query_opt<T>(
        &self,
        sql: &str,
        args: &[Arg<'_>],
        mut read: impl FnMut(&Row<'_>) -> DbResult<T>,
    ) -> DbResult<Option<T>> {
        match &self.backend {
            Backend::Sqlite(c) => {
                let mut stmt = c.prepare_cached(sql)?;
                let mut rows = stmt.query(rusqlite::params_from_iter(args))?;
                let first = match rows.next()? {
                    Some(row) => Some(read(&Row::Sqlite(row))?),
                    None => None,
                };
                // Step to the end: an `INSERT ... RETURNING` outside a
                // transaction commits there, and a failed commit (a full
                // disk) is only reported by that last step.
                while rows.next()?.is_some() {}
                Ok(first)
            }
            Backend::Pg(_) => Ok(self.query(sql, args, read)?.into_iter().next()),
        }
    }

    /// Runs statements separated by `;`, without arguments.
    pub(crate) fn batch(&self, sql: &str) -> DbResult<()> {
        match &self.backend {
            Backend::Sqlite(c) => Ok(c.execute_batch(sql)?),
            Backend::Pg(pg) => {
                let mut pg = pg.borrow_mut();
                let r = pg
                    .client()
                    .and_then(|c| c.batch_execute(sql).map_err(DbError::from));
                pg.after(r)
            }
        }
    }

    /// Starts a transaction that takes the write lock at once on SQLite
    /// (`BEGIN IMMEDIATE`), so a locked database fails here rather than
    /// halfway through.
    pub(crate) fn begin(&self) -> DbResult<Tx<'_>> {
        let begin = if self.is_postgres() {
            "BEGIN"
        } else {
            "BEGIN IMMEDIATE"
        };
        match (self.batch(begin), &self.backend) {
            // The server ended the session since the last call (a restart,
            // an administrator): nothing of this transaction was done, so
            // it starts again on a new connection.
            (Err(DbError::Postgres(e)), Backend::Pg(pg))
                if e.is_closed()
                    || e.code() == Some(&postgres::error::SqlState::ADMIN_SHUTDOWN) =>
            {
                pg.borrow_mut().client = None;
                self.batch(begin)?;
            }
            (r, _) => r?,
        }
        Ok(Tx {
            db: self,
            open: true,
        })
    }
}

/// An open transaction; derefs to its [`Db`] for statements. Rolled back
/// when dropped without [`Tx::commit`].
pub(crate) struct Tx<'a> {
    db: &'a Db,
    open: bool,
}

impl Tx<'_> {
    /// Commits; a failed commit is rolled back when `self` drops.
    pub(crate) fn commit(mut self) -> DbResult<()> {
        self.db.batch("COMMIT")?;
        self.open = false;
        Ok(())
    }
}

impl std::ops::Deref for Tx<'_> {
    type Target = Db;
    fn deref(&self) -> &Db {
        self.db
    }
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        if !self.open {
            return;
        }
        // A PostgreSQL connection that died took its transaction with it:
        // rolling back must not connect again (the server may be away).
        if let Backend::Pg(pg) = &self.db.backend {
            if pg.borrow().client.as_ref().is_none_or(|c| c.is_closed()) {
                return;
            }
        }
        let _ = self.db.batch("ROLLBACK");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_dollars_outside_quotes() {
        assert_eq!(
            to_pg_placeholders("SELECT a FROM t WHERE b = ?1 AND c = '?x' AND d = ?12"),
            "SELECT a FROM t WHERE b = $1 AND c = '?x' AND d = $12"
        );
    }

    #[test]
    fn value_rows_number_placeholders_across_rows() {
        assert_eq!(value_rows(2, 2, 0), "(?1, ?2), (?3, ?4)");
        assert_eq!(
            value_rows(2, 2, 1),
            "(CAST(?1 AS BIGINT), ?2), (CAST(?3 AS BIGINT), ?4)"
        );
    }

    #[test]
    fn sqlite_round_trip_through_args_and_get() {
        let db = Db::sqlite(rusqlite::Connection::open_in_memory().unwrap());
        db.batch("CREATE TABLE t (i INTEGER, r REAL, s TEXT, b BLOB)")
            .unwrap();
        let tx = db.begin().unwrap();
        tx.execute(
            "INSERT INTO t VALUES (?1, ?2, ?3, ?4)",
            args![7i64, 1.5, "x", &vec![1u8, 2]],
        )
        .unwrap();
        tx.commit().unwrap();
        {
            let _tx = db.begin().unwrap();
            db.execute("INSERT INTO t VALUES (?1, NULL, NULL, NULL)", args![8i64])
                .unwrap();
        } // dropped: rolled back
        let rows = db
            .query("SELECT i, r, s, b FROM t", args![], |r| {
                Ok((
                    r.get::<i64>(0)?,
                    r.get::<f64>(1)?,
                    r.get::<String>(2)?,
                    r.get::<Option<Vec<u8>>>(3)?,
                ))
            })
            .unwrap();
        assert_eq!(rows, vec![(7, 1.5, "x".to_string(), Some(vec![1, 2]))]);
    }
}
