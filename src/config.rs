//! Service configuration: flags and environment, documented by `--help`.
//! Tests build this struct directly instead of setting the environment.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use reqwest::Url;
use velocity_domain::rate_limit::{Rate, RateLimitConfig};
use velocity_domain::routes::RouteScopes;
use velocity_domain::service::DEFAULT_REFRESH_REUSE_INTERVAL_SECS;
use velocity_domain::session::{SessionVerifier, SessionVerifierConfig};
use velocity_domain::throttle::ThrottleConfig;
use velocity_storage::{DEFAULT_DATABASE_URL, Database, StorageOptions};

#[derive(Args, Clone)]
pub struct ServeConfig {
    /// Where to serve gRPC (AuthService, DirectoryService, health, reflection).
    #[arg(long, env = "VELOCITY_GRPC_ADDR", default_value = "127.0.0.1:50051")]
    pub grpc_addr: String,

    /// Where to serve HTTP (the public OAuth URLs).
    #[arg(long, env = "VELOCITY_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: String,

    /// Where to serve Prometheus metrics (`/metrics`, plain HTTP) on a
    /// listener of their own, e.g. an internal interface; unset, `/metrics`
    /// is served on the HTTP listener (docs/metrics.md).
    #[arg(long, env = "VELOCITY_METRICS_ADDR")]
    pub metrics_addr: Option<String>,

    /// This server's public base URL, which is also its OAuth issuer
    /// identifier (RFC 8414): the base of every URL in
    /// /.well-known/oauth-authorization-server and the `iss` on every
    /// authorization response (RFC 9207). Set it to the URL clients reach,
    /// e.g. https://auth.example.com; unset, it is http://<the HTTP listen
    /// address> (http://127.0.0.1:8080 by default).
    #[arg(long, env = "VELOCITY_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// Origins (scheme://host[:port], comma-separated) allowed CORS on the
    /// token, revocation, introspection and metadata URLs, besides the
    /// origins of registered apps' redirect URIs.
    #[arg(long, env = "VELOCITY_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,

    /// Origins (scheme://host[:port], comma-separated) of the web app whose
    /// pages call the /v1 JSON API with the session cookie: a
    /// state-changing request the cookie authenticates must come from one
    /// of them or from this service's own origin (docs/http-api.md).
    #[arg(long, env = "VELOCITY_WEB_ORIGINS", value_delimiter = ',')]
    pub web_origins: Vec<String>,

    #[command(flatten)]
    pub database: DatabaseArgs,

    /// Token that DirectoryService callers must present; admin RPCs are
    /// refused when unset.
    #[arg(long, env = "VELOCITY_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Supabase project JWT secret, for HS256 session tokens.
    #[arg(long, env = "SUPABASE_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// JWKS document (a file) with the Supabase project's ES256/RS256 keys,
    /// read once at start; used alongside the keys fetched by URL.
    #[arg(long, env = "SUPABASE_JWKS_FILE")]
    pub jwks_file: Option<PathBuf>,

    /// Supabase project URL, e.g. https://<project>.supabase.co: session
    /// keys are fetched from <URL>/auth/v1/.well-known/jwks.json and kept
    /// fresh (docs/sessions.md). Does not set the issuer: see
    /// SUPABASE_JWT_ISSUER.
    #[arg(long, env = "SUPABASE_URL")]
    pub supabase_url: Option<String>,

    /// JWKS URL to fetch session keys from; wins over the one derived from
    /// SUPABASE_URL.
    #[arg(long, env = "SUPABASE_JWKS_URL")]
    pub jwks_url: Option<String>,

    /// Name of the web app's `@supabase/ssr` session cookie, read by the
    /// consent page; default `sb-<project-ref>-auth-token`, the project ref
    /// being the first label of SUPABASE_URL's host (docs/oauth.md).
    #[arg(long, env = "VELOCITY_SESSION_COOKIE")]
    pub session_cookie: Option<String>,

    /// Where a signed-out browser is sent from the consent page, e.g.
    /// https://app.velocity.dev/login; it returns by a same-origin path in
    /// the parameter named by VELOCITY_SIGN_IN_RETURN_PARAM. Unset: a 401
    /// page asks the user to sign in.
    #[arg(long, env = "VELOCITY_SIGN_IN_URL")]
    pub sign_in_url: Option<String>,

    /// The sign-in URL's parameter carrying the path to return to.
    #[arg(long, env = "VELOCITY_SIGN_IN_RETURN_PARAM", default_value = velocity_http::DEFAULT_RETURN_PARAM)]
    pub sign_in_return_param: String,

    /// Least time between two JWKS fetches caused by tokens naming an
    /// unknown key (`kid`), in milliseconds.
    #[arg(
        long,
        env = "SUPABASE_JWKS_REFETCH_INTERVAL_MS",
        default_value_t = 30_000
    )]
    pub jwks_refetch_interval_ms: u64,

    /// Shortest time a fetched JWKS is used before it is fetched again,
    /// whatever its Cache-Control max-age says, in seconds.
    #[arg(long, env = "SUPABASE_JWKS_MIN_CACHE_SECS", default_value_t = 60)]
    pub jwks_min_cache_secs: u64,

    /// Longest time a fetched JWKS is used before it is fetched again, in
    /// seconds (a response without max-age is kept 600 s, within bounds).
    #[arg(long, env = "SUPABASE_JWKS_MAX_CACHE_SECS", default_value_t = 86_400)]
    pub jwks_max_cache_secs: u64,

    /// Accepted `aud` of session tokens.
    #[arg(long, env = "SUPABASE_JWT_AUDIENCE", default_value = "authenticated")]
    pub jwt_audience: String,

    /// Required `iss` of session tokens, e.g. https://<project>.supabase.co/auth/v1.
    #[arg(long, env = "SUPABASE_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    #[arg(long, env = "SUPABASE_JWT_LEEWAY_SECS", default_value_t = 30)]
    pub jwt_leeway_secs: u64,

    /// How often batched `last_used_at` values are written, in milliseconds.
    #[arg(long, env = "VELOCITY_USAGE_FLUSH_MS", default_value_t = 5000)]
    pub usage_flush_ms: u64,

    /// How often storage is pinged for the health status, in milliseconds.
    #[arg(long, env = "VELOCITY_HEALTH_INTERVAL_MS", default_value_t = 5000)]
    pub health_interval_ms: u64,

    /// Longest a cached verification is served before storage is asked
    /// again, in milliseconds (the fallback should an invalidation be late).
    #[arg(long, env = "VELOCITY_CACHE_TTL_MS", default_value_t = 10_000)]
    pub cache_ttl_ms: u64,

    /// How often the invalidation log is polled, in milliseconds; PostgreSQL
    /// replicas are also woken at once by NOTIFY.
    #[arg(long, env = "VELOCITY_INVALIDATION_POLL_MS", default_value_t = 100)]
    pub invalidation_poll_ms: u64,

    /// How long after its rotation a refresh token may be used again by the
    /// same client for a fresh pair in the same grant (two tabs, a retry
    /// after a timeout), in seconds; after it, reuse revokes the grant. 0
    /// turns the window off (docs/oauth-refresh.md).
    #[arg(long, env = "VELOCITY_REFRESH_REUSE_INTERVAL_SECS", default_value_t = DEFAULT_REFRESH_REUSE_INTERVAL_SECS)]
    pub refresh_reuse_interval_secs: u64,

    /// Largest request metadata (headers) one gRPC call may carry, in bytes,
    /// counted as name + value + 32 per entry; larger calls are refused with
    /// RESOURCE_EXHAUSTED and the connection is kept (docs/limits.md).
    #[arg(long, env = "VELOCITY_GRPC_MAX_METADATA_BYTES", default_value_t = velocity_server::DEFAULT_MAX_METADATA_BYTES)]
    pub grpc_max_metadata_bytes: usize,

    /// JSON route table, `[{"method"?, "path", "scopes"}]`: the scopes each
    /// route needs when Envoy or a forward-auth proxy does not say
    /// (docs/forward-auth.md). Read once at start.
    #[arg(long, env = "VELOCITY_ROUTE_SCOPES")]
    pub route_scopes: Option<PathBuf>,

    /// Envoy ext_authz: pass the `authorization` header upstream instead of
    /// removing it from allowed requests.
    #[arg(long, env = "VELOCITY_EXT_AUTHZ_KEEP_CREDENTIAL")]
    pub ext_authz_keep_credential: bool,

    /// How long shutdown waits for in-flight requests, in milliseconds.
    #[arg(long, env = "VELOCITY_SHUTDOWN_GRACE_MS", default_value_t = 10_000)]
    pub shutdown_grace_ms: u64,

    #[command(flatten)]
    pub client_auth_throttle: ClientAuthThrottleArgs,

    #[command(flatten)]
    pub rate_limits: RateLimitArgs,

    /// PEM certificate chain served by both listeners (TLS, with
    /// VELOCITY_TLS_KEY); re-read when it changes (VELOCITY_TLS_RELOAD_MS).
    #[arg(long, env = "VELOCITY_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of VELOCITY_TLS_CERT.
    #[arg(long, env = "VELOCITY_TLS_KEY")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA certificates; when set, gRPC callers must present a client
    /// certificate issued by one of them (mTLS). Needs TLS. HTTP is not
    /// affected.
    #[arg(long, env = "VELOCITY_GRPC_CLIENT_CA")]
    pub grpc_client_ca: Option<PathBuf>,

    /// How often the TLS files are checked for a change, in milliseconds.
    #[arg(long, env = "VELOCITY_TLS_RELOAD_MS", default_value_t = 5000)]
    pub tls_reload_ms: u64,
}

/// Budgets for failed client authentications at the token endpoint and the
/// ExchangeCode/RefreshToken RPCs (docs/limits.md). A failure that finds a
/// budget empty is answered 429 / RESOURCE_EXHAUSTED, and so is every
/// request for that key until the budget has room again.
#[derive(Args, Clone, Debug, PartialEq, Eq)]
pub struct ClientAuthThrottleArgs {
    /// Failed client authentications one address may make for one client_id
    /// before it must wait.
    #[arg(
        long,
        env = "VELOCITY_CLIENT_AUTH_FAILURES_PER_CLIENT",
        default_value_t = ThrottleConfig::default().per_client_burst
    )]
    pub client_auth_failures_per_client: u32,

    /// After that, one more failure for that client_id from that address
    /// per this many milliseconds.
    #[arg(
        long,
        env = "VELOCITY_CLIENT_AUTH_CLIENT_PERIOD_MS",
        default_value_t = millis(ThrottleConfig::default().per_client_period)
    )]
    pub client_auth_client_period_ms: u64,

    /// Failed client authentications one address may make across all
    /// client_ids before it must wait.
    #[arg(
        long,
        env = "VELOCITY_CLIENT_AUTH_FAILURES_PER_ADDRESS",
        default_value_t = ThrottleConfig::default().per_address_burst
    )]
    pub client_auth_failures_per_address: u32,

    /// After that, one more failure from that address per this many
    /// milliseconds.
    #[arg(
        long,
        env = "VELOCITY_CLIENT_AUTH_ADDRESS_PERIOD_MS",
        default_value_t = millis(ThrottleConfig::default().per_address_period)
    )]
    pub client_auth_address_period_ms: u64,
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl Default for ClientAuthThrottleArgs {
    fn default() -> Self {
        let defaults = ThrottleConfig::default();
        ClientAuthThrottleArgs {
            client_auth_failures_per_client: defaults.per_client_burst,
            client_auth_client_period_ms: millis(defaults.per_client_period),
            client_auth_failures_per_address: defaults.per_address_burst,
            client_auth_address_period_ms: millis(defaults.per_address_period),
        }
    }
}

impl ClientAuthThrottleArgs {
    /// Zero bursts and periods are raised to the least that works: one
    /// failure, one millisecond.
    pub fn config(&self) -> ThrottleConfig {
        ThrottleConfig {
            per_client_burst: self.client_auth_failures_per_client.max(1),
            per_client_period: Duration::from_millis(self.client_auth_client_period_ms.max(1)),
            per_address_burst: self.client_auth_failures_per_address.max(1),
            per_address_period: Duration::from_millis(self.client_auth_address_period_ms.max(1)),
            ..ThrottleConfig::default()
        }
    }
}

/// Request budgets (docs/limits.md): the Velocity API's published figures
/// by default. 0 turns a class off. Over a budget: 429 with Retry-After
/// (RESOURCE_EXHAUSTED with RetryInfo over gRPC).
#[derive(Args, Clone, PartialEq, Eq)]
pub struct RateLimitArgs {
    /// Requests per period per API key, and per OAuth grant (app, user,
    /// workspace), through Authenticate, ext_authz and forward-auth.
    #[arg(long, env = "VELOCITY_RATE_LIMIT_PER_CREDENTIAL", default_value_t = RateLimitConfig::default().per_credential.limit)]
    pub rate_limit_per_credential: u32,

    /// Requests per period per signed-in user, over all their sessions.
    #[arg(long, env = "VELOCITY_RATE_LIMIT_PER_SESSION", default_value_t = RateLimitConfig::default().per_session.limit)]
    pub rate_limit_per_session: u32,

    /// Requests per period per client address: forward-auth and ext_authz
    /// calls without a valid credential, and token endpoint requests.
    #[arg(long, env = "VELOCITY_RATE_LIMIT_PER_ADDRESS", default_value_t = RateLimitConfig::default().per_address.limit)]
    pub rate_limit_per_address: u32,

    /// Token endpoint requests per period per client_id.
    #[arg(long, env = "VELOCITY_RATE_LIMIT_PER_CLIENT", default_value_t = RateLimitConfig::default().per_client.limit)]
    pub rate_limit_per_client: u32,

    /// The period of every figure above, in milliseconds.
    #[arg(long, env = "VELOCITY_RATE_LIMIT_PERIOD_MS", default_value_t = 60_000)]
    pub rate_limit_period_ms: u64,

    /// Redis shared by the replicas, e.g. redis://127.0.0.1:6379: budgets
    /// are then counted across replicas. Unset, each replica counts alone.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// With Redis: calls one replica may let through for one key before
    /// Redis has answered for them (the overshoot bound is replicas ×
    /// this per period); 0 means a tenth of the key's limit.
    #[arg(long, env = "VELOCITY_RATE_LIMIT_SHARE_BATCH", default_value_t = 0)]
    pub rate_limit_share_batch: u32,

    /// With Redis: how often counts are reported, in milliseconds.
    #[arg(long, env = "VELOCITY_RATE_LIMIT_SYNC_MS", default_value_t = 100)]
    pub rate_limit_sync_ms: u64,
}

impl Default for RateLimitArgs {
    fn default() -> Self {
        let defaults = RateLimitConfig::default();
        RateLimitArgs {
            rate_limit_per_credential: defaults.per_credential.limit,
            rate_limit_per_session: defaults.per_session.limit,
            rate_limit_per_address: defaults.per_address.limit,
            rate_limit_per_client: defaults.per_client.limit,
            rate_limit_period_ms: 60_000,
            redis_url: None,
            rate_limit_share_batch: 0,
            rate_limit_sync_ms: 100,
        }
    }
}

impl fmt::Debug for RateLimitArgs {
    /// REDIS_URL may carry a password: only whether it is set is shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitArgs")
            .field("per_credential", &self.rate_limit_per_credential)
            .field("per_session", &self.rate_limit_per_session)
            .field("per_address", &self.rate_limit_per_address)
            .field("per_client", &self.rate_limit_per_client)
            .field("period_ms", &self.rate_limit_period_ms)
            .field("redis_url", &self.redis_url.as_ref().map(|_| "<set>"))
            .field("share_batch", &self.rate_limit_share_batch)
            .field("sync_ms", &self.rate_limit_sync_ms)
            .finish()
    }
}

impl RateLimitArgs {
    pub fn config(&self) -> RateLimitConfig {
        let period = Duration::from_millis(self.rate_limit_period_ms.max(1));
        let rate = |limit| Rate { limit, period };
        RateLimitConfig {
            per_credential: rate(self.rate_limit_per_credential),
            per_session: rate(self.rate_limit_per_session),
            per_address: rate(self.rate_limit_per_address),
            per_client: rate(self.rate_limit_per_client),
            share_batch: self.rate_limit_share_batch,
            ..RateLimitConfig::default()
        }
    }

    /// REDIS_URL, when set and not empty.
    pub fn redis_url(&self) -> Option<&str> {
        self.redis_url
            .as_deref()
            .map(str::trim)
            .filter(|url| !url.is_empty())
    }
}

#[derive(Args, Clone)]
pub struct DatabaseArgs {
    /// `sqlite://path` (created and migrated) or `postgres://…`.
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL, global = true, hide_env_values = true)]
    pub database_url: String,

    /// Largest number of pooled database connections.
    #[arg(
        long,
        env = "VELOCITY_DB_MAX_CONNECTIONS",
        default_value_t = 16,
        global = true
    )]
    pub db_max_connections: u32,
}

impl DatabaseArgs {
    pub async fn open(&self) -> anyhow::Result<Database> {
        let options = StorageOptions {
            max_connections: self.db_max_connections,
            ..StorageOptions::default()
        };
        Database::open(&self.database_url, &options)
            .await
            .context("cannot open the database")
    }
}

impl ServeConfig {
    /// Defaults with both listeners on ephemeral loopback ports.
    pub fn for_tests(database_url: &str) -> ServeConfig {
        ServeConfig {
            grpc_addr: "127.0.0.1:0".into(),
            http_addr: "127.0.0.1:0".into(),
            metrics_addr: None,
            public_url: None,
            cors_origins: Vec::new(),
            web_origins: Vec::new(),
            database: DatabaseArgs {
                database_url: database_url.into(),
                db_max_connections: 8,
            },
            admin_token: None,
            jwt_secret: None,
            jwks_file: None,
            supabase_url: None,
            jwks_url: None,
            session_cookie: None,
            sign_in_url: None,
            sign_in_return_param: velocity_http::DEFAULT_RETURN_PARAM.into(),
            jwks_refetch_interval_ms: 30_000,
            jwks_min_cache_secs: 60,
            jwks_max_cache_secs: 86_400,
            jwt_audience: "authenticated".into(),
            jwt_issuer: None,
            jwt_leeway_secs: 30,
            usage_flush_ms: 5000,
            health_interval_ms: 5000,
            shutdown_grace_ms: 2000,
            cache_ttl_ms: 10_000,
            invalidation_poll_ms: 100,
            refresh_reuse_interval_secs: DEFAULT_REFRESH_REUSE_INTERVAL_SECS,
            grpc_max_metadata_bytes: velocity_server::DEFAULT_MAX_METADATA_BYTES,
            route_scopes: None,
            ext_authz_keep_credential: false,
            client_auth_throttle: ClientAuthThrottleArgs::default(),
            rate_limits: RateLimitArgs::default(),
            tls_cert: None,
            tls_key: None,
            grpc_client_ca: None,
            tls_reload_ms: 5000,
        }
    }

    /// The TLS files: both or neither; a gRPC client CA only with them.
    pub fn tls_files(&self) -> anyhow::Result<Option<crate::tls::TlsFiles>> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Ok(Some(crate::tls::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            })),
            (None, None) if self.grpc_client_ca.is_some() => {
                anyhow::bail!(
                    "VELOCITY_GRPC_CLIENT_CA needs TLS: set VELOCITY_TLS_CERT and VELOCITY_TLS_KEY"
                )
            }
            (None, None) => Ok(None),
            _ => anyhow::bail!("VELOCITY_TLS_CERT and VELOCITY_TLS_KEY go together"),
        }
    }

    /// The issuer: VELOCITY_PUBLIC_URL without a trailing slash, else
    /// `http://` + the bound HTTP address (an unspecified address such as
    /// 0.0.0.0 reads as 127.0.0.1). An http(s) URL without query or fragment.
    pub fn issuer(&self, http_addr: std::net::SocketAddr) -> anyhow::Result<String> {
        let Some(url) = self
            .public_url
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty())
        else {
            let mut addr = http_addr;
            if addr.ip().is_unspecified() {
                addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            let scheme = if self.tls_cert.is_some() {
                "https"
            } else {
                "http"
            };
            return Ok(format!("{scheme}://{addr}"));
        };
        let parsed = Url::parse(url).context("VELOCITY_PUBLIC_URL is not a URL")?;
        if !matches!(parsed.scheme(), "https" | "http")
            || parsed.query().is_some()
            || parsed.fragment().is_some()
        {
            anyhow::bail!("VELOCITY_PUBLIC_URL must be an http(s) URL without query or fragment");
        }
        Ok(url.trim_end_matches('/').to_owned())
    }

    /// The configured CORS origins, trimmed, empty entries dropped.
    pub fn cors_origins(&self) -> Vec<String> {
        origins(&self.cors_origins)
    }

    /// The configured web app origins, trimmed, empty entries dropped.
    pub fn web_origins(&self) -> Vec<String> {
        origins(&self.web_origins)
    }

    pub(crate) async fn open_database(&self) -> anyhow::Result<Database> {
        self.database.open().await
    }

    /// Where session keys are fetched from: SUPABASE_JWKS_URL, else the
    /// JWKS under SUPABASE_URL, else nowhere. Empty values count as unset.
    pub fn jwks_url(&self) -> anyhow::Result<Option<Url>> {
        let set = |value: &Option<String>| {
            value
                .as_deref()
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        let (text, from) = match (set(&self.jwks_url), set(&self.supabase_url)) {
            (Some(url), _) => (url, "SUPABASE_JWKS_URL"),
            (None, Some(project)) => (
                format!(
                    "{}/auth/v1/.well-known/jwks.json",
                    project.trim_end_matches('/')
                ),
                "SUPABASE_URL",
            ),
            (None, None) => return Ok(None),
        };
        let url = Url::parse(&text).with_context(|| format!("{from} is not a URL"))?;
        if !matches!(url.scheme(), "https" | "http") {
            anyhow::bail!("{from} must be an https (or http) URL");
        }
        Ok(Some(url))
    }

    /// Where the consent page reads a browser's session and sends a
    /// signed-out one. Empty values count as unset.
    pub fn web_session(&self) -> anyhow::Result<velocity_http::WebSession> {
        let sign_in = match self.sign_in_url.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(text) => {
                let url = Url::parse(text).context("VELOCITY_SIGN_IN_URL is not a URL")?;
                if !matches!(url.scheme(), "https" | "http") || url.host_str().is_none() {
                    anyhow::bail!("VELOCITY_SIGN_IN_URL must be an absolute https (or http) URL");
                }
                let return_param = self.sign_in_return_param.trim();
                if return_param.is_empty() {
                    anyhow::bail!("VELOCITY_SIGN_IN_RETURN_PARAM is empty");
                }
                Some(velocity_http::SignIn {
                    url,
                    return_param: return_param.to_owned(),
                })
            }
        };
        Ok(velocity_http::WebSession::new(
            self.session_cookie.as_deref(),
            self.supabase_url.as_deref(),
            sign_in,
        ))
    }

    /// When the fetched JWKS is refreshed.
    pub fn jwks_policy(&self) -> anyhow::Result<crate::jwks::JwksPolicy> {
        if self.jwks_min_cache_secs > self.jwks_max_cache_secs {
            anyhow::bail!(
                "SUPABASE_JWKS_MIN_CACHE_SECS ({}) is above SUPABASE_JWKS_MAX_CACHE_SECS ({})",
                self.jwks_min_cache_secs,
                self.jwks_max_cache_secs
            );
        }
        Ok(crate::jwks::JwksPolicy {
            refetch_interval: Duration::from_millis(self.jwks_refetch_interval_ms.max(10)),
            min_cache: Duration::from_secs(self.jwks_min_cache_secs.max(1)),
            max_cache: Duration::from_secs(self.jwks_max_cache_secs.max(1)),
        })
    }

    /// The route table, empty when none is configured.
    pub(crate) fn route_scopes(&self) -> anyhow::Result<RouteScopes> {
        let Some(path) = &self.route_scopes else {
            return Ok(RouteScopes::default());
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the route table {}", path.display()))?;
        RouteScopes::from_json(&text)
            .map_err(|e| anyhow::anyhow!("route table {}: {}", path.display(), e.public_message()))
    }

    /// The session-token verifier, or `None` when no key source is
    /// configured (session tokens are then refused as
    /// CREDENTIAL_KIND_NOT_ACCEPTED). With a JWKS URL it starts without the
    /// URL's keys; `start` fetches them.
    pub(crate) fn session_verifier(&self) -> anyhow::Result<Option<SessionVerifier>> {
        let jwks = match &self.jwks_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read JWKS file {}", path.display()))?;
                Some(serde_json::from_str(&text).context("JWKS file is not a JWK set")?)
            }
            None => None,
        };
        if self.jwt_secret.is_none() && jwks.is_none() && self.jwks_url()?.is_none() {
            return Ok(None);
        }
        let verifier = SessionVerifier::new(SessionVerifierConfig {
            hs256_secret: self.jwt_secret.as_ref().map(|s| s.as_bytes().to_vec()),
            jwks,
            audience: self.jwt_audience.clone(),
            issuer: self.jwt_issuer.clone(),
            leeway_secs: self.jwt_leeway_secs,
        })?;
        Ok(Some(verifier))
    }
}

impl fmt::Debug for ServeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServeConfig")
            .field("grpc_addr", &self.grpc_addr)
            .field("http_addr", &self.http_addr)
            .field("metrics_addr", &self.metrics_addr)
            .field(
                "admin_token",
                &self.admin_token.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "jwt_secret",
                &self.jwt_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("jwks_file", &self.jwks_file)
            .field("supabase_url", &self.supabase_url)
            .field("session_cookie", &self.session_cookie)
            .field("sign_in_url", &self.sign_in_url)
            .field("sign_in_return_param", &self.sign_in_return_param)
            .field("jwks_url", &self.jwks_url)
            .field("jwt_audience", &self.jwt_audience)
            .field("jwt_issuer", &self.jwt_issuer)
            .field("client_auth_throttle", &self.client_auth_throttle)
            .field("rate_limits", &self.rate_limits)
            .field("tls_cert", &self.tls_cert)
            .field("grpc_client_ca", &self.grpc_client_ca)
            .finish_non_exhaustive()
    }
}

fn origins(list: &[String]) -> Vec<String> {
    list.iter()
        .map(|o| o.trim().trim_end_matches('/').to_owned())
        .filter(|o| !o.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issuer_from_the_public_url_or_the_listener() {
        let addr = |a: &str| a.parse::<std::net::SocketAddr>().unwrap();
        let mut config = ServeConfig::for_tests("sqlite://unused.db");
        assert_eq!(
            config.issuer(addr("127.0.0.1:8080")).unwrap(),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            config.issuer(addr("0.0.0.0:9000")).unwrap(),
            "http://127.0.0.1:9000"
        );
        config.public_url = Some("https://auth.example.com/".into());
        assert_eq!(
            config.issuer(addr("0.0.0.0:9000")).unwrap(),
            "https://auth.example.com"
        );
        for bad in ["ftp://x.example", "https://x.example/?a=1", "not a url"] {
            config.public_url = Some(bad.into());
            assert!(config.issuer(addr("127.0.0.1:1")).is_err(), "{bad}");
        }
    }

    #[test]
    fn web_session_names_the_cookie_and_checks_the_sign_in_url() {
        let mut c = config(Some("https://abcdefgh.supabase.co"), None);
        let web = c.web_session().unwrap();
        assert_eq!(web.cookie.as_deref(), Some("sb-abcdefgh-auth-token"));
        assert!(web.sign_in.is_none());
        c.session_cookie = Some("velocity-session".into());
        c.sign_in_url = Some("https://app.velocity.dev/login".into());
        let web = c.web_session().unwrap();
        assert_eq!(web.cookie.as_deref(), Some("velocity-session"));
        let sign_in = web.sign_in.unwrap();
        assert_eq!(sign_in.return_param, "redirect_to");
        assert_eq!(sign_in.url.as_str(), "https://app.velocity.dev/login");
        for bad in ["/login", "javascript:alert(1)", "not a url"] {
            c.sign_in_url = Some(bad.into());
            assert!(c.web_session().is_err(), "{bad}");
        }
        c.sign_in_url = Some(" ".into());
        assert!(c.web_session().unwrap().sign_in.is_none());
    }

    fn config(supabase_url: Option<&str>, jwks_url: Option<&str>) -> ServeConfig {
        let mut config = ServeConfig::for_tests("sqlite://unused.db");
        config.supabase_url = supabase_url.map(str::to_owned);
        config.jwks_url = jwks_url.map(str::to_owned);
        config
    }

    fn url(supabase_url: Option<&str>, jwks_url: Option<&str>) -> Option<String> {
        config(supabase_url, jwks_url)
            .jwks_url()
            .unwrap()
            .map(|u| u.to_string())
    }

    #[test]
    fn the_jwks_url_comes_from_either_variable() {
        let derived = "https://abc.supabase.co/auth/v1/.well-known/jwks.json";
        assert_eq!(
            url(Some("https://abc.supabase.co"), None).as_deref(),
            Some(derived)
        );
        assert_eq!(
            url(Some("https://abc.supabase.co/"), None).as_deref(),
            Some(derived)
        );
        assert_eq!(
            url(
                Some("https://abc.supabase.co"),
                Some("http://127.0.0.1:9/keys")
            )
            .as_deref(),
            Some("http://127.0.0.1:9/keys"),
            "the explicit URL wins"
        );
        assert_eq!(url(Some(" "), Some("")), None, "empty is unset");
        assert_eq!(url(None, None), None);
        assert!(config(Some("abc.supabase.co"), None).jwks_url().is_err());
        assert!(
            config(None, Some("file:///etc/keys.json"))
                .jwks_url()
                .is_err()
        );
    }

    #[test]
    fn a_url_alone_is_a_session_key_source() {
        assert!(config(None, None).session_verifier().unwrap().is_none());
        let verifier = config(Some("https://abc.supabase.co"), None)
            .session_verifier()
            .unwrap();
        assert_eq!(verifier.map(|v| v.fetched_key_count()), Some(0));
    }

    #[test]
    fn cache_bounds_must_be_ordered() {
        let mut c = config(None, None);
        let policy = c.jwks_policy().unwrap();
        assert_eq!(policy.refetch_interval, Duration::from_secs(30));
        assert_eq!(
            (policy.min_cache, policy.max_cache),
            (Duration::from_secs(60), Duration::from_secs(86_400))
        );
        c.jwks_min_cache_secs = 90_000;
        assert!(c.jwks_policy().is_err());
    }
}
