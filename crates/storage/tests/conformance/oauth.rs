//! OAuth apps, codes, tokens and shared secrets, and the races the
//! conditional updates must settle.

use std::sync::Arc;

use velocity_domain::oauth::{ClientId, ClientType, TokenId, TokenKind};
use velocity_domain::page::PageRequest;
use velocity_domain::store::StoreResult;
use velocity_domain::{SecretHash, Store, StoreError, Timestamp};
use velocity_storage::{PostgresStore, SqliteStore};

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
        store.list_apps(None, &PageRequest::first()).await.unwrap(),
        vec![cli.clone(), web.clone()],
        "apps are listed oldest first"
    );
    assert!(
        store
            .set_app_secret(&ClientId("web".into()), &SecretHash([0xc1; 32]), None)
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
            .set_app_secret(&ClientId("nope".into()), &SecretHash([0xc1; 32]), None)
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

    // A refresh token rotates once (without a reuse interval).
    let refresh = &first[1];
    let rotated = pair(&grant, 30);
    assert!(
        store
            .rotate_refresh_token(&refresh.id, Timestamp(300), None, &rotated)
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
            .rotate_refresh_token(&refresh.id, Timestamp(310), None, &again)
            .await
            .unwrap()
    );
    for t in &again {
        assert_eq!(store.token_by_hash(&t.hash).await.unwrap(), None);
    }
    // Access tokens never rotate.
    assert!(
        !store
            .rotate_refresh_token(&rotated[0].id, Timestamp(310), None, &again)
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
            .rotate_refresh_token(&rotated[1].id, Timestamp(520), None, &again)
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
        store.list_apps(None, &PageRequest::first()).await.unwrap(),
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

/// The refresh reuse interval: a rotated token is claimed again while its
/// rotation is at or after `reuse_since` and the latest of its family; the
/// first rotation time is kept, and what the window issued joins the family.
pub async fn refresh_reuse_story(store: Arc<dyn Store>) {
    let (ada, acme) = ada_in_acme(&*store).await;
    let web = app("web", ClientType::Confidential, 10);
    store.insert_app(&web).await.unwrap();
    let grant = code(&web, &ada, &acme, 1);
    store.insert_code(&grant).await.unwrap();
    let first = pair(&grant, 10);
    assert!(
        store
            .redeem_code(&grant.hash, Timestamp(150), &first)
            .await
            .unwrap()
    );
    let refresh = &first[1];
    let rotate = async |id: &TokenId, at: i64, since: Option<i64>, n: u8| {
        store
            .rotate_refresh_token(id, Timestamp(at), since.map(Timestamp), &pair(&grant, n))
            .await
            .unwrap()
    };

    // An unrotated token is claimed with or without a window.
    assert!(rotate(&refresh.id, 300, Some(290), 20).await);
    assert_eq!(rotated_at(&*store, refresh).await, Some(Timestamp(300)));
    // Inside the window (the bound included): claimed again, and again,
    // without moving the rotation time.
    assert!(rotate(&refresh.id, 305, Some(295), 30).await);
    assert!(rotate(&refresh.id, 308, Some(300), 40).await);
    assert_eq!(rotated_at(&*store, refresh).await, Some(Timestamp(300)));
    for n in [20, 30, 40] {
        assert_eq!(stored_pair(&*store, &grant, n).await, 2, "pair {n}");
    }
    // Rotated before `reuse_since`, or no window at all: refused, nothing stored.
    assert!(!rotate(&refresh.id, 312, Some(301), 50).await);
    assert!(!rotate(&refresh.id, 309, None, 52).await);
    assert_eq!(stored_pair(&*store, &grant, 50).await, 0);
    assert_eq!(stored_pair(&*store, &grant, 52).await, 0);
    // Access tokens never rotate, window or not.
    assert!(!rotate(&first[0].id, 309, Some(0), 54).await);

    // Once a token issued from it rotates, it is further back in the chain:
    // refused even inside the window.
    let child = pair(&grant, 20).remove(1);
    assert!(rotate(&child.id, 320, None, 60).await);
    assert!(!rotate(&refresh.id, 321, Some(290), 70).await);
    assert_eq!(stored_pair(&*store, &grant, 70).await, 0);
    // The child is now the family's latest rotation.
    assert!(rotate(&child.id, 322, Some(315), 72).await);

    // Everything the window issued belongs to the family: revoking it takes
    // the first pair, the three pairs from `refresh`, and the two from `child`.
    assert_eq!(
        store
            .revoke_family(&grant.family_id, Timestamp(400))
            .await
            .unwrap(),
        12
    );
    // Revoked: refused even inside the window.
    assert!(!rotate(&child.id, 401, Some(0), 80).await);
    assert_eq!(stored_pair(&*store, &grant, 80).await, 0);
}

/// Attempts per race: several times the connections of a pool.
const RACERS: u8 = 50;

/// Starts `RACERS` attempts, `attempt(i)` each, and returns their results
/// in order. With `one_batch` (SQLite), the writer is held inside a
/// transaction until every attempt has queued, so all of them then run in
/// one transaction, one after another.
async fn race<Fut>(
    one_batch: Option<&SqliteStore>,
    attempt: impl Fn(u8) -> Fut,
) -> Vec<StoreResult<bool>>
where
    Fut: Future<Output = StoreResult<bool>> + Send + 'static,
{
    let held = match one_batch {
        Some(sqlite) => Some(sqlite.hold_writes().await.expect("SQLite has a writer")),
        None => None,
    };
    let attempts: Vec<_> = (0..RACERS).map(|i| tokio::spawn(attempt(i))).collect();
    let mut before = None;
    if let (Some(held), Some(sqlite)) = (held, one_batch) {
        // Waiting for a state, not for time: every attempt is queued.
        while sqlite.queued_writes() < usize::from(RACERS) {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        before = Some(sqlite.writer_stats().unwrap().batches());
        held.release().await.unwrap();
    }
    let mut results = Vec::new();
    for attempt in attempts {
        results.push(attempt.await.unwrap());
    }
    if let (Some(before), Some(sqlite)) = (before, one_batch) {
        let stats = sqlite.writer_stats().unwrap();
        assert!(
            stats.largest_batch() >= usize::from(RACERS),
            "every attempt ran in one transaction (largest batch {})",
            stats.largest_batch()
        );
        // Claims run on the grants' own connection, in batches of their
        // own: the hold's transaction, then the attempts' one.
        assert_eq!(stats.batches(), before + 2, "one batch, one commit");
    }
    results
}

/// Which racers won.
fn winners(results: Vec<StoreResult<bool>>) -> Vec<u8> {
    (0..RACERS)
        .zip(results)
        .filter_map(|(i, won)| won.unwrap().then_some(i))
        .collect()
}

pub async fn concurrent_redeem_story(store: Arc<dyn Store>) {
    redeem_race(store, None).await;
}

/// SQLite: every redeem of the code in one transaction; the first claims
/// it, and the others' conditional updates see that claim.
pub async fn redeem_in_one_batch_story(store: Arc<dyn Store>, sqlite: Arc<SqliteStore>) {
    redeem_race(store, Some(&sqlite)).await;
}

async fn redeem_race(store: Arc<dyn Store>, one_batch: Option<&SqliteStore>) {
    let (ada, acme) = ada_in_acme(&*store).await;
    let web = app("web", ClientType::Confidential, 10);
    store.insert_app(&web).await.unwrap();
    let grant = code(&web, &ada, &acme, 1);
    store.insert_code(&grant).await.unwrap();

    // Racer i offers tokens with hashes 10 + 2i and 11 + 2i.
    let results = race(one_batch, |i| {
        let store = store.clone();
        let tokens = pair(&grant, 10 + 2 * i);
        let hash = grant.hash;
        async move { store.redeem_code(&hash, Timestamp(150), &tokens).await }
    })
    .await;
    let winners = winners(results);
    assert_eq!(winners.len(), 1, "exactly one redeem wins: {winners:?}");
    assert_eq!(stored_tokens(&*store, &grant, winners[0]).await, 2);
    assert_eq!(
        stored_racer_tokens(&*store, &grant).await,
        2,
        "only the winner's tokens are stored"
    );
}

/// Concurrent exchanges of one code spent as presented (unread, as on a
/// replica that did not issue it): exactly one wins, and only it is
/// answered with the code.
pub async fn concurrent_presented_story(store: Arc<dyn Store>) {
    presented_race(store, None).await;
}

/// SQLite: the same, every claim in one transaction.
pub async fn presented_in_one_batch_story(store: Arc<dyn Store>, sqlite: Arc<SqliteStore>) {
    presented_race(store, Some(&sqlite)).await;
}

async fn presented_race(store: Arc<dyn Store>, one_batch: Option<&SqliteStore>) {
    let (ada, acme) = ada_in_acme(&*store).await;
    let web = app("web", ClientType::Public, 10);
    store.insert_app(&web).await.unwrap();
    let grant = code(&web, &ada, &acme, 1);
    store.insert_code(&grant).await.unwrap();

    let answered = Arc::new(std::sync::Mutex::new(Vec::new()));
    let results = race(one_batch, |i| {
        let spending = presenting(&store, &grant, &grant.code_challenge, 10 + 2 * i);
        let answered = answered.clone();
        async move {
            let code = spending.await?;
            let won = code.is_some();
            answered.lock().unwrap().extend(code);
            Ok(won)
        }
    })
    .await;
    let winners = winners(results);
    assert_eq!(winners.len(), 1, "exactly one exchange wins: {winners:?}");
    let answered = answered.lock().unwrap().clone();
    assert_eq!(
        answered,
        vec![velocity_domain::oauth::AuthorizationCode {
            used_at: Some(Timestamp(150)),
            ..grant.clone()
        }],
        "only the winner is answered with the code"
    );
    assert_eq!(stored_tokens(&*store, &grant, winners[0]).await, 2);
    assert_eq!(
        stored_racer_tokens(&*store, &grant).await,
        2,
        "only the winner's tokens are stored"
    );
}

/// Without a reuse interval, of concurrent rotations exactly one wins.
pub async fn concurrent_rotation_story(store: Arc<dyn Store>) {
    rotation_race(store, None).await;
}

/// SQLite: every rotation of the token in one transaction.
pub async fn rotation_in_one_batch_story(store: Arc<dyn Store>, sqlite: Arc<SqliteStore>) {
    rotation_race(store, Some(&sqlite)).await;
}

async fn rotation_race(store: Arc<dyn Store>, one_batch: Option<&SqliteStore>) {
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

    let results = race(one_batch, |i| {
        let store = store.clone();
        let tokens = pair(&grant, 10 + 2 * i);
        let id = refresh.id.clone();
        async move {
            store
                .rotate_refresh_token(&id, Timestamp(300), None, &tokens)
                .await
        }
    })
    .await;
    let winners = winners(results);
    assert_eq!(winners.len(), 1, "exactly one rotation wins: {winners:?}");
    assert_eq!(stored_tokens(&*store, &grant, winners[0]).await, 2);
    assert_eq!(
        stored_racer_tokens(&*store, &grant).await,
        2,
        "only the winner's tokens are stored"
    );
}

/// Inside a reuse interval, concurrent refreshes of one token each win:
/// one rotates it, the others reuse it, and every pair is stored.
pub async fn concurrent_reuse_story(store: Arc<dyn Store>) {
    reuse_race(store, None).await;
}

/// SQLite: the same, every refresh in one transaction.
pub async fn reuse_in_one_batch_story(store: Arc<dyn Store>, sqlite: Arc<SqliteStore>) {
    reuse_race(store, Some(&sqlite)).await;
}

async fn reuse_race(store: Arc<dyn Store>, one_batch: Option<&SqliteStore>) {
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

    let results = race(one_batch, |i| {
        let store = store.clone();
        let tokens = pair(&grant, 10 + 2 * i);
        let id = refresh.id.clone();
        let at = Timestamp(300 + i64::from(i));
        async move {
            store
                .rotate_refresh_token(&id, at, Some(Timestamp(290)), &tokens)
                .await
        }
    })
    .await;
    assert_eq!(
        winners(results).len(),
        usize::from(RACERS),
        "every racer wins"
    );
    assert_eq!(
        stored_racer_tokens(&*store, &grant).await,
        2 * usize::from(RACERS)
    );
    let first = rotated_at(&*store, &refresh).await.unwrap();
    assert!(
        (Timestamp(300)..Timestamp(300 + i64::from(RACERS))).contains(&first),
        "one racer's time is kept: {first:?}"
    );
}

async fn rotated_at(
    store: &dyn Store,
    token: &velocity_domain::oauth::OAuthToken,
) -> Option<Timestamp> {
    store
        .token_by_hash(&token.hash)
        .await
        .unwrap()
        .unwrap()
        .rotated_at
}

/// How many of racer `i`'s tokens are stored.
async fn stored_tokens(
    store: &dyn Store,
    grant: &velocity_domain::oauth::AuthorizationCode,
    i: u8,
) -> usize {
    stored_pair(store, grant, 10 + 2 * i).await
}

/// How many of `pair(grant, n)` are stored.
async fn stored_pair(
    store: &dyn Store,
    grant: &velocity_domain::oauth::AuthorizationCode,
    n: u8,
) -> usize {
    let mut found = 0;
    for t in pair(grant, n) {
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

/// SQLite: writes that fail in a batch roll back alone and are answered
/// alone; the rest of the batch commits.
pub async fn failure_in_one_batch_story(store: Arc<dyn Store>, sqlite: Arc<SqliteStore>) {
    let (ada, acme) = ada_in_acme(&*store).await;
    let web = app("web", ClientType::Confidential, 10);
    store.insert_app(&web).await.unwrap();
    let grant = code(&web, &ada, &acme, 1);
    let orphan = code(&app("nope", ClientType::Public, 11), &ada, &acme, 2);
    let cli = app("cli", ClientType::Public, 12);
    // A claim that wins, then fails on its tokens (they name no user): the
    // claim must be undone with them, the code left unspent.
    let spent_in_vain = code(&web, &ada, &acme, 3);
    store.insert_code(&spent_in_vain).await.unwrap();
    let mut dangling = pair(&spent_in_vain, 30);
    for token in &mut dangling {
        token.user_id = velocity_domain::UserId("nobody".into());
    }
    let redeemable = code(&web, &ada, &acme, 4);
    store.insert_code(&redeemable).await.unwrap();

    type Write = std::pin::Pin<Box<dyn Future<Output = StoreResult<()>> + Send>>;
    // Statements (apps) join the hold's transaction; the grants' connection
    // runs codes and claims in one of its own. Each set is one batch.
    let [duplicate, cli_write] = in_one_batch(
        &sqlite,
        1,
        [
            Box::pin({
                let (store, web) = (store.clone(), web.clone());
                async move { store.insert_app(&web).await }
            }) as Write,
            Box::pin({
                let (store, cli) = (store.clone(), cli.clone());
                async move { store.insert_app(&cli).await }
            }),
        ],
    )
    .await;
    let [code_write, missing, failed_claim, claim] = in_one_batch(
        &sqlite,
        2,
        [
            Box::pin({
                let (store, grant) = (store.clone(), grant.clone());
                async move { store.insert_code(&grant).await }
            }) as Write,
            Box::pin({
                let (store, orphan) = (store.clone(), orphan.clone());
                async move { store.insert_code(&orphan).await }
            }),
            Box::pin({
                let (store, hash) = (store.clone(), spent_in_vain.hash);
                async move {
                    let won = store.redeem_code(&hash, Timestamp(150), &dangling).await?;
                    assert!(won, "a failed claim answers with its error");
                    Ok(())
                }
            }),
            Box::pin({
                let (store, hash, tokens) = (store.clone(), redeemable.hash, pair(&redeemable, 40));
                async move {
                    let won = store.redeem_code(&hash, Timestamp(150), &tokens).await?;
                    assert!(won, "the claim after a failed one wins");
                    Ok(())
                }
            }),
        ],
    )
    .await;
    code_write.unwrap();
    assert!(matches!(duplicate, Err(StoreError::Conflict("app"))));
    assert!(matches!(missing, Err(StoreError::MissingReference("code"))));
    cli_write.unwrap();
    assert!(matches!(
        failed_claim,
        Err(StoreError::MissingReference("code"))
    ));
    claim.unwrap();
    let unspent = store.code_by_hash(&spent_in_vain.hash).await.unwrap();
    assert_eq!(
        unspent.and_then(|c| c.used_at),
        None,
        "the claim was undone"
    );
    for token in pair(&spent_in_vain, 30) {
        assert_eq!(store.token_by_hash(&token.hash).await.unwrap(), None);
    }
    let spent = store.code_by_hash(&redeemable.hash).await.unwrap();
    assert_eq!(spent.and_then(|c| c.used_at), Some(Timestamp(150)));
    for token in pair(&redeemable, 40) {
        assert!(store.token_by_hash(&token.hash).await.unwrap().is_some());
    }
    assert_eq!(store.code_by_hash(&grant.hash).await.unwrap(), Some(grant));
    assert_eq!(store.code_by_hash(&orphan.hash).await.unwrap(), None);
    assert_eq!(store.app(&cli.client_id).await.unwrap(), Some(cli));
    assert_eq!(store.app(&web.client_id).await.unwrap(), Some(web));
}

/// Runs `writes` while the writer is held, so they queue together, then
/// lets them go; their results in order, once each is answered. They ran
/// in one transaction if the writer committed `batches` in all: the hold's
/// alone (1) when they joined it, 2 when they ran in a batch of their own
/// after it.
async fn in_one_batch<const N: usize>(
    sqlite: &SqliteStore,
    batches: usize,
    writes: [std::pin::Pin<Box<dyn Future<Output = StoreResult<()>> + Send>>; N],
) -> [StoreResult<()>; N] {
    let held = sqlite.hold_writes().await.unwrap();
    let writes = writes.map(tokio::spawn);
    // Waiting for a state, not for time: every write is queued.
    while sqlite.queued_writes() < N {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    let before = sqlite.writer_stats().unwrap().batches();
    held.release().await.unwrap();
    let mut results = Vec::new();
    for write in writes {
        results.push(write.await.unwrap());
    }
    assert_eq!(sqlite.writer_stats().unwrap().batches(), before + batches);
    match results.try_into() {
        Ok(results) => results,
        Err(_) => unreachable!("one result per write"),
    }
}

type Claiming = std::pin::Pin<Box<dyn Future<Output = StoreResult<bool>> + Send>>;

/// A code spent as presented: the code as the claim left it, if it won.
type Spending = std::pin::Pin<
    Box<dyn Future<Output = StoreResult<Option<velocity_domain::oauth::AuthorizationCode>>> + Send>,
>;

/// Runs `claims` while PostgreSQL's batcher is held, so they queue
/// together, then lets them go; their results in order. They went in
/// `statements` statements in all.
async fn in_statements<T: Send + 'static, const N: usize>(
    pg: &PostgresStore,
    statements: usize,
    claims: [std::pin::Pin<Box<dyn Future<Output = T> + Send>>; N],
) -> [T; N] {
    let held = pg.hold_claims().await.expect("PostgreSQL has a batcher");
    let before = pg.claim_stats().unwrap().statements();
    let claims = claims.map(tokio::spawn);
    // Waiting for a state, not for time: every claim is queued.
    while pg.queued_claims() < N {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    held.release();
    let mut results = Vec::new();
    for claim in claims {
        results.push(claim.await.unwrap());
    }
    assert_eq!(
        pg.claim_stats().unwrap().statements(),
        before + statements,
        "claims in {statements} statement(s)"
    );
    match results.try_into() {
        Ok(results) => results,
        Err(_) => unreachable!("one result per claim"),
    }
}

fn redeeming(
    store: &Arc<dyn Store>,
    code: &velocity_domain::oauth::AuthorizationCode,
    tokens: Vec<velocity_domain::oauth::OAuthToken>,
) -> Claiming {
    let (store, hash) = (store.clone(), code.hash);
    Box::pin(async move { store.redeem_code(&hash, Timestamp(150), &tokens).await })
}

/// PostgreSQL: claims queued together go in one statement and each gets
/// its own answer; a statement refused whole is run claim by claim; two
/// claims of one code never share a statement, and one of them wins.
pub async fn claims_in_one_statement_story(store: Arc<dyn Store>, pg: Arc<PostgresStore>) {
    let (ada, acme) = ada_in_acme(&*store).await;
    let web = app("web", ClientType::Confidential, 10);
    store.insert_app(&web).await.unwrap();
    let codes: Vec<_> = (1..=6).map(|n| code(&web, &ada, &acme, n)).collect();
    for c in &codes {
        store.insert_code(c).await.unwrap();
    }
    let [c1, c2, spent, c4, c5, c6] = &codes[..] else {
        unreachable!("six codes")
    };
    assert!(
        store
            .redeem_code(&spent.hash, Timestamp(120), &pair(spent, 24))
            .await
            .unwrap()
    );

    // Two live codes and a spent one, in one statement.
    let [first, second, again] = in_statements(
        &pg,
        1,
        [
            redeeming(&store, c1, pair(c1, 20)),
            redeeming(&store, c2, pair(c2, 22)),
            redeeming(&store, spent, pair(spent, 26)),
        ],
    )
    .await;
    assert!(first.unwrap() && second.unwrap(), "both live codes are won");
    assert!(!again.unwrap(), "the spent code is not");
    assert_eq!(stored_pair(&*store, c1, 20).await, 2);
    assert_eq!(stored_pair(&*store, c2, 22).await, 2);
    assert_eq!(stored_pair(&*store, spent, 26).await, 0);

    // Two rotations, of two grants, in one statement.
    let rotating =
        |code: &velocity_domain::oauth::AuthorizationCode, from: u8, n: u8| -> Claiming {
            let store = store.clone();
            let id = TokenId(format!("token-{from}"));
            let tokens = pair(code, n);
            Box::pin(async move {
                store
                    .rotate_refresh_token(&id, Timestamp(300), None, &tokens)
                    .await
            })
        };
    let [r1, r2] = in_statements(&pg, 1, [rotating(c1, 21, 50), rotating(c2, 23, 52)]).await;
    assert!(r1.unwrap() && r2.unwrap(), "both rotations win");
    assert_eq!(stored_pair(&*store, c1, 50).await, 2);
    assert_eq!(stored_pair(&*store, c2, 52).await, 2);

    // Tokens naming no user: PostgreSQL refuses the statement, and each
    // claim is then run apart: the bad one fails alone, unspent.
    let mut dangling = pair(c4, 30);
    for token in &mut dangling {
        token.user_id = velocity_domain::UserId("nobody".into());
    }
    let retried = pg.claim_stats().unwrap().retried();
    let [failed, won] = in_statements(
        &pg,
        1,
        [
            redeeming(&store, c4, dangling),
            redeeming(&store, c5, pair(c5, 32)),
        ],
    )
    .await;
    assert!(matches!(failed, Err(StoreError::MissingReference("code"))));
    assert!(won.unwrap(), "the good claim wins on its own");
    assert_eq!(pg.claim_stats().unwrap().retried(), retried + 2);
    let unspent = store.code_by_hash(&c4.hash).await.unwrap();
    assert_eq!(
        unspent.and_then(|c| c.used_at),
        None,
        "nothing of it stayed"
    );
    assert_eq!(stored_pair(&*store, c5, 32).await, 2);

    // One code twice: two statements, one winner, one pair stored.
    let [a, b] = in_statements(
        &pg,
        2,
        [
            redeeming(&store, c6, pair(c6, 40)),
            redeeming(&store, c6, pair(c6, 42)),
        ],
    )
    .await;
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(a != b, "exactly one of the two wins");
    let stored = stored_pair(&*store, c6, 40).await + stored_pair(&*store, c6, 42).await;
    assert_eq!(stored, 2, "only the winner's tokens are stored");

    // Codes spent as presented go together too, each winner answered with
    // its own code's row; one presented with another verifier wins nothing.
    let presented: Vec<_> = (7..=9).map(|n| code(&web, &ada, &acme, n)).collect();
    for c in &presented {
        store.insert_code(c).await.unwrap();
    }
    let [p7, p8, p9] = &presented[..] else {
        unreachable!("three codes")
    };
    let [first, second, wrong] = in_statements(
        &pg,
        1,
        [
            presenting(&store, p7, &p7.code_challenge, 60),
            presenting(&store, p8, &p8.code_challenge, 62),
            presenting(&store, p9, &"A".repeat(43), 64),
        ],
    )
    .await;
    let spent = |c: &velocity_domain::oauth::AuthorizationCode| {
        Some(velocity_domain::oauth::AuthorizationCode {
            used_at: Some(Timestamp(150)),
            ..c.clone()
        })
    };
    assert_eq!(first.unwrap(), spent(p7), "the first gets its own code");
    assert_eq!(second.unwrap(), spent(p8), "the second gets its own code");
    assert_eq!(wrong.unwrap(), None, "the wrong verifier wins nothing");
    assert_eq!(stored_pair(&*store, p7, 60).await, 2);
    assert_eq!(stored_pair(&*store, p8, 62).await, 2);
    assert_eq!(stored_pair(&*store, p9, 64).await, 0);
    assert_eq!(
        store.code_by_hash(&p9.hash).await.unwrap().unwrap().used_at,
        None
    );

    // One code presented twice: two statements, one winner.
    let [a, b] = in_statements(
        &pg,
        2,
        [
            presenting(&store, p9, &p9.code_challenge, 66),
            presenting(&store, p9, &p9.code_challenge, 68),
        ],
    )
    .await;
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(a.is_some() != b.is_some(), "exactly one of the two wins");
    assert_eq!(a.or(b), spent(p9));
    let stored = stored_pair(&*store, p9, 66).await + stored_pair(&*store, p9, 68).await;
    assert_eq!(stored, 2, "only the winner's tokens are stored");
}

/// `code` spent as presented with `challenge`, issuing the seeds of
/// [`pair`]`(code, n)`.
fn presenting(
    store: &Arc<dyn Store>,
    code: &velocity_domain::oauth::AuthorizationCode,
    challenge: &str,
    n: u8,
) -> Spending {
    use velocity_domain::oauth::{PresentedCode, TokenSeed};
    let store = store.clone();
    let code = code.clone();
    let challenge = challenge.to_owned();
    let seeds: Vec<TokenSeed> = pair(&code, n)
        .into_iter()
        .map(|t| TokenSeed {
            id: t.id,
            hash: t.hash,
            kind: t.kind,
            expires_at: t.expires_at,
        })
        .collect();
    Box::pin(async move {
        let presented = PresentedCode {
            hash: &code.hash,
            client_id: &code.client_id,
            redirect_uri: &code.redirect_uri,
            code_challenge: &challenge,
        };
        store
            .redeem_presented_code(&presented, Timestamp(150), &seeds)
            .await
    })
}

/// A code spent as presented, unread: only a code that passes every check
/// is spent, and its tokens and grant take the code's family, owner and
/// scopes; any mismatch, or an unknown code, changes nothing.
pub async fn presented_code_story(store: Arc<dyn Store>) {
    use velocity_domain::oauth::{PresentedCode, TokenSeed};

    let (ada, acme) = ada_in_acme(&*store).await;
    let web = app("web", ClientType::Public, 10);
    let other = app("other", ClientType::Public, 11);
    store.insert_app(&web).await.unwrap();
    store.insert_app(&other).await.unwrap();
    let stored = code(&web, &ada, &acme, 1);
    store.insert_code(&stored).await.unwrap();
    let seeds = [
        TokenSeed {
            id: TokenId("seed-access".into()),
            hash: SecretHash([0xa1; 32]),
            kind: TokenKind::Access,
            expires_at: Timestamp(3_800),
        },
        TokenSeed {
            id: TokenId("seed-refresh".into()),
            hash: SecretHash([0xa2; 32]),
            kind: TokenKind::Refresh,
            expires_at: Timestamp(90_000),
        },
    ];
    let as_issued = PresentedCode {
        hash: &stored.hash,
        client_id: &stored.client_id,
        redirect_uri: &stored.redirect_uri,
        code_challenge: &stored.code_challenge,
    };
    let unknown = SecretHash([0xee; 32]);
    let wrong_challenge = "A".repeat(43);
    let mismatches = [
        (
            "another client",
            PresentedCode {
                client_id: &other.client_id,
                ..as_issued
            },
            200,
        ),
        (
            "another redirect URI",
            PresentedCode {
                redirect_uri: &web.redirect_uris[1],
                ..as_issued
            },
            200,
        ),
        (
            "another challenge",
            PresentedCode {
                code_challenge: &wrong_challenge,
                ..as_issued
            },
            200,
        ),
        (
            "an unknown code",
            PresentedCode {
                hash: &unknown,
                ..as_issued
            },
            200,
        ),
        ("expired", as_issued, stored.expires_at.0),
    ];
    for (what, presented, at) in mismatches {
        let spent = store
            .redeem_presented_code(&presented, Timestamp(at), &seeds)
            .await
            .unwrap();
        assert_eq!(spent, None, "{what}: not spent");
        assert_eq!(
            store.code_by_hash(&stored.hash).await.unwrap(),
            Some(stored.clone()),
            "{what}: the code is unchanged"
        );
        for seed in &seeds {
            assert_eq!(
                store.token_by_hash(&seed.hash).await.unwrap(),
                None,
                "{what}"
            );
        }
        assert_eq!(
            store.grant(&stored.family_id).await.unwrap(),
            None,
            "{what}"
        );
    }

    // As issued and unexpired: spent, and the pair stored from its row.
    let spent = store
        .redeem_presented_code(&as_issued, Timestamp(200), &seeds)
        .await
        .unwrap();
    let mut expected = stored.clone();
    expected.used_at = Some(Timestamp(200));
    assert_eq!(spent, Some(expected.clone()));
    assert_eq!(
        store.code_by_hash(&stored.hash).await.unwrap(),
        Some(expected)
    );
    for seed in &seeds {
        let mut expected = token(
            seed.kind,
            &stored.family_id,
            &stored,
            seed.hash.0[0],
            seed.expires_at.0,
        );
        expected.id = seed.id.clone();
        let issued = store.token_by_hash(&seed.hash).await.unwrap();
        assert_eq!(
            issued,
            Some(expected),
            "created at 200, from the code's row"
        );
    }
    let grant = store.grant(&stored.family_id).await.unwrap().unwrap();
    assert_eq!(
        (
            &grant.client_id,
            &grant.user_id,
            &grant.workspace_id,
            grant.scopes
        ),
        (&web.client_id, &ada.id, &acme.id, stored.scopes)
    );
    assert_eq!(
        (grant.created_at, grant.last_used_at, grant.expires_at),
        (Timestamp(200), Timestamp(200), Timestamp(90_000))
    );

    // Once: presented again, nothing more.
    let other_seeds = [TokenSeed {
        id: TokenId("seed-again".into()),
        hash: SecretHash([0xa3; 32]),
        kind: TokenKind::Access,
        expires_at: Timestamp(3_800),
    }];
    assert_eq!(
        store
            .redeem_presented_code(&as_issued, Timestamp(250), &other_seeds)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store.token_by_hash(&SecretHash([0xa3; 32])).await.unwrap(),
        None
    );
}
