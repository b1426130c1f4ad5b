//! Supabase session keys by URL (docs/sessions.md): the project's JWKS
//! document is fetched at start, cached for its `Cache-Control: max-age`
//! (within bounds), fetched again early when a token names a key we do not
//! have (at most once per refetch interval), and the last good set is kept
//! whenever a fetch fails. The keys go into the domain's `SessionVerifier`;
//! this module only does the I/O.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use reqwest::header::{AGE, CACHE_CONTROL, HeaderMap};
use reqwest::{StatusCode, Url};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use velocity_domain::session::SessionVerifier;

/// Largest JWKS document read; Supabase's is a few KiB.
pub const MAX_DOCUMENT_BYTES: usize = 256 * 1024;
/// Longest one fetch may take, connection included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a document without `max-age` is cached (before the bounds).
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(600);
/// The first retry after a failed fetch; each further failure doubles it.
pub const FIRST_RETRY: Duration = Duration::from_secs(1);
/// The longest wait between retries while fetches keep failing.
pub const LONGEST_RETRY: Duration = Duration::from_secs(300);

/// When to fetch again.
#[derive(Clone, Debug)]
pub struct JwksPolicy {
    /// Least time between two fetches caused by unknown `kid`s.
    pub refetch_interval: Duration,
    /// Bounds on how long a fetched set is used before it is fetched again,
    /// whatever the response's `max-age` says.
    pub min_cache: Duration,
    pub max_cache: Duration,
}

impl JwksPolicy {
    /// How long a response with these headers stays fresh: `max-age` less
    /// `Age` (what a CDN already spent of it), else the default, clamped.
    pub fn freshness(&self, headers: &HeaderMap) -> Duration {
        let max_age = headers
            .get_all(CACHE_CONTROL)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .find_map(|directive| {
                let (name, value) = directive.trim().split_once('=')?;
                if !name.trim().eq_ignore_ascii_case("max-age") {
                    return None;
                }
                value.trim().trim_matches('"').parse::<u64>().ok()
            });
        let fresh = match max_age {
            Some(secs) => {
                let age = headers
                    .get(AGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .unwrap_or(0);
                Duration::from_secs(secs.saturating_sub(age))
            }
            None => DEFAULT_MAX_AGE,
        };
        fresh.clamp(self.min_cache, self.max_cache.max(self.min_cache))
    }

    /// The wait before retrying after `failures` failed fetches in a row.
    pub fn retry_after(failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(16);
        FIRST_RETRY
            .saturating_mul(1u32 << doublings)
            .min(LONGEST_RETRY)
    }
}

/// Fetches one JWKS URL and installs what it serves.
pub struct JwksFetcher {
    url: Url,
    /// The URL as logged: no user info, no query.
    shown: String,
    client: reqwest::Client,
    policy: JwksPolicy,
    /// The last document installed, to skip re-parsing an unchanged one.
    last_document: Option<Vec<u8>>,
}

impl JwksFetcher {
    pub fn new(url: Url, policy: JwksPolicy) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(REQUEST_TIMEOUT)
            .redirect(reqwest::redirect::Policy::limited(3))
            .user_agent(concat!("velocity-auth/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("cannot build the HTTP client for the JWKS")?;
        Ok(JwksFetcher {
            shown: shown_url(&url),
            url,
            client,
            policy,
            last_document: None,
        })
    }

    /// Fetches the document and, when it holds usable keys, replaces the
    /// verifier's fetched set. Returns how long the set may be used.
    pub async fn refresh(&mut self, verifier: &SessionVerifier) -> anyhow::Result<Duration> {
        let response = self
            .client
            .get(self.url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(reqwest::Error::without_url)
            .context("request failed")?;
        let status = response.status();
        if status != StatusCode::OK {
            bail!("answered HTTP {status}");
        }
        let fresh_for = self.policy.freshness(response.headers());
        let document = read_bounded(response).await?;
        if self.last_document.as_deref() == Some(document.as_slice()) {
            tracing::debug!(url = %self.shown, ?fresh_for, "JWKS unchanged");
            return Ok(fresh_for);
        }
        let (set, unreadable) = parse_document(&document)?;
        let replaced = verifier
            .replace_jwks(&set)
            .context("the document has no usable key; keeping the last good set")?;
        let kids: Vec<&str> = set
            .keys
            .iter()
            .filter_map(|k| k.common.key_id.as_deref())
            .collect();
        tracing::info!(
            url = %self.shown,
            usable = replaced.usable,
            skipped = replaced.skipped + unreadable,
            ?kids,
            ?fresh_for,
            "JWKS installed"
        );
        self.last_document = Some(document);
        Ok(fresh_for)
    }

    /// Keeps the set fresh until `shutdown`: fetches again when it goes
    /// stale, after a failure (with backoff), and when `unknown_kid` is
    /// notified, at most once per refetch interval. `next` is when the
    /// first fetch is due, and `failures` how many in a row have failed.
    async fn run(
        mut self,
        verifier: Arc<SessionVerifier>,
        unknown_kid: Arc<Notify>,
        shutdown: CancellationToken,
        mut next: Instant,
        mut failures: u32,
    ) {
        // The first unknown kid after start is answered at once.
        let mut unknown_allowed_at = Instant::now();
        loop {
            let unknown = async {
                tokio::time::sleep_until(unknown_allowed_at).await;
                // A notification that came during the wait is kept by
                // `Notify` and answered here, so none is lost, only delayed.
                unknown_kid.notified().await;
            };
            let because = tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep_until(next) => "the cached set is stale",
                _ = unknown => {
                    unknown_allowed_at = Instant::now() + self.policy.refetch_interval;
                    "a token named an unknown key"
                }
            };
            tracing::debug!(url = %self.shown, because, "fetching the JWKS");
            let outcome = tokio::select! {
                _ = shutdown.cancelled() => return,
                outcome = self.refresh(&verifier) => outcome,
            };
            next = match outcome {
                Ok(fresh_for) => {
                    failures = 0;
                    Instant::now() + fresh_for
                }
                Err(err) => {
                    failures = failures.saturating_add(1);
                    let retry_in = JwksPolicy::retry_after(failures);
                    tracing::warn!(
                        url = %self.shown,
                        error = format!("{err:#}"),
                        failures,
                        ?retry_in,
                        "JWKS fetch failed; keeping the last good key set"
                    );
                    Instant::now() + retry_in
                }
            };
        }
    }
}

/// Starts keeping `verifier`'s fetched keys in step with `url`. The first
/// fetch is awaited (it takes at most [`REQUEST_TIMEOUT`]); when it fails,
/// the service starts all the same, refusing tokens signed with keys it has
/// not got yet, and keeps retrying.
pub async fn spawn(
    url: Url,
    policy: JwksPolicy,
    verifier: Arc<SessionVerifier>,
    unknown_kid: Arc<Notify>,
    shutdown: CancellationToken,
) -> anyhow::Result<JoinHandle<()>> {
    let mut fetcher = JwksFetcher::new(url, policy)?;
    if fetcher.url.scheme() == "http" && !is_loopback(&fetcher.url) {
        tracing::warn!(url = %fetcher.shown, "the JWKS is fetched over plain HTTP; use https");
    }
    let (next, failures) = match fetcher.refresh(&verifier).await {
        Ok(fresh_for) => (Instant::now() + fresh_for, 0),
        Err(err) => {
            tracing::error!(
                url = %fetcher.shown,
                error = format!("{err:#}"),
                "cannot fetch the JWKS at start; tokens signed with its keys are refused until a fetch succeeds"
            );
            (Instant::now() + JwksPolicy::retry_after(1), 1)
        }
    };
    Ok(tokio::spawn(fetcher.run(
        verifier,
        unknown_kid,
        shutdown,
        next,
        failures,
    )))
}

/// Reads the body, refusing one larger than [`MAX_DOCUMENT_BYTES`] without
/// reading past the limit.
async fn read_bounded(mut response: reqwest::Response) -> anyhow::Result<Vec<u8>> {
    if response
        .content_length()
        .is_some_and(|n| n > MAX_DOCUMENT_BYTES as u64)
    {
        bail!("the document is larger than {MAX_DOCUMENT_BYTES} bytes");
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(reqwest::Error::without_url)
        .context("reading the document failed")?
    {
        if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
            bail!("the document is larger than {MAX_DOCUMENT_BYTES} bytes");
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A JWK set from `document`, leaving out (and counting) entries that are
/// not JWKs we can read, so one exotic key does not void the others.
fn parse_document(document: &[u8]) -> anyhow::Result<(JwkSet, usize)> {
    let mut document: serde_json::Value =
        serde_json::from_slice(document).context("the document is not JSON")?;
    let Some(serde_json::Value::Array(keys)) =
        document.get_mut("keys").map(serde_json::Value::take)
    else {
        bail!("the document is not a JWK set (no `keys` array)");
    };
    let mut set = JwkSet { keys: Vec::new() };
    let mut unreadable = 0;
    for (index, key) in keys.into_iter().enumerate() {
        match serde_json::from_value::<Jwk>(key) {
            Ok(jwk) => set.keys.push(jwk),
            Err(err) => {
                unreadable += 1;
                tracing::warn!(index, error = %err, "JWKS entry is not a JWK we can read; skipped");
            }
        }
    }
    Ok((set, unreadable))
}

fn is_loopback(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn shown_url(url: &Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.set_fragment(None);
    shown.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn policy() -> JwksPolicy {
        JwksPolicy {
            refetch_interval: Duration::from_secs(30),
            min_cache: Duration::from_secs(60),
            max_cache: Duration::from_secs(86_400),
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn freshness_follows_max_age_within_bounds() {
        let p = policy();
        let secs = |pairs: &[(&'static str, &'static str)]| p.freshness(&headers(pairs)).as_secs();
        assert_eq!(secs(&[]), 600, "no header: the default");
        assert_eq!(secs(&[("cache-control", "public, max-age=900")]), 900);
        assert_eq!(secs(&[("cache-control", "Max-Age=\"120\", public")]), 120);
        assert_eq!(
            secs(&[("cache-control", "max-age=900"), ("age", "300")]),
            600
        );
        assert_eq!(secs(&[("cache-control", "max-age=5")]), 60, "min bound");
        assert_eq!(secs(&[("cache-control", "no-store")]), 600);
        assert_eq!(secs(&[("cache-control", "no-cache, max-age=0")]), 60);
        assert_eq!(
            secs(&[("cache-control", "max-age=31536000")]),
            86_400,
            "max bound"
        );
        assert_eq!(secs(&[("cache-control", "max-age=nonsense")]), 600);
    }

    #[test]
    fn retries_back_off_to_a_ceiling() {
        let waits: Vec<u64> = (1..=12)
            .map(|n| JwksPolicy::retry_after(n).as_secs())
            .collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        assert_eq!(JwksPolicy::retry_after(u32::MAX), LONGEST_RETRY);
    }

    #[test]
    fn documents_skip_unreadable_entries() {
        let (set, unreadable) = parse_document(
            br#"{"keys":[{"kty":"EC","crv":"P-256","x":"AA","y":"AA","kid":"a"},42,"text"]}"#,
        )
        .unwrap();
        assert_eq!((set.keys.len(), unreadable), (1, 2));
        assert!(parse_document(b"<html>").is_err());
        assert!(parse_document(br#"{"nokeys":[]}"#).is_err());
    }

    #[test]
    fn logged_urls_carry_no_credentials() {
        let url = Url::parse("https://user:pw@x.supabase.co/auth/v1/jwks?apikey=k#f").unwrap();
        assert_eq!(shown_url(&url), "https://x.supabase.co/auth/v1/jwks");
        assert!(is_loopback(&Url::parse("http://127.0.0.1:9/").unwrap()));
        assert!(!is_loopback(&Url::parse("http://example.com/").unwrap()));
    }
}
