//! The invalidation log (what every change that can make a cached answer
//! stale appends) and the paged hash lists known-credential filters are
//! built from.

use std::sync::Arc;
use std::time::Duration;

use velocity_domain::invalidation::Invalidation;
use velocity_domain::oauth::{ClientId, ClientType, TokenId, TokenKind};
use velocity_domain::{KeyKind, Role, SecretHash, Store, Timestamp, UserId};
use velocity_storage::Database;

use crate::fixtures::{ada_in_acme, app, code, key, pair, token, user};
use crate::{Backend, open};

/// The whole log, oldest first.
async fn log(store: &dyn Store) -> Vec<(i64, Invalidation)> {
    store.invalidations_after(0, 1000).await.unwrap()
}

/// The entries logged since `cursor`, without their ids.
async fn logged_since(store: &dyn Store, cursor: i64) -> Vec<Invalidation> {
    let entries = store.invalidations_after(cursor, 1000).await.unwrap();
    entries.into_iter().map(|(_, entry)| entry).collect()
}

pub async fn logging_story(store: Arc<dyn Store>) {
    assert_eq!(store.invalidation_cursor().await.unwrap(), 0);
    assert!(log(&*store).await.is_empty());

    // What no cache has seen yet logs nothing.
    let (ada, acme) = ada_in_acme(&*store).await;
    let web = app("web", ClientType::Confidential, 10);
    store.insert_app(&web).await.unwrap();
    let grant = code(&web, &ada, &acme, 1);
    store.insert_code(&grant).await.unwrap();
    let tokens = pair(&grant, 10);
    store
        .redeem_code(&grant.hash, Timestamp(150), &tokens)
        .await
        .unwrap();
    store
        .rotate_refresh_token(&tokens[1].id, Timestamp(160), None, &pair(&grant, 20))
        .await
        .unwrap();
    assert!(log(&*store).await.is_empty());

    let mut cursor = 0;
    let mut expect = async |expected: Vec<Invalidation>, what: &str| {
        assert_eq!(logged_since(&*store, cursor).await, expected, "{what}");
        cursor = store.invalidation_cursor().await.unwrap();
    };

    // Apps: a new secret logs the app (cached copies hold the old one);
    // an app that does not exist or is public has none to change.
    let web_changed = Invalidation::App(web.client_id.clone());
    assert!(
        store
            .set_app_secret(&web.client_id, &SecretHash([0xc1; 32]), None)
            .await
            .unwrap()
    );
    assert!(
        !store
            .set_app_secret(&ClientId("nope".into()), &SecretHash([0xc1; 32]), None)
            .await
            .unwrap()
    );
    expect(vec![web_changed.clone()], "app secret set").await;

    // Memberships: a change or removal logs the user; nothing done, nothing logged.
    store
        .upsert_membership(&acme.id, &ada.id, Role::Member)
        .await
        .unwrap();
    store
        .upsert_membership(&acme.id, &ada.id, Role::Admin)
        .await
        .unwrap();
    let member = Invalidation::Membership(ada.id.clone());
    expect(vec![member.clone(), member.clone()], "membership upserts").await;
    assert!(
        store
            .upsert_membership(&acme.id, &UserId("ghost".into()), Role::Guest)
            .await
            .is_err()
    );
    expect(vec![], "a failed upsert").await;
    assert!(store.delete_membership(&acme.id, &ada.id).await.unwrap());
    assert!(!store.delete_membership(&acme.id, &ada.id).await.unwrap());
    expect(vec![member], "one membership removed").await;

    // Keys: created and revoked (each revocation call, even a repeat);
    // usage is not an invalidation.
    let k = key(KeyKind::Workspace, Some(&acme), Some(&ada), 7);
    store.insert_api_key(&k).await.unwrap();
    expect(vec![Invalidation::KeyCreated(k.hash)], "key created").await;
    store
        .record_key_usage(&[(k.id.clone(), Timestamp(90))])
        .await
        .unwrap();
    expect(vec![], "key usage").await;
    store.revoke_api_key(&k.id, Timestamp(100)).await.unwrap();
    store.revoke_api_key(&k.id, Timestamp(110)).await.unwrap();
    store
        .revoke_api_key(&velocity_domain::ApiKeyId("none".into()), Timestamp(110))
        .await
        .unwrap();
    expect(
        vec![
            Invalidation::KeyRevoked(k.hash),
            Invalidation::KeyRevoked(k.hash),
        ],
        "key revocations",
    )
    .await;

    // OAuth: revoking tokens and deleting an app, when they change anything.
    assert!(
        store
            .revoke_token(&tokens[0].id, Timestamp(200))
            .await
            .unwrap()
    );
    assert!(
        !store
            .revoke_token(&tokens[0].id, Timestamp(210))
            .await
            .unwrap()
    );
    expect(vec![Invalidation::AccessTokens], "token revoked once").await;
    assert!(
        store
            .revoke_family(&grant.family_id, Timestamp(220))
            .await
            .unwrap()
            > 0
    );
    assert_eq!(
        store
            .revoke_family(&grant.family_id, Timestamp(230))
            .await
            .unwrap(),
        0
    );
    expect(vec![Invalidation::AccessTokens], "family revoked once").await;
    assert!(store.delete_app(&ClientId("web".into())).await.unwrap());
    assert!(!store.delete_app(&ClientId("web".into())).await.unwrap());
    expect(
        vec![Invalidation::AccessTokens, web_changed],
        "app deleted once",
    )
    .await;

    // Ids grow, and the cursor is the newest.
    let entries = log(&*store).await;
    assert!(entries.windows(2).all(|w| w[0].0 < w[1].0));
    assert_eq!(
        store.invalidation_cursor().await.unwrap(),
        entries.last().unwrap().0
    );
}

pub async fn paging_story(store: Arc<dyn Store>) {
    let (_, acme) = ada_in_acme(&*store).await;
    let mut expected = Vec::new();
    for n in 0..7 {
        let member = user(&format!("member-{n}"));
        store.insert_user(&member).await.unwrap();
        store
            .upsert_membership(&acme.id, &member.id, Role::Member)
            .await
            .unwrap();
        expected.push(Invalidation::Membership(member.id));
    }
    let entries = log(&*store).await;
    assert_eq!(
        entries.iter().map(|(_, e)| e.clone()).collect::<Vec<_>>(),
        expected
    );

    // Pages of three, oldest first, picking up where the last one ended.
    let mut paged = Vec::new();
    let mut cursor = 0;
    loop {
        let page = store.invalidations_after(cursor, 3).await.unwrap();
        assert!(page.len() <= 3);
        let Some((last, _)) = page.last() else { break };
        cursor = *last;
        paged.extend(page);
    }
    assert_eq!(paged, entries);
    assert_eq!(store.invalidation_cursor().await.unwrap(), cursor);

    // A closed range of ids.
    let (from, to) = (entries[2].0, entries[4].0);
    assert_eq!(
        store.invalidations_between(from, to).await.unwrap(),
        entries[2..=4].to_vec()
    );
    assert_eq!(
        store.invalidations_between(from, from).await.unwrap(),
        entries[2..=2].to_vec()
    );
    assert!(
        store
            .invalidations_between(cursor + 1, cursor + 10)
            .await
            .unwrap()
            .is_empty()
    );

    // Pruning drops entries older than the given time (they are stamped
    // with the wall clock), and later ids still grow.
    assert_eq!(store.prune_invalidations(Timestamp(0)).await.unwrap(), 0);
    assert_eq!(log(&*store).await, entries);
    let tomorrow = Timestamp(wall_clock_ms() + 86_400_000);
    assert_eq!(store.prune_invalidations(tomorrow).await.unwrap(), 7);
    assert!(log(&*store).await.is_empty());
    store
        .delete_membership(&acme.id, &UserId("member-0".into()))
        .await
        .unwrap();
    let after = log(&*store).await;
    assert_eq!(after.len(), 1);
    assert!(after[0].0 > cursor, "ids are not reused after pruning");
}

pub async fn hash_paging_story(store: Arc<dyn Store>) {
    let (ada, acme) = ada_in_acme(&*store).await;

    // Keys, inserted out of hash order; revoked keys are still known keys.
    let key_bytes = [9u8, 3, 7, 1, 5];
    for n in key_bytes {
        store
            .insert_api_key(&key(KeyKind::Workspace, Some(&acme), Some(&ada), n))
            .await
            .unwrap();
    }
    let revoked = key(KeyKind::Personal, None, Some(&ada), 4);
    store.insert_api_key(&revoked).await.unwrap();
    store
        .revoke_api_key(&revoked.id, Timestamp(5))
        .await
        .unwrap();
    let all: Vec<SecretHash> = [1, 3, 4, 5, 7, 9].map(|n| SecretHash([n; 32])).to_vec();
    assert_eq!(store.key_hashes_after(None, 100).await.unwrap(), all);
    assert_eq!(
        pages(async |after| store.key_hashes_after(after, 4).await).await,
        all
    );
    assert_eq!(
        store
            .key_hashes_after(Some(&SecretHash([5; 32])), 2)
            .await
            .unwrap(),
        vec![SecretHash([7; 32]), SecretHash([9; 32])]
    );

    // Access tokens: unexpired and unrevoked only; refresh tokens never.
    let web = app("web", ClientType::Confidential, 10);
    store.insert_app(&web).await.unwrap();
    let grant = code(&web, &ada, &acme, 1);
    store.insert_code(&grant).await.unwrap();
    let now = Timestamp(1_000);
    let family = &grant.family_id;
    let tokens = vec![
        token(TokenKind::Access, family, &grant, 60, 5_000),
        token(TokenKind::Access, family, &grant, 20, 5_000),
        token(TokenKind::Access, family, &grant, 40, 1_001),
        token(TokenKind::Access, family, &grant, 30, 1_000), // expires now
        token(TokenKind::Access, family, &grant, 10, 999),   // expired
        token(TokenKind::Refresh, family, &grant, 50, 5_000),
        token(TokenKind::Access, family, &grant, 70, 5_000), // revoked below
    ];
    store
        .redeem_code(&grant.hash, Timestamp(150), &tokens)
        .await
        .unwrap();
    store
        .revoke_token(&TokenId("token-70".into()), Timestamp(900))
        .await
        .unwrap();
    let live: Vec<SecretHash> = [20, 40, 60].map(|n| SecretHash([n; 32])).to_vec();
    assert_eq!(
        store
            .access_token_hashes_after(None, 100, now)
            .await
            .unwrap(),
        live
    );
    assert_eq!(
        pages(async |after| store.access_token_hashes_after(after, 1, now).await).await,
        live
    );
}

/// Follows `page` from the start until it returns an empty page.
async fn pages(
    page: impl AsyncFn(Option<&SecretHash>) -> velocity_domain::store::StoreResult<Vec<SecretHash>>,
) -> Vec<SecretHash> {
    let mut all: Vec<SecretHash> = Vec::new();
    loop {
        let next = page(all.last()).await.unwrap();
        if next.is_empty() {
            return all;
        }
        all.extend(next);
    }
}

/// A PostgreSQL sequence hands out ids at INSERT, but transactions commit
/// in any order: a reader can see id N+1 while N is still invisible. The
/// poller then looks again with `invalidations_between`.
pub async fn out_of_order_story() {
    let (_guard, db) = open(Backend::Postgres).await;
    let Database::Postgres(pg) = &db else {
        panic!("a PostgreSQL database opened as {}", db.backend());
    };
    let store = db.store();
    let (ada, acme) = ada_in_acme(&*store).await;
    let cursor = store.invalidation_cursor().await.unwrap();

    // Takes id N and holds it uncommitted.
    let mut slow = pg.pool().begin().await.unwrap();
    let n: i64 = sqlx::query_scalar(
        "INSERT INTO invalidations (payload, created_at) VALUES ($1, $2) RETURNING id",
    )
    .bind(Invalidation::AccessTokens.encode())
    .bind(wall_clock_ms())
    .fetch_one(&mut *slow)
    .await
    .unwrap();

    // Takes id N+1 and commits.
    store
        .upsert_membership(&acme.id, &ada.id, Role::Member)
        .await
        .unwrap();
    let member = Invalidation::Membership(ada.id.clone());
    assert_eq!(
        store.invalidations_after(cursor, 100).await.unwrap(),
        vec![(n + 1, member.clone())],
        "N is not visible yet"
    );
    assert_eq!(store.invalidation_cursor().await.unwrap(), n + 1);
    assert!(store.invalidations_between(n, n).await.unwrap().is_empty());

    slow.commit().await.unwrap();
    assert_eq!(
        store.invalidations_between(n, n).await.unwrap(),
        vec![(n, Invalidation::AccessTokens)]
    );
    assert_eq!(
        store.invalidations_after(cursor, 100).await.unwrap(),
        vec![(n, Invalidation::AccessTokens), (n + 1, member)]
    );
    db.close().await;
}

/// PostgreSQL only: a logged invalidation wakes other replicas' listeners
/// at once. SQLite has no channel between processes; its replicas poll.
pub async fn notify_story() {
    let (_guard, db) = open(Backend::Postgres).await;
    let Database::Postgres(pg) = &db else {
        panic!("a PostgreSQL database opened as {}", db.backend());
    };
    let store = db.store();
    let (ada, acme) = ada_in_acme(&*store).await;
    let woken = Arc::new(tokio::sync::Notify::new());
    let listener = tokio::spawn({
        let (pg, woken) = (pg.clone(), woken.clone());
        async move { pg.listen_for_invalidations(woken).await }
    });
    let wait = |ms| tokio::time::timeout(Duration::from_millis(ms), woken.notified());
    wait(5_000)
        .await
        .expect("the listener wakes once on connecting");
    wait(200)
        .await
        .expect_err("nothing logged, nothing to wake for");

    store
        .upsert_membership(&acme.id, &ada.id, Role::Member)
        .await
        .unwrap();
    wait(5_000)
        .await
        .expect("a logged invalidation wakes the listener");
    listener.abort();
    db.close().await;
}

fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
