//! Driving the OAuth flow as a browser and a client app would.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;

use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION};
use velocity_proto::pb;
use velocity_testkit::pkce_pair;

use super::{Harness, admin};

pub const REDIRECT: &str = "http://127.0.0.1:9/callback";

pub struct App {
    pub client_id: String,
    pub secret: Option<String>,
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

impl Harness {
    pub async fn register_app(&self, confidential: bool, scopes: &[&str]) -> App {
        self.register_app_redirecting_to(
            confidential,
            scopes,
            &[REDIRECT, "https://tt.example.com/cb"],
        )
        .await
    }

    /// An app whose redirect URIs are `redirect_uris`: a browser test needs
    /// one a listener of its own answers on.
    pub async fn register_app_redirecting_to(
        &self,
        confidential: bool,
        scopes: &[&str],
        redirect_uris: &[&str],
    ) -> App {
        let response =
            pb::o_auth_app_service_client::OAuthAppServiceClient::new(self.channel.clone())
                .register_app(admin(pb::RegisterAppRequest {
                    name: "Timetracker <Pro>".into(),
                    client_type: if confidential {
                        pb::ClientType::Confidential
                    } else {
                        pb::ClientType::Public
                    } as i32,
                    redirect_uris: redirect_uris.iter().map(|s| s.to_string()).collect(),
                    allowed_scopes: scopes.iter().map(|s| s.to_string()).collect(),
                    workspace_slug: String::new(),
                }))
                .await
                .unwrap()
                .into_inner();
        App {
            client_id: response.app.unwrap().client_id,
            // Public apps send client_id alone, as the docs' requests do.
            secret: confidential.then_some(response.client_secret),
        }
    }

    pub fn consent_url(&self, query: &[(&str, &str)]) -> String {
        let mut url = reqwest::Url::parse(&format!("{}/oauth/consent", self.http)).unwrap();
        url.query_pairs_mut().extend_pairs(query);
        url.to_string()
    }

    /// Loads the consent page signed in through the session cookie and
    /// submits its form as a browser would; returns the redirect Location.
    pub async fn consent(
        &self,
        session: &str,
        client_id: &str,
        scope: &str,
        challenge: &str,
        workspace: &str,
        decision: &str,
    ) -> String {
        let page = http()
            .get(self.consent_url(&[
                ("client_id", client_id),
                ("redirect_uri", REDIRECT),
                ("response_type", "code"),
                ("scope", scope),
                ("state", "st4te"),
                ("code_challenge", challenge),
                ("code_challenge_method", "S256"),
            ]))
            .header(COOKIE, format!("theme=dark; sb-access-token={session}"))
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), StatusCode::OK);
        let html = page.text().await.unwrap();
        let mut form = parse_form(&html);
        form.fields.insert("workspace".into(), workspace.into());
        form.fields.insert("decision".into(), decision.into());
        let submitted = http()
            .post(format!("{}{}", self.http, form.action))
            .header(COOKIE, format!("sb-access-token={session}"))
            .form(&form.fields)
            .send()
            .await
            .unwrap();
        assert_eq!(
            submitted.status(),
            StatusCode::SEE_OTHER,
            "{:?}",
            submitted.text().await
        );
        submitted.headers()[LOCATION].to_str().unwrap().to_owned()
    }

    /// Signs in, consents and returns a fresh code and its verifier.
    pub async fn code_for(
        &self,
        user: &str,
        app: &App,
        scope: &str,
        workspace: &str,
    ) -> (String, String) {
        let (verifier, challenge) = pkce_pair();
        let location = self
            .consent(
                &self.session(user),
                &app.client_id,
                scope,
                &challenge,
                workspace,
                "approve",
            )
            .await;
        let query = query_of(&location);
        assert_eq!(query.get("state").map(String::as_str), Some("st4te"));
        (query["code"].clone(), verifier)
    }

    pub async fn token(
        &self,
        body: TokenBody<'_>,
    ) -> (StatusCode, reqwest::header::HeaderMap, serde_json::Value) {
        let request = http().post(format!("{}/api/oauth/token", self.http));
        let request = match body {
            TokenBody::Json(v) => request.json(&v),
            TokenBody::Form(pairs) => request.form(&pairs),
        };
        let response = request.send().await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let json = response.json().await.unwrap_or(serde_json::Value::Null);
        (status, headers, json)
    }
}

pub enum TokenBody<'a> {
    Json(serde_json::Value),
    Form(Vec<(&'a str, &'a str)>),
}

pub struct Form {
    pub action: String,
    pub fields: HashMap<String, String>,
    pub workspaces: Vec<String>,
}

/// The consent form as a browser sees it: its action, hidden inputs and the
/// workspace picker's options.
pub fn parse_form(html: &str) -> Form {
    let dom = tl::parse(html, tl::ParserOptions::default()).unwrap();
    let parser = dom.parser();
    let form = dom
        .query_selector("form")
        .unwrap()
        .next()
        .and_then(|h| h.get(parser))
        .and_then(|n| n.as_tag())
        .expect("the page has a form");
    let action = unescape(
        &form
            .attributes()
            .get("action")
            .flatten()
            .unwrap()
            .as_utf8_str(),
    );
    let mut fields = HashMap::new();
    for handle in dom.query_selector("input").unwrap() {
        let tag = handle.get(parser).unwrap().as_tag().unwrap();
        let attr = |name: &str| {
            tag.attributes()
                .get(name)
                .flatten()
                .map(|v| unescape(&v.as_utf8_str()))
        };
        if attr("type").as_deref() == Some("hidden") {
            fields.insert(attr("name").unwrap(), attr("value").unwrap_or_default());
        }
    }
    let workspaces = dom
        .query_selector("option")
        .unwrap()
        .filter_map(|h| {
            h.get(parser)?
                .as_tag()?
                .attributes()
                .get("value")
                .flatten()
                .map(|v| unescape(&v.as_utf8_str()))
        })
        .collect();
    Form {
        action,
        fields,
        workspaces,
    }
}

fn unescape(text: &str) -> String {
    text.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

pub fn query_of(location: &str) -> HashMap<String, String> {
    reqwest::Url::parse(location)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect()
}
