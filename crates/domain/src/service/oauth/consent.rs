//! The consent page's use-cases: checking an authorization request, the
//! workspaces a user may grant, and approving or denying. Every redirect
//! back to the client carries `iss` (RFC 9207), the configured issuer.

use tracing::instrument;

use crate::credential::{CredentialKind, Secret};
use crate::directory::{Membership, UserId};
use crate::error::{Error, OAuthErrorCode, Reason};
use crate::oauth::request::{
    AuthorizationRequest, AuthorizeError, RedirectError, ValidatedAuthorization, redirect_with,
    validate_authorization,
};
use crate::oauth::{AuthorizationCode, CODE_SECS, ClientId, FamilyId, OAuthApp};
use crate::page::{MAX_PAGE_SIZE, PageRequest};
use crate::resolve::MembershipKey;
use crate::scope::ScopeSet;
use crate::service::Service;

impl Service {
    /// Checks an authorization request; the outer error is an outage, the
    /// inner one the request's fault.
    pub async fn check_authorization(
        &self,
        request: &AuthorizationRequest,
    ) -> Result<Result<ValidatedAuthorization, AuthorizeError>, Error> {
        let app = match request.client_id.as_deref() {
            Some(id) => self.app(&ClientId(id.to_owned())).await?,
            None => None,
        };
        Ok(
            validate_authorization(request, app.as_deref()).map_err(|err| match err {
                AuthorizeError::Redirect(redirect) => AuthorizeError::Redirect(RedirectError {
                    issuer: Some(self.config.issuer.clone()),
                    ..redirect
                }),
                page => page,
            }),
        )
    }

    /// Who registered an app, as the consent page names it: its
    /// workspace, or the operator.
    pub async fn app_registrant(&self, app: &OAuthApp) -> Result<String, Error> {
        Ok(match &app.workspace_id {
            Some(id) => format!("the {} workspace", self.workspace_by_id(id).await?.name),
            None => "the Velocity operator".to_owned(),
        })
    }

    /// The workspaces a user can pick on the consent page: all of them.
    pub async fn consent_workspaces(&self, user: &UserId) -> Result<Vec<Membership>, Error> {
        let mut all = Vec::new();
        let mut page = PageRequest {
            size: MAX_PAGE_SIZE,
            after: None,
        };
        loop {
            let found = self.memberships_of_user(user, &page).await?;
            all.extend(found.items);
            match found.next {
                Some(next) => page.after = Some(next),
                None => return Ok(all),
            }
        }
    }

    /// Approve: a code bound to client, redirect URI, user, workspace, scopes
    /// and challenge. Granted scopes are capped by the user's role there.
    /// Returns where to send the browser.
    // Debug level: see `exchange_code`.
    #[instrument(level = "debug", skip_all, fields(client_id = %request.app.client_id))]
    pub async fn approve(
        &self,
        user: &UserId,
        request: &ValidatedAuthorization,
        workspace_slug: &str,
    ) -> Result<String, Error> {
        // Through the cache Authenticate reads: the tokens this code buys
        // follow the same membership there.
        let membership = self
            .cached_membership(MembershipKey::BySlug(
                user.clone(),
                workspace_slug.to_owned(),
            ))
            .await?
            .ok_or(Error::PermissionDenied(Reason::NotAMember))?;
        let allowed = ScopeSet::of_role(membership.role)
            .effective()
            .union(ScopeSet::personal());
        let granted = request.scopes.intersection(allowed);
        if granted.is_empty() {
            let denied = RedirectError {
                redirect_uri: request.redirect_uri.clone(),
                error: OAuthErrorCode::InvalidScope,
                description: "your role in that workspace allows none of the requested scopes"
                    .into(),
                state: request.state.clone(),
                issuer: Some(self.config.issuer.clone()),
            };
            return Ok(denied.location());
        }
        let now = self.clock.now();
        let code = Secret::generate(CredentialKind::AuthorizationCode);
        let stored = AuthorizationCode {
            hash: code.hash(),
            client_id: request.app.client_id.clone(),
            redirect_uri: request.redirect_uri.clone(),
            user_id: user.clone(),
            workspace_id: membership.workspace.id.clone(),
            scopes: granted,
            code_challenge: request.code_challenge.clone(),
            family_id: FamilyId::generate(),
            created_at: now,
            expires_at: now.plus_secs(CODE_SECS),
            used_at: None,
        };
        self.store.insert_code(&stored).await?;
        self.cache.put_issued_code(stored);
        let mut params = vec![("code", code.expose())];
        if let Some(state) = &request.state {
            params.push(("state", state));
        }
        params.push(("iss", &self.config.issuer));
        Ok(redirect_with(&request.redirect_uri, &params))
    }

    /// Deny: `error=access_denied` back to the client.
    pub fn deny(&self, request: &ValidatedAuthorization) -> String {
        RedirectError {
            redirect_uri: request.redirect_uri.clone(),
            error: OAuthErrorCode::AccessDenied,
            description: "the user denied the request".into(),
            state: request.state.clone(),
            issuer: Some(self.config.issuer.clone()),
        }
        .location()
    }
}
