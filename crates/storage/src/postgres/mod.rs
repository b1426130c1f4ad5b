//! PostgreSQL: production, and the shared state of several replicas.

use std::str::FromStr;
use std::sync::Arc;

use sqlx::postgres::{PgConnectOptions, PgConnection, PgListener, PgPoolOptions};
use tokio::sync::Notify;

use velocity_domain::SecretHash;
use velocity_domain::oauth::AuthorizationCode;
use velocity_domain::store::StoreResult;

use crate::claim::Claim;
use crate::error::{StorageError, classify};
use crate::writer::BoxFuture;
use crate::{Backend, SqlStore, StorageOptions};
use claims::ClaimBatcher;

/// The backend the shared SQL of `src/sql/` is compiled for here.
type Db = sqlx::Postgres;

#[path = "../sql/mod.rs"]
#[expect(
    clippy::duplicate_mod,
    reason = "by design: the shared SQL is compiled once per backend"
)]
mod sql;

pub(crate) mod claims;

/// The NOTIFY channel invalidations are announced on.
pub const INVALIDATION_CHANNEL: &str = "velocity_invalidations";

pub type PostgresStore = SqlStore<sqlx::Postgres>;

/// Prepared statements each connection keeps: our queries, or on the
/// claims' connections the claim batcher's, up to `claims::MAX_CLAIMS`
/// sizes of each claim's shape. Past it, a statement evicted is parsed and
/// planned again.
const STATEMENTS: usize = 256;

/// Pooled connections idle longer than this are pinged before use.
const IDLE_BEFORE_PING: std::time::Duration = std::time::Duration::from_secs(1);

/// A pool of up to `max` connections, as every pool of ours is kept.
fn pool_options(max: u32, options: &StorageOptions) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max)
        // Testing every connection as it leaves the pool is a round trip
        // before each query. A connection in use moments ago is alive; one
        // idle for a while (through a server restart, perhaps) is tested
        // first, so a dead one is replaced rather than failing a request.
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for < IDLE_BEFORE_PING {
                    return Ok(true);
                }
                Ok(sqlx::Connection::ping(conn).await.is_ok())
            })
        })
        .acquire_timeout(options.acquire_timeout)
}

impl PostgresStore {
    pub async fn open(url: &str, options: &StorageOptions) -> Result<Self, StorageError> {
        let connect = PgConnectOptions::from_str(url)
            .map_err(StorageError::Connect)?
            .statement_cache_capacity(STATEMENTS)
            // Every query of ours looks rows up by a key or pages by an
            // index, so one plan suits every argument. By default each
            // connection plans each prepared statement afresh for its
            // first five runs; a claim statement of several claims costs
            // more to plan than to run.
            .options([("plan_cache_mode", "force_generic_plan")]);
        let pool = pool_options(options.max_connections.max(1), options)
            .connect_with(connect.clone())
            .await
            .map_err(StorageError::Connect)?;
        // The claims' statements on connections of their own, as many as
        // run at once: each connection prepares and plans each size of
        // each claim shape once, and a claim statement of several claims
        // costs PostgreSQL more to plan than to run. Spread over the
        // shared pool (16 connections, grown under other load) those
        // first runs were a sixth of the database's CPU in a peer-bench
        // exchange phase (docs/performance.md, thirteenth sitting).
        let claims_pool = pool_options(claims::IN_FLIGHT_U32, options).connect_lazy_with(connect);
        sqlx::migrate!("../../migrations/postgres")
            .run(&pool)
            .await
            .map_err(StorageError::Migrate)?;
        // Writes take pooled connections: PostgreSQL has no single-writer
        // lock, and commits of concurrent transactions share fsyncs there.
        // The grants' claims, the hot writes, go several to a statement.
        Ok(SqlStore {
            claims: Some(ClaimBatcher::spawn(claims_pool)),
            pool,
            writer: None,
            checkpointer: None,
        })
    }

    /// Wakes `notify` whenever another replica commits an invalidation, and
    /// once after every (re)connection, since notifications sent while the
    /// listener was away are lost (the log is not: the woken poll reads it).
    pub async fn listen_for_invalidations(&self, notify: Arc<Notify>) {
        loop {
            match PgListener::connect_with(&self.pool).await {
                Ok(mut listener) => match listener.listen(INVALIDATION_CHANNEL).await {
                    Ok(()) => {
                        notify.notify_one();
                        loop {
                            match listener.recv().await {
                                Ok(_) => notify.notify_one(),
                                Err(err) => {
                                    tracing::warn!(error = %err, "invalidation listener lost; reconnecting");
                                    break;
                                }
                            }
                        }
                    }
                    Err(err) => tracing::warn!(error = %err, "cannot LISTEN for invalidations"),
                },
                Err(err) => {
                    tracing::warn!(error = %err, "cannot connect the invalidation listener")
                }
            }
            notify.notify_one();
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    }
}

impl PostgresStore {
    /// Runs `op`, which succeeds whole or leaves nothing behind (a single
    /// statement), on a pooled connection.
    pub(crate) async fn write<T, F>(&self, what: &'static str, op: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, StoreResult<T>> + Send + 'static,
    {
        let mut conn = self.pool.acquire().await.map_err(|e| classify(e, what))?;
        op(&mut conn).await
    }

    /// Runs `op`, several statements, in a transaction of its own on a
    /// pooled connection, rolled back if `op` fails.
    pub(crate) async fn write_atomic<T, F>(&self, what: &'static str, op: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, StoreResult<T>> + Send + 'static,
    {
        let classify = |e| classify(e, what);
        let mut tx = self.pool.begin().await.map_err(classify)?;
        let value = op(&mut tx).await?;
        tx.commit().await.map_err(classify)?;
        Ok(value)
    }
}

impl Backend for sqlx::Postgres {
    /// Wakes every replica listening on [`INVALIDATION_CHANNEL`]; PostgreSQL
    /// delivers it only if the transaction commits.
    async fn after_invalidation_logged(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(INVALIDATION_CHANNEL)
            .execute(conn)
            .await
            .map(|_| ())
    }

    /// Data-modifying CTEs: one statement, one round trip, atomic on its
    /// own (PostgreSQL runs it in a transaction of its own), every part
    /// seeing the same snapshot, each insert conditioned on the claim; with
    /// other claims queued meanwhile, in the same statement (`claims`).
    async fn claim(store: &PostgresStore, claim: Claim) -> StoreResult<bool> {
        match &store.claims {
            Some(claims) => claims.claim(claim).await,
            None => claims::claim_one(&store.pool, &claim).await,
        }
    }

    /// As [`Self::claim`], the statement returning the code's row for
    /// each claim that spent one.
    async fn claim_code(
        store: &PostgresStore,
        claim: Claim,
        _hash: &SecretHash,
    ) -> StoreResult<Option<AuthorizationCode>> {
        match &store.claims {
            Some(claims) => claims.claim_code(claim).await,
            None => claims::claim_code(&store.pool, &claim).await,
        }
    }
}
