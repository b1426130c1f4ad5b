//! The Prometheus exporter: every metric's name, help and labels, in one
//! place (docs/metrics.md lists them). The counting itself happens where the
//! work is — the domain's `Stats`, each adapter's per-RPC and per-route
//! stats, storage's error counts — as plain atomics; this module reads them
//! at scrape time and writes the Prometheus text format (0.0.4) with
//! `prometheus-client`'s encoder.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use velocity_domain::Reason;
use velocity_domain::Service;
use velocity_domain::stats::{
    CacheKind, GrantKind, GrantOutcome, HistogramSnapshot, PresentedKind,
};
use velocity_http::HttpStats;
use velocity_server::metrics::GrpcStats;
use velocity_storage::Database;

/// How long a scrape waits for storage (the invalidation log's head)
/// before answering without it.
const STORAGE_PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// The adapters' stats, created before the adapters so both can count.
#[derive(Clone, Default)]
pub struct AdapterStats {
    pub grpc: Arc<GrpcStats>,
    pub http: Arc<HttpStats>,
}

/// What `/metrics` serves.
pub struct Exporter {
    registry: Registry,
    service: Service,
    /// The newest id in the invalidation log, read from storage by each
    /// scrape (-1 when it could not be read).
    log_head: Arc<AtomicI64>,
}

impl Exporter {
    pub fn new(service: Service, database: Database, adapters: AdapterStats) -> Exporter {
        let log_head = Arc::new(AtomicI64::new(-1));
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Sources {
            service: service.clone(),
            database,
            adapters,
            log_head: log_head.clone(),
        }));
        Exporter {
            registry,
            service,
            log_head,
        }
    }

    /// The text a scrape gets.
    pub async fn render_text(&self) -> Result<String, fmt::Error> {
        let head = tokio::time::timeout(
            STORAGE_PROBE_TIMEOUT,
            self.service.store().invalidation_cursor(),
        )
        .await;
        self.log_head.store(
            match head {
                Ok(Ok(head)) => head,
                _ => -1,
            },
            Ordering::Relaxed,
        );
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

impl velocity_http::Exposition for Exporter {
    fn render(&self) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send + '_>> {
        Box::pin(async move { self.render_text().await.map_err(|e| e.to_string()) })
    }

    fn content_type(&self) -> &'static str {
        prometheus_client::encoding::prometheus_text::CONTENT_TYPE
    }
}

/// Everything read at scrape time.
struct Sources {
    service: Service,
    database: Database,
    adapters: AdapterStats,
    log_head: Arc<AtomicI64>,
}

impl fmt::Debug for Sources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sources").finish_non_exhaustive()
    }
}

/// `google.rpc.Code` names, by value.
const GRPC_CODE_NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

type Labels<'a> = [(&'static str, &'a str)];

/// One metric family being written.
struct Family<'e> {
    encoder: prometheus_client::encoding::MetricEncoder<'e>,
}

impl Family<'_> {
    fn counter(&mut self, labels: &Labels<'_>, value: u64) -> fmt::Result {
        ConstCounter::new(value).encode(self.encoder.encode_family(&labels)?)
    }

    fn gauge(&mut self, labels: &Labels<'_>, value: i64) -> fmt::Result {
        ConstGauge::new(value).encode(self.encoder.encode_family(&labels)?)
    }

    fn gauge_f64(&mut self, labels: &Labels<'_>, value: f64) -> fmt::Result {
        ConstGauge::new(value).encode(self.encoder.encode_family(&labels)?)
    }

    fn histogram(&mut self, labels: &Labels<'_>, snapshot: &HistogramSnapshot) -> fmt::Result {
        // The encoder accumulates; the snapshot already is cumulative.
        let mut previous = 0;
        let buckets: Vec<(f64, u64)> = snapshot
            .buckets
            .iter()
            .map(|&(bound, cumulative)| {
                let own = cumulative - previous;
                previous = cumulative;
                (bound, own)
            })
            .collect();
        self.encoder
            .encode_family(&labels)?
            .encode_histogram::<NoLabelSet>(snapshot.sum_secs, snapshot.count, &buckets, None)
    }
}

fn family<'e>(
    encoder: &'e mut DescriptorEncoder,
    name: &'e str,
    help: &str,
    kind: MetricType,
) -> Result<Family<'e>, fmt::Error> {
    Ok(Family {
        encoder: encoder.encode_descriptor(name, help, None, kind)?,
    })
}

/// `accepted`, `refused` (the caller's credential or request), or `error`
/// (ours: storage down, a bug).
fn outcome_of(reason: Reason) -> &'static str {
    match reason {
        Reason::StorageUnavailable | Reason::Internal => "error",
        _ => "refused",
    }
}

impl Collector for Sources {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let stats = self.service.stats();
        let e = &mut encoder;

        let mut f = family(
            e,
            "velocity_build_info",
            "The running build: version, git commit and profile; always 1.",
            MetricType::Gauge,
        )?;
        f.gauge(
            &[
                ("version", env!("CARGO_PKG_VERSION")),
                ("commit", env!("VELOCITY_GIT_COMMIT")),
                ("profile", env!("VELOCITY_BUILD_PROFILE")),
            ],
            1,
        )?;

        let mut f = family(
            e,
            "velocity_authenticate",
            "Credential checks (the Authenticate RPC, ext_authz, forward-auth verify, the consent page, management callers) by presented kind, outcome and FailureReason.",
            MetricType::Counter,
        )?;
        for kind in PresentedKind::ALL {
            f.counter(
                &[
                    ("kind", kind.as_str()),
                    ("outcome", "accepted"),
                    ("reason", ""),
                ],
                stats.authenticate.accepted(kind),
            )?;
            for reason in Reason::ALL {
                let n = stats.authenticate.refused(kind, reason);
                if n > 0 {
                    f.counter(
                        &[
                            ("kind", kind.as_str()),
                            ("outcome", outcome_of(reason)),
                            ("reason", reason.as_str()),
                        ],
                        n,
                    )?;
                }
            }
        }

        let mut f = family(
            e,
            "velocity_cache_requests",
            "Verification cache lookups by cache and result (hit, miss).",
            MetricType::Counter,
        )?;
        for cache in CacheKind::ALL {
            f.counter(
                &[("cache", cache.as_str()), ("result", "hit")],
                stats.cache.hits(cache),
            )?;
            f.counter(
                &[("cache", cache.as_str()), ("result", "miss")],
                stats.cache.misses(cache),
            )?;
        }

        let filter = &stats.filter;
        let mut f = family(
            e,
            "velocity_filter_lookups",
            "Known-credential filter answers: absent (never stored: refused without storage, or an access token sent on the small budget), passed, not_loaded (before the start-up load).",
            MetricType::Counter,
        )?;
        f.counter(&[("result", "absent")], filter.absent.get())?;
        f.counter(&[("result", "passed")], filter.passed.get())?;
        f.counter(&[("result", "not_loaded")], filter.not_loaded.get())?;
        let mut f = family(
            e,
            "velocity_filter_false_positives",
            "Lookups the filter passed that storage did not know.",
            MetricType::Counter,
        )?;
        f.counter(&[], filter.false_positives.get())?;
        let mut f = family(
            e,
            "velocity_filter_inserted",
            "Hashes added to the filter: loaded at start, then created or minted (an upper bound on its entries).",
            MetricType::Counter,
        )?;
        f.counter(&[], filter.inserted.get())?;
        let mut f = family(
            e,
            "velocity_filter_bits",
            "The filter's fixed size in bits.",
            MetricType::Gauge,
        )?;
        f.gauge(&[], i64::try_from(filter.bits.get()).unwrap_or(i64::MAX))?;

        let mut f = family(
            e,
            "velocity_storage_lookups",
            "Look-ups the cache and filter exist to avoid that went to storage (keys, tokens, memberships, workspaces, apps).",
            MetricType::Counter,
        )?;
        f.counter(&[], self.service.storage_lookups())?;

        let cursor = self.service.invalidation_cursor();
        let mut f = family(
            e,
            "velocity_invalidations_applied",
            "Invalidation log entries applied to this replica's cache.",
            MetricType::Counter,
        )?;
        f.counter(&[], stats.invalidations.applied.get())?;
        let mut f = family(
            e,
            "velocity_invalidation_read_failures",
            "Reads of the invalidation log that failed.",
            MetricType::Counter,
        )?;
        f.counter(&[], stats.invalidations.failed_reads.get())?;
        let mut f = family(
            e,
            "velocity_invalidation_cursor",
            "The newest invalidation log id applied here.",
            MetricType::Gauge,
        )?;
        f.gauge(&[], cursor)?;
        let mut f = family(
            e,
            "velocity_invalidation_sync_age_seconds",
            "Seconds since the invalidation log was last read without error.",
            MetricType::Gauge,
        )?;
        f.gauge_f64(&[], self.service.since_invalidation_sync().as_secs_f64())?;
        let head = self.log_head.load(Ordering::Relaxed);
        if head >= 0 {
            let mut f = family(
                e,
                "velocity_invalidation_log_head",
                "The newest id in the invalidation log, read from storage by this scrape (absent when storage did not answer within a second).",
                MetricType::Gauge,
            )?;
            f.gauge(&[], head)?;
            let mut f = family(
                e,
                "velocity_invalidation_lag_entries",
                "Log ids past this replica's cursor at this scrape: entries not applied yet (ids of rolled-back transactions count too until a later entry passes them).",
                MetricType::Gauge,
            )?;
            f.gauge(&[], (head - cursor).max(0))?;
        }

        let (pool, queued) = self.database.pool_stats();
        let mut f = family(
            e,
            "velocity_storage_pool_connections",
            "Pooled storage connections by state (on SQLite the read pool; its one writer apart).",
            MetricType::Gauge,
        )?;
        f.gauge(&[("state", "idle")], i64::from(pool.idle))?;
        f.gauge(
            &[("state", "in_use")],
            i64::from(pool.size.saturating_sub(pool.idle)),
        )?;
        let mut f = family(
            e,
            "velocity_storage_pool_max_connections",
            "The most connections the pool opens.",
            MetricType::Gauge,
        )?;
        f.gauge(&[], i64::from(pool.max))?;
        let mut f = family(
            e,
            "velocity_storage_queued_writes",
            "Writes waiting for SQLite's group-commit writer (0 on PostgreSQL).",
            MetricType::Gauge,
        )?;
        f.gauge(&[], i64::try_from(queued).unwrap_or(i64::MAX))?;
        if let Some(writer) = self.database.writer_stats() {
            let mut f = family(
                e,
                "velocity_storage_write_batches",
                "Transactions SQLite's group-commit writer committed or attempted, one fsync each.",
                MetricType::Counter,
            )?;
            f.counter(&[], u64::try_from(writer.batches()).unwrap_or(u64::MAX))?;
            let mut f = family(
                e,
                "velocity_storage_batched_writes",
                "Writes SQLite's group-commit writer ran, in all batches: divided by velocity_storage_write_batches, the writes one fsync carries.",
                MetricType::Counter,
            )?;
            f.counter(&[], u64::try_from(writer.operations()).unwrap_or(u64::MAX))?;
        }
        if let Some(claims) = self.database.claim_stats() {
            let mut f = family(
                e,
                "velocity_storage_claim_statements",
                "Statements PostgreSQL's claim batcher sent, each with one grant claim or more.",
                MetricType::Counter,
            )?;
            f.counter(&[], u64::try_from(claims.statements()).unwrap_or(u64::MAX))?;
            let mut f = family(
                e,
                "velocity_storage_batched_claims",
                "Grant claims sent, in all statements: divided by velocity_storage_claim_statements, the claims one commit carries.",
                MetricType::Counter,
            )?;
            f.counter(&[], u64::try_from(claims.claims()).unwrap_or(u64::MAX))?;
            let mut f = family(
                e,
                "velocity_storage_claims_retried_apart",
                "Grant claims run again on their own after the statement they shared was refused (a constraint, a deadlock).",
                MetricType::Counter,
            )?;
            f.counter(&[], u64::try_from(claims.retried()).unwrap_or(u64::MAX))?;
        }
        let mut f = family(
            e,
            "velocity_storage_errors",
            "Storage errors by class (unavailable, conflict, missing_reference, other), process-wide.",
            MetricType::Counter,
        )?;
        for (class, n) in velocity_storage::ERROR_CLASSES
            .iter()
            .zip(velocity_storage::error_counts())
        {
            f.counter(&[("class", class)], n)?;
        }

        let mut f = family(
            e,
            "velocity_oauth_grants",
            "Token endpoint grants (authorization_code, refresh_token) by outcome: issued, refused, replayed (a spent code or refresh token again: refused, its family revoked).",
            MetricType::Counter,
        )?;
        for grant in GrantKind::ALL {
            for outcome in GrantOutcome::ALL {
                f.counter(
                    &[("grant", grant.as_str()), ("outcome", outcome.as_str())],
                    stats.grants.get(grant, outcome),
                )?;
            }
        }

        let mut f = family(
            e,
            "velocity_rate_limit_refusals",
            "Requests refused by a rate limit, by limit (client_auth: the failed-client-authentication throttle).",
            MetricType::Counter,
        )?;
        for (limit, n) in stats.rate_limits.refusals() {
            f.counter(&[("limit", limit)], n)?;
        }
        let limiter = self.service.rate_limiter().stats();
        let mut f = family(
            e,
            "velocity_rate_limit_shared",
            "1 while request budgets are shared through Redis (REDIS_URL set and reachable).",
            MetricType::Gauge,
        )?;
        f.gauge(&[], i64::from(limiter.shared))?;
        let mut f = family(
            e,
            "velocity_rate_limit_local_fallback",
            "1 while REDIS_URL is set but Redis is unreachable, so this replica counts its budgets alone.",
            MetricType::Gauge,
        )?;
        f.gauge(&[], i64::from(limiter.fallback))?;
        let mut f = family(
            e,
            "velocity_rate_limit_fallbacks",
            "Times Redis became unreachable and this replica fell back to counting alone.",
            MetricType::Counter,
        )?;
        f.counter(&[], limiter.fallbacks)?;
        let mut f = family(
            e,
            "velocity_rate_limit_syncs",
            "Report rounds Redis answered (budgets shared across replicas).",
            MetricType::Counter,
        )?;
        f.counter(&[], limiter.syncs)?;

        let grpc = &self.adapters.grpc;
        let mut f = family(
            e,
            "velocity_grpc_request_duration_seconds",
            "gRPC call latency by RPC (package.Service/Method; other for unknown paths), until the response headers.",
            MetricType::Histogram,
        )?;
        for (rpc, s) in grpc.rpcs() {
            if s.latency.count() > 0 {
                f.histogram(&[("rpc", rpc)], &s.latency.snapshot())?;
            }
        }
        let mut f = family(
            e,
            "velocity_grpc_requests",
            "gRPC calls by RPC and status code.",
            MetricType::Counter,
        )?;
        for (rpc, s) in grpc.rpcs() {
            for (code, n) in s.codes().iter().enumerate() {
                if *n > 0 {
                    f.counter(&[("rpc", rpc), ("code", GRPC_CODE_NAMES[code])], *n)?;
                }
            }
        }

        let routes = self.adapters.http.routes();
        let mut f = family(
            e,
            "velocity_http_request_duration_seconds",
            "HTTP request latency by route template (unmatched for no route) and method (HEAD counts as GET).",
            MetricType::Histogram,
        )?;
        for (route, s) in &routes {
            for (method, m) in s.methods() {
                if m.latency.count() > 0 {
                    f.histogram(
                        &[("route", route), ("method", method)],
                        &m.latency.snapshot(),
                    )?;
                }
            }
        }
        let mut f = family(
            e,
            "velocity_http_responses",
            "HTTP responses by route template, method and status.",
            MetricType::Counter,
        )?;
        for (route, s) in &routes {
            for (method, m) in s.methods() {
                for (status, n) in m.statuses() {
                    let status = status.to_string();
                    f.counter(
                        &[("route", route), ("method", method), ("status", &status)],
                        n,
                    )?;
                }
            }
        }
        Ok(())
    }
}
