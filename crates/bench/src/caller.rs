//! What each scenario sends and what a correct reply looks like. Every reply
//! is checked: a fast wrong answer must never pass for throughput.

use std::sync::Arc;

use anyhow::Context;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_types::StatusExt;
use velocity_domain::{CredentialKind, Secret};
use velocity_proto::pb;
use velocity_proto::pb::auth_service_client::AuthServiceClient;

use crate::grant_fixtures::GrantFixtures;
use crate::http_grants;
use crate::scenarios::Scenario;
use crate::seed::{Fixtures, SessionMinter};

/// One worker's client and per-worker credentials for one scenario.
pub struct Caller {
    scenario: Scenario,
    auth: AuthServiceClient<Channel>,
    health: HealthClient<Channel>,
    fixtures: Arc<Fixtures>,
    /// A session token per worker, as distinct signed-in users' tabs
    /// would send; minted once because real tokens live for an hour.
    session: String,
    rng: StdRng,
    /// This stream's keep-alive HTTP/1.1 connection, for the HTTP scenarios.
    http: reqwest::Client,
    /// `refresh_chain`: the refresh token this stream holds, replaced by
    /// the one each grant returns. The stream's own: no other stream ever
    /// sends it, so rotation is never a race between streams.
    refresh_chain: Option<String>,
    /// Never-stored keys, made before the run so the client's CSPRNG calls
    /// are not measured as server time (the server keeps no negative cache,
    /// so a repeat is as unknown as a new one).
    unknown: Vec<String>,
    next_unknown: usize,
}

impl Caller {
    pub fn new(
        scenario: Scenario,
        channel: Channel,
        fixtures: Arc<Fixtures>,
        minter: &SessionMinter,
    ) -> anyhow::Result<Caller> {
        let session = match scenario {
            Scenario::SessionHs256 => minter.hs256(&fixtures.user_id),
            Scenario::SessionEs256 => minter.es256(&fixtures.user_id),
            _ => String::new(),
        };
        let refresh_chain = match (scenario, &fixtures.grants) {
            (Scenario::RefreshChain, Some(grants)) => Some(
                grants
                    .take_chain_head()
                    .context("fewer refresh-token chains seeded than streams")?,
            ),
            _ => None,
        };
        Ok(Caller {
            scenario,
            auth: AuthServiceClient::new(channel.clone()),
            health: HealthClient::new(channel),
            fixtures,
            session,
            rng: StdRng::from_os_rng(),
            http: http_grants::client()?,
            refresh_chain,
            unknown: if scenario == Scenario::UnknownKey {
                (0..4096)
                    .map(|_| {
                        Secret::generate(CredentialKind::WorkspaceKey)
                            .expose()
                            .to_owned()
                    })
                    .collect()
            } else {
                Vec::new()
            },
            next_unknown: 0,
        })
    }

    /// One call and its check. `Err` is a short description used to group
    /// errors in the report.
    pub async fn call(&mut self) -> Result<(), String> {
        let fx = Arc::clone(&self.fixtures);
        match self.scenario {
            Scenario::Health => self.check_health().await,
            Scenario::WorkspaceKey => {
                let principal = self
                    .authenticate(&fx.workspace_key, "", "issues:read")
                    .await?;
                expect_workspace_key(&principal, &fx, "issues:read")
            }
            Scenario::PersonalKeySlug => {
                let principal = self
                    .authenticate(&fx.personal_key, &fx.slug, "issues:write")
                    .await?;
                expect_user(
                    &principal,
                    pb::PrincipalKind::PersonalKey,
                    &fx,
                    "issues:write",
                )
            }
            Scenario::SessionHs256 | Scenario::SessionEs256 => {
                let token = self.session.clone();
                let principal = self.authenticate(&token, &fx.slug, "issues:read").await?;
                expect_user(&principal, pb::PrincipalKind::Session, &fx, "issues:read")
            }
            Scenario::UnknownKey => {
                self.next_unknown = (self.next_unknown + 1) % self.unknown.len().max(1);
                let secret = self
                    .unknown
                    .get(self.next_unknown)
                    .cloned()
                    .unwrap_or_default();
                match self.authenticate(&secret, "", "issues:read").await {
                    Ok(_) => Err("unknown key was accepted".into()),
                    Err(AuthError::Status(status)) => {
                        expect_refusal(&status, Code::Unauthenticated, "CREDENTIAL_UNKNOWN")
                    }
                    Err(AuthError::Wrong(what)) => Err(what),
                }
            }
            Scenario::ColdKeys => {
                let index = self.rng.random_range(0..fx.cold_sample.len());
                let principal = self
                    .authenticate(&fx.cold_sample[index], "", "issues:read")
                    .await?;
                if principal.workspace_slug != fx.cold_slug {
                    return Err(format!(
                        "cold key resolved to workspace {:?}",
                        principal.workspace_slug
                    ));
                }
                Ok(())
            }
            Scenario::OauthAccessToken => {
                let oauth = fx.oauth.as_ref().ok_or("no OAuth fixtures")?;
                let principal = self
                    .authenticate(&oauth.access_token, "", "issues:write")
                    .await?;
                if principal.kind != pb::PrincipalKind::OauthAccessToken as i32
                    || principal.client_id != oauth.client_id
                {
                    return Err("access token resolved to the wrong principal".into());
                }
                expect_user(
                    &principal,
                    pb::PrincipalKind::OauthAccessToken,
                    &fx,
                    "issues:write",
                )
            }
            Scenario::TokenEndpoint => {
                let oauth = fx.oauth.as_ref().ok_or("no OAuth fixtures")?;
                http_grants::token_endpoint(&self.http, oauth).await
            }
            Scenario::Introspection => http_grants::introspection(&self.http, grants(&fx)?).await,
            Scenario::RefreshChain => {
                let chain = self.refresh_chain.as_mut().ok_or("no refresh chain")?;
                http_grants::refresh_chain(&self.http, grants(&fx)?, chain).await
            }
            Scenario::ConsentApprove => {
                http_grants::consent_approve(&self.http, grants(&fx)?).await
            }
            Scenario::CodeExchange => http_grants::code_exchange(&self.http, grants(&fx)?).await,
        }
    }

    async fn check_health(&mut self) -> Result<(), String> {
        let reply = self
            .health
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .map_err(|status| describe(&status))?
            .into_inner();
        if reply.status == ServingStatus::Serving as i32 {
            Ok(())
        } else {
            Err(format!("health status {} instead of SERVING", reply.status))
        }
    }

    async fn authenticate(
        &mut self,
        credential: &str,
        slug: &str,
        scope: &str,
    ) -> Result<pb::Principal, AuthError> {
        let reply = self
            .auth
            .authenticate(pb::AuthenticateRequest {
                credential: credential.to_owned(),
                workspace_slug: slug.to_owned(),
                required_scopes: vec![scope.to_owned()],
            })
            .await?
            .into_inner();
        reply
            .principal
            .ok_or_else(|| AuthError::Wrong("reply without a principal".into()))
    }
}

fn grants(fx: &Fixtures) -> Result<&GrantFixtures, String> {
    fx.grants
        .as_ref()
        .ok_or_else(|| "no HTTP grant fixtures".into())
}

/// A refusal (kept whole, so `unknown_key` can inspect it) or a reply that
/// is already known to be wrong.
enum AuthError {
    Status(Box<Status>),
    Wrong(String),
}

impl From<Status> for AuthError {
    fn from(status: Status) -> Self {
        AuthError::Status(Box::new(status))
    }
}

impl From<AuthError> for String {
    fn from(err: AuthError) -> String {
        match err {
            AuthError::Status(status) => describe(&status),
            AuthError::Wrong(what) => what,
        }
    }
}

fn expect_refusal(status: &Status, code: Code, reason: &str) -> Result<(), String> {
    let got = status.get_details_error_info().map(|info| info.reason);
    if status.code() == code && got.as_deref() == Some(reason) {
        Ok(())
    } else {
        Err(format!(
            "expected {code:?}/{reason}, got {}",
            describe(status)
        ))
    }
}

fn expect_workspace_key(
    principal: &pb::Principal,
    fx: &Fixtures,
    scope: &str,
) -> Result<(), String> {
    if principal.kind != pb::PrincipalKind::WorkspaceKey as i32 {
        return Err(format!(
            "principal kind {} instead of WORKSPACE_KEY",
            principal.kind
        ));
    }
    if !principal.user_id.is_empty() {
        return Err("workspace key resolved to a user".into());
    }
    expect_workspace_and_scope(principal, fx, scope)
}

fn expect_user(
    principal: &pb::Principal,
    kind: pb::PrincipalKind,
    fx: &Fixtures,
    scope: &str,
) -> Result<(), String> {
    if principal.kind != kind as i32 {
        return Err(format!(
            "principal kind {} instead of {}",
            principal.kind,
            kind.as_str_name()
        ));
    }
    if principal.user_id != fx.user_id {
        return Err("principal is another user".into());
    }
    expect_workspace_and_scope(principal, fx, scope)
}

fn expect_workspace_and_scope(
    principal: &pb::Principal,
    fx: &Fixtures,
    scope: &str,
) -> Result<(), String> {
    if principal.workspace_slug != fx.slug {
        return Err(format!(
            "workspace_slug {:?} instead of {:?}",
            principal.workspace_slug, fx.slug
        ));
    }
    if !principal.scopes.iter().any(|s| s == scope) {
        return Err(format!("scopes lack {scope}"));
    }
    Ok(())
}

/// `CODE/REASON: message`, short enough to group identical failures.
fn describe(status: &Status) -> String {
    let reason = status
        .get_details_error_info()
        .map(|info| info.reason)
        .unwrap_or_else(|| "-".into());
    let mut message = status.message().to_owned();
    message.truncate(120);
    format!("{:?}/{reason}: {message}", status.code())
}
