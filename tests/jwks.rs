//! End to end: session keys fetched by URL (docs/sessions.md), against a
//! local JWKS server that rotates keys, fails on demand, sets
//! `Cache-Control: max-age` and counts the requests it gets.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use common::{Backend, Harness, assert_refused};
use jsonwebtoken::{Algorithm, Header};
use serde_json::{Value, json};
use tokio::time::Instant;
use tonic::Code;
use velocity_testkit::FixtureKey;

const JWKS_PATH: &str = "/auth/v1/.well-known/jwks.json";

/// What the JWKS server answers.
#[derive(Clone)]
struct Answer {
    status: StatusCode,
    body: String,
    max_age: Option<u64>,
}

#[derive(Clone)]
struct Shared {
    answer: Arc<Mutex<Answer>>,
    /// When each request came.
    hits: Arc<Mutex<Vec<Instant>>>,
}

/// A Supabase project's JWKS endpoint, on an ephemeral loopback port.
struct KeyServer {
    /// The project URL (what SUPABASE_URL would be).
    base: String,
    shared: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for KeyServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(State(shared): State<Shared>) -> Response {
    shared.hits.lock().unwrap().push(Instant::now());
    let answer = shared.answer.lock().unwrap().clone();
    let mut response = (
        answer.status,
        [(header::CONTENT_TYPE, "application/json")],
        answer.body,
    )
        .into_response();
    if let Some(secs) = answer.max_age {
        response.headers_mut().insert(
            header::CACHE_CONTROL,
            HeaderValue::from_str(&format!("public, max-age={secs}")).unwrap(),
        );
    }
    response
}

impl KeyServer {
    async fn start(keys: Value) -> KeyServer {
        let shared = Shared {
            answer: Arc::new(Mutex::new(Answer {
                status: StatusCode::OK,
                body: keys.to_string(),
                max_age: Some(600),
            })),
            hits: Arc::default(),
        };
        let app = axum::Router::new()
            .route(JWKS_PATH, axum::routing::get(answer))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        KeyServer { base, shared, task }
    }

    fn url(&self) -> String {
        format!("{}{JWKS_PATH}", self.base)
    }

    fn hits(&self) -> usize {
        self.shared.hits.lock().unwrap().len()
    }

    fn hit_times(&self) -> Vec<Instant> {
        self.shared.hits.lock().unwrap().clone()
    }

    fn set(&self, status: StatusCode, body: impl Into<String>, max_age: Option<u64>) {
        *self.shared.answer.lock().unwrap() = Answer {
            status,
            body: body.into(),
            max_age,
        };
    }

    fn serve_keys(&self, keys: Value) {
        self.set(StatusCode::OK, keys.to_string(), Some(600));
    }

    /// Waits (boundedly) until the server has been asked more than `than`
    /// times; returns the count.
    async fn hit_more_than(&self, than: usize) -> usize {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let hits = self.hits();
            if hits > than {
                return hits;
            }
            assert!(Instant::now() < deadline, "no JWKS fetch after {than}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// A fixture key's public JWK, published under `kid`.
fn public_jwk(alg: Algorithm, kid: &str) -> Value {
    let mut jwk = fixture(alg).jwk();
    jwk["kid"] = json!(kid);
    jwk
}

fn fixture(alg: Algorithm) -> FixtureKey {
    if alg == Algorithm::ES256 {
        FixtureKey::Es256
    } else {
        FixtureKey::Rs256
    }
}

fn key_set(keys: &[(Algorithm, &str)]) -> Value {
    let keys: Vec<Value> = keys
        .iter()
        .map(|(alg, kid)| public_jwk(*alg, kid))
        .collect();
    json!({ "keys": keys })
}

/// A fresh session token (never cached before) signed by a fixture key
/// under `kid`.
fn token(h: &Harness, user: &str, alg: Algorithm, kid: &str) -> String {
    let mut header = Header::new(alg);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, &h.claims(user), &fixture(alg).encoding_key()).unwrap()
}

/// A server whose session keys come from `server` only.
async fn harness(
    server: &KeyServer,
    tweak: impl FnOnce(&mut velocity_auth::ServeConfig),
) -> Harness {
    let url = server.url();
    Harness::start_with(Backend::Sqlite, move |c| {
        c.jwks_file = None;
        c.jwks_url = Some(url);
        tweak(c);
    })
    .await
}

async fn accepted(h: &Harness, token: &str) -> bool {
    h.authenticate(token, "", &[]).await.is_ok()
}

/// Authenticates fresh tokens for `kid` until one passes (bounded).
async fn eventually_accepted(h: &Harness, user: &str, alg: Algorithm, kid: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if accepted(h, &token(h, user, alg, kid)).await {
            return;
        }
        assert!(Instant::now() < deadline, "{kid} never accepted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_key_served_under_supabase_url_authenticates() {
    let server = KeyServer::start(key_set(&[(Algorithm::ES256, "es-url")])).await;
    let base = server.base.clone();
    let h = Harness::start_with(Backend::Sqlite, move |c| {
        c.jwks_file = None;
        c.supabase_url = Some(format!("{base}/"));
    })
    .await;
    assert_eq!(server.hits(), 1, "fetched once, at start");
    let ada = h.member("acme", "admin").await;
    let p = h
        .authenticate(&token(&h, &ada, Algorithm::ES256, "es-url"), "acme", &[])
        .await
        .unwrap();
    assert_eq!(p.user_id, ada);
    // The HS256 secret still works beside the URL.
    assert!(accepted(&h, &h.session(&ada)).await);
    // A key the URL does not publish (the file is not configured here).
    assert_refused(
        h.authenticate(&h.rs256_session(&ada), "", &[]).await,
        Code::Unauthenticated,
        "SESSION_INVALID",
    );
    assert!(
        server.hits() <= 2,
        "one refetch at most for the unknown kid"
    );
    h.stop().await;
}

#[tokio::test]
async fn a_rotated_key_is_picked_up_without_restart() {
    let server = KeyServer::start(key_set(&[(Algorithm::ES256, "k1")])).await;
    let h = harness(&server, |_| {}).await;
    let ada = h.member("acme", "admin").await;
    assert!(accepted(&h, &token(&h, &ada, Algorithm::ES256, "k1")).await);
    assert_eq!(server.hits(), 1);

    // Supabase rotates to a new (RSA) key and revokes the old one.
    server.serve_keys(key_set(&[(Algorithm::RS256, "k2")]));
    eventually_accepted(&h, &ada, Algorithm::RS256, "k2").await;
    assert_eq!(server.hits(), 2, "one refetch, caused by the unknown kid");
    assert_refused(
        h.authenticate(&token(&h, &ada, Algorithm::ES256, "k1"), "", &[])
            .await,
        Code::Unauthenticated,
        "SESSION_INVALID",
    );
    // That refusal was an unknown kid too, but within the refetch interval.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(server.hits(), 2);
    h.stop().await;
}

#[tokio::test]
async fn unknown_kids_cause_one_fetch_per_interval() {
    let server = KeyServer::start(key_set(&[(Algorithm::ES256, "k1")])).await;
    let h = harness(&server, |c| c.jwks_refetch_interval_ms = 30_000).await;
    let ada = h.member("acme", "admin").await;
    let started = Instant::now();
    for _ in 0..50 {
        let kid = uuid::Uuid::now_v7().to_string();
        assert_refused(
            h.authenticate(&token(&h, &ada, Algorithm::ES256, &kid), "", &[])
                .await,
            Code::Unauthenticated,
            "SESSION_INVALID",
        );
    }
    assert_eq!(server.hit_more_than(1).await, 2);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(server.hits(), 2, "start + one refetch");
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(accepted(&h, &token(&h, &ada, Algorithm::ES256, "k1")).await);
    h.stop().await;
}

#[tokio::test]
async fn the_last_good_keys_survive_failed_fetches() {
    let server = KeyServer::start(key_set(&[(Algorithm::ES256, "k1")])).await;
    let h = harness(&server, |c| c.jwks_refetch_interval_ms = 50).await;
    let ada = h.member("acme", "admin").await;
    assert!(accepted(&h, &token(&h, &ada, Algorithm::ES256, "k1")).await);

    let oversized = format!(r#"{{"keys":[],"padding":"{}"}}"#, "x".repeat(300 * 1024));
    let failures = [
        (StatusCode::INTERNAL_SERVER_ERROR, "oops".to_owned()),
        (StatusCode::OK, r#"{"keys": "#.to_owned()),
        (StatusCode::OK, "<html>maintenance</html>".to_owned()),
        (StatusCode::OK, r#"{"keys": []}"#.to_owned()),
        (
            StatusCode::OK,
            json!({"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"}]}).to_string(),
        ),
        (StatusCode::OK, oversized),
    ];
    for (status, body) in failures {
        server.set(status, body, Some(600));
        let before = server.hits();
        // An unknown kid makes the service fetch (the interval is short).
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(!accepted(&h, &token(&h, &ada, Algorithm::ES256, "new-kid")).await);
        server.hit_more_than(before).await;
        assert!(
            accepted(&h, &token(&h, &ada, Algorithm::ES256, "k1")).await,
            "k1 refused after a failed fetch ({status})"
        );
    }

    // The server recovers with a rotated set; it is installed.
    server.serve_keys(key_set(&[(Algorithm::RS256, "k2")]));
    eventually_accepted(&h, &ada, Algorithm::RS256, "k2").await;
    h.stop().await;
}

#[tokio::test]
async fn max_age_decides_when_the_set_is_fetched_again() {
    let server = KeyServer::start(key_set(&[(Algorithm::ES256, "k1")])).await;
    server.set(
        StatusCode::OK,
        key_set(&[(Algorithm::ES256, "k1")]).to_string(),
        Some(1),
    );
    let h = harness(&server, |c| c.jwks_min_cache_secs = 1).await;
    // No token names an unknown key here: only max-age causes fetches.
    server.hit_more_than(1).await;
    let times = server.hit_times();
    let gap = times[1] - times[0];
    assert!(gap >= Duration::from_millis(900), "{gap:?}");
    assert!(gap < Duration::from_secs(3), "{gap:?}");

    // A rotated set, now cached for 600 s.
    server.set(
        StatusCode::OK,
        key_set(&[(Algorithm::RS256, "k2")]).to_string(),
        Some(600),
    );
    let switched = server.hits();
    server.hit_more_than(switched).await;
    let ada = h.member("acme", "admin").await;
    assert!(accepted(&h, &token(&h, &ada, Algorithm::RS256, "k2")).await);
    let settled = server.hits();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(server.hits(), settled, "max-age=600 is respected");
    h.stop().await;
}

#[tokio::test]
async fn file_and_url_keys_work_together() {
    let server = KeyServer::start(key_set(&[(Algorithm::ES256, "es-url")])).await;
    let url = server.url();
    // The harness's JWKS file publishes es256-test and rs256-test.
    let h = Harness::start_with(Backend::Sqlite, move |c| c.jwks_url = Some(url)).await;
    let ada = h.member("acme", "admin").await;
    let all = |h: &Harness| {
        [
            h.session(&ada),
            h.es256_session(&ada),
            h.rs256_session(&ada),
            token(h, &ada, Algorithm::ES256, "es-url"),
        ]
    };
    for t in all(&h) {
        assert!(accepted(&h, &t).await);
    }
    // The URL's set changes: its own old key goes, the file's keys stay.
    server.serve_keys(key_set(&[(Algorithm::RS256, "rs-url")]));
    eventually_accepted(&h, &ada, Algorithm::RS256, "rs-url").await;
    for t in &all(&h)[..3] {
        assert!(accepted(&h, t).await);
    }
    assert!(!accepted(&h, &token(&h, &ada, Algorithm::ES256, "es-url")).await);
    h.stop().await;
}

#[tokio::test]
async fn a_start_during_an_outage_serves_and_recovers() {
    let server = KeyServer::start(key_set(&[(Algorithm::ES256, "k1")])).await;
    server.set(StatusCode::SERVICE_UNAVAILABLE, "down", None);
    // The URL is the only session key source: no secret, no file.
    let h = harness(&server, |c| {
        c.jwt_secret = None;
        c.jwks_refetch_interval_ms = 50;
    })
    .await;
    assert_eq!(server.hits(), 1);
    let ada = h.member("acme", "admin").await;
    assert_refused(
        h.authenticate(&token(&h, &ada, Algorithm::ES256, "k1"), "", &[])
            .await,
        Code::Unauthenticated,
        "SESSION_INVALID",
    );
    assert_refused(
        h.authenticate(&h.session(&ada), "", &[]).await,
        Code::Unauthenticated,
        "SESSION_INVALID",
    );
    server.serve_keys(key_set(&[(Algorithm::ES256, "k1")]));
    // Picked up by an unknown-kid refetch or the retry, whichever is first.
    eventually_accepted(&h, &ada, Algorithm::ES256, "k1").await;
    h.stop().await;
}
