//! The token endpoint: `authorization_code` (RFC 6749 §4.1.3, RFC 7636
//! §4.6) and `refresh_token` with rotation and reuse detection (RFC 6749 §6,
//! RFC 9700 §4.14.2).
//!
//! Both grants take the same steps, in `redeem`: authenticate the client,
//! parse what it presents, find it, check it is this client's, live and not
//! yet spent (a spent one revokes its whole family), apply the grant's own
//! checks, mint a pair, and claim the grant and store the pair in one
//! transaction that exactly one caller wins.
//!
//! A code this replica did not issue (or no longer keeps) skips the find:
//! its claim carries the checks as conditions and issues the pair from the
//! code's row, one round trip where reading first takes two. Only a claim
//! that changes nothing leads to the read, and so to the same refusals.
//!
//! One exception, the refresh reuse interval (`ServiceConfig`, default 10 s,
//! 0 = off; docs/oauth-refresh.md): a refresh token used again by its own
//! client within the interval after its rotation, while it is the family's
//! latest rotation, live and unexpired, gets a fresh pair in the same family
//! and revokes nothing, so a client racing itself (two tabs, a retry after a
//! timeout) is not logged out. After the interval, reuse is a replay.

use tracing::instrument;

use crate::clock::Timestamp;
use crate::credential::{CredentialKind, Secret, SecretHash};
use crate::directory::{UserId, WorkspaceId};
use crate::error::{Error, OAuthErrorCode, Reason};
use crate::oauth::{
    ACCESS_TOKEN_SECS, AuthorizationCode, ClientId, FamilyId, OAuthApp, OAuthToken, PresentedCode,
    REFRESH_TOKEN_SECS, TokenId, TokenKind, TokenSeed, pkce,
};
use crate::scope::ScopeSet;
use crate::service::Service;
use crate::stats::{GrantKind, GrantOutcome};

use super::apps::ClientAuth;
use super::{invalid_grant, oauth_error};

/// A token response: shown once, never stored in the clear.
#[derive(Debug)]
pub struct IssuedTokens {
    pub access_token: Secret,
    pub refresh_token: Secret,
    pub expires_in: i64,
    pub scopes: ScopeSet,
    pub workspace_id: WorkspaceId,
}

/// A stored code or refresh token, as the shared steps see it.
struct Redeemable {
    /// "the code" or "the refresh token", for messages.
    what: &'static str,
    claim: Claim,
    client_id: ClientId,
    family_id: FamilyId,
    user_id: UserId,
    workspace_id: WorkspaceId,
    scopes: ScopeSet,
    expires_at: Timestamp,
    revoked: bool,
    /// When it was spent (a code used, a refresh token rotated).
    spent_at: Option<Timestamp>,
    /// Refresh tokens, while the reuse interval is on: spent at or after
    /// this, it may be spent again. `None` for codes.
    reuse_since: Option<Timestamp>,
}

/// The conditional update that spends a grant.
enum Claim {
    Code(SecretHash),
    RefreshToken(TokenId),
}

impl Redeemable {
    fn code(code: AuthorizationCode) -> Self {
        Redeemable {
            what: "the code",
            claim: Claim::Code(code.hash),
            client_id: code.client_id,
            family_id: code.family_id,
            user_id: code.user_id,
            workspace_id: code.workspace_id,
            scopes: code.scopes,
            expires_at: code.expires_at,
            revoked: false,
            spent_at: code.used_at,
            reuse_since: None,
        }
    }
}

impl Service {
    /// The slug of the workspace a token response is for, through the
    /// workspace cache (workspaces do not change).
    pub async fn workspace_slug(&self, id: &WorkspaceId) -> Result<String, Error> {
        Ok(self.workspace_by_id(id).await?.slug)
    }

    /// `grant_type=authorization_code`.
    // Debug level, as Authenticate: at the default level a grant makes no
    // span of its own (formatting one was a few per cent of a grant). The
    // request's span carries its id; the events below name the client.
    #[instrument(level = "debug", skip_all, fields(client_id = %client.client_id))]
    pub async fn exchange_code(
        &self,
        client: &ClientAuth,
        code: &str,
        redirect_uri: &str,
        code_verifier: &str,
    ) -> Result<IssuedTokens, Error> {
        let result = self
            .exchange_code_counted(client, code, redirect_uri, code_verifier)
            .await;
        self.count_grant(GrantKind::AuthorizationCode, result)
    }

    async fn exchange_code_counted(
        &self,
        client: &ClientAuth,
        code: &str,
        redirect_uri: &str,
        code_verifier: &str,
    ) -> Result<IssuedTokens, Refusal> {
        let app = self.authenticate_client(client).await?;
        if code_verifier.is_empty() {
            return Err(oauth_error(
                OAuthErrorCode::InvalidRequest,
                "code_verifier is required (PKCE)",
            )
            .into());
        }
        let hash = presented(code, "code", CredentialKind::AuthorizationCode)?;
        let stored = match self.cache.take_issued_code(&hash) {
            Some(issued) => issued,
            None => {
                // Not issued here (or no longer kept): spend it as
                // presented, and read it only if that fails, to say why.
                if let Some(issued) = self
                    .redeem_unread_code(&app, &hash, redirect_uri, code_verifier)
                    .await?
                {
                    return Ok(issued);
                }
                self.store
                    .code_by_hash(&hash)
                    .await?
                    .ok_or_else(|| invalid_grant("the code is unknown"))?
            }
        };
        let now = self.clock.now();
        let mismatch = if stored.redirect_uri != redirect_uri {
            Some("redirect_uri does not match the authorization request")
        } else if !pkce::verify(code_verifier, &stored.code_challenge) {
            Some("code_verifier does not match the code_challenge")
        } else {
            None
        };
        let grant = Redeemable::code(stored);
        self.check_redeemable(&app, &grant, now).await?;
        if let Some(message) = mismatch {
            // RFC 9700 §2.1.1: a presented code is burnt. Whoever holds a
            // stolen code gets one guess at the verifier, not a search.
            self.store.redeem_code(&hash, now, &[]).await?;
            return Err(invalid_grant(format!("{message}; the code is now spent")).into());
        }
        let scopes = grant.scopes;
        self.redeem(&app, grant, scopes, now).await
    }

    /// A code this replica has no copy of, spent on the condition that it
    /// passes every check the read-then-claim path makes (this client's,
    /// unspent, unexpired, the redirect URI, the PKCE verifier): its tokens,
    /// or `None` with nothing spent when it does not, or is unknown.
    async fn redeem_unread_code(
        &self,
        app: &OAuthApp,
        hash: &SecretHash,
        redirect_uri: &str,
        code_verifier: &str,
    ) -> Result<Option<IssuedTokens>, Refusal> {
        if !pkce::is_valid_verifier(code_verifier) {
            return Ok(None);
        }
        let now = self.clock.now();
        let pair = MintedPair::generate(now);
        let challenge = pkce::challenge_of(code_verifier);
        let presented = PresentedCode {
            hash,
            client_id: &app.client_id,
            redirect_uri,
            code_challenge: &challenge,
        };
        let Some(code) = self
            .store
            .redeem_presented_code(&presented, now, &pair.seeds())
            .await?
        else {
            return Ok(None);
        };
        let grant = Redeemable::code(code);
        let scopes = grant.scopes;
        let (tokens, issued) = pair.issue(app, &grant, scopes);
        Ok(Some(self.keep_issued(tokens, issued)))
    }

    /// `grant_type=refresh_token`; `scope` may narrow the grant, never widen it.
    // Debug level: see `exchange_code`.
    #[instrument(level = "debug", skip_all, fields(client_id = %client.client_id))]
    pub async fn refresh(
        &self,
        client: &ClientAuth,
        refresh_token: &str,
        scope: Option<&str>,
    ) -> Result<IssuedTokens, Error> {
        let result = self.refresh_counted(client, refresh_token, scope).await;
        self.count_grant(GrantKind::RefreshToken, result)
    }

    async fn refresh_counted(
        &self,
        client: &ClientAuth,
        refresh_token: &str,
        scope: Option<&str>,
    ) -> Result<IssuedTokens, Refusal> {
        let app = self.authenticate_client(client).await?;
        let hash = presented(refresh_token, "refresh_token", CredentialKind::RefreshToken)?;
        let token = match self.cache.take_issued_refresh_token(&hash) {
            Some(issued) => Some(issued),
            None => self.store.token_by_hash(&hash).await?,
        }
        .filter(|t| t.kind == TokenKind::Refresh)
        .ok_or_else(|| invalid_grant("the refresh token is unknown"))?;
        let now = self.clock.now();
        let grant = Redeemable {
            what: "the refresh token",
            claim: Claim::RefreshToken(token.id),
            client_id: token.client_id,
            family_id: token.family_id,
            user_id: token.user_id,
            workspace_id: token.workspace_id,
            scopes: token.scopes,
            expires_at: token.expires_at,
            revoked: token.revoked_at.is_some(),
            spent_at: token.rotated_at,
            reuse_since: self.refresh_reuse_since(now),
        };
        self.check_redeemable(&app, &grant, now).await?;
        // An app whose scopes were narrowed since the grant gets no more
        // than it holds now.
        let scopes = match scope.map(str::trim).filter(|s| !s.is_empty()) {
            None => grant.scopes.intersection(app.allowed_scopes),
            Some(text) => {
                let asked = ScopeSet::parse_space_separated(text)
                    .map_err(|_| oauth_error(OAuthErrorCode::InvalidScope, "unknown scope"))?;
                if !asked.is_subset(grant.scopes) {
                    return Err(Error::OAuthWithReason(
                        OAuthErrorCode::InvalidScope,
                        Reason::ScopeExceedsGrant,
                        "scope exceeds the original grant".to_owned(),
                    )
                    .into());
                }
                asked.intersection(app.allowed_scopes)
            }
        };
        if scopes.is_empty() {
            return Err(oauth_error(
                OAuthErrorCode::InvalidScope,
                "the app no longer holds any of the grant's scopes",
            )
            .into());
        }
        self.redeem(&app, grant, scopes, now).await
    }

    /// Refresh tokens rotated at or after this may be used again, or `None`
    /// when the reuse interval is off.
    fn refresh_reuse_since(&self, now: Timestamp) -> Option<Timestamp> {
        let secs = i64::try_from(self.config.refresh_reuse_interval_secs).unwrap_or(i64::MAX);
        (secs > 0).then(|| now.plus_secs(-secs))
    }

    /// The checks every grant passes before its own: this client's, not
    /// revoked, not spent (a replay revokes the family) unless within the
    /// reuse interval, not expired.
    async fn check_redeemable(
        &self,
        app: &OAuthApp,
        grant: &Redeemable,
        now: Timestamp,
    ) -> Result<(), Refusal> {
        let what = grant.what;
        if grant.client_id != app.client_id {
            return Err(invalid_grant(format!("{what} was issued to another client")).into());
        }
        if grant.revoked {
            return Err(invalid_grant(format!("{what} has been revoked")).into());
        }
        if let Some(spent_at) = grant.spent_at {
            let reusable =
                grant.reuse_since.is_some_and(|since| spent_at >= since) && grant.expires_at > now;
            if !reusable {
                return Err(self.replayed(grant, now).await);
            }
            tracing::info!(
                client_id = %grant.client_id,
                family_id = %grant.family_id,
                "{what} presented again within the reuse interval"
            );
        }
        if grant.expires_at <= now {
            return Err(invalid_grant(format!("{what} has expired")).into());
        }
        Ok(())
    }

    /// Mints a pair and spends the grant in one transaction; a refused claim
    /// (the loser of a race, or a reuse the store does not admit: outside
    /// the interval, or not the family's latest rotation) is a replay.
    async fn redeem(
        &self,
        app: &OAuthApp,
        grant: Redeemable,
        scopes: ScopeSet,
        now: Timestamp,
    ) -> Result<IssuedTokens, Refusal> {
        let (tokens, issued) = MintedPair::generate(now).issue(app, &grant, scopes);
        let won = match &grant.claim {
            Claim::Code(hash) => self.store.redeem_code(hash, now, &tokens).await?,
            Claim::RefreshToken(id) => {
                self.store
                    .rotate_refresh_token(id, now, grant.reuse_since, &tokens)
                    .await?
            }
        };
        if !won {
            return Err(self.replayed(&grant, now).await);
        }
        Ok(self.keep_issued(tokens, issued))
    }

    /// Keeps what a grant has just stored: the refresh token as issued
    /// (its next use needs no read), the access token in the filter.
    fn keep_issued(&self, tokens: Vec<OAuthToken>, issued: IssuedTokens) -> IssuedTokens {
        for token in tokens {
            match token.kind {
                TokenKind::Refresh => self.cache.put_issued_refresh_token(token),
                // The hash the pair was minted with: no second digest.
                TokenKind::Access => self.cache.add_known(&token.hash),
            }
        }
        issued
    }

    /// A spent grant presented again: its whole family is revoked (RFC 6749
    /// §4.1.2, RFC 9700 §4.14.2). Returns the error to answer with.
    async fn replayed(&self, grant: &Redeemable, now: Timestamp) -> Refusal {
        let what = grant.what;
        let error = match self.revoke_family(&grant.family_id, now).await {
            Err(err) => err,
            Ok(_) => {
                tracing::warn!(
                    client_id = %grant.client_id,
                    family_id = %grant.family_id,
                    "{what} reused; token family revoked"
                );
                invalid_grant(format!(
                    "{what} was already used; tokens issued from it are revoked"
                ))
            }
        };
        Refusal {
            error,
            replay: true,
        }
    }

    fn count_grant(
        &self,
        grant: GrantKind,
        result: Result<IssuedTokens, Refusal>,
    ) -> Result<IssuedTokens, Error> {
        let outcome = match &result {
            Ok(_) => GrantOutcome::Issued,
            Err(refusal) if refusal.replay => GrantOutcome::Replayed,
            Err(_) => GrantOutcome::Refused,
        };
        self.stats.grants.record(grant, outcome);
        result.map_err(|refusal| refusal.error)
    }
}

/// A grant's refusal, and whether it was a replay (which the grant
/// counters tell apart from other refusals).
struct Refusal {
    error: Error,
    replay: bool,
}

impl<E: Into<Error>> From<E> for Refusal {
    fn from(error: E) -> Self {
        Refusal {
            error: error.into(),
            replay: false,
        }
    }
}

/// The grant's secret as presented: required, well-formed, of `kind`.
fn presented(value: &str, field: &str, kind: CredentialKind) -> Result<SecretHash, Error> {
    if value.is_empty() {
        return Err(oauth_error(
            OAuthErrorCode::InvalidRequest,
            format!("{field} is required"),
        ));
    }
    Secret::parse(value)
        .ok()
        .filter(|s| s.kind() == kind)
        .map(|s| s.hash())
        .ok_or_else(|| invalid_grant(format!("the {field} is malformed")))
}

/// A new pair's secrets, their hashes and ids, made before its grant is
/// claimed. Each hash is taken once: a code this replica has not read
/// needs the seeds twice.
struct MintedPair {
    access: Secret,
    refresh: Secret,
    access_hash: SecretHash,
    refresh_hash: SecretHash,
    access_id: TokenId,
    refresh_id: TokenId,
    now: Timestamp,
}

impl MintedPair {
    fn generate(now: Timestamp) -> Self {
        let access = Secret::generate(CredentialKind::AccessToken);
        let refresh = Secret::generate(CredentialKind::RefreshToken);
        MintedPair {
            access_hash: access.hash(),
            refresh_hash: refresh.hash(),
            access,
            refresh,
            access_id: TokenId::generate(),
            refresh_id: TokenId::generate(),
            now,
        }
    }

    /// What storage needs to issue the pair from a code it has not been
    /// shown (`OAuthStore::redeem_presented_code`).
    fn seeds(&self) -> [TokenSeed; 2] {
        [
            TokenSeed {
                id: self.access_id.clone(),
                hash: self.access_hash,
                kind: TokenKind::Access,
                expires_at: self.now.plus_secs(ACCESS_TOKEN_SECS),
            },
            TokenSeed {
                id: self.refresh_id.clone(),
                hash: self.refresh_hash,
                kind: TokenKind::Refresh,
                expires_at: self.now.plus_secs(REFRESH_TOKEN_SECS),
            },
        ]
    }

    /// The pair as stored for `grant`, and the response that shows it.
    fn issue(
        self,
        app: &OAuthApp,
        grant: &Redeemable,
        scopes: ScopeSet,
    ) -> (Vec<OAuthToken>, IssuedTokens) {
        let now = self.now;
        let token = |seed: TokenSeed| OAuthToken {
            id: seed.id,
            hash: seed.hash,
            kind: seed.kind,
            family_id: grant.family_id.clone(),
            client_id: app.client_id.clone(),
            user_id: grant.user_id.clone(),
            workspace_id: grant.workspace_id.clone(),
            scopes,
            created_at: now,
            expires_at: seed.expires_at,
            revoked_at: None,
            rotated_at: None,
        };
        let tokens = self.seeds().map(token).to_vec();
        let issued = IssuedTokens {
            access_token: self.access,
            refresh_token: self.refresh,
            expires_in: ACCESS_TOKEN_SECS,
            scopes,
            workspace_id: grant.workspace_id.clone(),
        };
        (tokens, issued)
    }
}
