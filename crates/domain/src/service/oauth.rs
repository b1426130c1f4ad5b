//! OAuth use-cases: app registration, consent, code exchange, refresh,
//! revocation (RFC 7009) and introspection (RFC 7662). The gRPC and HTTP
//! adapters both call these, so both behave the same.

use tracing::instrument;

use crate::clock::Timestamp;
use crate::credential::{CredentialKind, Secret, SecretHash};
use crate::directory::{Membership, UserId, WorkspaceId};
use crate::error::{Error, OAuthErrorCode, Reason};
use crate::oauth::request::{
    AuthorizationRequest, AuthorizeError, ValidatedAuthorization, redirect_with,
    validate_authorization,
};
use crate::oauth::{
    ACCESS_TOKEN_SECS, CODE_SECS, ClientType, OAuthApp, OAuthToken, REFRESH_TOKEN_SECS, TokenKind,
    app, pkce,
};
use crate::resolve::{AccessTokenGrant, VerifiedCredential};
use crate::scope::ScopeSet;

use super::keys::parse_scopes;
use super::{Service, check_name, limits};

/// How a client identifies itself at the token endpoint.
#[derive(Clone, Default)]
pub struct ClientAuth {
    pub client_id: String,
    pub client_secret: Option<String>,
}

impl std::fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientAuth")
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// A token response: shown once, never stored in the clear.
#[derive(Debug)]
pub struct IssuedTokens {
    pub access_token: Secret,
    pub refresh_token: Secret,
    pub expires_in: i64,
    pub scopes: ScopeSet,
    pub workspace_id: WorkspaceId,
}

/// RFC 7662 introspection answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Introspection {
    pub active: bool,
    pub token: Option<OAuthToken>,
}

fn oauth(code: OAuthErrorCode, message: &str) -> Error {
    Error::OAuth(code, message.to_owned())
}

fn invalid_grant(message: &str) -> Error {
    oauth(OAuthErrorCode::InvalidGrant, message)
}

impl Service {
    // ---- apps ----

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
            client_id: uuid::Uuid::now_v7().simple().to_string(),
            name,
            client_type,
            secret_hash: secret.as_ref().map(Secret::hash),
            redirect_uris,
            allowed_scopes,
            created_at: self.clock.now(),
        };
        self.store.insert_app(&app).await?;
        tracing::info!(client_id = %app.client_id, client_type = %client_type, "oauth app registered");
        Ok((app, secret))
    }

    pub async fn list_apps(&self) -> Result<Vec<OAuthApp>, Error> {
        Ok(self.store.list_apps().await?)
    }

    /// A new `vels_` secret; the old one stops working at once.
    pub async fn rotate_app_secret(&self, client_id: &str) -> Result<Secret, Error> {
        let app = self.app(client_id).await?.ok_or(Error::NotFound("app"))?;
        if app.client_type != ClientType::Confidential {
            return Err(Error::invalid("public clients have no secret"));
        }
        let secret = Secret::generate(CredentialKind::ClientSecret);
        if !self.store.set_app_secret(client_id, &secret.hash()).await? {
            return Err(Error::NotFound("app"));
        }
        tracing::info!(client_id, "oauth app secret rotated");
        Ok(secret)
    }

    pub async fn delete_app(&self, client_id: &str) -> Result<(), Error> {
        if !self.store.delete_app(client_id).await? {
            return Err(Error::NotFound("app"));
        }
        self.after_change().await;
        tracing::info!(client_id, "oauth app deleted with its codes and tokens");
        Ok(())
    }

    async fn app(&self, client_id: &str) -> Result<Option<OAuthApp>, Error> {
        if client_id.is_empty() || client_id.len() > limits::MAX_ID_LEN {
            return Ok(None);
        }
        Ok(self.store.app(client_id).await?)
    }

    /// Client authentication (RFC 6749 §2.3): confidential clients by
    /// secret, public clients by client_id alone.
    pub async fn authenticate_client(&self, client: &ClientAuth) -> Result<OAuthApp, Error> {
        let app = self
            .app(&client.client_id)
            .await?
            .ok_or_else(|| oauth(OAuthErrorCode::InvalidClient, "unknown client"))?;
        let presented = client.client_secret.as_deref().filter(|s| !s.is_empty());
        match (app.client_type, presented, app.secret_hash) {
            (ClientType::Public, None, _) => Ok(app),
            (ClientType::Public, Some(_), _) => Err(oauth(
                OAuthErrorCode::InvalidClient,
                "public clients do not authenticate with a secret",
            )),
            (ClientType::Confidential, Some(secret), Some(stored))
                if SecretHash::of(secret).ct_eq(&stored) =>
            {
                Ok(app)
            }
            (ClientType::Confidential, _, _) => Err(oauth(
                OAuthErrorCode::InvalidClient,
                "client authentication failed",
            )),
        }
    }

    // ---- consent ----

    /// Checks an authorization request; the outer error is an outage, the
    /// inner one the request's fault.
    pub async fn check_authorization(
        &self,
        request: &AuthorizationRequest,
    ) -> Result<Result<ValidatedAuthorization, AuthorizeError>, Error> {
        let app = match request.client_id.as_deref() {
            Some(id) => self.app(id).await?,
            None => None,
        };
        Ok(validate_authorization(request, app.as_ref()))
    }

    /// The workspaces a user can pick on the consent page.
    pub async fn consent_workspaces(&self, user: &UserId) -> Result<Vec<Membership>, Error> {
        Ok(self.store.memberships_of_user(user).await?)
    }

    /// Approve: a code bound to client, redirect URI, user, workspace, scopes
    /// and challenge. Granted scopes are capped by the user's role there.
    /// Returns where to send the browser.
    #[instrument(skip_all, fields(client_id = %request.app.client_id))]
    pub async fn approve(
        &self,
        user: &UserId,
        request: &ValidatedAuthorization,
        workspace_slug: &str,
    ) -> Result<String, Error> {
        let membership = self
            .store
            .membership_by_slug(user, workspace_slug)
            .await?
            .ok_or(Error::PermissionDenied(Reason::NotAMember))?;
        let allowed = ScopeSet::of_role(membership.role)
            .effective()
            .union(ScopeSet::personal());
        let granted = request.scopes.intersection(allowed);
        if granted.is_empty() {
            let denied = AuthorizeError::Redirect {
                redirect_uri: request.redirect_uri.clone(),
                error: OAuthErrorCode::InvalidScope,
                description: "your role in that workspace allows none of the requested scopes"
                    .into(),
                state: request.state.clone(),
            };
            return denied
                .location()
                .ok_or_else(|| Error::Internal("no redirect".into()));
        }
        let now = self.clock.now();
        let code = Secret::generate(CredentialKind::AuthorizationCode);
        self.store
            .insert_code(&crate::oauth::AuthorizationCode {
                hash: code.hash(),
                client_id: request.app.client_id.clone(),
                redirect_uri: request.redirect_uri.clone(),
                user_id: user.clone(),
                workspace_id: membership.workspace.id.clone(),
                scopes: granted,
                code_challenge: request.code_challenge.clone(),
                family_id: uuid::Uuid::now_v7().to_string(),
                created_at: now,
                expires_at: now.plus_secs(CODE_SECS),
                used_at: None,
            })
            .await?;
        let mut params = vec![("code", code.expose())];
        if let Some(state) = &request.state {
            params.push(("state", state));
        }
        Ok(redirect_with(&request.redirect_uri, &params))
    }

    /// Deny: `error=access_denied` back to the client.
    pub fn deny(&self, request: &ValidatedAuthorization) -> String {
        let mut params = vec![
            ("error", "access_denied"),
            ("error_description", "the user denied the request"),
        ];
        if let Some(state) = &request.state {
            params.push(("state", state));
        }
        redirect_with(&request.redirect_uri, &params)
    }

    // ---- token endpoint ----

    /// `grant_type=authorization_code` (RFC 6749 §4.1.3, RFC 7636 §4.6).
    #[instrument(skip_all, fields(client_id = %client.client_id))]
    pub async fn exchange_code(
        &self,
        client: &ClientAuth,
        code: &str,
        redirect_uri: &str,
        code_verifier: &str,
    ) -> Result<IssuedTokens, Error> {
        let app = self.authenticate_client(client).await?;
        if code.is_empty() {
            return Err(oauth(OAuthErrorCode::InvalidRequest, "code is required"));
        }
        if code_verifier.is_empty() {
            return Err(oauth(
                OAuthErrorCode::InvalidRequest,
                "code_verifier is required (PKCE)",
            ));
        }
        let secret = Secret::parse(code)
            .ok()
            .filter(|s| s.kind() == CredentialKind::AuthorizationCode)
            .ok_or_else(|| invalid_grant("the code is malformed"))?;
        let stored = self
            .store
            .code_by_hash(&secret.hash())
            .await?
            .ok_or_else(|| invalid_grant("the code is unknown"))?;
        let now = self.clock.now();
        if stored.used_at.is_some() {
            self.revoke_family_after_reuse(&stored.family_id, now, "authorization code")
                .await?;
            return Err(invalid_grant(
                "the code was already used; tokens issued from it are revoked",
            ));
        }
        if stored.client_id != app.client_id {
            return Err(invalid_grant("the code was issued to another client"));
        }
        if stored.redirect_uri != redirect_uri {
            return Err(invalid_grant(
                "redirect_uri does not match the authorization request",
            ));
        }
        if stored.expires_at <= now {
            return Err(invalid_grant("the code has expired"));
        }
        if !pkce::verify(code_verifier, &stored.code_challenge) {
            return Err(invalid_grant(
                "code_verifier does not match the code_challenge",
            ));
        }
        let (tokens, issued) = self.token_pair(
            &stored.family_id,
            &app.client_id,
            &stored.user_id,
            &stored.workspace_id,
            stored.scopes,
            now,
        );
        if !self.store.redeem_code(&stored.hash, now, &tokens).await? {
            self.revoke_family_after_reuse(&stored.family_id, now, "authorization code")
                .await?;
            return Err(invalid_grant(
                "the code was already used; tokens issued from it are revoked",
            ));
        }
        self.cache.known().insert(&issued.access_token.hash());
        Ok(issued)
    }

    /// `grant_type=refresh_token` with rotation and reuse detection
    /// (RFC 6749 §6, RFC 9700 §4.14.2).
    #[instrument(skip_all, fields(client_id = %client.client_id))]
    pub async fn refresh(
        &self,
        client: &ClientAuth,
        refresh_token: &str,
        scope: Option<&str>,
    ) -> Result<IssuedTokens, Error> {
        let app = self.authenticate_client(client).await?;
        if refresh_token.is_empty() {
            return Err(oauth(
                OAuthErrorCode::InvalidRequest,
                "refresh_token is required",
            ));
        }
        let secret = Secret::parse(refresh_token)
            .ok()
            .filter(|s| s.kind() == CredentialKind::RefreshToken)
            .ok_or_else(|| invalid_grant("the refresh token is malformed"))?;
        let token = self
            .store
            .token_by_hash(&secret.hash())
            .await?
            .filter(|t| t.kind == TokenKind::Refresh)
            .ok_or_else(|| invalid_grant("the refresh token is unknown"))?;
        if token.client_id != app.client_id {
            return Err(invalid_grant(
                "the refresh token was issued to another client",
            ));
        }
        let now = self.clock.now();
        if token.revoked_at.is_some() {
            return Err(invalid_grant("the refresh token has been revoked"));
        }
        if token.rotated_at.is_some() {
            self.revoke_family_after_reuse(&token.family_id, now, "refresh token")
                .await?;
            return Err(invalid_grant(
                "the refresh token was already used; its family is revoked",
            ));
        }
        if token.expires_at <= now {
            return Err(invalid_grant("the refresh token has expired"));
        }
        let scopes = match scope.map(str::trim).filter(|s| !s.is_empty()) {
            None => token.scopes,
            Some(text) => {
                let asked = ScopeSet::parse_space_separated(text)
                    .map_err(|_| oauth(OAuthErrorCode::InvalidScope, "unknown scope"))?;
                if !asked.is_subset(token.scopes) {
                    return Err(Error::OAuthWithReason(
                        OAuthErrorCode::InvalidScope,
                        Reason::ScopeExceedsGrant,
                        "scope exceeds the original grant".to_owned(),
                    ));
                }
                asked
            }
        };
        let (tokens, issued) = self.token_pair(
            &token.family_id,
            &app.client_id,
            &token.user_id,
            &token.workspace_id,
            scopes,
            now,
        );
        if !self
            .store
            .rotate_refresh_token(&token.id, now, &tokens)
            .await?
        {
            self.revoke_family_after_reuse(&token.family_id, now, "refresh token")
                .await?;
            return Err(invalid_grant(
                "the refresh token was already used; its family is revoked",
            ));
        }
        self.cache.known().insert(&issued.access_token.hash());
        Ok(issued)
    }

    /// RFC 7009: revoking a refresh token revokes its whole family; an
    /// unknown or foreign-format token is not an error.
    pub async fn revoke_oauth_token(&self, client: &ClientAuth, token: &str) -> Result<(), Error> {
        let app = self.authenticate_client(client).await?;
        let Some(stored) = self.lookup_oauth_token(token).await? else {
            return Ok(());
        };
        if stored.client_id != app.client_id {
            return Err(oauth(
                OAuthErrorCode::UnauthorizedClient,
                "the token was issued to another client",
            ));
        }
        let now = self.clock.now();
        match stored.kind {
            TokenKind::Refresh => {
                self.store.revoke_family(&stored.family_id, now).await?;
            }
            TokenKind::Access => {
                self.store.revoke_token(&stored.id, now).await?;
            }
        }
        self.after_change().await;
        tracing::info!(client_id = %app.client_id, kind = stored.kind.as_str(), "oauth token revoked");
        Ok(())
    }

    /// RFC 7662. `client`, when given, may only see its own tokens; internal
    /// callers (admin token) pass `None` and see all.
    pub async fn introspect(
        &self,
        client: Option<&OAuthApp>,
        token: &str,
    ) -> Result<Introspection, Error> {
        let inactive = Introspection {
            active: false,
            token: None,
        };
        let Some(stored) = self.lookup_oauth_token(token).await? else {
            return Ok(inactive);
        };
        if client.is_some_and(|c| c.client_id != stored.client_id) {
            return Ok(inactive);
        }
        let now = self.clock.now();
        let active =
            stored.revoked_at.is_none() && stored.rotated_at.is_none() && stored.expires_at > now;
        if !active {
            return Ok(inactive);
        }
        if stored.kind == TokenKind::Access
            && self
                .store
                .membership(&stored.workspace_id, &stored.user_id)
                .await?
                .is_none()
        {
            return Ok(inactive);
        }
        Ok(Introspection {
            active: true,
            token: Some(stored),
        })
    }

    async fn lookup_oauth_token(&self, token: &str) -> Result<Option<OAuthToken>, Error> {
        let Ok(secret) = Secret::parse(token.trim()) else {
            return Ok(None);
        };
        if !matches!(
            secret.kind(),
            CredentialKind::AccessToken | CredentialKind::RefreshToken
        ) {
            return Ok(None);
        }
        Ok(self.store.token_by_hash(&secret.hash()).await?)
    }

    /// For Authenticate: an access token as the resolution rules see it.
    pub(super) async fn verify_access_token(
        &self,
        hash: &SecretHash,
    ) -> Result<VerifiedCredential, Error> {
        let token = self
            .store
            .token_by_hash(hash)
            .await?
            .filter(|t| t.kind == TokenKind::Access && t.hash.ct_eq(hash))
            .ok_or(Error::Unauthenticated(Reason::CredentialUnknown))?;
        let workspace = self.workspace_by_id(&token.workspace_id).await?;
        Ok(VerifiedCredential::AccessToken(AccessTokenGrant {
            token_id: token.id,
            user_id: token.user_id,
            workspace,
            client_id: token.client_id,
            scopes: token.scopes,
            expires_at: token.expires_at,
            revoked_at: token.revoked_at,
        }))
    }

    async fn revoke_family_after_reuse(
        &self,
        family_id: &str,
        now: Timestamp,
        what: &str,
    ) -> Result<(), Error> {
        let revoked = self.store.revoke_family(family_id, now).await?;
        self.after_change().await;
        tracing::warn!(family_id, revoked, "{what} reused; token family revoked");
        Ok(())
    }

    fn token_pair(
        &self,
        family_id: &str,
        client_id: &str,
        user: &UserId,
        workspace: &WorkspaceId,
        scopes: ScopeSet,
        now: Timestamp,
    ) -> (Vec<OAuthToken>, IssuedTokens) {
        let access = Secret::generate(CredentialKind::AccessToken);
        let refresh = Secret::generate(CredentialKind::RefreshToken);
        let token = |secret: &Secret, kind, lifetime| OAuthToken {
            id: uuid::Uuid::now_v7().to_string(),
            hash: secret.hash(),
            kind,
            family_id: family_id.to_owned(),
            client_id: client_id.to_owned(),
            user_id: user.clone(),
            workspace_id: workspace.clone(),
            scopes,
            created_at: now,
            expires_at: now.plus_secs(lifetime),
            revoked_at: None,
            rotated_at: None,
        };
        let tokens = vec![
            token(&access, TokenKind::Access, ACCESS_TOKEN_SECS),
            token(&refresh, TokenKind::Refresh, REFRESH_TOKEN_SECS),
        ];
        let issued = IssuedTokens {
            access_token: access,
            refresh_token: refresh,
            expires_in: ACCESS_TOKEN_SECS,
            scopes,
            workspace_id: workspace.clone(),
        };
        (tokens, issued)
    }
}
