//! The OAuth use-cases over a real store: consent, the token endpoint's two
//! grants and their shared steps, revocation and introspection.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use support::{REDIRECT_URI, VERIFIER, World};
use velocity_domain::error::OAuthErrorCode;
use velocity_domain::oauth::ClientType;
use velocity_domain::service::{ClientAuth, IssuedTokens};
use velocity_domain::{Error, PrincipalKind, Reason, ServiceConfig};

fn oauth_code<T: std::fmt::Debug>(result: Result<T, Error>) -> OAuthErrorCode {
    match result.unwrap_err() {
        Error::OAuth(code, _) | Error::OAuthWithReason(code, _, _) => code,
        other => panic!("expected an OAuth error, got {other:?}"),
    }
}

fn auth_reason<T: std::fmt::Debug>(result: Result<T, Error>) -> Reason {
    result.unwrap_err().reason()
}

#[tokio::test]
async fn a_code_is_exchanged_once_and_a_replay_revokes_its_tokens() {
    let world = World::new().await;
    let (app, client) = world.app(ClientType::Public).await;
    let code = world
        .code_for(&app, &world.owner, "issues:read user:read")
        .await;
    let tokens = world
        .service
        .exchange_code(&client, &code, REDIRECT_URI, VERIFIER)
        .await
        .unwrap();
    assert_eq!(tokens.workspace_id, world.acme.id);
    let principal = world
        .service
        .authenticate(tokens.access_token.expose(), Some("acme"), &[])
        .await
        .unwrap();
    assert_eq!(principal.kind, PrincipalKind::AccessToken);
    assert_eq!(principal.client_id.as_ref(), Some(&app.client_id));

    assert_eq!(
        oauth_code(
            world
                .service
                .exchange_code(&client, &code, REDIRECT_URI, VERIFIER)
                .await
        ),
        OAuthErrorCode::InvalidGrant
    );
    assert_eq!(
        auth_reason(
            world
                .service
                .authenticate(tokens.access_token.expose(), None, &[])
                .await
        ),
        Reason::CredentialRevoked,
        "a replayed code revokes what it issued"
    );
    world.close().await;
}

#[tokio::test]
async fn exchange_checks_client_redirect_verifier_and_expiry() {
    let world = World::new().await;
    let (app, client) = world.app(ClientType::Public).await;
    let (_, other) = world.app(ClientType::Public).await;
    let code = world.code_for(&app, &world.owner, "issues:read").await;
    let exchange = |client: ClientAuth, redirect: &'static str, verifier: &'static str| {
        let service = world.service.clone();
        let code = code.clone();
        async move {
            service
                .exchange_code(&client, &code, redirect, verifier)
                .await
        }
    };
    assert_eq!(
        oauth_code(exchange(other, REDIRECT_URI, VERIFIER).await),
        OAuthErrorCode::InvalidGrant
    );
    assert_eq!(
        oauth_code(exchange(client.clone(), "https://tt.example.com/other", VERIFIER).await),
        OAuthErrorCode::InvalidGrant
    );
    assert_eq!(
        oauth_code(exchange(client.clone(), REDIRECT_URI, "").await),
        OAuthErrorCode::InvalidRequest
    );
    world.clock.advance_secs(601);
    assert_eq!(
        oauth_code(exchange(client.clone(), REDIRECT_URI, VERIFIER).await),
        OAuthErrorCode::InvalidGrant,
        "codes live ten minutes"
    );
    assert_eq!(
        oauth_code(
            world
                .service
                .exchange_code(&client, "velc_not-a-code", REDIRECT_URI, VERIFIER)
                .await
        ),
        OAuthErrorCode::InvalidGrant
    );
    world.close().await;
}

#[tokio::test]
async fn refresh_rotates_narrows_and_revokes_the_family_on_replay() {
    let world = World::new().await;
    let (app, client) = world.app(ClientType::Confidential).await;
    let code = world
        .code_for(&app, &world.owner, "issues:write user:read")
        .await;
    let first = world
        .service
        .exchange_code(&client, &code, REDIRECT_URI, VERIFIER)
        .await
        .unwrap();
    let wrong_secret = ClientAuth {
        client_secret: Some("vels_wrong".into()),
        ..client.clone()
    };
    assert_eq!(
        oauth_code(
            world
                .service
                .refresh(&wrong_secret, first.refresh_token.expose(), None)
                .await
        ),
        OAuthErrorCode::InvalidClient
    );
    let wider = world
        .service
        .refresh(
            &client,
            first.refresh_token.expose(),
            Some("issues:write workspace:admin"),
        )
        .await;
    let wider = wider.unwrap_err();
    assert_eq!(wider.reason(), Reason::ScopeExceedsGrant);
    assert_eq!(oauth_code::<()>(Err(wider)), OAuthErrorCode::InvalidScope);

    let second = world
        .service
        .refresh(&client, first.refresh_token.expose(), Some("user:read"))
        .await
        .unwrap();
    assert_eq!(second.scopes.to_space_separated(), "user:read");
    assert!(
        world
            .service
            .authenticate(second.access_token.expose(), None, &[])
            .await
            .is_ok()
    );

    // The rotated token again, after the reuse interval: a replay, and the
    // whole family goes.
    world.clock.advance_secs(REUSE_SECS + 1);
    assert_eq!(
        oauth_code(
            world
                .service
                .refresh(&client, first.refresh_token.expose(), None)
                .await
        ),
        OAuthErrorCode::InvalidGrant
    );
    assert_eq!(
        auth_reason(
            world
                .service
                .authenticate(second.access_token.expose(), None, &[])
                .await
        ),
        Reason::CredentialRevoked
    );
    assert_eq!(
        oauth_code(
            world
                .service
                .refresh(&client, second.refresh_token.expose(), None)
                .await
        ),
        OAuthErrorCode::InvalidGrant
    );
    world.close().await;
}

/// The default refresh reuse interval.
const REUSE_SECS: i64 = 10;

/// `Ok` when `access` still authenticates, else its reason.
async fn still_works(world: &World, tokens: &IssuedTokens) -> Result<(), Reason> {
    world
        .service
        .authenticate(tokens.access_token.expose(), None, &[])
        .await
        .map(|_| ())
        .map_err(|e| e.reason())
}

#[tokio::test]
async fn a_reuse_inside_the_interval_gets_a_fresh_pair_in_the_grant() {
    let world = World::new().await;
    assert_eq!(
        ServiceConfig::default().refresh_reuse_interval_secs,
        REUSE_SECS as u64
    );
    let (app, client) = world.app(ClientType::Public).await;
    let (_, other_client) = world.app(ClientType::Public).await;
    let code = world
        .code_for(&app, &world.owner, "issues:write user:read")
        .await;
    let first = world
        .service
        .exchange_code(&client, &code, REDIRECT_URI, VERIFIER)
        .await
        .unwrap();
    let refresh = first.refresh_token.expose();
    let second = world.service.refresh(&client, refresh, None).await.unwrap();

    // Five seconds on, the rotated token again (a retry, another tab): a
    // fresh pair of the same grant, and nothing revoked.
    world.clock.advance_secs(5);
    let third = world.service.refresh(&client, refresh, None).await.unwrap();
    assert_ne!(third.refresh_token.expose(), second.refresh_token.expose());
    assert_eq!(third.scopes, second.scopes);
    assert_eq!(third.workspace_id, world.acme.id);
    // The same rules as any refresh: narrowing is allowed, widening is not.
    let narrowed = world
        .service
        .refresh(&client, refresh, Some("user:read"))
        .await
        .unwrap();
    assert_eq!(narrowed.scopes.to_space_separated(), "user:read");
    let wider = world
        .service
        .refresh(&client, refresh, Some("issues:write workspace:admin"))
        .await
        .unwrap_err();
    assert_eq!(wider.reason(), Reason::ScopeExceedsGrant);
    // Another client presenting it is refused, and revokes nothing.
    assert_eq!(
        oauth_code(world.service.refresh(&other_client, refresh, None).await),
        OAuthErrorCode::InvalidGrant
    );
    for tokens in [&first, &second, &third, &narrowed] {
        assert_eq!(still_works(&world, tokens).await, Ok(()));
    }
    // Still inside at nine seconds.
    world.clock.advance_secs(4);
    let fourth = world.service.refresh(&client, refresh, None).await.unwrap();

    // The window runs from the first rotation; the reuses did not extend
    // it. After it, the same token is a replay: the whole grant goes,
    // pairs from the window included.
    world.clock.advance_secs(REUSE_SECS - 9 + 1);
    assert_eq!(
        oauth_code(world.service.refresh(&client, refresh, None).await),
        OAuthErrorCode::InvalidGrant
    );
    for tokens in [&first, &second, &third, &narrowed, &fourth] {
        assert_eq!(
            still_works(&world, tokens).await,
            Err(Reason::CredentialRevoked)
        );
    }
    assert_eq!(
        oauth_code(
            world
                .service
                .refresh(&client, second.refresh_token.expose(), None)
                .await
        ),
        OAuthErrorCode::InvalidGrant
    );
    world.close().await;
}

#[tokio::test]
async fn a_token_further_back_in_the_chain_is_a_replay_inside_the_interval() {
    let world = World::new().await;
    let (app, client) = world.app(ClientType::Public).await;
    let code = world.code_for(&app, &world.owner, "issues:read").await;
    let first = world
        .service
        .exchange_code(&client, &code, REDIRECT_URI, VERIFIER)
        .await
        .unwrap();
    let second = world
        .service
        .refresh(&client, first.refresh_token.expose(), None)
        .await
        .unwrap();
    world.clock.advance_secs(1);
    let third = world
        .service
        .refresh(&client, second.refresh_token.expose(), None)
        .await
        .unwrap();
    // Two seconds after its rotation, but its successor has rotated since:
    // not the just-rotated token, so a replay.
    world.clock.advance_secs(1);
    assert_eq!(
        oauth_code(
            world
                .service
                .refresh(&client, first.refresh_token.expose(), None)
                .await
        ),
        OAuthErrorCode::InvalidGrant
    );
    assert_eq!(
        still_works(&world, &third).await,
        Err(Reason::CredentialRevoked)
    );
    world.close().await;
}

#[tokio::test]
async fn concurrent_refreshes_inside_the_interval_all_get_a_pair() {
    let world = World::new().await;
    let (app, client) = world.app(ClientType::Public).await;
    let code = world.code_for(&app, &world.owner, "issues:read").await;
    let first = world
        .service
        .exchange_code(&client, &code, REDIRECT_URI, VERIFIER)
        .await
        .unwrap();
    let attempts: Vec<_> = (0..8)
        .map(|_| {
            let service = world.service.clone();
            let client = client.clone();
            let refresh = first.refresh_token.expose().to_owned();
            tokio::spawn(async move { service.refresh(&client, &refresh, None).await })
        })
        .collect();
    let mut issued = Vec::new();
    for attempt in attempts {
        issued.push(attempt.await.unwrap().unwrap());
    }
    for tokens in issued.iter().chain([&first]) {
        assert_eq!(still_works(&world, tokens).await, Ok(()));
    }
    // Each pair refreshes on its own.
    for tokens in &issued {
        world
            .service
            .refresh(&client, tokens.refresh_token.expose(), None)
            .await
            .unwrap();
    }
    world.close().await;
}

#[tokio::test]
async fn with_the_interval_off_any_reuse_is_a_replay() {
    let world = World::with_config(ServiceConfig {
        refresh_reuse_interval_secs: 0,
        ..ServiceConfig::default()
    })
    .await;
    let (app, client) = world.app(ClientType::Public).await;
    let code = world.code_for(&app, &world.owner, "issues:read").await;
    let first = world
        .service
        .exchange_code(&client, &code, REDIRECT_URI, VERIFIER)
        .await
        .unwrap();
    let attempts: Vec<_> = (0..8)
        .map(|_| {
            let service = world.service.clone();
            let client = client.clone();
            let refresh = first.refresh_token.expose().to_owned();
            tokio::spawn(async move { service.refresh(&client, &refresh, None).await })
        })
        .collect();
    let mut won = 0;
    for attempt in attempts {
        if attempt.await.unwrap().is_ok() {
            won += 1;
        }
    }
    assert_eq!(won, 1, "without the interval, one refresh wins");
    // The losers were replays: the family is gone, the winner's pair too.
    assert_eq!(
        still_works(&world, &first).await,
        Err(Reason::CredentialRevoked)
    );
    assert_eq!(
        oauth_code(
            world
                .service
                .refresh(&client, first.refresh_token.expose(), None)
                .await
        ),
        OAuthErrorCode::InvalidGrant
    );
    world.close().await;
}

#[tokio::test]
async fn concurrent_claims_of_one_code_have_one_winner() {
    let world = World::new().await;
    let (app, client) = world.app(ClientType::Public).await;
    let code = world.code_for(&app, &world.owner, "issues:read").await;
    let attempts = (0..8).map(|_| {
        let service = world.service.clone();
        let client = client.clone();
        let code = code.clone();
        tokio::spawn(async move {
            service
                .exchange_code(&client, &code, REDIRECT_URI, VERIFIER)
                .await
        })
    });
    let mut won = 0;
    for attempt in attempts {
        if attempt.await.unwrap().is_ok() {
            won += 1;
        }
    }
    assert_eq!(won, 1);
    world.close().await;
}

#[tokio::test]
async fn revocation_and_introspection() {
    let world = World::new().await;
    let (app, client) = world.app(ClientType::Confidential).await;
    let code = world.code_for(&app, &world.owner, "issues:read").await;
    let tokens = world
        .service
        .exchange_code(&client, &code, REDIRECT_URI, VERIFIER)
        .await
        .unwrap();
    let seen = world
        .service
        .introspect(Some(&app), tokens.access_token.expose())
        .await
        .unwrap();
    assert!(seen.active);
    let (other_app, _) = world.app(ClientType::Confidential).await;
    let foreign = world
        .service
        .introspect(Some(&other_app), tokens.access_token.expose())
        .await
        .unwrap();
    assert!(!foreign.active, "a client sees only its own tokens");

    world
        .service
        .revoke_oauth_token(&client, tokens.refresh_token.expose())
        .await
        .unwrap();
    for token in [&tokens.access_token, &tokens.refresh_token] {
        let seen = world
            .service
            .introspect(None, token.expose())
            .await
            .unwrap();
        assert!(
            !seen.active,
            "revoking the refresh token revokes the family"
        );
    }
    world
        .service
        .revoke_oauth_token(&client, "velo_unknown")
        .await
        .unwrap();
    world.close().await;
}

#[tokio::test]
async fn consent_caps_scopes_by_role_and_removal_cuts_the_app_off() {
    let world = World::new().await;
    let (app, client) = world.app(ClientType::Public).await;
    let guest = world.member("gus@example.com", "guest").await;
    let code = world
        .code_for(&app, &guest, "issues:read issues:write user:read")
        .await;
    let tokens = world
        .service
        .exchange_code(&client, &code, REDIRECT_URI, VERIFIER)
        .await
        .unwrap();
    assert_eq!(
        tokens.scopes.to_space_separated(),
        "issues:read user:read",
        "a guest grants reads only"
    );
    world
        .service
        .remove_membership("acme", &guest.id)
        .await
        .unwrap();
    assert_eq!(
        auth_reason(
            world
                .service
                .authenticate(tokens.access_token.expose(), None, &[])
                .await
        ),
        Reason::NotAMember
    );
    world.close().await;
}

#[tokio::test]
async fn a_wrong_verifier_burns_the_code() {
    let world = World::new().await;
    let (app, client) = world.app(ClientType::Public).await;
    let code = world.code_for(&app, &world.owner, "issues:read").await;
    let wrong = "wrong-verifier-but-well-formed-0123456789abcdef";
    assert_eq!(
        oauth_code(
            world
                .service
                .exchange_code(&client, &code, REDIRECT_URI, wrong)
                .await
        ),
        OAuthErrorCode::InvalidGrant
    );
    assert_eq!(
        oauth_code(
            world
                .service
                .exchange_code(&client, &code, REDIRECT_URI, VERIFIER)
                .await
        ),
        OAuthErrorCode::InvalidGrant,
        "the right verifier after a wrong one finds the code spent"
    );
    world.close().await;
}
