//! `last_used_at` without a write per request: uses are noted in memory and
//! flushed in batches by the server.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::api_key::ApiKeyId;
use crate::clock::Timestamp;

/// Shards, so concurrent requests for different keys rarely share a lock.
/// A power of two: [`shard_of`] takes the top bits of a product.
const SHARDS: usize = 16;
const _: () = assert!(SHARDS.is_power_of_two());

/// Past this many distinct keys between flushes, further keys are dropped
/// until the next flush: usage is advisory and memory must stay bounded.
const MAX_PENDING_PER_SHARD: usize = 100_000 / SHARDS;

#[derive(Debug, Default)]
pub struct UsageRecorder {
    shards: [Mutex<HashMap<ApiKeyId, Timestamp>>; SHARDS],
}

impl UsageRecorder {
    pub fn record(&self, key: &ApiKeyId, at: Timestamp) {
        let Ok(mut pending) = self.shards[shard_of(key)].lock() else {
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

/// A key's shard, from the last eight bytes of its id: every Authenticate
/// with a key comes here, and hashing the whole id with the maps' (keyed)
/// SipHash would hash it twice per call. Ids are ours, UUIDs whose tail is
/// random, so no caller can crowd one shard; the maps keep SipHash.
fn shard_of(key: &ApiKeyId) -> usize {
    let id = key.as_str().as_bytes();
    let tail = &id[id.len().saturating_sub(8)..];
    let mut word = [0u8; 8];
    word[..tail.len()].copy_from_slice(tail);
    // Fibonacci hashing: the multiplication carries every byte of the tail
    // into the top bits, which pick the shard.
    let mixed = u64::from_le_bytes(word).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (mixed >> (u64::BITS - SHARDS.trailing_zeros())) as usize
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

    #[test]
    fn generated_ids_use_every_shard_and_short_ids_have_one() {
        let mut used = [0usize; SHARDS];
        for _ in 0..SHARDS * 64 {
            used[shard_of(&ApiKeyId::generate())] += 1;
        }
        assert!(used.iter().all(|&n| n > 0), "{used:?}");
        for id in ["", "k", "key_1"] {
            assert!(shard_of(&ApiKeyId(id.into())) < SHARDS);
        }
    }
}
