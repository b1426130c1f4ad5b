//! The HTTP/JSON face of the RPCs (docs/http-api.md), end to end as the
//! web app's Settings pages call it: keys, apps and grants managed with a
//! session (as Bearer and as the @supabase/ssr cookie) and with a personal
//! admin key; Authenticate; refusals in the documented JSON shape; the
//! cookie's CSRF rule; and /openapi.json, checked by openapi-spec-validator
//! and by schemathesis against the live server.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::oauth::{App, REDIRECT, TokenBody, http};
use common::{Backend, Harness};
use reqwest::header::{CACHE_CONTROL, CONTENT_TYPE, COOKIE, ORIGIN, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const COOKIE_NAME: &str = "sb-testref-auth-token";
const WEB_ORIGIN: &str = "https://app.velocity.test";

async fn start(backend: Backend) -> Harness {
    Harness::start_with(backend, |config| {
        config.session_cookie = Some(COOKIE_NAME.into());
        config.web_origins = vec![WEB_ORIGIN.into()];
    })
    .await
}

/// The @supabase/ssr cookie holding `session`, as the web app sets it.
fn cookie(session: &str) -> String {
    let json = json!({"access_token": session, "token_type": "bearer"}).to_string();
    let encoded = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, json);
    format!("{COOKIE_NAME}=base64-{encoded}")
}

/// Who calls: a bearer credential, or the cookie from an origin.
#[derive(Clone, Copy)]
enum Caller<'a> {
    Bearer(&'a str),
    Cookie(&'a str, Option<&'a str>),
    Nobody,
}

struct Answer {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    json: Value,
}

async fn call(
    h: &Harness,
    method: Method,
    path: &str,
    caller: Caller<'_>,
    body: Option<Value>,
) -> Answer {
    let mut request = http().request(method, format!("{}{path}", h.http));
    request = match caller {
        Caller::Bearer(token) => request.bearer_auth(token),
        Caller::Cookie(session, origin) => {
            let request = request.header(COOKIE, cookie(session));
            match origin {
                Some(origin) => request.header(ORIGIN, origin),
                None => request,
            }
        }
        Caller::Nobody => request,
    };
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let json = response.json().await.unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        json,
    }
}

/// A refusal in the documented shape, with this status and reason.
fn assert_refusal(answer: &Answer, status: StatusCode, reason: &str) {
    assert_eq!(answer.status, status, "{}", answer.json);
    assert_eq!(answer.json["reason"], reason, "{}", answer.json);
    assert!(answer.json["error"].is_string(), "{}", answer.json);
    assert!(
        answer.json["error_description"].is_string(),
        "{}",
        answer.json
    );
    assert_eq!(answer.headers[CONTENT_TYPE], "application/json");
}

fn ok(answer: &Answer) -> &Value {
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.json);
    assert_eq!(answer.headers[CACHE_CONTROL], "no-store");
    &answer.json
}

async fn keys_with_a_session_and_a_personal_admin_key(backend: Backend) {
    let h = start(backend).await;
    let ada = h.member("acme", "owner").await;
    let session = h.session(&ada);

    // A personal admin key, created with the session as Bearer; the secret
    // is in this answer and no other.
    let created = call(
        &h,
        Method::POST,
        "/v1/keys",
        Caller::Bearer(&session),
        Some(json!({
            "kind": "KEY_KIND_PERSONAL", "name": "laptop", "scopes": ["admin"],
        })),
    )
    .await;
    let created = ok(&created);
    let personal = created["secret"].as_str().unwrap().to_owned();
    assert!(personal.starts_with("velu_"), "{created}");
    assert_eq!(created["key"]["kind"], "KEY_KIND_PERSONAL");
    assert_eq!(created["key"]["scopes"], json!(["admin"]));
    assert!(created["key"]["createdAt"].as_str().unwrap().ends_with('Z'));
    assert!(
        created["key"].get("revokedAt").is_none(),
        "unset Timestamps are left out"
    );

    // A workspace key, created with the personal admin key (proto field
    // names are accepted too: workspace_slug).
    let ci = call(
        &h,
        Method::POST,
        "/v1/keys",
        Caller::Bearer(&personal),
        Some(json!({
            "kind": "KEY_KIND_WORKSPACE", "workspace_slug": "acme", "name": "ci",
            "scopes": ["issues:read"],
        })),
    )
    .await;
    let ci = ok(&ci).clone();
    let ci_secret = ci["secret"].as_str().unwrap();
    let ci_id = ci["key"]["id"].as_str().unwrap();
    assert!(ci_secret.starts_with("vel_"));

    // Listed with the cookie (a GET needs no Origin); no secret in a list.
    let listed = call(
        &h,
        Method::GET,
        "/v1/keys?workspaceSlug=acme&pageSize=10",
        Caller::Cookie(&session, None),
        None,
    )
    .await;
    let listed = ok(&listed);
    let keys = listed["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1, "{listed}");
    assert_eq!(keys[0]["id"], ci_id);
    assert!(keys[0]["display"].as_str().unwrap().starts_with("vel_"));
    assert!(!listed.to_string().contains(ci_secret));
    assert_eq!(listed["nextPageToken"], "");

    // Authenticate over JSON: no caller credential, the key in the body.
    let principal = call(
        &h,
        Method::POST,
        "/v1/authenticate",
        Caller::Nobody,
        Some(json!({
            "credential": ci_secret, "requiredScopes": ["issues:read"],
        })),
    )
    .await;
    let principal = ok(&principal);
    assert_eq!(principal["principal"]["kind"], "WORKSPACE_KEY");
    assert_eq!(principal["principal"]["workspaceSlug"], "acme");
    assert!(
        !principal.to_string().contains(ci_secret),
        "the credential is never echoed"
    );
    let missing = call(
        &h,
        Method::POST,
        "/v1/authenticate",
        Caller::Nobody,
        Some(json!({
            "credential": ci_secret, "requiredScopes": ["issues:write"],
        })),
    )
    .await;
    assert_refusal(&missing, StatusCode::FORBIDDEN, "SCOPE_MISSING");
    assert!(!missing.json.to_string().contains(ci_secret));

    // The cookie changes state only from an allowed Origin.
    let path = format!("/v1/keys/{ci_id}");
    for origin in [None, Some("https://evil.example")] {
        let refused = call(
            &h,
            Method::DELETE,
            &path,
            Caller::Cookie(&session, origin),
            None,
        )
        .await;
        assert_refusal(&refused, StatusCode::FORBIDDEN, "ORIGIN_NOT_ALLOWED");
    }
    assert!(
        h.authenticate(ci_secret, "", &[]).await.is_ok(),
        "the refused revocations did nothing"
    );
    let revoked = call(
        &h,
        Method::DELETE,
        &path,
        Caller::Cookie(&session, Some(WEB_ORIGIN)),
        None,
    )
    .await;
    assert!(ok(&revoked)["revokedAt"].as_str().unwrap().ends_with('Z'));
    let after = call(
        &h,
        Method::POST,
        "/v1/authenticate",
        Caller::Nobody,
        Some(json!({"credential": ci_secret})),
    )
    .await;
    assert_refusal(&after, StatusCode::UNAUTHORIZED, "CREDENTIAL_REVOKED");
    // The service's own origin is allowed too (the web app behind the same host).
    let own = h.http.clone();
    let second = call(
        &h,
        Method::POST,
        "/v1/keys",
        Caller::Cookie(&session, Some(&own)),
        Some(json!({
            "kind": "KEY_KIND_PERSONAL", "name": "second", "scopes": ["user:read"],
        })),
    )
    .await;
    ok(&second);

    // Refusals, in the documented shape.
    let nobody = call(&h, Method::GET, "/v1/keys", Caller::Nobody, None).await;
    assert_refusal(&nobody, StatusCode::UNAUTHORIZED, "CREDENTIAL_MISSING");
    assert_eq!(nobody.json["error"], "unauthenticated");
    assert_eq!(nobody.headers[WWW_AUTHENTICATE], "Bearer");
    let forged = call(
        &h,
        Method::GET,
        "/v1/keys",
        Caller::Bearer("velu_nope"),
        None,
    )
    .await;
    assert_refusal(&forged, StatusCode::UNAUTHORIZED, "CREDENTIAL_MALFORMED");
    let member = h.member("acme", "member").await;
    let not_admin = call(
        &h,
        Method::GET,
        "/v1/keys?workspaceSlug=acme",
        Caller::Bearer(&h.session(&member)),
        None,
    )
    .await;
    assert_eq!(
        not_admin.status,
        StatusCode::FORBIDDEN,
        "{}",
        not_admin.json
    );
    assert_eq!(not_admin.json["error"], "permission_denied");
    let unknown = call(
        &h,
        Method::DELETE,
        &format!("/v1/keys/{}", uuid::Uuid::now_v7()),
        Caller::Bearer(&session),
        None,
    )
    .await;
    assert_refusal(&unknown, StatusCode::NOT_FOUND, "NOT_FOUND");
    let misspelt = call(
        &h,
        Method::POST,
        "/v1/keys",
        Caller::Bearer(&session),
        Some(json!({"kindd": "KEY_KIND_PERSONAL"})),
    )
    .await;
    assert_refusal(&misspelt, StatusCode::BAD_REQUEST, "INVALID_ARGUMENT");
    assert!(
        misspelt.json["error_description"]
            .as_str()
            .unwrap()
            .contains("kindd")
    );
    let bad_enum = call(
        &h,
        Method::POST,
        "/v1/keys",
        Caller::Bearer(&session),
        Some(json!({"kind": "KEY_KIND_MAGIC"})),
    )
    .await;
    assert_refusal(&bad_enum, StatusCode::BAD_REQUEST, "INVALID_ARGUMENT");
    let bad_query = call(
        &h,
        Method::GET,
        "/v1/keys?pageSize=many",
        Caller::Bearer(&session),
        None,
    )
    .await;
    assert_refusal(&bad_query, StatusCode::BAD_REQUEST, "INVALID_ARGUMENT");
    let unknown_query = call(
        &h,
        Method::GET,
        "/v1/keys?colour=red",
        Caller::Bearer(&session),
        None,
    )
    .await;
    assert_refusal(&unknown_query, StatusCode::BAD_REQUEST, "INVALID_ARGUMENT");
    let form = http()
        .post(format!("{}/v1/keys", h.http))
        .bearer_auth(&session)
        .form(&[("kind", "KEY_KIND_PERSONAL")])
        .send()
        .await
        .unwrap();
    assert_eq!(
        form.status(),
        StatusCode::BAD_REQUEST,
        "the body must be JSON"
    );
    let put = call(&h, Method::PUT, "/v1/keys", Caller::Bearer(&session), None).await;
    assert_eq!(put.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(put.json["reason"], "INVALID_ARGUMENT");
    let huge = call(
        &h,
        Method::POST,
        "/v1/keys",
        Caller::Bearer(&session),
        Some(json!({"name": "x".repeat(64 * 1024)})),
    )
    .await;
    assert_eq!(huge.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(huge.json["reason"], "INVALID_ARGUMENT");
    // CORS in credentials mode for the web app's origins, and no other.
    for (origin, allowed) in [(WEB_ORIGIN, true), ("https://evil.example", false)] {
        let preflight = http()
            .request(Method::OPTIONS, format!("{}/v1/keys/x", h.http))
            .header(ORIGIN, origin)
            .header("access-control-request-method", "DELETE")
            .send()
            .await
            .unwrap();
        assert_eq!(preflight.status(), StatusCode::NO_CONTENT);
        let headers = preflight.headers();
        assert_eq!(
            headers.get("access-control-allow-origin").is_some(),
            allowed,
            "{origin}"
        );
        assert_eq!(
            headers
                .get("access-control-allow-credentials")
                .map(|v| v.to_str().unwrap()),
            allowed.then_some("true"),
        );
        if allowed {
            assert!(
                headers["access-control-allow-methods"]
                    .to_str()
                    .unwrap()
                    .contains("DELETE")
            );
        }
    }
    // DirectoryService has no HTTP face, even for the operator.
    let directory = call(
        &h,
        Method::GET,
        "/v1/users",
        Caller::Bearer(common::ADMIN_TOKEN),
        None,
    )
    .await;
    assert_refusal(&directory, StatusCode::NOT_FOUND, "NOT_FOUND");
    h.stop().await;
}

async fn apps_and_grants_with_a_session_and_a_personal_admin_key(backend: Backend) {
    let h = start(backend).await;
    let ada = h.member("acme", "owner").await;
    let outsider = h.member("globex", "owner").await;
    let session = h.session(&ada);
    let personal = ok(&call(
        &h,
        Method::POST,
        "/v1/keys",
        Caller::Bearer(&session),
        Some(json!({
            "kind": "KEY_KIND_PERSONAL", "name": "admin", "scopes": ["admin"],
        })),
    )
    .await)["secret"]
        .as_str()
        .unwrap()
        .to_owned();

    // Registered from the Settings page: cookie and the web app's Origin.
    let registered = call(
        &h,
        Method::POST,
        "/v1/apps",
        Caller::Cookie(&session, Some(WEB_ORIGIN)),
        Some(json!({
            "name": "Timetracker", "redirectUris": [REDIRECT],
            "allowedScopes": ["issues:read", "issues:write"], "workspaceSlug": "acme",
        })),
    )
    .await;
    let registered = ok(&registered).clone();
    let client_id = registered["app"]["clientId"].as_str().unwrap().to_owned();
    let first_secret = registered["clientSecret"].as_str().unwrap().to_owned();
    assert!(first_secret.starts_with("vels_"));
    assert_eq!(registered["app"]["clientType"], "CLIENT_TYPE_PUBLIC");

    let listed = call(
        &h,
        Method::GET,
        "/v1/apps?workspaceSlug=acme",
        Caller::Bearer(&personal),
        None,
    )
    .await;
    let listed = ok(&listed);
    assert_eq!(listed["apps"][0]["clientId"], client_id.as_str());
    assert!(!listed.to_string().contains(&first_secret));

    let path = format!("/v1/apps/{client_id}");
    let updated = call(
        &h,
        Method::PATCH,
        &path,
        Caller::Bearer(&personal),
        Some(json!({
            "name": "Timetracker 2", "clientType": "CLIENT_TYPE_CONFIDENTIAL",
        })),
    )
    .await;
    let updated = ok(&updated);
    assert_eq!(updated["name"], "Timetracker 2");
    assert_eq!(updated["clientType"], "CLIENT_TYPE_CONFIDENTIAL");
    assert_eq!(
        updated["redirectUris"],
        json!([REDIRECT]),
        "fields left out stay"
    );

    let rotated = call(
        &h,
        Method::POST,
        &format!("{path}/secret"),
        Caller::Bearer(&session),
        Some(json!({"overlapSeconds": 60})),
    )
    .await;
    let rotated = ok(&rotated);
    let secret = rotated["clientSecret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("vels_") && secret != first_secret);
    assert!(rotated["previousSecretExpiresAt"].is_string());

    // Another workspace's owner may not touch it.
    let foreign = call(
        &h,
        Method::PATCH,
        &path,
        Caller::Bearer(&h.session(&outsider)),
        Some(json!({"name": "mine"})),
    )
    .await;
    assert_refusal(&foreign, StatusCode::FORBIDDEN, "NOT_APP_MANAGER");

    // A grant, from the consent page and the token endpoint.
    let app = App {
        client_id: client_id.clone(),
        secret: Some(secret.clone()),
    };
    let (code, verifier) = h.code_for(&ada, &app, "issues:read", "acme").await;
    let (status, _, tokens) = h
        .token(TokenBody::Json(json!({
            "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
            "client_id": client_id, "client_secret": secret, "code_verifier": verifier,
        })))
        .await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    let access = tokens["access_token"].as_str().unwrap().to_owned();

    let grants = call(
        &h,
        Method::GET,
        "/v1/grants",
        Caller::Cookie(&session, None),
        None,
    )
    .await;
    let grants = ok(&grants);
    assert_eq!(grants["grants"].as_array().unwrap().len(), 1, "{grants}");
    assert_eq!(grants["grants"][0]["appName"], "Timetracker 2");
    assert_eq!(grants["grants"][0]["scopes"], json!(["issues:read"]));
    let grant_id = grants["grants"][0]["id"].as_str().unwrap().to_owned();
    let by_outsider = call(
        &h,
        Method::DELETE,
        &format!("/v1/grants/{grant_id}"),
        Caller::Bearer(&h.session(&outsider)),
        None,
    )
    .await;
    assert_refusal(&by_outsider, StatusCode::FORBIDDEN, "NOT_GRANT_HOLDER");
    let revoked = call(
        &h,
        Method::DELETE,
        &format!("/v1/grants/{grant_id}"),
        Caller::Bearer(&personal),
        None,
    )
    .await;
    assert!(ok(&revoked)["revokedAt"].is_string());
    let gone = call(
        &h,
        Method::POST,
        "/v1/authenticate",
        Caller::Nobody,
        Some(json!({"credential": access})),
    )
    .await;
    assert_eq!(gone.status, StatusCode::UNAUTHORIZED, "{}", gone.json);

    let deleted = call(&h, Method::DELETE, &path, Caller::Bearer(&session), None).await;
    assert_eq!(ok(&deleted), &json!({}));
    let again = call(&h, Method::DELETE, &path, Caller::Bearer(&session), None).await;
    assert_eq!(again.status, StatusCode::NOT_FOUND, "{}", again.json);
    h.stop().await;
}

for_each_backend!(
    keys_with_a_session_and_a_personal_admin_key,
    apps_and_grants_with_a_session_and_a_personal_admin_key,
);
