//! Group commit: one task owns the only write connection and runs every
//! write, many to a transaction.
//!
//! SQLite lets one connection write at a time. With writes spread over a
//! pool, the others wait for the lock in the busy handler, which backs off
//! in sleeps: at sixteen connections about one grant in a hundred waited
//! most of a second. Here writes queue instead. The writer takes the first,
//! opens a transaction (`BEGIN IMMEDIATE`: the write lock up front, never
//! an upgrade that could fail half-way), runs it in a savepoint, then runs
//! whatever else has queued meanwhile (up to [`MAX_BATCH`]), each in its own
//! savepoint, and commits once: one fsync for the whole batch. Only after
//! the commit is any caller answered, so an answer still means "durable".
//!
//! - An operation's error rolls back its savepoint alone and is answered to
//!   its caller alone; the batch goes on.
//! - A *contained* operation ([`Writer::submit_contained`]: one statement,
//!   or several that open and close a savepoint of their own) needs no
//!   savepoint from the writer, so a run of them costs no control step
//!   between them: one round trip each. On SQLite a failed statement undoes
//!   itself and leaves the transaction open; should it not (an I/O error
//!   that rolled the transaction back), the control step that follows every
//!   failure finds the savepoint gone and fails the whole batch.
//! - Operations run one after another in one transaction, so each sees what
//!   the ones before it wrote: of two claims of the same code in a batch,
//!   the second's conditional UPDATE finds the first's, exactly as if they
//!   had committed apart.
//! - If the transaction cannot go on (a savepoint cannot be rolled back,
//!   SQLite rolled everything back on its own after an I/O error) or the
//!   COMMIT fails, every caller of the batch gets the error: none was
//!   answered yet, and none of the batch is kept.
//!
//! - A *native* operation ([`Writer::submit_native`]: the grants' claims)
//!   runs on the writer's second connection, through rusqlite, on that
//!   connection's thread (`crate::sqlite::native`): a whole batch goes
//!   there in one message. Such a batch first runs with no savepoint per
//!   operation, and only if one fails runs again with them
//!   ([`run_native_batch`]). A batch holds operations of one connection
//!   only (a job of the other waits for the next batch), so the two never
//!   hold a transaction at once and neither waits for the other's lock.
//!
//! - Work *between batches* ([`BetweenBatches`]: the WAL's catch-up
//!   checkpoint, `crate::sqlite::checkpoint`) runs on the native connection
//!   outside any transaction, alone: no write commits while it runs.
//!
//! Operations are closures over the connection, so the SQL in `sql/` runs
//! here as written; they own what they use (they cross to the writer's
//! task) and are never cancelled half-way by a caller that goes away.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{ConnectOptions, Connection};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use velocity_domain::StoreError;
use velocity_domain::store::StoreResult;

use crate::sqlite::native::{self, GrantsConnection, NativeConnection};

/// A boxed, sendable future, as operations return.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The connection statement operations run on.
type Conn = SqliteConnection;

/// Most operations in one transaction: enough to absorb every connection of
/// a loaded server in one fsync, few enough that the first of them is not
/// kept waiting long behind the others.
pub(crate) const MAX_BATCH: usize = 128;

/// Operations waiting for the writer; a full queue makes callers wait.
const QUEUE: usize = 4096;

/// What the writer knows of the batches it ran, for tests and operators.
#[derive(Debug, Default)]
pub struct WriterStats {
    batches: AtomicUsize,
    operations: AtomicUsize,
    largest_batch: AtomicUsize,
}

impl WriterStats {
    /// Transactions committed or attempted.
    pub fn batches(&self) -> usize {
        self.batches.load(Ordering::Relaxed)
    }

    /// Operations run, in all batches.
    pub fn operations(&self) -> usize {
        self.operations.load(Ordering::Relaxed)
    }

    /// The most operations one transaction held.
    pub fn largest_batch(&self) -> usize {
        self.largest_batch.load(Ordering::Relaxed)
    }

    fn record(&self, size: usize) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.operations.fetch_add(size, Ordering::Relaxed);
        self.largest_batch.fetch_max(size, Ordering::Relaxed);
    }
}

/// The handle the store keeps: a queue into the writer's task.
pub(crate) struct Writer {
    queue: mpsc::Sender<Box<dyn Job>>,
    /// Whether the grants' connection's thread still runs.
    native_alive: Arc<std::sync::atomic::AtomicBool>,
    stats: Arc<WriterStats>,
    /// Tells the task to finish what is queued and close its connection.
    stop: std::sync::Mutex<Option<(oneshot::Sender<()>, JoinHandle<()>)>>,
}

impl Writer {
    /// Starts the writer's task on `conn`. `begin` opens each batch's
    /// transaction; `connect` replaces the connection should a failed batch
    /// leave it in a state sqlx no longer tracks.
    pub(crate) fn spawn(
        conn: SqliteConnection,
        native: NativeConnection,
        connect: SqliteConnectOptions,
        begin: &'static str,
    ) -> Self {
        let (queue, jobs) = mpsc::channel(QUEUE);
        let (stop, stopped) = oneshot::channel();
        let stats = Arc::new(WriterStats::default());
        let native_alive = native.alive();
        let task = Task {
            conn: Some(conn),
            native,
            stash: None,
            connect,
            begin,
            jobs,
            stats: stats.clone(),
        };
        let handle = tokio::spawn(task.run(stopped));
        Writer {
            queue,
            native_alive,
            stats,
            stop: std::sync::Mutex::new(Some((stop, handle))),
        }
    }

    /// Runs `op` in the next batch, in a savepoint of its own; answers once
    /// that batch has committed.
    pub(crate) async fn submit<T, F>(&self, op: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut Conn) -> BoxFuture<'c, StoreResult<T>> + Send + 'static,
    {
        submit(&self.queue, |reply| Statement::boxed(op, false, reply)).await
    }

    /// Runs `op`, which either succeeds whole or leaves nothing behind (a
    /// single statement, or statements inside a savepoint `op` opens and,
    /// on failure, rolls back itself), in the next batch without a
    /// savepoint of the writer's: no round trip besides its own.
    pub(crate) async fn submit_contained<T, F>(&self, op: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut Conn) -> BoxFuture<'c, StoreResult<T>> + Send + 'static,
    {
        submit(&self.queue, |reply| Statement::boxed(op, true, reply)).await
    }

    /// Runs `op` on the native connection (`crate::sqlite::native`) in the
    /// next batch of native operations; answers once that batch has
    /// committed. `op` runs on that connection's thread among the others of
    /// its batch: statements only, nothing that waits, nothing outside the
    /// connection, since a batch in which an operation fails runs again
    /// ([`run_native_batch`]).
    pub(crate) async fn submit_native<T, F>(&self, op: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnMut(&GrantsConnection) -> StoreResult<T> + Send + 'static,
    {
        submit(&self.queue, |reply| Native::boxed(op, Lane::Native, reply)).await
    }

    /// A handle that runs work on the native connection between batches.
    pub(crate) fn between_batches(&self) -> BetweenBatches {
        BetweenBatches {
            queue: self.queue.clone(),
        }
    }

    /// Holds the writer inside a transaction until the returned guard is
    /// released: writes submitted meanwhile queue, and then run together in
    /// that transaction. For tests that need operations in one batch.
    pub(crate) async fn hold(&self) -> WritesHeld {
        let (started, running) = oneshot::channel::<()>();
        let (release, released) = oneshot::channel::<()>();
        // On its own task, so the guard does not borrow the store.
        let queue = self.queue.clone();
        let done = tokio::spawn(async move {
            submit(&queue, |reply| {
                Statement::boxed(
                    move |_: &mut Conn| -> BoxFuture<'_, _> {
                        Box::pin(async move {
                            let _ = started.send(());
                            // Released, or the guard dropped: either way, go on.
                            let _ = released.await;
                            Ok(())
                        })
                    },
                    false,
                    reply,
                )
            })
            .await
        });
        let _ = running.await;
        WritesHeld {
            release: Some(release),
            done,
        }
    }

    /// Whether the writer's task is still taking operations, and the
    /// grants' connection can still run them.
    pub(crate) fn is_running(&self) -> bool {
        !self.queue.is_closed() && self.native_alive.load(Ordering::Acquire)
    }

    /// Operations queued and not yet taken into a batch.
    pub(crate) fn queued(&self) -> usize {
        self.queue.max_capacity() - self.queue.capacity()
    }

    pub(crate) fn stats(&self) -> &WriterStats {
        &self.stats
    }

    /// Runs what is queued, then closes the connection; later writes are
    /// refused as unavailable.
    pub(crate) async fn close(&self) {
        let stop = self.stop.lock().ok().and_then(|mut stop| stop.take());
        if let Some((stop, handle)) = stop {
            let _ = stop.send(());
            if let Err(err) = handle.await {
                tracing::error!(error = %err, "the storage writer ended abnormally");
            }
        }
    }
}

/// Runs work on the native connection outside any transaction, between
/// two batches, so no commit lands while it runs ([`Writer::between_batches`]).
/// Not counted as a batch.
#[derive(Clone)]
pub(crate) struct BetweenBatches {
    queue: mpsc::Sender<Box<dyn Job>>,
}

impl BetweenBatches {
    /// Runs `op` once the batch in progress (if any) has committed and
    /// before the next begins; its result. Refused as unavailable once the
    /// writer has stopped.
    pub(crate) async fn run<T, F>(&self, op: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&GrantsConnection) -> StoreResult<T> + Send + 'static,
    {
        // Work between batches runs in no batch, so never again.
        let mut op = Some(op);
        let once = move |conn: &GrantsConnection| match op.take() {
            Some(op) => op(conn),
            None => Err(StoreError::Other("a write ran twice".to_owned())),
        };
        submit(&self.queue, |reply| Native::boxed(once, Lane::Alone, reply)).await
    }
}

/// Queues the job `make` makes around its reply, and waits for the answer.
async fn submit<T>(
    queue: &mpsc::Sender<Box<dyn Job>>,
    make: impl FnOnce(oneshot::Sender<StoreResult<T>>) -> Box<dyn Job>,
) -> StoreResult<T> {
    let (reply, answer) = oneshot::channel();
    queue.send(make(reply)).await.map_err(|_| closed())?;
    answer.await.map_err(|_| closed())?
}

/// Keeps the writer inside one transaction until released ([`Writer::hold`]).
pub struct WritesHeld {
    release: Option<oneshot::Sender<()>>,
    done: JoinHandle<StoreResult<()>>,
}

impl WritesHeld {
    /// Lets the held transaction go on with what queued meanwhile, and
    /// waits until it has committed.
    pub async fn release(mut self) -> StoreResult<()> {
        if let Some(release) = self.release.take() {
            let _ = release.send(());
        }
        (&mut self.done)
            .await
            .map_err(|e| StoreError::Other(format!("the hold ended abnormally: {e}")))?
    }
}

fn closed() -> StoreError {
    StoreError::Unavailable("storage is closed".to_owned())
}

/// How an operation runs. A batch holds operations of one lane: the two
/// run on different connections, and only one may be in a transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lane {
    /// Through sqlx; `contained`: needs no savepoint of the writer's.
    Statement { contained: bool },
    /// On the native connection, through rusqlite.
    Native,
    /// On the native connection, outside any transaction, in no batch.
    Alone,
}

impl Lane {
    /// Whether a job of `other` may join a batch begun by one of `self`.
    fn joins(self, other: Lane) -> bool {
        matches!(
            (self, other),
            (Lane::Statement { .. }, Lane::Statement { .. }) | (Lane::Native, Lane::Native)
        )
    }

    /// Whether a statement operation needs no savepoint of the writer's.
    fn contained(self) -> bool {
        self == Lane::Statement { contained: true }
    }
}

/// One queued operation with its caller's answer, type-erased so one queue
/// carries operations of every result type.
trait Job: Send {
    fn lane(&self) -> Lane;
    /// Runs a statement operation; `true` if it succeeded.
    fn run<'c>(&'c mut self, conn: &'c mut Conn) -> BoxFuture<'c, bool>;
    /// Runs a native operation; `true` if it succeeded.
    fn run_native(&mut self, conn: &GrantsConnection) -> bool;
    /// Answers the caller: the operation's own outcome if its batch
    /// committed, the batch's error otherwise.
    fn answer(self: Box<Self>, batch: Result<(), &StoreError>);
}

/// A job's side of its caller's answer.
struct Reply<T> {
    outcome: Option<StoreResult<T>>,
    reply: oneshot::Sender<StoreResult<T>>,
}

impl<T> Reply<T> {
    fn new(reply: oneshot::Sender<StoreResult<T>>) -> Self {
        Reply {
            outcome: None,
            reply,
        }
    }

    /// Keeps `outcome`; whether it is a success.
    fn keep(&mut self, outcome: StoreResult<T>) -> bool {
        let ok = outcome.is_ok();
        self.outcome = Some(outcome);
        ok
    }

    fn send(self, batch: Result<(), &StoreError>) {
        let answer = match (batch, self.outcome) {
            (Err(err), _) => Err(err.clone()),
            (Ok(()), Some(outcome)) => outcome,
            (Ok(()), None) => Err(StoreError::Other("a write never ran".to_owned())),
        };
        // The caller may have gone (a dropped request); its write stands.
        let _ = self.reply.send(answer);
    }
}

/// What a job of the wrong lane answers, should the writer ever run one so.
fn wrong_lane() -> StoreError {
    StoreError::Other("a write ran in the wrong lane".to_owned())
}

/// An operation through sqlx.
struct Statement<T, F> {
    op: Option<F>,
    contained: bool,
    reply: Reply<T>,
}

impl<T, F> Statement<T, F>
where
    T: Send + 'static,
    F: for<'c> FnOnce(&'c mut Conn) -> BoxFuture<'c, StoreResult<T>> + Send + 'static,
{
    fn boxed(op: F, contained: bool, reply: oneshot::Sender<StoreResult<T>>) -> Box<dyn Job> {
        Box::new(Statement {
            op: Some(op),
            contained,
            reply: Reply::new(reply),
        })
    }
}

impl<T, F> Job for Statement<T, F>
where
    T: Send + 'static,
    F: for<'c> FnOnce(&'c mut Conn) -> BoxFuture<'c, StoreResult<T>> + Send + 'static,
{
    fn lane(&self) -> Lane {
        Lane::Statement {
            contained: self.contained,
        }
    }

    fn run<'c>(&'c mut self, conn: &'c mut Conn) -> BoxFuture<'c, bool> {
        Box::pin(async move {
            let outcome = match self.op.take() {
                Some(op) => op(conn).await,
                None => Err(StoreError::Other("a write ran twice".to_owned())),
            };
            self.reply.keep(outcome)
        })
    }

    fn run_native(&mut self, _: &GrantsConnection) -> bool {
        self.reply.keep(Err(wrong_lane()))
    }

    fn answer(self: Box<Self>, batch: Result<(), &StoreError>) {
        self.reply.send(batch);
    }
}

/// An operation on the native connection. It may run twice (a batch
/// retried with savepoints, [`run_native_batch`]), so it only reads and
/// writes through the connection, and its last run is the one answered.
struct Native<T, F> {
    op: F,
    /// [`Lane::Native`], or [`Lane::Alone`] for work between batches.
    lane: Lane,
    reply: Reply<T>,
}

impl<T, F> Native<T, F>
where
    T: Send + 'static,
    F: FnMut(&GrantsConnection) -> StoreResult<T> + Send + 'static,
{
    fn boxed(op: F, lane: Lane, reply: oneshot::Sender<StoreResult<T>>) -> Box<dyn Job> {
        Box::new(Native {
            op,
            lane,
            reply: Reply::new(reply),
        })
    }
}

impl<T, F> Job for Native<T, F>
where
    T: Send + 'static,
    F: FnMut(&GrantsConnection) -> StoreResult<T> + Send + 'static,
{
    fn lane(&self) -> Lane {
        self.lane
    }

    fn run<'c>(&'c mut self, _: &'c mut Conn) -> BoxFuture<'c, bool> {
        Box::pin(async move { self.reply.keep(Err(wrong_lane())) })
    }

    fn run_native(&mut self, conn: &GrantsConnection) -> bool {
        let outcome = (self.op)(conn);
        self.reply.keep(outcome)
    }

    fn answer(self: Box<Self>, batch: Result<(), &StoreError>) {
        self.reply.send(batch);
    }
}

/// The writer's own state, moved into its task.
struct Task {
    /// `None` after a failed reconnect: the next batch tries again.
    conn: Option<Conn>,
    /// The grants' connection, for native operations.
    native: NativeConnection,
    /// A job taken while draining that belongs to the other lane: the
    /// first of the next batch.
    stash: Option<Box<dyn Job>>,
    connect: SqliteConnectOptions,
    begin: &'static str,
    jobs: mpsc::Receiver<Box<dyn Job>>,
    stats: Arc<WriterStats>,
}

impl Task {
    async fn run(mut self, mut stop: oneshot::Receiver<()>) {
        let mut stopping = false;
        loop {
            let first = if let Some(job) = self.stash.take() {
                job
            } else {
                tokio::select! {
                job = self.jobs.recv() => match job {
                    Some(job) => job,
                    None => break,
                },
                _ = &mut stop, if !stopping => {
                    // No new operations; what is queued still runs.
                    self.jobs.close();
                    stopping = true;
                    continue;
                }
                }
            };
            if first.lane() == Lane::Alone {
                self.alone(first).await;
                continue;
            }
            let mut batch = vec![first];
            let outcome = self.batch(&mut batch).await;
            self.stats.record(batch.len());
            if let Err(err) = &outcome {
                tracing::warn!(error = %err, operations = batch.len(), "a write batch failed");
            }
            for job in batch {
                job.answer(outcome.as_ref().map(|_| ()));
            }
        }
        self.native.close().await;
        if let Some(conn) = self.conn.take()
            && let Err(err) = conn.close().await
        {
            tracing::warn!(error = %err, "closing the write connection failed");
        }
    }

    /// Runs `batch` (one operation so far, more as they are drained) in one
    /// transaction and commits it. On failure the transaction is rolled
    /// back, and the connection replaced if even that fails.
    async fn batch(&mut self, batch: &mut Vec<Box<dyn Job>>) -> Result<(), StoreError> {
        if batch[0].lane() == Lane::Native {
            return self.native_batch(batch).await;
        }
        let classify = |e| crate::error::classify(e, "write");
        if self.conn.is_none() {
            self.conn = Some(self.connect.connect().await.map_err(classify)?);
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err(StoreError::Unavailable("no write connection".to_owned()));
        };
        let mut queue = Queue {
            jobs: &mut self.jobs,
            stash: &mut self.stash,
        };
        let ran = run_all(conn, self.begin, batch, &mut queue).await;
        let Err(err) = ran else {
            return Ok(());
        };
        if control(conn, ROLLBACK).await.is_err() {
            // Rolled back already (SQLite does so itself after some I/O
            // errors), or the connection is broken: either way, start afresh.
            if let Some(conn) = self.conn.take() {
                let _ = conn.close().await;
            }
            self.conn = self.connect.connect().await.ok();
        }
        Err(err)
    }

    /// Runs `job` on the native connection's thread, outside any
    /// transaction, and answers it.
    async fn alone(&mut self, job: Box<dyn Job>) {
        let ran = self
            .native
            .run(move |conn| {
                let mut job = job;
                job.run_native(conn);
                job
            })
            .await;
        match ran {
            Ok(job) => job.answer(Ok(())),
            // The job went with the thread; its caller hears the channel
            // close, which it reads as unavailable.
            Err(err) => tracing::warn!(error = %err, "work between batches did not run"),
        }
    }

    /// Runs `batch` (one native operation so far, and what else of its lane
    /// is queued) on the native connection's thread, in one transaction:
    /// one visit there and back for the whole batch.
    async fn native_batch(&mut self, batch: &mut Vec<Box<dyn Job>>) -> Result<(), StoreError> {
        let mut queue = Queue {
            jobs: &mut self.jobs,
            stash: &mut self.stash,
        };
        while batch.len() < MAX_BATCH && queue.take_into(batch, Lane::Native) {}
        let jobs = std::mem::take(batch);
        let begin = self.begin;
        let (jobs, outcome) = self
            .native
            .run(move |conn| {
                let mut jobs = jobs;
                let outcome = run_native_batch(conn, begin, &mut jobs);
                (jobs, outcome)
            })
            .await?;
        *batch = jobs;
        outcome
    }
}

/// The queue, as a batch drains it: a job of the other lane is kept back
/// for the next batch.
struct Queue<'a> {
    jobs: &'a mut mpsc::Receiver<Box<dyn Job>>,
    stash: &'a mut Option<Box<dyn Job>>,
}

impl Queue<'_> {
    /// Takes one queued job of `lane`'s kind into `batch`; `false` when
    /// there is none (the queue is empty, or the next job is of the other
    /// lane and now kept back).
    fn take_into(&mut self, batch: &mut Vec<Box<dyn Job>>, lane: Lane) -> bool {
        if self.stash.is_some() {
            return false;
        }
        match self.jobs.try_recv() {
            Ok(job) if lane.joins(job.lane()) => {
                batch.push(job);
                true
            }
            Ok(job) => {
                *self.stash = Some(job);
                false
            }
            Err(_) => false,
        }
    }
}

/// One transaction on the native connection for `jobs`; a failed step
/// (not a job's own failure) rolls everything back.
///
/// A savepoint per job costs more than the job's statements: SQLite copies
/// every page a job changes into the savepoint's journal first. Jobs
/// seldom fail (a claim that loses answers `Ok`), so the batch first runs
/// with none: `begin`, each job, COMMIT. Should a job fail, its changes so
/// far cannot be undone alone, so the whole transaction is rolled back and
/// the batch runs again with a savepoint per job, kept if it succeeded and
/// undone if not. Each job's answer is from its last run; nothing of the
/// first run was committed.
fn run_native_batch(
    conn: &GrantsConnection,
    begin: &str,
    jobs: &mut [Box<dyn Job>],
) -> Result<(), StoreError> {
    let unguarded = native::control(conn, begin).and_then(|()| {
        let all_ran = jobs.iter_mut().all(|job| job.run_native(conn));
        if all_ran {
            native::control(conn, COMMIT)?;
        }
        Ok(all_ran)
    });
    match unguarded {
        Ok(true) => return Ok(()),
        Ok(false) => {}
        Err(err) => {
            rollback_native(conn);
            return Err(err);
        }
    }
    // Should the rollback fail with the transaction still open, the
    // guarded run's BEGIN fails, and with it the batch.
    rollback_native(conn);
    let guarded = native::control(conn, begin).and_then(|()| {
        for job in jobs.iter_mut() {
            native::control(conn, SAVEPOINT)?;
            let end = if job.run_native(conn) { RELEASE } else { UNDO };
            native::control(conn, end)?;
        }
        native::control(conn, COMMIT)
    });
    if guarded.is_err() {
        rollback_native(conn);
    }
    guarded
}

/// Ends a failed transaction, if SQLite has not already.
fn rollback_native(conn: &GrantsConnection) {
    if !conn.is_autocommit() {
        let _ = native::control(conn, ROLLBACK);
    }
}

// The transaction is driven by these statements, each step one round trip
// to the connection, because every round trip costs (on SQLite a hop to
// the connection's thread and back): the savepoint of one operation is
// released in the same call that opens the next one's, and the last one's
// goes with the COMMIT. sqlx's own `Transaction` would take a round trip
// for each. Contained and native operations run between them with no step
// at all, except after a failed contained one, when the step proves the
// transaction still holds.
const SAVEPOINT: &str = "SAVEPOINT op";
/// The whole batch's savepoint, opened with the transaction: releasing and
/// reopening it fails if the transaction is gone, and only then.
const OPEN_BATCH: &str = "SAVEPOINT batch";
const CHECK_BATCH: &str = "RELEASE batch; SAVEPOINT batch";
const RELEASE: &str = "RELEASE op";
const UNDO: &str = "ROLLBACK TO op; RELEASE op";
const COMMIT: &str = "COMMIT";
const ROLLBACK: &str = "ROLLBACK";

/// Runs one transaction-control step, unprepared (several statements).
async fn control(conn: &mut Conn, sql: &str) -> Result<(), sqlx::Error> {
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&mut *conn)
        .await
        .map(|_| ())
}

/// The control step between one operation and the next: ends the first's
/// savepoint (if it had one: kept when it succeeded, undone when it
/// failed), opens the next's (if it needs one), or commits after the last.
/// After a failed contained operation, which has no savepoint to end, the
/// batch's savepoint is released and reopened, so a transaction SQLite
/// rolled back on its own is found out before anything else could run
/// outside it (a bare `SAVEPOINT` would quietly start a new one). `None`:
/// no step needed.
fn step(ended: Option<(bool, bool)>, next: Option<bool>) -> Option<String> {
    let mut sql: Vec<&str> = Vec::new();
    match ended {
        // (contained, succeeded)
        Some((false, true)) => sql.push(RELEASE),
        Some((false, false)) => sql.push(UNDO),
        Some((true, false)) => sql.push(CHECK_BATCH),
        Some((true, true)) | None => {}
    }
    match next {
        Some(false) => sql.push(SAVEPOINT),
        Some(true) => {}
        None => sql.push(COMMIT),
    }
    (!sql.is_empty()).then(|| sql.join("; "))
}

/// Opens the transaction with `begin`, runs each operation of `batch` (in
/// its own savepoint unless contained), draining the queue into `batch` as
/// it goes, up to [`MAX_BATCH`] and while the queue holds statement
/// operations, and commits. An operation's failure undoes its own changes
/// only; any failed step leaves the transaction for the caller to roll
/// back.
async fn run_all(
    conn: &mut Conn,
    begin: &str,
    batch: &mut Vec<Box<dyn Job>>,
    queue: &mut Queue<'_>,
) -> Result<(), StoreError> {
    let classify = |e| crate::error::classify(e, "write");
    let open = match step(None, Some(batch[0].lane().contained())) {
        Some(first) => format!("{begin}; {OPEN_BATCH}; {first}"),
        None => format!("{begin}; {OPEN_BATCH}"),
    };
    control(conn, &open).await.map_err(classify)?;
    let mut next = 0;
    loop {
        let ok = batch[next].run(conn).await;
        let contained = batch[next].lane().contained();
        next += 1;
        if next == batch.len() && batch.len() < MAX_BATCH {
            queue.take_into(batch, Lane::Statement { contained: false });
        }
        let following = batch.get(next).map(|job| job.lane().contained());
        if let Some(sql) = step(Some((contained, ok)), following) {
            control(conn, &sql).await.map_err(classify)?;
        }
        if following.is_none() {
            return Ok(());
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};

    use super::*;

    /// A writer over a fresh file with a parent and a child table.
    async fn writer(name: &str) -> (Writer, SqliteConnectOptions) {
        let path =
            std::env::temp_dir().join(format!("velocity-writer-{name}-{}.db", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal);
        let mut conn = options.connect().await.unwrap();
        sqlx::raw_sql(
            "CREATE TABLE parent (id INTEGER PRIMARY KEY); \
             CREATE TABLE child (id INTEGER PRIMARY KEY, \
                                 parent INTEGER NOT NULL REFERENCES parent (id));",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        let native = NativeConnection::open(
            &path,
            std::time::Duration::ZERO,
            "PRAGMA foreign_keys = ON;",
        )
        .unwrap();
        (
            Writer::spawn(conn, native, options.clone(), "BEGIN IMMEDIATE"),
            options,
        )
    }

    /// Runs `sql` on the writer, in the next batch.
    async fn run(writer: &Writer, sql: &'static str) -> StoreResult<u64> {
        writer
            .submit(
                move |conn: &mut sqlx::SqliteConnection| -> BoxFuture<'_, _> {
                    Box::pin(async move {
                        sqlx::raw_sql(sql)
                            .execute(conn)
                            .await
                            .map(|done| done.rows_affected())
                            .map_err(|e| crate::error::classify(e, "row"))
                    })
                },
            )
            .await
    }

    /// Removes the test's database files.
    fn remove(options: &SqliteConnectOptions) {
        if let Some(path) = options.get_filename().to_str() {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{path}{suffix}"));
            }
        }
    }

    async fn count(options: &SqliteConnectOptions, table: &str) -> i64 {
        let mut conn = options.connect().await.unwrap();
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
            .fetch_one(&mut conn)
            .await
            .unwrap()
    }

    /// A batch whose COMMIT fails answers every one of its writes with the
    /// error, keeps none of them, and the writer goes on.
    #[tokio::test]
    async fn a_failed_commit_fails_the_whole_batch() {
        let (writer, options) = writer("commit").await;
        let writer = Arc::new(writer);
        let held = writer.hold().await;
        let parent = tokio::spawn({
            let writer = writer.clone();
            async move { run(&writer, "INSERT INTO parent (id) VALUES (1)").await }
        });
        // Deferred, the dangling reference is only refused at COMMIT.
        let orphan = tokio::spawn({
            let writer = writer.clone();
            async move {
                run(
                    &writer,
                    "PRAGMA defer_foreign_keys = ON; INSERT INTO child VALUES (1, 99)",
                )
                .await
            }
        });
        while writer.queued() < 2 {
            tokio::task::yield_now().await;
        }
        assert!(held.release().await.is_err(), "the hold's batch failed too");
        assert!(
            parent.await.unwrap().is_err(),
            "answered with the batch's error"
        );
        assert!(orphan.await.unwrap().is_err());
        assert_eq!(count(&options, "parent").await, 0, "nothing of it is kept");
        assert_eq!(count(&options, "child").await, 0);

        run(&writer, "INSERT INTO parent (id) VALUES (2)")
            .await
            .unwrap();
        assert_eq!(count(&options, "parent").await, 1, "the next batch commits");
        assert_eq!(writer.stats().batches(), 2);
        writer.close().await;
        assert!(matches!(
            run(&writer, "INSERT INTO parent (id) VALUES (3)").await,
            Err(StoreError::Unavailable(_))
        ));
        remove(&options);
    }

    /// Work between batches runs after the batch queued before it has
    /// committed, outside any transaction, and is no batch itself.
    #[tokio::test]
    async fn work_between_batches_runs_outside_a_transaction() {
        let (writer, options) = writer("between").await;
        let writer = Arc::new(writer);
        let held = writer.hold().await;
        let insert = tokio::spawn({
            let writer = writer.clone();
            async move { run(&writer, "INSERT INTO parent (id) VALUES (1)").await }
        });
        while writer.queued() < 1 {
            tokio::task::yield_now().await;
        }
        let between = writer.between_batches();
        let between = tokio::spawn(async move {
            between
                .run(|conn| {
                    let parents = conn
                        .query_row("SELECT COUNT(*) FROM parent", [], |row| {
                            row.get::<_, i64>(0)
                        })
                        .map_err(|e| native::classify(e, "parent"))?;
                    Ok((conn.is_autocommit(), parents))
                })
                .await
        });
        while writer.queued() < 2 {
            tokio::task::yield_now().await;
        }
        held.release().await.unwrap();
        insert.await.unwrap().unwrap();
        let (outside, parents) = between.await.unwrap().unwrap();
        assert!(outside, "no transaction is open around it");
        assert_eq!(parents, 1, "the batch queued before it had committed");
        assert_eq!(
            writer.stats().batches(),
            1,
            "the insert joined the hold's batch"
        );
        assert_eq!(writer.stats().operations(), 2);
        writer.close().await;
        assert!(matches!(
            writer.between_batches().run(|_| Ok(())).await,
            Err(StoreError::Unavailable(_))
        ));
        remove(&options);
    }

    /// The writer's catch-up copies what a checkpoint elsewhere left (what
    /// committed after it), so its next commit starts the WAL afresh.
    #[tokio::test]
    async fn the_catch_up_starts_the_wal_afresh() {
        let (writer, options) = writer("catch-up").await;
        let mut elsewhere = options.connect().await.unwrap();
        let checkpoint = async |conn: &mut sqlx::SqliteConnection| {
            sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(PASSIVE)")
                .fetch_one(conn)
                .await
                .unwrap()
        };
        for sql in [
            "INSERT INTO parent (id) VALUES (1)",
            "INSERT INTO parent (id) VALUES (2)",
            "INSERT INTO parent (id) VALUES (3)",
        ] {
            run(&writer, sql).await.unwrap();
        }
        // A reader on the WAL as it stands keeps the next commit from
        // starting it afresh, as readers under load do.
        let mut reader = options.connect().await.unwrap();
        sqlx::raw_sql("BEGIN; SELECT COUNT(*) FROM parent")
            .execute(&mut reader)
            .await
            .unwrap();
        let (_, frames, copied) = checkpoint(&mut elsewhere).await;
        assert_eq!(copied, frames, "all it saw is copied");
        run(&writer, "INSERT INTO parent (id) VALUES (4)")
            .await
            .unwrap();
        sqlx::raw_sql("COMMIT").execute(&mut reader).await.unwrap();
        let progress = writer
            .between_batches()
            .run(crate::sqlite::checkpoint::catch_up)
            .await
            .unwrap();
        assert_eq!(progress.busy, 0);
        assert!(progress.frames > frames, "the last commit came after");
        assert_eq!(progress.copied, progress.frames, "and is copied too");

        run(&writer, "INSERT INTO parent (id) VALUES (5)")
            .await
            .unwrap();
        let (_, restarted, _) = checkpoint(&mut elsewhere).await;
        assert!(
            restarted < frames,
            "the WAL started again: {restarted} frames, {frames} before"
        );
        assert_eq!(count(&options, "parent").await, 5);
        drop((elsewhere, reader));
        writer.close().await;
        remove(&options);
    }

    /// A native operation that fails half-way, between two that succeed in
    /// its batch, leaves nothing of its own: the batch, run first without
    /// savepoints, is rolled back and runs again with one per operation.
    /// Each is answered from that second run, and the batch commits once.
    #[tokio::test]
    async fn a_failed_native_operation_undoes_only_its_own_writes() {
        let (writer, options) = writer("native-fails").await;
        let writer = Arc::new(writer);
        let held = writer.hold().await;
        let mut answers = Vec::new();
        let operations: [&[&'static str]; 3] = [
            &["INSERT INTO parent (id) VALUES (1)"],
            // Its first statement succeeds, the second refers to no parent.
            &[
                "INSERT INTO parent (id) VALUES (2)",
                "INSERT INTO child (id, parent) VALUES (1, 99)",
            ],
            &["INSERT INTO parent (id) VALUES (3)"],
        ];
        for (queued, statements) in operations.into_iter().enumerate() {
            let submitter = writer.clone();
            answers.push(tokio::spawn(async move {
                submitter
                    .submit_native(move |conn| {
                        for sql in statements {
                            conn.execute_batch(sql)
                                .map_err(|e| native::classify(e, "row"))?;
                        }
                        Ok(())
                    })
                    .await
            }));
            // In this order, so that one runs before the failure and one after.
            while writer.queued() <= queued {
                tokio::task::yield_now().await;
            }
        }
        held.release().await.unwrap();
        let mut outcomes = Vec::new();
        for answer in answers {
            outcomes.push(answer.await.unwrap().is_ok());
        }
        assert_eq!(outcomes, [true, false, true]);
        let mut conn = options.connect().await.unwrap();
        let parents: Vec<i64> = sqlx::query_scalar("SELECT id FROM parent ORDER BY id")
            .fetch_all(&mut conn)
            .await
            .unwrap();
        assert_eq!(
            parents,
            [1, 3],
            "the failed operation's first insert is undone"
        );
        assert_eq!(count(&options, "child").await, 0);
        assert_eq!(
            writer.stats().batches(),
            2,
            "the hold's, then one for all three"
        );
        writer.close().await;
        remove(&options);
    }

    /// A grants' thread that ends (a native operation that panics) is
    /// seen: its callers are told storage is unavailable, and the writer
    /// no longer counts as running, so the store is not ready.
    #[tokio::test]
    #[allow(clippy::panic)]
    async fn a_dead_grants_thread_is_seen() {
        let (writer, options) = writer("native-ends").await;
        assert!(writer.is_running());
        let died = writer
            .submit_native(|_| -> StoreResult<()> { panic!("a native operation that panics") })
            .await;
        assert!(matches!(died, Err(StoreError::Unavailable(_))), "{died:?}");
        // Waiting for a state: the flag drops as the thread unwinds.
        for _ in 0..5000 {
            if !writer.is_running() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        assert!(!writer.is_running(), "the dead thread is seen");
        assert!(matches!(
            writer.submit_native(|_| Ok(())).await,
            Err(StoreError::Unavailable(_))
        ));
        // The other connection still writes.
        run(&writer, "INSERT INTO parent (id) VALUES (1)")
            .await
            .unwrap();
        assert_eq!(count(&options, "parent").await, 1);
        writer.close().await;
        remove(&options);
    }
}
