//! Keeping this replica's cache and known-credential filter in step with
//! storage: loaded once at start, then fed from the invalidation log.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use crate::clock::{Clock, SystemClock, Timestamp};
use crate::credential::SecretHash;
use crate::error::Error;

use super::Service;

const PAGE: i64 = 10_000;
/// How long an id the log skipped is looked for again. A PostgreSQL
/// sequence hands out ids before commit, so a later id can commit first;
/// a rolled-back transaction leaves a gap for good.
const GAP_PATIENCE: Duration = Duration::from_secs(10);
/// Log rows are kept this long.
pub const LOG_RETENTION_SECS: i64 = 3600;
/// A replica that could not read the log for this long may have missed
/// pruned rows, so it starts again from a clean cache.
const STALE_AFTER: Duration = Duration::from_secs(LOG_RETENTION_SECS as u64 / 2);

#[derive(Debug)]
pub(super) struct SyncState {
    cursor: AtomicI64,
    /// Ids below the cursor not seen yet, with when they were first missed.
    gaps: Mutex<BTreeMap<i64, Instant>>,
    last_success: Mutex<Instant>,
}

impl Default for SyncState {
    fn default() -> Self {
        SyncState {
            cursor: AtomicI64::new(0),
            gaps: Mutex::new(BTreeMap::new()),
            last_success: Mutex::new(Instant::now()),
        }
    }
}

impl Service {
    /// Fills the known-credential filter from storage, page by page (memory
    /// stays flat: only the fixed-size filter keeps anything). Call once at
    /// start; until it returns the filter is not trusted and every lookup
    /// goes to storage.
    pub async fn load_known_credentials(&self) -> Result<usize, Error> {
        self.load_known_credentials_reporting(|_| {}).await
    }

    /// [`Service::load_known_credentials`], calling `progress` with the
    /// running count after every page, so a start over a large store can
    /// say how far it has got.
    pub async fn load_known_credentials_reporting(
        &self,
        mut progress: impl FnMut(usize) + Send,
    ) -> Result<usize, Error> {
        // The cursor first: keys created while we page are in the log after it.
        let cursor = self.store.invalidation_cursor().await?;
        self.sync.cursor.store(cursor, Ordering::Release);
        let mut loaded = 0;
        let mut after: Option<SecretHash> = None;
        loop {
            let page = self.store.key_hashes_after(after.as_ref(), PAGE).await?;
            loaded += page.len();
            page.iter().for_each(|h| self.cache.add_known(h));
            progress(loaded);
            match page.last() {
                Some(last) if page.len() as i64 == PAGE => after = Some(*last),
                _ => break,
            }
        }
        let now = self.clock.now();
        let mut after: Option<SecretHash> = None;
        loop {
            let page = self
                .store
                .access_token_hashes_after(after.as_ref(), PAGE, now)
                .await?;
            loaded += page.len();
            page.iter().for_each(|h| self.cache.add_known(h));
            progress(loaded);
            match page.last() {
                Some(last) if page.len() as i64 == PAGE => after = Some(*last),
                _ => break,
            }
        }
        self.cache.known().mark_ready();
        self.sync_invalidations().await?;
        Ok(loaded)
    }

    /// Applies what the log holds past our cursor, and any late commits
    /// below it. Called on every wake-up (NOTIFY), on a timer, and after
    /// every local change; concurrent calls are harmless (applying an
    /// invalidation twice changes nothing).
    pub async fn sync_invalidations(&self) -> Result<usize, Error> {
        let applied = match self.read_log().await {
            Ok(applied) => applied,
            Err(err) => {
                self.stats.invalidations.failed_reads.add(1);
                return Err(err);
            }
        };
        self.stats.invalidations.applied.add(applied as u64);
        if let Ok(mut last) = self.sync.last_success.lock() {
            if last.elapsed() > STALE_AFTER {
                self.cache.clear();
            }
            *last = Instant::now();
        }
        Ok(applied)
    }

    async fn read_log(&self) -> Result<usize, Error> {
        let mut applied = 0;
        loop {
            let cursor = self.sync.cursor.load(Ordering::Acquire);
            let rows = self.store.invalidations_after(cursor, PAGE).await?;
            let mut expected = cursor + 1;
            let now = Instant::now();
            for (id, invalidation) in &rows {
                self.cache.apply(invalidation);
                if let Ok(mut gaps) = self.sync.gaps.lock() {
                    for missing in expected..*id {
                        gaps.entry(missing).or_insert(now);
                    }
                    gaps.remove(id);
                }
                expected = expected.max(id + 1);
            }
            applied += rows.len();
            if let Some((last, _)) = rows.last() {
                self.sync.cursor.fetch_max(*last, Ordering::AcqRel);
            }
            if (rows.len() as i64) < PAGE {
                break;
            }
        }
        applied += self.recheck_gaps().await?;
        Ok(applied)
    }

    async fn recheck_gaps(&self) -> Result<usize, Error> {
        let range = match self.sync.gaps.lock() {
            Ok(mut gaps) => {
                gaps.retain(|_, first_missed| first_missed.elapsed() < GAP_PATIENCE);
                gaps.keys()
                    .next()
                    .copied()
                    .zip(gaps.keys().next_back().copied())
            }
            Err(_) => None,
        };
        let Some((from, to)) = range else {
            return Ok(0);
        };
        let rows = self.store.invalidations_between(from, to).await?;
        let mut applied = 0;
        for (id, invalidation) in &rows {
            let was_missing = self
                .sync
                .gaps
                .lock()
                .map(|mut g| g.remove(id).is_some())
                .unwrap_or(false);
            if was_missing {
                self.cache.apply(invalidation);
                applied += 1;
            }
        }
        Ok(applied)
    }

    /// After a local change: apply it here at once rather than at the next
    /// poll. A failure leaves it to the poll.
    pub(super) async fn after_change(&self) {
        if let Err(err) = self.sync_invalidations().await {
            tracing::warn!(error = %err, "could not apply a local change to the cache; the next poll will");
        }
    }

    /// The newest invalidation log id applied here.
    pub fn invalidation_cursor(&self) -> i64 {
        self.sync.cursor.load(Ordering::Acquire)
    }

    /// Time since the log was last read without error (since start, before
    /// the first read).
    pub fn since_invalidation_sync(&self) -> Duration {
        self.sync
            .last_success
            .lock()
            .map(|last| last.elapsed())
            .unwrap_or_default()
    }

    /// Deletes log rows every replica has had time to read.
    pub async fn prune_invalidations(&self) -> Result<u64, Error> {
        // Log rows carry the writer's wall-clock time, so compare with ours.
        let cutoff = Timestamp(SystemClock.now().0 - LOG_RETENTION_SECS * 1000);
        Ok(self.store.prune_invalidations(cutoff).await?)
    }
}
