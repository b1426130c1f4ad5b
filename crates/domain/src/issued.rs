//! What this replica issued and expects back once: codes until their
//! exchange, refresh tokens until their next use.
//!
//! Every entry is put once and taken at most once, and a take is all that
//! ever reads one, so an entry's age is its whole history: a map and the
//! order of its puts say everything an eviction policy could use. A general
//! cache (moka, as the other caches use) costs about 2 µs for a put and a
//! take, in its admission bookkeeping and its deferred maintenance; here
//! each is a lock of one shard and a hash lookup (about 0.2 µs the pair).

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::credential::{DigestHasherBuilder, SecretHash};

/// Shards, each under its own lock, so that grants on different workers
/// seldom wait for one another.
const SHARDS: usize = 16;

/// Which entries a full store keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WhenFull {
    /// The newest: codes, exchanged seconds after they are issued.
    DropOldest,
    /// The oldest: refresh tokens, used when their access token expires,
    /// so the oldest are the next used.
    KeepOldest,
}

/// A bounded map from a secret's hash to what was issued with it, whose
/// entries end after a time to live: see the module's documentation.
pub(crate) struct IssuedStore<V> {
    shards: Box<[Mutex<Shard<V>>]>,
    per_shard: usize,
    ttl: Duration,
    when_full: WhenFull,
}

struct Shard<V> {
    entries: HashMap<SecretHash, Entry<V>, DigestHasherBuilder>,
    /// Keys in the order they were put, each with its put's number. A key
    /// taken or put again stays here until it reaches the front or the
    /// queue is compacted: the number tells a stale place from the entry's.
    order: VecDeque<(SecretHash, u64)>,
    puts: u64,
}

struct Entry<V> {
    value: V,
    put: u64,
    expires: Instant,
}

impl<V> IssuedStore<V> {
    /// Holds about `capacity` entries (each shard its share), each for `ttl`.
    pub(crate) fn new(capacity: u64, ttl: Duration, when_full: WhenFull) -> Self {
        let capacity = usize::try_from(capacity).unwrap_or(usize::MAX);
        let per_shard = capacity.div_ceil(SHARDS).max(1);
        let shards = (0..SHARDS)
            .map(|_| {
                Mutex::new(Shard {
                    entries: HashMap::default(),
                    order: VecDeque::new(),
                    puts: 0,
                })
            })
            .collect();
        IssuedStore {
            shards,
            per_shard,
            ttl,
            when_full,
        }
    }

    pub(crate) fn put(&self, key: SecretHash, value: V) {
        self.put_at(key, value, Instant::now());
    }

    /// The entry for `key`, taken out, unless it has expired.
    pub(crate) fn take(&self, key: &SecretHash) -> Option<V> {
        self.take_at(key, Instant::now())
    }

    /// Drops every entry.
    pub(crate) fn clear(&self) {
        for shard in self.shards.iter() {
            let mut shard = lock(shard);
            shard.entries = HashMap::default();
            shard.order = VecDeque::new();
        }
    }

    fn put_at(&self, key: SecretHash, value: V, now: Instant) {
        let mut shard = lock(self.shard(&key));
        shard.drop_expired(now);
        if shard.entries.len() >= self.per_shard && !shard.entries.contains_key(&key) {
            match self.when_full {
                WhenFull::KeepOldest => return,
                WhenFull::DropOldest => shard.drop_oldest(),
            }
        }
        shard.puts += 1;
        let put = shard.puts;
        shard.entries.insert(
            key,
            Entry {
                value,
                put,
                expires: now + self.ttl,
            },
        );
        shard.order.push_back((key, put));
        // Taken keys behind an entry nobody takes would otherwise pile up
        // here for its whole time to live.
        if shard.order.len() > 2 * self.per_shard + SHARDS {
            shard.compact();
        }
    }

    fn take_at(&self, key: &SecretHash, now: Instant) -> Option<V> {
        let mut shard = lock(self.shard(key));
        let entry = shard.entries.remove(key)?;
        shard.shrink_if_sparse();
        drop(shard);
        (entry.expires > now).then_some(entry.value)
    }

    fn shard(&self, key: &SecretHash) -> &Mutex<Shard<V>> {
        // The digest's last byte: its first ones are the maps' hash.
        let byte = key.as_bytes().last().copied().unwrap_or_default();
        &self.shards[usize::from(byte) % self.shards.len()]
    }
}

impl<V> Shard<V> {
    /// Whether a place in the order is still its entry's (not taken, not
    /// put again since).
    fn holds(&self, key: &SecretHash, put: u64) -> bool {
        self.entries.get(key).is_some_and(|e| e.put == put)
    }

    /// Drops the entries at the front of the order that have expired, and
    /// the stale places before them.
    fn drop_expired(&mut self, now: Instant) {
        while let Some(&(key, put)) = self.order.front() {
            match self.entries.get(&key) {
                Some(entry) if entry.put == put && entry.expires > now => break,
                Some(entry) if entry.put == put => {
                    self.entries.remove(&key);
                }
                _ => {}
            }
            self.order.pop_front();
        }
    }

    /// Drops the oldest entry there is.
    fn drop_oldest(&mut self) {
        while let Some((key, put)) = self.order.pop_front() {
            if self.holds(&key, put) {
                self.entries.remove(&key);
                return;
            }
        }
    }

    fn compact(&mut self) {
        let entries = &self.entries;
        self.order
            .retain(|(key, put)| entries.get(key).is_some_and(|e| e.put == *put));
        self.shrink_if_sparse();
    }

    /// Hands memory back after a burst: neither a map nor a queue shrinks
    /// as it empties. Halving only below a quarter keeps it amortised.
    fn shrink_if_sparse(&mut self) {
        const SMALL: usize = 64;
        if self.entries.capacity() > SMALL.max(4 * self.entries.len()) {
            self.entries.shrink_to(SMALL.max(2 * self.entries.len()));
        }
        if self.order.capacity() > SMALL.max(4 * self.order.len()) {
            self.order.shrink_to(SMALL.max(2 * self.order.len()));
        }
    }
}

/// A shard's lock. A panic while one was held left a map that is still
/// whole (no step above leaves it half-changed), so a poisoned lock is
/// taken as it is.
fn lock<V>(shard: &Mutex<Shard<V>>) -> MutexGuard<'_, Shard<V>> {
    shard.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credential::{CredentialKind, Secret};

    fn key() -> SecretHash {
        Secret::generate(CredentialKind::AuthorizationCode).hash()
    }

    const TTL: Duration = Duration::from_secs(600);

    #[test]
    fn an_entry_is_taken_once() {
        let store = IssuedStore::new(100, TTL, WhenFull::DropOldest);
        let k = key();
        store.put(k, 7);
        assert_eq!(store.take(&k), Some(7));
        assert_eq!(store.take(&k), None);
        assert_eq!(store.take(&key()), None, "never put");
    }

    #[test]
    fn an_expired_entry_is_not_taken() {
        let store = IssuedStore::new(100, TTL, WhenFull::DropOldest);
        let start = Instant::now();
        let (early, late) = (key(), key());
        store.put_at(early, 1, start);
        store.put_at(late, 2, start);
        assert_eq!(store.take_at(&early, start + TTL), None, "at its end");
        assert_eq!(
            store.take_at(&late, start + TTL - Duration::from_millis(1)),
            Some(2)
        );
    }

    #[test]
    fn expired_entries_make_room_before_any_live_one_is_dropped() {
        let store = IssuedStore::new(SHARDS as u64, TTL, WhenFull::KeepOldest);
        let start = Instant::now();
        let old: Vec<SecretHash> = (0..200).map(|_| key()).collect();
        for k in &old {
            store.put_at(*k, 0, start);
        }
        let later = start + TTL;
        let new: Vec<SecretHash> = (0..SHARDS).map(|_| key()).collect();
        for k in &new {
            store.put_at(*k, 1, later);
        }
        let kept = new
            .iter()
            .filter(|k| store.take_at(k, later).is_some())
            .count();
        // Each shard holds one: a shard given two new keys keeps its first.
        let shards_given: std::collections::HashSet<*const Mutex<Shard<i32>>> = new
            .iter()
            .map(|k| std::ptr::from_ref(store.shard(k)))
            .collect();
        assert_eq!(kept, shards_given.len());
        assert!(old.iter().all(|k| store.take_at(k, later).is_none()));
    }

    /// A store of 1,600 that was given 10,000 keys, and the keys in order.
    fn overfilled(when_full: WhenFull) -> (IssuedStore<usize>, Vec<SecretHash>) {
        let store = IssuedStore::new(1_600, TTL, when_full);
        let keys: Vec<SecretHash> = (0..10_000).map(|_| key()).collect();
        for (n, k) in keys.iter().enumerate() {
            store.put(*k, n);
        }
        (store, keys)
    }

    fn taken(store: &IssuedStore<usize>, keys: &[SecretHash]) -> usize {
        keys.iter().filter(|k| store.take(k).is_some()).count()
    }

    #[test]
    fn full_drop_oldest_keeps_the_newest() {
        let (store, keys) = overfilled(WhenFull::DropOldest);
        assert_eq!(taken(&store, &keys[keys.len() - 800..]), 800);
        assert_eq!(taken(&store, &keys[..5_000]), 0);
    }

    #[test]
    fn full_keep_oldest_refuses_newcomers() {
        let (store, keys) = overfilled(WhenFull::KeepOldest);
        assert_eq!(taken(&store, &keys[..800]), 800);
        assert_eq!(taken(&store, &keys[keys.len() - 5_000..]), 0);
    }

    #[test]
    fn taking_makes_room() {
        let store = IssuedStore::new(SHARDS as u64, TTL, WhenFull::KeepOldest);
        for _ in 0..1_000 {
            let k = key();
            store.put(k, ());
            assert_eq!(store.take(&k), Some(()), "a full store refused a put");
        }
    }

    /// An entry nobody takes, at the front, while thousands are put and
    /// taken behind it: the order does not grow past a bound.
    #[test]
    fn the_order_stays_bounded_behind_an_entry_never_taken() {
        let store = IssuedStore::new(SHARDS as u64 * 8, TTL, WhenFull::DropOldest);
        let stuck = key();
        store.put(stuck, 0);
        for n in 0..20_000 {
            let k = key();
            store.put(k, n);
            store.take(&k);
        }
        for shard in store.shards.iter() {
            let len = lock(shard).order.len();
            assert!(len <= 2 * store.per_shard + SHARDS + 1, "order of {len}");
        }
        assert_eq!(store.take(&stuck), Some(0));
    }

    /// After a burst is taken, the shards hold no more than a little.
    #[test]
    fn a_burst_taken_gives_its_memory_back() {
        let store = IssuedStore::new(100_000, TTL, WhenFull::DropOldest);
        let keys: Vec<SecretHash> = (0..50_000).map(|_| key()).collect();
        for k in &keys {
            store.put(*k, [0u8; 64]);
        }
        for k in &keys {
            store.take(k);
        }
        for shard in store.shards.iter() {
            let shard = lock(shard);
            assert!(
                shard.entries.capacity() <= 256,
                "map of {}",
                shard.entries.capacity()
            );
        }
    }

    #[test]
    fn clear_drops_everything() {
        let store = IssuedStore::new(100, TTL, WhenFull::DropOldest);
        let keys: Vec<SecretHash> = (0..50).map(|_| key()).collect();
        for k in &keys {
            store.put(*k, ());
        }
        store.clear();
        assert!(keys.iter().all(|k| store.take(k).is_none()));
    }

    #[test]
    fn a_key_put_again_keeps_its_latest_value() {
        let store = IssuedStore::new(SHARDS as u64, TTL, WhenFull::DropOldest);
        let k = key();
        store.put(k, 1);
        store.put(k, 2);
        assert_eq!(store.take(&k), Some(2));
        assert_eq!(store.take(&k), None);
    }
}
