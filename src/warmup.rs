//! The start-up work a replica does while already listening: the
//! known-credential filter, loaded page by page with progress in the log,
//! and the first JWKS fetch. Until both are done, gRPC health answers
//! NOT_SERVING and `/readyz` 503, so a load balancer sends no traffic to a
//! replica that would send every lookup to storage.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use velocity_domain::Service;

use crate::jwks::{self, JwksPolicy};

/// A progress line every this many credentials: ten lines for a million.
const PROGRESS_EVERY: usize = 100_000;
/// Longest wait between two attempts at a load that failed (storage down).
const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);

/// Where session keys are fetched from, when a URL is configured.
pub(crate) struct JwksStart {
    pub url: reqwest::Url,
    pub policy: JwksPolicy,
    pub unknown_kid: Arc<Notify>,
}

pub(crate) enum Outcome {
    /// Ready; the JWKS fetcher's task, when there is one, runs until shutdown.
    Ready(Option<JoinHandle<()>>),
    /// Shutdown came first.
    Stopped,
}

/// Loads the filter (retrying while storage is down), starts the JWKS
/// fetcher, then says ready. An error only when the fetcher cannot be built.
pub(crate) async fn run(
    service: &Service,
    jwks: Option<JwksStart>,
    ready: &watch::Sender<bool>,
    shutdown: &CancellationToken,
) -> anyhow::Result<Outcome> {
    let mut delay = Duration::from_secs(1);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(Outcome::Stopped),
            loaded = load_filter(service) => match loaded {
                Ok(()) => break,
                Err(err) => {
                    tracing::warn!(error = %err, retry_in_secs = delay.as_secs(), "cannot load the known-credential filter; not ready, will retry");
                }
            },
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(Outcome::Stopped),
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(MAX_RETRY_DELAY);
    }
    // The first fetch is awaited (bounded by its timeout), so a replica is
    // ready with the project's keys, or has said in the log why not.
    let fetcher = match (jwks, service.session_verifier()) {
        (Some(start), Some(verifier)) => Some(
            jwks::spawn(
                start.url,
                start.policy,
                verifier.clone(),
                start.unknown_kid,
                shutdown.clone(),
            )
            .await?,
        ),
        _ => None,
    };
    ready.send_replace(true);
    tracing::info!("ready: health SERVING, /readyz 200");
    Ok(Outcome::Ready(fetcher))
}

async fn load_filter(service: &Service) -> Result<(), velocity_domain::Error> {
    let started = Instant::now();
    let mut next_report = PROGRESS_EVERY;
    let loaded = service
        .load_known_credentials_reporting(|loaded| {
            if loaded >= next_report {
                tracing::info!(
                    loaded,
                    per_sec = per_sec(loaded, started.elapsed()),
                    "known-credential filter loading"
                );
                next_report = (loaded / PROGRESS_EVERY + 1) * PROGRESS_EVERY;
            }
        })
        .await?;
    let took = started.elapsed();
    tracing::info!(
        credentials = loaded,
        millis = took.as_millis() as u64,
        per_sec = per_sec(loaded, took),
        "known-credential filter loaded"
    );
    Ok(())
}

fn per_sec(count: usize, took: Duration) -> u64 {
    let secs = took.as_secs_f64();
    if secs > 0.0 {
        (count as f64 / secs) as u64
    } else {
        count as u64
    }
}
