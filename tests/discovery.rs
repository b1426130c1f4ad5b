//! End to end: RFC 8414 metadata, RFC 9207 `iss` on every authorization
//! response, the workspace in the token response, CORS on the token,
//! revocation and metadata URLs (never the consent form), and JSON errors
//! from every route, the framework's 404/405/413 included.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::oauth::{REDIRECT, TokenBody, http, query_of};
use common::{Backend, Harness};
use reqwest::StatusCode;
use reqwest::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_METHOD, ALLOW,
    CACHE_CONTROL, COOKIE, HeaderMap, LOCATION, ORIGIN, PRAGMA, VARY,
};
use serde_json::json;
use velocity_testkit::pkce_pair;

const SCOPES: &[&str] = &["issues:read", "issues:write", "user:read"];
const METADATA: &str = "/.well-known/oauth-authorization-server";
/// An origin only the configuration allows.
const CONFIGURED: &str = "https://partner.example.org";
/// The origin of the harness apps' second redirect URI.
const REGISTERED: &str = "https://tt.example.com";
const FOREIGN: &str = "https://evil.example.net";

#[tokio::test]
async fn metadata_lists_every_endpoint_under_the_configured_issuer() {
    let h = Harness::start_with(Backend::Sqlite, |c| {
        c.public_url = Some("https://auth.example.com/".into());
    })
    .await;
    let response = http()
        .get(format!("{}{METADATA}", h.http))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let cache = response.headers()[CACHE_CONTROL].to_str().unwrap();
    assert!(
        cache.contains("public") && cache.contains("max-age="),
        "{cache}"
    );
    let doc: serde_json::Value = response.json().await.unwrap();
    let issuer = "https://auth.example.com";
    assert_eq!(doc["issuer"], issuer, "no trailing slash");
    assert_eq!(
        doc["authorization_endpoint"],
        format!("{issuer}/oauth/consent")
    );
    assert_eq!(doc["token_endpoint"], format!("{issuer}/api/oauth/token"));
    assert_eq!(
        doc["revocation_endpoint"],
        format!("{issuer}/api/oauth/revoke")
    );
    assert_eq!(
        doc["introspection_endpoint"],
        format!("{issuer}/api/oauth/introspect")
    );
    assert_eq!(doc["response_types_supported"], json!(["code"]));
    assert_eq!(
        doc["grant_types_supported"],
        json!(["authorization_code", "refresh_token"])
    );
    assert_eq!(doc["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(
        doc["token_endpoint_auth_methods_supported"],
        json!(["client_secret_basic", "client_secret_post", "none"])
    );
    assert!(doc["revocation_endpoint_auth_methods_supported"].is_array());
    assert!(doc["introspection_endpoint_auth_methods_supported"].is_array());
    assert_eq!(doc["authorization_response_iss_parameter_supported"], true);
    let scopes: Vec<&str> = doc["scopes_supported"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    for scope in [
        "issues:read",
        "issues:write",
        "user:read",
        "workspace:admin",
    ] {
        assert!(scopes.contains(&scope), "{scope} in {scopes:?}");
    }
    h.stop().await;
}

#[tokio::test]
async fn the_issuer_defaults_to_the_http_listener() {
    let h = Harness::start(Backend::Sqlite).await;
    let doc: serde_json::Value = http()
        .get(format!("{}{METADATA}", h.http))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["issuer"], h.http.as_str());
    assert_eq!(doc["token_endpoint"], format!("{}/api/oauth/token", h.http));
    h.stop().await;
}

async fn iss_on_every_authorization_response(backend: Backend) {
    let h = Harness::start_with(backend, |c| {
        c.public_url = Some("https://auth.example.com".into());
    })
    .await;
    let issuer = "https://auth.example.com";
    let ada = h.member("acme", "owner").await;
    let app = h.register_app(false, SCOPES).await;

    // Success: the code.
    let (verifier, challenge) = pkce_pair();
    let session = h.session(&ada);
    let location = h
        .consent(
            &session,
            &app.client_id,
            "issues:read",
            &challenge,
            "acme",
            "approve",
        )
        .await;
    let query = query_of(&location);
    assert!(query.contains_key("code"), "{location}");
    assert_eq!(query["iss"], issuer, "{location}");

    // Deny.
    let location = h
        .consent(
            &session,
            &app.client_id,
            "issues:read",
            &challenge,
            "acme",
            "deny",
        )
        .await;
    let query = query_of(&location);
    assert_eq!(query["error"], "access_denied");
    assert_eq!(query["iss"], issuer, "{location}");

    // Errors found checking the request, sent back to the client.
    for (name, value) in [
        ("code_challenge_method", "plain"),
        ("response_type", "token"),
        ("scope", "no:such-scope"),
    ] {
        let mut params = vec![
            ("client_id", app.client_id.as_str()),
            ("redirect_uri", REDIRECT),
            ("response_type", "code"),
            ("scope", "issues:read"),
            ("state", "st4te"),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ];
        for param in &mut params {
            if param.0 == name {
                param.1 = value;
            }
        }
        let response = http()
            .get(h.consent_url(&params))
            .header(COOKIE, format!("sb-access-token={session}"))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_redirection(), "{name}={value}");
        let location = response.headers()[LOCATION].to_str().unwrap();
        let query = query_of(location);
        assert!(query.contains_key("error"), "{location}");
        assert_eq!(query["state"], "st4te");
        assert_eq!(query["iss"], issuer, "{location}");
    }
    drop(verifier);
    h.stop().await;
}

async fn token_response_names_the_workspace(backend: Backend) {
    let h = Harness::start(backend).await;
    let ada = h.member("acme", "owner").await;
    let app = h.register_app(false, SCOPES).await;
    let (code, verifier) = h.code_for(&ada, &app, "issues:read", "acme").await;
    let (status, _, body) = h
        .token(TokenBody::Form(vec![
            ("grant_type", "authorization_code"),
            ("client_id", &app.client_id),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &verifier),
        ]))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["workspace_slug"], "acme", "{body}");
    let workspace_id = body["workspace_id"].as_str().unwrap().to_owned();
    assert!(!workspace_id.is_empty());

    let (status, _, body) = h
        .token(TokenBody::Json(json!({
            "grant_type": "refresh_token",
            "client_id": app.client_id,
            "refresh_token": body["refresh_token"],
        })))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["workspace_id"], workspace_id.as_str());
    assert_eq!(body["workspace_slug"], "acme");
    h.stop().await;
}

async fn preflight(h: &Harness, path: &str, origin: &str) -> (StatusCode, HeaderMap) {
    let response = http()
        .request(reqwest::Method::OPTIONS, format!("{}{path}", h.http))
        .header(ORIGIN, origin)
        .header(ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .send()
        .await
        .unwrap();
    (response.status(), response.headers().clone())
}

#[track_caller]
fn assert_allowed(headers: &HeaderMap, origin: &str) {
    assert_eq!(
        headers
            .get(ACCESS_CONTROL_ALLOW_ORIGIN)
            .map(|v| v.to_str().unwrap()),
        Some(origin),
        "{headers:?}"
    );
    assert!(
        headers
            .get_all(VARY)
            .iter()
            .any(|v| v.to_str().unwrap().contains("Origin")),
        "{headers:?}"
    );
    assert!(!headers.contains_key(ACCESS_CONTROL_ALLOW_CREDENTIALS));
}

#[track_caller]
fn assert_no_cors(headers: &HeaderMap) {
    for name in [
        ACCESS_CONTROL_ALLOW_ORIGIN,
        ACCESS_CONTROL_ALLOW_METHODS,
        ACCESS_CONTROL_ALLOW_HEADERS,
        ACCESS_CONTROL_ALLOW_CREDENTIALS,
    ] {
        assert!(!headers.contains_key(&name), "{name}: {headers:?}");
    }
}

async fn cors_for_registered_and_configured_origins_only(backend: Backend) {
    let h = Harness::start_with(backend, |c| {
        c.cors_origins = vec![CONFIGURED.into()];
    })
    .await;
    let ada = h.member("acme", "owner").await;
    let app = h.register_app(false, SCOPES).await;

    // Preflight from a registered redirect URI's origin (https, and
    // loopback http) and from a configured one.
    for origin in [REGISTERED, "http://127.0.0.1:9", CONFIGURED] {
        for path in [
            "/api/oauth/token",
            "/api/oauth/revoke",
            "/api/oauth/introspect",
        ] {
            let (status, headers) = preflight(&h, path, origin).await;
            assert_eq!(status, StatusCode::NO_CONTENT, "{path} {origin}");
            assert_allowed(&headers, origin);
            assert_eq!(headers[ACCESS_CONTROL_ALLOW_METHODS], "POST, OPTIONS");
            assert_eq!(
                headers[ACCESS_CONTROL_ALLOW_HEADERS],
                "Authorization, Content-Type"
            );
            assert!(headers.contains_key(ACCESS_CONTROL_MAX_AGE));
        }
    }
    let (status, headers) = preflight(&h, METADATA, REGISTERED).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_allowed(&headers, REGISTERED);
    assert_eq!(headers[ACCESS_CONTROL_ALLOW_METHODS], "GET, OPTIONS");

    // Actual requests: a token exchange, an error, the metadata.
    let (code, verifier) = h.code_for(&ada, &app, "issues:read", "acme").await;
    let response = http()
        .post(format!("{}/api/oauth/token", h.http))
        .header(ORIGIN, REGISTERED)
        .form(&[
            ("grant_type", "authorization_code"),
            ("client_id", &app.client_id),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &verifier),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_allowed(response.headers(), REGISTERED);
    assert_eq!(response.headers()[CACHE_CONTROL], "no-store");
    let response = http()
        .post(format!("{}/api/oauth/token", h.http))
        .header(ORIGIN, CONFIGURED)
        .form(&[("grant_type", "password")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_allowed(response.headers(), CONFIGURED);
    let response = http()
        .get(format!("{}{METADATA}", h.http))
        .header(ORIGIN, CONFIGURED)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_allowed(response.headers(), CONFIGURED);

    // A foreign origin gets no CORS headers, preflight or not.
    let (_, headers) = preflight(&h, "/api/oauth/token", FOREIGN).await;
    assert_no_cors(&headers);
    let response = http()
        .post(format!("{}/api/oauth/token", h.http))
        .header(ORIGIN, FOREIGN)
        .form(&[("grant_type", "password")])
        .send()
        .await
        .unwrap();
    assert_no_cors(response.headers());
    let response = http()
        .get(format!("{}{METADATA}", h.http))
        .header(ORIGIN, FOREIGN)
        .send()
        .await
        .unwrap();
    assert_no_cors(response.headers());

    // No origin (a server calling): no CORS headers, but the answers still
    // vary by origin for caches, and the token routes' are never stored.
    let vary_origin = |headers: &HeaderMap| {
        headers
            .get_all(VARY)
            .iter()
            .any(|v| v.to_str().unwrap().contains("Origin"))
    };
    for path in ["/api/oauth/token", "/api/oauth/introspect"] {
        let response = http()
            .post(format!("{}{path}", h.http))
            .form(&[("grant_type", "password"), ("token", "x")])
            .send()
            .await
            .unwrap();
        let headers = response.headers();
        assert_no_cors(headers);
        assert!(vary_origin(headers), "{path} {headers:?}");
        assert_eq!(headers[CACHE_CONTROL], "no-store", "{path}");
        assert_eq!(headers[PRAGMA], "no-cache", "{path}");
    }
    let response = http()
        .get(format!("{}{METADATA}", h.http))
        .send()
        .await
        .unwrap();
    assert_no_cors(response.headers());
    assert!(vary_origin(response.headers()));
    assert_ne!(response.headers()[CACHE_CONTROL], "no-store");

    // The consent form: none, whatever the origin.
    let (_, headers) = preflight(&h, "/oauth/consent", REGISTERED).await;
    assert_no_cors(&headers);
    let response = http()
        .get(h.consent_url(&[("client_id", &app.client_id)]))
        .header(ORIGIN, REGISTERED)
        .header(COOKIE, format!("sb-access-token={}", h.session(&ada)))
        .send()
        .await
        .unwrap();
    assert_no_cors(response.headers());
    h.stop().await;
}

#[tokio::test]
async fn framework_errors_are_json() {
    let h = Harness::start(Backend::Sqlite).await;
    let json_error = |status: StatusCode, headers: &HeaderMap, body: &serde_json::Value| {
        assert!(
            headers[reqwest::header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("application/json"),
            "{status} {headers:?}"
        );
        assert!(body["error"].is_string(), "{body}");
        assert!(body["error_description"].is_string(), "{body}");
        assert!(body["reason"].is_string(), "{body}");
    };

    // 405 on the token URL, with Allow, still uncacheable.
    for method in [reqwest::Method::GET, reqwest::Method::OPTIONS] {
        let response = http()
            .request(method.clone(), format!("{}/api/oauth/token", h.http))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method}");
        json_error(status, &headers, &body);
        assert_eq!(headers[ALLOW], "POST");
        assert_eq!(headers[CACHE_CONTROL], "no-store");
        assert_eq!(body["error"], "invalid_request");
    }
    // 405 on the metadata URL.
    let response = http()
        .delete(format!("{}{METADATA}", h.http))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(response.headers()[ALLOW].to_str().unwrap().contains("GET"));
    let headers = response.headers().clone();
    json_error(
        StatusCode::METHOD_NOT_ALLOWED,
        &headers,
        &response.json().await.unwrap(),
    );

    // 404 on an unknown route.
    let response = http()
        .get(format!("{}/no/such/route", h.http))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let headers = response.headers().clone();
    let body: serde_json::Value = response.json().await.unwrap();
    json_error(StatusCode::NOT_FOUND, &headers, &body);
    assert_eq!(body["error"], "not_found");

    // 413 from the body limit.
    let response = http()
        .post(format!("{}/api/oauth/token", h.http))
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(format!("token={}", "x".repeat(17 * 1024)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let headers = response.headers().clone();
    json_error(
        StatusCode::PAYLOAD_TOO_LARGE,
        &headers,
        &response.json().await.unwrap(),
    );
    h.stop().await;
}

for_each_backend!(
    iss_on_every_authorization_response,
    token_response_names_the_workspace,
    cors_for_registered_and_configured_origins_only,
);
