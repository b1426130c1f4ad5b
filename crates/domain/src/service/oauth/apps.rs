//! Registered apps: registration, listing, secret rotation, deletion, and
//! client authentication at the token endpoint (RFC 6749 §2.3), with its
//! brake on failures (`crate::throttle`).

use std::net::IpAddr;

use crate::credential::{CredentialKind, Secret, SecretHash};
use crate::error::{Error, ErrorClass, OAuthErrorCode};
use crate::oauth::{ClientId, ClientType, OAuthApp, app};
use crate::page::{Page, PageCursor, PageRequest};
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

impl Service {
    pub async fn register_app(
        &self,
        name: &str,
        redirect_uris: Vec<String>,
        scopes: &[String],
        client_type: ClientType,
    ) -> Result<(OAuthApp, Option<Secret>), Error> {
        let name = check_name(name)?.to_owned();
        if redirect_uris.is_empty() || redirect_uris.len() > app::MAX_REDIRECT_URIS {
            return Err(Error::invalid(format!(
                "give 1 to {} redirect URIs",
                app::MAX_REDIRECT_URIS
            )));
        }
        for uri in &redirect_uris {
            app::validate_redirect_uri(uri)
                .map_err(|why| Error::invalid(format!("{why}: {uri}")))?;
        }
        let allowed_scopes = parse_scopes(scopes)?;
        if allowed_scopes.is_empty() {
            return Err(Error::invalid("an app needs at least one scope"));
        }
        let secret = (client_type == ClientType::Confidential)
            .then(|| Secret::generate(CredentialKind::ClientSecret));
        let app = OAuthApp {
            // Without hyphens: client ids end up in URLs and config files.
            client_id: ClientId(uuid::Uuid::now_v7().simple().to_string()),
            name,
            client_type,
            secret_hash: secret.as_ref().map(Secret::hash),
            redirect_uris,
            allowed_scopes,
            created_at: self.clock.now(),
        };
        self.store.insert_app(&app).await?;
        self.origin_cache.clear();
        tracing::info!(client_id = %app.client_id, client_type = %client_type, "oauth app registered");
        Ok((app, secret))
    }

    pub async fn list_apps(&self, page: &PageRequest) -> Result<Page<OAuthApp>, Error> {
        let rows = self.store.list_apps(page).await?;
        Ok(Page::from_rows(rows, page, |app| {
            PageCursor::new(app.created_at.0, app.client_id.as_str())
        }))
    }

    /// A new `vels_` secret; the old one stops working at once.
    pub async fn rotate_app_secret(&self, client_id: &ClientId) -> Result<Secret, Error> {
        let app = self.app(client_id).await?.ok_or(Error::NotFound("app"))?;
        if app.client_type != ClientType::Confidential {
            return Err(Error::invalid("public clients have no secret"));
        }
        let secret = Secret::generate(CredentialKind::ClientSecret);
        if !self.store.set_app_secret(client_id, &secret.hash()).await? {
            return Err(Error::NotFound("app"));
        }
        // The cached app holds the old secret's hash: drop it here now.
        self.after_change().await;
        tracing::info!(%client_id, "oauth app secret rotated");
        Ok(secret)
    }

    pub async fn delete_app(&self, client_id: &ClientId) -> Result<(), Error> {
        if !self.store.delete_app(client_id).await? {
            return Err(Error::NotFound("app"));
        }
        self.origin_cache.clear();
        self.after_change().await;
        tracing::info!(%client_id, "oauth app deleted with its codes and tokens");
        Ok(())
    }

    /// An app by client id; ids no app could have are not looked up.
    pub(super) async fn app(&self, client_id: &ClientId) -> Result<Option<OAuthApp>, Error> {
        if client_id.0.is_empty() || client_id.0.len() > limits::MAX_ID_LEN {
            return Ok(None);
        }
        self.cached_app(client_id).await
    }

    /// Client authentication (RFC 6749 §2.3): confidential clients by
    /// secret, public clients by client_id alone. A caller blocked for
    /// failing too often is refused before anything is checked; a failure
    /// that finds its budget empty is answered as too many attempts.
    pub async fn authenticate_client(&self, client: &ClientAuth) -> Result<OAuthApp, Error> {
        let throttle = &self.client_auth_throttle;
        let client_id = client.client_id.as_str();
        throttle
            .check(client_id, client.address)
            .map_err(|refused| Error::TooManyAttempts {
                retry_after_secs: refused.retry_after_secs(),
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
            return Err(Error::TooManyAttempts { retry_after_secs });
        }
        result
    }

    async fn check_client(&self, client: &ClientAuth) -> Result<OAuthApp, Error> {
        let app = self
            .app(&client.client_id)
            .await?
            .ok_or_else(|| oauth_error(OAuthErrorCode::InvalidClient, "unknown client"))?;
        let presented = client.client_secret.as_deref().filter(|s| !s.is_empty());
        match (app.client_type, presented, app.secret_hash) {
            (ClientType::Public, None, _) => Ok(app),
            (ClientType::Public, Some(_), _) => Err(oauth_error(
                OAuthErrorCode::InvalidClient,
                "public clients do not authenticate with a secret",
            )),
            (ClientType::Confidential, Some(secret), Some(stored))
                if SecretHash::of(secret).ct_eq(&stored) =>
            {
                Ok(app)
            }
            (ClientType::Confidential, _, _) => Err(oauth_error(
                OAuthErrorCode::InvalidClient,
                "client authentication failed",
            )),
        }
    }
}
