//! The scenarios: what each one measures, which run by default and in what
//! order, and when one cannot run. What each sends and checks is in `caller`.

use serde::Serialize;

use crate::seed::Fixtures;

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
    /// Authenticate with an OAuth access token (`velo_`).
    OauthAccessToken,
    /// Over HTTP: exchange a fresh code at `/api/oauth/token`, then refresh
    /// the refresh token it returned. One call is both requests.
    TokenEndpoint,
    /// Over HTTP, as the peer bench's wrk scripts (this and the next three):
    /// RFC 7662 introspection of one access token, client_secret_basic.
    Introspection,
    /// One rotating refresh-token chain per stream, client_secret_basic.
    RefreshChain,
    /// The owner approving the consent form (session cookie, CSRF token):
    /// 303 with a code, which goes to `code_exchange`'s pool.
    ConsentApprove,
    /// authorization_code + PKCE S256 + client_secret_basic, exchanging the
    /// codes `consent_approve` minted, or codes minted ahead.
    CodeExchange,
}

impl Scenario {
    /// The scenarios a default run measures, ceiling first.
    pub const WIRED: [Scenario; 13] = [
        Scenario::Health,
        Scenario::WorkspaceKey,
        Scenario::PersonalKeySlug,
        Scenario::SessionHs256,
        Scenario::SessionEs256,
        Scenario::UnknownKey,
        Scenario::ColdKeys,
        Scenario::OauthAccessToken,
        Scenario::TokenEndpoint,
        Scenario::Introspection,
        Scenario::RefreshChain,
        // Before the exchanges, whose codes it mints.
        Scenario::ConsentApprove,
        Scenario::CodeExchange,
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
            Scenario::Introspection => "introspection",
            Scenario::RefreshChain => "refresh_chain",
            Scenario::ConsentApprove => "consent_approve",
            Scenario::CodeExchange => "code_exchange",
        }
    }

    /// The scenarios seeded by `grant_fixtures` (a confidential app).
    pub fn is_http_grant(self) -> bool {
        matches!(
            self,
            Scenario::Introspection
                | Scenario::RefreshChain
                | Scenario::ConsentApprove
                | Scenario::CodeExchange
        )
    }

    /// Why the scenario cannot run with what was seeded, if it cannot.
    pub fn unavailable(self, fixtures: &Fixtures) -> Option<String> {
        match self {
            Scenario::ColdKeys if fixtures.cold_sample.is_empty() => {
                Some("no seeded keys (--keys 0, or --target without --database-url)".into())
            }
            Scenario::OauthAccessToken | Scenario::TokenEndpoint if fixtures.oauth.is_none() => {
                Some("OAuth fixtures need the in-process server".into())
            }
            s if s.is_http_grant() && fixtures.grants.is_none() => {
                Some("HTTP grant fixtures need the in-process server".into())
            }
            _ => None,
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_runs_first_and_once() {
        let order = run_order(&[Scenario::UnknownKey, Scenario::Health, Scenario::UnknownKey]);
        assert_eq!(order, vec![Scenario::Health, Scenario::UnknownKey]);
        assert_eq!(run_order(&[]), Scenario::WIRED.to_vec());
    }
}
