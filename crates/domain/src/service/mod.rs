//! The use-cases, shared by every adapter (gRPC, HTTP, CLI).

mod authenticate;
mod directory;
mod invalidations;
mod keys;
mod oauth;
mod rate_limits;

use std::sync::Arc;

pub use keys::{KeySpec, NewKey};
pub use oauth::{
    AppChanges, AppManager, ClientAuth, IntrospectedToken, Introspection, IssuedTokens,
    MAX_SECRET_OVERLAP_SECS, NewApp, ORIGIN_CACHE_SECS, redirect_uri_origin,
};

use crate::cache::{CacheConfig, VerificationCache};
use crate::clock::Clock;
use crate::error::Error;
use crate::rate_limit::{RateLimitConfig, RateLimiter};
use crate::session::SessionVerifier;
use crate::stats::Stats;
use crate::store::Store;
use crate::throttle::{ClientAuthThrottle, ThrottleConfig};
use crate::usage::UsageRecorder;

/// Limits on caller input, so no request can make us do unbounded work.
pub mod limits {
    pub const MAX_NAME_LEN: usize = 100;
    pub const MAX_SCOPES: usize = 32;
    pub const MAX_EMAIL_LEN: usize = 320;
    pub const MAX_ID_LEN: usize = 128;
}

#[derive(Clone, Debug)]
pub struct ServiceConfig {
    /// Longest lifetime a caller may give a new API key, in seconds.
    pub max_key_lifetime_secs: i64,
    /// How long after its rotation a refresh token may be used again by
    /// the same client for a fresh pair in the same grant, instead of being
    /// treated as a replay that revokes the grant; 0 turns this off
    /// (docs/oauth-refresh.md).
    pub refresh_reuse_interval_secs: u64,
    pub cache: CacheConfig,
    /// Budgets for failed client authentications (`throttle`).
    pub client_auth_throttle: ThrottleConfig,
    /// Request budgets per credential, session user, address and client.
    pub rate_limits: RateLimitConfig,
    /// This server's issuer identifier and public base URL (RFC 8414):
    /// sent as `iss` on every authorization response (RFC 9207) and the
    /// base of every endpoint in the metadata document. No trailing slash.
    pub issuer: String,
}

/// The issuer when none is configured: the default HTTP listen address.
pub const DEFAULT_ISSUER: &str = "http://127.0.0.1:8080";

/// The default refresh reuse interval, in seconds.
pub const DEFAULT_REFRESH_REUSE_INTERVAL_SECS: u64 = 10;

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            max_key_lifetime_secs: 5 * 365 * 24 * 3600,
            refresh_reuse_interval_secs: DEFAULT_REFRESH_REUSE_INTERVAL_SECS,
            cache: CacheConfig::default(),
            client_auth_throttle: ThrottleConfig::default(),
            rate_limits: RateLimitConfig::default(),
            issuer: DEFAULT_ISSUER.to_owned(),
        }
    }
}

/// The service core: every adapter calls these methods.
#[derive(Clone)]
pub struct Service {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    sessions: Option<Arc<SessionVerifier>>,
    usage: Arc<UsageRecorder>,
    cache: Arc<VerificationCache>,
    sync: Arc<invalidations::SyncState>,
    /// Trips to storage the verification cache and the filter are there to
    /// avoid: Authenticate's and introspection's (keys, tokens,
    /// memberships, workspaces) and client authentication's (apps).
    storage_lookups: Arc<std::sync::atomic::AtomicU64>,
    /// What the service counts of its work, for the edge to export.
    stats: Arc<Stats>,
    client_auth_throttle: Arc<ClientAuthThrottle>,
    rate_limits: Arc<RateLimiter>,
    /// Origins of registered redirect URIs, for CORS (`oauth::origins`).
    origin_cache: Arc<oauth::origins::OriginCache>,
    config: ServiceConfig,
}

impl Service {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        sessions: Option<SessionVerifier>,
        config: ServiceConfig,
    ) -> Self {
        let client_auth_throttle = Arc::new(ClientAuthThrottle::new(
            &config.client_auth_throttle,
            clock.clone(),
        ));
        let stats = Arc::new(Stats::default());
        let rate_limits = Arc::new(RateLimiter::new(&config.rate_limits, clock.clone()));
        Service {
            store,
            clock,
            sessions: sessions.map(Arc::new),
            usage: Arc::new(UsageRecorder::default()),
            cache: Arc::new(VerificationCache::new(&config.cache, stats.clone())),
            sync: Arc::new(invalidations::SyncState::default()),
            storage_lookups: Arc::default(),
            stats,
            client_auth_throttle,
            rate_limits,
            origin_cache: Arc::default(),
            config,
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The issuer identifier (`ServiceConfig::issuer`).
    pub fn issuer(&self) -> &str {
        &self.config.issuer
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The request budgets: for the edge to attach a shared counter, and
    /// for metrics.
    pub fn rate_limiter(&self) -> &Arc<RateLimiter> {
        &self.rate_limits
    }

    /// The session-token verifier, for the edge to install fetched keys.
    pub fn session_verifier(&self) -> Option<&Arc<SessionVerifier>> {
        self.sessions.as_ref()
    }

    /// How many cacheable look-ups went to storage since start
    /// (Authenticate, introspection, client authentication).
    pub fn storage_lookups(&self) -> u64 {
        self.storage_lookups
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Counters of Authenticate, the caches, the filter, the invalidation
    /// feed, grants and rate limits.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    fn count_lookup(&self) {
        self.storage_lookups
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Writes batched `last_used_at` values; the server calls this on a timer
    /// and at shutdown. A failed batch is kept for the next try.
    pub async fn flush_usage(&self) -> Result<usize, Error> {
        let batch = self.usage.drain();
        if batch.is_empty() {
            return Ok(0);
        }
        let n = batch.len();
        match self.store.record_key_usage(&batch).await {
            Ok(()) => Ok(n),
            Err(err) => {
                self.usage.restore(batch);
                Err(err.into())
            }
        }
    }
}

fn check_name(name: &str) -> Result<&str, Error> {
    let name = name.trim();
    if name.is_empty()
        || name.chars().count() > limits::MAX_NAME_LEN
        || name.chars().any(char::is_control)
    {
        return Err(Error::invalid(format!(
            "name must be 1 to {} printable characters",
            limits::MAX_NAME_LEN
        )));
    }
    Ok(name)
}
