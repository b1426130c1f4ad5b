//! The verification cache in front of storage, and the known-key filter
//! that keeps floods of random keys away from it.
//!
//! Cached answers are what storage said, not decisions: the resolution rules
//! run on every request against the caller's clock, so a cached key is never
//! accepted past its `expires_at`. Entries live at most `ttl` (the fallback
//! should an invalidation be delayed) and are dropped on invalidation.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fastbloom::AtomicBloomFilter;
use moka::sync::Cache;

use crate::credential::{CredentialKind, DigestHasherBuilder, SecretHash};
use crate::directory::{Membership, Workspace, WorkspaceId};
use crate::invalidation::Invalidation;
use crate::issued::{IssuedStore, WhenFull};
use crate::oauth::{
    ACCESS_TOKEN_SECS, AuthorizationCode, CODE_SECS, ClientId, OAuthApp, OAuthToken,
};
use crate::resolve::{MembershipKey, VerifiedCredential};
use crate::session::SessionClaims;
use crate::stats::{CacheKind, Stats};

#[derive(Clone, Debug)]
pub struct CacheConfig {
    /// Longest an entry is served without asking storage again.
    pub ttl: Duration,
    pub max_credentials: u64,
    pub max_memberships: u64,
    /// Bits in the known-key filter: fixed, so memory does not grow with
    /// the number of keys (32 Mbit = 4 MiB: under 0.1 % false positives at
    /// 2 million keys).
    pub filter_bits: usize,
    /// Storage lookups per second allowed for tokens the filter has not
    /// seen (tokens minted on another replica a moment ago).
    pub unknown_token_lookups_per_sec: u64,
    /// Codes kept as issued until exchanged. A code lives ten minutes, so
    /// this many only under a burst of that many consents in ten minutes
    /// (about 0.5 KiB each); past it, the oldest are dropped and their
    /// exchanges read storage.
    pub max_issued_codes: u64,
    /// Refresh tokens kept as issued until their next use.
    pub max_issued_refresh_tokens: u64,
}

/// Issued refresh tokens are kept this long past their access token's
/// lifetime, for clients that refresh a little after it expired.
const ISSUED_REFRESH_SLACK_SECS: u64 = 300;

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            ttl: Duration::from_secs(10),
            max_credentials: 200_000,
            max_memberships: 200_000,
            filter_bits: 32 * 1024 * 1024,
            unknown_token_lookups_per_sec: 500,
            max_issued_codes: 100_000,
            max_issued_refresh_tokens: 10_000,
        }
    }
}

pub(crate) struct VerificationCache {
    credentials: Cache<SecretHash, Arc<VerifiedCredential>, DigestHasherBuilder>,
    /// Access tokens apart from keys: a burst of one-off key lookups must
    /// not cost the hot tokens their places, and token revocations can
    /// drop all tokens without touching keys.
    tokens: Cache<SecretHash, Arc<VerifiedCredential>, DigestHasherBuilder>,
    memberships: Cache<MembershipKey, Option<Membership>>,
    /// Workspaces by id: a cold key then costs one storage round trip, not two.
    workspaces: Cache<WorkspaceId, Workspace>,
    sessions: Cache<SecretHash, Arc<SessionClaims>, DigestHasherBuilder>,
    /// Registered apps by client id, read by every grant and introspection;
    /// shared, so a hit costs a reference count, not a copy of the app's
    /// strings and redirect URIs.
    apps: Cache<ClientId, Arc<OAuthApp>>,
    /// Codes and refresh tokens as this replica issued them, so that their
    /// use (the code exchanged seconds after consent, the refresh token at
    /// the next refresh) needs no read first: see [`Self::take_issued_code`].
    issued_codes: IssuedStore<AuthorizationCode>,
    issued_refresh_tokens: IssuedStore<OAuthToken>,
    /// Bumped by every app invalidation: a lookup that began before one
    /// does not cache what it read ([`Self::app_generation`]).
    app_generation: AtomicU64,
    known: KnownCredentials,
    token_budget: Budget,
    /// Hits and misses per cache are counted here.
    stats: Arc<Stats>,
}

impl VerificationCache {
    pub fn new(config: &CacheConfig, stats: Arc<Stats>) -> Self {
        let known = KnownCredentials::new(config.filter_bits);
        stats.filter.bits.add(known.filter.num_bits() as u64);
        VerificationCache {
            credentials: Cache::builder()
                .max_capacity(config.max_credentials)
                .time_to_live(config.ttl)
                .support_invalidation_closures()
                .build_with_hasher(DigestHasherBuilder::default()),
            tokens: Cache::builder()
                .max_capacity(config.max_credentials)
                .time_to_live(config.ttl)
                .build_with_hasher(DigestHasherBuilder::default()),
            memberships: Cache::builder()
                .max_capacity(config.max_memberships)
                .time_to_live(config.ttl)
                .support_invalidation_closures()
                .build(),
            workspaces: Cache::builder()
                .max_capacity(config.max_memberships)
                .time_to_live(config.ttl)
                .build(),
            // Session answers depend on nothing mutable but time, which the
            // verifier re-checks on every hit.
            sessions: Cache::builder()
                .max_capacity(config.max_credentials)
                .time_to_live(Duration::from_secs(300))
                .build_with_hasher(DigestHasherBuilder::default()),
            apps: Cache::builder()
                .max_capacity(config.max_memberships)
                .time_to_live(config.ttl)
                .build(),
            // Each code is read once, seconds after it was put: recency is
            // all that predicts a use, so a burst past the cap keeps its
            // newest codes, the ones about to be exchanged.
            issued_codes: IssuedStore::new(
                config.max_issued_codes,
                Duration::from_secs(CODE_SECS.unsigned_abs()),
                WhenFull::DropOldest,
            ),
            // A client typically refreshes when its access token expires,
            // so when full, the oldest are the next used: newcomers wait.
            issued_refresh_tokens: IssuedStore::new(
                config.max_issued_refresh_tokens,
                Duration::from_secs(ACCESS_TOKEN_SECS.unsigned_abs() + ISSUED_REFRESH_SLACK_SECS),
                WhenFull::KeepOldest,
            ),
            app_generation: AtomicU64::new(0),
            known,
            token_budget: Budget::new(config.unknown_token_lookups_per_sec),
            stats,
        }
    }

    /// A cached key (`vel_`, `velu_`) or access token (`velo_`).
    pub fn credential(
        &self,
        kind: CredentialKind,
        hash: &SecretHash,
    ) -> Option<Arc<VerifiedCredential>> {
        let (cache, hit) = match kind {
            CredentialKind::AccessToken => (CacheKind::AccessToken, self.tokens.get(hash)),
            _ => (CacheKind::Key, self.credentials.get(hash)),
        };
        self.counted(cache, hit)
    }

    fn counted<T>(&self, cache: CacheKind, found: Option<T>) -> Option<T> {
        self.stats.cache.record(cache, found.is_some());
        found
    }

    pub fn put_credential(&self, hash: SecretHash, credential: Arc<VerifiedCredential>) {
        if matches!(*credential, VerifiedCredential::AccessToken(_)) {
            self.tokens.insert(hash, credential);
        } else {
            self.credentials.insert(hash, credential);
        }
    }

    pub fn membership(&self, key: &MembershipKey) -> Option<Option<Membership>> {
        self.counted(CacheKind::Membership, self.memberships.get(key))
    }

    pub fn put_membership(&self, key: MembershipKey, membership: Option<Membership>) {
        self.memberships.insert(key, membership);
    }

    pub fn workspace(&self, id: &WorkspaceId) -> Option<Workspace> {
        self.counted(CacheKind::Workspace, self.workspaces.get(id))
    }

    pub fn put_workspace(&self, workspace: Workspace) {
        self.workspaces.insert(workspace.id.clone(), workspace);
    }

    pub fn session(&self, token_hash: &SecretHash) -> Option<Arc<SessionClaims>> {
        self.counted(CacheKind::Session, self.sessions.get(token_hash))
    }

    pub fn put_session(&self, token_hash: SecretHash, claims: Arc<SessionClaims>) {
        self.sessions.insert(token_hash, claims);
    }

    pub fn app(&self, client_id: &ClientId) -> Option<Arc<OAuthApp>> {
        self.counted(CacheKind::App, self.apps.get(client_id))
    }

    /// A code this replica issued, as it was stored, taken out (a code is
    /// used once; a second attempt reads storage).
    ///
    /// What storage holds may have moved on since (spent, or its app gone,
    /// by another replica): the answer is only what the checks before the
    /// claim read. The claim itself is the conditional update in storage,
    /// which refuses a spent or vanished code whatever was read here, and a
    /// refused claim is answered as the replay it is.
    pub fn take_issued_code(&self, hash: &SecretHash) -> Option<AuthorizationCode> {
        self.counted(CacheKind::Grant, self.issued_codes.take(hash))
    }

    pub fn put_issued_code(&self, code: AuthorizationCode) {
        self.issued_codes.put(code.hash, code);
    }

    /// A refresh token this replica issued, taken out: as for codes
    /// ([`Self::take_issued_code`]), the rotation's conditional update in
    /// storage decides, and revocations drop these (`apply`).
    pub fn take_issued_refresh_token(&self, hash: &SecretHash) -> Option<OAuthToken> {
        self.counted(CacheKind::Grant, self.issued_refresh_tokens.take(hash))
    }

    pub fn put_issued_refresh_token(&self, token: OAuthToken) {
        self.issued_refresh_tokens.put(token.hash, token);
    }

    /// Read before looking an app up in storage, and handed back to
    /// [`Self::put_app`] with what was found.
    pub fn app_generation(&self) -> u64 {
        self.app_generation.load(Ordering::Acquire)
    }

    /// Caches `app` unless an app invalidation came after `generation` was
    /// read: what storage answered may predate it.
    pub fn put_app(&self, app: Arc<OAuthApp>, generation: u64) {
        if self.app_generation() != generation {
            return;
        }
        let client_id = app.client_id.clone();
        self.apps.insert(client_id.clone(), app);
        // An invalidation between the check and the insert bumped the
        // generation before dropping the entry, maybe before it existed:
        // look again, and drop it ourselves.
        if self.app_generation() != generation {
            self.apps.invalidate(&client_id);
        }
    }

    /// Adds `hash` to the known-credential filter, counting it if the
    /// filter did not hold it already.
    pub fn add_known(&self, hash: &SecretHash) {
        if self.known.insert(hash) {
            self.stats.filter.inserted.inc();
        }
    }

    pub fn known(&self) -> &KnownCredentials {
        &self.known
    }

    /// Whether a lookup of a token the filter has not seen may go to storage.
    pub fn allow_unknown_token_lookup(&self) -> bool {
        self.token_budget.take()
    }

    pub fn apply(&self, invalidation: &Invalidation) {
        match invalidation {
            Invalidation::KeyRevoked(hash) => self.credentials.invalidate(hash),
            Invalidation::KeyCreated(hash) => self.add_known(hash),
            Invalidation::Membership(user) => {
                let user = user.clone();
                // Only fails without support_invalidation_closures, set above.
                let _ = self
                    .memberships
                    .invalidate_entries_if(move |key, _| key.user() == &user);
            }
            Invalidation::AccessTokens => {
                self.tokens.invalidate_all();
                // A revoked grant's refresh token then reads as revoked.
                self.issued_refresh_tokens.clear();
            }
            Invalidation::App(client_id) => {
                self.app_generation.fetch_add(1, Ordering::AcqRel);
                self.apps.invalidate(client_id);
                // A deleted app's codes and tokens went with it.
                self.issued_codes.clear();
                self.issued_refresh_tokens.clear();
            }
        }
    }

    /// Drops everything (after the invalidation feed was interrupted).
    pub fn clear(&self) {
        self.credentials.invalidate_all();
        self.tokens.invalidate_all();
        self.memberships.invalidate_all();
        self.workspaces.invalidate_all();
        self.app_generation.fetch_add(1, Ordering::AcqRel);
        self.apps.invalidate_all();
        self.issued_codes.clear();
        self.issued_refresh_tokens.clear();
    }
}

/// A fixed-size Bloom filter of every stored API key and token hash. "Not
/// in the filter" means "never stored" for keys, so a flood of random keys
/// is refused without storage.
pub(crate) struct KnownCredentials {
    filter: AtomicBloomFilter,
    ready: std::sync::atomic::AtomicBool,
}

impl KnownCredentials {
    fn new(bits: usize) -> Self {
        KnownCredentials {
            filter: AtomicBloomFilter::with_num_bits(bits.max(1024)).hashes(7),
            ready: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Adds `hash`; whether the filter did not hold it already (so the
    /// same key applied twice, from the log and from a page of the start's
    /// load, or by two concurrent log reads, is counted once).
    pub fn insert(&self, hash: &SecretHash) -> bool {
        !self.filter.insert_hash(hash.fingerprint())
    }

    /// `None` until the filter has been loaded from storage: until then it
    /// knows nothing and must not be trusted.
    pub fn may_contain(&self, hash: &SecretHash) -> Option<bool> {
        self.ready
            .load(Ordering::Acquire)
            .then(|| self.filter.contains_hash(hash.fingerprint()))
    }

    pub fn mark_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }
}

/// A token bucket refilled every second, lock-free.
struct Budget {
    per_sec: u64,
    epoch: Instant,
    window: AtomicU64,
    used: AtomicU64,
}

impl Budget {
    fn new(per_sec: u64) -> Self {
        Budget {
            per_sec,
            epoch: Instant::now(),
            window: AtomicU64::new(0),
            used: AtomicU64::new(0),
        }
    }

    fn take(&self) -> bool {
        let now = self.epoch.elapsed().as_secs();
        if self.window.swap(now, Ordering::AcqRel) != now {
            self.used.store(0, Ordering::Release);
        }
        self.used.fetch_add(1, Ordering::AcqRel) < self.per_sec
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credential::{CredentialKind, Secret};

    #[test]
    fn filter_knows_what_was_inserted_and_little_else() {
        let known = KnownCredentials::new(1 << 20);
        let inserted: Vec<SecretHash> = (0..10_000)
            .map(|_| Secret::generate(CredentialKind::WorkspaceKey).hash())
            .collect();
        for hash in &inserted {
            known.insert(hash);
        }
        assert_eq!(
            known.may_contain(&inserted[0]),
            None,
            "not trusted before it is loaded"
        );
        known.mark_ready();
        assert!(inserted.iter().all(|h| known.may_contain(h) == Some(true)));
        let false_positives = (0..10_000)
            .filter(|_| {
                known.may_contain(&Secret::generate(CredentialKind::WorkspaceKey).hash())
                    == Some(true)
            })
            .count();
        assert!(
            false_positives < 50,
            "{false_positives} false positives in 10k"
        );
    }

    #[test]
    fn budget_limits_per_second() {
        let budget = Budget::new(3);
        let granted = (0..10).filter(|_| budget.take()).count();
        assert!(granted <= 3 || budget.epoch.elapsed() >= Duration::from_secs(1));
    }
}

#[cfg(test)]
mod churn_tests {
    use super::*;
    use crate::clock::Timestamp;
    use crate::credential::{CredentialKind, Secret};
    use crate::directory::UserId;
    use crate::scope::ScopeSet;
    use crate::session::SessionClaims;

    /// A key's hash reaches the filter from several places (its creation,
    /// the log, the start's load, two log reads at once): it counts once.
    #[test]
    fn a_hash_added_twice_counts_once() {
        let stats: Arc<Stats> = Arc::default();
        let cache = VerificationCache::new(&CacheConfig::default(), stats.clone());
        let key = Secret::generate(CredentialKind::WorkspaceKey).hash();
        cache.add_known(&key);
        cache.apply(&Invalidation::KeyCreated(key));
        cache.add_known(&key);
        assert_eq!(stats.filter.inserted.get(), 1);
        cache.add_known(&Secret::generate(CredentialKind::WorkspaceKey).hash());
        assert_eq!(stats.filter.inserted.get(), 2);
    }

    /// Codes are exchanged seconds after consent, each once: past the cap,
    /// the codes kept must be the newest, or a burst of consents leaves
    /// every later exchange reading storage until the burst's codes expire.
    #[test]
    fn a_full_code_cache_keeps_the_newest_codes() {
        let config = CacheConfig {
            max_issued_codes: 1_000,
            ..CacheConfig::default()
        };
        let cache = VerificationCache::new(&config, Arc::default());
        let code = |n: usize| AuthorizationCode {
            hash: Secret::generate(CredentialKind::AuthorizationCode).hash(),
            client_id: ClientId("app".into()),
            redirect_uri: "https://app.example/cb".into(),
            user_id: UserId("user".into()),
            workspace_id: WorkspaceId(format!("workspace-{n}")),
            scopes: ScopeSet::workspace(),
            code_challenge: "c".repeat(43),
            family_id: crate::oauth::FamilyId::generate(),
            created_at: Timestamp(0),
            expires_at: Timestamp(600_000),
            used_at: None,
        };
        let mut hashes = Vec::new();
        for n in 0..5_000 {
            let issued = code(n);
            hashes.push(issued.hash);
            cache.put_issued_code(issued);
        }
        let newest = &hashes[hashes.len() - 500..];
        let kept = newest
            .iter()
            .filter(|hash| cache.take_issued_code(hash).is_some())
            .count();
        assert_eq!(kept, newest.len(), "of the 500 newest codes, {kept} kept");
    }

    /// A burst of one-off lookups (cold keys) must not push out an entry
    /// that is read all the time.
    #[test]
    fn hot_entry_survives_a_burst_of_cold_ones() {
        let cache = VerificationCache::new(&CacheConfig::default(), Arc::default());
        let cold = || {
            Arc::new(VerifiedCredential::Session {
                claims: Arc::new(SessionClaims {
                    sub: "u".into(),
                    exp: 0,
                    role: None,
                    session_id: None,
                    email: None,
                }),
            })
        };
        for _ in 0..50_000 {
            cache.put_credential(
                Secret::generate(CredentialKind::WorkspaceKey).hash(),
                cold(),
            );
        }
        let hot = Secret::generate(CredentialKind::AccessToken).hash();
        cache.put_credential(hot, cold());
        let mut misses = 0;
        for _ in 0..10_000 {
            if cache
                .credential(CredentialKind::WorkspaceKey, &hot)
                .is_none()
            {
                misses += 1;
                cache.put_credential(hot, cold());
            }
        }
        assert_eq!(misses, 0, "the hot entry was dropped {misses} times");
    }
}
