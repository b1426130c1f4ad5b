//! Keeping this replica's cache and known-credential filter in step with
//! storage: loaded once at start, then fed from the invalidation log.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use crate::clock::{Clock, SystemClock, Timestamp};
use crate::credential::SecretHash;
use crate::error::Error;

use super::Service;

const PAGE: i64 = 10_000;
/// Log rows are re-read for this long: PostgreSQL may commit sequence ids
/// out of order, and applying an invalidation twice is harmless.
const REREAD_WINDOW_SECS: i64 = 5;
/// Log rows are kept this long; a replica cut off longer clears its cache.
pub const LOG_RETENTION_SECS: i64 = 3600;

#[derive(Debug, Default)]
pub(super) struct SyncState {
    cursor: AtomicI64,
    /// Set when a poll failed: the next good one starts from a clean cache.
    interrupted: AtomicBool,
}

impl Service {
    /// Fills the known-credential filter from storage, page by page (memory
    /// stays flat: only the fixed-size filter keeps anything). Call once at
    /// start, before serving.
    pub async fn load_known_credentials(&self) -> Result<usize, Error> {
        // The cursor first: keys created while we page are in the log after it.
        let cursor = self.store.invalidation_cursor().await?;
        self.sync.cursor.store(cursor, Ordering::Release);
        let known = self.cache.known();
        let mut loaded = 0;
        let mut after: Option<SecretHash> = None;
        loop {
            let page = self.store.key_hashes_after(after.as_ref(), PAGE).await?;
            loaded += page.len();
            page.iter().for_each(|h| known.insert(h));
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
            page.iter().for_each(|h| known.insert(h));
            match page.last() {
                Some(last) if page.len() as i64 == PAGE => after = Some(*last),
                _ => break,
            }
        }
        known.mark_ready();
        self.sync_invalidations().await?;
        Ok(loaded)
    }

    /// Applies what the log holds past our cursor. Called on every wake-up
    /// (NOTIFY), on a timer, and after every local change.
    pub async fn sync_invalidations(&self) -> Result<usize, Error> {
        // Log rows carry the writer's wall-clock time, so compare with ours.
        let since = Timestamp(SystemClock.now().0 - REREAD_WINDOW_SECS * 1000);
        let cursor = self.sync.cursor.load(Ordering::Acquire);
        let rows = match self.store.invalidations_after(cursor, since, PAGE).await {
            Ok(rows) => rows,
            Err(err) => {
                self.sync.interrupted.store(true, Ordering::Release);
                return Err(err.into());
            }
        };
        if self.sync.interrupted.swap(false, Ordering::AcqRel) {
            self.cache.clear();
        }
        let mut newest = cursor;
        for (id, invalidation) in &rows {
            self.cache.apply(invalidation);
            newest = newest.max(*id);
        }
        self.sync.cursor.fetch_max(newest, Ordering::AcqRel);
        Ok(rows.len())
    }

    /// After a local change: apply it here at once rather than at the next
    /// poll. A failure leaves it to the poll (and marks the cache for a reset).
    pub(super) async fn after_change(&self) {
        if let Err(err) = self.sync_invalidations().await {
            tracing::warn!(error = %err, "could not apply a local change to the cache; the next poll will");
        }
    }

    /// Deletes log rows every replica has had time to read.
    pub async fn prune_invalidations(&self) -> Result<u64, Error> {
        let cutoff = Timestamp(SystemClock.now().0 - LOG_RETENTION_SECS * 1000);
        Ok(self.store.prune_invalidations(cutoff).await?)
    }
}
