//! `/metrics` as Prometheus scrapes it: after a known mix of calls the
//! counts match exactly. The text is parsed by Python's `prometheus_client`
//! (Debian's python3-prometheus-client, which `.ci/run` installs), a parser
//! independent of the exporter.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use common::oauth::{REDIRECT, TokenBody};
use common::{Backend, Harness, assert_refused};
use reqwest::StatusCode;
use serde_json::json;
use tonic::Code;
use velocity_proto::pb;
use velocity_testkit::bearer;

/// The interpreter Debian's package installs into.
const PYTHON: &str = "/usr/bin/python3";

/// Prints every sample as `[name, {labels}, value]`, one JSON list.
const PARSE: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
samples = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        samples.append([s.name, s.labels, s.value])
print(json.dumps(samples))
"#;

/// A scrape: value by sample name and sorted labels.
struct Scrape {
    samples: BTreeMap<(String, Vec<(String, String)>), f64>,
}

impl Scrape {
    async fn of(url: &str) -> Scrape {
        let response = reqwest::get(url).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()["content-type"],
            "text/plain; version=0.0.4; charset=utf-8"
        );
        let text = response.text().await.unwrap();
        let mut child = Command::new(PYTHON)
            .args(["-c", PARSE])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("python3 with prometheus_client (apt install python3-prometheus-client)");
        {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
        }
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "the parser refused the scrape: {}\n{text}",
            String::from_utf8_lossy(&out.stderr)
        );
        let parsed: Vec<(String, BTreeMap<String, String>, f64)> =
            serde_json::from_slice(&out.stdout).unwrap();
        let mut samples = BTreeMap::new();
        for (name, labels, value) in parsed {
            let key = (name, labels.into_iter().collect());
            assert!(
                samples.insert(key, value).is_none(),
                "a sample twice:\n{text}"
            );
        }
        Scrape { samples }
    }

    /// The sample's value; 0 when absent (families leave out zero series).
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let mut labels: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        labels.sort();
        self.samples
            .get(&(name.to_owned(), labels))
            .copied()
            .unwrap_or(0.0)
    }

    fn has(&self, name: &str) -> bool {
        self.samples.keys().any(|(n, _)| n == name)
    }
}

fn auth(kind: &str, outcome: &str, reason: &str) -> [(&'static str, String); 3] {
    [
        ("kind", kind.to_owned()),
        ("outcome", outcome.to_owned()),
        ("reason", reason.to_owned()),
    ]
}

fn labels<'a>(pairs: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    pairs.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

const AUTHENTICATE_RPC: &str = "velocity.auth.v1.AuthService/Authenticate";

/// A known mix of calls, then one scrape whose counts must match.
async fn counts_match_a_known_mix_of_calls(backend: Backend) {
    // Reuse interval off: a refresh token used twice is a replay.
    let h = Harness::start_with(backend, |c| c.refresh_reuse_interval_secs = 0).await;
    let owner = h.member("acme", "owner").await;
    let session = h.session(&owner);
    let (_, key) = h
        .create_key(&session, pb::KeyKind::Workspace, "acme", &["issues:read"])
        .await
        .unwrap();
    let (revoked_id, revoked) = h
        .create_key(&session, pb::KeyKind::Workspace, "acme", &["issues:read"])
        .await
        .unwrap();
    h.auth()
        .revoke_key(bearer(
            &session,
            pb::RevokeKeyRequest { key_id: revoked_id },
        ))
        .await
        .unwrap();

    // Authenticate: 5 accepted, 3 unknown, 2 revoked, 1 malformed.
    for _ in 0..5 {
        h.authenticate(&key, "acme", &["issues:read"])
            .await
            .unwrap();
    }
    for _ in 0..3 {
        let unknown =
            velocity_domain::Secret::generate(velocity_domain::CredentialKind::WorkspaceKey);
        assert_refused(
            h.authenticate(unknown.expose(), "", &[]).await,
            Code::Unauthenticated,
            "CREDENTIAL_UNKNOWN",
        );
    }
    for _ in 0..2 {
        assert_refused(
            h.authenticate(&revoked, "", &[]).await,
            Code::Unauthenticated,
            "CREDENTIAL_REVOKED",
        );
    }
    assert_refused(
        h.authenticate("not-a-credential", "", &[]).await,
        Code::Unauthenticated,
        "CREDENTIAL_MALFORMED",
    );

    // OAuth: a code exchanged, a refresh, the old refresh token replayed,
    // the code replayed, and a malformed refresh token refused.
    let app = h.register_app(false, &["issues:read"]).await;
    let (code, verifier) = h.code_for(&owner, &app, "issues:read", "acme").await;
    let exchange = || {
        TokenBody::Json(json!({
            "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
            "client_id": app.client_id, "code_verifier": verifier,
        }))
    };
    let (status, _, body) = h.token(exchange()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let access = body["access_token"].as_str().unwrap().to_owned();
    let first_refresh = body["refresh_token"].as_str().unwrap().to_owned();
    for _ in 0..2 {
        h.authenticate(&access, "acme", &[]).await.unwrap();
    }
    let refresh = |token: String| {
        TokenBody::Json(json!({
            "grant_type": "refresh_token", "refresh_token": token, "client_id": app.client_id,
        }))
    };
    let (status, _, body) = h.token(refresh(first_refresh.clone())).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _, body) = h.token(refresh(first_refresh)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    let (status, _, _) = h.token(exchange()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, _) = h.token(refresh("velr_nope".into())).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // The replay revoked the family: its access token is refused now.
    assert_refused(
        h.authenticate(&access, "", &[]).await,
        Code::Unauthenticated,
        "CREDENTIAL_REVOKED",
    );

    // HTTP: 3 liveness probes, 2 paths no route matches.
    let http = reqwest::Client::new();
    for _ in 0..3 {
        let r = http
            .get(format!("{}/healthz", h.http))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    for path in ["/nowhere", "/user/12345/secret-path"] {
        let r = http.get(format!("{}{path}", h.http)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    }

    let url = format!("{}/metrics", h.http);
    // Every local change is applied at once; wait out any poll in flight.
    let mut m = Scrape::of(&url).await;
    for _ in 0..50 {
        if m.get("velocity_invalidation_lag_entries", &[]) == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        m = Scrape::of(&url).await;
    }

    let a = |kind, outcome, reason| {
        m.get(
            "velocity_authenticate_total",
            &labels(&auth(kind, outcome, reason)),
        )
    };
    assert_eq!(a("workspace_key", "accepted", ""), 5.0);
    assert_eq!(a("workspace_key", "refused", "CREDENTIAL_UNKNOWN"), 3.0);
    assert_eq!(a("workspace_key", "refused", "CREDENTIAL_REVOKED"), 2.0);
    assert_eq!(a("malformed", "refused", "CREDENTIAL_MALFORMED"), 1.0);
    assert_eq!(a("access_token", "accepted", ""), 2.0);
    assert_eq!(a("access_token", "refused", "CREDENTIAL_REVOKED"), 1.0);
    // The signed-in caller of CreateKey twice and RevokeKey once; the
    // consent page's GET and POST.
    assert_eq!(a("session", "accepted", ""), 5.0);

    // The three unknown keys never reached the cache or storage.
    assert_eq!(
        m.get("velocity_filter_lookups_total", &[("result", "absent")]),
        3.0
    );
    assert_eq!(m.get("velocity_filter_false_positives_total", &[]), 0.0);
    // The key: a miss, then four hits; the revoked key: a miss, a hit.
    let cache = |c, r| {
        m.get(
            "velocity_cache_requests_total",
            &[("cache", c), ("result", r)],
        )
    };
    assert_eq!((cache("key", "hit"), cache("key", "miss")), (5.0, 2.0));
    // Two keys created, two access tokens minted.
    assert_eq!(m.get("velocity_filter_inserted_total", &[]), 4.0);
    assert_eq!(m.get("velocity_filter_bits", &[]), 33_554_432.0);

    let g = |grant, outcome| {
        m.get(
            "velocity_oauth_grants_total",
            &[("grant", grant), ("outcome", outcome)],
        )
    };
    assert_eq!(g("authorization_code", "issued"), 1.0);
    assert_eq!(g("authorization_code", "replayed"), 1.0);
    assert_eq!(g("authorization_code", "refused"), 0.0);
    assert_eq!(g("refresh_token", "issued"), 1.0);
    assert_eq!(g("refresh_token", "replayed"), 1.0);
    assert_eq!(g("refresh_token", "refused"), 1.0);

    // gRPC: 14 Authenticate calls, 7 answered OK, 7 UNAUTHENTICATED.
    let rpc = |code| {
        m.get(
            "velocity_grpc_requests_total",
            &[("rpc", AUTHENTICATE_RPC), ("code", code)],
        )
    };
    assert_eq!((rpc("OK"), rpc("UNAUTHENTICATED")), (7.0, 7.0));
    let latency = |suffix: &str, le: Option<&str>| {
        let mut l = vec![("rpc", AUTHENTICATE_RPC)];
        l.extend(le.map(|le| ("le", le)));
        m.get(
            &format!("velocity_grpc_request_duration_seconds{suffix}"),
            &l,
        )
    };
    assert_eq!(latency("_count", None), 14.0);
    assert_eq!(latency("_bucket", Some("+Inf")), 14.0);
    assert!(latency("_sum", None) > 0.0);
    assert_eq!(
        m.get(
            "velocity_grpc_requests_total",
            &[
                ("rpc", "velocity.auth.v1.AuthService/RevokeKey"),
                ("code", "OK")
            ]
        ),
        1.0
    );

    // HTTP, by route template: raw paths never become labels.
    let responses = |route, method, status| {
        m.get(
            "velocity_http_responses_total",
            &[("route", route), ("method", method), ("status", status)],
        )
    };
    assert_eq!(responses("/healthz", "GET", "200"), 3.0);
    assert_eq!(responses("unmatched", "GET", "404"), 2.0);
    assert_eq!(responses("/api/oauth/token", "POST", "200"), 2.0);
    assert_eq!(responses("/api/oauth/token", "POST", "400"), 3.0);
    assert_eq!(responses("/oauth/consent", "GET", "200"), 1.0);
    assert_eq!(responses("/oauth/consent", "POST", "303"), 1.0);
    assert_eq!(
        m.get(
            "velocity_http_request_duration_seconds_count",
            &[("route", "/healthz"), ("method", "GET")]
        ),
        3.0
    );
    assert!(
        !m.samples
            .keys()
            .any(|(_, l)| l.iter().any(|(_, v)| v.contains("12345"))),
        "a raw path became a label"
    );

    // Storage, the invalidation feed and the build.
    assert_eq!(m.get("velocity_invalidation_lag_entries", &[]), 0.0);
    assert!(
        m.get("velocity_invalidation_log_head", &[]) >= 3.0,
        "two keys created, one revoked"
    );
    assert!(m.get("velocity_invalidations_applied_total", &[]) >= 3.0);
    assert!(m.get("velocity_invalidation_sync_age_seconds", &[]) < 60.0);
    assert!(m.get("velocity_storage_pool_max_connections", &[]) >= 1.0);
    assert!(m.has("velocity_storage_pool_connections"));
    assert!(m.has("velocity_storage_errors_total"));
    // SQLite's writer: every write of the mix (keys, codes, grants) went
    // through it, several at least, and a batch holds at least one.
    if matches!(backend, Backend::Sqlite) {
        let batches = m.get("velocity_storage_write_batches_total", &[]);
        let writes = m.get("velocity_storage_batched_writes_total", &[]);
        assert!(batches >= 3.0, "{batches} batches");
        assert!(writes >= batches, "{writes} writes in {batches} batches");
        assert!(!m.has("velocity_storage_claim_statements_total"));
    } else {
        assert!(!m.has("velocity_storage_write_batches_total"));
        // PostgreSQL's claim batcher: the mix's consent and exchange went
        // through it, one claim or more to a statement.
        let statements = m.get("velocity_storage_claim_statements_total", &[]);
        let claims = m.get("velocity_storage_batched_claims_total", &[]);
        assert!(statements >= 2.0, "{statements} claim statements");
        assert!(
            claims >= statements,
            "{claims} claims in {statements} statements"
        );
        assert_eq!(
            m.get("velocity_storage_claims_retried_apart_total", &[]),
            0.0
        );
    }
    assert_eq!(m.get("velocity_rate_limit_local_fallback", &[]), 0.0);
    let build = m
        .samples
        .iter()
        .find(|((name, _), _)| name == "velocity_build_info")
        .expect("build info");
    assert_eq!(*build.1, 1.0);
    assert!(
        build
            .0
            .1
            .iter()
            .any(|(k, v)| k == "version" && v == env!("CARGO_PKG_VERSION"))
    );
    h.stop().await;
}

/// Failed client authentications over budget are counted as rate-limit
/// refusals (`client_auth`).
async fn client_auth_throttle_counts_as_a_rate_limit(backend: Backend) {
    let h = Harness::start_with(backend, |c| {
        c.client_auth_throttle.client_auth_failures_per_client = 2;
        c.client_auth_throttle.client_auth_client_period_ms = 60_000;
    })
    .await;
    let app = h.register_app(true, &["issues:read"]).await;
    let mut refused = 0;
    for _ in 0..5 {
        let (status, _, _) = h
            .token(TokenBody::Form(vec![
                ("grant_type", "refresh_token"),
                ("refresh_token", "velr_nope"),
                ("client_id", &app.client_id),
                ("client_secret", "vels_wrong"),
            ]))
            .await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            refused += 1;
        }
    }
    assert!(refused > 0, "the throttle never refused");
    let m = Scrape::of(&format!("{}/metrics", h.http)).await;
    assert_eq!(
        m.get(
            "velocity_rate_limit_refusals_total",
            &[("limit", "client_auth")]
        ),
        f64::from(refused)
    );
    h.stop().await;
}

/// With a metrics listener of its own, `/metrics` is served there and not
/// on the public HTTP listener.
async fn metrics_on_their_own_listener(backend: Backend) {
    let h = Harness::start_with(backend, |c| c.metrics_addr = Some("127.0.0.1:0".into())).await;
    let metrics_addr = h.server().metrics_addr.expect("a metrics listener");
    h.authenticate("not-a-credential", "", &[])
        .await
        .unwrap_err();
    let public = reqwest::get(format!("{}/metrics", h.http)).await.unwrap();
    assert_eq!(public.status(), StatusCode::NOT_FOUND);
    // Nor does the public listener's /openapi.json describe it.
    let document = reqwest::get(format!("{}/openapi.json", h.http))
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert!(document["paths"]["/healthz"].is_object());
    assert!(document["paths"].get("/metrics").is_none());
    let m = Scrape::of(&format!("http://{metrics_addr}/metrics")).await;
    assert_eq!(
        m.get(
            "velocity_authenticate_total",
            &labels(&auth("malformed", "refused", "CREDENTIAL_MALFORMED"))
        ),
        1.0
    );
    // The public listener's 404 for /metrics is counted as unmatched.
    assert_eq!(
        m.get(
            "velocity_http_responses_total",
            &[("route", "unmatched"), ("method", "GET"), ("status", "404")]
        ),
        1.0
    );
    let other = reqwest::get(format!("http://{metrics_addr}/healthz"))
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::NOT_FOUND, "only /metrics there");
    h.stop().await;
}

/// A PostgreSQL outage shows: storage errors, failed log reads, a growing
/// sync age, Authenticate answered with `error`, no log head; and all
/// recover with storage.
#[tokio::test]
async fn postgres_outage_shows_in_the_metrics() {
    let (h, cold) = common::postgres_with_cold_key().await;
    let url = format!("{}/metrics", h.http);
    let before = Scrape::of(&url).await;
    let unavailable =
        |m: &Scrape| m.get("velocity_storage_errors_total", &[("class", "unavailable")]);
    assert!(before.has("velocity_invalidation_log_head"));

    let outage = common::PostgresOutage::begin(&h).await;
    let mut refused = None;
    for _ in 0..5 {
        refused = Some(h.authenticate(&cold, "", &[]).await);
        if refused.as_ref().is_some_and(|r| r.is_err()) {
            break;
        }
    }
    assert_refused(refused.unwrap(), Code::Unavailable, "STORAGE_UNAVAILABLE");
    // A few polls of the log fail meanwhile.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let during = Scrape::of(&url).await;
    assert!(unavailable(&during) > unavailable(&before));
    assert!(
        during.get("velocity_invalidation_read_failures_total", &[])
            > before.get("velocity_invalidation_read_failures_total", &[])
    );
    assert!(during.get("velocity_invalidation_sync_age_seconds", &[]) >= 0.3);
    assert!(
        !during.has("velocity_invalidation_log_head"),
        "storage did not answer"
    );
    assert!(
        during.get(
            "velocity_authenticate_total",
            &labels(&auth("workspace_key", "error", "STORAGE_UNAVAILABLE"))
        ) >= 1.0
    );

    outage.end().await;
    let mut after = Scrape::of(&url).await;
    for _ in 0..100 {
        if after.has("velocity_invalidation_log_head")
            && after.get("velocity_invalidation_sync_age_seconds", &[]) < 0.3
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = Scrape::of(&url).await;
    }
    assert!(after.has("velocity_invalidation_log_head"));
    assert!(after.get("velocity_invalidation_sync_age_seconds", &[]) < 0.3);
    h.stop().await;
}

for_each_backend!(
    counts_match_a_known_mix_of_calls,
    client_auth_throttle_counts_as_a_rate_limit,
    metrics_on_their_own_listener,
);
