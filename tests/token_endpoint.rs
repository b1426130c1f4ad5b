//! The token endpoint under an adversarial review: no response of the routes
//! that carry tokens may be cached, whatever its status. Both backends.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::oauth::{REDIRECT, http};
use common::{ADMIN_TOKEN, Backend, Harness};
use reqwest::StatusCode;
use reqwest::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderMap, PRAGMA};

const SCOPES: &[&str] = &["issues:read", "issues:write"];
const TOKEN: &str = "/api/oauth/token";
const REVOKE: &str = "/api/oauth/revoke";
const INTROSPECT: &str = "/api/oauth/introspect";

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
    let name = h.db.url.rsplit('/').next().unwrap().to_owned();
    let admin = sqlx::PgPool::connect(&velocity_testkit::postgres_admin_url())
        .await
        .unwrap();
    let block = |allow: bool| format!("ALTER DATABASE {name} WITH ALLOW_CONNECTIONS {allow}");
    sqlx::query(sqlx::AssertSqlSafe(block(false)))
        .execute(&admin)
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
    )))
    .execute(&admin)
    .await
    .unwrap();

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

    sqlx::query(sqlx::AssertSqlSafe(block(true)))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    h.stop().await;
}

for_each_backend!(token_routes_are_never_cached);
