//! What the HTTP scenarios send and what a correct answer is: the token
//! endpoint as apps call it, introspection, and the consent form's
//! Approve. Each returns `Err` with a short description (grouped in the
//! report) for anything but the answer a working server gives.

use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, COOKIE, HeaderValue, LOCATION};
use serde_json::Value;

use crate::grant_fixtures::{GrantFixtures, STATE};
use crate::oauth::{OAuthFixtures, REDIRECT, url_code};

/// A keep-alive HTTP/1.1 client, one per stream. Redirects are answers
/// to check (the consent form's 303), never followed.
pub fn client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?)
}

/// `token_endpoint`: exchange a fresh code of the public app, then refresh
/// the refresh token it returned. One call is both requests.
pub async fn token_endpoint(http: &reqwest::Client, oauth: &OAuthFixtures) -> Result<(), String> {
    let (code, verifier) = oauth
        .take_code()
        .ok_or("code pool exhausted (raise --codes)")?;
    let url = format!("{}/api/oauth/token", oauth.http_url);
    let exchange = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
        ("client_id", oauth.client_id.as_str()),
        ("code_verifier", verifier.as_str()),
    ];
    let tokens = post_token(http, &url, None, &exchange).await?;
    let refresh_token = tokens["refresh_token"]
        .as_str()
        .ok_or("no refresh_token")?
        .to_owned();
    let refresh = [
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token.as_str()),
        ("client_id", oauth.client_id.as_str()),
    ];
    let rotated = post_token(http, &url, None, &refresh).await?;
    if rotated["refresh_token"].as_str() == Some(refresh_token.as_str()) {
        return Err("refresh token was not rotated".into());
    }
    Ok(())
}

/// `introspection`: RFC 7662 of the one access token, client_secret_basic;
/// correct is `"active":true` for this app's token.
pub async fn introspection(http: &reqwest::Client, fx: &GrantFixtures) -> Result<(), String> {
    let response = http
        .post(&fx.introspect_url)
        .header(AUTHORIZATION, fx.basic.clone())
        .form(&[("token", fx.access_token.as_str())])
        .send()
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    let (status, body) = json_of(response).await?;
    if status != StatusCode::OK {
        return Err(format!("introspect {status}: {}", body["error"]));
    }
    if body["active"] != true {
        return Err("introspect: token not active".into());
    }
    if body["client_id"] != fx.client_id.as_str() || body["token_type"] != "Bearer" {
        return Err(format!("introspect: another token's answer {body}"));
    }
    Ok(())
}

/// `refresh_chain`: one grant on the stream's own chain, which the answer's
/// refresh token replaces. A refused grant keeps the token it sent, as the
/// wrk script does: a chain that is really broken then fails every later
/// call, and each failure is counted.
pub async fn refresh_chain(
    http: &reqwest::Client,
    fx: &GrantFixtures,
    chain: &mut String,
) -> Result<(), String> {
    let form = [
        ("grant_type", "refresh_token"),
        ("refresh_token", chain.as_str()),
    ];
    let tokens = post_token(http, &fx.token_url, Some(&fx.basic), &form).await?;
    let rotated = tokens["refresh_token"]
        .as_str()
        .ok_or("no refresh_token: chain broken")?;
    if rotated == chain.as_str() {
        return Err("refresh token was not rotated".into());
    }
    rotated.clone_into(chain);
    Ok(())
}

/// `consent_approve`: the owner's browser posting the consent form; correct
/// is 303 to the app with a code and the state. The code goes to the pool
/// `code_exchange` draws from.
pub async fn consent_approve(http: &reqwest::Client, fx: &GrantFixtures) -> Result<(), String> {
    let code = approve(http, &fx.consent_url, &fx.consent_cookie, &fx.consent_form).await?;
    fx.put_code(code);
    Ok(())
}

/// `code_exchange`: authorization_code + PKCE S256 + client_secret_basic
/// for a code from the pool; correct is an access and a refresh token.
pub async fn code_exchange(http: &reqwest::Client, fx: &GrantFixtures) -> Result<(), String> {
    let code = fx
        .take_code()
        .ok_or("code pool exhausted (run consent_approve longer, or raise --codes)")?;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
        ("code_verifier", fx.verifier.as_str()),
    ];
    let tokens = post_token(http, &fx.token_url, Some(&fx.basic), &form).await?;
    if tokens["refresh_token"].as_str().is_none_or(str::is_empty) {
        return Err("no refresh_token".into());
    }
    Ok(())
}

/// Posts an approving consent form; the code from the 303's Location.
pub async fn approve(
    http: &reqwest::Client,
    url: &str,
    cookie: &HeaderValue,
    form: &str,
) -> Result<String, String> {
    let response = http
        .post(url)
        .header(COOKIE, cookie.clone())
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(form.to_owned())
        .send()
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    let status = response.status();
    let location = response
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    // Read to the end, so the connection is reused.
    let _ = response.bytes().await;
    if status != StatusCode::SEE_OTHER {
        return Err(format!("consent {status} instead of 303"));
    }
    let to_app = location
        .strip_prefix(REDIRECT)
        .is_some_and(|query| query.starts_with('?'));
    let state = format!("state={STATE}");
    if !to_app || !location.split(['?', '&']).any(|pair| pair == state) {
        return Err("consent redirected elsewhere or without the state".into());
    }
    url_code(&location).ok_or_else(|| "consent redirect without a code".into())
}

/// A token endpoint answer that is a well-formed success, as JSON.
async fn post_token(
    http: &reqwest::Client,
    url: &str,
    basic: Option<&HeaderValue>,
    form: &[(&str, &str)],
) -> Result<Value, String> {
    let mut request = http.post(url).form(form);
    if let Some(basic) = basic {
        request = request.header(AUTHORIZATION, basic.clone());
    }
    let response = request.send().await.map_err(|e| format!("HTTP: {e}"))?;
    let (status, body) = json_of(response).await?;
    if status != StatusCode::OK {
        return Err(format!("token endpoint {status}: {}", body["error"]));
    }
    let access = body["access_token"].as_str().unwrap_or_default();
    if !access.starts_with("velo_") || body["token_type"] != "Bearer" || body["expires_in"] != 3600
    {
        return Err(format!("malformed token response {body}"));
    }
    Ok(body)
}

async fn json_of(response: reqwest::Response) -> Result<(StatusCode, Value), String> {
    let status = response.status();
    let body = response.json().await.map_err(|e| format!("body: {e}"))?;
    Ok((status, body))
}
