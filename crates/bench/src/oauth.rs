//! Seeding for the OAuth scenarios: an app, a consented grant, and a pool
//! of authorization codes. Consent is a person clicking Approve, so codes
//! are minted through the service ahead of the run; what is measured is
//! the token endpoint over HTTP, as apps call it.

use std::sync::Mutex;

use anyhow::Context;
use velocity_domain::oauth::{AuthorizationRequest, ClientId, ClientType};
use velocity_domain::service::{AppManager, ClientAuth, NewApp};
use velocity_domain::{Service, UserId};

pub const REDIRECT: &str = "http://127.0.0.1:9/callback";

pub struct OAuthFixtures {
    pub client_id: String,
    pub http_url: String,
    /// One access token, for Authenticate.
    pub access_token: String,
    /// Unused (code, verifier) pairs for the token endpoint.
    pub codes: Mutex<Vec<(String, String)>>,
}

impl OAuthFixtures {
    pub fn take_code(&self) -> Option<(String, String)> {
        self.codes.lock().ok()?.pop()
    }
}

async fn mint_code(
    service: &Service,
    user: &UserId,
    client_id: &ClientId,
    slug: &str,
) -> anyhow::Result<(String, String)> {
    let (verifier, challenge) = velocity_testkit::pkce_pair();
    let request = AuthorizationRequest {
        client_id: Some(client_id.0.clone()),
        redirect_uri: Some(REDIRECT.to_owned()),
        response_type: Some("code".into()),
        scope: Some("issues:read issues:write".into()),
        state: None,
        code_challenge: Some(challenge),
        code_challenge_method: Some("S256".into()),
    };
    let validated = service
        .check_authorization(&request)
        .await?
        .map_err(|e| anyhow::anyhow!("authorization request refused: {e:?}"))?;
    let location = service.approve(user, &validated, slug).await?;
    let code = url_code(&location).context("approval did not return a code")?;
    Ok((code, verifier))
}

/// The `code` of an approval's redirect.
pub fn url_code(location: &str) -> Option<String> {
    location
        .split(['?', '&'])
        .find_map(|pair| pair.strip_prefix("code="))
        .map(str::to_owned)
}

pub async fn seed(
    service: &Service,
    http_url: String,
    user: &str,
    slug: &str,
    codes: usize,
    in_flight: usize,
) -> anyhow::Result<OAuthFixtures> {
    let (app, _) = service
        .register_app(
            &AppManager::Operator,
            NewApp {
                workspace_slug: None,
                name: "velocity-bench".into(),
                redirect_uris: vec![REDIRECT.into()],
                scopes: vec!["issues:read".into(), "issues:write".into()],
                client_type: ClientType::Public,
            },
        )
        .await?;
    let user = UserId(user.to_owned());
    let (code, verifier) = mint_code(service, &user, &app.client_id, slug).await?;
    let client = ClientAuth {
        client_id: app.client_id.clone(),
        client_secret: None,
        address: None,
    };
    let tokens = service
        .exchange_code(&client, &code, REDIRECT, &verifier)
        .await?;

    let mut pool = Vec::with_capacity(codes);
    let mut pending = Vec::new();
    for _ in 0..codes {
        let (service, user, client_id, slug) = (
            service.clone(),
            user.clone(),
            app.client_id.clone(),
            slug.to_owned(),
        );
        pending.push(tokio::spawn(async move {
            mint_code(&service, &user, &client_id, &slug).await
        }));
        if pending.len() >= in_flight.max(1) {
            for task in pending.drain(..) {
                pool.push(task.await??);
            }
        }
    }
    for task in pending {
        pool.push(task.await??);
    }
    Ok(OAuthFixtures {
        client_id: app.client_id.0,
        http_url,
        access_token: tokens.access_token.expose().to_owned(),
        codes: Mutex::new(pool),
    })
}
