//! The grants' statements, run through rusqlite on a write connection of
//! their own, on a thread of its own, a whole batch per visit.
//!
//! sqlx runs each SQLite connection on a thread of its own too, but every
//! statement is a message to that thread and an answer back: two context
//! switches, which cost a grant more than its statements. Here the writer
//! hands the thread a whole batch of claims (BEGIN, each in a savepoint,
//! COMMIT with its fsync) in one message and gets them back in one answer.
//! The writer also keeps its sqlx connection for every other write, and
//! never lets the two hold a transaction at once (`crate::writer`), so
//! neither ever waits for SQLite's write lock.

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use rusqlite::{OpenFlags, ffi};
use tokio::sync::oneshot;
use velocity_domain::StoreError;

use crate::claim::{Claim, Value};

/// Prepared statements kept: the grants' few shapes, with room to spare.
const STATEMENTS: usize = 32;

/// Work for the thread: a function of its connection.
type Visit = Box<dyn FnOnce(&rusqlite::Connection) + Send>;

/// The thread that owns the native write connection.
pub(crate) struct NativeConnection {
    visits: Option<mpsc::Sender<Visit>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NativeConnection {
    /// Opens a write connection to the (migrated, WAL) database at `path`
    /// with the writer's settings (`pragmas`: `PRAGMA …;` statements), and
    /// starts its thread.
    pub(crate) fn open(
        path: &Path,
        busy_timeout: Duration,
        pragmas: &str,
    ) -> Result<Self, StoreError> {
        let classify = |e| classify(e, "write");
        let conn = rusqlite::Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(classify)?;
        conn.busy_timeout(busy_timeout).map_err(classify)?;
        conn.execute_batch(pragmas).map_err(classify)?;
        conn.set_prepared_statement_cache_capacity(STATEMENTS);
        let (visits, arrivals) = mpsc::channel::<Visit>();
        let thread = std::thread::Builder::new()
            .name("velocity-sqlite-grants".to_owned())
            .spawn(move || {
                for visit in arrivals {
                    visit(&conn);
                }
            })
            .map_err(|e| {
                StoreError::Unavailable(format!("cannot start the grants' thread: {e}"))
            })?;
        Ok(NativeConnection {
            visits: Some(visits),
            thread: Some(thread),
        })
    }

    /// Runs `work` on the connection's thread; its result.
    pub(crate) async fn run<R: Send + 'static>(
        &self,
        work: impl FnOnce(&rusqlite::Connection) -> R + Send + 'static,
    ) -> Result<R, StoreError> {
        let gone = || StoreError::Unavailable("the grants' connection is closed".to_owned());
        let (done, result) = oneshot::channel();
        let visits = self.visits.as_ref().ok_or_else(gone)?;
        visits
            .send(Box::new(move |conn| {
                let _ = done.send(work(conn));
            }))
            .map_err(|_| gone())?;
        result.await.map_err(|_| gone())
    }

    /// Ends the thread, closing the connection, once what it was given ran.
    pub(crate) async fn close(&mut self) {
        self.visits = None;
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

/// Runs `claim` and, if it changed a row, what it issues; whether it did.
/// The caller (the writer) wraps it in a savepoint, so a failure half-way
/// leaves nothing.
pub(crate) fn run_claim(conn: &rusqlite::Connection, claim: &Claim) -> Result<bool, StoreError> {
    let classify = |e| classify(e, claim.what);
    if execute(conn, &claim.claim, &claim.values).map_err(classify)? == 0 {
        return Ok(false);
    }
    for (insert, tail) in &claim.then {
        // `WHERE true`: SQLite reads `SELECT … ON CONFLICT` as a join
        // constraint without a WHERE clause between them.
        let sql = format!("{insert} WHERE true{tail}");
        execute(conn, &sql, &claim.values).map_err(classify)?;
    }
    Ok(true)
}

/// Runs one statement, binding each `$n` it names to `values[n - 1]`;
/// the rows it changed.
fn execute(conn: &rusqlite::Connection, sql: &str, values: &[Value]) -> rusqlite::Result<usize> {
    let mut statement = conn.prepare_cached(sql)?;
    for index in 1..=statement.parameter_count() {
        let value = statement
            .parameter_name(index)
            .and_then(|name| name.strip_prefix('$'))
            .and_then(|n| n.parse::<usize>().ok())
            .and_then(|n| values.get(n.checked_sub(1)?));
        let Some(value) = value else {
            return Err(rusqlite::Error::InvalidParameterName(format!(
                "parameter {index} of a claim has no value"
            )));
        };
        statement.raw_bind_parameter(index, value)?;
    }
    statement.raw_execute()
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(match self {
            Value::Integer(Some(v)) => ToSqlOutput::Borrowed(ValueRef::Integer(*v)),
            Value::Integer(None) => ToSqlOutput::Borrowed(ValueRef::Null),
            Value::Text(v) => ToSqlOutput::Borrowed(ValueRef::Text(v.as_bytes())),
            Value::Bytes(v) => ToSqlOutput::Borrowed(ValueRef::Blob(v)),
        })
    }
}

/// Runs control statements (savepoints) on the locked handle.
pub(crate) fn control(conn: &rusqlite::Connection, sql: &str) -> Result<(), StoreError> {
    conn.execute_batch(sql).map_err(|e| classify(e, "write"))
}

/// Classifies a rusqlite error for the domain, as `crate::error::classify`
/// does sqlx's (and counted with them).
pub(crate) fn classify(err: rusqlite::Error, what: &'static str) -> StoreError {
    let classified = match &err {
        rusqlite::Error::SqliteFailure(failure, _) => match failure.extended_code {
            ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY => {
                StoreError::Conflict(what)
            }
            ffi::SQLITE_CONSTRAINT_FOREIGNKEY => StoreError::MissingReference(what),
            _ => match failure.code {
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked => {
                    StoreError::Unavailable(err.to_string())
                }
                _ => StoreError::Other(err.to_string()),
            },
        },
        _ => StoreError::Other(err.to_string()),
    };
    crate::error::count(&classified);
    classified
}
