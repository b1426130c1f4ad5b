// Over 400 lines for its tests: both budgets, address keying and the key bound, on a manual clock.
//! The brake on guessing client secrets at the token endpoint.
//!
//! Only failed client authentications (`invalid_client`) are counted, never
//! successes, in two GCRA budgets (governor's keyed rate limiters):
//!
//! - per (client_id, address): `per_client_burst` failures, then one more
//!   every `per_client_period` (defaults: 5, then one every 12 s);
//! - per address: `per_address_burst` failures, then one more every
//!   `per_address_period` (defaults: 20, then one every 3 s).
//!
//! A failure that finds its budget empty blocks that key until the budget
//! has a cell again. While a key is blocked, every request for it is refused
//! before any secret is checked, so a blocked caller learns nothing, not
//! even from the right secret. A client_id is never blocked as a whole: its
//! right secret from another address keeps working. (A 190-bit secret
//! cannot be guessed; the brake is against noise and against using the
//! endpoint as an oracle.)
//!
//! Addresses are keyed as seen: IPv4 as is, IPv6 by its /64 (what one host
//! or one customer typically holds). A caller without an address (an
//! in-process call) is not throttled: there is nothing to key it by without
//! blocking the client as a whole.
//!
//! Memory is bounded: at most `max_tracked_keys` blocked keys and budget
//! states per limiter. Budgets indistinguishable from full are dropped now
//! and then (`retain_recent`).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use governor::middleware::NoOpMiddleware;
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};

use crate::clock::{Clock, Timestamp};
use crate::service::limits::MAX_ID_LEN;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThrottleConfig {
    /// Failures one address may make for one client_id before it waits.
    pub per_client_burst: u32,
    /// Then one more failure per this period.
    pub per_client_period: Duration,
    /// Failures one address may make across all client_ids before it waits.
    pub per_address_burst: u32,
    pub per_address_period: Duration,
    /// Most keys tracked in each map (blocked keys, each limiter's states).
    pub max_tracked_keys: usize,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig {
            per_client_burst: 5,
            per_client_period: Duration::from_secs(12),
            per_address_burst: 20,
            per_address_period: Duration::from_secs(3),
            max_tracked_keys: 100_000,
        }
    }
}

/// A refusal: retry after this long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Throttled {
    pub retry_after: Duration,
}

impl Throttled {
    /// Whole seconds, rounded up, at least one: what `Retry-After` says.
    pub fn retry_after_secs(self) -> u64 {
        self.retry_after.as_millis().div_ceil(1000).max(1) as u64
    }
}

/// governor's view of the domain's clock: time since the Unix epoch, so
/// tests that move a `ManualClock` move the budgets too.
#[derive(Clone)]
struct DomainClock(Arc<dyn Clock>);

impl governor::clock::Clock for DomainClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        Duration::from_millis(u64::try_from(self.0.now().as_millis()).unwrap_or(0))
    }
}

type Limiter<K> = RateLimiter<K, HashMapStateStore<K>, DomainClock, NoOpMiddleware<Duration>>;

/// The caller's address as keyed: IPv4 (also when mapped into IPv6) as is,
/// IPv6 by its /64.
fn address_key(address: IpAddr) -> IpAddr {
    match address.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & !u128::from(u64::MAX))),
    }
}

/// A client_id as keyed: no longer than any real one, so a caller cannot
/// make us store large keys.
fn client_key(client_id: &str) -> Box<str> {
    let mut end = client_id.len().min(MAX_ID_LEN);
    while !client_id.is_char_boundary(end) {
        end -= 1;
    }
    client_id[..end].into()
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    Address(IpAddr),
    Client(Box<str>, IpAddr),
}

/// How many failures pass between sweeps of budgets that have refilled.
const SWEEP_EVERY: u64 = 1024;

pub struct ClientAuthThrottle {
    clock: Arc<dyn Clock>,
    per_client_quota: Quota,
    per_address_quota: Quota,
    // Behind a lock only so a limiter that outgrew its bound can be
    // replaced whole; checks share the read side.
    per_client: RwLock<Limiter<(Box<str>, IpAddr)>>,
    per_address: RwLock<Limiter<IpAddr>>,
    /// Keys refused until the instant given.
    blocked: Mutex<HashMap<Key, Timestamp>>,
    max_tracked_keys: usize,
    failures: AtomicU64,
}

impl std::fmt::Debug for ClientAuthThrottle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientAuthThrottle")
            .field("per_client_quota", &self.per_client_quota)
            .field("per_address_quota", &self.per_address_quota)
            .field("max_tracked_keys", &self.max_tracked_keys)
            .finish_non_exhaustive()
    }
}

fn quota(burst: u32, period: Duration) -> Quota {
    let period = period.max(Duration::from_millis(1));
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    // `with_period` refuses only a zero period, ruled out above.
    Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(burst)
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

impl ClientAuthThrottle {
    pub fn new(config: &ThrottleConfig, clock: Arc<dyn Clock>) -> Self {
        let per_client_quota = quota(config.per_client_burst, config.per_client_period);
        let per_address_quota = quota(config.per_address_burst, config.per_address_period);
        let governor_clock = DomainClock(clock.clone());
        ClientAuthThrottle {
            per_client: RwLock::new(RateLimiter::hashmap_with_clock(
                per_client_quota,
                governor_clock.clone(),
            )),
            per_address: RwLock::new(RateLimiter::hashmap_with_clock(
                per_address_quota,
                governor_clock,
            )),
            clock,
            per_client_quota,
            per_address_quota,
            blocked: Mutex::new(HashMap::new()),
            max_tracked_keys: config.max_tracked_keys.max(1),
            failures: AtomicU64::new(0),
        }
    }

    fn blocked(&self) -> MutexGuard<'_, HashMap<Key, Timestamp>> {
        self.blocked.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Before any secret is checked: refused while the address, or this
    /// client_id from this address, is blocked.
    pub fn check(&self, client_id: &str, address: Option<IpAddr>) -> Result<(), Throttled> {
        let Some(address) = address.map(address_key) else {
            return Ok(());
        };
        let now = self.clock.now();
        let mut blocked = self.blocked();
        if blocked.is_empty() {
            return Ok(());
        }
        let mut until = None;
        for key in [
            Key::Address(address),
            Key::Client(client_key(client_id), address),
        ] {
            match blocked.get(&key) {
                Some(&end) if end > now => until = until.max(Some(end)),
                Some(_) => {
                    blocked.remove(&key);
                }
                None => {}
            }
        }
        match until {
            Some(end) => Err(refusal(end, now)),
            None => Ok(()),
        }
    }

    /// After a failed client authentication: counts it against both
    /// budgets. When one is empty, blocks its key until it has a cell again
    /// and returns the refusal to answer with instead.
    pub fn record_failure(
        &self,
        client_id: &str,
        address: Option<IpAddr>,
    ) -> Result<(), Throttled> {
        let Some(address) = address.map(address_key) else {
            return Ok(());
        };
        self.sweep_now_and_then();
        let refused = match read(&self.per_address).check_key(&address) {
            Err(not_until) => Some((Key::Address(address), not_until.earliest_possible())),
            Ok(()) => {
                let key = (client_key(client_id), address);
                match read(&self.per_client).check_key(&key) {
                    Err(not_until) => {
                        Some((Key::Client(key.0, key.1), not_until.earliest_possible()))
                    }
                    Ok(()) => None,
                }
            }
        };
        let Some((key, earliest)) = refused else {
            return Ok(());
        };
        let now = self.clock.now();
        // Rounded up to our clock's milliseconds: a cell is there when the
        // block ends.
        let end =
            Timestamp(i64::try_from(earliest.as_nanos().div_ceil(1_000_000)).unwrap_or(i64::MAX))
                .max(Timestamp(now.as_millis().saturating_add(1)));
        self.block(key, end, now);
        Err(refusal(end, now))
    }

    fn block(&self, key: Key, end: Timestamp, now: Timestamp) {
        let mut blocked = self.blocked();
        if blocked.len() >= self.max_tracked_keys && !blocked.contains_key(&key) {
            blocked.retain(|_, until| *until > now);
            if blocked.len() >= self.max_tracked_keys {
                // Still full: the tenth that ends soonest goes. (Their
                // budgets are still empty, so their next failure blocks
                // them again.)
                let mut ends: Vec<Timestamp> = blocked.values().copied().collect();
                let nth = ends.len() / 10;
                let (_, cutoff, _) = ends.select_nth_unstable(nth);
                let cutoff = *cutoff;
                blocked.retain(|_, until| *until > cutoff);
            }
        }
        let entry = blocked.entry(key).or_insert(end);
        *entry = (*entry).max(end);
    }

    /// Every `SWEEP_EVERY` failures, or when a limiter holds more keys than
    /// allowed: drops budgets that have refilled, and expired blocks. A
    /// limiter still over its bound is started afresh (blocks stay).
    fn sweep_now_and_then(&self) {
        let count = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        let over = read(&self.per_client).len() >= self.max_tracked_keys
            || read(&self.per_address).len() >= self.max_tracked_keys;
        if !over && !count.is_multiple_of(SWEEP_EVERY) {
            return;
        }
        self.sweep();
    }

    /// Drops what no longer matters; callable on a timer too.
    pub fn sweep(&self) {
        sweep_limiter(
            &self.per_client,
            self.max_tracked_keys,
            self.per_client_quota,
        );
        sweep_limiter(
            &self.per_address,
            self.max_tracked_keys,
            self.per_address_quota,
        );
        let now = self.clock.now();
        let mut blocked = self.blocked();
        blocked.retain(|_, until| *until > now);
        blocked.shrink_to_fit();
    }

    /// Keys tracked: (blocked keys, per-client budgets, per-address budgets).
    pub fn tracked(&self) -> (usize, usize, usize) {
        (
            self.blocked().len(),
            read(&self.per_client).len(),
            read(&self.per_address).len(),
        )
    }
}

fn sweep_limiter<K>(limiter: &RwLock<Limiter<K>>, max: usize, quota: Quota)
where
    K: std::hash::Hash + Eq + Clone,
{
    let replace = {
        let limiter = read(limiter);
        limiter.retain_recent();
        limiter.shrink_to_fit();
        limiter.len() >= max
    };
    if replace {
        let mut limiter = limiter.write().unwrap_or_else(PoisonError::into_inner);
        let clock = limiter.clock().clone();
        tracing::warn!(
            tracked = limiter.len(),
            "client authentication budgets over their bound; starting afresh"
        );
        *limiter = RateLimiter::hashmap_with_clock(quota, clock);
    }
}

fn refusal(end: Timestamp, now: Timestamp) -> Throttled {
    let millis = end.as_millis().saturating_sub(now.as_millis()).max(0);
    Throttled {
        retry_after: Duration::from_millis(u64::try_from(millis).unwrap_or(0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn throttle(config: ThrottleConfig) -> (Arc<ManualClock>, ClientAuthThrottle) {
        let clock = Arc::new(ManualClock::new(Timestamp::from_secs(1_700_000_000)));
        let throttle = ClientAuthThrottle::new(&config, clock.clone());
        (clock, throttle)
    }

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().unwrap())
    }

    #[test]
    fn a_client_and_address_get_five_failures_then_wait_twelve_seconds() {
        let (clock, t) = throttle(ThrottleConfig::default());
        let a = ip("192.0.2.1");
        for _ in 0..5 {
            assert_eq!(t.check("app", a), Ok(()));
            assert_eq!(t.record_failure("app", a), Ok(()));
        }
        let refused = t.record_failure("app", a).unwrap_err();
        assert_eq!(refused.retry_after, Duration::from_secs(12));
        assert_eq!(refused.retry_after_secs(), 12);
        // Blocked: refused before any secret is checked.
        clock.advance_secs(11);
        assert_eq!(t.check("app", a).unwrap_err().retry_after_secs(), 1);
        // Another address, and another client from this one, are not.
        assert_eq!(t.check("app", ip("192.0.2.2")), Ok(()));
        assert_eq!(t.check("other", a), Ok(()));
        // Once a cell is back: one more failure, then blocked again.
        clock.advance_secs(1);
        assert_eq!(t.check("app", a), Ok(()));
        assert_eq!(t.record_failure("app", a), Ok(()));
        assert_eq!(
            t.record_failure("app", a).unwrap_err().retry_after,
            Duration::from_secs(12)
        );
    }

    #[test]
    fn an_address_gets_twenty_failures_across_clients_then_every_client_waits() {
        let (clock, t) = throttle(ThrottleConfig::default());
        let a = ip("192.0.2.1");
        for n in 0..20 {
            assert_eq!(t.record_failure(&format!("app{n}"), a), Ok(()), "{n}");
        }
        let refused = t.record_failure("app20", a).unwrap_err();
        assert_eq!(refused.retry_after_secs(), 3);
        assert!(t.check("never-seen", a).is_err());
        assert_eq!(t.check("app0", ip("192.0.2.9")), Ok(()));
        clock.advance_secs(3);
        assert_eq!(t.check("never-seen", a), Ok(()));
    }

    #[test]
    fn without_an_address_nothing_is_counted() {
        let (_, t) = throttle(ThrottleConfig {
            per_client_burst: 1,
            per_address_burst: 1,
            ..ThrottleConfig::default()
        });
        for _ in 0..10 {
            assert_eq!(t.record_failure("app", None), Ok(()));
            assert_eq!(t.check("app", None), Ok(()));
        }
        assert_eq!(t.tracked(), (0, 0, 0));
    }

    #[test]
    fn ipv6_callers_are_keyed_by_their_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(
            address_key("2001:db8:1:2:aaaa::1".parse().unwrap()),
            "2001:db8:1:2::".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            address_key("::ffff:192.0.2.7".parse().unwrap()),
            "192.0.2.7".parse::<IpAddr>().unwrap()
        );
        let (_, t) = throttle(ThrottleConfig {
            per_client_burst: 1,
            ..ThrottleConfig::default()
        });
        assert_eq!(t.record_failure("app", ip("2001:db8::1")), Ok(()));
        assert!(t.record_failure("app", ip("2001:db8::2")).is_err());
        assert!(t.check("app", ip("2001:db8::3")).is_err());
        assert_eq!(t.check("app", ip("2001:db8:0:1::1")), Ok(()));
    }

    #[test]
    fn long_client_ids_are_keyed_by_a_bounded_prefix() {
        let long = "é".repeat(MAX_ID_LEN);
        let key = client_key(&long);
        assert!(key.len() <= MAX_ID_LEN);
        assert!(long.starts_with(&*key));
    }

    #[test]
    fn tracked_keys_stay_within_the_bound() {
        let (clock, t) = throttle(ThrottleConfig {
            per_client_burst: 1,
            per_address_burst: 1_000,
            max_tracked_keys: 50,
            ..ThrottleConfig::default()
        });
        for n in 0..500u32 {
            let address = Some(IpAddr::from((0xC000_0200u32 + n).to_be_bytes()));
            let _ = t.record_failure("app", address);
            let _ = t.record_failure("app", address);
        }
        let (blocked, per_client, per_address) = t.tracked();
        assert!(blocked <= 50, "{blocked}");
        assert!(per_client <= 50, "{per_client}");
        assert!(per_address <= 50, "{per_address}");
        // Refilled budgets and ended blocks are swept away.
        clock.advance_secs(3600);
        t.sweep();
        assert_eq!(t.tracked(), (0, 0, 0));
    }
}
