//! End to end, as Settings → OAuth Apps and Settings → Authorized apps
//! would call: a workspace's owners and admins register, list, change,
//! rotate and delete its apps over gRPC with their session or a personal
//! admin key; the docs' token requests (client_id and PKCE, no secret) work
//! for apps that do not require their secret; users and workspace admins
//! list grants and revoke them whole.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::oauth::{REDIRECT, TokenBody, http};
use common::{Backend, Harness, assert_refused};
use reqwest::StatusCode;
use reqwest::header::COOKIE;
use serde_json::json;
use tonic::Code;
use tonic::transport::Channel;
use velocity_domain::Clock;
use velocity_proto::pb;
use velocity_proto::pb::o_auth_app_service_client::OAuthAppServiceClient;
use velocity_testkit::{bearer, pkce_pair};

const SCOPES: &[&str] = &["issues:read", "issues:write", "user:read"];

fn apps(h: &Harness) -> OAuthAppServiceClient<Channel> {
    OAuthAppServiceClient::new(h.channel.clone())
}

fn new_app(slug: &str, client_type: pb::ClientType) -> pb::RegisterAppRequest {
    pb::RegisterAppRequest {
        name: "Timetracker".into(),
        client_type: client_type as i32,
        redirect_uris: vec![REDIRECT.into()],
        allowed_scopes: SCOPES.iter().map(|s| s.to_string()).collect(),
        workspace_slug: slug.into(),
    }
}

/// A code from the consent page for `app` (signed in as `user`), and the
/// docs' JSON token request for it, without a secret.
async fn docs_exchange(
    h: &Harness,
    user: &str,
    client_id: &str,
    secret: Option<&str>,
) -> (StatusCode, serde_json::Value) {
    let app = common::oauth::App {
        client_id: client_id.to_owned(),
        secret: None,
    };
    let (code, verifier) = h.code_for(user, &app, "issues:read", "acme").await;
    let mut body = json!({
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "client_id": client_id,
        "code_verifier": verifier,
    });
    if let Some(secret) = secret {
        body["client_secret"] = json!(secret);
    }
    let (status, _, json) = h.token(TokenBody::Json(body)).await;
    (status, json)
}

async fn owners_and_admins_manage_their_workspace_apps(backend: Backend) {
    let h = Harness::start(backend).await;
    let ada = h.member("acme", "owner").await;
    let admin = h.member("acme", "admin").await;
    let member = h.member("acme", "member").await;
    let outsider = h.member("globex", "owner").await;
    let ada_session = h.session(&ada);

    // Registered with a session: a client id and a secret, shown once.
    let registered = apps(&h)
        .register_app(bearer(
            &ada_session,
            new_app("acme", pb::ClientType::Unspecified),
        ))
        .await
        .unwrap()
        .into_inner();
    let app = registered.app.unwrap();
    assert!(registered.client_secret.starts_with("vels_"));
    assert_eq!(app.client_type, pb::ClientType::Public as i32);
    assert_eq!(app.created_by, ada);
    assert!(!app.workspace_id.is_empty());
    assert_eq!(app.previous_secret_expires_at, None);

    // Or with a personal key holding `admin`; not with one that lacks it,
    // nor with a workspace key, nor by members and outsiders.
    let (_, admin_key) = h
        .create_key(&h.session(&admin), pb::KeyKind::Personal, "", &["admin"])
        .await
        .unwrap();
    apps(&h)
        .register_app(bearer(
            &admin_key,
            new_app("acme", pb::ClientType::Confidential),
        ))
        .await
        .unwrap();
    let (_, read_key) = h
        .create_key(
            &h.session(&admin),
            pb::KeyKind::Personal,
            "",
            &["user:read"],
        )
        .await
        .unwrap();
    let (_, workspace_key) = h
        .create_key(
            &ada_session,
            pb::KeyKind::Workspace,
            "acme",
            &["issues:read"],
        )
        .await
        .unwrap();
    for (caller, code, why) in [
        (read_key.as_str(), Code::PermissionDenied, "SCOPE_MISSING"),
        (
            workspace_key.as_str(),
            Code::PermissionDenied,
            "CREDENTIAL_KIND_NOT_ACCEPTED",
        ),
        (
            &h.session(&member),
            Code::PermissionDenied,
            "ROLE_INSUFFICIENT",
        ),
        (
            &h.session(&outsider),
            Code::PermissionDenied,
            "NOT_A_MEMBER",
        ),
        (
            "vel_not-a-key",
            Code::Unauthenticated,
            "CREDENTIAL_MALFORMED",
        ),
    ] {
        assert_refused(
            apps(&h)
                .register_app(bearer(caller, new_app("acme", pb::ClientType::Public)))
                .await,
            code,
            why,
        );
    }
    assert_refused(
        apps(&h)
            .register_app(bearer(&ada_session, new_app("", pb::ClientType::Public)))
            .await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );

    // Listing: the workspace's apps, never a secret.
    let listed = apps(&h)
        .list_apps(bearer(
            &ada_session,
            pb::ListAppsRequest {
                workspace_slug: "acme".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.apps.len(), 2);
    assert!(!format!("{listed:?}").contains(&registered.client_secret[5..]));
    assert_refused(
        apps(&h)
            .list_apps(bearer(
                &h.session(&member),
                pb::ListAppsRequest {
                    workspace_slug: "acme".into(),
                    ..Default::default()
                },
            ))
            .await,
        Code::PermissionDenied,
        "ROLE_INSUFFICIENT",
    );
    // The operator sees every app, and can narrow to a workspace.
    let operator_app = h.register_app(false, SCOPES).await;
    let all = apps(&h)
        .list_apps(common::admin(pb::ListAppsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.apps.len(), 3);

    // Changes: name, redirect URIs, scopes, client type.
    let updated = apps(&h)
        .update_app(bearer(
            &ada_session,
            pb::UpdateAppRequest {
                client_id: app.client_id.clone(),
                name: Some("Timetracker 2".into()),
                redirect_uris: vec![REDIRECT.into(), "https://tt.example.com/cb".into()],
                allowed_scopes: vec!["issues:read".into()],
                client_type: pb::ClientType::Unspecified as i32,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.name, "Timetracker 2");
    assert_eq!(updated.redirect_uris.len(), 2);
    assert_eq!(updated.allowed_scopes, vec!["issues:read".to_owned()]);
    assert_eq!(updated.client_type, pb::ClientType::Public as i32);
    assert_refused(
        apps(&h)
            .update_app(bearer(
                &ada_session,
                pb::UpdateAppRequest {
                    client_id: app.client_id.clone(),
                    redirect_uris: vec!["http://evil.example.com/cb".into()],
                    ..Default::default()
                },
            ))
            .await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );

    // Another workspace's owner, and members on the operator's apps: refused.
    for client_id in [&app.client_id, &operator_app.client_id] {
        assert_refused(
            apps(&h)
                .delete_app(bearer(
                    &h.session(&outsider),
                    pb::DeleteAppRequest {
                        client_id: client_id.clone(),
                    },
                ))
                .await,
            Code::PermissionDenied,
            "NOT_APP_MANAGER",
        );
    }
    assert_refused(
        apps(&h)
            .rotate_app_secret(bearer(
                &h.session(&member),
                pb::RotateAppSecretRequest {
                    client_id: app.client_id.clone(),
                    overlap_seconds: 0,
                },
            ))
            .await,
        Code::PermissionDenied,
        "NOT_APP_MANAGER",
    );

    // The consent page names who registered it.
    let (_, challenge) = pkce_pair();
    let page = http()
        .get(h.consent_url(&[
            ("client_id", app.client_id.as_str()),
            ("redirect_uri", REDIRECT),
            ("response_type", "code"),
            ("scope", "issues:read"),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ]))
        .header(COOKIE, format!("sb-access-token={ada_session}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("Timetracker 2 is registered by the acme workspace."),
        "{page}"
    );

    // Deleted by an admin of the workspace: gone, with its tokens.
    let (status, tokens) = docs_exchange(&h, &ada, &app.client_id, None).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    apps(&h)
        .delete_app(bearer(
            &admin_key,
            pb::DeleteAppRequest {
                client_id: app.client_id.clone(),
            },
        ))
        .await
        .unwrap();
    assert_refused(
        h.authenticate(&access, "", &[]).await,
        Code::Unauthenticated,
        "CREDENTIAL_UNKNOWN",
    );
    h.stop().await;
}

async fn the_docs_token_requests_work_and_secrets_rotate_with_overlap(backend: Backend) {
    let h = Harness::start(backend).await;
    let ada = h.member("acme", "owner").await;
    let session = h.session(&ada);
    let registered = apps(&h)
        .register_app(bearer(&session, new_app("acme", pb::ClientType::Public)))
        .await
        .unwrap()
        .into_inner();
    let client_id = registered.app.unwrap().client_id;
    let first = registered.client_secret;

    // The docs' body: client_id, no secret, PKCE. A secret, when sent,
    // must be right.
    let (status, body) = docs_exchange(&h, &ada, &client_id, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["workspace_slug"], "acme");
    let (status, body) = docs_exchange(&h, &ada, &client_id, Some(&first)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = docs_exchange(&h, &ada, &client_id, Some("vels_wrong")).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_client"))
    );

    // Server-side: required from now on.
    apps(&h)
        .update_app(bearer(
            &session,
            pb::UpdateAppRequest {
                client_id: client_id.clone(),
                client_type: pb::ClientType::Confidential as i32,
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    let (status, body) = docs_exchange(&h, &ada, &client_id, None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_client"))
    );
    let (status, _) = docs_exchange(&h, &ada, &client_id, Some(&first)).await;
    assert_eq!(status, StatusCode::OK);

    // Rotation with an hour's overlap: both work until it ends.
    let rotated = apps(&h)
        .rotate_app_secret(bearer(
            &session,
            pb::RotateAppSecretRequest {
                client_id: client_id.clone(),
                overlap_seconds: 3600,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let second = rotated.client_secret;
    assert!(second.starts_with("vels_") && second != first);
    let until = rotated.previous_secret_expires_at.unwrap();
    assert_eq!(
        until.seconds,
        h.clock.now().as_secs() + 3600,
        "the overlap ends an hour from now"
    );
    for secret in [&first, &second] {
        let (status, body) = docs_exchange(&h, &ada, &client_id, Some(secret)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    h.clock.advance_secs(3600);
    let (status, _) = docs_exchange(&h, &ada, &client_id, Some(&first)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the overlap is over");
    let (status, _) = docs_exchange(&h, &ada, &client_id, Some(&second)).await;
    assert_eq!(status, StatusCode::OK);

    // Without overlap the replaced secret stops at once; overlaps are bounded.
    let third = apps(&h)
        .rotate_app_secret(bearer(
            &session,
            pb::RotateAppSecretRequest {
                client_id: client_id.clone(),
                overlap_seconds: 0,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(third.previous_secret_expires_at, None);
    let (status, _) = docs_exchange(&h, &ada, &client_id, Some(&second)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = docs_exchange(&h, &ada, &client_id, Some(&third.client_secret)).await;
    assert_eq!(status, StatusCode::OK);
    assert_refused(
        apps(&h)
            .rotate_app_secret(bearer(
                &session,
                pb::RotateAppSecretRequest {
                    client_id,
                    overlap_seconds: 7 * 24 * 3600 + 1,
                },
            ))
            .await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    h.stop().await;
}

async fn list_grants(
    h: &Harness,
    caller: &str,
    slug: &str,
) -> Result<Vec<pb::Grant>, tonic::Status> {
    h.auth()
        .list_grants(bearer(
            caller,
            pb::ListGrantsRequest {
                workspace_slug: slug.into(),
                ..Default::default()
            },
        ))
        .await
        .map(|r| r.into_inner().grants)
}

async fn users_and_workspace_admins_list_and_revoke_grants(backend: Backend) {
    let h = Harness::start(backend).await;
    let ada = h.member("acme", "member").await;
    let admin = h.member("acme", "admin").await;
    let outsider = h.member("globex", "owner").await;
    let app = h.register_app(false, SCOPES).await;
    let exchange = async |user: &str| {
        let (code, verifier) = h
            .code_for(user, &app, "issues:read user:read", "acme")
            .await;
        let (status, _, body) = h
            .token(TokenBody::Json(json!({
                "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
                "client_id": app.client_id, "code_verifier": verifier,
            })))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    };
    let granted_at = h.clock.now().as_secs();
    let tokens = exchange(&ada).await;
    h.clock.advance_secs(60);
    let admins_own = exchange(&admin).await;

    // Ada sees her grant: the app, the workspace, the scopes, when.
    let grants = list_grants(&h, &h.session(&ada), "").await.unwrap();
    assert_eq!(grants.len(), 1);
    let grant = &grants[0];
    assert_eq!(grant.client_id, app.client_id);
    assert_eq!(grant.app_name, "Timetracker <Pro>");
    assert_eq!(grant.user_id, ada);
    assert_eq!(grant.workspace_slug, "acme");
    assert_eq!(grant.scopes, vec!["issues:read", "user:read"]);
    assert_eq!(grant.granted_at.unwrap().seconds, granted_at);
    assert_eq!(grant.last_used_at.unwrap().seconds, granted_at);

    // A refresh is a use.
    h.clock.advance_secs(60);
    let (status, _, refreshed) = h
        .token(TokenBody::Json(json!({
            "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"],
            "client_id": app.client_id,
        })))
        .await;
    assert_eq!(status, StatusCode::OK, "{refreshed}");
    let grants = list_grants(&h, &h.session(&ada), "").await.unwrap();
    assert_eq!(grants[0].granted_at.unwrap().seconds, granted_at);
    assert_eq!(
        grants[0].last_used_at.unwrap().seconds,
        h.clock.now().as_secs()
    );

    // The workspace's admins see every member's grants there; members and
    // outsiders do not.
    let workspace = list_grants(&h, &h.session(&admin), "acme").await.unwrap();
    assert_eq!(
        workspace
            .iter()
            .map(|g| g.user_id.as_str())
            .collect::<Vec<_>>(),
        vec![admin.as_str(), ada.as_str()],
        "newest first"
    );
    assert_refused(
        list_grants(&h, &h.session(&ada), "acme").await,
        Code::PermissionDenied,
        "ROLE_INSUFFICIENT",
    );
    assert_refused(
        list_grants(&h, &h.session(&outsider), "acme").await,
        Code::PermissionDenied,
        "NOT_A_MEMBER",
    );

    // Only its user or the workspace's admins revoke it.
    let revoke = async |caller: &str, grant_id: &str| {
        h.auth()
            .revoke_grant(bearer(
                caller,
                pb::RevokeGrantRequest {
                    grant_id: grant_id.into(),
                },
            ))
            .await
            .map(|r| r.into_inner().revoked_at.unwrap())
    };
    assert_refused(
        revoke(&h.session(&outsider), &grant.id).await,
        Code::PermissionDenied,
        "NOT_GRANT_HOLDER",
    );
    assert_refused(
        revoke(&h.session(&ada), "no-such-grant").await,
        Code::NotFound,
        "NOT_FOUND",
    );
    let access = refreshed["access_token"].as_str().unwrap();
    assert!(h.authenticate(access, "", &[]).await.is_ok());
    let revoked_at = revoke(&h.session(&ada), &grant.id).await.unwrap();
    // Every token of the grant at once: the access token, the refresh token.
    assert_refused(
        h.authenticate(access, "", &[]).await,
        Code::Unauthenticated,
        "CREDENTIAL_REVOKED",
    );
    let (status, _, body) = h
        .token(TokenBody::Json(json!({
            "grant_type": "refresh_token", "refresh_token": refreshed["refresh_token"],
            "client_id": app.client_id,
        })))
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    assert!(
        list_grants(&h, &h.session(&ada), "")
            .await
            .unwrap()
            .is_empty()
    );
    h.clock.advance_secs(5);
    assert_eq!(
        revoke(&h.session(&ada), &grant.id).await.unwrap(),
        revoked_at,
        "revoking twice answers the first time"
    );

    // An admin revokes a member's grant in the workspace.
    let again = exchange(&ada).await;
    let in_acme = list_grants(&h, &h.session(&admin), "acme").await.unwrap();
    let adas = in_acme.iter().find(|g| g.user_id == ada).unwrap();
    revoke(&h.session(&admin), &adas.id).await.unwrap();
    assert_refused(
        h.authenticate(again["access_token"].as_str().unwrap(), "", &[])
            .await,
        Code::Unauthenticated,
        "CREDENTIAL_REVOKED",
    );
    let left = list_grants(&h, &h.session(&admin), "acme").await.unwrap();
    assert_eq!(
        left.iter().map(|g| g.user_id.as_str()).collect::<Vec<_>>(),
        vec![admin.as_str()]
    );
    assert!(
        h.authenticate(admins_own["access_token"].as_str().unwrap(), "", &[])
            .await
            .is_ok()
    );
    h.stop().await;
}

for_each_backend!(
    owners_and_admins_manage_their_workspace_apps,
    the_docs_token_requests_work_and_secrets_rotate_with_overlap,
    users_and_workspace_admins_list_and_revoke_grants,
);
