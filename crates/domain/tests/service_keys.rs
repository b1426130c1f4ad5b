//! Key management and Authenticate, as use-cases over a real store.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use support::World;
use velocity_domain::page::PageRequest;
use velocity_domain::service::NewKey;
use velocity_domain::{Error, KeyKind, PrincipalKind, Reason};

fn new_key(kind: KeyKind, slug: Option<&str>, scopes: &[&str]) -> NewKey {
    NewKey {
        kind,
        workspace_slug: slug.map(str::to_owned),
        name: "ci".into(),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        expires_at: None,
    }
}

fn reason<T: std::fmt::Debug>(result: Result<T, Error>) -> Reason {
    result.unwrap_err().reason()
}

#[tokio::test]
async fn workspace_keys_follow_the_creators_role() {
    let world = World::new().await;
    let (owner, _) = world.caller(&world.owner).await;
    let (key, secret) = world
        .service
        .create_key(
            &owner,
            new_key(KeyKind::Workspace, Some("acme"), &["issues:write"]),
        )
        .await
        .unwrap();
    assert_eq!(key.kind(), KeyKind::Workspace);
    let principal = world
        .service
        .authenticate(secret.expose(), Some("acme"), &["issues:read".into()])
        .await
        .unwrap();
    assert_eq!(principal.kind, PrincipalKind::WorkspaceKey);
    assert_eq!(principal.workspace.unwrap().id, world.acme.id);

    let member = world.member("bob@example.com", "member").await;
    let (member, _) = world.caller(&member).await;
    assert_eq!(
        reason(
            world
                .service
                .create_key(
                    &member,
                    new_key(KeyKind::Workspace, Some("acme"), &["issues:read"])
                )
                .await
        ),
        Reason::RoleInsufficient
    );
    assert_eq!(
        reason(
            world
                .service
                .create_key(
                    &owner,
                    new_key(KeyKind::Workspace, Some("acme"), &["user:read"])
                )
                .await
        ),
        Reason::ScopeWrongKind
    );
    world.close().await;
}

#[tokio::test]
async fn revocation_is_for_the_creator_owner_or_workspace_admins() {
    let world = World::new().await;
    let (owner, _) = world.caller(&world.owner).await;
    let (key, secret) = world
        .service
        .create_key(
            &owner,
            new_key(KeyKind::Workspace, Some("acme"), &["issues:read"]),
        )
        .await
        .unwrap();
    let guest = world.member("gus@example.com", "guest").await;
    let (guest, _) = world.caller(&guest).await;
    assert_eq!(
        reason(world.service.revoke_key(&guest, &key.id).await),
        Reason::NotKeyOwner
    );
    let admin = world.member("ann@example.com", "admin").await;
    let (admin, _) = world.caller(&admin).await;
    let first = world.service.revoke_key(&admin, &key.id).await.unwrap();
    world.clock.advance_secs(5);
    let again = world.service.revoke_key(&owner, &key.id).await.unwrap();
    assert_eq!(first, again, "revoking twice returns the first revocation");
    assert_eq!(
        reason(world.service.authenticate(secret.expose(), None, &[]).await),
        Reason::CredentialRevoked
    );
    let listed = world
        .service
        .list_keys(&owner, Some("acme"), true, &PageRequest::first())
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);
    assert_eq!(listed.items[0].revoked_at, Some(first));
    assert_eq!(listed.next, None);
    world.close().await;
}

#[tokio::test]
async fn personal_keys_expire_on_the_clock() {
    let world = World::new().await;
    let (owner, _) = world.caller(&world.owner).await;
    let mut request = new_key(KeyKind::Personal, None, &["user:read"]);
    request.expires_at = Some(world.now().plus_secs(60));
    let (key, secret) = world.service.create_key(&owner, request).await.unwrap();
    assert_eq!(key.owner.user(), Some(&world.owner.id));
    let principal = world
        .service
        .authenticate(secret.expose(), Some("acme"), &[])
        .await
        .unwrap();
    assert_eq!(principal.kind, PrincipalKind::PersonalKey);
    assert_eq!(principal.user_id.as_ref(), Some(&world.owner.id));
    world.clock.advance_secs(61);
    assert_eq!(
        reason(world.service.authenticate(secret.expose(), None, &[]).await),
        Reason::CredentialExpired
    );
    assert_eq!(
        reason(
            world
                .service
                .create_key(
                    &owner,
                    new_key(
                        KeyKind::Personal,
                        None,
                        &["workspaces:delete", "issues:read"]
                    )
                )
                .await
        ),
        Reason::ScopeWrongKind
    );
    world.close().await;
}

#[tokio::test]
async fn listings_page_through_every_key_even_while_keys_are_added() {
    let world = World::new().await;
    let (owner, _) = world.caller(&world.owner).await;
    let mut created = Vec::new();
    for _ in 0..25 {
        let (key, _) = world
            .service
            .create_key(
                &owner,
                new_key(KeyKind::Workspace, Some("acme"), &["issues:read"]),
            )
            .await
            .unwrap();
        created.push(key.id);
        // Two keys in the same millisecond still have an order (their ids).
        if created.len() % 2 == 0 {
            world.clock.advance_secs(1);
        }
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = PageRequest::parse(10, &token).unwrap();
        let found = world
            .service
            .list_keys(&owner, Some("acme"), false, &page)
            .await
            .unwrap();
        pages += 1;
        seen.extend(found.items.iter().map(|k| k.id.clone()));
        // A key made mid-listing is newer than every page still to come.
        world
            .service
            .create_key(
                &owner,
                new_key(KeyKind::Workspace, Some("acme"), &["issues:read"]),
            )
            .await
            .unwrap();
        token = found.next_page_token();
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(pages, 3);
    created.reverse();
    assert_eq!(seen, created, "newest first, nothing skipped or repeated");
    assert_eq!(
        PageRequest::parse(10, "not-a-token").unwrap_err().reason(),
        Reason::InvalidArgument
    );
    world.close().await;
}
