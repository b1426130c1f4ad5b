//! What each scenario sends and what a correct reply looks like. Every reply
//! is checked: a fast wrong answer must never pass for throughput.

use std::sync::Arc;

use anyhow::Context;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_types::StatusExt;
use velocity_domain::{CredentialKind, Secret};
use velocity_proto::pb;
use velocity_proto::pb::auth_service_client::AuthServiceClient;

use crate::seed::{Fixtures, SessionMinter};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum, Serialize)]
#[value(rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum Scenario {
    /// grpc.health.v1.Health/Check: the transport's ceiling, no auth work.
    Health,
    /// One workspace key, authenticated over and over (cache-warm path).
    WorkspaceKey,
    /// A personal key with a workspace slug: key plus membership lookup.
    PersonalKeySlug,
    /// A Supabase HS256 session token with a slug.
    SessionHs256,
    /// A Supabase ES256 session token (JWKS key) with a slug.
    SessionEs256,
    /// A fresh, well-formed `vel_` secret per call that was never stored:
    /// every call misses any cache and reaches storage.
    UnknownKey,
    /// A random key from the seeded sample of `--keys` keys.
    ColdKeys,
    // EXTENSION POINT (OAuth): not wired yet. When OAuth lands, seed a
    // client + consent in `seed.rs`, then replace the `not_wired` arms in
    // `Caller::new` and `Caller::call` below.
    /// Authenticate with an OAuth access token (`velo_`). Not wired yet.
    OauthAccessToken,
    /// Exchange or refresh at the token endpoint. Not wired yet.
    TokenEndpoint,
}

impl Scenario {
    /// The scenarios a default run measures, ceiling first.
    pub const WIRED: [Scenario; 7] = [
        Scenario::Health,
        Scenario::WorkspaceKey,
        Scenario::PersonalKeySlug,
        Scenario::SessionHs256,
        Scenario::SessionEs256,
        Scenario::UnknownKey,
        Scenario::ColdKeys,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Health => "health",
            Scenario::WorkspaceKey => "workspace_key",
            Scenario::PersonalKeySlug => "personal_key_slug",
            Scenario::SessionHs256 => "session_hs256",
            Scenario::SessionEs256 => "session_es256",
            Scenario::UnknownKey => "unknown_key",
            Scenario::ColdKeys => "cold_keys",
            Scenario::OauthAccessToken => "oauth_access_token",
            Scenario::TokenEndpoint => "token_endpoint",
        }
    }

    /// Why the scenario cannot run with what was seeded, if it cannot.
    pub fn unavailable(self, fixtures: &Fixtures) -> Option<String> {
        match self {
            Scenario::ColdKeys if fixtures.cold_sample.is_empty() => {
                Some("no seeded keys (--keys 0, or --target without --database-url)".into())
            }
            Scenario::OauthAccessToken | Scenario::TokenEndpoint => Some(not_wired(self)),
            _ => None,
        }
    }
}

fn not_wired(scenario: Scenario) -> String {
    format!("scenario {} is not wired yet", scenario.name())
}

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
}

impl Caller {
    pub fn new(
        scenario: Scenario,
        channel: Channel,
        fixtures: Arc<Fixtures>,
        minter: &SessionMinter,
    ) -> anyhow::Result<Caller> {
        let session = match scenario {
            Scenario::SessionHs256 => minter.hs256(&fixtures.user_id)?,
            Scenario::SessionEs256 => minter.es256(&fixtures.user_id)?,
            Scenario::OauthAccessToken | Scenario::TokenEndpoint => {
                anyhow::bail!(not_wired(scenario))
            }
            _ => String::new(),
        };
        Ok(Caller {
            scenario,
            auth: AuthServiceClient::new(channel.clone()),
            health: HealthClient::new(channel),
            fixtures,
            session,
            rng: StdRng::from_os_rng(),
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
                let secret = Secret::generate(CredentialKind::WorkspaceKey);
                match self.authenticate(secret.expose(), "", "issues:read").await {
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
                expect_workspace_key(&principal, &fx, "issues:read")
            }
            Scenario::OauthAccessToken | Scenario::TokenEndpoint => Err(not_wired(self.scenario)),
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
pub fn describe(status: &Status) -> String {
    let reason = status
        .get_details_error_info()
        .map(|info| info.reason)
        .unwrap_or_else(|| "-".into());
    let mut message = status.message().to_owned();
    message.truncate(120);
    format!("{:?}/{reason}: {message}", status.code())
}

/// Parses `--scenarios` into the run order: health first (the ceiling the
/// others are compared with), then the rest in the order given, once each.
pub fn run_order(requested: &[Scenario]) -> Vec<Scenario> {
    let requested: &[Scenario] = if requested.is_empty() {
        &Scenario::WIRED
    } else {
        requested
    };
    let mut order = vec![Scenario::Health];
    for &scenario in requested {
        if !order.contains(&scenario) {
            order.push(scenario);
        }
    }
    order
}

/// Fails early, before seeding, on scenarios that can never run.
pub fn reject_unwired(order: &[Scenario]) -> anyhow::Result<()> {
    for &scenario in order {
        if matches!(
            scenario,
            Scenario::OauthAccessToken | Scenario::TokenEndpoint
        ) {
            return Err(anyhow::anyhow!(not_wired(scenario)))
                .context("remove it from --scenarios until OAuth is wired");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_runs_first_and_once() {
        let order = run_order(&[Scenario::UnknownKey, Scenario::Health, Scenario::UnknownKey]);
        assert_eq!(order, vec![Scenario::Health, Scenario::UnknownKey]);
        assert_eq!(run_order(&[]), Scenario::WIRED.to_vec());
    }

    #[test]
    fn oauth_scenarios_are_refused_until_wired() {
        assert!(reject_unwired(&Scenario::WIRED).is_ok());
        assert!(reject_unwired(&[Scenario::OauthAccessToken]).is_err());
        assert!(reject_unwired(&[Scenario::TokenEndpoint]).is_err());
    }
}
