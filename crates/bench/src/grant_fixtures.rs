//! Seeding for the HTTP grant scenarios, in the shapes of the peer bench's
//! wrk scripts (`shared/peer-bench`, its `velocity/mint.py`): a confidential
//! app with a secret, the workspace owner's session cookie, the consent
//! form fetched once for its CSRF token, one refresh-token chain per stream
//! and, when no consent run comes first to mint them, codes minted ahead.

use std::future::Future;
use std::sync::Mutex;

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use futures::{StreamExt, TryStreamExt};
use reqwest::StatusCode;
use reqwest::header::{COOKIE, HeaderValue};
use velocity_domain::oauth::{AuthorizationRequest, ClientType, ValidatedAuthorization};
use velocity_domain::service::{AppManager, ClientAuth, NewApp};
use velocity_domain::{Service, UserId};

use crate::oauth::{REDIRECT, url_code};
use crate::scenarios::Scenario;
use crate::seed::SessionMinter;

/// The scopes the consent form asks for, as the peer bench's mint.py does.
const SCOPE: &str = "issues:read user:read";
/// The consent form's `state`, which every redirect must carry back.
pub const STATE: &str = "s1";

/// What the HTTP grant scenarios send, and the pools they draw from.
pub struct GrantFixtures {
    pub client_id: String,
    pub token_url: String,
    pub introspect_url: String,
    pub consent_url: String,
    /// `Basic base64(client_id:secret)`, built once as the wrk scripts'
    /// `BASIC` is (client_secret_basic).
    pub basic: HeaderValue,
    /// One access token of the app, for `introspection`.
    pub access_token: String,
    /// `sb-access-token=<HS256 session>` of the workspace's owner.
    pub consent_cookie: HeaderValue,
    /// The consent form as a browser posts it, URL-encoded: the page's
    /// hidden fields with its csrf_token, the workspace, decision=approve.
    pub consent_form: String,
    /// The verifier of the form's one PKCE challenge: every code shares
    /// it, and each exchange still verifies S256.
    pub verifier: String,
    /// Refresh tokens that each start a chain; a `refresh_chain` stream
    /// takes one and keeps what each answer replaces it with.
    chain_heads: Mutex<Vec<String>>,
    /// Unused codes for `code_exchange`: minted ahead, or by
    /// `consent_approve` as it runs.
    codes: Mutex<Vec<String>>,
}

impl GrantFixtures {
    pub fn take_chain_head(&self) -> Option<String> {
        self.chain_heads.lock().ok()?.pop()
    }

    pub fn take_code(&self) -> Option<String> {
        self.codes.lock().ok()?.pop()
    }

    pub fn put_code(&self, code: String) {
        if let Ok(mut codes) = self.codes.lock() {
            codes.push(code);
        }
    }
}

/// How much a run's scenarios need seeded.
#[derive(Debug, PartialEq, Eq)]
pub struct GrantPlan {
    /// Refresh-token chains: one per `refresh_chain` stream.
    pub chains: usize,
    /// Codes minted ahead for `code_exchange`.
    pub codes_ahead: usize,
}

impl GrantPlan {
    /// `None` when no HTTP grant scenario runs. A `consent_approve` run
    /// before `code_exchange` mints its codes, as the peer bench's does, so
    /// none are minted ahead then.
    pub fn for_run(order: &[Scenario], concurrency: usize, codes: usize) -> Option<GrantPlan> {
        if !order.iter().any(|s| s.is_http_grant()) {
            return None;
        }
        let position = |wanted: Scenario| order.iter().position(|&s| s == wanted);
        let consent_mints = match (
            position(Scenario::ConsentApprove),
            position(Scenario::CodeExchange),
        ) {
            (Some(consent), Some(exchange)) => consent < exchange,
            _ => false,
        };
        Some(GrantPlan {
            chains: if order.contains(&Scenario::RefreshChain) {
                concurrency
            } else {
                0
            },
            codes_ahead: if order.contains(&Scenario::CodeExchange) && !consent_mints {
                codes
            } else {
                0
            },
        })
    }
}

/// Where the app's grants go and who grants them.
pub struct Grantor<'a> {
    pub service: &'a Service,
    pub http_url: &'a str,
    pub user_id: &'a str,
    pub slug: &'a str,
}

pub async fn seed(
    grantor: &Grantor<'_>,
    minter: &SessionMinter,
    plan: &GrantPlan,
    in_flight: usize,
) -> anyhow::Result<GrantFixtures> {
    let service = grantor.service;
    let (app, secret) = service
        .register_app(
            &AppManager::Operator,
            NewApp {
                workspace_slug: None,
                name: "velocity-bench confidential".into(),
                redirect_uris: vec![REDIRECT.into()],
                scopes: SCOPE.split(' ').map(str::to_owned).collect(),
                client_type: ClientType::Confidential,
            },
        )
        .await?;
    let client_id = app.client_id.0.clone();
    let client = ClientAuth {
        client_id: app.client_id.clone(),
        client_secret: Some(secret.expose().to_owned()),
        address: None,
    };
    let basic = sensitive(format!(
        "Basic {}",
        STANDARD.encode(format!("{client_id}:{}", secret.expose()))
    ))?;
    let consent_cookie = sensitive(format!("sb-access-token={}", minter.hs256(grantor.user_id)))?;
    let (verifier, challenge) = velocity_testkit::pkce_pair();
    let request = AuthorizationRequest {
        client_id: Some(client_id.clone()),
        redirect_uri: Some(REDIRECT.into()),
        response_type: Some("code".into()),
        scope: Some(SCOPE.into()),
        state: Some(STATE.into()),
        code_challenge: Some(challenge),
        code_challenge_method: Some("S256".into()),
    };

    let http = crate::http_grants::client()?;
    let consent_url = format!("{}/oauth/consent", grantor.http_url);
    let page = ConsentPage::fetch(&http, &consent_url, &request, &consent_cookie).await?;
    let consent_form = page.approval(grantor.slug)?;
    // One approval through the form now, so a form the server refuses
    // stops the run here rather than filling the table with errors.
    let first_code = page.submit(&http, &consent_form).await?;

    let user = UserId(grantor.user_id.to_owned());
    let validated = service
        .check_authorization(&request)
        .await?
        .map_err(|e| anyhow::anyhow!("authorization request refused: {e:?}"))?;
    let access_token = service
        .exchange_code(&client, &first_code, REDIRECT, &verifier)
        .await?
        .access_token
        .expose()
        .to_owned();
    let minter = CodeMinter {
        service: service.clone(),
        user,
        request: validated,
        slug: grantor.slug.to_owned(),
    };
    let chain_heads = in_parallel(plan.chains, in_flight, || {
        let (minter, client, verifier) = (minter.clone(), client.clone(), verifier.clone());
        async move {
            let code = minter.code().await?;
            let tokens = minter
                .service
                .exchange_code(&client, &code, REDIRECT, &verifier)
                .await?;
            anyhow::Ok(tokens.refresh_token.expose().to_owned())
        }
    })
    .await?;
    let codes = in_parallel(plan.codes_ahead, in_flight, || {
        let minter = minter.clone();
        async move { minter.code().await }
    })
    .await?;
    Ok(GrantFixtures {
        client_id,
        token_url: format!("{}/api/oauth/token", grantor.http_url),
        introspect_url: format!("{}/api/oauth/introspect", grantor.http_url),
        consent_url,
        basic,
        access_token,
        consent_cookie,
        consent_form,
        verifier,
        chain_heads: Mutex::new(chain_heads),
        codes: Mutex::new(codes),
    })
}

/// A header value kept out of `Debug` output.
fn sensitive(value: String) -> anyhow::Result<HeaderValue> {
    let mut header = HeaderValue::try_from(value).context("header value")?;
    header.set_sensitive(true);
    Ok(header)
}

/// Approvals through the service: seeding, not what is measured.
#[derive(Clone)]
struct CodeMinter {
    service: Service,
    user: UserId,
    request: ValidatedAuthorization,
    slug: String,
}

impl CodeMinter {
    async fn code(&self) -> anyhow::Result<String> {
        let location = self
            .service
            .approve(&self.user, &self.request, &self.slug)
            .await?;
        url_code(&location).context("approval did not return a code")
    }
}

/// `count` results of `task`, `in_flight` spawned at a time (spawned, so
/// the server's hashing spreads over the cores).
async fn in_parallel<T, F, Fut>(count: usize, in_flight: usize, task: F) -> anyhow::Result<Vec<T>>
where
    F: Fn() -> Fut,
    Fut: Future<Output = anyhow::Result<T>> + Send + 'static,
    T: Send + 'static,
{
    futures::stream::iter(0..count)
        .map(|_| tokio::spawn(task()))
        .buffer_unordered(in_flight.max(1))
        .map(|joined| joined.context("a seeding task panicked")?)
        .try_collect()
        .await
}

/// The consent page as the signed-in owner's browser got it.
struct ConsentPage<'a> {
    url: &'a str,
    cookie: &'a HeaderValue,
    /// The request's parameters, which the form posts back.
    fields: Vec<(&'static str, String)>,
    csrf_token: String,
}

impl<'a> ConsentPage<'a> {
    async fn fetch(
        http: &reqwest::Client,
        url: &'a str,
        request: &AuthorizationRequest,
        cookie: &'a HeaderValue,
    ) -> anyhow::Result<ConsentPage<'a>> {
        let fields: Vec<(&'static str, String)> = [
            ("client_id", &request.client_id),
            ("redirect_uri", &request.redirect_uri),
            ("response_type", &request.response_type),
            ("scope", &request.scope),
            ("state", &request.state),
            ("code_challenge", &request.code_challenge),
            ("code_challenge_method", &request.code_challenge_method),
        ]
        .into_iter()
        .filter_map(|(name, value)| Some((name, value.clone()?)))
        .collect();
        let response = http
            .get(url)
            .query(&fields)
            .header(COOKIE, cookie.clone())
            .send()
            .await
            .context("GET /oauth/consent")?;
        let status = response.status();
        let html = response.text().await.context("consent page body")?;
        anyhow::ensure!(
            status == StatusCode::OK,
            "GET /oauth/consent answered {status}: {}",
            html.chars().take(200).collect::<String>()
        );
        let csrf_token = hidden_value(&html, "csrf_token")
            .context("the consent page has no csrf_token")?
            .to_owned();
        Ok(ConsentPage {
            url,
            cookie,
            fields,
            csrf_token,
        })
    }

    /// The form body that approves the request for `workspace`.
    fn approval(&self, workspace: &str) -> anyhow::Result<String> {
        // A URL's query is serialised as application/x-www-form-urlencoded.
        let mut url = reqwest::Url::parse("http://form.invalid/")?;
        url.query_pairs_mut()
            .extend_pairs(&self.fields)
            .append_pair("csrf_token", &self.csrf_token)
            .append_pair("workspace", workspace)
            .append_pair("decision", "approve");
        Ok(url.query().unwrap_or_default().to_owned())
    }

    async fn submit(&self, http: &reqwest::Client, form: &str) -> anyhow::Result<String> {
        crate::http_grants::approve(http, self.url, self.cookie, form)
            .await
            .map_err(|why| anyhow::anyhow!("the consent form was refused: {why}"))
    }
}

/// The value of the page's `<input name="{name}" value="…">`, as the
/// server writes it (name before value). CSRF tokens are base64url, so
/// there is nothing to unescape.
fn hidden_value<'h>(html: &'h str, name: &str) -> Option<&'h str> {
    let start = format!("name=\"{name}\" value=\"");
    let rest = &html[html.find(&start)? + start.len()..];
    rest.split('"').next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csrf_token_is_read_from_the_hidden_input() {
        let html = r#"<input type="hidden" name="scope" value="issues:read"><input type="hidden" name="csrf_token" value="AAAx-_9"><select name="workspace">"#;
        assert_eq!(hidden_value(html, "csrf_token"), Some("AAAx-_9"));
        assert_eq!(hidden_value(html, "state"), None);
    }

    #[test]
    fn codes_are_minted_ahead_only_without_a_consent_run_before_the_exchanges() {
        use Scenario::*;
        let plan = |order: &[Scenario]| GrantPlan::for_run(order, 16, 1000);
        assert_eq!(plan(&[Health, TokenEndpoint]), None);
        assert_eq!(
            plan(&[Health, ConsentApprove, CodeExchange]),
            Some(GrantPlan {
                chains: 0,
                codes_ahead: 0
            })
        );
        assert_eq!(
            plan(&[Health, CodeExchange, ConsentApprove, RefreshChain]),
            Some(GrantPlan {
                chains: 16,
                codes_ahead: 1000
            })
        );
        assert_eq!(
            plan(&[Health, Introspection]),
            Some(GrantPlan {
                chains: 0,
                codes_ahead: 0
            })
        );
    }
}
