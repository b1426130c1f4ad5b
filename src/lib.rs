//! Velocity Auth: configuration and start-up shared by the binary and the
//! end-to-end tests.

pub mod cli;
pub mod config;
mod gateway;
pub mod jwks;
pub mod logging;
pub mod metrics;
mod shared_limits;
pub mod tls;
mod warmup;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use velocity_domain::{Clock, Service, ServiceConfig};
use velocity_server::GrpcConfig;
use velocity_storage::Database;

pub use config::ServeConfig;

/// `0.1.0 (commit abc123, release)`.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("VELOCITY_GIT_COMMIT"),
    ", ",
    env!("VELOCITY_BUILD_PROFILE"),
    ")"
);

/// A started service: both listeners serving, storage migrated; ready
/// once [`RunningServer::ready`] resolves.
pub struct RunningServer {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// The metrics listener's address, when `/metrics` has one of its own.
    pub metrics_addr: Option<SocketAddr>,
    pub service: Service,
    pub database: Database,
    shutdown: CancellationToken,
    shutdown_grace: Duration,
    tasks: Vec<JoinHandle<()>>,
    ready: tokio::sync::watch::Receiver<bool>,
}

impl RunningServer {
    /// Stops serving, waits (up to the grace period) for in-flight
    /// requests, then flushes usage and closes storage.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        let deadline = tokio::time::Instant::now() + self.shutdown_grace;
        for mut task in self.tasks {
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                tracing::warn!("grace period over; closing remaining connections");
                task.abort();
            }
        }
        if let Err(err) = self.service.flush_usage().await {
            tracing::warn!(error = %err, "final usage flush failed");
        }
        self.database.close().await;
    }

    /// Resolves once start-up work is done (health SERVING from then on,
    /// while storage answers), or never if shutdown comes first.
    pub async fn ready(&self) {
        let mut ready = self.ready.clone();
        if ready.wait_for(|r| *r).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }
}

/// Opens storage, builds the service and starts gRPC and HTTP.
pub async fn start(config: ServeConfig, clock: Arc<dyn Clock>) -> anyhow::Result<RunningServer> {
    let database = config.open_database().await?;
    // Bound first: the issuer defaults to the HTTP listener's address.
    let grpc_listener = TcpListener::bind(&config.grpc_addr)
        .await
        .with_context(|| format!("cannot listen for gRPC on {}", config.grpc_addr))?;
    let http_listener = TcpListener::bind(&config.http_addr)
        .await
        .with_context(|| format!("cannot listen for HTTP on {}", config.http_addr))?;
    let metrics_listener = match config.metrics_addr.as_deref().map(str::trim) {
        Some(addr) if !addr.is_empty() => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen for metrics on {addr}"))?,
        ),
        _ => None,
    };
    let grpc_addr = grpc_listener.local_addr()?;
    let http_addr = http_listener.local_addr()?;
    let metrics_addr = metrics_listener
        .as_ref()
        .map(TcpListener::local_addr)
        .transpose()?;
    let tls = match config.tls_files()? {
        Some(files) => Some(tls::Tls::new(files, config.grpc_client_ca.as_deref())?),
        None => None,
    };
    let mut service_config = ServiceConfig {
        issuer: config.issuer(http_addr)?,
        ..ServiceConfig::default()
    };
    service_config.cache.ttl = Duration::from_millis(config.cache_ttl_ms.max(1));
    service_config.refresh_reuse_interval_secs = config.refresh_reuse_interval_secs;
    service_config.client_auth_throttle = config.client_auth_throttle.config();
    service_config.rate_limits = config.rate_limits.config();
    let jwks_url = config.jwks_url()?;
    let jwks_policy = config.jwks_policy()?;
    let web_session = config.web_session()?;
    let route_scopes = Arc::new(config.route_scopes()?);
    let mut sessions = config.session_verifier()?;
    let unknown_kid = Arc::new(tokio::sync::Notify::new());
    if let (Some(verifier), Some(_)) = (&mut sessions, &jwks_url) {
        let unknown_kid = unknown_kid.clone();
        verifier.set_unknown_kid_hook(move || unknown_kid.notify_one());
    }
    if let Some(project) = config.supabase_url.as_deref().map(str::trim)
        && !project.is_empty()
        && config.jwt_issuer.is_none()
    {
        tracing::warn!(
            supabase_issuer = format!("{}/auth/v1", project.trim_end_matches('/')),
            "SUPABASE_JWT_ISSUER is unset, so `iss` is not checked; Supabase's tokens carry this one"
        );
    }
    let service = Service::new(database.store(), clock, sessions, service_config);
    // Listening from here on, but not ready: see `warmup`.
    let (ready_tx, ready) = tokio::sync::watch::channel(false);

    let mut candidate = [0u8; 32];
    rand::TryRngCore::try_fill_bytes(&mut rand::rngs::OsRng, &mut candidate)
        .context("OS random number generator")?;
    let csrf_key = service
        .store()
        .shared_secret("consent-csrf", &candidate)
        .await
        .map_err(|e| anyhow::anyhow!("cannot load the shared CSRF key: {e}"))?;
    let csrf = velocity_http::CsrfKey::new(csrf_key)
        .map_err(|e| anyhow::anyhow!("the shared CSRF key cannot key HMAC-SHA256: {e}"))?;
    let admin_token = velocity_server::AdminToken::new(config.admin_token.as_deref());
    let gateway = gateway::gateway(service.clone(), admin_token.clone())
        .context("the HTTP gateway's routes (google.api.http options)")?;
    let adapter_stats = metrics::AdapterStats::default();
    let exporter: Arc<dyn velocity_http::Exposition> = Arc::new(metrics::Exporter::new(
        service.clone(),
        database.clone(),
        adapter_stats.clone(),
    ));
    let http_state = velocity_http::AppState {
        service: service.clone(),
        csrf,
        admin: admin_token.clone(),
        cors_origins: Arc::new(config.cors_origins()),
        web: web_session,
        ready: ready.clone(),
        route_scopes: route_scopes.clone(),
        gateway: Arc::new(gateway),
        web_origins: Arc::new(config.web_origins()),
        metrics: Some(adapter_stats.http.clone()),
        // On the HTTP listener unless it has its own.
        metrics_endpoint: metrics_listener.is_none().then(|| exporter.clone()),
    };

    let shutdown = CancellationToken::new();
    let grpc_config = GrpcConfig {
        admin_token,
        health_interval: Duration::from_millis(config.health_interval_ms.max(10)),
        max_metadata_bytes: config.grpc_max_metadata_bytes,
        ready: ready.clone(),
        ext_authz_keep_credential: config.ext_authz_keep_credential,
        route_scopes,
        metrics: Some(adapter_stats.grpc.clone()),
        ..GrpcConfig::default()
    };
    let mut tasks = Vec::new();
    let (grpc_tls, http_tls) = match &tls {
        Some(tls) => {
            let every = Duration::from_millis(config.tls_reload_ms.max(10));
            tasks.push(tls.spawn_reloader(every, shutdown.clone()));
            (Some(tls.grpc.clone()), Some(tls.http.clone()))
        }
        None => (None, None),
    };
    {
        let (service, token) = (service.clone(), shutdown.clone());
        tasks.push(tokio::spawn(async move {
            let stop = {
                let token = token.clone();
                async move { token.cancelled().await }
            };
            let result = match &grpc_tls {
                Some(acceptor) => {
                    let accepted = tls::accept(grpc_listener, acceptor.clone(), token.clone());
                    let incoming = tokio_stream::wrappers::ReceiverStream::new(accepted)
                        .map(|(stream, _)| Ok::<_, std::io::Error>(stream));
                    velocity_server::serve_grpc(grpc_config, service, incoming, stop).await
                }
                None => {
                    let incoming = velocity_server::plaintext(grpc_listener);
                    velocity_server::serve_grpc(grpc_config, service, incoming, stop).await
                }
            };
            if let Err(err) = result {
                tracing::error!(error = %err, "gRPC server failed");
            }
            // Either listener ending takes the whole process down with it.
            token.cancel();
        }));
    }
    {
        let token = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            let stop = {
                let token = token.clone();
                async move { token.cancelled().await }
            };
            let result = match http_tls {
                Some(acceptor) => {
                    let accepted = tls::accept(http_listener, acceptor, token.clone());
                    let listener = velocity_http::AcceptedListener::new(accepted, http_addr);
                    velocity_http::serve_http(http_state, listener, stop).await
                }
                None => velocity_http::serve_http(http_state, http_listener, stop).await,
            };
            if let Err(err) = result {
                tracing::error!(error = %err, "HTTP server failed");
            }
            token.cancel();
        }));
    }
    if let Some(listener) = metrics_listener {
        let token = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            let stop = {
                let token = token.clone();
                async move { token.cancelled().await }
            };
            if let Err(err) = velocity_http::serve_metrics(exporter, listener, stop).await {
                tracing::error!(error = %err, "metrics server failed");
            }
            token.cancel();
        }));
    }
    if let Some(url) = config.rate_limits.redis_url() {
        let every = Duration::from_millis(config.rate_limits.rate_limit_sync_ms.max(1));
        tasks.push(shared_limits::spawn(
            url,
            service.rate_limiter().clone(),
            every,
            shutdown.clone(),
        )?);
    }
    {
        let (service, token) = (service.clone(), shutdown.clone());
        let every = Duration::from_millis(config.usage_flush_ms.max(10));
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tokio::select! {
                    _ = token.cancelled() => break,
                    _ = tick.tick() => {
                        if let Err(err) = service.flush_usage().await {
                            tracing::warn!(error = %err, "usage flush failed; will retry");
                        }
                    }
                }
            }
        }));
    }
    {
        let (service, token) = (service.clone(), shutdown.clone());
        let notify = Arc::new(tokio::sync::Notify::new());
        let listener = database.spawn_invalidation_listener(notify.clone());
        let every = Duration::from_millis(config.invalidation_poll_ms.max(10));
        let jwks = jwks_url.map(|url| warmup::JwksStart {
            url,
            policy: jwks_policy,
            unknown_kid,
        });
        tasks.push(tokio::spawn(async move {
            // The log is read from the cursor the filter load takes, so
            // syncing starts after it.
            let fetcher = match warmup::run(&service, jwks, &ready_tx, &token).await {
                Ok(warmup::Outcome::Ready(fetcher)) => fetcher,
                Ok(warmup::Outcome::Stopped) => None,
                Err(err) => {
                    tracing::error!(error = format!("{err:#}"), "start-up failed");
                    token.cancel();
                    None
                }
            };
            sync_invalidations(&service, &token, &notify, every).await;
            if let Some(listener) = listener {
                listener.abort();
            }
            if let Some(fetcher) = fetcher {
                // It stops on the same token.
                let _ = fetcher.await;
            }
        }));
    }
    tracing::info!(%grpc_addr, %http_addr, metrics_addr = ?metrics_addr, issuer = service.issuer(), backend = database.backend(), tls = tls.is_some(), grpc_mtls = config.grpc_client_ca.is_some(), version = VERSION, "velocity-auth listening; ready once the known-credential filter is loaded");
    Ok(RunningServer {
        grpc_addr,
        http_addr,
        metrics_addr,
        service,
        database,
        shutdown,
        shutdown_grace: Duration::from_millis(config.shutdown_grace_ms),
        tasks,
        ready,
    })
}

/// Applies the invalidation log until shutdown: on every NOTIFY, else every
/// `every`, pruning it now and then.
async fn sync_invalidations(
    service: &Service,
    token: &CancellationToken,
    notify: &tokio::sync::Notify,
    every: Duration,
) {
    let mut polls: u64 = 0;
    while !token.is_cancelled() {
        tokio::select! {
            _ = token.cancelled() => break,
            _ = notify.notified() => {}
            _ = tokio::time::sleep(every) => {}
        }
        if let Err(err) = service.sync_invalidations().await {
            tracing::warn!(error = %err, "invalidation poll failed; will retry");
        }
        polls += 1;
        // About every ten minutes at the default poll interval.
        if polls.is_multiple_of(6000)
            && let Err(err) = service.prune_invalidations().await
        {
            tracing::warn!(error = %err, "pruning the invalidation log failed");
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
