//! Registered apps: registration, listing, changes, secret rotation with
//! overlap, deletion, by the operator or by a workspace's owners and
//! admins; and client authentication at the token endpoint (RFC 6749
//! §2.3), with its brake on failures (`crate::throttle`).

use std::net::IpAddr;
use std::sync::Arc;

use tracing::instrument;

use crate::credential::{CredentialKind, Secret};
use crate::directory::{UserId, WorkspaceId};
use crate::error::{Error, ErrorClass, OAuthErrorCode, Reason};
use crate::oauth::{ClientId, ClientType, OAuthApp, RetiringSecret, app};
use crate::page::{Page, PageCursor, PageRequest};
use crate::principal::Principal;
use crate::scope::ScopeSet;
use crate::service::keys::parse_scopes;
use crate::service::{Service, check_name, limits};

use super::oauth_error;

/// How a client identifies itself at the token endpoint.
#[derive(Clone)]
pub struct ClientAuth {
    pub client_id: ClientId,
    pub client_secret: Option<String>,
    /// The caller's address as the connection shows it (never a forwarding
    /// header): what failed authentications are counted by. `None` (an
    /// in-process caller) is not throttled.
    pub address: Option<IpAddr>,
}

impl std::fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientAuth")
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("address", &self.address)
            .finish()
    }
}

/// Who is managing apps: the operator (the admin token) manages every app;
/// a workspace's owners and admins (by session, or a personal key holding
/// `admin`) manage that workspace's apps.
#[derive(Clone, Debug)]
pub enum AppManager {
    Operator,
    Member(Principal),
}

/// RegisterApp's request.
#[derive(Clone, Debug)]
pub struct NewApp {
    /// The owning workspace: required of members; the operator may leave it
    /// out to register an app of its own.
    pub workspace_slug: Option<String>,
    pub name: String,
    pub redirect_uris: Vec<String>,
    pub scopes: Vec<String>,
    pub client_type: ClientType,
}

/// UpdateApp's request: `None` leaves a field as it is.
#[derive(Clone, Debug, Default)]
pub struct AppChanges {
    pub name: Option<String>,
    pub redirect_uris: Option<Vec<String>>,
    pub scopes: Option<Vec<String>>,
    pub client_type: Option<ClientType>,
}

/// The longest a replaced secret may keep working after a rotation.
pub const MAX_SECRET_OVERLAP_SECS: u64 = 7 * 24 * 3600;

/// The failed-client-authentication throttle's name in the rate-limit
/// counters.
const CLIENT_AUTH_LIMIT: &str = "client_auth";

impl Service {
    /// RegisterApp: every app gets a client id and a `vels_` secret, shown
    /// once. Confidential apps must send it; public ones may.
    #[instrument(skip_all)]
    pub async fn register_app(
        &self,
        manager: &AppManager,
        request: NewApp,
    ) -> Result<(OAuthApp, Secret), Error> {
        let slug = request
            .workspace_slug
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty());
        let (workspace_id, created_by) = match (manager, slug) {
            (AppManager::Operator, None) => (None, None),
            (AppManager::Operator, Some(slug)) => {
                let workspace = self
                    .store
                    .workspace_by_slug(slug)
                    .await?
                    .ok_or(Error::NotFound("workspace"))?;
                (Some(workspace.id), None)
            }
            (AppManager::Member(_), None) => {
                return Err(Error::invalid("workspace_slug is required"));
            }
            (AppManager::Member(caller), Some(slug)) => {
                let user = caller_id(caller)?;
                let membership = self.administered_workspace(user, slug).await?;
                (Some(membership.workspace.id), Some(user.clone()))
            }
        };
        let secret = Secret::generate(CredentialKind::ClientSecret);
        let app = OAuthApp {
            // Without hyphens: client ids end up in URLs and config files.
            client_id: ClientId(uuid::Uuid::now_v7().simple().to_string()),
            name: check_name(&request.name)?.to_owned(),
            client_type: request.client_type,
            secret_hash: Some(secret.hash()),
            previous_secret: None,
            redirect_uris: check_redirect_uris(request.redirect_uris)?,
            allowed_scopes: check_app_scopes(&request.scopes)?,
            workspace_id,
            created_by,
            created_at: self.clock.now(),
        };
        self.store.insert_app(&app).await?;
        self.origin_cache.clear();
        tracing::info!(
            client_id = %app.client_id,
            client_type = %app.client_type,
            workspace_id = ?app.workspace_id,
            "oauth app registered"
        );
        Ok((app, secret))
    }

    /// ListApps: a workspace's apps (its owners and admins), or for the
    /// operator without a slug, every app.
    pub async fn list_apps(
        &self,
        manager: &AppManager,
        workspace_slug: Option<&str>,
        page: &PageRequest,
    ) -> Result<Page<OAuthApp>, Error> {
        let slug = workspace_slug.map(str::trim).filter(|s| !s.is_empty());
        let workspace = match (manager, slug) {
            (AppManager::Operator, None) => None,
            (AppManager::Operator, Some(slug)) => Some(
                self.store
                    .workspace_by_slug(slug)
                    .await?
                    .ok_or(Error::NotFound("workspace"))?
                    .id,
            ),
            (AppManager::Member(_), None) => {
                return Err(Error::invalid("workspace_slug is required"));
            }
            (AppManager::Member(caller), Some(slug)) => Some(
                self.administered_workspace(caller_id(caller)?, slug)
                    .await?
                    .workspace
                    .id,
            ),
        };
        self.list_apps_unchecked(workspace.as_ref(), page).await
    }

    pub(super) async fn list_apps_unchecked(
        &self,
        workspace: Option<&WorkspaceId>,
        page: &PageRequest,
    ) -> Result<Page<OAuthApp>, Error> {
        let rows = self.store.list_apps(workspace, page).await?;
        Ok(Page::from_rows(rows, page, |app| {
            PageCursor::new(app.created_at.0, app.client_id.as_str())
        }))
    }

    /// UpdateApp: name, redirect URIs, scopes, whether the secret is
    /// required. Grants already made keep their scopes until their next
    /// refresh, which is capped to the app's scopes then.
    #[instrument(skip_all, fields(%client_id))]
    pub async fn update_app(
        &self,
        manager: &AppManager,
        client_id: &ClientId,
        changes: AppChanges,
    ) -> Result<OAuthApp, Error> {
        let mut app = self.managed_app(manager, client_id).await?;
        if let Some(name) = changes.name {
            app.name = check_name(&name)?.to_owned();
        }
        if let Some(uris) = changes.redirect_uris {
            app.redirect_uris = check_redirect_uris(uris)?;
        }
        if let Some(scopes) = changes.scopes {
            app.allowed_scopes = check_app_scopes(&scopes)?;
        }
        if let Some(client_type) = changes.client_type {
            app.client_type = client_type;
        }
        if !self.store.update_app(&app).await? {
            return Err(Error::NotFound("app"));
        }
        self.origin_cache.clear();
        // Cached copies of the app are stale: drop ours now.
        self.after_change().await;
        tracing::info!(%client_id, "oauth app updated");
        Ok(app)
    }

    /// A new `vels_` secret. With an overlap, the one it replaces keeps
    /// working that long (at most [`MAX_SECRET_OVERLAP_SECS`]), so the app
    /// can roll the new one out; an older secret still overlapping stops.
    #[instrument(skip_all, fields(%client_id))]
    pub async fn rotate_app_secret(
        &self,
        manager: &AppManager,
        client_id: &ClientId,
        overlap_secs: u64,
    ) -> Result<(Secret, Option<RetiringSecret>), Error> {
        if overlap_secs > MAX_SECRET_OVERLAP_SECS {
            return Err(Error::invalid(format!(
                "overlap_seconds is at most {MAX_SECRET_OVERLAP_SECS}"
            )));
        }
        let app = self.managed_app(manager, client_id).await?;
        let previous = match (app.secret_hash, overlap_secs) {
            (Some(hash), secs) if secs > 0 => Some(RetiringSecret {
                hash,
                until: self.clock.now().plus_secs(i64::try_from(secs).unwrap_or(0)),
            }),
            _ => None,
        };
        let secret = Secret::generate(CredentialKind::ClientSecret);
        if !self
            .store
            .set_app_secret(client_id, &secret.hash(), previous.as_ref())
            .await?
        {
            return Err(Error::NotFound("app"));
        }
        // The cached app holds the old secrets: drop it here now.
        self.after_change().await;
        tracing::info!(%client_id, overlap_secs, "oauth app secret rotated");
        Ok((secret, previous))
    }

    /// DeleteApp: the app goes with every code, token and grant of it.
    #[instrument(skip_all, fields(%client_id))]
    pub async fn delete_app(
        &self,
        manager: &AppManager,
        client_id: &ClientId,
    ) -> Result<(), Error> {
        self.managed_app(manager, client_id).await?;
        if !self.store.delete_app(client_id).await? {
            return Err(Error::NotFound("app"));
        }
        self.origin_cache.clear();
        self.after_change().await;
        tracing::info!(%client_id, "oauth app deleted with its codes and tokens");
        Ok(())
    }

    /// The app, if `manager` may manage it: the operator any app, a member
    /// the apps of a workspace they own or administer.
    async fn managed_app(
        &self,
        manager: &AppManager,
        client_id: &ClientId,
    ) -> Result<OAuthApp, Error> {
        // From storage, not the cache: what is changed is what is read here.
        let app = self
            .store
            .app(client_id)
            .await?
            .ok_or(Error::NotFound("app"))?;
        let AppManager::Member(caller) = manager else {
            return Ok(app);
        };
        let workspace = app
            .workspace_id
            .as_ref()
            .ok_or(Error::PermissionDenied(Reason::NotAppManager))?;
        let manages = self
            .store
            .membership(workspace, caller_id(caller)?)
            .await?
            .is_some_and(|m| m.role.manages_keys());
        if !manages {
            return Err(Error::PermissionDenied(Reason::NotAppManager));
        }
        Ok(app)
    }

    /// An app by client id; ids no app could have are not looked up.
    pub(super) async fn app(&self, client_id: &ClientId) -> Result<Option<Arc<OAuthApp>>, Error> {
        if client_id.0.is_empty() || client_id.0.len() > limits::MAX_ID_LEN {
            return Ok(None);
        }
        self.cached_app(client_id).await
    }

    /// Client authentication (RFC 6749 §2.3): confidential clients by
    /// secret, public clients by client_id alone. A caller blocked for
    /// failing too often is refused before anything is checked; a failure
    /// that finds its budget empty is answered as too many attempts.
    pub async fn authenticate_client(&self, client: &ClientAuth) -> Result<Arc<OAuthApp>, Error> {
        let throttle = &self.client_auth_throttle;
        let client_id = client.client_id.as_str();
        throttle
            .check(client_id, client.address)
            .map_err(|refused| {
                self.stats.rate_limits.refused(CLIENT_AUTH_LIMIT);
                Error::TooManyAttempts {
                    retry_after_secs: refused.retry_after_secs(),
                }
            })?;
        let result = self.check_client(client).await;
        if let Err(err) = &result
            && err.class() == ErrorClass::InvalidClient
            && let Err(refused) = throttle.record_failure(client_id, client.address)
        {
            let retry_after_secs = refused.retry_after_secs();
            tracing::warn!(
                %client_id,
                address = ?client.address,
                retry_after_secs,
                "failed client authentications over budget; caller blocked"
            );
            self.stats.rate_limits.refused(CLIENT_AUTH_LIMIT);
            return Err(Error::TooManyAttempts { retry_after_secs });
        }
        result
    }

    async fn check_client(&self, client: &ClientAuth) -> Result<Arc<OAuthApp>, Error> {
        let app = self
            .app(&client.client_id)
            .await?
            .ok_or_else(|| oauth_error(OAuthErrorCode::InvalidClient, "unknown client"))?;
        let presented = client.client_secret.as_deref().filter(|s| !s.is_empty());
        match presented {
            // The docs' token requests carry client_id and PKCE alone.
            None if app.client_type == ClientType::Public => Ok(app),
            None => Err(oauth_error(
                OAuthErrorCode::InvalidClient,
                "this app must authenticate with its client secret",
            )),
            Some(secret) if app.accepts_secret(secret, self.clock.now()) => Ok(app),
            Some(_) => Err(oauth_error(
                OAuthErrorCode::InvalidClient,
                "client authentication failed",
            )),
        }
    }
}

/// The user behind a member's call.
fn caller_id(caller: &Principal) -> Result<&UserId, Error> {
    caller
        .user_id
        .as_ref()
        .ok_or(Error::PermissionDenied(Reason::CredentialKindNotAccepted))
}

fn check_redirect_uris(uris: Vec<String>) -> Result<Vec<String>, Error> {
    if uris.is_empty() || uris.len() > app::MAX_REDIRECT_URIS {
        return Err(Error::invalid(format!(
            "give 1 to {} redirect URIs",
            app::MAX_REDIRECT_URIS
        )));
    }
    for uri in &uris {
        app::validate_redirect_uri(uri).map_err(|why| Error::invalid(format!("{why}: {uri}")))?;
    }
    Ok(uris)
}

fn check_app_scopes(names: &[String]) -> Result<ScopeSet, Error> {
    let scopes = parse_scopes(names)?;
    if scopes.is_empty() {
        return Err(Error::invalid("an app needs at least one scope"));
    }
    Ok(scopes)
}
