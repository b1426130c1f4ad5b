//! Group claims: the grants' writes on PostgreSQL, several to a statement.
//!
//! A claim alone is one statement of data-modifying CTEs (`claim_one`):
//! one round trip, one transaction, one commit. Under load most of what
//! PostgreSQL spends on it is per statement (starting and finishing the
//! executor, the commit and its WAL flush, the protocol), not per row. So
//! claims queue here, and a task sends what has queued as one statement
//! (each claim's CTEs side by side, renumbered), which commits them
//! together and names the claims that changed their row.
//!
//! - [`IN_FLIGHT`] statement runs at a time: while it does, claims queue
//!   and form the next one, so a loaded server sends fewer, larger
//!   statements and an idle one sends each claim at once.
//! - A statement holds claims of one shape (the same SQL), so the pool's
//!   prepared statements are a few per shape, one per size.
//! - Claims that share a row (a code, a refresh token, a grant: `Key`) never
//!   share a statement. Two updates of one row in one statement are not
//!   ordered (PostgreSQL applies one and skips the other), whereas in
//!   statements of their own the second waits for the first and sees it,
//!   which the refresh reuse interval depends on. The second goes in a
//!   later statement, which is what happens to a concurrent claim anyway.
//! - A statement the server refuses (a constraint, a deadlock) changed
//!   nothing: its claims are then run one by one, so each gets its own
//!   answer. Any other error (the connection lost) leaves unknown whether
//!   it committed, and every claim of it gets that error, as a single
//!   claim's caller would.
//! - A claim answers with a flag (it won), or, for a code spent as
//!   presented, with the code's row, which its caller has not read
//!   ([`Returning`]): what a claim returns is part of its shape.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use sqlx::PgPool;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;
use velocity_domain::StoreError;
use velocity_domain::oauth::AuthorizationCode;
use velocity_domain::store::StoreResult;

use crate::claim::{Claim, ClaimText, Key, map_placeholders};
use crate::error::classify;
use crate::rows::{CODE_COLUMNS, CodeRow};

/// Most claims in one statement: every connection of a loaded server, with
/// the statement's arguments (about 35 a claim) far below the protocol's
/// 65,535.
pub(crate) const MAX_CLAIMS: usize = 16;

/// Statements of claims running at once. One, as SQLite's writer: larger
/// statements than with two (about 4 claims each at 16 connections), and
/// 10 % more refresh grants in a sitting that alternated the two.
pub(crate) const IN_FLIGHT: usize = 1;
/// [`IN_FLIGHT`], as semaphores and the claims' pool count.
pub(crate) const IN_FLIGHT_U32: u32 = IN_FLIGHT as u32;

/// Claims waiting for a statement; a full queue makes callers wait.
const QUEUE: usize = 4096;

/// What the batcher has done, for tests and operators.
#[derive(Debug, Default)]
pub struct ClaimStats {
    statements: AtomicUsize,
    claims: AtomicUsize,
    retried: AtomicUsize,
}

impl ClaimStats {
    /// Statements sent, each with one claim or more.
    pub fn statements(&self) -> usize {
        self.statements.load(Ordering::Relaxed)
    }

    /// Claims sent, in all statements.
    pub fn claims(&self) -> usize {
        self.claims.load(Ordering::Relaxed)
    }

    /// Claims run again on their own after their statement was refused.
    pub fn retried(&self) -> usize {
        self.retried.load(Ordering::Relaxed)
    }
}

/// What a claim's statement gives back for it when it wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Returning {
    /// That it won.
    Flag,
    /// The code it spent, as the claim left it.
    Code,
}

/// What became of a claim in its statement.
enum Outcome {
    /// It changed nothing.
    Lost,
    /// It changed its row; with the code's row for [`Returning::Code`].
    Won(Option<Box<CodeRow>>),
}

struct Pending {
    claim: Claim,
    returning: Returning,
    reply: oneshot::Sender<StoreResult<Outcome>>,
}

/// The handle the store keeps: a queue into the batching task.
pub(crate) struct ClaimBatcher {
    queue: mpsc::Sender<Pending>,
    /// One permit per statement in flight.
    in_flight: Arc<Semaphore>,
    /// Claims the task has taken and holds until a turn is free (0 or 1).
    waiting: Arc<AtomicUsize>,
    stats: Arc<ClaimStats>,
    /// Tells the task to send what is queued and stop.
    stop: std::sync::Mutex<Option<(oneshot::Sender<()>, JoinHandle<()>)>>,
}

impl ClaimBatcher {
    pub(crate) fn spawn(pool: PgPool) -> Self {
        let (queue, arrivals) = mpsc::channel(QUEUE);
        let (stop, stopped) = oneshot::channel();
        let stats = Arc::new(ClaimStats::default());
        let in_flight = Arc::new(Semaphore::new(IN_FLIGHT));
        let waiting = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(run(
            pool,
            arrivals,
            stopped,
            in_flight.clone(),
            waiting.clone(),
            stats.clone(),
        ));
        ClaimBatcher {
            queue,
            in_flight,
            waiting,
            stats,
            stop: std::sync::Mutex::new(Some((stop, task))),
        }
    }

    /// Runs `claim` in the next statement; whether it changed its row.
    pub(crate) async fn claim(&self, claim: Claim) -> StoreResult<bool> {
        let outcome = self.submit(claim, Returning::Flag).await?;
        Ok(matches!(outcome, Outcome::Won(_)))
    }

    /// Runs `claim`, on a code, in the next statement: the code as the
    /// claim left it, if it changed it.
    pub(crate) async fn claim_code(&self, claim: Claim) -> StoreResult<Option<AuthorizationCode>> {
        let outcome = self.submit(claim, Returning::Code).await?;
        code_of(outcome)
    }

    async fn submit(&self, claim: Claim, returning: Returning) -> StoreResult<Outcome> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Pending {
                claim,
                returning,
                reply,
            })
            .await
            .map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }

    pub(crate) fn stats(&self) -> &ClaimStats {
        &self.stats
    }

    /// Claims queued and not yet in a statement.
    pub(crate) fn queued(&self) -> usize {
        self.queue.max_capacity() - self.queue.capacity() + self.waiting.load(Ordering::Acquire)
    }

    /// Takes every statement's turn until the guard is released: claims
    /// submitted meanwhile queue, and then go together. For tests that
    /// need claims in one statement.
    pub(crate) async fn hold(&self) -> ClaimsHeld {
        ClaimsHeld {
            _turns: self
                .in_flight
                .clone()
                .acquire_many_owned(IN_FLIGHT_U32)
                .await
                .ok(),
        }
    }

    /// Sends what is queued and waits for it; later claims are refused.
    pub(crate) async fn close(&self) {
        let stop = self.stop.lock().ok().and_then(|mut stop| stop.take());
        if let Some((stop, task)) = stop {
            let _ = stop.send(());
            if let Err(err) = task.await {
                tracing::error!(error = %err, "the claim batcher ended abnormally");
            }
        }
    }
}

/// Keeps claims queued until dropped or released ([`ClaimBatcher::hold`]).
pub struct ClaimsHeld {
    _turns: Option<OwnedSemaphorePermit>,
}

impl ClaimsHeld {
    /// Lets the queued claims go.
    pub fn release(self) {}
}

fn closed() -> StoreError {
    StoreError::Unavailable("storage is closed".to_owned())
}

async fn run(
    pool: PgPool,
    mut arrivals: mpsc::Receiver<Pending>,
    mut stop: oneshot::Receiver<()>,
    in_flight: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
    stats: Arc<ClaimStats>,
) {
    let mut deferred: VecDeque<Pending> = VecDeque::new();
    let mut stopping = false;
    loop {
        let first = match deferred.pop_front() {
            Some(first) => first,
            None => tokio::select! {
                pending = arrivals.recv() => match pending {
                    Some(first) => first,
                    None => break,
                },
                _ = &mut stop, if !stopping => {
                    // No new claims; what is queued still goes.
                    arrivals.close();
                    stopping = true;
                    continue;
                }
            },
        };
        // Then a turn: while the statements in flight run, claims queue.
        waiting.store(1, Ordering::Release);
        let turn = in_flight.clone().acquire_owned().await;
        let batch = gather(first, &mut deferred, &mut arrivals);
        waiting.store(0, Ordering::Release);
        let Ok(permit) = turn else {
            for pending in batch {
                let _ = pending.reply.send(Err(closed()));
            }
            break;
        };
        stats.statements.fetch_add(1, Ordering::Relaxed);
        stats.claims.fetch_add(batch.len(), Ordering::Relaxed);
        let pool = pool.clone();
        let stats = stats.clone();
        tokio::spawn(async move {
            send(&pool, batch, &stats).await;
            drop(permit);
        });
    }
    // Every turn back: the statements in flight have answered.
    let _ = in_flight.acquire_many(IN_FLIGHT_U32).await;
    // The claims' own connections: nothing else uses them.
    pool.close().await;
}

/// `first` and what has queued of its shape with no key in common, up to
/// [`MAX_CLAIMS`]; the rest waits, in order, for the next statement.
fn gather(
    first: Pending,
    deferred: &mut VecDeque<Pending>,
    arrivals: &mut mpsc::Receiver<Pending>,
) -> Vec<Pending> {
    let mut keys: HashSet<Key> = first.claim.keys.iter().cloned().collect();
    let mut batch = vec![first];
    let mut later = VecDeque::new();
    let mut consider = |pending: Pending, batch: &mut Vec<Pending>| {
        let fits = batch.len() < MAX_CLAIMS
            && batch[0].returning == pending.returning
            && same_shape(&batch[0].claim, &pending.claim)
            && pending.claim.keys.iter().all(|key| !keys.contains(key));
        if fits {
            keys.extend(pending.claim.keys.iter().cloned());
            batch.push(pending);
        } else {
            later.push_back(pending);
        }
    };
    while let Some(pending) = deferred.pop_front() {
        consider(pending, &mut batch);
    }
    // No more than a few statements' worth is looked at: a run of claims
    // of other shapes stays in the queue, where its bound holds, rather
    // than all set aside here.
    let mut looked = 0;
    while batch.len() < MAX_CLAIMS && looked < 4 * MAX_CLAIMS {
        looked += 1;
        match arrivals.try_recv() {
            Ok(pending) => consider(pending, &mut batch),
            Err(_) => break,
        }
    }
    *deferred = later;
    batch
}

fn same_shape(a: &Claim, b: &Claim) -> bool {
    ClaimText::same(&a.text, &b.text) && a.values.len() == b.values.len()
}

/// Runs `batch` and answers each claim.
async fn send(pool: &PgPool, batch: Vec<Pending>, stats: &ClaimStats) {
    if batch.len() > 1 {
        let claims: Vec<&Claim> = batch.iter().map(|pending| &pending.claim).collect();
        match claim_together(pool, &claims, batch[0].returning).await {
            Ok(mut won) => {
                for (i, pending) in batch.into_iter().enumerate() {
                    let outcome = won.remove(&i).map_or(Outcome::Lost, Outcome::Won);
                    let _ = pending.reply.send(Ok(outcome));
                }
                return;
            }
            Err(sqlx::Error::Database(refused)) => {
                // Refused whole, so nothing of it happened: each on its own.
                tracing::debug!(error = %refused, claims = batch.len(), "claims refused together; running them apart");
                stats.retried.fetch_add(batch.len(), Ordering::Relaxed);
            }
            Err(err) => {
                let err = classify(err, batch[0].claim.what);
                for pending in batch {
                    let _ = pending.reply.send(Err(err.clone()));
                }
                return;
            }
        }
    }
    for pending in batch {
        let outcome = claim_alone(pool, &pending.claim, pending.returning).await;
        let _ = pending.reply.send(outcome);
    }
}

/// One claim, one statement: whether it changed its row.
pub(crate) async fn claim_one(pool: &PgPool, claim: &Claim) -> StoreResult<bool> {
    let outcome = claim_alone(pool, claim, Returning::Flag).await?;
    Ok(matches!(outcome, Outcome::Won(_)))
}

/// One claim on a code, one statement: the code as the claim left it, if
/// it changed it.
pub(crate) async fn claim_code(
    pool: &PgPool,
    claim: &Claim,
) -> StoreResult<Option<AuthorizationCode>> {
    code_of(claim_alone(pool, claim, Returning::Code).await?)
}

async fn claim_alone(pool: &PgPool, claim: &Claim, returning: Returning) -> StoreResult<Outcome> {
    let mut won = claim_together(pool, &[claim], returning)
        .await
        .map_err(|e| classify(e, claim.what))?;
    Ok(won.remove(&0).map_or(Outcome::Lost, Outcome::Won))
}

/// The code a claim with [`Returning::Code`] spent, if it won.
fn code_of(outcome: Outcome) -> StoreResult<Option<AuthorizationCode>> {
    match outcome {
        Outcome::Lost => Ok(None),
        Outcome::Won(Some(row)) => (*row).try_into().map(Some),
        // Each winner's row is what names it in the answer, so a won code
        // claim always has one.
        Outcome::Won(None) => Err(StoreError::Other(
            "a code claim won without its row".to_owned(),
        )),
    }
}

/// `claims` in one statement: those that changed their row, by index,
/// each with the code's row for [`Returning::Code`]. The claims share a
/// shape (`same_shape`), so the statement is made once for each number of
/// them and kept with their text.
async fn claim_together(
    pool: &PgPool,
    claims: &[&Claim],
    returning: Returning,
) -> Result<HashMap<usize, Option<Box<CodeRow>>>, sqlx::Error> {
    use sqlx::{Arguments as _, FromRow as _, Row as _};
    let Some(first) = claims.first() else {
        return Ok(HashMap::new());
    };
    let mut arguments = sqlx::postgres::PgArguments::default();
    for claim in claims {
        claim
            .add_arguments::<sqlx::Postgres>(&mut arguments)
            .map_err(sqlx::Error::Encode)?;
    }
    let values = first.values.len();
    debug_assert!(claims.iter().all(|claim| same_shape(first, claim)));
    debug_assert_eq!(arguments.len(), values * claims.len());
    let key = claims.len() * 2 + usize::from(returning == Returning::Code);
    let sql = first
        .text
        .joined(key, |text| statement(text, claims.len(), values, returning));
    let rows = sqlx::query_with(sqlx::AssertSqlSafe(sql), arguments)
        .fetch_all(pool)
        .await?;
    let mut won = HashMap::with_capacity(rows.len());
    for row in rows {
        let Ok(i) = usize::try_from(row.try_get::<i32, _>("claim_index")?) else {
            continue;
        };
        let code = match returning {
            Returning::Flag => None,
            Returning::Code => Some(Box::new(CodeRow::from_row(&row)?)),
        };
        won.insert(i, code);
    }
    Ok(won)
}

/// The statement of `claims` claims of `text`'s shape, `values` values
/// each: every claim's CTEs, its placeholders moved up past the claims
/// before it, then the index of each that changed its row (and, for
/// [`Returning::Code`], the code's row).
fn statement(text: &ClaimText, claims: usize, values: usize, returning: Returning) -> String {
    let columns = match returning {
        Returning::Flag => "1",
        Returning::Code => CODE_COLUMNS,
    };
    let mut sql = String::from("WITH ");
    let mut select = Vec::with_capacity(claims);
    for i in 0..claims {
        if i > 0 {
            sql.push_str(", ");
        }
        claim_ctes(&mut sql, text, i, i * values, columns);
        select.push(match returning {
            Returning::Flag => format!("SELECT {i} AS claim_index FROM claimed_{i}"),
            Returning::Code => {
                format!("SELECT {i} AS claim_index, {CODE_COLUMNS} FROM claimed_{i}")
            }
        });
    }
    sql.push(' ');
    sql.push_str(&select.join(" UNION ALL "));
    sql
}

/// Appends claim `i`'s CTEs, its placeholders moved up by `offset`: the
/// claim (`claimed_i`, `returning` what it changed), then each insert, run
/// only if it changed a row.
fn claim_ctes(sql: &mut String, text: &ClaimText, i: usize, offset: usize, returning: &str) {
    sql.push_str(&format!(
        "claimed_{i} AS ({} RETURNING {returning})",
        renumber(&text.claim, offset)
    ));
    for (j, then) in text.then.iter().enumerate() {
        let insert = then.select_where(&format!("WHERE EXISTS (SELECT 1 FROM claimed_{i})"));
        sql.push_str(&format!(
            ", then_{i}_{j} AS ({})",
            renumber(&insert, offset)
        ));
    }
}

/// `sql` with each `$n` made `$(n + offset)`.
fn renumber(sql: &str, offset: usize) -> String {
    if offset == 0 {
        return sql.to_owned();
    }
    map_placeholders(sql, |out, n| {
        out.push('$');
        out.push_str(&(n + offset).to_string());
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_move_up_and_nothing_else_changes() {
        assert_eq!(
            renumber("UPDATE t SET a = $2 WHERE id = $1 AND b = $12", 10),
            "UPDATE t SET a = $12 WHERE id = $11 AND b = $22"
        );
        assert_eq!(renumber("SELECT $1", 0), "SELECT $1");
        assert_eq!(renumber("no placeholders", 5), "no placeholders");
        assert_eq!(renumber("a lone $ stays", 5), "a lone $ stays");
    }
}
