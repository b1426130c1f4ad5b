//! What the service counts of its own work, for the edge to export (the
//! binary's Prometheus exporter reads these at scrape time).
//!
//! Plain atomics in fixed arrays indexed by small enums: counting an
//! Authenticate is one relaxed increment, with no lock, no allocation and no
//! label formatting; names and labels are only spelled out when scraped.
//! Every label set is bounded by an enum (or, for rate limits, by the
//! `&'static str` names the limiters are built with).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::credential::{CredentialKind, strip_bearer};
use crate::error::Reason;
use crate::session::SessionVerifier;

/// Everything the domain counts; one per [`crate::Service`].
#[derive(Debug, Default)]
pub struct Stats {
    pub authenticate: AuthenticateStats,
    pub cache: CacheStats,
    pub filter: FilterStats,
    pub invalidations: InvalidationStats,
    pub grants: GrantStats,
    pub rate_limits: RateLimitStats,
}

/// The kind of credential presented to Authenticate, as a metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PresentedKind {
    WorkspaceKey,
    PersonalKey,
    AccessToken,
    Session,
    /// A secret of ours that never authenticates (a code, a refresh token,
    /// a client secret).
    OtherSecret,
    /// Empty, or neither one of our prefixes nor JWT-shaped.
    Malformed,
}

impl PresentedKind {
    pub const ALL: [PresentedKind; 6] = [
        PresentedKind::WorkspaceKey,
        PresentedKind::PersonalKey,
        PresentedKind::AccessToken,
        PresentedKind::Session,
        PresentedKind::OtherSecret,
        PresentedKind::Malformed,
    ];

    /// From the prefix alone (and the JWT shape): no parsing, no storage.
    pub fn of(credential: &str) -> PresentedKind {
        Self::of_stripped(strip_bearer(credential))
    }

    /// As [`of`](Self::of), for a credential whose `Bearer` scheme has
    /// already been taken off: Authenticate strips it once for both uses.
    pub(crate) fn of_stripped(credential: &str) -> PresentedKind {
        match CredentialKind::of(credential) {
            Some(CredentialKind::WorkspaceKey) => PresentedKind::WorkspaceKey,
            Some(CredentialKind::PersonalKey) => PresentedKind::PersonalKey,
            Some(CredentialKind::AccessToken) => PresentedKind::AccessToken,
            Some(_) => PresentedKind::OtherSecret,
            None if SessionVerifier::looks_like_jwt(credential) => PresentedKind::Session,
            None => PresentedKind::Malformed,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PresentedKind::WorkspaceKey => "workspace_key",
            PresentedKind::PersonalKey => "personal_key",
            PresentedKind::AccessToken => "access_token",
            PresentedKind::Session => "session",
            PresentedKind::OtherSecret => "other_secret",
            PresentedKind::Malformed => "malformed",
        }
    }
}

/// Slot 0 of a row counts acceptances; slot `1 + reason` refusals.
const OUTCOMES: usize = 1 + Reason::ALL.len();

/// Authenticate outcomes by presented kind and reason.
#[derive(Debug)]
pub struct AuthenticateStats {
    counts: [[AtomicU64; OUTCOMES]; PresentedKind::ALL.len()],
}

impl Default for AuthenticateStats {
    fn default() -> Self {
        AuthenticateStats {
            counts: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
        }
    }
}

impl AuthenticateStats {
    /// `refused`: the reason, or `None` for an accepted credential.
    pub fn record(&self, kind: PresentedKind, refused: Option<Reason>) {
        let slot = refused.map_or(0, |reason| 1 + reason as usize);
        // Never a panic on the hot path; the tests (debug builds) catch a
        // reason added to the enum but not to `Reason::ALL`.
        debug_assert!(slot < OUTCOMES, "{refused:?} is missing from Reason::ALL");
        if let Some(count) = self.counts[kind as usize].get(slot) {
            count.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn accepted(&self, kind: PresentedKind) -> u64 {
        self.counts[kind as usize][0].load(Ordering::Relaxed)
    }

    pub fn refused(&self, kind: PresentedKind, reason: Reason) -> u64 {
        self.counts[kind as usize]
            .get(1 + reason as usize)
            .map_or(0, |n| n.load(Ordering::Relaxed))
    }
}

/// The verification cache's parts, as a metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheKind {
    Key,
    AccessToken,
    Membership,
    Workspace,
    Session,
    App,
    /// Codes and refresh tokens this replica issued, awaiting their use.
    Grant,
}

impl CacheKind {
    pub const ALL: [CacheKind; 7] = [
        CacheKind::Key,
        CacheKind::AccessToken,
        CacheKind::Membership,
        CacheKind::Workspace,
        CacheKind::Session,
        CacheKind::App,
        CacheKind::Grant,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CacheKind::Key => "key",
            CacheKind::AccessToken => "access_token",
            CacheKind::Membership => "membership",
            CacheKind::Workspace => "workspace",
            CacheKind::Session => "session",
            CacheKind::App => "app",
            CacheKind::Grant => "grant",
        }
    }
}

/// Hits (slot 0) and misses (slot 1) per cache.
#[derive(Debug, Default)]
pub struct CacheStats {
    counts: [[AtomicU64; 2]; CacheKind::ALL.len()],
}

impl CacheStats {
    pub fn record(&self, cache: CacheKind, hit: bool) {
        self.counts[cache as usize][usize::from(!hit)].fetch_add(1, Ordering::Relaxed);
    }

    pub fn hits(&self, cache: CacheKind) -> u64 {
        self.counts[cache as usize][0].load(Ordering::Relaxed)
    }

    pub fn misses(&self, cache: CacheKind) -> u64 {
        self.counts[cache as usize][1].load(Ordering::Relaxed)
    }
}

/// The known-credential filter: what it answered, and what it got wrong.
#[derive(Debug, Default)]
pub struct FilterStats {
    /// Lookups the filter said were never stored (refused without storage,
    /// or, for access tokens, sent to storage on the small budget).
    pub absent: Counter,
    /// Lookups the filter let through.
    pub passed: Counter,
    /// Lookups made before the filter was loaded (not trusted then).
    pub not_loaded: Counter,
    /// Lookups the filter let through that storage did not know: its false
    /// positives (and hashes of credentials since pruned).
    pub false_positives: Counter,
    /// Hashes added: loaded at start, then created or minted since. A hash
    /// may be counted twice (the filter cannot tell), so this is an upper
    /// bound on its entries.
    pub inserted: Counter,
    /// The filter's fixed size, in bits.
    pub bits: Counter,
}

impl FilterStats {
    pub fn record_lookup(&self, answer: Option<bool>) {
        match answer {
            Some(true) => &self.passed,
            Some(false) => &self.absent,
            None => &self.not_loaded,
        }
        .inc();
    }
}

/// A monotonic count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn inc(&self) {
        self.add(1);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The invalidation feed.
#[derive(Debug, Default)]
pub struct InvalidationStats {
    /// Log entries applied to this replica's cache.
    pub applied: Counter,
    /// Reads of the log that failed.
    pub failed_reads: Counter,
}

/// The token endpoint's grants, as a metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrantKind {
    AuthorizationCode,
    RefreshToken,
}

impl GrantKind {
    pub const ALL: [GrantKind; 2] = [GrantKind::AuthorizationCode, GrantKind::RefreshToken];

    pub fn as_str(self) -> &'static str {
        match self {
            GrantKind::AuthorizationCode => "authorization_code",
            GrantKind::RefreshToken => "refresh_token",
        }
    }
}

/// How a grant ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrantOutcome {
    /// Tokens issued (a refresh within the reuse interval included).
    Issued,
    /// Refused for any reason but a replay.
    Refused,
    /// A spent code or refresh token presented again: refused, and its
    /// family revoked.
    Replayed,
}

impl GrantOutcome {
    pub const ALL: [GrantOutcome; 3] = [
        GrantOutcome::Issued,
        GrantOutcome::Refused,
        GrantOutcome::Replayed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            GrantOutcome::Issued => "issued",
            GrantOutcome::Refused => "refused",
            GrantOutcome::Replayed => "replayed",
        }
    }
}

#[derive(Debug, Default)]
pub struct GrantStats {
    counts: [[AtomicU64; GrantOutcome::ALL.len()]; GrantKind::ALL.len()],
}

impl GrantStats {
    pub fn record(&self, grant: GrantKind, outcome: GrantOutcome) {
        self.counts[grant as usize][outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, grant: GrantKind, outcome: GrantOutcome) -> u64 {
        self.counts[grant as usize][outcome as usize].load(Ordering::Relaxed)
    }
}

/// Requests refused by a rate limit, per limit: the request budgets report
/// their class (`credential`, `session`, `address`, `client`), the
/// failed-client-authentication throttle `client_auth`. Whether budgets are
/// shared or counted locally is the limiter's own (`RateLimiter::stats`).
#[derive(Debug, Default)]
pub struct RateLimitStats {
    /// Few entries, added once per limit name, then only read: a refusal
    /// takes a read lock and one increment.
    refused: RwLock<Vec<(&'static str, Arc<AtomicU64>)>>,
}

impl RateLimitStats {
    /// One request refused by the limit named `limit` (a fixed name such as
    /// `client_auth`, never caller data: it becomes a label).
    pub fn refused(&self, limit: &'static str) {
        let found = self.refused.read().ok().and_then(|entries| {
            entries
                .iter()
                .find(|(name, _)| *name == limit)
                .map(|(_, n)| n.clone())
        });
        let counter = match found {
            Some(counter) => counter,
            None => match self.refused.write() {
                Ok(mut entries) => match entries.iter().find(|(name, _)| *name == limit) {
                    Some((_, counter)) => counter.clone(),
                    None => {
                        let counter = Arc::new(AtomicU64::new(0));
                        entries.push((limit, counter.clone()));
                        counter
                    }
                },
                Err(_) => return,
            },
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Refusals per limit name, in the order the names were first seen.
    pub fn refusals(&self) -> Vec<(&'static str, u64)> {
        self.refused
            .read()
            .map(|entries| {
                entries
                    .iter()
                    .map(|(name, n)| (*name, n.load(Ordering::Relaxed)))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Upper bounds of [`LatencyHistogram`]'s buckets, in seconds: 50 µs to
/// 10 s, dense where Authenticate lives (well under a millisecond warm).
pub const LATENCY_BUCKETS_SECS: [f64; 16] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 10.0,
];

/// A lock-free latency histogram (a mutex per observation, as the common
/// Prometheus clients take, would serialise every call on the hot path).
#[derive(Debug)]
pub struct LatencyHistogram {
    /// Non-cumulative counts per bucket; the last slot is +Inf.
    buckets: [AtomicU64; LATENCY_BUCKETS_SECS.len() + 1],
    sum_nanos: AtomicU64,
    count: AtomicU64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_nanos: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }
}

/// The bucket bounds in nanoseconds, for a comparison of integers per bucket.
const LATENCY_BUCKETS_NANOS: [u64; 16] = {
    let mut out = [0u64; 16];
    let mut i = 0;
    while i < 16 {
        out[i] = (LATENCY_BUCKETS_SECS[i] * 1e9) as u64;
        i += 1;
    }
    out
};

/// A snapshot for exposition: cumulative counts per upper bound.
#[derive(Clone, Debug, PartialEq)]
pub struct HistogramSnapshot {
    pub sum_secs: f64,
    pub count: u64,
    /// (upper bound in seconds, cumulative count), ending with +Inf.
    pub buckets: Vec<(f64, u64)>,
}

impl LatencyHistogram {
    pub fn observe(&self, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let slot = LATENCY_BUCKETS_NANOS
            .iter()
            .position(|&bound| nanos <= bound)
            .unwrap_or(LATENCY_BUCKETS_NANOS.len());
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Counts are read one by one while others may add, so a snapshot can
    /// be a few observations apart between its buckets and its count; the
    /// count is taken as the +Inf bucket so the two always agree.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(self.buckets.len());
        for (i, n) in self.buckets.iter().enumerate() {
            cumulative += n.load(Ordering::Relaxed);
            let bound = LATENCY_BUCKETS_SECS
                .get(i)
                .copied()
                .unwrap_or(f64::INFINITY);
            buckets.push((bound, cumulative));
        }
        HistogramSnapshot {
            sum_secs: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            count: cumulative,
            buckets,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credential::Secret;

    #[test]
    fn reasons_index_their_slots() {
        for (i, reason) in Reason::ALL.iter().enumerate() {
            assert_eq!(*reason as usize, i, "{reason:?}");
        }
        for (i, kind) in PresentedKind::ALL.iter().enumerate() {
            assert_eq!(*kind as usize, i);
        }
        for (i, kind) in CacheKind::ALL.iter().enumerate() {
            assert_eq!(*kind as usize, i);
        }
    }

    #[test]
    fn counts_by_kind_and_reason() {
        let stats = AuthenticateStats::default();
        let key = Secret::generate(CredentialKind::WorkspaceKey);
        let kind = PresentedKind::of(&format!("Bearer {}", key.expose()));
        assert_eq!(kind, PresentedKind::WorkspaceKey);
        stats.record(kind, None);
        stats.record(kind, Some(Reason::CredentialRevoked));
        stats.record(kind, Some(Reason::CredentialRevoked));
        assert_eq!(stats.accepted(kind), 1);
        assert_eq!(stats.refused(kind, Reason::CredentialRevoked), 2);
        assert_eq!(stats.refused(kind, Reason::TooManyAttempts), 0);
        assert_eq!(PresentedKind::of(""), PresentedKind::Malformed);
        assert_eq!(PresentedKind::of("a.b.c"), PresentedKind::Session);
        let code = Secret::generate(CredentialKind::AuthorizationCode);
        assert_eq!(PresentedKind::of(code.expose()), PresentedKind::OtherSecret);
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = LatencyHistogram::default();
        h.observe(Duration::from_micros(40));
        h.observe(Duration::from_micros(700));
        h.observe(Duration::from_secs(20));
        let s = h.snapshot();
        assert_eq!(s.count, 3);
        assert_eq!(s.buckets[0], (0.00005, 1));
        assert_eq!(s.buckets[4], (0.001, 2));
        assert_eq!(s.buckets.last().map(|b| b.1), Some(3));
        assert!(s.buckets.last().is_some_and(|b| b.0.is_infinite()));
        assert!((s.sum_secs - 20.00074).abs() < 1e-9);
    }

    #[test]
    fn rate_limit_refusals_by_name() {
        let stats = RateLimitStats::default();
        stats.refused("client_auth");
        stats.refused("authenticate");
        stats.refused("client_auth");
        assert_eq!(
            stats.refusals(),
            vec![("client_auth", 2), ("authenticate", 1)]
        );
    }
}
