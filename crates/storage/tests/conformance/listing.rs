//! Listings page by sort key: newest keys first, apps oldest first,
//! memberships by user id or slug; ties on time are broken by id, and a
//! page token (the last item's key) resumes exactly after it.

use std::sync::Arc;

use velocity_domain::api_key::KeyOwner;
use velocity_domain::oauth::ClientType;
use velocity_domain::page::{PageCursor, PageRequest};
use velocity_domain::{ApiKeyId, KeyKind, Role, Store, Timestamp};

use crate::fixtures::{ada_in_acme, app, key, user};

fn page(size: usize, after: Option<PageCursor>) -> PageRequest {
    PageRequest { size, after }
}

pub async fn listing_story(store: Arc<dyn Store>) {
    let (ada, acme) = ada_in_acme(store.as_ref()).await;
    // Five keys, two of them made in the same millisecond.
    let mut ids = Vec::new();
    for n in 1..=5u8 {
        let mut k = key(KeyKind::Workspace, Some(&acme), Some(&ada), n);
        k.created_at = Timestamp(if n == 3 { 2 } else { i64::from(n) });
        k.id = ApiKeyId(format!("key-{n}"));
        store.insert_api_key(&k).await.unwrap();
        ids.push(k);
    }
    let owner = KeyOwner::Workspace(acme.id.clone());
    let first = store
        .list_api_keys(&owner, false, &page(2, None))
        .await
        .unwrap();
    // fetch_limit is size + 1: the extra row says another page follows.
    let names: Vec<_> = first.iter().map(|k| k.id.as_str()).collect();
    assert_eq!(names, ["key-5", "key-4", "key-3"]);
    let after = PageCursor::new(first[1].created_at.0, first[1].id.as_str());
    let second = store
        .list_api_keys(&owner, false, &page(2, Some(after)))
        .await
        .unwrap();
    let names: Vec<_> = second.iter().map(|k| k.id.as_str()).collect();
    assert_eq!(
        names,
        ["key-3", "key-2", "key-1"],
        "the tie at t=2 is ordered by id"
    );
    let after = PageCursor::new(2, "key-2");
    let last = store
        .list_api_keys(&owner, false, &page(2, Some(after)))
        .await
        .unwrap();
    let names: Vec<_> = last.iter().map(|k| k.id.as_str()).collect();
    assert_eq!(names, ["key-1"]);

    // Apps: oldest first.
    for (id, at) in [("app-b", 10), ("app-a", 10), ("app-c", 5)] {
        store
            .insert_app(&app(id, ClientType::Public, at))
            .await
            .unwrap();
    }
    let apps = store.list_apps(None, &page(10, None)).await.unwrap();
    let names: Vec<_> = apps.iter().map(|a| a.client_id.as_str()).collect();
    assert_eq!(names, ["app-c", "app-a", "app-b"]);
    let rest = store
        .list_apps(None, &page(10, Some(PageCursor::new(10, "app-a"))))
        .await
        .unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].client_id.as_str(), "app-b");

    // Memberships: a workspace's by user id, a user's by slug.
    store
        .upsert_membership(&acme.id, &ada.id, Role::Owner)
        .await
        .unwrap();
    for name in ["zoe", "bob", "cat"] {
        let u = user(name);
        store.insert_user(&u).await.unwrap();
        store
            .upsert_membership(&acme.id, &u.id, Role::Member)
            .await
            .unwrap();
    }
    let members = store
        .memberships_of_workspace(&acme.id, &page(2, None))
        .await
        .unwrap();
    let names: Vec<_> = members.iter().map(|m| m.user_id.as_str()).collect();
    assert_eq!(names, ["ada", "bob", "cat"]);
    let members = store
        .memberships_of_workspace(&acme.id, &page(2, Some(PageCursor::new(0, "bob"))))
        .await
        .unwrap();
    let names: Vec<_> = members.iter().map(|m| m.user_id.as_str()).collect();
    assert_eq!(names, ["cat", "zoe"]);
    let mine = store
        .memberships_of_user(&ada.id, &page(5, None))
        .await
        .unwrap();
    assert_eq!(mine.len(), 1);
    let mine = store
        .memberships_of_user(&ada.id, &page(5, Some(PageCursor::new(0, "acme"))))
        .await
        .unwrap();
    assert!(mine.is_empty(), "nothing sorts after the last slug");
}
