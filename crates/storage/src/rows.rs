//! Row shapes shared by both backends, the columns each is read from, and
//! their mapping to domain types. Times are i64 milliseconds, hashes bytes,
//! scopes a bit set.

use velocity_domain::api_key::KeyOwner;
use velocity_domain::oauth::{
    ClientId, ClientType, FamilyId, Grant, OAuthApp, RetiringSecret, TokenId,
};
use velocity_domain::{
    ApiKey, ApiKeyId, KeyKind, Membership, Role, ScopeSet, SecretHash, StoreError, Timestamp, User,
    UserId, Workspace, WorkspaceId,
};

/// The columns of a [`UserRow`].
pub(crate) const USER_COLUMNS: &str = "id, email, name, created_at";

#[derive(sqlx::FromRow)]
pub(crate) struct UserRow {
    id: String,
    email: String,
    name: String,
    created_at: i64,
}

impl From<UserRow> for User {
    fn from(row: UserRow) -> Self {
        User {
            id: UserId(row.id),
            email: row.email,
            name: row.name,
            created_at: Timestamp(row.created_at),
        }
    }
}

/// The columns of a [`WorkspaceRow`].
pub(crate) const WORKSPACE_COLUMNS: &str = "id, slug, name, created_at";

#[derive(sqlx::FromRow)]
pub(crate) struct WorkspaceRow {
    id: String,
    slug: String,
    name: String,
    created_at: i64,
}

impl From<WorkspaceRow> for Workspace {
    fn from(row: WorkspaceRow) -> Self {
        Workspace {
            id: WorkspaceId(row.id),
            slug: row.slug,
            name: row.name,
            created_at: Timestamp(row.created_at),
        }
    }
}

/// Selects [`MembershipRow`]s: `m` is the membership, `w` its workspace.
pub(crate) const MEMBERSHIP_SELECT: &str = "SELECT w.id, w.slug, w.name, w.created_at, m.user_id, m.role \
     FROM memberships m JOIN workspaces w ON w.id = m.workspace_id";

#[derive(sqlx::FromRow)]
pub(crate) struct MembershipRow {
    #[sqlx(flatten)]
    workspace: WorkspaceRow,
    user_id: String,
    role: String,
}

impl TryFrom<MembershipRow> for Membership {
    type Error = StoreError;

    fn try_from(row: MembershipRow) -> Result<Self, Self::Error> {
        Ok(Membership {
            workspace: row.workspace.into(),
            user_id: UserId(row.user_id),
            role: row
                .role
                .parse::<Role>()
                .map_err(|_| StoreError::Other(format!("bad role {:?} in storage", row.role)))?,
        })
    }
}

/// The columns of an [`ApiKeyRow`].
pub(crate) const API_KEY_COLUMNS: &str = "id, kind, key_hash, display, name, scopes, workspace_id, \
     user_id, created_by, created_at, expires_at, revoked_at, last_used_at";

#[derive(sqlx::FromRow)]
pub(crate) struct ApiKeyRow {
    id: String,
    kind: String,
    key_hash: Vec<u8>,
    display: String,
    name: String,
    scopes: i64,
    workspace_id: Option<String>,
    user_id: Option<String>,
    created_by: Option<String>,
    created_at: i64,
    expires_at: Option<i64>,
    revoked_at: Option<i64>,
    last_used_at: Option<i64>,
}

impl TryFrom<ApiKeyRow> for ApiKey {
    type Error = StoreError;

    fn try_from(row: ApiKeyRow) -> Result<Self, Self::Error> {
        let corrupt =
            |what: &str| StoreError::Other(format!("bad {what} in api_keys row {}", row.id));
        Ok(ApiKey {
            owner: match (KeyKind::parse(&row.kind), row.workspace_id, row.user_id) {
                (Some(KeyKind::Workspace), Some(workspace), _) => {
                    KeyOwner::Workspace(WorkspaceId(workspace))
                }
                (Some(KeyKind::Personal), _, Some(user)) => KeyOwner::User(UserId(user)),
                _ => return Err(corrupt("kind or owner")),
            },
            hash: SecretHash::from_slice(&row.key_hash).ok_or_else(|| corrupt("hash"))?,
            scopes: u16::try_from(row.scopes)
                .ok()
                .and_then(ScopeSet::from_bits)
                .ok_or_else(|| corrupt("scopes"))?,
            display: row.display,
            name: row.name,
            created_by: row.created_by.map(UserId),
            created_at: Timestamp(row.created_at),
            expires_at: row.expires_at.map(Timestamp),
            revoked_at: row.revoked_at.map(Timestamp),
            last_used_at: row.last_used_at.map(Timestamp),
            id: ApiKeyId(row.id),
        })
    }
}

pub(crate) fn ms(t: Option<Timestamp>) -> Option<i64> {
    t.map(|t| t.0)
}

pub(crate) fn api_keys<I: IntoIterator<Item = ApiKeyRow>>(
    rows: I,
) -> Result<Vec<ApiKey>, StoreError> {
    rows.into_iter().map(ApiKey::try_from).collect()
}

pub(crate) fn memberships<I: IntoIterator<Item = MembershipRow>>(
    rows: I,
) -> Result<Vec<Membership>, StoreError> {
    rows.into_iter().map(Membership::try_from).collect()
}

/// The columns of an [`AppRow`].
pub(crate) const APP_COLUMNS: &str = "client_id, name, client_type, secret_hash, \
     previous_secret_hash, previous_secret_until, redirect_uris, allowed_scopes, workspace_id, \
     created_by, created_at";

#[derive(sqlx::FromRow)]
pub(crate) struct AppRow {
    client_id: String,
    name: String,
    client_type: String,
    secret_hash: Option<Vec<u8>>,
    previous_secret_hash: Option<Vec<u8>>,
    previous_secret_until: Option<i64>,
    redirect_uris: String,
    allowed_scopes: i64,
    workspace_id: Option<String>,
    created_by: Option<String>,
    created_at: i64,
}

impl TryFrom<AppRow> for OAuthApp {
    type Error = StoreError;

    fn try_from(row: AppRow) -> Result<Self, Self::Error> {
        let corrupt = |what: &str| {
            StoreError::Other(format!("bad {what} in oauth_apps row {}", row.client_id))
        };
        let hash = |bytes: &Option<Vec<u8>>, what| {
            bytes
                .as_deref()
                .map(|b| SecretHash::from_slice(b).ok_or_else(|| corrupt(what)))
                .transpose()
        };
        let previous_secret = match (
            hash(&row.previous_secret_hash, "previous_secret_hash")?,
            row.previous_secret_until,
        ) {
            (Some(hash), Some(until)) => Some(RetiringSecret {
                hash,
                until: Timestamp(until),
            }),
            _ => None,
        };
        Ok(OAuthApp {
            client_type: ClientType::parse(&row.client_type)
                .ok_or_else(|| corrupt("client_type"))?,
            secret_hash: hash(&row.secret_hash, "secret_hash")?,
            previous_secret,
            redirect_uris: row.redirect_uris.lines().map(str::to_owned).collect(),
            allowed_scopes: scopes(row.allowed_scopes).ok_or_else(|| corrupt("allowed_scopes"))?,
            name: row.name,
            workspace_id: row.workspace_id.map(WorkspaceId),
            created_by: row.created_by.map(UserId),
            created_at: Timestamp(row.created_at),
            client_id: ClientId(row.client_id),
        })
    }
}

/// The columns of a [`GrantRow`], from `oauth_grants AS g` joined with its
/// app (`a`) and workspace (`w`).
pub(crate) const GRANT_COLUMNS: &str = "g.id, g.client_id, a.name AS app_name, g.user_id, \
     g.workspace_id, w.slug AS workspace_slug, g.scopes, g.created_at, g.last_used_at, \
     g.expires_at, g.revoked_at";

/// The joins [`GRANT_COLUMNS`] reads from.
pub(crate) const GRANT_FROM: &str = "oauth_grants AS g \
     JOIN oauth_apps AS a ON a.client_id = g.client_id \
     JOIN workspaces AS w ON w.id = g.workspace_id";

#[derive(sqlx::FromRow)]
pub(crate) struct GrantRow {
    id: String,
    client_id: String,
    app_name: String,
    user_id: String,
    workspace_id: String,
    workspace_slug: String,
    scopes: i64,
    created_at: i64,
    last_used_at: i64,
    expires_at: i64,
    revoked_at: Option<i64>,
}

impl TryFrom<GrantRow> for Grant {
    type Error = StoreError;

    fn try_from(row: GrantRow) -> Result<Self, Self::Error> {
        Ok(Grant {
            scopes: scopes(row.scopes).ok_or_else(|| {
                StoreError::Other(format!("bad scopes in oauth_grants row {}", row.id))
            })?,
            id: FamilyId(row.id),
            client_id: ClientId(row.client_id),
            app_name: row.app_name,
            user_id: UserId(row.user_id),
            workspace_id: WorkspaceId(row.workspace_id),
            workspace_slug: row.workspace_slug,
            created_at: Timestamp(row.created_at),
            last_used_at: Timestamp(row.last_used_at),
            expires_at: Timestamp(row.expires_at),
            revoked_at: row.revoked_at.map(Timestamp),
        })
    }
}

/// The columns of a [`CodeRow`].
pub(crate) const CODE_COLUMNS: &str = "code_hash, client_id, redirect_uri, user_id, workspace_id, \
     scopes, code_challenge, family_id, created_at, expires_at, used_at";

#[derive(sqlx::FromRow)]
pub(crate) struct CodeRow {
    code_hash: Vec<u8>,
    client_id: String,
    redirect_uri: String,
    user_id: String,
    workspace_id: String,
    scopes: i64,
    code_challenge: String,
    family_id: String,
    created_at: i64,
    expires_at: i64,
    used_at: Option<i64>,
}

impl CodeRow {
    /// The row as rusqlite reads it, columns in [`CODE_COLUMNS`]' order.
    pub(crate) fn from_native(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(CodeRow {
            code_hash: row.get(0)?,
            client_id: row.get(1)?,
            redirect_uri: row.get(2)?,
            user_id: row.get(3)?,
            workspace_id: row.get(4)?,
            scopes: row.get(5)?,
            code_challenge: row.get(6)?,
            family_id: row.get(7)?,
            created_at: row.get(8)?,
            expires_at: row.get(9)?,
            used_at: row.get(10)?,
        })
    }
}

impl TryFrom<CodeRow> for velocity_domain::oauth::AuthorizationCode {
    type Error = StoreError;

    fn try_from(row: CodeRow) -> Result<Self, Self::Error> {
        let corrupt = |what: &str| StoreError::Other(format!("bad {what} in oauth_codes row"));
        Ok(velocity_domain::oauth::AuthorizationCode {
            hash: SecretHash::from_slice(&row.code_hash).ok_or_else(|| corrupt("hash"))?,
            scopes: scopes(row.scopes).ok_or_else(|| corrupt("scopes"))?,
            client_id: ClientId(row.client_id),
            redirect_uri: row.redirect_uri,
            user_id: UserId(row.user_id),
            workspace_id: WorkspaceId(row.workspace_id),
            code_challenge: row.code_challenge,
            family_id: FamilyId(row.family_id),
            created_at: Timestamp(row.created_at),
            expires_at: Timestamp(row.expires_at),
            used_at: row.used_at.map(Timestamp),
        })
    }
}

/// The columns of a [`TokenRow`].
pub(crate) const TOKEN_COLUMNS: &str = "id, token_hash, kind, family_id, client_id, user_id, \
     workspace_id, scopes, created_at, expires_at, revoked_at, rotated_at";

#[derive(sqlx::FromRow)]
pub(crate) struct TokenRow {
    id: String,
    token_hash: Vec<u8>,
    kind: String,
    family_id: String,
    client_id: String,
    user_id: String,
    workspace_id: String,
    scopes: i64,
    created_at: i64,
    expires_at: i64,
    revoked_at: Option<i64>,
    rotated_at: Option<i64>,
}

impl TryFrom<TokenRow> for velocity_domain::oauth::OAuthToken {
    type Error = StoreError;

    fn try_from(row: TokenRow) -> Result<Self, Self::Error> {
        let corrupt =
            |what: &str| StoreError::Other(format!("bad {what} in oauth_tokens row {}", row.id));
        Ok(velocity_domain::oauth::OAuthToken {
            hash: SecretHash::from_slice(&row.token_hash).ok_or_else(|| corrupt("hash"))?,
            kind: velocity_domain::oauth::TokenKind::parse(&row.kind)
                .ok_or_else(|| corrupt("kind"))?,
            scopes: scopes(row.scopes).ok_or_else(|| corrupt("scopes"))?,
            family_id: FamilyId(row.family_id),
            client_id: ClientId(row.client_id),
            user_id: UserId(row.user_id),
            workspace_id: WorkspaceId(row.workspace_id),
            created_at: Timestamp(row.created_at),
            expires_at: Timestamp(row.expires_at),
            revoked_at: row.revoked_at.map(Timestamp),
            rotated_at: row.rotated_at.map(Timestamp),
            id: TokenId(row.id),
        })
    }
}

fn scopes(bits: i64) -> Option<ScopeSet> {
    u16::try_from(bits).ok().and_then(ScopeSet::from_bits)
}
