// Over 400 lines for its tests: local budgets, the shared accounting and its bound, on a manual clock.
//! Request budgets per caller (docs/limits.md, "Rate limits").
//!
//! Each class of caller has its own figure, `limit` requests per `period`:
//! API keys and OAuth grants 300/min, sessions 100/min, addresses of
//! unauthenticated callers 60/min, OAuth clients at the token endpoint
//! 300/min. A limit of 0 turns its class off.
//!
//! **On one replica** a budget is a GCRA bucket (governor's keyed limiter on
//! the domain clock, in its sharded map, so calls for different keys do not
//! wait on one lock): `limit` requests at once, refilling one every
//! `period / limit`. So the (limit+1)th call in a burst is refused, and the
//! refusal says how long until a request would pass.
//!
//! **Across replicas** (Redis attached through [`BudgetSync`]) a key's
//! requests are also counted per fixed window of `period` (aligned to the
//! Unix epoch) in a shared counter. No call waits for Redis: a replica
//! admits on what it knows (the shared total it last heard plus its own
//! unreported calls) and reports its counts in batches, in the background.
//! It holds at most `batch` calls per key that Redis has not yet answered
//! for; a key that reaches that many waits for the next report round. So,
//! with `n` replicas, the calls admitted for one key in one window are at
//! most `limit - 1 + n × batch` (proof in docs/limits.md), and each
//! replica's own bucket still holds.
//!
//! **Redis unreachable**: the shared accounting is dropped
//! ([`RateLimiter::set_fallback`]) and every replica counts alone, by its
//! buckets, until Redis answers again. Nothing is refused for want of Redis.
//!
//! Memory is bounded: at most `max_tracked_keys` buckets per class and
//! shared counters in all; full buckets are swept now and then.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, RwLock, RwLockReadGuard};
use std::time::Duration;

use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter as Gcra};

use crate::clock::Clock;
use crate::service::limits::MAX_ID_LEN;

/// `limit` requests per `period`; a limit of 0 means no limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub limit: u32,
    pub period: Duration,
}

impl Rate {
    pub const fn per_minute(limit: u32) -> Rate {
        Rate {
            limit,
            period: Duration::from_secs(60),
        }
    }

    fn period_millis(self) -> u64 {
        u64::try_from(self.period.as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// Per API key, and per OAuth grant (app, user, workspace).
    pub per_credential: Rate,
    /// Per user, over all their session tokens.
    pub per_session: Rate,
    /// Per address, for calls without a valid credential (forward-auth,
    /// ext_authz) and for the token endpoint.
    pub per_address: Rate,
    /// Per client_id at the token endpoint.
    pub per_client: Rate,
    /// Shared mode: calls a replica may admit for one key before Redis has
    /// answered for them; 0 means a tenth of the class's limit.
    pub share_batch: u32,
    /// Most keys tracked per class (buckets) and in the shared counters.
    pub max_tracked_keys: usize,
}

impl Default for RateLimitConfig {
    /// The Velocity API's published figures.
    fn default() -> Self {
        RateLimitConfig {
            per_credential: Rate::per_minute(300),
            per_session: Rate::per_minute(100),
            per_address: Rate::per_minute(60),
            per_client: Rate::per_minute(300),
            share_batch: 0,
            max_tracked_keys: 100_000,
        }
    }
}

/// Which budget a key draws on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LimitClass {
    Credential,
    Session,
    Address,
    Client,
}

impl LimitClass {
    const ALL: [LimitClass; 4] = [
        LimitClass::Credential,
        LimitClass::Session,
        LimitClass::Address,
        LimitClass::Client,
    ];

    /// As shared counters are named.
    pub fn as_str(self) -> &'static str {
        match self {
            LimitClass::Credential => "credential",
            LimitClass::Session => "session",
            LimitClass::Address => "address",
            LimitClass::Client => "client",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Whose budget: an id (key id, grant, user id, client_id) or an address.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RateKey {
    Id(Box<str>),
    Address(IpAddr),
}

impl RateKey {
    /// An id, cut to a length no real id exceeds, so a caller cannot make
    /// us store large keys.
    pub fn id(id: &str) -> RateKey {
        let mut end = id.len().min(MAX_ID_LEN);
        while !id.is_char_boundary(end) {
            end -= 1;
        }
        RateKey::Id(id[..end].into())
    }

    /// IPv4 (also when mapped into IPv6) as is, IPv6 by its /64: what one
    /// host or one customer typically holds.
    pub fn address(address: IpAddr) -> RateKey {
        RateKey::Address(match address.to_canonical() {
            IpAddr::V4(v4) => IpAddr::V4(v4),
            IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & !u128::from(u64::MAX))),
        })
    }
}

impl fmt::Display for RateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RateKey::Id(id) => f.write_str(id),
            RateKey::Address(address) => write!(f, "{address}"),
        }
    }
}

/// What a caller has left: the `X-RateLimit-*` headers and Authenticate's
/// `rate_limit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the budget is full again (rounded up).
    pub reset_secs: u64,
}

/// A refusal: over the limit, retry after this long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimited {
    pub limit: u32,
    pub retry_after: Duration,
    /// Seconds until the budget is full again.
    pub reset_secs: u64,
}

impl RateLimited {
    /// Whole seconds, rounded up, at least one: what `Retry-After` says.
    pub fn retry_after_secs(self) -> u64 {
        secs_up(self.retry_after).max(1)
    }

    /// The budget as the headers of the refusal say it.
    pub fn budget(self) -> Budget {
        Budget {
            limit: self.limit,
            remaining: 0,
            reset_secs: self.reset_secs.max(self.retry_after_secs()),
        }
    }
}

fn secs_up(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis().div_ceil(1000)).unwrap_or(u64::MAX)
}

/// One check's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// Counted; this is what is left.
    Allowed(Budget),
    /// Not counted: over the limit.
    Limited(RateLimited),
    /// The class has no limit.
    Unlimited,
    /// Shared mode: this replica holds `batch` calls for the key that the
    /// shared counter has not answered for; wait for a report round
    /// ([`BudgetSync::sync`]) and check again.
    AwaitSync,
}

/// The shared counter's side, implemented outside the domain (Redis): runs
/// report rounds of [`RateLimiter::take_reports`].
#[async_trait::async_trait]
pub trait BudgetSync: Send + Sync {
    /// Resolves once a report round has ended (or could not be done).
    async fn sync(&self);
}

/// Calls for one key in one window that a replica reports to the shared
/// counter: `<prefix><class>:<window>:<key>` by `count`, kept for
/// `expire_after`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub class: LimitClass,
    pub key: RateKey,
    pub window: u64,
    pub count: u32,
    pub expire_after: Duration,
}

impl Report {
    pub fn counter_name(&self, prefix: &str) -> String {
        format!(
            "{prefix}{}:{}:{}",
            self.class.as_str(),
            self.window,
            self.key
        )
    }
}

/// Counters for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateLimitStats {
    /// Calls counted and let through.
    pub allowed: u64,
    /// Calls refused for their budget.
    pub limited: u64,
    /// Budgets are shared through Redis (attached and reachable).
    pub shared: bool,
    /// Redis is attached but unreachable: counting locally.
    pub fallback: bool,
    /// Times the shared counter became unreachable.
    pub fallbacks: u64,
    /// Report rounds answered by the shared counter.
    pub syncs: u64,
}

/// governor's view of the domain's clock (milliseconds since the epoch).
#[derive(Clone)]
struct DomainClock(Arc<dyn Clock>);

impl governor::clock::Clock for DomainClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        Duration::from_millis(u64::try_from(self.0.now().as_millis()).unwrap_or(0))
    }
}

type Bucket = Gcra<RateKey, DashMapStateStore<RateKey>, DomainClock, StateInformationMiddleware>;

struct ClassLimiter {
    rate: Rate,
    quota: Option<Quota>,
    /// `period / limit`: the time one request's cell takes to refill.
    refill: Duration,
    batch: u32,
    // Behind a lock only so a limiter that outgrew its bound can be
    // replaced whole; checks share the read side.
    buckets: RwLock<Bucket>,
}

/// The shared counters' view on this replica, per (class, key).
#[derive(Debug, Default)]
struct SharedCount {
    window: u64,
    /// The shared total last heard for `window` (all replicas).
    total: u64,
    /// Admitted here, not yet reported.
    pending: u32,
    /// Reported, not yet answered (for `in_flight_window`).
    in_flight: u32,
    in_flight_window: u64,
}

impl SharedCount {
    fn unconfirmed(&self) -> u32 {
        let in_flight = if self.in_flight_window == self.window {
            self.in_flight
        } else {
            0
        };
        self.pending.saturating_add(in_flight)
    }
}

struct Shared {
    sync: Arc<dyn BudgetSync>,
    counts: Mutex<HashMap<(LimitClass, RateKey), SharedCount>>,
}

/// How many checks pass between sweeps of full buckets.
const SWEEP_EVERY: u64 = 4096;

pub struct RateLimiter {
    clock: Arc<dyn Clock>,
    /// The same clock as governor reads it, kept so no check clones it.
    governor_clock: DomainClock,
    classes: [ClassLimiter; 4],
    max_tracked_keys: usize,
    shared: OnceLock<Shared>,
    fallback: AtomicBool,
    checks: AtomicU64,
    allowed: AtomicU64,
    limited: AtomicU64,
    fallbacks: AtomicU64,
    syncs: AtomicU64,
}

impl fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiter")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

fn new_bucket(quota: Quota, clock: &Arc<dyn Clock>) -> Bucket {
    Gcra::dashmap_with_clock(quota, DomainClock(clock.clone()))
        .with_middleware::<StateInformationMiddleware>()
}

fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ClassLimiter {
    fn new(rate: Rate, share_batch: u32, clock: &Arc<dyn Clock>) -> ClassLimiter {
        let period = rate.period.max(Duration::from_millis(1));
        let limit = NonZeroU32::new(rate.limit);
        let refill = limit
            .map_or(period, |n| period / n.get())
            .max(Duration::from_nanos(1));
        let quota = limit.and_then(|n| Quota::with_period(refill).map(|q| q.allow_burst(n)));
        let batch = match share_batch {
            0 => (rate.limit / 10).max(1),
            n => n,
        };
        // An unlimited class never checks its bucket; any quota will do.
        let bucket_quota = quota.unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN));
        ClassLimiter {
            rate: Rate { period, ..rate },
            quota,
            refill,
            batch,
            buckets: RwLock::new(new_bucket(bucket_quota, clock)),
        }
    }

    /// The local bucket's answer; counts the call when it passes.
    fn check_bucket(&self, key: &RateKey, clock: &DomainClock) -> Result<Budget, RateLimited> {
        let buckets = read(&self.buckets);
        match buckets.check_key(key) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity().min(self.rate.limit);
                let empty = self.rate.limit - remaining;
                Ok(Budget {
                    limit: self.rate.limit,
                    remaining,
                    reset_secs: secs_up(self.refill.saturating_mul(empty)),
                })
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(governor::clock::Clock::now(clock));
                let full = wait.saturating_add(
                    self.refill
                        .saturating_mul(self.rate.limit.saturating_sub(1)),
                );
                Err(RateLimited {
                    limit: self.rate.limit,
                    // Rounded up to our clock's milliseconds: a cell is
                    // there when the wait ends.
                    retry_after: Duration::from_millis(
                        u64::try_from(wait.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX),
                    ),
                    reset_secs: secs_up(full),
                })
            }
        }
    }
}

impl RateLimiter {
    pub fn new(config: &RateLimitConfig, clock: Arc<dyn Clock>) -> RateLimiter {
        let class = |rate| ClassLimiter::new(rate, config.share_batch, &clock);
        RateLimiter {
            classes: [
                class(config.per_credential),
                class(config.per_session),
                class(config.per_address),
                class(config.per_client),
            ],
            governor_clock: DomainClock(clock.clone()),
            clock,
            max_tracked_keys: config.max_tracked_keys.max(1),
            shared: OnceLock::new(),
            fallback: AtomicBool::new(false),
            checks: AtomicU64::new(0),
            allowed: AtomicU64::new(0),
            limited: AtomicU64::new(0),
            fallbacks: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
        }
    }

    /// Shares budgets through `sync` from now on (once; later calls are
    /// ignored).
    pub fn share(&self, sync: Arc<dyn BudgetSync>) {
        let _ = self.shared.set(Shared {
            sync,
            counts: Mutex::new(HashMap::new()),
        });
    }

    /// The figure of a class.
    pub fn rate(&self, class: LimitClass) -> Rate {
        self.classes[class.index()].rate
    }

    /// The shared accounting, when attached and reachable.
    fn shared(&self) -> Option<&Shared> {
        self.shared
            .get()
            .filter(|_| !self.fallback.load(Ordering::Relaxed))
    }

    /// Counts one call for `key` if its budget allows.
    pub fn check(&self, class: LimitClass, key: &RateKey) -> Check {
        self.check_with(class, key, true)
    }

    /// As [`check`](Self::check), but never [`Check::AwaitSync`]: for when
    /// a report round could not free the key (the shared counter is slow),
    /// so this call is decided on what this replica knows.
    pub fn check_without_waiting(&self, class: LimitClass, key: &RateKey) -> Check {
        self.check_with(class, key, false)
    }

    fn check_with(&self, class: LimitClass, key: &RateKey, may_wait: bool) -> Check {
        let limiter = &self.classes[class.index()];
        if limiter.quota.is_none() {
            return Check::Unlimited;
        }
        self.sweep_now_and_then();
        let clock = &self.governor_clock;
        let check = match self.shared() {
            None => match limiter.check_bucket(key, clock) {
                Ok(budget) => Check::Allowed(budget),
                Err(refused) => Check::Limited(refused),
            },
            Some(shared) => self.check_shared(shared, class, limiter, key, clock, may_wait),
        };
        match check {
            Check::Allowed(_) => self.allowed.fetch_add(1, Ordering::Relaxed),
            Check::Limited(_) => self.limited.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
        check
    }

    fn check_shared(
        &self,
        shared: &Shared,
        class: LimitClass,
        limiter: &ClassLimiter,
        key: &RateKey,
        clock: &DomainClock,
        may_wait: bool,
    ) -> Check {
        let now = u64::try_from(self.clock.now().as_millis()).unwrap_or(0);
        let period = limiter.rate.period_millis();
        let window = now / period;
        let window_left = Duration::from_millis((window + 1) * period - now);
        let limit = u64::from(limiter.rate.limit);
        let mut counts = lock(&shared.counts);
        if !counts.contains_key(&(class, key.clone())) && counts.len() >= self.max_tracked_keys {
            // Full: this key is counted by its bucket only, as when Redis
            // is unreachable.
            drop(counts);
            return match limiter.check_bucket(key, clock) {
                Ok(budget) => Check::Allowed(budget),
                Err(refused) => Check::Limited(refused),
            };
        }
        let count = counts.entry((class, key.clone())).or_default();
        if count.window != window {
            // Calls unreported for an ended window no longer matter to
            // anyone's decisions.
            count.window = window;
            count.total = 0;
            count.pending = 0;
        }
        let unconfirmed = count.unconfirmed();
        let used = count.total.saturating_add(u64::from(unconfirmed));
        if used >= limit {
            return Check::Limited(RateLimited {
                limit: limiter.rate.limit,
                retry_after: window_left,
                reset_secs: secs_up(window_left),
            });
        }
        if may_wait && unconfirmed >= limiter.batch {
            return Check::AwaitSync;
        }
        let local = match limiter.check_bucket(key, clock) {
            Ok(budget) => budget,
            Err(refused) => return Check::Limited(refused),
        };
        count.pending = count.pending.saturating_add(1);
        let shared_left = u32::try_from(limit - used - 1).unwrap_or(u32::MAX);
        Check::Allowed(if shared_left < local.remaining {
            Budget {
                limit: limiter.rate.limit,
                remaining: shared_left,
                reset_secs: local.reset_secs.max(secs_up(window_left)),
            }
        } else {
            local
        })
    }

    /// Waits for a report round, when budgets are shared.
    pub async fn wait_for_sync(&self) {
        if let Some(shared) = self.shared() {
            shared.sync.sync().await;
        }
    }

    /// For a report round: the calls admitted since the last, per key and
    /// window. They count as in flight until [`apply`](Self::apply) or
    /// [`reports_failed`](Self::reports_failed). Counters of ended windows
    /// are dropped.
    pub fn take_reports(&self) -> Vec<Report> {
        let Some(shared) = self.shared() else {
            return Vec::new();
        };
        let now = u64::try_from(self.clock.now().as_millis()).unwrap_or(0);
        let mut reports = Vec::new();
        lock(&shared.counts).retain(|(class, key), count| {
            let rate = self.classes[class.index()].rate;
            if count.pending > 0 {
                reports.push(Report {
                    class: *class,
                    key: key.clone(),
                    window: count.window,
                    count: count.pending,
                    // Long enough for every replica's clock to have left
                    // the window.
                    expire_after: rate.period.saturating_mul(2),
                });
                count.in_flight = count.pending;
                count.in_flight_window = count.window;
                count.pending = 0;
            }
            count.window >= now / rate.period_millis() || count.in_flight > 0
        });
        reports
    }

    /// The shared counter's totals after a round, one per report.
    pub fn apply(&self, reports: &[Report], totals: &[u64]) {
        self.syncs.fetch_add(1, Ordering::Relaxed);
        let Some(shared) = self.shared.get() else {
            return;
        };
        let mut counts = lock(&shared.counts);
        for (report, &total) in reports.iter().zip(totals) {
            if let Some(count) = counts.get_mut(&(report.class, report.key.clone())) {
                if count.in_flight_window == report.window {
                    count.in_flight = 0;
                }
                if count.window == report.window {
                    count.total = count.total.max(total);
                }
            }
        }
    }

    /// A round that got no answer: its calls are no longer in flight (and
    /// the shared counter never hears of them).
    pub fn reports_failed(&self, reports: &[Report]) {
        let Some(shared) = self.shared.get() else {
            return;
        };
        let mut counts = lock(&shared.counts);
        for report in reports {
            if let Some(count) = counts.get_mut(&(report.class, report.key.clone())) {
                count.in_flight = 0;
            }
        }
    }

    /// Redis unreachable (`true`): count locally, by the buckets, until it
    /// answers again (`false`). Returns whether this changed the state.
    pub fn set_fallback(&self, fallback: bool) -> bool {
        let changed = self.fallback.swap(fallback, Ordering::Relaxed) != fallback;
        if changed && fallback {
            self.fallbacks.fetch_add(1, Ordering::Relaxed);
            if let Some(shared) = self.shared.get() {
                // Stale by the time Redis is back; relearned then.
                lock(&shared.counts).clear();
            }
        }
        changed
    }

    pub fn is_fallback(&self) -> bool {
        self.fallback.load(Ordering::Relaxed)
    }

    pub fn stats(&self) -> RateLimitStats {
        let attached = self.shared.get().is_some();
        let fallback = attached && self.is_fallback();
        RateLimitStats {
            allowed: self.allowed.load(Ordering::Relaxed),
            limited: self.limited.load(Ordering::Relaxed),
            shared: attached && !fallback,
            fallback,
            fallbacks: self.fallbacks.load(Ordering::Relaxed),
            syncs: self.syncs.load(Ordering::Relaxed),
        }
    }

    /// Keys tracked: buckets per class, then shared counters.
    pub fn tracked(&self) -> ([usize; 4], usize) {
        let buckets = LimitClass::ALL.map(|class| read(&self.classes[class.index()].buckets).len());
        let shared = self.shared.get().map_or(0, |s| lock(&s.counts).len());
        (buckets, shared)
    }

    fn sweep_now_and_then(&self) {
        let count = self.checks.fetch_add(1, Ordering::Relaxed) + 1;
        if count.is_multiple_of(SWEEP_EVERY) {
            self.sweep();
        }
    }

    /// Drops full buckets; a class still over its bound starts afresh.
    pub fn sweep(&self) {
        for limiter in &self.classes {
            let Some(quota) = limiter.quota else {
                continue;
            };
            let replace = {
                let buckets = read(&limiter.buckets);
                buckets.retain_recent();
                buckets.shrink_to_fit();
                buckets.len() >= self.max_tracked_keys
            };
            if replace {
                let mut buckets = limiter
                    .buckets
                    .write()
                    .unwrap_or_else(PoisonError::into_inner);
                tracing::warn!(
                    tracked = buckets.len(),
                    "rate-limit buckets over their bound; starting afresh"
                );
                *buckets = new_bucket(quota, &self.clock);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{ManualClock, Timestamp};

    fn limiter(config: RateLimitConfig) -> (Arc<ManualClock>, RateLimiter) {
        // On a window boundary for every period the tests use.
        let clock = Arc::new(ManualClock::new(Timestamp::from_secs(1_700_000_040)));
        let limiter = RateLimiter::new(&config, clock.clone());
        (clock, limiter)
    }

    fn key(id: &str) -> RateKey {
        RateKey::id(id)
    }

    fn allowed(check: Check) -> Budget {
        match check {
            Check::Allowed(budget) => budget,
            other => panic!("expected Allowed, got {other:?}"),
        }
    }

    fn limited(check: Check) -> RateLimited {
        match check {
            Check::Limited(refused) => refused,
            other => panic!("expected Limited, got {other:?}"),
        }
    }

    #[test]
    fn the_published_figures_are_the_defaults() {
        let (_, l) = limiter(RateLimitConfig::default());
        assert_eq!(l.rate(LimitClass::Credential), Rate::per_minute(300));
        assert_eq!(l.rate(LimitClass::Session), Rate::per_minute(100));
        assert_eq!(l.rate(LimitClass::Address), Rate::per_minute(60));
        assert_eq!(l.rate(LimitClass::Client), Rate::per_minute(300));
    }

    #[test]
    fn a_key_gets_exactly_its_limit_then_waits_for_one_refill() {
        let (clock, l) = limiter(RateLimitConfig::default());
        let k = key("key_1");
        for n in 1..=300u32 {
            let budget = allowed(l.check(LimitClass::Credential, &k));
            assert_eq!(budget.limit, 300);
            assert_eq!(budget.remaining, 300 - n, "call {n}");
        }
        let refused = limited(l.check(LimitClass::Credential, &k));
        // One cell refills every 60 s / 300 = 200 ms.
        assert_eq!(refused.retry_after, Duration::from_millis(200));
        assert_eq!(refused.retry_after_secs(), 1);
        assert_eq!(refused.reset_secs, 60);
        assert_eq!(refused.budget().remaining, 0);
        // Other keys and classes are untouched.
        assert_eq!(
            allowed(l.check(LimitClass::Credential, &key("key_2"))).remaining,
            299
        );
        assert_eq!(allowed(l.check(LimitClass::Session, &k)).remaining, 99);
        // After Retry-After, exactly one more.
        clock.advance_secs(1);
        for _ in 0..5 {
            allowed(l.check(LimitClass::Credential, &k));
        }
        limited(l.check(LimitClass::Credential, &k));
        // A full period later, the whole budget is back.
        clock.advance_secs(60);
        assert_eq!(allowed(l.check(LimitClass::Credential, &k)).remaining, 299);
        assert_eq!(l.stats().limited, 2);
    }

    #[test]
    fn reset_says_when_the_budget_is_full_again() {
        let (_, l) = limiter(RateLimitConfig {
            per_session: Rate {
                limit: 10,
                period: Duration::from_secs(10),
            },
            ..RateLimitConfig::default()
        });
        let k = key("user");
        assert_eq!(allowed(l.check(LimitClass::Session, &k)).reset_secs, 1);
        for _ in 0..4 {
            l.check(LimitClass::Session, &k);
        }
        let budget = allowed(l.check(LimitClass::Session, &k));
        assert_eq!((budget.remaining, budget.reset_secs), (4, 6));
    }

    #[test]
    fn the_largest_limit_counts_without_refusing() {
        let (_, l) = limiter(RateLimitConfig {
            per_credential: Rate::per_minute(u32::MAX),
            ..RateLimitConfig::default()
        });
        let k = key("bench");
        for n in 1..=10_000u32 {
            assert_eq!(
                allowed(l.check(LimitClass::Credential, &k)).remaining,
                u32::MAX - n
            );
        }
    }

    #[test]
    fn a_zero_limit_turns_a_class_off() {
        let (_, l) = limiter(RateLimitConfig {
            per_address: Rate::per_minute(0),
            ..RateLimitConfig::default()
        });
        let a = RateKey::address("192.0.2.1".parse().unwrap());
        for _ in 0..1000 {
            assert_eq!(l.check(LimitClass::Address, &a), Check::Unlimited);
        }
        assert_eq!(l.tracked().0, [0, 0, 0, 0]);
    }

    #[test]
    fn addresses_are_keyed_by_ipv4_or_ipv6_64_and_ids_are_bounded() {
        let v6 = |s: &str| RateKey::address(s.parse().unwrap());
        assert_eq!(v6("2001:db8:1:2:aaaa::1"), v6("2001:db8:1:2::"));
        assert_ne!(v6("2001:db8:1:2::1"), v6("2001:db8:1:3::1"));
        assert_eq!(v6("::ffff:192.0.2.7"), v6("192.0.2.7"));
        let long = "é".repeat(MAX_ID_LEN);
        match RateKey::id(&long) {
            RateKey::Id(id) => assert!(id.len() <= MAX_ID_LEN && long.starts_with(&*id)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn buckets_stay_within_the_bound() {
        let (clock, l) = limiter(RateLimitConfig {
            max_tracked_keys: 50,
            ..RateLimitConfig::default()
        });
        for n in 0..(SWEEP_EVERY as u32 * 2) {
            l.check(LimitClass::Credential, &key(&format!("k{n}")));
        }
        assert!(
            l.tracked().0[0] <= 50 + SWEEP_EVERY as usize,
            "{:?}",
            l.tracked()
        );
        clock.advance_secs(120);
        l.sweep();
        assert_eq!(l.tracked().0[0], 0);
    }

    /// A shared counter in memory standing for Redis: the tests run its
    /// rounds by hand.
    struct Counter(Mutex<HashMap<String, u64>>);

    #[async_trait::async_trait]
    impl BudgetSync for Counter {
        async fn sync(&self) {}
    }

    impl Counter {
        fn round(&self, replica: &RateLimiter) {
            let reports = replica.take_reports();
            let mut counters = lock(&self.0);
            let totals: Vec<u64> = reports
                .iter()
                .map(|r| {
                    let total = counters.entry(r.counter_name("rl:")).or_default();
                    *total += u64::from(r.count);
                    *total
                })
                .collect();
            replica.apply(&reports, &totals);
        }

        fn total(&self) -> u64 {
            lock(&self.0).values().sum()
        }
    }

    fn shared_replicas(
        n: usize,
        config: &RateLimitConfig,
    ) -> (Arc<ManualClock>, Arc<Counter>, Vec<RateLimiter>) {
        let clock = Arc::new(ManualClock::new(Timestamp::from_secs(1_700_000_040)));
        let counter = Arc::new(Counter(Mutex::new(HashMap::new())));
        let replicas = (0..n)
            .map(|_| {
                let r = RateLimiter::new(config, clock.clone());
                r.share(counter.clone());
                r
            })
            .collect();
        (clock, counter, replicas)
    }

    #[test]
    fn one_replica_sharing_is_exact_and_learns_of_the_others() {
        let config = RateLimitConfig {
            per_credential: Rate::per_minute(100),
            share_batch: 10,
            ..RateLimitConfig::default()
        };
        let (_, counter, replicas) = shared_replicas(2, &config);
        let (a, b) = (&replicas[0], &replicas[1]);
        let k = key("key_1");
        // Ten calls, then a round is needed before more.
        for n in 1..=10u32 {
            assert_eq!(
                allowed(a.check(LimitClass::Credential, &k)).remaining,
                100 - n
            );
        }
        assert_eq!(a.check(LimitClass::Credential, &k), Check::AwaitSync);
        // Without waiting, decided locally (the shared counter is slow).
        allowed(a.check_without_waiting(LimitClass::Credential, &k));
        counter.round(a);
        assert_eq!(counter.total(), 11);
        // Replica b has not reported: it knows nothing of a's calls until
        // its first round.
        assert_eq!(allowed(b.check(LimitClass::Credential, &k)).remaining, 99);
        counter.round(b);
        assert_eq!(allowed(b.check(LimitClass::Credential, &k)).remaining, 87);
    }

    /// Two (and three) replicas, calls interleaved in every order the test
    /// tries, rounds at random moments: never more than
    /// `limit - 1 + replicas × batch` per window, and never fewer than the
    /// limit when calls keep coming.
    #[test]
    fn replicas_sharing_stay_within_the_stated_bound() {
        use rand::{Rng, SeedableRng};
        for replicas_n in [2usize, 3] {
            for seed in 0..200u64 {
                let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
                let limit = rng.random_range(5..200u32);
                let batch = rng.random_range(1..=(limit / 2).max(1));
                let config = RateLimitConfig {
                    // Local buckets far larger, so only sharing limits.
                    per_credential: Rate {
                        limit,
                        period: Duration::from_secs(60),
                    },
                    share_batch: batch,
                    ..RateLimitConfig::default()
                };
                let (_, counter, replicas) = shared_replicas(replicas_n, &config);
                let k = key("hot");
                let mut admitted = 0u64;
                for _ in 0..(limit * 4) {
                    let r = &replicas[rng.random_range(0..replicas_n)];
                    if rng.random_bool(0.2) {
                        counter.round(r);
                    }
                    match r.check(LimitClass::Credential, &k) {
                        Check::Allowed(_) => admitted += 1,
                        Check::AwaitSync => counter.round(r),
                        Check::Limited(_) | Check::Unlimited => {}
                    }
                }
                let bound = u64::from(limit) - 1 + replicas_n as u64 * u64::from(batch);
                assert!(
                    admitted <= bound,
                    "seed {seed}: {admitted} > {bound} (limit {limit}, batch {batch})"
                );
                // The bucket alone would refuse past the limit too; the
                // shared count must not refuse before it.
                assert!(admitted >= u64::from(limit), "seed {seed}: {admitted}");
            }
        }
    }

    #[test]
    fn a_new_window_starts_a_new_shared_count() {
        let config = RateLimitConfig {
            per_credential: Rate {
                limit: 4,
                period: Duration::from_secs(10),
            },
            share_batch: 1,
            ..RateLimitConfig::default()
        };
        let (clock, counter, replicas) = shared_replicas(2, &config);
        let (a, b) = (&replicas[0], &replicas[1]);
        let k = key("k");
        for r in [a, b] {
            for _ in 0..2 {
                allowed(r.check(LimitClass::Credential, &k));
                counter.round(r);
            }
        }
        // a last heard 2: one more (within the bound), then it knows.
        allowed(a.check(LimitClass::Credential, &k));
        counter.round(a);
        let refused = limited(a.check(LimitClass::Credential, &k));
        assert_eq!(refused.retry_after, Duration::from_secs(10));
        clock.advance_secs(10);
        allowed(a.check(LimitClass::Credential, &k));
        // b's counter is for the ended window: dropped at its next round.
        assert_eq!(b.tracked().1, 1);
        counter.round(b);
        assert_eq!(b.tracked().1, 0);
    }

    #[test]
    fn in_fallback_each_replica_counts_alone_and_drops_shared_state() {
        let config = RateLimitConfig {
            per_credential: Rate::per_minute(10),
            share_batch: 2,
            ..RateLimitConfig::default()
        };
        let (_, counter, replicas) = shared_replicas(2, &config);
        let (a, b) = (&replicas[0], &replicas[1]);
        let k = key("k");
        for _ in 0..2 {
            allowed(a.check(LimitClass::Credential, &k));
        }
        counter.round(a);
        assert!(a.stats().shared);
        assert!(a.set_fallback(true));
        assert!(!a.set_fallback(true));
        let stats = a.stats();
        assert!(stats.fallback && !stats.shared && stats.fallbacks == 1);
        assert_eq!(a.tracked().1, 0);
        assert!(a.take_reports().is_empty());
        // Its bucket goes on: 8 more here, then refused; never AwaitSync.
        for _ in 0..8 {
            allowed(a.check(LimitClass::Credential, &k));
        }
        limited(a.check(LimitClass::Credential, &k));
        // b, still sharing, was unaffected.
        allowed(b.check(LimitClass::Credential, &k));
        assert!(a.set_fallback(false));
        assert!(a.stats().shared);
    }
}
