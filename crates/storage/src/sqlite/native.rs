//! The grants' statements, run through rusqlite on a write connection of
//! their own, on a thread of its own, a whole batch per visit.
//!
//! sqlx runs each SQLite connection on a thread of its own too, but every
//! statement is a message to that thread and an answer back: two context
//! switches, which cost a grant more than its statements. Here the writer
//! hands the thread a whole batch of claims (BEGIN, each claim, COMMIT with
//! its fsync) in one message and gets them back in one answer.
//! The writer also keeps its sqlx connection for every other write, and
//! never lets the two hold a transaction at once (`crate::writer`), so
//! neither ever waits for SQLite's write lock.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use rusqlite::{OpenFlags, ffi};
use tokio::sync::oneshot;
use velocity_domain::StoreError;

use velocity_domain::oauth::AuthorizationCode;

use crate::claim::{Claim, ClaimText, Rows, Statement, Value};
use crate::rows::{CODE_COLUMNS, CodeRow};

/// Prepared statements kept: the grants' few shapes, with room to spare.
const STATEMENTS: usize = 32;

/// Work for the thread: a function of its connection.
type Visit = Box<dyn FnOnce(&rusqlite::Connection) + Send>;

/// The thread that owns the native write connection.
pub(crate) struct NativeConnection {
    visits: Option<mpsc::Sender<Visit>>,
    thread: Option<std::thread::JoinHandle<()>>,
    alive: Arc<AtomicBool>,
}

/// Marks the thread gone when it ends, by return or by panic (dropped as
/// the stack unwinds), so readiness can say so.
struct Alive(Arc<AtomicBool>);

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
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
        // The WAL's frames go down in one write per commit
        // (`super::gathered_wal`); its guarantees need synchronous=FULL,
        // which `pragmas` sets.
        let vfs = super::gathered_wal::register().map_err(|code| {
            StoreError::Unavailable(format!(
                "cannot register the grants' SQLite VFS (error {code})"
            ))
        })?;
        let conn = rusqlite::Connection::open_with_flags_and_vfs(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            vfs,
        )
        .map_err(classify)?;
        conn.busy_timeout(busy_timeout).map_err(classify)?;
        conn.execute_batch(pragmas).map_err(classify)?;
        conn.set_prepared_statement_cache_capacity(STATEMENTS);
        let (visits, arrivals) = mpsc::channel::<Visit>();
        let alive = Arc::new(AtomicBool::new(true));
        let guard = Alive(alive.clone());
        let thread = std::thread::Builder::new()
            .name("velocity-sqlite-grants".to_owned())
            .spawn(move || {
                let _alive = guard;
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
            alive,
        })
    }

    /// A flag that turns false once the thread has ended: its grants are
    /// then refused as unavailable, and the store is no longer ready.
    pub(crate) fn alive(&self) -> Arc<AtomicBool> {
        self.alive.clone()
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
/// A failure half-way leaves the claim's first statements done: the writer
/// then runs the batch again with the claim in a savepoint, which it undoes
/// (`crate::writer`).
pub(crate) fn run_claim(conn: &rusqlite::Connection, claim: &Claim) -> Result<bool, StoreError> {
    let classify = |e| classify(e, claim.what);
    let mut statements = claim.text.apart(statements).iter();
    let Some(first) = statements.next() else {
        return Ok(false);
    };
    if execute(conn, first, &claim.values).map_err(classify)? == 0 {
        return Ok(false);
    }
    for statement in statements {
        execute(conn, statement, &claim.values).map_err(classify)?;
    }
    Ok(true)
}

/// A claim's statements as SQLite runs them: the claim, then each insert.
fn statements(text: &ClaimText) -> Vec<String> {
    let mut all = vec![text.claim.clone()];
    for then in &text.then {
        match &then.rows {
            // A row at a time: SQLite runs a single-row `INSERT … VALUES`
            // without a statement journal (a copy of each page it changes,
            // kept to undo the statement alone), which a multi-row insert,
            // or any `INSERT … SELECT`, needs.
            Rows::Values(rows) => all.extend(
                rows.iter()
                    .map(|row| format!("{} VALUES {row}{}", then.into, then.tail)),
            ),
            // `WHERE true`: SQLite reads `SELECT … ON CONFLICT` as a join
            // constraint without a WHERE clause between them.
            Rows::Select(_) => all.push(then.select_where("WHERE true")),
        }
    }
    all
}

/// The code whose hash is `hash`, which the caller knows is stored.
pub(crate) fn code(
    conn: &rusqlite::Connection,
    hash: &[u8],
) -> Result<AuthorizationCode, StoreError> {
    let classify = |e| classify(e, "code");
    let sql = format!("SELECT {CODE_COLUMNS} FROM oauth_codes WHERE code_hash = ?1");
    conn.prepare_cached(&sql)
        .and_then(|mut statement| statement.query_row([hash], CodeRow::from_native))
        .map_err(classify)?
        .try_into()
}

/// Runs one statement, binding its `?k` to the value it takes; the rows it
/// changed.
fn execute(
    conn: &rusqlite::Connection,
    statement: &Statement,
    values: &[Value],
) -> rusqlite::Result<usize> {
    let mut prepared = conn.prepare_cached(&statement.sql)?;
    for (k, &index) in statement.values.iter().enumerate() {
        let Some(value) = values.get(index) else {
            return Err(rusqlite::Error::InvalidParameterName(format!(
                "parameter {} of a claim has no value",
                k + 1
            )));
        };
        prepared.raw_bind_parameter(k + 1, value)?;
    }
    prepared.raw_execute()
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::claim::Then;

    fn connection() -> rusqlite::Connection {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "PRAGMA foreign_keys = ON; \
             CREATE TABLE parent (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, spent INTEGER); \
             CREATE TABLE child (id INTEGER PRIMARY KEY, parent INTEGER NOT NULL REFERENCES parent (id), \
                                 blob BLOB, at INTEGER);",
        )
        .unwrap();
        conn
    }

    /// Placeholders bound by their number, wherever they first appear: a
    /// claim's parts share one list, and each part names some of it.
    #[test]
    fn placeholders_bind_by_number_not_position() {
        let conn = connection();
        conn.execute("INSERT INTO parent (id, name) VALUES (1, 'a')", [])
            .unwrap();
        let mut draft = Claim::draft("parent");
        let id = draft.bind(1_i64);
        let at = draft.bind(42_i64);
        let blob = draft.bind(&b"\x00\x01"[..]);
        let none = draft.bind(None::<i64>);
        let parts = |child: i64| {
            (
                format!("UPDATE parent SET spent = {at} WHERE id = {id} AND spent IS NULL"),
                vec![
                    Then {
                        into: "INSERT INTO child (id, parent, blob, at)".to_owned(),
                        rows: Rows::Values(vec![format!("({child}, {id}, {blob}, {none})")]),
                        tail: String::new(),
                    },
                    // Read from the claimed row, as a code's tokens are.
                    Then {
                        into: "INSERT INTO child (id, parent, blob, at)".to_owned(),
                        rows: Rows::Select(format!(
                            "SELECT {}, id, {blob}, spent FROM (SELECT * FROM parent WHERE id = {id}) AS claimed",
                            child * 10
                        )),
                        tail: String::new(),
                    },
                ],
            )
        };
        let (sql, then) = parts(7);
        let claim = draft.with_text(sql, then);
        assert!(
            run_claim(&conn, &claim).unwrap(),
            "the claim changed its row"
        );
        let row = |id: i64| -> (i64, Vec<u8>, Option<i64>) {
            conn.query_row(
                "SELECT parent, blob, at FROM child WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap()
        };
        assert_eq!(row(7), (1, vec![0, 1], None));
        assert_eq!(row(70), (1, vec![0, 1], Some(42)));
        let spent: i64 = conn
            .query_row("SELECT spent FROM parent WHERE id = 1", [], |r| r.get(0))
            .unwrap();
        assert_eq!(spent, 42);

        // Spent: the claim changes nothing, and nothing after it runs.
        let mut again = Claim::draft("parent");
        for value in &claim.values {
            again.bind(value.clone());
        }
        let (sql, then) = parts(8);
        assert!(!run_claim(&conn, &again.with_text(sql, then)).unwrap());
        let children: i64 = conn
            .query_row("SELECT COUNT(*) FROM child", [], |r| r.get(0))
            .unwrap();
        assert_eq!(children, 2);
    }

    #[test]
    fn constraint_failures_are_classified() {
        let conn = connection();
        let insert = |sql: &str| {
            let claim = Claim::draft("thing").with_text(sql.to_owned(), Vec::new());
            run_claim(&conn, &claim)
        };
        insert("INSERT INTO parent (id, name) VALUES (1, 'a')").unwrap();
        assert!(matches!(
            insert("INSERT INTO parent (id, name) VALUES (2, 'a')"),
            Err(StoreError::Conflict("thing"))
        ));
        assert!(matches!(
            insert("INSERT INTO child (id, parent) VALUES (1, 99)"),
            Err(StoreError::MissingReference("thing"))
        ));
        assert!(matches!(
            insert("INSERT INTO nowhere VALUES (1)"),
            Err(StoreError::Other(_))
        ));
    }

    /// A placeholder with no value is an error, never a NULL.
    #[test]
    fn a_missing_value_is_refused() {
        let conn = connection();
        let mut draft = Claim::draft("parent");
        draft.bind(1_i64);
        let claim = draft.with_text(
            "INSERT INTO parent (id, name) VALUES ($1, $2)".to_owned(),
            Vec::new(),
        );
        assert!(matches!(
            run_claim(&conn, &claim),
            Err(StoreError::Other(_))
        ));
        let parents: i64 = conn
            .query_row("SELECT COUNT(*) FROM parent", [], |r| r.get(0))
            .unwrap();
        assert_eq!(parents, 0);
    }
}
