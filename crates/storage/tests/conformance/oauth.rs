//! OAuth apps, codes, tokens and shared secrets, and the races the
//! conditional updates must settle.

use std::sync::Arc;

use velocity_domain::oauth::{ClientId, ClientType, TokenId, TokenKind};
use velocity_domain::page::PageRequest;
use velocity_domain::{SecretHash, Store, StoreError, Timestamp};

use crate::fixtures::{ada_in_acme, app, code, pair, token};

pub async fn oauth_story(store: Arc<dyn Store>) {
    let (ada, acme) = ada_in_acme(&*store).await;

    // Apps.
    let web = app("web", ClientType::Confidential, 10);
    let cli = app("cli", ClientType::Public, 5);
    store.insert_app(&web).await.unwrap();
    store.insert_app(&cli).await.unwrap();
    assert!(matches!(
        store.insert_app(&web).await,
        Err(StoreError::Conflict("app"))
    ));
    assert_eq!(
        store.app(&ClientId("web".into())).await.unwrap(),
        Some(web.clone())
    );
    assert_eq!(store.app(&ClientId("nope".into())).await.unwrap(), None);
    assert_eq!(
        store.list_apps(&PageRequest::first()).await.unwrap(),
        vec![cli.clone(), web.clone()],
        "apps are listed oldest first"
    );
    assert!(
        store
            .set_app_secret(&ClientId("web".into()), &SecretHash([0xc1; 32]))
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .app(&ClientId("web".into()))
            .await
            .unwrap()
            .unwrap()
            .secret_hash,
        Some(SecretHash([0xc1; 32]))
    );
    assert!(
        !store
            .set_app_secret(&ClientId("nope".into()), &SecretHash([0xc1; 32]))
            .await
            .unwrap()
    );

    // A code is redeemed once; the losing attempt stores nothing.
    let grant = code(&web, &ada, &acme, 1);
    store.insert_code(&grant).await.unwrap();
    assert_eq!(
        store.code_by_hash(&grant.hash).await.unwrap(),
        Some(grant.clone())
    );
    assert_eq!(
        store.code_by_hash(&SecretHash([9; 32])).await.unwrap(),
        None
    );
    let first = pair(&grant, 10);
    assert!(
        store
            .redeem_code(&grant.hash, Timestamp(150), &first)
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .code_by_hash(&grant.hash)
            .await
            .unwrap()
            .unwrap()
            .used_at,
        Some(Timestamp(150))
    );
    for t in &first {
        assert_eq!(
            store.token_by_hash(&t.hash).await.unwrap().as_ref(),
            Some(t)
        );
    }
    let second = pair(&grant, 20);
    assert!(
        !store
            .redeem_code(&grant.hash, Timestamp(160), &second)
            .await
            .unwrap()
    );
    for t in &second {
        assert_eq!(store.token_by_hash(&t.hash).await.unwrap(), None);
    }

    // A refresh token rotates once.
    let refresh = &first[1];
    let rotated = pair(&grant, 30);
    assert!(
        store
            .rotate_refresh_token(&refresh.id, Timestamp(300), &rotated)
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .token_by_hash(&refresh.hash)
            .await
            .unwrap()
            .unwrap()
            .rotated_at,
        Some(Timestamp(300))
    );
    for t in &rotated {
        assert!(store.token_by_hash(&t.hash).await.unwrap().is_some());
    }
    let again = pair(&grant, 40);
    assert!(
        !store
            .rotate_refresh_token(&refresh.id, Timestamp(310), &again)
            .await
            .unwrap()
    );
    for t in &again {
        assert_eq!(store.token_by_hash(&t.hash).await.unwrap(), None);
    }
    // Access tokens never rotate.
    assert!(
        !store
            .rotate_refresh_token(&rotated[0].id, Timestamp(310), &again)
            .await
            .unwrap()
    );

    // Revocation: one token, then what is left of the family.
    assert!(
        store
            .revoke_token(&first[0].id, Timestamp(400))
            .await
            .unwrap()
    );
    assert!(
        !store
            .revoke_token(&first[0].id, Timestamp(410))
            .await
            .unwrap()
    );
    assert!(
        !store
            .revoke_token(&TokenId("token-none".into()), Timestamp(410))
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .token_by_hash(&first[0].hash)
            .await
            .unwrap()
            .unwrap()
            .revoked_at,
        Some(Timestamp(400))
    );
    // Active: the rotated refresh token and the rotated-in pair.
    assert_eq!(
        store
            .revoke_family(&grant.family_id, Timestamp(500))
            .await
            .unwrap(),
        3
    );
    assert_eq!(
        store
            .revoke_family(&grant.family_id, Timestamp(510))
            .await
            .unwrap(),
        0
    );
    // A revoked refresh token cannot rotate.
    assert!(
        !store
            .rotate_refresh_token(&rotated[1].id, Timestamp(520), &again)
            .await
            .unwrap()
    );

    // Deleting an app takes its codes and tokens with it.
    assert!(store.delete_app(&ClientId("web".into())).await.unwrap());
    assert!(!store.delete_app(&ClientId("web".into())).await.unwrap());
    assert_eq!(store.app(&ClientId("web".into())).await.unwrap(), None);
    assert_eq!(store.code_by_hash(&grant.hash).await.unwrap(), None);
    for t in first.iter().chain(&rotated) {
        assert_eq!(store.token_by_hash(&t.hash).await.unwrap(), None);
    }
    assert_eq!(
        store.list_apps(&PageRequest::first()).await.unwrap(),
        vec![cli]
    );

    // The first candidate for a shared secret is the one every replica gets.
    assert_eq!(
        store.shared_secret("csrf", &[1; 32]).await.unwrap(),
        [1; 32]
    );
    assert_eq!(
        store.shared_secret("csrf", &[2; 32]).await.unwrap(),
        [1; 32]
    );
    assert_eq!(
        store.shared_secret("other", &[3; 32]).await.unwrap(),
        [3; 32]
    );
}

/// Attempts per race: more than one connection's worth of contention.
const RACERS: u8 = 16;

pub async fn concurrent_redeem_story(store: Arc<dyn Store>) {
    let (ada, acme) = ada_in_acme(&*store).await;
    let web = app("web", ClientType::Confidential, 10);
    store.insert_app(&web).await.unwrap();
    let grant = code(&web, &ada, &acme, 1);
    store.insert_code(&grant).await.unwrap();

    // Racer i offers tokens with hashes 10 + 2i and 11 + 2i.
    let attempts: Vec<_> = (0..RACERS)
        .map(|i| {
            let store = store.clone();
            let tokens = pair(&grant, 10 + 2 * i);
            let hash = grant.hash;
            tokio::spawn(async move { store.redeem_code(&hash, Timestamp(150), &tokens).await })
        })
        .collect();
    let mut winners = Vec::new();
    for (i, attempt) in (0..RACERS).zip(attempts) {
        if attempt.await.unwrap().unwrap() {
            winners.push(i);
        }
    }
    assert_eq!(winners.len(), 1, "exactly one redeem wins: {winners:?}");
    assert_eq!(stored_tokens(&*store, &grant, winners[0]).await, 2);
    assert_eq!(
        stored_racer_tokens(&*store, &grant).await,
        2,
        "only the winner's tokens are stored"
    );
}

pub async fn concurrent_rotation_story(store: Arc<dyn Store>) {
    let (ada, acme) = ada_in_acme(&*store).await;
    let web = app("web", ClientType::Confidential, 10);
    store.insert_app(&web).await.unwrap();
    let grant = code(&web, &ada, &acme, 1);
    store.insert_code(&grant).await.unwrap();
    let refresh = token(TokenKind::Refresh, &grant.family_id, &grant, 2, 90_000);
    assert!(
        store
            .redeem_code(&grant.hash, Timestamp(150), std::slice::from_ref(&refresh))
            .await
            .unwrap()
    );

    let attempts: Vec<_> = (0..RACERS)
        .map(|i| {
            let store = store.clone();
            let tokens = pair(&grant, 10 + 2 * i);
            let id = refresh.id.clone();
            tokio::spawn(async move {
                store
                    .rotate_refresh_token(&id, Timestamp(300), &tokens)
                    .await
            })
        })
        .collect();
    let mut winners = Vec::new();
    for (i, attempt) in (0..RACERS).zip(attempts) {
        if attempt.await.unwrap().unwrap() {
            winners.push(i);
        }
    }
    assert_eq!(winners.len(), 1, "exactly one rotation wins: {winners:?}");
    assert_eq!(stored_tokens(&*store, &grant, winners[0]).await, 2);
    assert_eq!(
        stored_racer_tokens(&*store, &grant).await,
        2,
        "only the winner's tokens are stored"
    );
}

/// How many of racer `i`'s tokens are stored.
async fn stored_tokens(
    store: &dyn Store,
    grant: &velocity_domain::oauth::AuthorizationCode,
    i: u8,
) -> usize {
    let mut found = 0;
    for t in pair(grant, 10 + 2 * i) {
        if store.token_by_hash(&t.hash).await.unwrap().is_some() {
            found += 1;
        }
    }
    found
}

/// How many tokens any racer got stored.
async fn stored_racer_tokens(
    store: &dyn Store,
    grant: &velocity_domain::oauth::AuthorizationCode,
) -> usize {
    let mut found = 0;
    for i in 0..RACERS {
        found += stored_tokens(store, grant, i).await;
    }
    found
}
