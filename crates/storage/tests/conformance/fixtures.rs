//! Domain values the stories store, and the user and workspace most of them
//! need to exist first.

use velocity_domain::api_key::KeyOwner;
use velocity_domain::oauth::{
    AuthorizationCode, ClientId, ClientType, FamilyId, OAuthApp, OAuthToken, TokenId, TokenKind,
};
use velocity_domain::{
    ApiKey, ApiKeyId, KeyKind, ScopeSet, SecretHash, Store, Timestamp, User, UserId, Workspace,
    WorkspaceId,
};

pub fn user(id: &str) -> User {
    User {
        id: UserId(id.into()),
        email: format!("{id}@example.com"),
        name: id.into(),
        created_at: Timestamp(1),
    }
}

pub fn workspace(slug: &str) -> Workspace {
    Workspace {
        id: WorkspaceId::generate(),
        slug: slug.into(),
        name: slug.into(),
        created_at: Timestamp(2),
    }
}

/// Inserts the user `ada` and the workspace `acme`.
pub async fn ada_in_acme(store: &dyn Store) -> (User, Workspace) {
    let ada = user("ada");
    store.insert_user(&ada).await.unwrap();
    let acme = workspace("acme");
    store.insert_workspace(&acme).await.unwrap();
    (ada, acme)
}

pub fn key(kind: KeyKind, workspace: Option<&Workspace>, user: Option<&User>, n: u8) -> ApiKey {
    let owner = match (kind, workspace, user) {
        (KeyKind::Workspace, Some(w), _) => KeyOwner::Workspace(w.id.clone()),
        (KeyKind::Personal, _, Some(u)) => KeyOwner::User(u.id.clone()),
        _ => panic!("a {kind} key needs its owner"),
    };
    ApiKey {
        id: ApiKeyId::generate(),
        owner,
        hash: SecretHash([n; 32]),
        display: "vel_abcd…wxyz".into(),
        name: format!("key {n}"),
        scopes: ScopeSet::parse(["issues:read"]).unwrap_or_default(),
        created_by: user.map(|u| u.id.clone()),
        created_at: Timestamp(i64::from(n)),
        expires_at: Some(Timestamp(1_000_000)),
        revoked_at: None,
        last_used_at: None,
    }
}

pub fn app(client_id: &str, client_type: ClientType, created_at: i64) -> OAuthApp {
    OAuthApp {
        client_id: ClientId(client_id.into()),
        name: format!("App {client_id}"),
        client_type,
        secret_hash: (client_type == ClientType::Confidential).then_some(SecretHash([0xc0; 32])),
        redirect_uris: vec![
            "https://app.example.com/callback".into(),
            "http://127.0.0.1:8123/cb".into(),
        ],
        allowed_scopes: ScopeSet::parse(["issues:read", "issues:write"]).unwrap(),
        previous_secret: None,
        workspace_id: None,
        created_by: None,
        created_at: Timestamp(created_at),
    }
}

/// An unused code for `app`, issuing tokens into `family_id`.
pub fn code(app: &OAuthApp, user: &User, workspace: &Workspace, n: u8) -> AuthorizationCode {
    AuthorizationCode {
        hash: SecretHash([n; 32]),
        client_id: app.client_id.clone(),
        redirect_uri: app.redirect_uris[0].clone(),
        user_id: user.id.clone(),
        workspace_id: workspace.id.clone(),
        scopes: ScopeSet::parse(["issues:read"]).unwrap(),
        code_challenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".into(),
        family_id: FamilyId(format!("family-{n}")),
        created_at: Timestamp(100),
        expires_at: Timestamp(700),
        used_at: None,
    }
}

/// An active token of `family_id`, with hash `[n; 32]` and id `token-n`.
pub fn token(
    kind: TokenKind,
    family_id: &FamilyId,
    code: &AuthorizationCode,
    n: u8,
    expires_at: i64,
) -> OAuthToken {
    OAuthToken {
        id: TokenId(format!("token-{n}")),
        hash: SecretHash([n; 32]),
        kind,
        family_id: family_id.clone(),
        client_id: code.client_id.clone(),
        user_id: code.user_id.clone(),
        workspace_id: code.workspace_id.clone(),
        scopes: code.scopes,
        created_at: Timestamp(200),
        expires_at: Timestamp(expires_at),
        revoked_at: None,
        rotated_at: None,
    }
}

/// An access and a refresh token for `code`'s family, hashes `n` and `n + 1`.
pub fn pair(code: &AuthorizationCode, n: u8) -> Vec<OAuthToken> {
    vec![
        token(TokenKind::Access, &code.family_id, code, n, 3_800),
        token(TokenKind::Refresh, &code.family_id, code, n + 1, 90_000),
    ]
}
