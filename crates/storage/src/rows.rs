//! Row shapes shared by both backends, and their mapping to domain types.
//! Times are i64 milliseconds, hashes bytes, scopes a bit set.

use velocity_domain::{
    ApiKey, ApiKeyId, KeyKind, Membership, Role, ScopeSet, SecretHash, StoreError, Timestamp, User,
    UserId, Workspace, WorkspaceId,
};

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
            kind: KeyKind::parse(&row.kind).ok_or_else(|| corrupt("kind"))?,
            hash: SecretHash::from_slice(&row.key_hash).ok_or_else(|| corrupt("hash"))?,
            scopes: u16::try_from(row.scopes)
                .ok()
                .and_then(ScopeSet::from_bits)
                .ok_or_else(|| corrupt("scopes"))?,
            display: row.display,
            name: row.name,
            workspace_id: row.workspace_id.map(WorkspaceId),
            user_id: row.user_id.map(UserId),
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
