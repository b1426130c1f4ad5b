//! What the token endpoint and introspection read through the verification
//! cache — access tokens, memberships, apps — and that a change is seen as
//! soon as Authenticate sees it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use support::{REDIRECT_URI, VERIFIER, World};
use velocity_domain::error::ErrorClass;
use velocity_domain::oauth::ClientType;
use velocity_domain::service::{AppChanges, AppManager, ClientAuth, IssuedTokens};

async fn grant(world: &World) -> (velocity_domain::oauth::OAuthApp, ClientAuth, IssuedTokens) {
    let (app, client) = world.app(ClientType::Confidential).await;
    let code = world.code_for(&app, &world.owner, "issues:read").await;
    let tokens = world
        .service
        .exchange_code(&client, &code, REDIRECT_URI, VERIFIER)
        .await
        .unwrap();
    (app, client, tokens)
}

#[tokio::test]
async fn introspection_answers_from_the_cache_authenticate_fills() {
    let world = World::new().await;
    let (app, _, tokens) = grant(&world).await;
    let access = tokens.access_token.expose();
    world.service.authenticate(access, None, &[]).await.unwrap();
    let warm = world.service.storage_lookups();
    for _ in 0..5 {
        let seen = world.service.introspect(Some(&app), access).await.unwrap();
        assert!(seen.active);
        let token = seen.token.unwrap();
        assert_eq!(token.user_id, world.owner.id);
        assert_eq!(token.workspace_id, world.acme.id);
        assert_eq!(token.scopes.to_space_separated(), "issues:read");
        assert!(token.created_at <= world.now() && token.expires_at > world.now());
    }
    assert_eq!(
        world.service.storage_lookups(),
        warm,
        "no storage trip once Authenticate has cached the token"
    );
    world.close().await;
}

/// Revoked, member removed, expired: each time Authenticate refuses the
/// token, introspection calls it inactive, both answered from the cache.
#[tokio::test]
async fn a_token_is_inactive_as_soon_as_authenticate_refuses_it() {
    let world = World::new().await;
    let inactive_now = async |token: &str, app| {
        let authenticated = world.service.authenticate(token, None, &[]).await;
        let seen = world.service.introspect(Some(app), token).await.unwrap();
        assert_eq!(authenticated.is_ok(), seen.active, "{authenticated:?}");
        !seen.active
    };

    // Revoked (RFC 7009).
    let (app, client, tokens) = grant(&world).await;
    let access = tokens.access_token.expose();
    assert!(!inactive_now(access, &app).await);
    world
        .service
        .revoke_oauth_token(&client, access)
        .await
        .unwrap();
    assert!(inactive_now(access, &app).await, "revoked");

    // The user is no longer a member of the token's workspace.
    let bob = world.member("bob@example.com", "member").await;
    let code = world.code_for(&app, &bob, "issues:read").await;
    let tokens = world
        .service
        .exchange_code(&client, &code, REDIRECT_URI, VERIFIER)
        .await
        .unwrap();
    let access = tokens.access_token.expose();
    assert!(!inactive_now(access, &app).await);
    world
        .service
        .remove_membership("acme", &bob.id)
        .await
        .unwrap();
    assert!(inactive_now(access, &app).await, "member removed");

    // Expired.
    let (app, _, tokens) = grant(&world).await;
    let access = tokens.access_token.expose();
    assert!(!inactive_now(access, &app).await);
    world.clock.advance_secs(3601);
    assert!(inactive_now(access, &app).await, "expired");
    world.close().await;
}

#[tokio::test]
async fn apps_are_cached_and_every_change_is_seen_at_once() {
    let world = World::new().await;
    let operator = AppManager::Operator;
    let (app, client) = world.app(ClientType::Confidential).await;
    world.service.authenticate_client(&client).await.unwrap();
    let warm = world.service.storage_lookups();
    world.service.authenticate_client(&client).await.unwrap();
    assert_eq!(world.service.storage_lookups(), warm, "the app is cached");

    // A new secret: the old one stops at once, or after its overlap.
    let (secret, _) = world
        .service
        .rotate_app_secret(&operator, &app.client_id, 0)
        .await
        .unwrap();
    let refused = world
        .service
        .authenticate_client(&client)
        .await
        .unwrap_err();
    assert_eq!(refused.class(), ErrorClass::InvalidClient, "the old secret");
    let rotated = ClientAuth {
        client_secret: Some(secret.expose().to_owned()),
        ..client.clone()
    };
    world.service.authenticate_client(&rotated).await.unwrap();
    let (newest, _) = world
        .service
        .rotate_app_secret(&operator, &app.client_id, 60)
        .await
        .unwrap();
    world.service.authenticate_client(&rotated).await.unwrap();
    world.clock.advance_secs(61);
    let refused = world
        .service
        .authenticate_client(&rotated)
        .await
        .unwrap_err();
    assert_eq!(refused.class(), ErrorClass::InvalidClient, "overlap over");
    let newest = ClientAuth {
        client_secret: Some(newest.expose().to_owned()),
        ..client.clone()
    };

    // Changed settings are what the next client authentication sees.
    let changes = AppChanges {
        name: Some("Renamed".into()),
        ..AppChanges::default()
    };
    world
        .service
        .update_app(&operator, &app.client_id, changes)
        .await
        .unwrap();
    let seen = world.service.authenticate_client(&newest).await.unwrap();
    assert_eq!(seen.name, "Renamed");

    world
        .service
        .delete_app(&operator, &app.client_id)
        .await
        .unwrap();
    let refused = world
        .service
        .authenticate_client(&newest)
        .await
        .unwrap_err();
    assert_eq!(refused.class(), ErrorClass::InvalidClient, "a deleted app");
    world.close().await;
}
