//! `last_used_at` without a write per request: uses are noted in memory and
//! flushed in batches by the server.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;

use crate::api_key::ApiKeyId;
use crate::clock::Timestamp;

/// Shards, so concurrent requests for different keys rarely share a lock.
const SHARDS: usize = 16;

/// Past this many distinct keys between flushes, further keys are dropped
/// until the next flush: usage is advisory and memory must stay bounded.
const MAX_PENDING_PER_SHARD: usize = 100_000 / SHARDS;

#[derive(Debug, Default)]
pub struct UsageRecorder {
    shards: [Mutex<HashMap<ApiKeyId, Timestamp>>; SHARDS],
    hasher: RandomState,
}

impl UsageRecorder {
    pub fn record(&self, key: &ApiKeyId, at: Timestamp) {
        let shard = self.hasher.hash_one(key) as usize % SHARDS;
        let Ok(mut pending) = self.shards[shard].lock() else {
            return;
        };
        if let Some(last) = pending.get_mut(key) {
            *last = (*last).max(at);
        } else if pending.len() < MAX_PENDING_PER_SHARD {
            pending.insert(key.clone(), at);
        }
    }

    /// Takes everything noted since the last call.
    pub fn drain(&self) -> Vec<(ApiKeyId, Timestamp)> {
        let mut out = Vec::new();
        for shard in &self.shards {
            if let Ok(mut pending) = shard.lock() {
                out.extend(pending.drain());
            }
        }
        out
    }

    /// Puts back a batch whose flush failed, keeping newer uses.
    pub fn restore(&self, batch: Vec<(ApiKeyId, Timestamp)>) {
        for (key, at) in batch {
            self.record(&key, at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_latest_use_per_key() {
        let recorder = UsageRecorder::default();
        let a = ApiKeyId("a".into());
        recorder.record(&a, Timestamp(5));
        recorder.record(&a, Timestamp(3));
        recorder.record(&ApiKeyId("b".into()), Timestamp(1));
        let mut batch = recorder.drain();
        batch.sort();
        assert_eq!(
            batch,
            vec![
                (a.clone(), Timestamp(5)),
                (ApiKeyId("b".into()), Timestamp(1))
            ]
        );
        assert!(recorder.drain().is_empty());
        recorder.restore(vec![(a.clone(), Timestamp(9))]);
        assert_eq!(recorder.drain(), vec![(a, Timestamp(9))]);
    }
}
