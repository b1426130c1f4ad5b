//! The token endpoint under an adversarial review: no response of the routes
//! that carry tokens may be cached, whatever its status; and guessing client
//! secrets is answered 429 after a few failures, per client and address and
//! per address, without locking the client out from elsewhere. Both
//! transports, both backends.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::oauth::{REDIRECT, http};
use common::{ADMIN_TOKEN, Backend, Harness, assert_refused, reason};
use reqwest::StatusCode;
use reqwest::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderMap, PRAGMA, RETRY_AFTER};
use tonic::Code;
use tonic_types::StatusExt;
use velocity_proto::pb;

const SCOPES: &[&str] = &["issues:read", "issues:write"];
const TOKEN: &str = "/api/oauth/token";
const REVOKE: &str = "/api/oauth/revoke";
const INTROSPECT: &str = "/api/oauth/introspect";
const WRONG_SECRET: &str = "vels_not-the-secret";

/// A client whose connections come from `address` (any of 127.0.0.0/8 on
/// Linux): another caller, as the server sees it.
fn http_from(address: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::from(address))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

#[track_caller]
fn assert_uncacheable(what: &str, headers: &HeaderMap) {
    let header = |name| headers.get(name).map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(header(CACHE_CONTROL).as_deref(), Some("no-store"), "{what}");
    assert_eq!(header(PRAGMA).as_deref(), Some("no-cache"), "{what}");
}

/// Sends `request`, checks its status and that it may not be cached.
async fn expect(what: &str, request: reqwest::RequestBuilder, status: StatusCode) {
    let response = request.send().await.unwrap();
    let headers = response.headers().clone();
    let got = response.status();
    let body = response.text().await.unwrap_or_default();
    assert_eq!(got, status, "{what}: {body}");
    assert_uncacheable(what, &headers);
}

type Answer = (StatusCode, HeaderMap, serde_json::Value);

async fn answer(request: reqwest::RequestBuilder) -> Answer {
    let response = request.send().await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.json().await.unwrap_or(serde_json::Value::Null);
    (status, headers, body)
}

/// Signs Ada in, consents, and exchanges the code with the right secret:
/// returns the refresh token.
async fn refresh_token_for(h: &Harness, app: &common::oauth::App) -> String {
    let ada = h.member("acme", "owner").await;
    let (code, verifier) = h.code_for(&ada, app, "issues:read", "acme").await;
    let (status, _, body) = answer(
        http()
            .post(format!("{}{TOKEN}", h.http))
            .basic_auth(&app.client_id, app.secret.as_ref())
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", REDIRECT),
                ("code_verifier", &verifier),
            ]),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["refresh_token"].as_str().unwrap().to_owned()
}

async fn refresh(
    h: &Harness,
    from: &reqwest::Client,
    client_id: &str,
    secret: &str,
    refresh_token: &str,
) -> Answer {
    answer(from.post(format!("{}{TOKEN}", h.http)).form(&[
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token),
        ("client_id", client_id),
        ("client_secret", secret),
    ]))
    .await
}

/// A 429 as the design says: Retry-After in whole seconds, at least one,
/// the `too_many_attempts` error with its reason, and uncacheable.
#[track_caller]
fn retry_after_of((status, headers, body): &Answer) -> u64 {
    assert_eq!(*status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"], "too_many_attempts", "{body}");
    assert_eq!(body["reason"], "TOO_MANY_ATTEMPTS", "{body}");
    assert_uncacheable("429", headers);
    let secs: u64 = headers[RETRY_AFTER].to_str().unwrap().parse().unwrap();
    assert!(secs >= 1, "Retry-After: {secs}");
    secs
}

#[track_caller]
fn assert_invalid_client((status, _, body): &Answer) {
    assert_eq!(*status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"], "invalid_client", "{body}");
}

/// Finding A: `Cache-Control: no-store` and `Pragma: no-cache` on every
/// response of the token, revocation and introspection routes, whatever
/// answered: the handler, the error mapping or the framework (405, 413).
async fn token_routes_are_never_cached(backend: Backend) {
    let h = Harness::start(backend).await;
    let app = h.register_app(true, SCOPES).await;
    let secret = app.secret.clone().unwrap();
    let url = |path: &str| format!("{}{path}", h.http);

    // 200: a token response, a revocation, an introspection.
    let ada = h.member("acme", "owner").await;
    let (code, verifier) = h.code_for(&ada, &app, "issues:read", "acme").await;
    expect(
        "token 200",
        http()
            .post(url(TOKEN))
            .basic_auth(&app.client_id, Some(&secret))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", REDIRECT),
                ("code_verifier", &verifier),
            ]),
        StatusCode::OK,
    )
    .await;
    expect(
        "revoke 200",
        http()
            .post(url(REVOKE))
            .basic_auth(&app.client_id, Some(&secret))
            .form(&[("token", "velo_unknown")]),
        StatusCode::OK,
    )
    .await;
    expect(
        "introspect 200",
        http()
            .post(url(INTROSPECT))
            .bearer_auth(ADMIN_TOKEN)
            .form(&[("token", "velo_unknown")]),
        StatusCode::OK,
    )
    .await;

    // 400: the use-case refuses.
    expect(
        "token 400",
        http()
            .post(url(TOKEN))
            .basic_auth(&app.client_id, Some(&secret))
            .form(&[("grant_type", "password")]),
        StatusCode::BAD_REQUEST,
    )
    .await;
    expect(
        "revoke 400",
        http()
            .post(url(REVOKE))
            .basic_auth(&app.client_id, Some(&secret))
            .form(&[("token_type_hint", "access_token")]),
        StatusCode::BAD_REQUEST,
    )
    .await;
    expect(
        "introspect 400",
        http()
            .post(url(INTROSPECT))
            .bearer_auth(ADMIN_TOKEN)
            .form(&[("token_type_hint", "access_token")]),
        StatusCode::BAD_REQUEST,
    )
    .await;

    for path in [TOKEN, REVOKE, INTROSPECT] {
        // 401: client authentication fails.
        expect(
            &format!("{path} 401"),
            http()
                .post(url(path))
                .basic_auth("nobody", Some("vels_x"))
                .form(&[("grant_type", "refresh_token"), ("token", "velo_x")]),
            StatusCode::UNAUTHORIZED,
        )
        .await;
        // A body in neither form encoding nor JSON: RFC 6749 §5.2
        // `invalid_request`, a 400 rather than a 415.
        expect(
            &format!("{path} wrong content type"),
            http()
                .post(url(path))
                .header(CONTENT_TYPE, "text/plain")
                .body("grant_type=refresh_token"),
            StatusCode::BAD_REQUEST,
        )
        .await;
        // 405: axum's answer for a method the route does not take.
        expect(
            &format!("{path} 405"),
            http().get(url(path)),
            StatusCode::METHOD_NOT_ALLOWED,
        )
        .await;
        // 413: a body over the 16 KiB limit, refused before the handler runs.
        expect(
            &format!("{path} 413"),
            http()
                .post(url(path))
                .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(format!("token={}", "x".repeat(17 * 1024))),
            StatusCode::PAYLOAD_TOO_LARGE,
        )
        .await;
    }

    // Other routes are not the token routes' business.
    let response = http().get(url("/healthz")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(!response.headers().contains_key(PRAGMA));
    h.stop().await;
}

/// Finding A, 503: storage down (PostgreSQL refuses connections).
#[tokio::test]
async fn token_endpoint_outage_is_an_uncacheable_503() {
    let h = Harness::start_with(Backend::Postgres, |c| c.database.db_max_connections = 2).await;
    let app = h.register_app(false, SCOPES).await;
    let outage = common::PostgresOutage::begin(&h).await;

    let mut last = None;
    for _ in 0..5 {
        let (status, headers, body) = answer(http().post(format!("{}{TOKEN}", h.http)).form(&[
            ("grant_type", "refresh_token"),
            ("client_id", &app.client_id),
        ]))
        .await;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(body["error"], "temporarily_unavailable", "{body}");
            last = Some(headers);
            break;
        }
    }
    let headers = last.expect("the token endpoint never answered 503");
    assert_uncacheable("token 503", &headers);

    outage.end().await;
    h.stop().await;
}

/// Finding B: five wrong secrets for one client from one address are 401s;
/// the sixth is 429 with Retry-After, and so is the right secret from that
/// address while it waits (refused before any secret is checked). The right
/// secret from another address works throughout, and from the first one
/// again once Retry-After has passed.
async fn wrong_client_secrets_are_throttled_per_client_and_address(backend: Backend) {
    let h = Harness::start_with(backend, |c| {
        c.client_auth_throttle.client_auth_client_period_ms = 2_000;
    })
    .await;
    let app = h.register_app(true, SCOPES).await;
    let secret = app.secret.clone().unwrap();
    let first = refresh_token_for(&h, &app).await;
    let here = http();
    let elsewhere = http_from([127, 0, 0, 2]);

    for attempt in 1..=5 {
        let answer = refresh(&h, &here, &app.client_id, WRONG_SECRET, &first).await;
        assert_invalid_client(&answer);
        assert!(!answer.1.contains_key(RETRY_AFTER), "attempt {attempt}");
    }
    let refused = refresh(&h, &here, &app.client_id, WRONG_SECRET, &first).await;
    let retry_after = retry_after_of(&refused);
    assert_eq!(retry_after, 2, "one failure per the configured 2 s");

    // Blocked: the right secret learns nothing either, and spends nothing.
    let blocked = refresh(&h, &here, &app.client_id, &secret, &first).await;
    assert!(retry_after_of(&blocked) <= retry_after);

    // Another address is another caller: the client is not locked out.
    let (status, _, body) = refresh(&h, &elsewhere, &app.client_id, &secret, &first).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let second = body["refresh_token"].as_str().unwrap().to_owned();

    // Once Retry-After has passed, the first address may try again.
    h.clock.advance_secs(retry_after as i64);
    let (status, _, body) = refresh(&h, &here, &app.client_id, &secret, &second).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let third = body["refresh_token"].as_str().unwrap().to_owned();
    // Successes are not counted; the budget has one cell back, no more.
    assert_invalid_client(&refresh(&h, &here, &app.client_id, WRONG_SECRET, &third).await);
    retry_after_of(&refresh(&h, &here, &app.client_id, WRONG_SECRET, &third).await);
    h.stop().await;
}

/// Finding B, per address: failures across client_ids (here unknown ones)
/// exhaust the address's budget, which then holds for every client from
/// that address, and for no other address.
async fn failures_across_clients_exhaust_the_address_budget(backend: Backend) {
    let h = Harness::start_with(backend, |c| {
        c.client_auth_throttle.client_auth_failures_per_address = 3;
        c.client_auth_throttle.client_auth_address_period_ms = 1_000;
    })
    .await;
    let public = h.register_app(false, SCOPES).await;
    let here = http();
    let elsewhere = http_from([127, 0, 0, 2]);
    let revoke = |from: &reqwest::Client, client_id: &str| {
        answer(
            from.post(format!("{}{REVOKE}", h.http))
                .form(&[("token", "velo_unknown"), ("client_id", client_id)]),
        )
    };
    for n in 0..3 {
        assert_invalid_client(&revoke(&here, &format!("guess-{n}")).await);
    }
    assert_eq!(retry_after_of(&revoke(&here, "guess-3").await), 1);
    // The address waits, for a real client too; other addresses do not.
    retry_after_of(&revoke(&here, &public.client_id).await);
    let (status, headers, _) = revoke(&elsewhere, &public.client_id).await;
    assert_eq!(status, StatusCode::OK);
    assert_uncacheable("revoke 200", &headers);
    h.clock.advance_secs(1);
    assert_eq!(revoke(&here, &public.client_id).await.0, StatusCode::OK);
    h.stop().await;
}

/// Finding B over gRPC: RefreshToken counts failures with the HTTP endpoint
/// and, when blocked, is RESOURCE_EXHAUSTED with TOO_MANY_ATTEMPTS and a
/// `google.rpc.RetryInfo`.
async fn grpc_refresh_is_throttled_with_retry_info(backend: Backend) {
    let h = Harness::start(backend).await;
    let app = h.register_app(true, SCOPES).await;
    let secret = app.secret.clone().unwrap();
    let first = refresh_token_for(&h, &app).await;
    let call = |secret: &str| {
        let mut auth = h.auth();
        let request = pb::RefreshTokenRequest {
            refresh_token: first.clone(),
            client_id: app.client_id.clone(),
            client_secret: Some(secret.to_owned()),
        };
        async move { auth.refresh_token(request).await }
    };
    for _ in 0..5 {
        assert_refused(
            call(WRONG_SECRET).await,
            Code::Unauthenticated,
            "INVALID_CLIENT",
        );
    }
    for attempt in [WRONG_SECRET, secret.as_str()] {
        let status = call(attempt).await.unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert_eq!(reason(&status), "TOO_MANY_ATTEMPTS");
        let delay = status.get_details_retry_info().unwrap().retry_delay;
        assert!(
            delay.is_some_and(|d| d >= Duration::from_secs(1) && d <= Duration::from_secs(12)),
            "{delay:?}"
        );
    }
    // One budget for both transports: HTTP from this address waits too...
    retry_after_of(&refresh(&h, &http(), &app.client_id, &secret, &first).await);
    // ...and from another address the right secret works.
    let (status, _, body) = refresh(
        &h,
        &http_from([127, 0, 0, 2]),
        &app.client_id,
        &secret,
        &first,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    h.stop().await;
}

for_each_backend!(
    token_routes_are_never_cached,
    wrong_client_secrets_are_throttled_per_client_and_address,
    failures_across_clients_exhaust_the_address_budget,
    grpc_refresh_is_throttled_with_retry_info,
);
