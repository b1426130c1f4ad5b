//! Request budgets where calls enter (rate_limit.rs; docs/limits.md):
//! Authenticate as Envoy, forward-auth and services call it, calls without
//! a valid credential, and the token endpoint.

use std::net::IpAddr;

use crate::error::Error;
use crate::principal::{Principal, PrincipalKind};
use crate::rate_limit::{Budget, Check, LimitClass, RateKey};

use super::Service;

/// Report rounds a call waits for before it is decided on what this
/// replica knows (the shared counter is slow, not down).
const MAX_SYNC_WAITS: usize = 3;

impl Service {
    /// Authenticate, counted against the credential's budget: the principal
    /// and what is left of the budget (`None` when its class has no
    /// limit). Refusals (401, 403) are not counted here; see
    /// [`count_anonymous`](Self::count_anonymous).
    pub async fn authenticate_counted(
        &self,
        credential: &str,
        slug: Option<&str>,
        required_scopes: &[String],
    ) -> Result<(Principal, Option<Budget>), Error> {
        let principal = self.authenticate(credential, slug, required_scopes).await?;
        let (class, key) = budget_key(&principal);
        let budget = self.admit(class, &key).await?;
        Ok((principal, budget))
    }

    /// A call that presented no valid credential, counted against its
    /// address (forward-auth and ext_authz). Without an address there is
    /// nothing to count by.
    pub async fn count_anonymous(&self, address: Option<IpAddr>) -> Result<Option<Budget>, Error> {
        match address {
            Some(address) => {
                self.admit(LimitClass::Address, &RateKey::address(address))
                    .await
            }
            None => Ok(None),
        }
    }

    /// A token endpoint request, counted against its address and the
    /// client_id it names; the tighter budget of the two.
    pub async fn count_token_request(
        &self,
        client_id: &str,
        address: Option<IpAddr>,
    ) -> Result<Option<Budget>, Error> {
        let by_address = self.count_anonymous(address).await?;
        let by_client = self
            .admit(LimitClass::Client, &RateKey::id(client_id))
            .await?;
        Ok(match (by_address, by_client) {
            (Some(a), Some(c)) => Some(if c.remaining < a.remaining { c } else { a }),
            (a, c) => a.or(c),
        })
    }

    async fn admit(&self, class: LimitClass, key: &RateKey) -> Result<Option<Budget>, Error> {
        for _ in 0..MAX_SYNC_WAITS {
            match self.rate_limits.check(class, key) {
                Check::AwaitSync => self.rate_limits.wait_for_sync().await,
                decided => return self.counted(class, decided),
            }
        }
        self.counted(class, self.rate_limits.check_without_waiting(class, key))
    }

    /// The decision, with a refusal counted for metrics under its class.
    fn counted(&self, class: LimitClass, check: Check) -> Result<Option<Budget>, Error> {
        if matches!(check, Check::Limited(_)) {
            self.stats.rate_limits.refused(class.as_str());
        }
        outcome(check)
    }
}

fn outcome(check: Check) -> Result<Option<Budget>, Error> {
    match check {
        Check::Allowed(budget) => Ok(Some(budget)),
        Check::Limited(refused) => Err(Error::RateLimited(refused)),
        Check::Unlimited | Check::AwaitSync => Ok(None),
    }
}

/// Whose budget a principal spends: an API key its own; an access token
/// its grant's (app, user, workspace), so refreshing does not renew it; a
/// session its user's, over all their sessions.
fn budget_key(principal: &Principal) -> (LimitClass, RateKey) {
    match principal.kind {
        PrincipalKind::WorkspaceKey | PrincipalKind::PersonalKey => (
            LimitClass::Credential,
            RateKey::id(&principal.credential_id),
        ),
        PrincipalKind::AccessToken => {
            let grant = format!(
                "{}/{}/{}",
                principal.client_id.as_ref().map_or("", |c| c.0.as_str()),
                principal.user_id.as_ref().map_or("", |u| u.as_str()),
                principal.workspace.as_ref().map_or("", |w| w.id.as_str()),
            );
            (LimitClass::Credential, RateKey::id(&grant))
        }
        PrincipalKind::Session => (
            LimitClass::Session,
            RateKey::id(
                principal
                    .user_id
                    .as_ref()
                    .map_or(principal.credential_id.as_str(), |u| u.as_str()),
            ),
        ),
    }
}
