//! Apps owned by a workspace (listing by owner, updates, a retiring
//! secret) and the grants redemption makes, refreshes touch, listings show
//! and revocation ends.

use std::sync::Arc;

use velocity_domain::oauth::{
    ClientId, ClientType, FamilyId, GrantsOf, OAuthToken, RetiringSecret, TokenKind,
};
use velocity_domain::page::{PageCursor, PageRequest};
use velocity_domain::{ScopeSet, SecretHash, Store, Timestamp};

use crate::fixtures::{ada_in_acme, app, code, pair, token, user, workspace};

pub async fn workspace_apps_story(store: Arc<dyn Store>) {
    let (ada, acme) = ada_in_acme(&*store).await;
    let globex = workspace("globex");
    store.insert_workspace(&globex).await.unwrap();
    let operator_app = app("op", ClientType::Public, 5);
    let mut acme_app = app("acme-app", ClientType::Public, 10);
    acme_app.workspace_id = Some(acme.id.clone());
    acme_app.created_by = Some(ada.id.clone());
    let mut globex_app = app("globex-app", ClientType::Confidential, 20);
    globex_app.workspace_id = Some(globex.id.clone());
    for app in [&operator_app, &acme_app, &globex_app] {
        store.insert_app(app).await.unwrap();
    }
    assert_eq!(
        store.app(&acme_app.client_id).await.unwrap(),
        Some(acme_app.clone()),
        "owner and registrant round-trip"
    );
    let first = PageRequest::first();
    assert_eq!(
        store.list_apps(Some(&acme.id), &first).await.unwrap(),
        vec![acme_app.clone()]
    );
    assert_eq!(
        store.list_apps(None, &first).await.unwrap(),
        vec![operator_app.clone(), acme_app.clone(), globex_app.clone()]
    );

    // Updates change what may change, and nothing else.
    let mut changed = acme_app.clone();
    changed.name = "Renamed".into();
    changed.client_type = ClientType::Confidential;
    changed.redirect_uris = vec!["https://new.example.com/cb".into()];
    changed.allowed_scopes = ScopeSet::parse(["issues:read"]).unwrap();
    changed.created_at = Timestamp(999);
    assert!(store.update_app(&changed).await.unwrap());
    let stored = store.app(&acme_app.client_id).await.unwrap().unwrap();
    assert_eq!(stored.name, "Renamed");
    assert_eq!(stored.client_type, ClientType::Confidential);
    assert_eq!(stored.redirect_uris, changed.redirect_uris);
    assert_eq!(stored.allowed_scopes, changed.allowed_scopes);
    assert_eq!(stored.created_at, acme_app.created_at);
    let mut ghost = changed.clone();
    ghost.client_id = ClientId("ghost".into());
    assert!(!store.update_app(&ghost).await.unwrap());

    // A rotation keeps the replaced secret while it overlaps; the next one
    // without overlap clears it.
    let retiring = RetiringSecret {
        hash: SecretHash([0xc0; 32]),
        until: Timestamp(5_000),
    };
    assert!(
        store
            .set_app_secret(
                &globex_app.client_id,
                &SecretHash([0xc2; 32]),
                Some(&retiring)
            )
            .await
            .unwrap()
    );
    let stored = store.app(&globex_app.client_id).await.unwrap().unwrap();
    assert_eq!(stored.secret_hash, Some(SecretHash([0xc2; 32])));
    assert_eq!(stored.previous_secret, Some(retiring));
    assert!(
        store
            .set_app_secret(&globex_app.client_id, &SecretHash([0xc3; 32]), None)
            .await
            .unwrap()
    );
    let stored = store.app(&globex_app.client_id).await.unwrap().unwrap();
    assert_eq!(stored.previous_secret, None);
}

pub async fn grant_story(store: Arc<dyn Store>) {
    let (ada, acme) = ada_in_acme(&*store).await;
    let bob = user("bob");
    store.insert_user(&bob).await.unwrap();
    let web = app("web", ClientType::Public, 10);
    store.insert_app(&web).await.unwrap();

    // Redemption makes the grant, from its refresh token.
    let ada_code = code(&web, &ada, &acme, 1);
    store.insert_code(&ada_code).await.unwrap();
    let first = pair(&ada_code, 10);
    assert!(
        store
            .redeem_code(&ada_code.hash, Timestamp(150), &first)
            .await
            .unwrap()
    );
    let grant = store.grant(&ada_code.family_id).await.unwrap().unwrap();
    assert_eq!(grant.client_id, web.client_id);
    assert_eq!(grant.app_name, web.name);
    assert_eq!(grant.user_id, ada.id);
    assert_eq!(grant.workspace_id, acme.id);
    assert_eq!(grant.workspace_slug, acme.slug);
    assert_eq!(grant.scopes, ada_code.scopes);
    assert_eq!(grant.created_at, Timestamp(200));
    assert_eq!(grant.last_used_at, Timestamp(200));
    assert_eq!(grant.expires_at, Timestamp(90_000));
    assert_eq!(grant.revoked_at, None);
    assert_eq!(store.grant(&FamilyId("nope".into())).await.unwrap(), None);

    // A refresh is a use: narrower scopes, a later expiry, the same start.
    let narrower = ScopeSet::parse(["issues:read"]).unwrap();
    let refreshed: Vec<OAuthToken> = [
        (TokenKind::Access, 20, 7_000),
        (TokenKind::Refresh, 21, 95_000),
    ]
    .into_iter()
    .map(|(kind, n, expires)| OAuthToken {
        scopes: narrower,
        created_at: Timestamp(600),
        ..token(kind, &ada_code.family_id, &ada_code, n, expires)
    })
    .collect();
    assert!(
        store
            .rotate_refresh_token(&first[1].id, Timestamp(600), None, &refreshed)
            .await
            .unwrap()
    );
    let used = store.grant(&ada_code.family_id).await.unwrap().unwrap();
    assert_eq!(used.created_at, Timestamp(200));
    assert_eq!(used.last_used_at, Timestamp(600));
    assert_eq!(used.expires_at, Timestamp(95_000));
    assert_eq!(used.scopes, narrower);

    // A losing claim touches no grant.
    assert!(
        !store
            .redeem_code(&ada_code.hash, Timestamp(700), &pair(&ada_code, 30))
            .await
            .unwrap()
    );
    assert_eq!(
        store.grant(&ada_code.family_id).await.unwrap(),
        Some(used.clone())
    );

    // Bob's grant in the same workspace, later; then listings.
    let mut bob_code = code(&web, &bob, &acme, 2);
    bob_code.family_id = FamilyId("family-bob".into());
    store.insert_code(&bob_code).await.unwrap();
    let bob_pair: Vec<OAuthToken> = pair(&bob_code, 40)
        .into_iter()
        .map(|t| OAuthToken {
            created_at: Timestamp(800),
            ..t
        })
        .collect();
    assert!(
        store
            .redeem_code(&bob_code.hash, Timestamp(800), &bob_pair)
            .await
            .unwrap()
    );
    let ids = |grants: Vec<velocity_domain::oauth::Grant>| -> Vec<String> {
        grants.into_iter().map(|g| g.id.0).collect()
    };
    let now = Timestamp(1_000);
    let first_page = PageRequest::first();
    assert_eq!(
        ids(store
            .list_grants(GrantsOf::User(&ada.id), now, &first_page)
            .await
            .unwrap()),
        vec![ada_code.family_id.0.clone()]
    );
    assert_eq!(
        ids(store
            .list_grants(GrantsOf::Workspace(&acme.id), now, &first_page)
            .await
            .unwrap()),
        vec!["family-bob".to_owned(), ada_code.family_id.0.clone()],
        "newest first"
    );
    let after_bob = PageRequest {
        size: 10,
        after: Some(PageCursor::new(800, "family-bob")),
    };
    assert_eq!(
        ids(store
            .list_grants(GrantsOf::Workspace(&acme.id), now, &after_bob)
            .await
            .unwrap()),
        vec![ada_code.family_id.0.clone()]
    );
    // An expired grant is not listed.
    assert_eq!(
        ids(store
            .list_grants(GrantsOf::User(&ada.id), Timestamp(95_000), &first_page)
            .await
            .unwrap()),
        Vec::<String>::new()
    );

    // Revoking the family ends the grant and is no longer listed.
    assert_eq!(
        store
            .revoke_family(&ada_code.family_id, Timestamp(900))
            .await
            .unwrap(),
        4,
        "both pairs: rotation spends a refresh token, it does not revoke it"
    );
    let revoked = store.grant(&ada_code.family_id).await.unwrap().unwrap();
    assert_eq!(revoked.revoked_at, Some(Timestamp(900)));
    assert_eq!(
        ids(store
            .list_grants(GrantsOf::User(&ada.id), now, &first_page)
            .await
            .unwrap()),
        Vec::<String>::new()
    );
    // Revoking again keeps the first time.
    store
        .revoke_family(&ada_code.family_id, Timestamp(950))
        .await
        .unwrap();
    assert_eq!(
        store
            .grant(&ada_code.family_id)
            .await
            .unwrap()
            .unwrap()
            .revoked_at,
        Some(Timestamp(900))
    );

    // Grants go with their app.
    assert!(store.delete_app(&web.client_id).await.unwrap());
    assert_eq!(store.grant(&bob_code.family_id).await.unwrap(), None);
}
