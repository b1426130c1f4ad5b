//! Users, workspaces, memberships and API keys.

use std::sync::Arc;

use velocity_domain::api_key::KeyOwner;
use velocity_domain::page::PageRequest;
use velocity_domain::{
    ApiKeyId, KeyKind, Role, ScopeSet, SecretHash, Store, StoreError, Timestamp, UserId,
    WorkspaceId,
};

use crate::fixtures::{key, user, workspace};
use crate::{Backend, open};

pub async fn directory_story(store: Arc<dyn Store>) {
    store.ping().await.unwrap();
    let ada = user("ada");
    store.insert_user(&ada).await.unwrap();
    assert!(matches!(
        store.insert_user(&ada).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.user(&ada.id).await.unwrap(), Some(ada.clone()));
    assert_eq!(store.user(&UserId("nobody".into())).await.unwrap(), None);

    let acme = workspace("acme");
    store.insert_workspace(&acme).await.unwrap();
    let mut dup = workspace("acme");
    dup.id = WorkspaceId::generate();
    assert!(matches!(
        store.insert_workspace(&dup).await,
        Err(StoreError::Conflict("workspace slug"))
    ));
    assert_eq!(
        store.workspace_by_slug("acme").await.unwrap(),
        Some(acme.clone())
    );
    assert_eq!(
        store.workspace_by_id(&acme.id).await.unwrap(),
        Some(acme.clone())
    );
    assert_eq!(store.workspace_by_slug("globex").await.unwrap(), None);

    assert_eq!(
        store.membership_by_slug(&ada.id, "acme").await.unwrap(),
        None
    );
    store
        .upsert_membership(&acme.id, &ada.id, Role::Member)
        .await
        .unwrap();
    let m = store
        .membership_by_slug(&ada.id, "acme")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((m.role, m.workspace.clone()), (Role::Member, acme.clone()));
    store
        .upsert_membership(&acme.id, &ada.id, Role::Owner)
        .await
        .unwrap();
    assert_eq!(
        store
            .membership(&acme.id, &ada.id)
            .await
            .unwrap()
            .unwrap()
            .role,
        Role::Owner
    );
    assert_eq!(
        store
            .memberships_of_user(&ada.id, &PageRequest::first())
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        store
            .memberships_of_workspace(&acme.id, &PageRequest::first())
            .await
            .unwrap()
            .len(),
        1
    );
    // Memberships need a real user and workspace.
    assert!(matches!(
        store
            .upsert_membership(&acme.id, &UserId("ghost".into()), Role::Guest)
            .await,
        Err(StoreError::MissingReference(_))
    ));
    assert!(store.delete_membership(&acme.id, &ada.id).await.unwrap());
    assert!(!store.delete_membership(&acme.id, &ada.id).await.unwrap());
    assert_eq!(
        store.membership_by_slug(&ada.id, "acme").await.unwrap(),
        None
    );
}

pub async fn key_story(store: Arc<dyn Store>) {
    let ada = user("ada");
    store.insert_user(&ada).await.unwrap();
    let acme = workspace("acme");
    store.insert_workspace(&acme).await.unwrap();

    let ws_key = key(KeyKind::Workspace, Some(&acme), Some(&ada), 1);
    let mut personal = key(KeyKind::Personal, None, Some(&ada), 2);
    personal.scopes = ScopeSet::parse(["admin"]).unwrap();
    personal.expires_at = None;
    store.insert_api_key(&ws_key).await.unwrap();
    store.insert_api_key(&personal).await.unwrap();
    assert!(matches!(
        store.insert_api_key(&ws_key).await,
        Err(StoreError::Conflict("key"))
    ));

    assert_eq!(
        store.api_key_by_hash(&SecretHash([1; 32])).await.unwrap(),
        Some(ws_key.clone())
    );
    assert_eq!(
        store.api_key_by_hash(&SecretHash([2; 32])).await.unwrap(),
        Some(personal.clone())
    );
    assert_eq!(
        store.api_key_by_hash(&SecretHash([9; 32])).await.unwrap(),
        None
    );
    assert_eq!(
        store.api_key_by_id(&ws_key.id).await.unwrap(),
        Some(ws_key.clone())
    );

    let listed = store
        .list_api_keys(
            &KeyOwner::Workspace(acme.id.clone()),
            false,
            &PageRequest::first(),
        )
        .await
        .unwrap();
    assert_eq!(listed, vec![ws_key.clone()]);
    let listed = store
        .list_api_keys(
            &KeyOwner::User(ada.id.clone()),
            false,
            &PageRequest::first(),
        )
        .await
        .unwrap();
    assert_eq!(
        listed,
        vec![personal.clone()],
        "workspace keys ada created are not her personal keys"
    );

    let first = store
        .revoke_api_key(&ws_key.id, Timestamp(50))
        .await
        .unwrap();
    assert_eq!(first, Some(Timestamp(50)));
    let again = store
        .revoke_api_key(&ws_key.id, Timestamp(60))
        .await
        .unwrap();
    assert_eq!(
        again,
        Some(Timestamp(50)),
        "revocation keeps its first time"
    );
    assert_eq!(
        store
            .revoke_api_key(&ApiKeyId("nope".into()), Timestamp(60))
            .await
            .unwrap(),
        None
    );
    assert!(
        store
            .list_api_keys(
                &KeyOwner::Workspace(acme.id.clone()),
                false,
                &PageRequest::first()
            )
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .list_api_keys(
                &KeyOwner::Workspace(acme.id.clone()),
                true,
                &PageRequest::first()
            )
            .await
            .unwrap()
            .len(),
        1
    );

    store
        .record_key_usage(&[
            (personal.id.clone(), Timestamp(70)),
            (ApiKeyId("gone".into()), Timestamp(70)),
        ])
        .await
        .unwrap();
    store
        .record_key_usage(&[(personal.id.clone(), Timestamp(65))])
        .await
        .unwrap();
    // Flushes larger than one statement's chunk.
    let many: Vec<_> = (0..1200)
        .map(|i| (ApiKeyId(format!("missing-{i}")), Timestamp(80)))
        .collect();
    store.record_key_usage(&many).await.unwrap();
    let used = store.api_key_by_id(&personal.id).await.unwrap().unwrap();
    assert_eq!(
        used.last_used_at,
        Some(Timestamp(70)),
        "usage never moves backwards"
    );
}

/// Data survives closing and reopening, and opening again re-runs no migration.
pub async fn reopening_keeps_data(backend: Backend) {
    let (guard, db) = open(backend).await;
    db.store().insert_user(&user("ada")).await.unwrap();
    db.close().await;
    let db = velocity_storage::Database::open(&guard.url, &crate::options())
        .await
        .unwrap();
    assert!(
        db.store()
            .user(&UserId("ada".into()))
            .await
            .unwrap()
            .is_some()
    );
    db.close().await;
}
