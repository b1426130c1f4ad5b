//! End to end: OAuth 2.0 authorization code + PKCE, consent page included,
//! through HTTP as browsers and apps call it and through gRPC, on SQLite and
//! PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::oauth::{REDIRECT, TokenBody, http, parse_form, query_of};
use common::{Backend, Harness, assert_refused};
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CACHE_CONTROL, COOKIE, LOCATION, WWW_AUTHENTICATE};
use serde_json::json;
use tonic::Code;
use velocity_proto::pb;
use velocity_testkit::pkce_pair;

const SCOPES: &[&str] = &["issues:read", "issues:write", "projects:read", "user:read"];

/// The default refresh reuse interval: a rotated refresh token used again
/// later than this revokes its family.
const REUSE_SECS: i64 = 10;

async fn browser_flow_then_refresh_rotation_and_replay(backend: Backend) {
    let h = Harness::start(backend).await;
    let ada = h.member("acme", "owner").await;
    h.ensure_workspace("globex").await;
    let app = h.register_app(false, SCOPES).await;
    let (verifier, challenge) = pkce_pair();
    let session = h.session(&ada);

    // The consent page, as the signed-in browser loads it.
    let page = http()
        .get(h.consent_url(&[
            ("client_id", &app.client_id),
            ("redirect_uri", REDIRECT),
            ("response_type", "code"),
            ("scope", "issues:write user:read"),
            ("state", "st4te"),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ]))
        .header(COOKIE, format!("sb-access-token={session}"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    assert!(
        page.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'")
    );
    let html = page.text().await.unwrap();
    assert!(
        html.contains("Timetracker &lt;Pro&gt;"),
        "the app name, escaped"
    );
    assert!(html.contains("Create, update, delete issues") && html.contains("Read your profile"));
    let form = parse_form(&html);
    assert_eq!(form.workspaces, ["acme"]);
    assert!(!form.fields["csrf_token"].is_empty());

    let location = h
        .consent(
            &session,
            &app.client_id,
            "issues:write user:read",
            &challenge,
            "acme",
            "approve",
        )
        .await;
    assert!(location.starts_with(REDIRECT));
    let query = query_of(&location);
    assert_eq!(query["state"], "st4te");
    let code = &query["code"];
    assert!(code.starts_with("velc_"));

    // Exchange with a JSON body.
    let (status, headers, body) = h
        .token(TokenBody::Json(json!({
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
            "client_id": app.client_id,
            "code_verifier": verifier,
        })))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers[CACHE_CONTROL], "no-store");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    assert_eq!(body["scope"], "issues:write user:read");
    let access = body["access_token"].as_str().unwrap().to_owned();
    let refresh = body["refresh_token"].as_str().unwrap().to_owned();
    assert!(access.starts_with("velo_") && refresh.starts_with("velr_"));

    // Authenticate: user, app, workspace and scopes of the grant.
    let p = h.authenticate(&access, "", &["issues:read"]).await.unwrap();
    assert_eq!(p.kind, pb::PrincipalKind::OauthAccessToken as i32);
    assert_eq!(
        (
            p.user_id.as_str(),
            p.workspace_slug.as_str(),
            p.client_id.as_str()
        ),
        (ada.as_str(), "acme", app.client_id.as_str())
    );
    assert!(h.authenticate(&access, "acme", &[]).await.is_ok());
    assert_refused(
        h.authenticate(&access, "globex", &[]).await,
        Code::PermissionDenied,
        "WORKSPACE_MISMATCH",
    );
    assert_refused(
        h.authenticate(&access, "", &["projects:read"]).await,
        Code::PermissionDenied,
        "SCOPE_MISSING",
    );

    // A refresh may narrow the grant's scope, never widen it.
    let (status, _, body) = h
        .token(TokenBody::Form(vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
            ("client_id", &app.client_id),
            ("scope", "issues:write projects:read"),
        ]))
        .await;
    assert_eq!(
        (status, body["error"].as_str(), body["reason"].as_str()),
        (
            StatusCode::BAD_REQUEST,
            Some("invalid_scope"),
            Some("SCOPE_EXCEEDS_GRANT")
        )
    );

    // Refresh with form encoding (RFC 6749): rotation.
    let (status, _, body) = h
        .token(TokenBody::Form(vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
            ("client_id", &app.client_id),
        ]))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let access2 = body["access_token"].as_str().unwrap().to_owned();
    let refresh2 = body["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(refresh2, refresh);
    assert!(h.authenticate(&access2, "", &[]).await.is_ok());

    // Replaying the rotated refresh token after the reuse interval revokes
    // the whole family.
    h.clock.advance_secs(REUSE_SECS + 1);
    let (status, _, body) = h
        .token(TokenBody::Form(vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
            ("client_id", &app.client_id),
        ]))
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    for token in [&access, &access2] {
        assert_refused(
            h.authenticate(token, "", &[]).await,
            Code::Unauthenticated,
            "CREDENTIAL_REVOKED",
        );
    }
    let (status, _, body) = h
        .token(TokenBody::Form(vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh2),
            ("client_id", &app.client_id),
        ]))
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant")),
        "the newest refresh token died with its family"
    );
    h.stop().await;
}

async fn consent_errors_follow_rfc6749_4_1_2_1(backend: Backend) {
    let h = Harness::start(backend).await;
    let ada = h.member("acme", "member").await;
    let app = h.register_app(false, SCOPES).await;
    let (_, challenge) = pkce_pair();
    let session = h.session(&ada);
    let base = |overrides: &[(&'static str, &str)]| {
        let mut params: Vec<(&str, String)> = vec![
            ("client_id", app.client_id.clone()),
            ("redirect_uri", REDIRECT.into()),
            ("response_type", "code".into()),
            ("scope", "issues:read".into()),
            ("state", "s1".into()),
            ("code_challenge", challenge.clone()),
            ("code_challenge_method", "S256".into()),
        ];
        for (k, v) in overrides {
            params.retain(|(name, _)| name != k);
            if !v.is_empty() {
                params.push((k, v.to_string()));
            }
        }
        params
    };
    let get = |params: Vec<(&'static str, String)>| {
        let url = h.consent_url(
            &params
                .iter()
                .map(|(k, v)| (*k, v.as_str()))
                .collect::<Vec<_>>(),
        );
        let session = session.clone();
        async move {
            http()
                .get(url)
                .header(COOKIE, format!("sb-access-token={session}"))
                .send()
                .await
                .unwrap()
        }
    };

    // Unknown client or unregistered redirect_uri: our page, never a redirect.
    for params in [
        base(&[("client_id", "no-such-app")]),
        base(&[("client_id", "")]),
        base(&[("redirect_uri", "http://127.0.0.1:9/callback/evil")]),
        base(&[("redirect_uri", "https://evil.example.com/cb")]),
        base(&[("redirect_uri", "")]),
    ] {
        let response = get(params).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert!(response.headers().get(LOCATION).is_none());
        assert!(response.text().await.unwrap().contains("<h1>"));
    }

    // Other errors go back to the client with error, description and state.
    for (params, error) in [
        (
            base(&[("response_type", "token")]),
            "unsupported_response_type",
        ),
        (base(&[("response_type", "")]), "invalid_request"),
        (base(&[("code_challenge", "")]), "invalid_request"),
        (
            base(&[("code_challenge_method", "plain")]),
            "invalid_request",
        ),
        (base(&[("code_challenge_method", "")]), "invalid_request"),
        (base(&[("scope", "issues:read teleport")]), "invalid_scope"),
        (base(&[("scope", "workspace:admin")]), "invalid_scope"),
        (base(&[("scope", "")]), "invalid_scope"),
    ] {
        let response = get(params).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        let query = query_of(response.headers()[LOCATION].to_str().unwrap());
        assert_eq!(query["error"], error);
        assert_eq!(query["state"], "s1");
        assert!(!query["error_description"].is_empty());
    }

    // A repeated parameter is refused, and so are more than 32.
    let mut dup = base(&[]);
    dup.push(("scope", "issues:write".into()));
    assert_eq!(get(dup).await.status(), StatusCode::BAD_REQUEST);
    let mut many = base(&[]);
    const EXTRA: [&str; 32] = [
        "x0", "x1", "x2", "x3", "x4", "x5", "x6", "x7", "x8", "x9", "x10", "x11", "x12", "x13",
        "x14", "x15", "x16", "x17", "x18", "x19", "x20", "x21", "x22", "x23", "x24", "x25", "x26",
        "x27", "x28", "x29", "x30", "x31",
    ];
    many.extend(EXTRA.iter().map(|name| (*name, String::new())));
    let response = get(many).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(response.headers().get(LOCATION).is_none());

    // Not signed in, or signed in with something that is not a session.
    let url = h.consent_url(
        &base(&[])
            .iter()
            .map(|(k, v)| (*k, v.as_str()))
            .collect::<Vec<_>>(),
    );
    let response = http().get(&url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let response = http()
        .get(&url)
        .bearer_auth(h.session_with(&ada, |c| c["exp"] = 1.into()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let response = http().get(&url).bearer_auth(&session).send().await.unwrap();
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "Authorization: Bearer works as well as the cookie"
    );
    for spelling in [format!("BEARER {session}"), format!("bearer\t{session}")] {
        let response = http()
            .get(&url)
            .header(AUTHORIZATION, spelling.as_str())
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "the scheme in any case, then spaces or tabs: {spelling:?}"
        );
    }

    // A forged or foreign CSRF token is refused.
    let html = http()
        .get(&url)
        .bearer_auth(&session)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut form = parse_form(&html);
    form.fields.insert("decision".into(), "approve".into());
    form.fields.insert("workspace".into(), "acme".into());
    let bob = h.member("acme", "member").await;
    let response = http()
        .post(format!("{}/oauth/consent", h.http))
        .bearer_auth(h.session(&bob))
        .form(&form.fields)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::FORBIDDEN,
        "another user's session"
    );
    form.fields.insert("csrf_token".into(), "AAAA".into());
    let response = http()
        .post(format!("{}/oauth/consent", h.http))
        .bearer_auth(&session)
        .form(&form.fields)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);

    // Deny: access_denied with state.
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
    assert_eq!(
        (query["error"].as_str(), query["state"].as_str()),
        ("access_denied", "st4te")
    );
    assert!(!query.contains_key("code"));
    h.stop().await;
}

async fn token_endpoint_errors_follow_rfc6749_5_2(backend: Backend) {
    let h = Harness::start(backend).await;
    let ada = h.member("acme", "owner").await;
    let public = h.register_app(false, SCOPES).await;
    let confidential = h.register_app(true, SCOPES).await;
    let secret = confidential.secret.clone().unwrap();
    assert!(secret.starts_with("vels_"));
    let error_of =
        |(status, headers, body): (StatusCode, reqwest::header::HeaderMap, serde_json::Value)| {
            assert_eq!(
                headers.get(CACHE_CONTROL).map(|v| v.to_str().unwrap()),
                Some("no-store")
            );
            assert!(body["error_description"].is_string());
            (
                status,
                body["error"].as_str().unwrap_or_default().to_owned(),
            )
        };
    let bad_request = |e: &str| (StatusCode::BAD_REQUEST, e.to_owned());

    assert_eq!(
        error_of(
            h.token(TokenBody::Form(vec![
                ("grant_type", "password"),
                ("client_id", &public.client_id)
            ]))
            .await
        ),
        bad_request("unsupported_grant_type")
    );
    assert_eq!(
        error_of(
            h.token(TokenBody::Form(vec![("client_id", &public.client_id)]))
                .await
        ),
        bad_request("invalid_request")
    );
    // At most 32 parameters (docs/limits.md); a name given twice is refused.
    let names: Vec<String> = (0..32).map(|i| format!("extra{i}")).collect();
    // Each is `unsupported_grant_type` once its parameters are read.
    let mut many = vec![
        ("grant_type", "password"),
        ("client_id", public.client_id.as_str()),
    ];
    many.extend(names.iter().map(|name| (name.as_str(), "x")));
    assert_eq!(
        error_of(h.token(TokenBody::Form(many)).await),
        bad_request("invalid_request")
    );
    assert_eq!(
        error_of(
            h.token(TokenBody::Form(vec![
                ("grant_type", "password"),
                ("grant_type", "password"),
                ("client_id", &public.client_id)
            ]))
            .await
        ),
        bad_request("invalid_request")
    );
    let (status, headers, _) = h
        .token(TokenBody::Form(vec![
            ("grant_type", "authorization_code"),
            ("client_id", "nobody"),
        ]))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(headers.contains_key(WWW_AUTHENTICATE));
    let response = http()
        .post(format!("{}/api/oauth/token", h.http))
        .body("grant_type=authorization_code")
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::BAD_REQUEST,
        "no content type"
    );

    // Confidential clients must authenticate; public ones must not use a secret.
    let (code, verifier) = h.code_for(&ada, &confidential, "issues:read", "acme").await;
    let exchange = |client_id: String,
                    secret: Option<String>,
                    code: String,
                    redirect: &'static str,
                    verifier: String| {
        let mut body = json!({"grant_type": "authorization_code", "code": code, "redirect_uri": redirect, "client_id": client_id, "code_verifier": verifier});
        if let Some(s) = secret {
            body["client_secret"] = s.into();
        }
        h.token(TokenBody::Json(body))
    };
    assert_eq!(
        error_of(
            exchange(
                confidential.client_id.clone(),
                None,
                code.clone(),
                REDIRECT,
                verifier.clone()
            )
            .await
        ),
        (StatusCode::UNAUTHORIZED, "invalid_client".into())
    );
    assert_eq!(
        error_of(
            exchange(
                confidential.client_id.clone(),
                Some("vels_wrong".into()),
                code.clone(),
                REDIRECT,
                verifier.clone()
            )
            .await
        ),
        (StatusCode::UNAUTHORIZED, "invalid_client".into())
    );
    assert_eq!(
        error_of(
            exchange(
                confidential.client_id.clone(),
                Some(secret.clone()),
                code.clone(),
                "https://tt.example.com/cb",
                verifier.clone()
            )
            .await
        ),
        bad_request("invalid_grant"),
        "redirect_uri mismatch"
    );
    // A code presented with a wrong redirect_uri or verifier is burnt
    // (RFC 9700 §2.1.1): the right ones afterwards do not revive it.
    assert_eq!(
        error_of(
            exchange(
                confidential.client_id.clone(),
                Some(secret.clone()),
                code.clone(),
                REDIRECT,
                verifier.clone()
            )
            .await
        ),
        bad_request("invalid_grant"),
        "a code burnt by a redirect_uri mismatch"
    );
    let (code, verifier) = h.code_for(&ada, &confidential, "issues:read", "acme").await;
    let (wrong_verifier, _) = pkce_pair();
    assert_eq!(
        error_of(
            exchange(
                confidential.client_id.clone(),
                Some(secret.clone()),
                code.clone(),
                REDIRECT,
                wrong_verifier
            )
            .await
        ),
        bad_request("invalid_grant")
    );
    assert_eq!(
        error_of(
            exchange(
                confidential.client_id.clone(),
                Some(secret.clone()),
                code.clone(),
                REDIRECT,
                verifier.clone()
            )
            .await
        ),
        bad_request("invalid_grant"),
        "one guess at the verifier: the code is burnt"
    );
    let (code, verifier) = h.code_for(&ada, &confidential, "issues:read", "acme").await;
    assert_eq!(
        error_of(
            exchange(
                confidential.client_id.clone(),
                Some(secret.clone()),
                code.clone(),
                REDIRECT,
                String::new()
            )
            .await
        ),
        bad_request("invalid_request")
    );
    assert_eq!(
        error_of(
            exchange(
                public.client_id.clone(),
                None,
                code.clone(),
                REDIRECT,
                verifier.clone()
            )
            .await
        ),
        bad_request("invalid_grant"),
        "another client's code"
    );
    assert_eq!(
        error_of(
            exchange(
                public.client_id.clone(),
                Some("vels_x".into()),
                code.clone(),
                REDIRECT,
                verifier.clone()
            )
            .await
        ),
        (StatusCode::UNAUTHORIZED, "invalid_client".into())
    );

    // HTTP Basic works; then the code is spent, and reusing it revokes its tokens.
    let response = http()
        .post(format!("{}/api/oauth/token", h.http))
        .basic_auth(&confidential.client_id, Some(&secret))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &verifier),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: serde_json::Value = response.json().await.unwrap();
    let access = body["access_token"].as_str().unwrap().to_owned();
    assert!(h.authenticate(&access, "", &[]).await.is_ok());
    assert_eq!(
        error_of(
            exchange(
                confidential.client_id.clone(),
                Some(secret.clone()),
                code.clone(),
                REDIRECT,
                verifier.clone()
            )
            .await
        ),
        bad_request("invalid_grant")
    );
    assert_refused(
        h.authenticate(&access, "", &[]).await,
        Code::Unauthenticated,
        "CREDENTIAL_REVOKED",
    );

    // Codes expire after 10 minutes; access tokens after an hour.
    let (code, verifier) = h.code_for(&ada, &public, "issues:read", "acme").await;
    h.clock.advance_secs(601);
    assert_eq!(
        error_of(exchange(public.client_id.clone(), None, code, REDIRECT, verifier).await),
        bad_request("invalid_grant")
    );
    let (code, verifier) = h.code_for(&ada, &public, "issues:read", "acme").await;
    let (status, _, body) =
        exchange(public.client_id.clone(), None, code, REDIRECT, verifier).await;
    assert_eq!(status, StatusCode::OK);
    let access = body["access_token"].as_str().unwrap().to_owned();
    h.clock.advance_secs(3599);
    assert!(h.authenticate(&access, "", &[]).await.is_ok());
    h.clock.advance_secs(1);
    assert_refused(
        h.authenticate(&access, "", &[]).await,
        Code::Unauthenticated,
        "CREDENTIAL_EXPIRED",
    );
    h.stop().await;
}

async fn granted_scopes_never_exceed_the_role(backend: Backend) {
    let h = Harness::start(backend).await;
    let guest = h.member("acme", "guest").await;
    let app = h.register_app(false, SCOPES).await;
    let (code, verifier) = h
        .code_for(&guest, &app, "issues:read issues:write user:read", "acme")
        .await;
    let (status, _, body) = h
        .token(TokenBody::Json(json!({"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "client_id": app.client_id, "code_verifier": verifier})))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body["scope"], "issues:read user:read",
        "a guest cannot grant issues:write"
    );
    let access = body["access_token"].as_str().unwrap();
    assert_refused(
        h.authenticate(access, "", &["issues:write"]).await,
        Code::PermissionDenied,
        "SCOPE_MISSING",
    );

    // Picking a workspace one is not in is refused.
    h.ensure_workspace("globex").await;
    let (_, challenge) = pkce_pair();
    let session = h.session(&guest);
    let url = h.consent_url(&[
        ("client_id", &app.client_id),
        ("redirect_uri", REDIRECT),
        ("response_type", "code"),
        ("scope", "issues:read"),
        ("code_challenge", &challenge),
        ("code_challenge_method", "S256"),
    ]);
    let html = http()
        .get(&url)
        .bearer_auth(&session)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut form = parse_form(&html);
    form.fields.insert("decision".into(), "approve".into());
    form.fields.insert("workspace".into(), "globex".into());
    let response = http()
        .post(format!("{}/oauth/consent", h.http))
        .bearer_auth(&session)
        .form(&form.fields)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);

    // Removing the member cuts the app off at once.
    h.directory()
        .remove_membership(common::admin(pb::RemoveMembershipRequest {
            workspace_slug: "acme".into(),
            user_id: guest,
        }))
        .await
        .unwrap();
    assert_refused(
        h.authenticate(access, "", &[]).await,
        Code::PermissionDenied,
        "NOT_A_MEMBER",
    );
    h.stop().await;
}

/// With the refresh reuse interval off (see
/// `refresh_reuse_interval_forgives_a_client_racing_itself` for it on).
async fn concurrent_exchange_and_refresh_have_one_winner(backend: Backend) {
    let h = Harness::start_with(backend, |c| c.refresh_reuse_interval_secs = 0).await;
    let ada = h.member("acme", "owner").await;
    let app = h.register_app(false, SCOPES).await;
    let (code, verifier) = h.code_for(&ada, &app, "issues:read", "acme").await;
    let url = format!("{}/api/oauth/token", h.http);
    let race = |bodies: Vec<serde_json::Value>| {
        let url = url.clone();
        async move {
            let tasks: Vec<_> = bodies
                .into_iter()
                .map(|body| {
                    let url = url.clone();
                    tokio::spawn(async move { http().post(url).json(&body).send().await.unwrap() })
                })
                .collect();
            let mut winners = Vec::new();
            for task in tasks {
                let response = task.await.unwrap();
                if response.status() == StatusCode::OK {
                    winners.push(response.json::<serde_json::Value>().await.unwrap());
                } else {
                    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
                    let body: serde_json::Value = response.json().await.unwrap();
                    assert_eq!(body["error"], "invalid_grant");
                }
            }
            winners
        }
    };
    let exchange = json!({"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "client_id": app.client_id, "code_verifier": verifier});
    let winners = race(vec![exchange; 16]).await;
    assert_eq!(winners.len(), 1, "exactly one exchange wins");

    let (code, verifier) = h.code_for(&ada, &app, "issues:read", "acme").await;
    let (_, _, tokens) = h
        .token(TokenBody::Json(json!({"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "client_id": app.client_id, "code_verifier": verifier})))
        .await;
    let refresh = json!({"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], "client_id": app.client_id});
    let winners = race(vec![refresh; 16]).await;
    assert_eq!(winners.len(), 1, "exactly one refresh wins");
    h.stop().await;
}

/// The refresh reuse interval on (the default): a client racing itself is not
/// logged out, a replay after the interval still revokes the grant.
async fn refresh_reuse_interval_forgives_a_client_racing_itself(backend: Backend) {
    let h = Harness::start(backend).await;
    let ada = h.member("acme", "owner").await;
    let app = h.register_app(false, SCOPES).await;
    let other = h.register_app(false, SCOPES).await;
    let (code, verifier) = h.code_for(&ada, &app, "issues:read", "acme").await;
    let (status, _, first) = h
        .token(TokenBody::Json(json!({"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "client_id": app.client_id, "code_verifier": verifier})))
        .await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let refresh = |client_id: &str| {
        TokenBody::Json(
            json!({"grant_type": "refresh_token", "refresh_token": first["refresh_token"], "client_id": client_id}),
        )
    };
    let issued = |(status, _, body): (StatusCode, _, serde_json::Value)| {
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    };
    let refused = |(status, _, body): (StatusCode, _, serde_json::Value)| {
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_grant")),
            "{body}"
        );
    };

    // Two tabs refresh the same token at once: both get a pair.
    let (a, b) = tokio::join!(
        h.token(refresh(&app.client_id)),
        h.token(refresh(&app.client_id))
    );
    let (a, b) = (issued(a), issued(b));
    assert_ne!(a["refresh_token"], b["refresh_token"]);
    // A retry five seconds later is still inside the interval.
    h.clock.advance_secs(5);
    let c = issued(h.token(refresh(&app.client_id)).await);
    // Another client presenting it is refused and revokes nothing.
    refused(h.token(refresh(&other.client_id)).await);
    let family = [&first, &a, &b, &c];
    for tokens in family {
        let access = tokens["access_token"].as_str().unwrap();
        assert!(
            h.authenticate(access, "acme", &["issues:read"])
                .await
                .is_ok()
        );
    }

    // After the interval (counted from the rotation, not the last reuse),
    // the same token is a replay: every token of the grant is revoked.
    h.clock.advance_secs(REUSE_SECS - 5 + 1);
    refused(h.token(refresh(&app.client_id)).await);
    for tokens in family {
        assert_refused(
            h.authenticate(tokens["access_token"].as_str().unwrap(), "", &[])
                .await,
            Code::Unauthenticated,
            "CREDENTIAL_REVOKED",
        );
    }
    for tokens in [&a, &b, &c] {
        refused(h
            .token(TokenBody::Json(json!({"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], "client_id": app.client_id})))
            .await);
    }
    h.stop().await;
}

async fn grpc_exchange_and_refresh_share_the_implementation(backend: Backend) {
    let h = Harness::start(backend).await;
    let ada = h.member("acme", "owner").await;
    let app = h.register_app(true, SCOPES).await;
    let secret = app.secret.clone();
    let (code, verifier) = h.code_for(&ada, &app, "projects:read", "acme").await;
    let request = pb::ExchangeCodeRequest {
        code: code.clone(),
        redirect_uri: REDIRECT.into(),
        client_id: app.client_id.clone(),
        code_verifier: verifier.clone(),
        client_secret: secret.clone(),
    };
    assert_refused(
        h.auth()
            .exchange_code(pb::ExchangeCodeRequest {
                client_secret: None,
                ..request.clone()
            })
            .await,
        Code::Unauthenticated,
        "INVALID_CLIENT",
    );
    let tokens = h
        .auth()
        .exchange_code(request.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            tokens.token_type.as_str(),
            tokens.expires_in,
            tokens.scope.as_str()
        ),
        ("Bearer", 3600, "projects:read")
    );
    assert_refused(
        h.auth().exchange_code(request).await,
        Code::FailedPrecondition,
        "INVALID_GRANT",
    );

    let (code, verifier) = h.code_for(&ada, &app, "projects:read", "acme").await;
    let tokens = h
        .auth()
        .exchange_code(pb::ExchangeCodeRequest {
            code,
            redirect_uri: REDIRECT.into(),
            client_id: app.client_id.clone(),
            code_verifier: verifier,
            client_secret: secret.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let refresh = pb::RefreshTokenRequest {
        refresh_token: tokens.refresh_token.clone(),
        client_id: app.client_id.clone(),
        client_secret: secret,
    };
    let rotated = h
        .auth()
        .refresh_token(refresh.clone())
        .await
        .unwrap()
        .into_inner();
    assert!(
        h.authenticate(&rotated.access_token, "acme", &["projects:read"])
            .await
            .is_ok()
    );
    h.clock.advance_secs(REUSE_SECS + 1);
    assert_refused(
        h.auth().refresh_token(refresh).await,
        Code::FailedPrecondition,
        "INVALID_GRANT",
    );
    assert_refused(
        h.authenticate(&rotated.access_token, "", &[]).await,
        Code::Unauthenticated,
        "CREDENTIAL_REVOKED",
    );
    h.stop().await;
}

async fn revocation_and_introspection(backend: Backend) {
    let h = Harness::start(backend).await;
    let ada = h.member("acme", "owner").await;
    let app = h.register_app(true, SCOPES).await;
    let public = h.register_app(false, SCOPES).await;
    let secret = app.secret.clone().unwrap();
    let (code, verifier) = h.code_for(&ada, &app, "issues:read", "acme").await;
    let response = http()
        .post(format!("{}/api/oauth/token", h.http))
        .basic_auth(&app.client_id, Some(&secret))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &verifier),
        ])
        .send()
        .await
        .unwrap();
    let tokens: serde_json::Value = response.json().await.unwrap();
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();

    let introspect =
        |token: String, auth: Option<(String, Option<String>)>, bearer: Option<&'static str>| {
            let mut request = http()
                .post(format!("{}/api/oauth/introspect", h.http))
                .form(&[("token", token)]);
            if let Some((id, secret)) = auth {
                request = request.basic_auth(id, secret);
            }
            if let Some(token) = bearer {
                request = request.bearer_auth(token);
            }
            async move {
                let response = request.send().await.unwrap();
                (
                    response.status(),
                    response
                        .json::<serde_json::Value>()
                        .await
                        .unwrap_or_default(),
                )
            }
        };
    let (status, body) = introspect(
        access.clone(),
        Some((app.client_id.clone(), Some(secret.clone()))),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (
            body["active"].as_bool(),
            body["sub"].as_str(),
            body["scope"].as_str()
        ),
        (Some(true), Some(ada.as_str()), Some("issues:read"))
    );
    assert_eq!(body["client_id"], app.client_id);
    let (_, body) = introspect(access.clone(), None, Some(common::ADMIN_TOKEN)).await;
    assert_eq!(body["active"], true, "internal callers use the admin token");
    let response = http()
        .post(format!("{}/api/oauth/introspect", h.http))
        .header(AUTHORIZATION, format!("BEARER\t{}", common::ADMIN_TOKEN))
        .form(&[("token", access.clone())])
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["active"], true, "the header parser is the gRPC one");
    let (status, _) = introspect(access.clone(), None, Some("not-the-admin-token")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) =
        introspect(access.clone(), Some((public.client_id.clone(), None)), None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_client")),
        "public clients may not introspect"
    );
    let (_, body) = introspect(
        "velo_garbage".into(),
        Some((app.client_id.clone(), Some(secret.clone()))),
        None,
    )
    .await;
    assert_eq!(body, json!({"active": false}));

    // RFC 7009: revoking the access token; unknown tokens are fine.
    let revoke = |token: String| {
        http()
            .post(format!("{}/api/oauth/revoke", h.http))
            .basic_auth(&app.client_id, Some(&secret))
            .form(&[("token", token)])
            .send()
    };
    assert_eq!(
        revoke(access.clone()).await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        revoke("not-a-token".into()).await.unwrap().status(),
        StatusCode::OK
    );
    let (_, body) = introspect(
        access.clone(),
        Some((app.client_id.clone(), Some(secret.clone()))),
        None,
    )
    .await;
    assert_eq!(body["active"], false);
    assert_refused(
        h.authenticate(&access, "", &[]).await,
        Code::Unauthenticated,
        "CREDENTIAL_REVOKED",
    );
    // Revoking the refresh token ends the grant.
    assert_eq!(
        revoke(refresh.clone()).await.unwrap().status(),
        StatusCode::OK
    );
    let (status, _, body) = h
        .token(TokenBody::Form(vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
            ("client_id", &app.client_id),
            ("client_secret", &secret),
        ]))
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    h.stop().await;
}

async fn app_secret_rotation_and_deletion(backend: Backend) {
    let h = Harness::start(backend).await;
    let ada = h.member("acme", "owner").await;
    let app = h.register_app(true, SCOPES).await;
    let old_secret = app.secret.clone().unwrap();
    let mut apps = pb::o_auth_app_service_client::OAuthAppServiceClient::new(h.channel.clone());
    let listed = apps
        .list_apps(common::admin(pb::ListAppsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert!(
        listed.apps.iter().any(|a| a.client_id == app.client_id
            && a.client_type == pb::ClientType::Confidential as i32)
    );
    assert!(
        !format!("{listed:?}").contains(&old_secret[5..]),
        "listings never show secrets"
    );
    assert_refused(
        apps.list_apps(pb::ListAppsRequest::default()).await,
        Code::Unauthenticated,
        "CREDENTIAL_MISSING",
    );

    let (code, verifier) = h.code_for(&ada, &app, "issues:read", "acme").await;
    let new_secret = apps
        .rotate_app_secret(common::admin(pb::RotateAppSecretRequest {
            client_id: app.client_id.clone(),
            overlap_seconds: 0,
        }))
        .await
        .unwrap()
        .into_inner()
        .client_secret;
    assert!(new_secret.starts_with("vels_") && new_secret != old_secret);
    let exchange = |secret: &str| {
        h.token(TokenBody::Json(
            json!({"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
            "client_id": app.client_id, "client_secret": secret, "code_verifier": verifier}),
        ))
    };
    let (status, _, body) = exchange(&old_secret).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_client"))
    );
    let (status, _, body) = exchange(&new_secret).await;
    assert_eq!(status, StatusCode::OK);
    let access = body["access_token"].as_str().unwrap().to_owned();
    assert!(h.authenticate(&access, "", &[]).await.is_ok());

    apps.delete_app(common::admin(pb::DeleteAppRequest {
        client_id: app.client_id.clone(),
    }))
    .await
    .unwrap();
    assert_refused(
        h.authenticate(&access, "", &[]).await,
        Code::Unauthenticated,
        "CREDENTIAL_UNKNOWN",
    );
    assert_refused(
        apps.delete_app(common::admin(pb::DeleteAppRequest {
            client_id: app.client_id.clone(),
        }))
        .await,
        Code::NotFound,
        "NOT_FOUND",
    );
    let (status, _, _) = exchange(&new_secret).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a deleted app is an unknown client"
    );
    h.stop().await;
}

/// A client library nobody here wrote: the `oauth2` crate, for a public and
/// a confidential client (it sends form-encoded bodies, secrets by Basic).
async fn oauth2_crate_drives_the_flow(backend: Backend) {
    use oauth2::basic::BasicClient;
    use oauth2::{
        AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, PkceCodeChallenge,
        RedirectUrl, RefreshToken, Scope, TokenResponse, TokenUrl,
    };

    let h = Harness::start(backend).await;
    let ada = h.member("acme", "admin").await;
    let session = h.session(&ada);
    let http_client = http();
    for confidential in [false, true] {
        let app = h.register_app(confidential, SCOPES).await;
        let mut client = BasicClient::new(ClientId::new(app.client_id.clone()))
            .set_auth_uri(AuthUrl::new(format!("{}/oauth/consent", h.http)).unwrap())
            .set_token_uri(TokenUrl::new(format!("{}/api/oauth/token", h.http)).unwrap())
            .set_redirect_uri(RedirectUrl::new(REDIRECT.into()).unwrap());
        if let Some(secret) = &app.secret {
            client = client.set_client_secret(ClientSecret::new(secret.clone()));
        }
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (auth_url, csrf_state) = client
            .authorize_url(CsrfToken::new_random)
            .add_scope(Scope::new("issues:read".into()))
            .add_scope(Scope::new("projects:read".into()))
            .set_pkce_challenge(challenge)
            .url();

        // The browser part: load the page the library built, approve.
        let html = http_client
            .get(auth_url.as_str())
            .header(COOKIE, format!("sb-access-token={session}"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let mut form = parse_form(&html);
        form.fields.insert("decision".into(), "approve".into());
        form.fields.insert("workspace".into(), "acme".into());
        let response = http_client
            .post(format!("{}{}", h.http, form.action))
            .header(COOKIE, format!("sb-access-token={session}"))
            .form(&form.fields)
            .send()
            .await
            .unwrap();
        let query = query_of(response.headers()[LOCATION].to_str().unwrap());
        assert_eq!(&query["state"], csrf_state.secret());

        let tokens = client
            .exchange_code(AuthorizationCode::new(query["code"].clone()))
            .set_pkce_verifier(verifier)
            .request_async(&http_client)
            .await
            .unwrap_or_else(|e| panic!("exchange (confidential={confidential}): {e:?}"));
        assert_eq!(
            tokens.expires_in(),
            Some(std::time::Duration::from_secs(3600))
        );
        let scopes: Vec<_> = tokens
            .scopes()
            .unwrap()
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(scopes, ["issues:read", "projects:read"]);
        let p = h
            .authenticate(tokens.access_token().secret(), "", &["projects:read"])
            .await
            .unwrap();
        assert_eq!(p.client_id, app.client_id);

        let refreshed = client
            .exchange_refresh_token(&RefreshToken::new(
                tokens.refresh_token().unwrap().secret().clone(),
            ))
            .request_async(&http_client)
            .await
            .unwrap();
        assert!(
            h.authenticate(refreshed.access_token().secret(), "acme", &[])
                .await
                .is_ok()
        );
        h.clock.advance_secs(REUSE_SECS + 1);
        let replay = client
            .exchange_refresh_token(&RefreshToken::new(
                tokens.refresh_token().unwrap().secret().clone(),
            ))
            .request_async(&http_client)
            .await;
        match replay {
            Err(oauth2::RequestTokenError::ServerResponse(e)) => {
                assert_eq!(
                    *e.error(),
                    oauth2::basic::BasicErrorResponseType::InvalidGrant
                );
            }
            other => panic!("replay should be invalid_grant: {other:?}"),
        }
    }
    h.stop().await;
}

/// A replica keeps the codes and refresh tokens it issued, so that their
/// use needs no read first. Storage still decides: a grant spent through
/// another replica (here, the store written to directly, behind this
/// replica's back) is a replay here too, although this replica's copy says
/// unspent, and revokes what was issued from it.
async fn grants_spent_elsewhere_are_replays_here(backend: Backend) {
    use velocity_domain::Secret;
    use velocity_domain::clock::Clock;
    use velocity_domain::stats::CacheKind;

    let h = Harness::start_with(backend, |c| c.refresh_reuse_interval_secs = 0).await;
    let ada = h.member("acme", "owner").await;
    let app = h.register_app(false, SCOPES).await;
    let elsewhere = h.server().database.store();
    let stats = h.server().service.stats().clone();
    let grant_hits = || stats.cache.hits(CacheKind::Grant);
    let exchange = |code: &str, verifier: &str| {
        TokenBody::Json(
            json!({"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "client_id": app.client_id, "code_verifier": verifier}),
        )
    };
    let refused = |(status, _, body): (StatusCode, _, serde_json::Value)| {
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_grant")),
            "{body}"
        );
    };
    let hash = |secret: &str| Secret::parse(secret).unwrap().hash();
    let now = h.clock.now();

    // A code, spent elsewhere: refused, though found here as issued.
    let (code, verifier) = h.code_for(&ada, &app, "issues:read", "acme").await;
    assert!(elsewhere.redeem_code(&hash(&code), now, &[]).await.unwrap());
    let hits = grant_hits();
    refused(h.token(exchange(&code, &verifier)).await);
    assert_eq!(grant_hits(), hits + 1, "the code was this replica's copy");

    // A refresh token, rotated elsewhere: a replay, which revokes the
    // grant's access token too.
    let (code, verifier) = h.code_for(&ada, &app, "issues:read", "acme").await;
    let (status, _, first) = h.token(exchange(&code, &verifier)).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let refresh_token = first["refresh_token"].as_str().unwrap();
    let stored = elsewhere
        .token_by_hash(&hash(refresh_token))
        .await
        .unwrap()
        .unwrap();
    assert!(
        elsewhere
            .rotate_refresh_token(&stored.id, now, None, &[])
            .await
            .unwrap()
    );
    let hits = grant_hits();
    refused(
        h.token(TokenBody::Json(json!({"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": app.client_id})))
            .await,
    );
    assert_eq!(
        grant_hits(),
        hits + 1,
        "the refresh token was this replica's copy"
    );
    assert_refused(
        h.authenticate(first["access_token"].as_str().unwrap(), "", &[])
            .await,
        Code::Unauthenticated,
        "CREDENTIAL_REVOKED",
    );

    // Revoked here, the grant's latest refresh token reads as revoked at
    // once, not as this replica's unspent copy.
    let (code, verifier) = h.code_for(&ada, &app, "issues:read", "acme").await;
    let (_, _, first) = h.token(exchange(&code, &verifier)).await;
    let refresh = |token: &serde_json::Value| {
        TokenBody::Json(
            json!({"grant_type": "refresh_token", "refresh_token": token["refresh_token"], "client_id": app.client_id}),
        )
    };
    let (status, _, latest) = h.token(refresh(&first)).await;
    assert_eq!(status, StatusCode::OK, "{latest}");
    let revoked = http()
        .post(format!("{}/api/oauth/revoke", h.http))
        .form(&[
            ("token", first["refresh_token"].as_str().unwrap()),
            ("client_id", app.client_id.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), StatusCode::OK);
    let (status, _, body) = h.token(refresh(&latest)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(
        body["error_description"], "the refresh token has been revoked",
        "{body}"
    );

    // Unspent, the copy serves the next refresh, and the chain goes on.
    let (code, verifier) = h.code_for(&ada, &app, "issues:read", "acme").await;
    let (_, _, tokens) = h.token(exchange(&code, &verifier)).await;
    let mut refresh_token = tokens["refresh_token"].as_str().unwrap().to_owned();
    for _ in 0..3 {
        let hits = grant_hits();
        let (status, _, next) = h
            .token(TokenBody::Json(json!({"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": app.client_id})))
            .await;
        assert_eq!(status, StatusCode::OK, "{next}");
        assert_eq!(grant_hits(), hits + 1);
        refresh_token = next["refresh_token"].as_str().unwrap().to_owned();
    }
    h.stop().await;
}

/// A code minted by another replica (here, stored directly, behind this
/// replica's back) is spent as presented, without a read first. What
/// the read-then-claim path refuses is refused the same way: a wrong
/// verifier or redirect URI burns the code, another client's attempt does
/// not, and a second exchange is a replay that revokes what the first got.
async fn codes_issued_elsewhere_are_exchanged_here(backend: Backend) {
    use velocity_domain::Secret;
    use velocity_domain::credential::CredentialKind;
    use velocity_domain::oauth::FamilyId;
    use velocity_domain::stats::CacheKind;

    let h = Harness::start(backend).await;
    let ada = h.member("acme", "owner").await;
    let app = h.register_app(false, SCOPES).await;
    let other = h.register_app(false, SCOPES).await;
    let elsewhere = h.server().database.store();
    let stats = h.server().service.stats().clone();
    let grant_misses = || stats.cache.misses(CacheKind::Grant);
    let (code, verifier) = h.code_for(&ada, &app, "issues:read", "acme").await;
    let template = elsewhere
        .code_by_hash(&Secret::parse(&code).unwrap().hash())
        .await
        .unwrap()
        .unwrap();
    let issued_elsewhere = async || {
        let secret = Secret::generate(CredentialKind::AuthorizationCode);
        let mut code = template.clone();
        code.hash = secret.hash();
        code.family_id = FamilyId::generate();
        elsewhere.insert_code(&code).await.unwrap();
        secret.expose().to_owned()
    };
    let exchange = |code: &str, client_id: &str, redirect_uri: &str, verifier: &str| {
        TokenBody::Json(
            json!({"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri, "client_id": client_id, "code_verifier": verifier}),
        )
    };
    let refused = |(status, _, body): (StatusCode, _, serde_json::Value), description: &str| {
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["error"], "invalid_grant", "{body}");
        assert_eq!(body["error_description"], description, "{body}");
    };

    // As presented, unread: tokens for the code's user, workspace and scopes.
    let code = issued_elsewhere().await;
    let misses = grant_misses();
    let (status, _, first) = h
        .token(exchange(&code, &app.client_id, REDIRECT, &verifier))
        .await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(grant_misses(), misses + 1, "this replica had no copy");
    assert_eq!(
        (&first["scope"], &first["workspace_slug"]),
        (&json!("issues:read"), &json!("acme"))
    );
    let access_token = first["access_token"].as_str().unwrap();
    let principal = h.authenticate(access_token, "", &[]).await.unwrap();
    assert_eq!(principal.user_id, ada);
    let (status, _, refreshed) = h
        .token(TokenBody::Json(
            json!({"grant_type": "refresh_token", "refresh_token": first["refresh_token"], "client_id": app.client_id}),
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{refreshed}");

    // Once: again, a replay, which revokes what the first exchange got.
    refused(
        h.token(exchange(&code, &app.client_id, REDIRECT, &verifier))
            .await,
        "the code was already used; tokens issued from it are revoked",
    );
    assert_refused(
        h.authenticate(refreshed["access_token"].as_str().unwrap(), "", &[])
            .await,
        Code::Unauthenticated,
        "CREDENTIAL_REVOKED",
    );

    // Another client's attempt is refused and leaves the code to its own.
    let code = issued_elsewhere().await;
    refused(
        h.token(exchange(&code, &other.client_id, REDIRECT, &verifier))
            .await,
        "the code was issued to another client",
    );
    let (status, _, body) = h
        .token(exchange(&code, &app.client_id, REDIRECT, &verifier))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // A wrong verifier or redirect URI burns the code.
    let (wrong_verifier, _) = pkce_pair();
    for (redirect_uri, verifier_sent, description) in [
        (
            REDIRECT,
            wrong_verifier.as_str(),
            "code_verifier does not match the code_challenge; the code is now spent",
        ),
        (
            "http://127.0.0.1:9/elsewhere",
            verifier.as_str(),
            "redirect_uri does not match the authorization request; the code is now spent",
        ),
    ] {
        let code = issued_elsewhere().await;
        refused(
            h.token(exchange(&code, &app.client_id, redirect_uri, verifier_sent))
                .await,
            description,
        );
        refused(
            h.token(exchange(&code, &app.client_id, REDIRECT, &verifier))
                .await,
            "the code was already used; tokens issued from it are revoked",
        );
    }
    h.stop().await;
}

for_each_backend!(
    browser_flow_then_refresh_rotation_and_replay,
    consent_errors_follow_rfc6749_4_1_2_1,
    token_endpoint_errors_follow_rfc6749_5_2,
    granted_scopes_never_exceed_the_role,
    concurrent_exchange_and_refresh_have_one_winner,
    refresh_reuse_interval_forgives_a_client_racing_itself,
    grpc_exchange_and_refresh_share_the_implementation,
    revocation_and_introspection,
    oauth2_crate_drives_the_flow,
    app_secret_rotation_and_deletion,
    grants_spent_elsewhere_are_replays_here,
    codes_issued_elsewhere_are_exchanged_here,
);
