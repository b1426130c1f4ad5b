//! End to end: API keys, session tokens and every resolution rule, over
//! real gRPC against a real server, on SQLite and PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Backend, Harness, assert_refused, reason};
use tonic::{Code, Request, Status};
use velocity_proto::pb;
use velocity_proto::pb::KeyKind;
use velocity_proto::pb::o_auth_app_service_client::OAuthAppServiceClient;
use velocity_testkit::{FixtureKey, SESSION_LIFETIME_SECS, bearer, supabase_claims};

async fn workspace_key_resolves_its_workspace(backend: Backend) {
    let h = Harness::start(backend).await;
    let owner = h.member("acme", "owner").await;
    h.ensure_workspace("globex").await;
    let session = h.session(&owner);
    let (key_id, secret) = h
        .create_key(
            &session,
            KeyKind::Workspace,
            "acme",
            &["issues:write", "projects:read"],
        )
        .await
        .unwrap();
    assert!(secret.starts_with("vel_"));

    let p = h.authenticate(&secret, "", &["issues:read"]).await.unwrap();
    assert_eq!(p.kind, pb::PrincipalKind::WorkspaceKey as i32);
    assert_eq!(p.workspace_slug, "acme");
    assert_eq!(p.credential_id, key_id);
    assert_eq!(p.user_id, "");
    let mut scopes = p.scopes.clone();
    scopes.sort();
    assert_eq!(scopes, ["issues:read", "issues:write", "projects:read"]);

    assert!(
        h.authenticate(&secret, "acme", &[]).await.is_ok(),
        "same slug is fine"
    );
    assert!(
        h.authenticate(&format!("Bearer {secret}"), "acme", &[])
            .await
            .is_ok()
    );
    assert_refused(
        h.authenticate(&secret, "globex", &[]).await,
        Code::PermissionDenied,
        "WORKSPACE_MISMATCH",
    );
    assert_refused(
        h.authenticate(&secret, "", &["documents:read"]).await,
        Code::PermissionDenied,
        "SCOPE_MISSING",
    );
    assert_refused(
        h.authenticate(&secret, "", &["issues:fly"]).await,
        Code::InvalidArgument,
        "SCOPE_UNKNOWN",
    );
    h.stop().await;
}

async fn bad_credentials_are_unauthenticated_with_reasons(backend: Backend) {
    let h = Harness::start(backend).await;
    let owner = h.member("acme", "owner").await;
    let (_, secret) = h
        .create_key(
            &h.session(&owner),
            KeyKind::Workspace,
            "acme",
            &["issues:read"],
        )
        .await
        .unwrap();
    // One character changed: the checksum catches it before storage.
    let mut forged = secret.clone().into_bytes();
    forged[8] = if forged[8] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    assert_refused(
        h.authenticate(&forged, "", &[]).await,
        Code::Unauthenticated,
        "CREDENTIAL_CHECKSUM_MISMATCH",
    );
    // Well formed, right checksum, never issued.
    let unknown = velocity_domain::Secret::generate(velocity_domain::CredentialKind::WorkspaceKey);
    assert_refused(
        h.authenticate(unknown.expose(), "", &[]).await,
        Code::Unauthenticated,
        "CREDENTIAL_UNKNOWN",
    );
    assert_refused(
        h.authenticate("", "", &[]).await,
        Code::Unauthenticated,
        "CREDENTIAL_MISSING",
    );
    assert_refused(
        h.authenticate("vel_short", "", &[]).await,
        Code::Unauthenticated,
        "CREDENTIAL_MALFORMED",
    );
    assert_refused(
        h.authenticate("hello world", "", &[]).await,
        Code::Unauthenticated,
        "CREDENTIAL_MALFORMED",
    );
    let huge = "a".repeat(100_000);
    assert_refused(
        h.authenticate(&huge, "", &[]).await,
        Code::Unauthenticated,
        "CREDENTIAL_MALFORMED",
    );
    let code =
        velocity_domain::Secret::generate(velocity_domain::CredentialKind::AuthorizationCode);
    assert_refused(
        h.authenticate(code.expose(), "", &[]).await,
        Code::Unauthenticated,
        "CREDENTIAL_KIND_NOT_ACCEPTED",
    );
    h.stop().await;
}

async fn personal_keys_follow_the_users_membership(backend: Backend) {
    let h = Harness::start(backend).await;
    let ada = h.member("acme", "member").await;
    h.ensure_workspace("globex").await;
    let session = h.session(&ada);
    let (_, full) = h
        .create_key(&session, KeyKind::Personal, "", &["user:write"])
        .await
        .unwrap();
    let (_, read_only) = h
        .create_key(&session, KeyKind::Personal, "", &["user:read"])
        .await
        .unwrap();
    assert!(full.starts_with("velu_"));

    // No slug: a user-level principal with personal scopes only.
    let p = h.authenticate(&full, "", &["user:read"]).await.unwrap();
    assert_eq!(
        (p.kind, p.user_id.as_str(), p.workspace_id.as_str()),
        (pb::PrincipalKind::PersonalKey as i32, ada.as_str(), "")
    );
    assert_refused(
        h.authenticate(&full, "", &["issues:read"]).await,
        Code::PermissionDenied,
        "SCOPE_MISSING",
    );

    // With a slug: the member role's workspace scopes.
    let p = h
        .authenticate(&full, "acme", &["issues:write"])
        .await
        .unwrap();
    assert_eq!(
        (p.workspace_slug.as_str(), p.role.as_str()),
        ("acme", "member")
    );
    assert!(!p.scopes.contains(&"workspace:admin".to_owned()));
    assert_refused(
        h.authenticate(&full, "acme", &["workspace:admin"]).await,
        Code::PermissionDenied,
        "SCOPE_MISSING",
    );

    // A read-only key only gets the role's read scopes.
    assert!(
        h.authenticate(&read_only, "acme", &["issues:read"])
            .await
            .is_ok()
    );
    assert_refused(
        h.authenticate(&read_only, "acme", &["issues:write"]).await,
        Code::PermissionDenied,
        "SCOPE_MISSING",
    );

    // Not a member there, or no such workspace: the same refusal.
    assert_refused(
        h.authenticate(&full, "globex", &[]).await,
        Code::PermissionDenied,
        "NOT_A_MEMBER",
    );
    assert_refused(
        h.authenticate(&full, "nowhere", &[]).await,
        Code::PermissionDenied,
        "NOT_A_MEMBER",
    );

    // Membership changes apply at once.
    h.directory()
        .set_membership(common::admin(pb::SetMembershipRequest {
            workspace_slug: "acme".into(),
            user_id: ada.clone(),
            role: "guest".into(),
        }))
        .await
        .unwrap();
    assert_refused(
        h.authenticate(&full, "acme", &["issues:write"]).await,
        Code::PermissionDenied,
        "SCOPE_MISSING",
    );
    h.directory()
        .remove_membership(common::admin(pb::RemoveMembershipRequest {
            workspace_slug: "acme".into(),
            user_id: ada.clone(),
        }))
        .await
        .unwrap();
    assert_refused(
        h.authenticate(&full, "acme", &[]).await,
        Code::PermissionDenied,
        "NOT_A_MEMBER",
    );
    h.stop().await;
}

async fn sessions_resolve_per_contract(backend: Backend) {
    let h = Harness::start(backend).await;
    let ada = h.member("acme", "admin").await;
    for token in [
        h.session(&ada),
        h.es256_session(&ada),
        h.rs256_session(&ada),
    ] {
        let p = h
            .authenticate(&token, "", &["admin", "workspaces:create"])
            .await
            .unwrap();
        assert_eq!(
            (p.kind, p.user_id.as_str()),
            (pb::PrincipalKind::Session as i32, ada.as_str())
        );
        assert!(p.workspace_id.is_empty());
        let p = h
            .authenticate(&token, "acme", &["workspace:admin", "issues:write"])
            .await
            .unwrap();
        assert_eq!(p.role, "admin");
    }
    let session = h.session(&ada);
    assert_refused(
        h.authenticate(&session, "globex", &[]).await,
        Code::PermissionDenied,
        "NOT_A_MEMBER",
    );

    let refused = [
        (
            h.session_with(&ada, |c| c["role"] = "anon".into()),
            "SESSION_ANONYMOUS",
        ),
        (
            h.session_with(&ada, |c| c["aud"] = "somebody-else".into()),
            "SESSION_INVALID",
        ),
        (
            h.session_with(&ada, |c| {
                c["iss"] = "https://evil.supabase.co/auth/v1".into()
            }),
            "SESSION_INVALID",
        ),
        (
            h.session_with(&ada, |c| {
                c["exp"] = (c["iat"].as_i64().unwrap() - 120).into()
            }),
            "CREDENTIAL_EXPIRED",
        ),
        (
            h.session_with(&ada, |c| {
                c["nbf"] = (c["iat"].as_i64().unwrap() + 600).into()
            }),
            "SESSION_INVALID",
        ),
        (
            h.session_with(&ada, |c| {
                c["exp"] = c["exp"].as_i64().unwrap().to_string().into()
            }),
            "SESSION_INVALID",
        ),
        (
            h.session_with(&ada, |c| {
                c.as_object_mut().unwrap().remove("exp");
            }),
            "SESSION_INVALID",
        ),
        (alg_none(&session), "SESSION_INVALID"),
        (hs256_signed_with_public_key(&ada), "SESSION_INVALID"),
        (es256_with_unknown_kid(&h, &ada), "SESSION_INVALID"),
    ];
    for (token, why) in refused {
        assert_refused(
            h.authenticate(&token, "", &[]).await,
            Code::Unauthenticated,
            why,
        );
    }
    h.stop().await;
}

/// `alg: none` with the original claims and no signature.
fn alg_none(token: &str) -> String {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    let header =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    format!("{header}.{payload}.")
}

/// The classic confusion attack: HS256 keyed with the published public key.
fn hs256_signed_with_public_key(user: &str) -> String {
    let public = serde_json::to_vec(&FixtureKey::Es256.jwk()).unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some(FixtureKey::Es256.kid().into());
    let now = velocity_domain::Clock::now(&velocity_domain::SystemClock).as_secs();
    jsonwebtoken::encode(
        &header,
        &supabase_claims(common::ISSUER, user, now, SESSION_LIFETIME_SECS),
        &jsonwebtoken::EncodingKey::from_secret(&public).unwrap(),
    )
    .unwrap()
}

fn es256_with_unknown_kid(h: &Harness, user: &str) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some("rotated-away".into());
    jsonwebtoken::encode(&header, &h.claims(user), &FixtureKey::Es256.encoding_key()).unwrap()
}

async fn create_key_enforces_roles_and_scopes(backend: Backend) {
    let h = Harness::start(backend).await;
    let owner = h.member("acme", "owner").await;
    let member = h.member("acme", "member").await;
    let outsider = h.member("globex", "owner").await;

    assert_refused(
        h.create_key(
            &h.session(&member),
            KeyKind::Workspace,
            "acme",
            &["issues:read"],
        )
        .await,
        Code::PermissionDenied,
        "ROLE_INSUFFICIENT",
    );
    assert_refused(
        h.create_key(
            &h.session(&outsider),
            KeyKind::Workspace,
            "acme",
            &["issues:read"],
        )
        .await,
        Code::PermissionDenied,
        "NOT_A_MEMBER",
    );
    assert_refused(
        h.create_key(&h.session(&owner), KeyKind::Workspace, "acme", &["admin"])
            .await,
        Code::InvalidArgument,
        "SCOPE_WRONG_KIND",
    );
    assert_refused(
        h.create_key(&h.session(&owner), KeyKind::Personal, "", &["issues:read"])
            .await,
        Code::InvalidArgument,
        "SCOPE_WRONG_KIND",
    );
    assert_refused(
        h.create_key(&h.session(&owner), KeyKind::Workspace, "acme", &[])
            .await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_refused(
        h.create_key(
            &h.session(&owner),
            KeyKind::Unspecified,
            "acme",
            &["issues:read"],
        )
        .await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    // No caller, or a caller that is not a signed-in user.
    let anonymous = h
        .auth()
        .create_key(pb::CreateKeyRequest {
            kind: KeyKind::Personal as i32,
            name: "x".into(),
            scopes: vec!["user:read".into()],
            ..Default::default()
        })
        .await;
    assert_refused(anonymous, Code::Unauthenticated, "CREDENTIAL_MISSING");
    let (_, ws_key) = h
        .create_key(
            &h.session(&owner),
            KeyKind::Workspace,
            "acme",
            &["workspace:admin"],
        )
        .await
        .unwrap();
    assert_refused(
        h.create_key(&ws_key, KeyKind::Workspace, "acme", &["issues:read"])
            .await,
        Code::PermissionDenied,
        "CREDENTIAL_KIND_NOT_ACCEPTED",
    );
    // A personal key needs `admin` to act for its user; with it, it may.
    let (_, weak) = h
        .create_key(&h.session(&owner), KeyKind::Personal, "", &["user:write"])
        .await
        .unwrap();
    assert_refused(
        h.create_key(&weak, KeyKind::Personal, "", &["user:read"])
            .await,
        Code::PermissionDenied,
        "SCOPE_MISSING",
    );
    let (_, strong) = h
        .create_key(&h.session(&owner), KeyKind::Personal, "", &["admin"])
        .await
        .unwrap();
    let (_, made) = h
        .create_key(&strong, KeyKind::Workspace, "acme", &["issues:read"])
        .await
        .unwrap();
    assert!(h.authenticate(&made, "", &["issues:read"]).await.is_ok());
    h.stop().await;
}

async fn revocation_and_listing(backend: Backend) {
    let h = Harness::start(backend).await;
    let owner = h.member("acme", "owner").await;
    let admin = h.member("acme", "admin").await;
    let member = h.member("acme", "member").await;
    let (owner_s, admin_s, member_s) = (h.session(&owner), h.session(&admin), h.session(&member));
    let (key_id, secret) = h
        .create_key(&owner_s, KeyKind::Workspace, "acme", &["issues:read"])
        .await
        .unwrap();
    let (mine_id, mine) = h
        .create_key(&member_s, KeyKind::Personal, "", &["user:read"])
        .await
        .unwrap();

    // Listing shows display forms, never secrets.
    let listed = h
        .auth()
        .list_keys(bearer(
            &admin_s,
            pb::ListKeysRequest {
                workspace_slug: "acme".into(),
                include_revoked: false,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.keys.len(), 1);
    assert_eq!(listed.keys[0].id, key_id);
    assert!(secret.starts_with(listed.keys[0].display.split('…').next().unwrap()));
    assert!(!format!("{listed:?}").contains(&secret[8..]));
    assert_refused(
        h.auth()
            .list_keys(bearer(
                &member_s,
                pb::ListKeysRequest {
                    workspace_slug: "acme".into(),
                    include_revoked: false,
                    ..Default::default()
                },
            ))
            .await,
        Code::PermissionDenied,
        "ROLE_INSUFFICIENT",
    );
    let own = h
        .auth()
        .list_keys(bearer(&member_s, pb::ListKeysRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        own.keys.iter().map(|k| k.id.as_str()).collect::<Vec<_>>(),
        [mine_id.as_str()]
    );

    // A member may not revoke the workspace's key; its admin may.
    assert_refused(
        h.auth()
            .revoke_key(bearer(
                &member_s,
                pb::RevokeKeyRequest {
                    key_id: key_id.clone(),
                },
            ))
            .await,
        Code::PermissionDenied,
        "NOT_KEY_OWNER",
    );
    assert_refused(
        h.auth()
            .revoke_key(bearer(
                &admin_s,
                pb::RevokeKeyRequest {
                    key_id: "no-such-key".into(),
                },
            ))
            .await,
        Code::NotFound,
        "NOT_FOUND",
    );
    let revoked = h
        .auth()
        .revoke_key(bearer(
            &admin_s,
            pb::RevokeKeyRequest {
                key_id: key_id.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_refused(
        h.authenticate(&secret, "", &[]).await,
        Code::Unauthenticated,
        "CREDENTIAL_REVOKED",
    );
    let again = h
        .auth()
        .revoke_key(bearer(&owner_s, pb::RevokeKeyRequest { key_id }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        revoked.revoked_at, again.revoked_at,
        "revoking twice keeps the first time"
    );

    // The key's own user may revoke a personal key.
    h.auth()
        .revoke_key(bearer(&member_s, pb::RevokeKeyRequest { key_id: mine_id }))
        .await
        .unwrap();
    assert_refused(
        h.authenticate(&mine, "", &[]).await,
        Code::Unauthenticated,
        "CREDENTIAL_REVOKED",
    );
    h.stop().await;
}

async fn keys_expire_on_the_servers_clock(backend: Backend) {
    let h = Harness::start(backend).await;
    let owner = h.member("acme", "owner").await;
    let now = velocity_domain::Clock::now(&*h.clock);
    let response = h
        .auth()
        .create_key(bearer(
            &h.session(&owner),
            pb::CreateKeyRequest {
                kind: KeyKind::Workspace as i32,
                workspace_slug: "acme".into(),
                name: "short-lived".into(),
                scopes: vec!["issues:read".into()],
                expires_at: Some(velocity_proto::convert::timestamp(now.plus_secs(60))),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let p = h.authenticate(&response.secret, "", &[]).await.unwrap();
    assert_eq!(p.expires_at, response.key.unwrap().expires_at);
    h.clock.advance_secs(61);
    assert_refused(
        h.authenticate(&response.secret, "", &[]).await,
        Code::Unauthenticated,
        "CREDENTIAL_EXPIRED",
    );
    // An expiry in the past is refused at creation.
    let past = h
        .auth()
        .create_key(bearer(
            &h.session(&owner),
            pb::CreateKeyRequest {
                kind: KeyKind::Workspace as i32,
                workspace_slug: "acme".into(),
                name: "dead".into(),
                scopes: vec!["issues:read".into()],
                expires_at: Some(velocity_proto::convert::timestamp(now)),
            },
        ))
        .await;
    assert_refused(past, Code::InvalidArgument, "INVALID_ARGUMENT");
    h.stop().await;
}

async fn last_used_is_recorded_in_batches(backend: Backend) {
    let h = Harness::start(backend).await;
    let owner = h.member("acme", "owner").await;
    let session = h.session(&owner);
    let (_, secret) = h
        .create_key(&session, KeyKind::Workspace, "acme", &["issues:read"])
        .await
        .unwrap();
    for _ in 0..20 {
        h.authenticate(&secret, "", &[]).await.unwrap();
    }
    // The flush runs every 50 ms in tests; wait for it by polling.
    let mut seen = None;
    for _ in 0..100 {
        let keys = h
            .auth()
            .list_keys(bearer(
                &session,
                pb::ListKeysRequest {
                    workspace_slug: "acme".into(),
                    include_revoked: false,
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .keys;
        seen = keys[0].last_used_at;
        if seen.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(seen.is_some(), "last_used_at was never flushed");
    h.stop().await;
}

fn with_authorization<T>(value: Option<&str>, message: T) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(value) = value {
        request
            .metadata_mut()
            .insert("authorization", value.parse().unwrap());
    }
    request
}

/// Calls each of the DirectoryService and OAuthAppService RPCs once (all
/// but UpdateApp, which needs an app), with `authorization` metadata
/// `value` (or none).
async fn every_admin_rpc(h: &Harness, value: Option<&str>) -> Vec<(&'static str, Status)> {
    let mut dir = h.directory();
    let mut apps = OAuthAppServiceClient::new(h.channel.clone());
    let results = vec![
        (
            "CreateUser",
            dir.create_user(with_authorization(value, pb::CreateUserRequest::default()))
                .await
                .map(drop),
        ),
        (
            "CreateWorkspace",
            dir.create_workspace(with_authorization(
                value,
                pb::CreateWorkspaceRequest::default(),
            ))
            .await
            .map(drop),
        ),
        (
            "SetMembership",
            dir.set_membership(with_authorization(
                value,
                pb::SetMembershipRequest::default(),
            ))
            .await
            .map(drop),
        ),
        (
            "RemoveMembership",
            dir.remove_membership(with_authorization(
                value,
                pb::RemoveMembershipRequest::default(),
            ))
            .await
            .map(drop),
        ),
        (
            "ListMemberships",
            dir.list_memberships(with_authorization(
                value,
                pb::ListMembershipsRequest::default(),
            ))
            .await
            .map(drop),
        ),
        (
            "RegisterApp",
            apps.register_app(with_authorization(value, pb::RegisterAppRequest::default()))
                .await
                .map(drop),
        ),
        (
            "ListApps",
            apps.list_apps(with_authorization(value, pb::ListAppsRequest::default()))
                .await
                .map(drop),
        ),
        (
            "RotateAppSecret",
            apps.rotate_app_secret(with_authorization(
                value,
                pb::RotateAppSecretRequest::default(),
            ))
            .await
            .map(drop),
        ),
        (
            "DeleteApp",
            apps.delete_app(with_authorization(value, pb::DeleteAppRequest::default()))
                .await
                .map(drop),
        ),
    ];
    results
        .into_iter()
        .map(|(rpc, result)| match result {
            Err(status) => (rpc, status),
            Ok(()) => panic!("{rpc} with authorization {value:?} was served"),
        })
        .collect()
}

async fn admin_rpcs_need_the_admin_token(backend: Backend) {
    let h = Harness::start(backend).await;
    // Checked before any handler runs, whatever the request holds.
    let wrong = format!("Bearer {}x", common::ADMIN_TOKEN);
    let basic = format!("Basic {}", common::ADMIN_TOKEN);
    for value in [
        None,
        Some("Bearer not-the-token"),
        Some(wrong.as_str()),
        Some(basic.as_str()),
        Some("Bearer"),
    ] {
        let refusals = every_admin_rpc(&h, value).await;
        assert_eq!(refusals.len(), 9);
        for (rpc, status) in refusals {
            // OAuthAppService also takes a workspace admin's session, so a
            // token that is not the admin token is refused as a credential.
            let expected =
                if rpc.ends_with("App") || rpc.ends_with("Apps") || rpc.ends_with("Secret") {
                    let why = reason(&status);
                    assert!(
                        why.starts_with("CREDENTIAL_") || why.starts_with("SESSION_"),
                        "{rpc} with authorization {value:?}: {status:?}"
                    );
                    why
                } else {
                    "ADMIN_TOKEN_INVALID".to_owned()
                };
            assert_eq!(
                (status.code(), reason(&status)),
                (Code::Unauthenticated, expected),
                "{rpc} with authorization {value:?}: {status:?}"
            );
        }
    }
    // The scheme in any case, then spaces or tabs, as on HTTP; or the bare
    // token, as gRPC callers have always been allowed.
    let mut apps = OAuthAppServiceClient::new(h.channel.clone());
    for spelling in [
        format!("BEARER {}", common::ADMIN_TOKEN),
        format!("bearer\t{}", common::ADMIN_TOKEN),
        common::ADMIN_TOKEN.to_owned(),
    ] {
        apps.list_apps(with_authorization(
            Some(&spelling),
            pb::ListAppsRequest::default(),
        ))
        .await
        .unwrap();
    }

    let request = pb::CreateWorkspaceRequest {
        slug: "acme".into(),
        name: "Acme".into(),
    };
    assert_refused(
        h.directory().create_workspace(request.clone()).await,
        Code::Unauthenticated,
        "ADMIN_TOKEN_INVALID",
    );
    assert_refused(
        h.directory()
            .create_workspace(bearer("not-the-token", request.clone()))
            .await,
        Code::Unauthenticated,
        "ADMIN_TOKEN_INVALID",
    );
    h.directory()
        .create_workspace(common::admin(request.clone()))
        .await
        .unwrap();
    assert_refused(
        h.directory().create_workspace(common::admin(request)).await,
        Code::AlreadyExists,
        "ALREADY_EXISTS",
    );
    assert_refused(
        h.directory()
            .create_workspace(common::admin(pb::CreateWorkspaceRequest {
                slug: "Bad Slug".into(),
                name: String::new(),
            }))
            .await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_refused(
        h.directory()
            .set_membership(common::admin(pb::SetMembershipRequest {
                workspace_slug: "acme".into(),
                user_id: "ghost".into(),
                role: "member".into(),
            }))
            .await,
        Code::NotFound,
        "NOT_FOUND",
    );
    let id = h.member("acme", "guest").await;
    let list = h
        .directory()
        .list_memberships(common::admin(pb::ListMembershipsRequest {
            workspace_slug: String::new(),
            user_id: id.clone(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.memberships.len(), 1);
    assert_eq!(list.memberships[0].role, "guest");
    // The signed-in caller of AuthService reads the same way.
    for spelling in [
        format!("BEARER {}", h.session(&id)),
        format!("bearer\t{}", h.session(&id)),
    ] {
        h.auth()
            .list_keys(with_authorization(
                Some(&spelling),
                pb::ListKeysRequest::default(),
            ))
            .await
            .unwrap();
    }
    // An admin token is not a credential anywhere else.
    assert_refused(
        h.authenticate(common::ADMIN_TOKEN, "", &[]).await,
        Code::Unauthenticated,
        "CREDENTIAL_MALFORMED",
    );
    let _ = reason;
    h.stop().await;
}

for_each_backend!(
    workspace_key_resolves_its_workspace,
    bad_credentials_are_unauthenticated_with_reasons,
    personal_keys_follow_the_users_membership,
    sessions_resolve_per_contract,
    create_key_enforces_roles_and_scopes,
    revocation_and_listing,
    keys_expire_on_the_servers_clock,
    last_used_is_recorded_in_batches,
    admin_rpcs_need_the_admin_token,
);
