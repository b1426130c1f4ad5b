//! The consent page in a real browser: headless Chromium driven through
//! chromedriver (WebDriver), signed in the way the web app signs it in (the
//! `@supabase/ssr` cookie, chunked). Approving lands the browser on the app
//! with a code the token endpoint exchanges; denying lands it there with
//! `access_denied`; a signed-out browser lands on the sign-in page with a
//! same-origin return path.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them;
//! CHROME_BIN and CHROMEDRIVER point elsewhere). Without them the test fails:
//! like PostgreSQL, a missing prerequisite is never a silent skip.
//! Screenshots go to `$CARGO_TARGET_DIR/test-artefacts/` (else
//! `target/test-artefacts/`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use axum::Router;
use axum::http::Uri;
use axum::response::Html;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::oauth::{TokenBody, query_of};
use common::{Backend, Harness};
use fantoccini::cookies::Cookie;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use reqwest::StatusCode;
use rustix::process::{Pid, Signal, kill_process_group};
use velocity_proto::pb;
use velocity_testkit::pkce_pair;

const COOKIE_NAME: &str = "sb-testref-auth-token";
const SCOPE: &str = "issues:read issues:write projects:write workspace:admin user:read";

/// Each scope of SCOPE with the description the page must show, word for word.
const DESCRIPTIONS: &[(&str, &str)] = &[
    ("issues:read", "Read issues"),
    ("issues:write", "Create, update, delete issues"),
    ("projects:write", "Create, update, delete projects"),
    ("workspace:admin", "Manage workspace settings and members"),
    ("user:read", "Read your profile"),
];

/// `@supabase/ssr`'s largest cookie value before it chunks (`MAX_CHUNK_SIZE`).
const MAX_CHUNK_SIZE: usize = 3180;

const INSTALL: &str = "the browser test drives Debian's chromium through chromium-driver: \
     run .ci/run, which installs both, or `sudo apt-get install -y --no-install-recommends \
     chromium chromium-driver`; CHROME_BIN and CHROMEDRIVER name other binaries";

/// A binary from `var`, else Debian's path; missing is a failure, not a skip.
fn binary(var: &str, debian: &str) -> PathBuf {
    let path = std::env::var_os(var).map_or_else(|| PathBuf::from(debian), PathBuf::from);
    assert!(
        path.is_file(),
        "{} not found ({var}): {INSTALL}",
        path.display()
    );
    path
}

/// chromedriver on an ephemeral port, in a process group of its own.
/// Dropping it, on a panic too, kills the whole group: chromedriver killed
/// alone leaves Chromium running. The profile directory goes as well.
struct ChromeDriver {
    child: Child,
    url: String,
    profile: PathBuf,
}

impl ChromeDriver {
    fn start(driver: &Path) -> ChromeDriver {
        let child = Command::new(driver)
            .arg("--port=0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}: {INSTALL}", driver.display()));
        let profile =
            std::env::temp_dir().join(format!("velocity-chromium-{}", uuid::Uuid::now_v7()));
        let mut this = ChromeDriver {
            child,
            url: String::new(),
            profile,
        };
        // "ChromeDriver was started successfully on port 41235." once it listens.
        let mut stdout = BufReader::new(this.child.stdout.take().unwrap());
        let mut said = String::new();
        let port = loop {
            let mut line = String::new();
            if stdout.read_line(&mut line).unwrap() == 0 {
                panic!("chromedriver exited before listening:\n{said}");
            }
            said.push_str(&line);
            if let Some((_, rest)) = line.split_once("started successfully on port ") {
                break rest.trim().trim_end_matches('.').parse::<u16>().unwrap();
            }
        };
        // Keep reading what it says so it never blocks on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        this.url = format!("http://127.0.0.1:{port}");
        this
    }

    /// A new headless Chromium session with a fresh profile.
    async fn session(&self, chrome: &Path) -> Client {
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("browserName".into(), "chrome".into());
        capabilities.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": chrome,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--window-size=1000,900",
                    format!("--user-data-dir={}", self.profile.display()),
                ],
            }),
        );
        // WebDriver over plain HTTP on loopback: no TLS connector needed.
        ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .unwrap_or_else(|e| panic!("starting {} through chromedriver: {e}", chrome.display()))
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = kill_process_group(Pid::from_child(&self.child), Signal::KILL);
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// The app's redirect URI (`/callback`) and the web app's sign-in page
/// (`/login`): pages saying which request reached them, so the browser
/// lands somewhere real and a screenshot shows where.
async fn start_landing() -> String {
    async fn callback(uri: Uri) -> Html<String> {
        landing_page("landed", "Back in the app", &uri)
    }
    async fn login(uri: Uri) -> Html<String> {
        landing_page("sign-in", "Sign in to Velocity", &uri)
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = Router::new()
        .route("/callback", axum::routing::get(callback))
        .route("/login", axum::routing::get(login));
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

fn landing_page(id: &str, title: &str, uri: &Uri) -> Html<String> {
    let request = uri
        .to_string()
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    Html(format!(
        "<!doctype html><title>{title}</title><h1 id=\"{id}\">{title}</h1>\
         <p>This page was asked for:</p><pre id=\"request\" style=\"white-space:pre-wrap;overflow-wrap:anywhere\">{request}</pre>"
    ))
}

/// Supabase's session object as `@supabase/ssr` stores it. The provider
/// token is as long as an Entra ID one, so the cookie is chunked as it is
/// for such users.
fn session_json(user: &str, access_token: &str) -> String {
    serde_json::json!({
        "access_token": access_token,
        "token_type": "bearer",
        "expires_in": 3600,
        "refresh_token": "r3fr3sh",
        "provider_token": "x".repeat(1800),
        "user": {"id": user, "email": "ada@example.com"},
    })
    .to_string()
}

/// `@supabase/ssr`'s `createChunks`: a value whose URI-encoded form is
/// longer than MAX_CHUNK_SIZE becomes `name.0`, `name.1`, … of at most
/// MAX_CHUNK_SIZE encoded characters each, else one cookie `name`. A
/// `base64-` value is all unreserved characters, so encoding leaves it as
/// it is and no escape sequence can be cut in two.
fn ssr_cookies(name: &str, value: &str) -> Vec<(String, String)> {
    assert!(
        value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&b)),
        "{value}"
    );
    if value.len() <= MAX_CHUNK_SIZE {
        return vec![(name.to_owned(), value.to_owned())];
    }
    value
        .as_bytes()
        .chunks(MAX_CHUNK_SIZE)
        .enumerate()
        .map(|(i, chunk)| {
            let chunk = std::str::from_utf8(chunk).unwrap();
            (format!("{name}.{i}"), chunk.to_owned())
        })
        .collect()
}

/// Saves a screenshot under the target directory and says where.
async fn screenshot(browser: &Client, name: &str) {
    let png = browser.screenshot().await.unwrap();
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| "target".into(), PathBuf::from);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(target)
        .join("test-artefacts");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, png).unwrap();
    println!("screenshot: {}", path.display());
}

async fn text(browser: &Client, css: &str) -> String {
    browser
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .text()
        .await
        .unwrap()
}

/// Clicks a decision button as a user would and waits for the landing page
/// it leads to.
async fn click_and_land(browser: &Client, button: &str, landed: &str) -> reqwest::Url {
    browser
        .find(Locator::Css(button))
        .await
        .unwrap_or_else(|e| panic!("{button}: {e}"))
        .click()
        .await
        .unwrap();
    arrival(browser, landed).await
}

/// Waits for a landing page (its heading's id) and returns the browser's
/// URL there, checked against the request the landing listener received.
async fn arrival(browser: &Client, id: &str) -> reqwest::Url {
    browser
        .wait()
        .for_element(Locator::Id(id))
        .await
        .unwrap_or_else(|e| panic!("never reached #{id}: {e}"));
    let url = browser.current_url().await.unwrap();
    // The listener got exactly what the browser shows.
    let asked = match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_owned(),
    };
    assert_eq!(text(browser, "#request").await, asked);
    url
}

#[tokio::test]
async fn consent_in_a_real_browser() {
    let chrome = binary("CHROME_BIN", "/usr/bin/chromium");
    let driver = binary("CHROMEDRIVER", "/usr/bin/chromedriver");
    let driver = tokio::task::spawn_blocking(move || ChromeDriver::start(&driver))
        .await
        .unwrap();
    let landing = start_landing().await;
    let callback = format!("{landing}/callback");
    let h = Harness::start_with(Backend::Sqlite, |config| {
        config.session_cookie = Some(COOKIE_NAME.into());
        config.sign_in_url = Some(format!("{landing}/login"));
    })
    .await;
    let ada = h.member("acme", "owner").await;
    let app = h
        .register_app_redirecting_to(false, &SCOPE.split(' ').collect::<Vec<_>>(), &[&callback])
        .await;
    let authorization = |challenge: &str, state: &str| {
        h.consent_url(&[
            ("client_id", app.client_id.as_str()),
            ("redirect_uri", callback.as_str()),
            ("response_type", "code"),
            ("scope", SCOPE),
            ("state", state),
            ("code_challenge", challenge),
            ("code_challenge_method", "S256"),
        ])
    };
    let browser = driver.session(&chrome).await;

    // Signed in as the web app does it: cookies on the server's origin, which
    // WebDriver sets only on a page of that origin. `@supabase/ssr` writes
    // them with `Path=/; SameSite=Lax`; the domain is spelled out because
    // fantoccini sends an unset one as null, which chromedriver refuses.
    browser.goto(&format!("{}/healthz", h.http)).await.unwrap();
    let host = reqwest::Url::parse(&h.http).unwrap();
    let host = host.host_str().unwrap();
    let value = format!(
        "base64-{}",
        URL_SAFE_NO_PAD.encode(session_json(&ada, &h.session(&ada)))
    );
    let cookies = ssr_cookies(COOKIE_NAME, &value);
    assert!(cookies.len() > 1, "the session should be chunked");
    for (name, value) in cookies {
        let cookie = Cookie::parse(format!(
            "{name}={value}; Domain={host}; Path=/; SameSite=Lax"
        ))
        .unwrap();
        browser.add_cookie(cookie).await.unwrap();
    }

    // Approve: the page names the app, what it asks and the workspace.
    let (verifier, challenge) = pkce_pair();
    browser
        .goto(&authorization(&challenge, "st4te"))
        .await
        .unwrap();
    assert_eq!(
        browser.title().await.unwrap(),
        "Authorize Timetracker <Pro> · Velocity"
    );
    assert_eq!(
        text(&browser, "h1").await,
        "Timetracker <Pro> wants to access your Velocity account"
    );
    assert_eq!(
        text(&browser, "p.muted").await,
        "Timetracker <Pro> is registered by the Velocity operator."
    );
    let mut asked = Vec::new();
    for item in browser.find_all(Locator::Css("ul li")).await.unwrap() {
        asked.push(item.text().await.unwrap());
    }
    asked.sort();
    let mut expected: Vec<String> = DESCRIPTIONS
        .iter()
        .map(|(scope, description)| format!("{description} {scope}"))
        .collect();
    expected.sort();
    assert_eq!(asked, expected);
    assert_eq!(
        text(&browser, "label[for=workspace]").await,
        "Workspace being granted"
    );
    assert_eq!(
        text(&browser, "#workspace option:checked").await,
        "acme (acme, you are owner)"
    );
    screenshot(&browser, "consent.png").await;
    let landed = click_and_land(&browser, "button[name=decision][value=approve]", "landed").await;
    assert_eq!(landed.as_str().split('?').next(), Some(callback.as_str()));
    let query = query_of(landed.as_str());
    assert_eq!(query["state"], "st4te", "{landed}");
    assert_eq!(query["iss"], h.http, "{landed}");
    assert!(!query["code"].is_empty(), "{landed}");

    // The browser's approval is a working grant.
    let (status, _, body) = h
        .token(TokenBody::Form(vec![
            ("grant_type", "authorization_code"),
            ("code", &query["code"]),
            ("redirect_uri", &callback),
            ("client_id", &app.client_id),
            ("code_verifier", &verifier),
        ]))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let access = body["access_token"].as_str().unwrap();
    assert!(access.starts_with("velo_"), "{body}");
    let principal = h
        .authenticate(access, "acme", &["issues:write"])
        .await
        .unwrap();
    assert_eq!(principal.kind, pb::PrincipalKind::OauthAccessToken as i32);
    assert_eq!(principal.user_id, ada);

    // Deny: back to the app with access_denied and no code.
    let (_, challenge) = pkce_pair();
    browser
        .goto(&authorization(&challenge, "d3ny"))
        .await
        .unwrap();
    let landed = click_and_land(&browser, "button[name=decision][value=deny]", "landed").await;
    assert_eq!(landed.as_str().split('?').next(), Some(callback.as_str()));
    let query = query_of(landed.as_str());
    assert_eq!(query["error"], "access_denied", "{landed}");
    assert_eq!(query["state"], "d3ny", "{landed}");
    assert_eq!(query["iss"], h.http, "{landed}");
    assert!(!query.contains_key("code"), "{landed}");
    screenshot(&browser, "denied.png").await;

    // Signed out: no cookies left, so to the sign-in page, which is told to
    // bring the browser back to exactly this request on our origin.
    browser.goto(&format!("{}/healthz", h.http)).await.unwrap();
    browser.delete_all_cookies().await.unwrap();
    assert!(browser.get_all_cookies().await.unwrap().is_empty());
    let (_, challenge) = pkce_pair();
    let url = authorization(&challenge, "s1gn-in");
    browser.goto(&url).await.unwrap();
    let signing_in = arrival(&browser, "sign-in").await;
    assert_eq!(
        signing_in.as_str().split('?').next(),
        Some(format!("{landing}/login").as_str())
    );
    let back = query_of(signing_in.as_str())["redirect_to"].clone();
    assert!(
        back.starts_with("/oauth/consent?") && !back.starts_with("//") && !back.contains('\\'),
        "{back}"
    );
    let origin = reqwest::Url::parse(&h.http).unwrap();
    let resolved = origin.join(&back).unwrap();
    assert_eq!(resolved.origin(), origin.origin(), "{back}");
    assert_eq!(resolved.as_str(), url);
    screenshot(&browser, "signed-out.png").await;

    browser.close().await.unwrap();
    h.stop().await;
    drop(driver);
}
