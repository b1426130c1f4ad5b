//! `kill -9` under grant load, on SQLite: the real binary serves refresh
//! grants and code exchanges from several tasks, is killed mid-load, and
//! restarted on the same file. Every grant answered 200 must still be there
//! (its access token authenticates; its refresh token is the chain's next
//! link), and no code or refresh token may be honoured twice.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::oauth::{TokenBody, http};
use common::{Backend, Harness};
use reqwest::StatusCode;
use tonic::transport::Channel;
use velocity_proto::pb;
use velocity_proto::pb::auth_service_client::AuthServiceClient;

/// Refresh chains driven at once, one task each.
const CHAINS: usize = 8;
/// Codes minted beforehand, exchanged one after another by one more task.
const CODES: usize = 60;
/// The server is killed once this many grants were answered, codes among
/// them, so both kinds are in flight when it dies.
const KILL_AFTER: usize = 120;
const KILL_AFTER_CODES: usize = 10;

struct Server {
    child: Child,
    http: String,
    grpc: Channel,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The real binary on `database_url`, with the reuse interval off so a
/// refresh token is honoured exactly once.
async fn server(database_url: &str) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_velocity-auth"))
        .args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .env("DATABASE_URL", database_url)
        .env("VELOCITY_REFRESH_REUSE_INTERVAL_SECS", "0")
        // Grant load from one address, far past the token endpoint's
        // published figures: lifted, as for any load test.
        .env("VELOCITY_RATE_LIMIT_PER_ADDRESS", "0")
        .env("VELOCITY_RATE_LIMIT_PER_CLIENT", "0")
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let addr = |key: &str| {
                line.split(key)
                    .nth(1)
                    .and_then(|rest| rest.split_whitespace().next())
                    .map(str::to_owned)
            };
            if !sent && let (Some(grpc), Some(http)) = (addr("grpc_addr="), addr("http_addr=")) {
                let _ = tx.send((grpc, http));
                sent = true;
            }
        }
    });
    let (grpc, http) =
        tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(30)))
            .await
            .unwrap()
            .expect("the server did not start");
    let grpc = Channel::from_shared(format!("http://{grpc}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    Server {
        child,
        http: format!("http://{http}"),
        grpc,
    }
}

/// A token request; `None` when no answer came (the server is gone).
async fn grant(base: &str, form: &[(&str, &str)]) -> Option<(StatusCode, serde_json::Value)> {
    let response = http()
        .post(format!("{base}/api/oauth/token"))
        .form(form)
        .send()
        .await
        .ok()?;
    let status = response.status();
    let body = response.json().await.ok()?;
    Some((status, body))
}

/// The form of an `authorization_code` grant.
fn exchange<'a>(client_id: &'a str, code: &'a str, verifier: &'a str) -> [(&'a str, &'a str); 5] {
    [
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", common::oauth::REDIRECT),
        ("code_verifier", verifier),
        ("client_id", client_id),
    ]
}

/// A grant answered 200: what was presented, and what came back.
#[derive(Clone, Debug)]
struct Answered {
    presented: String,
    access: String,
    refresh: String,
}

fn answered(presented: &str, body: &serde_json::Value) -> Answered {
    Answered {
        presented: presented.to_owned(),
        access: body["access_token"].as_str().unwrap().to_owned(),
        refresh: body["refresh_token"].as_str().unwrap().to_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_under_grant_load_loses_no_answered_grant() {
    // Set up in-process: a member, a public app, codes and the chains' first pairs.
    let mut h = Harness::start(Backend::Sqlite).await;
    let user = h.member("acme", "owner").await;
    let app = h.register_app(false, &["issues:read"]).await;
    let client_id = app.client_id.clone();
    let mut chains = Vec::new();
    for _ in 0..CHAINS {
        let (code, verifier) = h.code_for(&user, &app, "issues:read", "acme").await;
        let form = exchange(&client_id, &code, &verifier);
        let (status, _, body) = h.token(TokenBody::Form(form.to_vec())).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        chains.push(body["refresh_token"].as_str().unwrap().to_owned());
    }
    let mut codes = Vec::new();
    for _ in 0..CODES {
        codes.push(h.code_for(&user, &app, "issues:read", "acme").await);
    }
    h.server.take().unwrap().shutdown().await;

    // Load on the real binary, on the same file.
    let first = server(&h.db.url).await;
    let refreshes: Arc<Mutex<Vec<Vec<Answered>>>> = Arc::new(Mutex::new(vec![Vec::new(); CHAINS]));
    let exchanges: Arc<Mutex<Vec<Answered>>> = Arc::default();
    let mut tasks = Vec::new();
    for (chain, start) in chains.iter().cloned().enumerate() {
        let (base, client_id, refreshes) =
            (first.http.clone(), client_id.clone(), refreshes.clone());
        tasks.push(tokio::spawn(async move {
            let mut current = start;
            loop {
                let form = [
                    ("grant_type", "refresh_token"),
                    ("refresh_token", current.as_str()),
                    ("client_id", client_id.as_str()),
                ];
                let Some((status, body)) = grant(&base, &form).await else {
                    return;
                };
                assert_eq!(status, StatusCode::OK, "{body}");
                let done = answered(&current, &body);
                current = done.refresh.clone();
                refreshes.lock().unwrap()[chain].push(done);
            }
        }));
    }
    {
        let (base, exchanges, codes) = (first.http.clone(), exchanges.clone(), codes.clone());
        let client_id = client_id.clone();
        tasks.push(tokio::spawn(async move {
            for (code, verifier) in codes {
                let form = exchange(&client_id, &code, &verifier);
                let Some((status, body)) = grant(&base, &form).await else {
                    return;
                };
                assert_eq!(status, StatusCode::OK, "{body}");
                exchanges.lock().unwrap().push(answered(&code, &body));
            }
        }));
    }
    // Waiting for a state, not a time: enough answers of both kinds.
    loop {
        let refreshed: usize = refreshes.lock().unwrap().iter().map(Vec::len).sum();
        let exchanged = exchanges.lock().unwrap().len();
        if refreshed + exchanged >= KILL_AFTER && exchanged >= KILL_AFTER_CODES {
            break;
        }
        assert!(
            exchanged < CODES,
            "every code was exchanged before the kill; mint more"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    drop(first); // SIGKILL: std's Child::kill
    for task in tasks {
        task.await.unwrap();
    }
    let refreshes = refreshes.lock().unwrap().clone();
    let exchanges = exchanges.lock().unwrap().clone();
    let answered_total: usize = refreshes.iter().map(Vec::len).sum::<usize>() + exchanges.len();
    assert!(answered_total >= KILL_AFTER);

    // Restarted on the same file.
    let second = server(&h.db.url).await;
    let mut auth = AuthServiceClient::new(second.grpc.clone());

    // Every answered grant is there: its access token authenticates.
    for done in refreshes.iter().flatten().chain(&exchanges) {
        let principal = auth
            .authenticate(pb::AuthenticateRequest {
                credential: done.access.clone(),
                workspace_slug: "acme".into(),
                required_scopes: vec!["issues:read".into()],
            })
            .await;
        assert!(
            principal.is_ok(),
            "an answered grant was lost: {principal:?}"
        );
    }

    let refresh = |token: String| {
        let (base, client_id) = (second.http.clone(), client_id.clone());
        async move {
            let form = [
                ("grant_type", "refresh_token"),
                ("refresh_token", token.as_str()),
                ("client_id", client_id.as_str()),
            ];
            grant(&base, &form).await.unwrap()
        }
    };
    // Each chain's last answered refresh token is the next link: it works
    // once more, unless a request in flight at the kill spent it (then it is
    // known and used, never unknown).
    let mut continued = 0;
    for chain in &refreshes {
        let Some(last) = chain.last() else { continue };
        let (status, body) = refresh(last.refresh.clone()).await;
        if status == StatusCode::OK {
            continued += 1;
        } else {
            let why = body["error_description"].as_str().unwrap_or_default();
            assert!(
                status == StatusCode::BAD_REQUEST && why.contains("already used"),
                "the last answered refresh token was lost: {status} {body}"
            );
        }
    }
    // Every refresh token and code that was honoured is refused now.
    for done in refreshes.iter().flatten() {
        let (status, body) = refresh(done.presented.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "honoured twice: {body}");
    }
    let codes_by_value: std::collections::HashMap<_, _> = codes.into_iter().collect();
    for done in &exchanges {
        let verifier = &codes_by_value[&done.presented];
        let form = exchange(&client_id, &done.presented, verifier);
        let (status, body) = grant(&second.http, &form).await.unwrap();
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "a code honoured twice: {body}"
        );
    }
    eprintln!(
        "answered before the kill: {answered_total} grants ({} exchanges); \
         chains continued after restart: {continued} of {CHAINS}",
        exchanges.len()
    );
    drop(second);
    h.stop().await;
}
