//! End to end: the consent page signed in by the web app's `@supabase/ssr`
//! cookie (chunked `base64-`, raw JSON), a signed-out browser sent to the
//! configured sign-in URL with a same-origin return path, and the page's
//! wording (the docs' scope descriptions, the app, the workspace granted).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::oauth::{App, REDIRECT, TokenBody, http, parse_form, query_of};
use common::{Backend, Harness};
use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION};
use velocity_testkit::pkce_pair;

const COOKIE_NAME: &str = "sb-testref-auth-token";
const SIGN_IN_URL: &str = "https://app.velocity.dev/login";
const SCOPE: &str = "issues:read issues:write projects:write workspace:admin user:read";

/// The descriptions the page must show, word for word.
const DESCRIPTIONS: &[&str] = &[
    "Read issues",
    "Create, update, delete issues",
    "Create, update, delete projects",
    "Manage workspace settings and members",
    "Read your profile",
];

async fn start(backend: Backend) -> Harness {
    Harness::start_with(backend, |config| {
        config.session_cookie = Some(COOKIE_NAME.into());
        config.sign_in_url = Some(SIGN_IN_URL.into());
    })
    .await
}

/// Supabase's session object as `@supabase/ssr` stores it.
fn session_json(access_token: &str) -> String {
    serde_json::json!({
        "access_token": access_token,
        "token_type": "bearer",
        "expires_in": 3600,
        "refresh_token": "r3fr3sh",
        "user": {"id": "someone", "email": "ada@example.com"},
    })
    .to_string()
}

/// `base64-` + base64url of the session, split into three chunk cookies.
fn chunked_cookie(name: &str, access_token: &str) -> String {
    let value = format!(
        "base64-{}",
        URL_SAFE_NO_PAD.encode(session_json(access_token))
    );
    let third = value.len() / 3;
    let (a, rest) = value.split_at(third);
    let (b, c) = rest.split_at(third);
    format!("theme=dark; {name}.1={b}; {name}.0={a}; {name}.2={c}")
}

/// Raw JSON, percent-encoded as the browser stores it.
fn raw_json_cookie(name: &str, access_token: &str) -> String {
    let encoded: String = session_json(access_token)
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    format!("{name}={encoded}")
}

fn consent_query<'a>(app: &'a App, challenge: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("client_id", app.client_id.as_str()),
        ("redirect_uri", REDIRECT),
        ("response_type", "code"),
        ("scope", SCOPE),
        ("state", "st4te"),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256"),
    ]
}

async fn get(url: &str, cookie: Option<&str>) -> reqwest::Response {
    let request = http().get(url);
    let request = match cookie {
        Some(cookie) => request.header(COOKIE, cookie),
        None => request,
    };
    request.send().await.unwrap()
}

/// Asserts a redirect to the sign-in URL and returns the URL it brings the
/// browser back to, resolved against our origin.
fn sign_in_return(h: &Harness, response: &reqwest::Response) -> reqwest::Url {
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let location = response.headers()[LOCATION].to_str().unwrap();
    assert!(
        location.starts_with(&format!("{SIGN_IN_URL}?")),
        "{location}"
    );
    let back = query_of(location)["redirect_to"].clone();
    assert!(
        back.starts_with("/oauth/consent") && !back.starts_with("//") && !back.contains('\\'),
        "{back}"
    );
    let origin = reqwest::Url::parse(&h.http).unwrap();
    let resolved = origin.join(&back).unwrap();
    assert_eq!(resolved.origin(), origin.origin(), "{back}");
    resolved
}

async fn ssr_cookie_signs_in_and_approves(backend: Backend) {
    let h = start(backend).await;
    let ada = h.member("acme", "owner").await;
    let app = h
        .register_app(false, &SCOPE.split(' ').collect::<Vec<_>>())
        .await;
    let (verifier, challenge) = pkce_pair();
    let url = h.consent_url(&consent_query(&app, &challenge));
    let cookie = chunked_cookie(COOKIE_NAME, &h.session(&ada));

    // The chunked base64- cookie: the page, with its wording.
    let page = get(&url, Some(&cookie)).await;
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    for description in DESCRIPTIONS {
        assert!(
            html.contains(&format!("<li>{description} <code>")),
            "{description}: {html}"
        );
    }
    assert!(html.contains("Timetracker &lt;Pro&gt;"), "{html}");
    assert!(
        html.contains("registered by the Velocity operator"),
        "{html}"
    );
    assert!(html.contains("Workspace being granted"), "{html}");
    assert!(
        html.contains("<option value=\"acme\" selected>acme (acme, you are owner)</option>"),
        "{html}"
    );

    // Approving with the same cookie: the form's CSRF token is bound to it.
    let mut form = parse_form(&html);
    form.fields.insert("workspace".into(), "acme".into());
    form.fields.insert("decision".into(), "approve".into());
    let submitted = http()
        .post(format!("{}{}", h.http, form.action))
        .header(COOKIE, &cookie)
        .form(&form.fields)
        .send()
        .await
        .unwrap();
    assert_eq!(submitted.status(), StatusCode::SEE_OTHER);
    let location = submitted.headers()[LOCATION].to_str().unwrap().to_owned();
    assert!(location.starts_with(REDIRECT), "{location}");
    let query = query_of(&location);
    assert_eq!(query["state"], "st4te");
    let (status, _, body) = h
        .token(TokenBody::Form(vec![
            ("grant_type", "authorization_code"),
            ("code", &query["code"]),
            ("redirect_uri", REDIRECT),
            ("client_id", &app.client_id),
            ("code_verifier", &verifier),
        ]))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // The form posted without the session is refused, not redirected.
    let refused = http()
        .post(format!("{}{}", h.http, form.action))
        .form(&form.fields)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);

    // The raw JSON cookie, percent-encoded, in one piece.
    let raw = raw_json_cookie(COOKIE_NAME, &h.session(&ada));
    assert_eq!(get(&url, Some(&raw)).await.status(), StatusCode::OK);

    // A Bearer header wins over the cookies: bob sees his workspaces.
    let bob = h.member("globex", "member").await;
    let page = http()
        .get(&url)
        .header(COOKIE, &cookie)
        .bearer_auth(h.session(&bob))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(
        parse_form(&page.text().await.unwrap()).workspaces,
        ["globex"]
    );
    h.stop().await;
}

async fn signed_out_goes_to_sign_in_and_back(backend: Backend) {
    let h = start(backend).await;
    let ada = h.member("acme", "owner").await;
    let app = h
        .register_app(false, &SCOPE.split(' ').collect::<Vec<_>>())
        .await;
    let (_, challenge) = pkce_pair();
    let url = h.consent_url(&consent_query(&app, &challenge));

    // No session: to the sign-in URL, and back to exactly this page.
    let response = get(&url, None).await;
    let back = sign_in_return(&h, &response);
    assert_eq!(back.as_str(), url);

    // The session of another Supabase project's cookie is not ours.
    let other = chunked_cookie("sb-otherref-auth-token", &h.session(&ada));
    sign_in_return(&h, &get(&url, Some(&other)).await);
    let other = raw_json_cookie("sb-otherref-auth-token", &h.session(&ada));
    sign_in_return(&h, &get(&url, Some(&other)).await);

    // An expired session is signed out.
    let expired = h.session_with(&ada, |c| c["exp"] = 1.into());
    sign_in_return(
        &h,
        &get(&url, Some(&chunked_cookie(COOKIE_NAME, &expired))).await,
    );

    // A malformed cookie is signed out, never a 500.
    for value in ["base64-!!!", "%7B", "{\"access_token\":1}", "base64-e30"] {
        let cookie = format!("{COOKIE_NAME}={value}");
        sign_in_return(&h, &get(&url, Some(&cookie)).await);
    }

    // The query string never carries a session.
    let with_token = format!("{url}&access_token={}", h.session(&ada));
    sign_in_return(&h, &get(&with_token, None).await);

    // Crafted queries keep the return path on our origin.
    for extra in [
        "next=//evil.com",
        "next=https://evil.com/x",
        "next=%2F%2Fevil.com",
        "next=/%5Cevil.com",
        "next=/\\evil.com",
    ] {
        let crafted = format!("{url}&{extra}");
        let response = get(&crafted, None).await;
        let back = sign_in_return(&h, &response);
        assert_eq!(back.path(), "/oauth/consent", "{extra}");
    }
    h.stop().await;
}

async fn without_a_sign_in_url_the_page_asks_to_sign_in(backend: Backend) {
    let h = Harness::start(backend).await;
    let ada = h.member("acme", "owner").await;
    let app = h
        .register_app(false, &SCOPE.split(' ').collect::<Vec<_>>())
        .await;
    let (_, challenge) = pkce_pair();
    let url = h.consent_url(&consent_query(&app, &challenge));
    let response = get(&url, None).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("Sign in to Velocity")
    );
    // The legacy cookie still signs in.
    let legacy = format!("sb-access-token={}", h.session(&ada));
    assert_eq!(get(&url, Some(&legacy)).await.status(), StatusCode::OK);
    h.stop().await;
}

for_each_backend!(
    ssr_cookie_signs_in_and_approves,
    signed_out_goes_to_sign_in_and_back,
    without_a_sign_in_url_the_page_asks_to_sign_in,
);
