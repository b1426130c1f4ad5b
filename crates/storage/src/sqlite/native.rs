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

use std::cell::RefCell;
use std::ops::Deref;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use rusqlite::{OpenFlags, PrepFlags, ffi};
use tokio::sync::oneshot;
use velocity_domain::StoreError;

use velocity_domain::oauth::AuthorizationCode;

use crate::claim::{Claim, ClaimText, Rows, Statement, Value};
use crate::rows::{CODE_COLUMNS, CodeRow};

/// Prepared statements kept: the grants' few shapes, with room to spare.
const STATEMENTS: usize = 32;

/// Work for the thread: a function of its connection.
type Visit = Box<dyn FnOnce(&GrantsConnection) + Send>;

mod cell {
    // The macro's own unsafe code, which keeps a statement beside the
    // connection it borrows; none of ours.
    #![allow(unsafe_code)]

    use super::Prepared;

    self_cell::self_cell!(
        /// The grants' connection, with the claims' statements prepared on it.
        pub(crate) struct GrantsConnection {
            owner: rusqlite::Connection,
            #[not_covariant]
            dependent: Prepared,
        }
    );
}

pub(crate) use cell::GrantsConnection;

impl GrantsConnection {
    /// `conn`, with no statement prepared yet.
    pub(crate) fn of(conn: rusqlite::Connection) -> Self {
        GrantsConnection::new(conn, |_| Prepared::default())
    }
}

impl Deref for GrantsConnection {
    type Target = rusqlite::Connection;

    fn deref(&self) -> &rusqlite::Connection {
        self.borrow_owner()
    }
}

/// The claims' statements, each prepared once and found again by the
/// shared text it came from: a pointer comparison, where rusqlite's cache
/// trims and hashes the whole SQL twice and copies it on every use (a
/// twentieth of a refresh's instructions went there). An entry holds its
/// text, so no other text can take that address while it is kept.
#[derive(Default)]
pub(crate) struct Prepared<'c>(RefCell<Vec<PreparedStatement<'c>>>);

struct PreparedStatement<'c> {
    text: Arc<ClaimText>,
    index: usize,
    statement: rusqlite::Statement<'c>,
}

impl<'c> Prepared<'c> {
    /// Runs statement `index` of `text` (`statement`) with `values`; the
    /// rows it changed. Past [`STATEMENTS`] kept, the statement goes
    /// through rusqlite's cache instead.
    fn execute(
        &self,
        conn: &'c rusqlite::Connection,
        text: &Arc<ClaimText>,
        index: usize,
        statement: &Statement,
        values: &[Value],
    ) -> rusqlite::Result<usize> {
        let mut kept = self.0.borrow_mut();
        let found = kept
            .iter()
            .position(|p| p.index == index && Arc::ptr_eq(&p.text, text));
        let at = match found {
            Some(at) => at,
            None if kept.len() < STATEMENTS => {
                let prepared =
                    conn.prepare_with_flags(&statement.sql, PrepFlags::SQLITE_PREPARE_PERSISTENT)?;
                kept.push(PreparedStatement {
                    text: text.clone(),
                    index,
                    statement: prepared,
                });
                kept.len() - 1
            }
            None => {
                drop(kept);
                let mut cached = conn.prepare_cached(&statement.sql)?;
                return execute(&mut cached, statement, values);
            }
        };
        execute(&mut kept[at].statement, statement, values)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.borrow().len()
    }
}

/// Opens the grants' write connection to the (migrated, WAL) database at
/// `path`, with the writer's settings (`pragmas`: `PRAGMA …;` statements).
pub(crate) fn connect(
    path: &Path,
    busy_timeout: Duration,
    pragmas: &str,
) -> Result<rusqlite::Connection, StoreError> {
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
    Ok(conn)
}

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
        let conn = connect(path, busy_timeout, pragmas)?;
        let (visits, arrivals) = mpsc::channel::<Visit>();
        let alive = Arc::new(AtomicBool::new(true));
        let guard = Alive(alive.clone());
        let thread = std::thread::Builder::new()
            .name("velocity-sqlite-grants".to_owned())
            .spawn(move || {
                let _alive = guard;
                let conn = GrantsConnection::of(conn);
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
        work: impl FnOnce(&GrantsConnection) -> R + Send + 'static,
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
pub(crate) fn run_claim(conn: &GrantsConnection, claim: &Claim) -> Result<bool, StoreError> {
    let classify = |e| classify(e, claim.what);
    let statements = claim.text.apart(statements);
    conn.with_dependent(|conn, prepared| {
        for (index, statement) in statements.iter().enumerate() {
            let changed = prepared
                .execute(conn, &claim.text, index, statement, &claim.values)
                .map_err(classify)?;
            if index == 0 && changed == 0 {
                return Ok(false);
            }
        }
        Ok(!statements.is_empty())
    })
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
    prepared: &mut rusqlite::Statement<'_>,
    statement: &Statement,
    values: &[Value],
) -> rusqlite::Result<usize> {
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

    fn connection() -> GrantsConnection {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "PRAGMA foreign_keys = ON; \
             CREATE TABLE parent (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, spent INTEGER); \
             CREATE TABLE child (id INTEGER PRIMARY KEY, parent INTEGER NOT NULL REFERENCES parent (id), \
                                 blob BLOB, at INTEGER);",
        )
        .unwrap();
        GrantsConnection::of(conn)
    }

    /// A claim of `claim`'s text (the same `Arc`, as claims of one shape
    /// share it) with other values.
    fn sharing(claim: &Claim, values: Vec<Value>) -> Claim {
        Claim {
            what: claim.what,
            text: claim.text.clone(),
            values,
            keys: Vec::new(),
        }
    }

    fn kept(conn: &GrantsConnection) -> usize {
        conn.with_dependent(|_, prepared| prepared.len())
    }

    /// A shared text's statements are prepared once and run again with
    /// each claim's own values; a failure leaves them ready for the next.
    #[test]
    fn shared_texts_prepare_their_statements_once() {
        let conn = connection();
        let mut draft = Claim::draft("parent");
        let id = draft.bind(1_i64);
        let name = draft.bind("a");
        let child = draft.bind(10_i64);
        let first = draft.with_text(
            format!("INSERT INTO parent (id, name) VALUES ({id}, {name})"),
            vec![Then {
                into: "INSERT INTO child (id, parent)".to_owned(),
                rows: Rows::Values(vec![format!("({child}, {id})")]),
                tail: String::new(),
            }],
        );
        assert!(run_claim(&conn, &first).unwrap());
        assert_eq!(kept(&conn), 2, "the claim and its insert");
        let second = sharing(&first, vec![2_i64.into(), "b".into(), 20_i64.into()]);
        assert!(run_claim(&conn, &second).unwrap());
        assert_eq!(kept(&conn), 2, "found again, not prepared again");
        // The name is taken: a conflict, and the statement is reset.
        let taken = sharing(&first, vec![3_i64.into(), "a".into(), 30_i64.into()]);
        assert!(matches!(
            run_claim(&conn, &taken),
            Err(StoreError::Conflict("parent"))
        ));
        let third = sharing(&first, vec![3_i64.into(), "c".into(), 30_i64.into()]);
        assert!(run_claim(&conn, &third).unwrap());
        let rows: Vec<(i64, String, i64)> = conn
            .prepare("SELECT parent.id, name, child.id FROM parent JOIN child ON child.parent = parent.id ORDER BY 1")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            rows,
            [
                (1, "a".into(), 10),
                (2, "b".into(), 20),
                (3, "c".into(), 30)
            ]
        );

        // The same SQL in another text is kept apart: identity is the
        // text's, never its SQL's.
        let other = Claim::draft("parent").with_text(
            format!("INSERT INTO parent (id, name) VALUES ({id}, {name})"),
            Vec::new(),
        );
        let other = sharing(&other, vec![4_i64.into(), "d".into()]);
        assert!(run_claim(&conn, &other).unwrap());
        assert_eq!(kept(&conn), 3);
    }

    /// Past the statements kept, a claim still runs, through rusqlite's
    /// cache.
    #[test]
    fn claims_past_the_kept_statements_still_run() {
        let conn = connection();
        for id in 1..=(STATEMENTS as i64 + 5) {
            let mut draft = Claim::draft("parent");
            let value = draft.bind(id);
            let claim = draft.with_text(
                format!("INSERT INTO parent (id, name) VALUES ({value}, 'n' || {value})"),
                Vec::new(),
            );
            assert!(run_claim(&conn, &claim).unwrap());
        }
        assert_eq!(kept(&conn), STATEMENTS);
        let parents: i64 = conn
            .query_row("SELECT COUNT(*) FROM parent", [], |r| r.get(0))
            .unwrap();
        assert_eq!(parents, STATEMENTS as i64 + 5);
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
