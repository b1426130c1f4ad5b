// Over 400 lines because two thirds of it are unit tests, one or more per resolution rule.
//! The resolution rules of CONTRACT §3: from a verified credential, the
//! optional workspace slug and the caller's membership, to a [`Principal`].
//!
//! Everything here is pure; the service fetches what the rules need.

use crate::api_key::ApiKey;
use crate::clock::Timestamp;
use crate::directory::{Membership, UserId, Workspace, WorkspaceId};
use crate::error::{Error, Reason};
use crate::oauth::{ClientId, TokenId};
use crate::principal::{Principal, PrincipalKind};
use crate::scope::ScopeSet;
use crate::session::SessionClaims;

/// A credential whose secret or signature has been checked, with what
/// storage knows about it.
#[derive(Clone, Debug)]
pub enum VerifiedCredential {
    WorkspaceKey {
        key: ApiKey,
        workspace: Workspace,
    },
    PersonalKey {
        key: ApiKey,
        /// The key's owner.
        user: UserId,
    },
    Session {
        claims: std::sync::Arc<SessionClaims>,
    },
    AccessToken(AccessTokenGrant),
}

/// What an OAuth access token was granted at consent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessTokenGrant {
    pub token_id: TokenId,
    pub user_id: UserId,
    pub workspace: Workspace,
    pub client_id: ClientId,
    pub scopes: ScopeSet,
    /// When the token was issued (introspection's `iat`).
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

impl VerifiedCredential {
    /// The membership the rules need for this credential and slug, if any:
    /// by slug for personal keys and sessions, by the token's workspace for
    /// access tokens. Workspace keys need none.
    pub fn membership_needed(&self, slug: Option<&str>) -> Option<MembershipKey> {
        match self {
            VerifiedCredential::WorkspaceKey { .. } => None,
            VerifiedCredential::PersonalKey { user, .. } => {
                slug.map(|s| MembershipKey::BySlug(user.clone(), s.to_owned()))
            }
            VerifiedCredential::Session { claims } => {
                slug.map(|s| MembershipKey::BySlug(UserId(claims.sub.clone()), s.to_owned()))
            }
            VerifiedCredential::AccessToken(grant) => Some(MembershipKey::ById(
                grant.user_id.clone(),
                grant.workspace.id.clone(),
            )),
        }
    }
}

/// Which membership a lookup asks for; also the cache's key for it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum MembershipKey {
    BySlug(UserId, String),
    ById(UserId, WorkspaceId),
}

impl MembershipKey {
    pub fn user(&self) -> &UserId {
        match self {
            MembershipKey::BySlug(user, _) | MembershipKey::ById(user, _) => user,
        }
    }
}

/// Applies the rules. `membership` is the caller's membership in the
/// workspace the request is about (by slug, or the token's workspace), as
/// found in storage; `None` when there is none or none was needed.
pub fn resolve_principal(
    credential: &VerifiedCredential,
    slug: Option<&str>,
    membership: Option<&Membership>,
    required: ScopeSet,
    now: Timestamp,
) -> Result<Principal, Error> {
    let principal = match credential {
        VerifiedCredential::WorkspaceKey { key, workspace } => {
            check_key_state(key, now)?;
            if slug.is_some_and(|s| s != workspace.slug) {
                return Err(Error::PermissionDenied(Reason::WorkspaceMismatch));
            }
            Principal {
                kind: PrincipalKind::WorkspaceKey,
                user_id: None,
                workspace: Some(workspace.clone()),
                scopes: key.scopes.only_workspace().effective(),
                credential_id: key.id.0.clone(),
                expires_at: key.expires_at,
                client_id: None,
                role: None,
            }
        }
        VerifiedCredential::PersonalKey { key, user } => {
            check_key_state(key, now)?;
            let personal = key.scopes.only_personal().effective();
            let (workspace, role, scopes) = match slug {
                None => (None, None, personal),
                Some(slug) => {
                    let m = member_of(membership, slug)?;
                    let mut role_scopes = ScopeSet::of_role(m.role);
                    if key.scopes.is_read_only() {
                        role_scopes = role_scopes.only_read();
                    }
                    (
                        Some(m.workspace.clone()),
                        Some(m.role),
                        personal.union(role_scopes.effective()),
                    )
                }
            };
            Principal {
                kind: PrincipalKind::PersonalKey,
                user_id: Some(user.clone()),
                workspace,
                scopes,
                credential_id: key.id.0.clone(),
                expires_at: key.expires_at,
                client_id: None,
                role,
            }
        }
        VerifiedCredential::Session { claims } => {
            let personal = ScopeSet::personal();
            let (workspace, role, scopes) = match slug {
                None => (None, None, personal),
                Some(slug) => {
                    let m = member_of(membership, slug)?;
                    (
                        Some(m.workspace.clone()),
                        Some(m.role),
                        personal.union(ScopeSet::of_role(m.role)),
                    )
                }
            };
            Principal {
                kind: PrincipalKind::Session,
                user_id: Some(UserId(claims.sub.clone())),
                workspace,
                scopes,
                credential_id: claims.session_id.clone().unwrap_or_default(),
                expires_at: Some(claims.expires_at()),
                client_id: None,
                role,
            }
        }
        VerifiedCredential::AccessToken(grant) => {
            if grant.revoked_at.is_some() {
                return Err(Error::Unauthenticated(Reason::CredentialRevoked));
            }
            if grant.expires_at <= now {
                return Err(Error::Unauthenticated(Reason::CredentialExpired));
            }
            if slug.is_some_and(|s| s != grant.workspace.slug) {
                return Err(Error::PermissionDenied(Reason::WorkspaceMismatch));
            }
            // The grant can never outlive the user's standing in the
            // workspace: removed members lose it, demoted ones are capped.
            let m = membership
                .filter(|m| m.workspace.id == grant.workspace.id && m.user_id == grant.user_id)
                .ok_or(Error::PermissionDenied(Reason::NotAMember))?;
            let scopes = grant.scopes.effective().intersection(
                ScopeSet::of_role(m.role)
                    .effective()
                    .union(ScopeSet::personal()),
            );
            Principal {
                kind: PrincipalKind::AccessToken,
                user_id: Some(grant.user_id.clone()),
                workspace: Some(grant.workspace.clone()),
                scopes,
                credential_id: grant.token_id.0.clone(),
                expires_at: Some(grant.expires_at),
                client_id: Some(grant.client_id.clone()),
                role: Some(m.role),
            }
        }
    };
    if !principal.scopes.grants(required) {
        return Err(Error::PermissionDenied(Reason::ScopeMissing));
    }
    Ok(principal)
}

fn check_key_state(key: &ApiKey, now: Timestamp) -> Result<(), Error> {
    if key.revoked_at.is_some() {
        return Err(Error::Unauthenticated(Reason::CredentialRevoked));
    }
    if key.is_expired(now) {
        return Err(Error::Unauthenticated(Reason::CredentialExpired));
    }
    Ok(())
}

fn member_of<'a>(membership: Option<&'a Membership>, slug: &str) -> Result<&'a Membership, Error> {
    membership
        .filter(|m| m.workspace.slug == slug)
        .ok_or(Error::PermissionDenied(Reason::NotAMember))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api_key::{ApiKeyId, KeyKind, KeyOwner};
    use crate::credential::SecretHash;
    use crate::directory::{Role, WorkspaceId};

    const NOW: Timestamp = Timestamp(1_800_000_000_000);

    fn scopes(names: &[&str]) -> ScopeSet {
        ScopeSet::parse(names.iter().copied()).unwrap()
    }

    fn workspace(slug: &str) -> Workspace {
        Workspace {
            id: WorkspaceId(format!("ws-{slug}")),
            slug: slug.into(),
            name: slug.into(),
            created_at: Timestamp(0),
        }
    }

    fn key(kind: KeyKind, granted: &[&str]) -> ApiKey {
        ApiKey {
            id: ApiKeyId("key-1".into()),
            hash: SecretHash([0; 32]),
            display: "vel_abcd…wxyz".into(),
            name: "test".into(),
            scopes: scopes(granted),
            owner: match kind {
                KeyKind::Workspace => KeyOwner::Workspace(WorkspaceId("ws-acme".into())),
                KeyKind::Personal => KeyOwner::User(UserId("ada".into())),
            },
            created_by: Some(UserId("ada".into())),
            created_at: Timestamp(0),
            expires_at: None,
            revoked_at: None,
            last_used_at: None,
        }
    }

    fn member(slug: &str, role: Role) -> Membership {
        Membership {
            workspace: workspace(slug),
            user_id: UserId("ada".into()),
            role,
        }
    }

    fn workspace_key(granted: &[&str]) -> VerifiedCredential {
        VerifiedCredential::WorkspaceKey {
            key: key(KeyKind::Workspace, granted),
            workspace: workspace("acme"),
        }
    }

    fn personal_key(granted: &[&str]) -> VerifiedCredential {
        VerifiedCredential::PersonalKey {
            key: key(KeyKind::Personal, granted),
            user: UserId("ada".into()),
        }
    }

    fn session() -> VerifiedCredential {
        VerifiedCredential::Session {
            claims: std::sync::Arc::new(SessionClaims {
                sub: "ada".into(),
                exp: NOW.as_secs() + 3600,
                role: Some("authenticated".into()),
                session_id: Some("sess-1".into()),
                email: None,
            }),
        }
    }

    fn denied(result: Result<Principal, Error>) -> Reason {
        match result {
            Err(Error::PermissionDenied(reason)) => reason,
            other => panic!("expected PERMISSION_DENIED, got {other:?}"),
        }
    }

    fn unauthenticated(result: Result<Principal, Error>) -> Reason {
        match result {
            Err(Error::Unauthenticated(reason)) => reason,
            other => panic!("expected UNAUTHENTICATED, got {other:?}"),
        }
    }

    #[test]
    fn workspace_key_resolves_its_workspace_without_a_slug() {
        let p = resolve_principal(
            &workspace_key(&["issues:write"]),
            None,
            None,
            ScopeSet::EMPTY,
            NOW,
        )
        .unwrap();
        assert_eq!(p.kind, PrincipalKind::WorkspaceKey);
        assert_eq!(p.workspace.unwrap().slug, "acme");
        assert_eq!(p.scopes, scopes(&["issues:write", "issues:read"]));
        assert_eq!(p.user_id, None);
    }

    #[test]
    fn workspace_key_accepts_its_own_slug_and_refuses_another() {
        let cred = workspace_key(&["issues:read"]);
        assert!(resolve_principal(&cred, Some("acme"), None, ScopeSet::EMPTY, NOW).is_ok());
        assert_eq!(
            denied(resolve_principal(
                &cred,
                Some("globex"),
                None,
                ScopeSet::EMPTY,
                NOW
            )),
            Reason::WorkspaceMismatch
        );
    }

    #[test]
    fn required_scopes_use_implications() {
        let cred = workspace_key(&["issues:write", "workspace:admin"]);
        for ok in [&["issues:read"][..], &["issues:write"], &["workspace:read"]] {
            assert!(
                resolve_principal(&cred, None, None, scopes(ok), NOW).is_ok(),
                "{ok:?}"
            );
        }
        assert_eq!(
            denied(resolve_principal(
                &cred,
                None,
                None,
                scopes(&["projects:read"]),
                NOW
            )),
            Reason::ScopeMissing
        );
    }

    #[test]
    fn revoked_and_expired_keys_are_unauthenticated() {
        let mut k = key(KeyKind::Workspace, &["issues:read"]);
        k.expires_at = Some(NOW);
        let cred = VerifiedCredential::WorkspaceKey {
            key: k.clone(),
            workspace: workspace("acme"),
        };
        assert_eq!(
            unauthenticated(resolve_principal(&cred, None, None, ScopeSet::EMPTY, NOW)),
            Reason::CredentialExpired
        );
        k.expires_at = Some(NOW.plus_secs(1));
        let cred = VerifiedCredential::WorkspaceKey {
            key: k.clone(),
            workspace: workspace("acme"),
        };
        assert!(resolve_principal(&cred, None, None, ScopeSet::EMPTY, NOW).is_ok());
        k.revoked_at = Some(NOW);
        let cred = VerifiedCredential::PersonalKey {
            key: k,
            user: UserId("ada".into()),
        };
        assert_eq!(
            unauthenticated(resolve_principal(&cred, None, None, ScopeSet::EMPTY, NOW)),
            Reason::CredentialRevoked
        );
    }

    #[test]
    fn personal_key_without_slug_is_user_level_with_personal_scopes_only() {
        let p = resolve_principal(
            &personal_key(&["user:write"]),
            None,
            None,
            ScopeSet::EMPTY,
            NOW,
        )
        .unwrap();
        assert_eq!(p.kind, PrincipalKind::PersonalKey);
        assert_eq!(p.workspace, None);
        assert_eq!(p.user_id, Some(UserId("ada".into())));
        assert_eq!(p.scopes, scopes(&["user:write", "user:read"]));
        assert_eq!(
            denied(resolve_principal(
                &personal_key(&["admin"]),
                None,
                None,
                scopes(&["issues:read"]),
                NOW
            )),
            Reason::ScopeMissing
        );
    }

    #[test]
    fn personal_key_with_slug_needs_membership() {
        assert_eq!(
            denied(resolve_principal(
                &personal_key(&["user:write"]),
                Some("acme"),
                None,
                ScopeSet::EMPTY,
                NOW
            )),
            Reason::NotAMember
        );
        // A membership elsewhere does not count.
        let other = member("globex", Role::Owner);
        assert_eq!(
            denied(resolve_principal(
                &personal_key(&["user:write"]),
                Some("acme"),
                Some(&other),
                ScopeSet::EMPTY,
                NOW
            )),
            Reason::NotAMember
        );
    }

    #[test]
    fn personal_key_with_slug_carries_role_scopes() {
        let m = member("acme", Role::Member);
        let p = resolve_principal(
            &personal_key(&["user:write"]),
            Some("acme"),
            Some(&m),
            ScopeSet::EMPTY,
            NOW,
        )
        .unwrap();
        assert_eq!(p.workspace.unwrap().slug, "acme");
        assert_eq!(p.role, Some(Role::Member));
        assert!(p.scopes.contains(crate::scope::Scope::IssuesWrite));
        assert!(!p.scopes.contains(crate::scope::Scope::WorkspaceAdmin));
        assert!(p.scopes.contains(crate::scope::Scope::UserWrite));
    }

    #[test]
    fn read_only_personal_key_gets_only_the_roles_read_scopes() {
        let m = member("acme", Role::Owner);
        let cred = personal_key(&["user:read"]);
        let p = resolve_principal(&cred, Some("acme"), Some(&m), ScopeSet::EMPTY, NOW).unwrap();
        assert_eq!(p.scopes.only_workspace(), ScopeSet::workspace().only_read());
        assert_eq!(
            denied(resolve_principal(
                &cred,
                Some("acme"),
                Some(&m),
                scopes(&["issues:write"]),
                NOW
            )),
            Reason::ScopeMissing
        );
    }

    #[test]
    fn guest_role_is_read_only() {
        let m = member("acme", Role::Guest);
        let p = resolve_principal(
            &personal_key(&["admin"]),
            Some("acme"),
            Some(&m),
            ScopeSet::EMPTY,
            NOW,
        )
        .unwrap();
        assert_eq!(p.scopes.only_workspace(), ScopeSet::workspace().only_read());
    }

    #[test]
    fn session_without_slug_has_every_personal_scope() {
        let p = resolve_principal(&session(), None, None, ScopeSet::EMPTY, NOW).unwrap();
        assert_eq!(p.kind, PrincipalKind::Session);
        assert_eq!(p.scopes, ScopeSet::personal());
        assert_eq!(p.credential_id, "sess-1");
        assert_eq!(p.expires_at, Some(NOW.plus_secs(3600)));
    }

    #[test]
    fn session_with_slug_has_its_roles_scopes() {
        let m = member("acme", Role::Admin);
        let p = resolve_principal(
            &session(),
            Some("acme"),
            Some(&m),
            scopes(&["workspace:admin"]),
            NOW,
        )
        .unwrap();
        assert_eq!(p.scopes.only_workspace(), ScopeSet::workspace());
        assert_eq!(
            denied(resolve_principal(
                &session(),
                Some("acme"),
                None,
                ScopeSet::EMPTY,
                NOW
            )),
            Reason::NotAMember
        );
    }

    fn access_token() -> AccessTokenGrant {
        AccessTokenGrant {
            token_id: TokenId("tok-1".into()),
            user_id: UserId("ada".into()),
            workspace: workspace("acme"),
            client_id: ClientId("app-1".into()),
            scopes: scopes(&["issues:write", "user:read"]),
            created_at: NOW,
            expires_at: NOW.plus_secs(3600),
            revoked_at: None,
        }
    }

    #[test]
    fn access_token_is_bound_to_its_workspace_and_grant() {
        let m = member("acme", Role::Member);
        let cred = VerifiedCredential::AccessToken(access_token());
        let p = resolve_principal(&cred, None, Some(&m), scopes(&["issues:read"]), NOW).unwrap();
        assert_eq!(p.client_id, Some(ClientId("app-1".into())));
        assert_eq!(
            p.scopes,
            scopes(&["issues:write", "issues:read", "user:read"])
        );
        assert!(resolve_principal(&cred, Some("acme"), Some(&m), ScopeSet::EMPTY, NOW).is_ok());
        assert_eq!(
            denied(resolve_principal(
                &cred,
                Some("globex"),
                Some(&m),
                ScopeSet::EMPTY,
                NOW
            )),
            Reason::WorkspaceMismatch
        );
        assert_eq!(
            denied(resolve_principal(
                &cred,
                None,
                Some(&m),
                scopes(&["projects:read"]),
                NOW
            )),
            Reason::ScopeMissing
        );
    }

    #[test]
    fn access_token_follows_the_users_membership() {
        let cred = VerifiedCredential::AccessToken(access_token());
        assert_eq!(
            denied(resolve_principal(&cred, None, None, ScopeSet::EMPTY, NOW)),
            Reason::NotAMember
        );
        let demoted = member("acme", Role::Guest);
        let p = resolve_principal(&cred, None, Some(&demoted), ScopeSet::EMPTY, NOW).unwrap();
        assert!(!p.scopes.contains(crate::scope::Scope::IssuesWrite));
        assert!(p.scopes.contains(crate::scope::Scope::IssuesRead));
    }

    #[test]
    fn access_token_expiry_and_revocation() {
        let m = member("acme", Role::Member);
        let mut grant = access_token();
        grant.expires_at = NOW;
        let cred = VerifiedCredential::AccessToken(grant.clone());
        assert_eq!(
            unauthenticated(resolve_principal(
                &cred,
                None,
                Some(&m),
                ScopeSet::EMPTY,
                NOW
            )),
            Reason::CredentialExpired
        );
        grant.expires_at = NOW.plus_secs(10);
        grant.revoked_at = Some(NOW);
        let cred = VerifiedCredential::AccessToken(grant);
        assert_eq!(
            unauthenticated(resolve_principal(
                &cred,
                None,
                Some(&m),
                ScopeSet::EMPTY,
                NOW
            )),
            Reason::CredentialRevoked
        );
    }
}
