//! Rate-limit budgets shared across replicas through Redis (`REDIS_URL`;
//! docs/limits.md). The domain decides every call on what this replica
//! knows; this task reports its counts in rounds (every
//! `VELOCITY_RATE_LIMIT_SYNC_MS`, or at once when a key has used its
//! batch), one pipeline of `INCRBY` + `PEXPIRE` per round, and hands the
//! totals back. When Redis does not answer, budgets fall back to local
//! counting (logged, and in `RateLimitStats`) until a `PING` succeeds.

use std::sync::Arc;
use std::time::Duration;

use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use velocity_domain::rate_limit::{BudgetSync, RateLimiter, Report};

/// Every shared counter's name starts so.
pub const KEY_PREFIX: &str = "velocity:rl:";

/// Longest a round (or a connection attempt) may take before Redis counts
/// as unreachable.
const REDIS_TIMEOUT: Duration = Duration::from_millis(500);

/// The call path's side: asks for a round and waits for it to end.
struct Rounds {
    wake: Notify,
    done: Notify,
}

#[async_trait::async_trait]
impl BudgetSync for Rounds {
    async fn sync(&self) {
        // Registered before the wake-up, so the round's end is not missed.
        let done = self.done.notified();
        self.wake.notify_one();
        // A round ends within the Redis timeout; this guards the call path
        // should the task be gone.
        let _ = tokio::time::timeout(REDIS_TIMEOUT * 2, done).await;
    }
}

/// Attaches Redis to the limiter and spawns the task running the rounds.
pub fn spawn(
    url: &str,
    limiter: Arc<RateLimiter>,
    every: Duration,
    shutdown: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let client = redis::Client::open(url)
        .map_err(|e| anyhow::anyhow!("REDIS_URL is not a Redis URL: {e}"))?;
    let rounds = Arc::new(Rounds {
        wake: Notify::new(),
        done: Notify::new(),
    });
    limiter.share(rounds.clone());
    Ok(tokio::spawn(async move {
        let mut task = SyncTask {
            client,
            connection: None,
            limiter,
        };
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = rounds.wake.notified() => {}
                _ = tokio::time::sleep(every) => {}
            }
            task.round().await;
            rounds.done.notify_waiters();
        }
    }))
}

struct SyncTask {
    client: redis::Client,
    connection: Option<MultiplexedConnection>,
    limiter: Arc<RateLimiter>,
}

impl SyncTask {
    async fn round(&mut self) {
        if self.limiter.is_fallback() {
            self.try_restore().await;
            return;
        }
        let reports = self.limiter.take_reports();
        if reports.is_empty() {
            return;
        }
        match self.report(&reports).await {
            Ok(totals) => self.limiter.apply(&reports, &totals),
            Err(err) => {
                self.limiter.reports_failed(&reports);
                self.connection = None;
                if self.limiter.set_fallback(true) {
                    tracing::warn!(error = %err, "Redis unreachable: rate limits are counted on this replica alone until it answers");
                }
            }
        }
    }

    async fn connection(&mut self) -> redis::RedisResult<MultiplexedConnection> {
        if let Some(connection) = &self.connection {
            return Ok(connection.clone());
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT));
        let connection = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        self.connection = Some(connection.clone());
        Ok(connection)
    }

    /// One pipeline: each report's `INCRBY`, its counter's expiry; the
    /// totals after it.
    async fn report(&mut self, reports: &[Report]) -> redis::RedisResult<Vec<u64>> {
        let mut connection = self.connection().await?;
        let mut pipe = redis::pipe();
        for report in reports {
            let name = report.counter_name(KEY_PREFIX);
            let expire = u64::try_from(report.expire_after.as_millis()).unwrap_or(u64::MAX);
            pipe.cmd("INCRBY").arg(&name).arg(report.count);
            pipe.cmd("PEXPIRE").arg(&name).arg(expire).ignore();
        }
        let answer = tokio::time::timeout(REDIS_TIMEOUT, pipe.query_async(&mut connection)).await;
        match answer {
            Ok(totals) => totals,
            Err(_) => Err(redis::RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no answer in time",
            ))),
        }
    }

    async fn try_restore(&mut self) {
        let ping = async {
            let mut connection = self.connection().await?;
            redis::cmd("PING")
                .query_async::<String>(&mut connection)
                .await
        };
        match tokio::time::timeout(REDIS_TIMEOUT, ping).await {
            Ok(Ok(_)) => {
                if self.limiter.set_fallback(false) {
                    tracing::info!("Redis answers again: rate limits are shared across replicas");
                }
            }
            _ => self.connection = None,
        }
    }
}
