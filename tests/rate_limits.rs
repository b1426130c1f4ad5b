//! Request budgets end to end (docs/limits.md): Authenticate counts down
//! each credential's budget and refuses the next call with
//! RESOURCE_EXHAUSTED and RetryInfo; waiting that long is enough; keys,
//! OAuth grants and sessions have their own figures; the token endpoint is
//! limited per client and per address; two replicas sharing a real
//! redis-server stay within the stated bound, and keep counting alone when
//! it is stopped.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::oauth::{REDIRECT, TokenBody};
use common::{Backend, Harness, reason};
use reqwest::StatusCode;
use tonic::{Code, Status};
use tonic_types::StatusExt;
use velocity_domain::ManualClock;
use velocity_proto::pb;

async fn authenticate(h: &Harness, credential: &str) -> Result<pb::RateLimit, Status> {
    h.auth()
        .authenticate(pb::AuthenticateRequest {
            credential: credential.into(),
            workspace_slug: String::new(),
            required_scopes: Vec::new(),
        })
        .await
        .map(|r| r.into_inner().rate_limit.expect("a budget"))
}

#[track_caller]
fn assert_rate_limited(result: Result<pb::RateLimit, Status>, retry_after_secs: u64) {
    let status = result.expect_err("over the limit");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(reason(&status), "RATE_LIMITED");
    assert_eq!(
        status.get_details_retry_info().unwrap().retry_delay,
        Some(Duration::from_secs(retry_after_secs))
    );
}

async fn authenticate_counts_down_then_refuses_until_retry_after(backend: Backend) {
    let h = Harness::start_with(backend, |c| {
        c.rate_limits.rate_limit_per_credential = 5;
        c.rate_limits.rate_limit_per_session = 3;
    })
    .await;
    let owner = h.member("acme", "owner").await;
    let session = h.session(&owner);
    let (_, key) = h
        .create_key(&session, pb::KeyKind::Workspace, "acme", &["issues:read"])
        .await
        .unwrap();
    let (_, other_key) = h
        .create_key(&session, pb::KeyKind::Workspace, "acme", &["issues:read"])
        .await
        .unwrap();

    for remaining in (0..5).rev() {
        let budget = authenticate(&h, &key).await.unwrap();
        assert_eq!((budget.limit, budget.remaining), (5, remaining));
        // One request refills every 60 s / 5 = 12 s.
        assert_eq!(budget.reset_seconds, 12 * (5 - remaining));
    }
    assert_rate_limited(authenticate(&h, &key).await, 12);
    // Another key has its own budget.
    assert_eq!(authenticate(&h, &other_key).await.unwrap().remaining, 4);

    // Retry-After honoured: exactly one more, then refused again.
    h.clock.advance_secs(11);
    assert_rate_limited(authenticate(&h, &key).await, 1);
    h.clock.advance_secs(1);
    assert_eq!(authenticate(&h, &key).await.unwrap().remaining, 0);
    assert_rate_limited(authenticate(&h, &key).await, 12);

    // Sessions: their own figure, per user over all their sessions.
    for remaining in (0..3).rev() {
        let budget = authenticate(&h, &h.session(&owner)).await.unwrap();
        assert_eq!((budget.limit, budget.remaining), (3, remaining));
    }
    assert_rate_limited(authenticate(&h, &h.session(&owner)).await, 20);
    // Management calls are not Authenticate calls: not counted.
    h.create_key(&session, pb::KeyKind::Workspace, "acme", &["issues:read"])
        .await
        .unwrap();
    h.stop().await;
}

/// An OAuth access token spends its grant's budget: a refreshed token does
/// not start a new one.
async fn oauth_grants_keep_their_budget_across_refreshes(backend: Backend) {
    let h = Harness::start_with(backend, |c| c.rate_limits.rate_limit_per_credential = 4).await;
    let user = h.member("acme", "owner").await;
    let app = h.register_app(false, &["issues:read"]).await;
    let (code, verifier) = h.code_for(&user, &app, "issues:read", "acme").await;
    let (status, _, body) = h
        .token(TokenBody::Form(vec![
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("client_id", &app.client_id),
            ("code_verifier", &verifier),
        ]))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let access = body["access_token"].as_str().unwrap().to_owned();
    for _ in 0..3 {
        authenticate(&h, &access).await.unwrap();
    }
    let (status, _, body) = h
        .token(TokenBody::Form(vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", body["refresh_token"].as_str().unwrap()),
            ("client_id", &app.client_id),
        ]))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let refreshed = body["access_token"].as_str().unwrap().to_owned();
    assert_ne!(refreshed, access);
    assert_eq!(authenticate(&h, &refreshed).await.unwrap().remaining, 0);
    assert_rate_limited(authenticate(&h, &refreshed).await, 15);
    h.stop().await;
}

async fn token_endpoint_is_limited_per_client_and_per_address(backend: Backend) {
    let h = Harness::start_with(backend, |c| {
        c.rate_limits.rate_limit_per_client = 3;
        c.rate_limits.rate_limit_per_address = 6;
    })
    .await;
    let request = |client: &'static str| {
        h.token(TokenBody::Form(vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", "velr_unknown"),
            ("client_id", client),
        ]))
    };
    for _ in 0..3 {
        let (status, headers, body) = request("app-a").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert_eq!(body["error"], "invalid_client");
        assert!(headers.get("retry-after").is_none());
    }
    // Per client: the fourth is refused before the client is looked at.
    let (status, headers, body) = request("app-a").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["reason"], "RATE_LIMITED");
    assert_eq!(body["error"], "rate_limited");
    assert_eq!(headers["retry-after"], "20");
    assert_eq!(headers["x-ratelimit-limit"], "3");
    assert_eq!(headers["x-ratelimit-remaining"], "0");
    assert_eq!(headers["cache-control"], "no-store");
    // Per address: two more clients, then every client from here waits.
    for client in ["app-b", "app-c"] {
        assert_eq!(request(client).await.0, StatusCode::UNAUTHORIZED);
    }
    let (status, headers, body) = request("app-d").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(headers["x-ratelimit-limit"], "6");
    assert_eq!(headers["retry-after"], "10");
    h.clock.advance_secs(10);
    assert_eq!(request("app-d").await.0, StatusCode::UNAUTHORIZED);
    h.stop().await;
}

/// A successful token response carries the tighter of the two budgets.
async fn token_responses_carry_the_budget(backend: Backend) {
    let h = Harness::start_with(backend, |c| {
        c.rate_limits.rate_limit_per_client = 10;
        c.rate_limits.rate_limit_per_address = 60;
    })
    .await;
    let user = h.member("acme", "owner").await;
    let app = h.register_app(false, &["issues:read"]).await;
    let (code, verifier) = h.code_for(&user, &app, "issues:read", "acme").await;
    let (status, headers, body) = h
        .token(TokenBody::Form(vec![
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("client_id", &app.client_id),
            ("code_verifier", &verifier),
        ]))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers["x-ratelimit-limit"], "10");
    assert_eq!(headers["x-ratelimit-remaining"], "9");
    h.stop().await;
}

for_each_backend!(
    authenticate_counts_down_then_refuses_until_retry_after,
    oauth_grants_keep_their_budget_across_refreshes,
    token_endpoint_is_limited_per_client_and_per_address,
    token_responses_carry_the_budget,
);

/// A throwaway redis-server on a free port, stopped on drop.
struct Redis {
    child: Option<Child>,
    port: u16,
}

impl Redis {
    fn start(port: u16) -> Redis {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is on PATH (.ci/run installs it)");
        let redis = Redis {
            child: Some(child),
            port,
        };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return redis;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("redis-server did not start on {port}");
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

const SHARED_LIMIT: u32 = 40;
const SHARE_BATCH: u32 = 4;

async fn replica(clock: &Arc<ManualClock>, redis: &str) -> Harness {
    let redis = redis.to_owned();
    Harness::start_with_clock(Backend::Sqlite, clock.clone(), move |c| {
        c.rate_limits.rate_limit_per_session = SHARED_LIMIT;
        c.rate_limits.rate_limit_share_batch = SHARE_BATCH;
        c.rate_limits.rate_limit_sync_ms = 20;
        c.rate_limits.redis_url = Some(redis);
    })
    .await
}

/// Calls alternately on both replicas until both refuse; how many passed.
async fn drain(replicas: [&Harness; 2], credential: &str) -> (u32, Status) {
    let mut admitted = 0;
    let mut refused = [None, None];
    for turn in 0..(SHARED_LIMIT * 4) {
        let side = (turn % 2) as usize;
        match authenticate(replicas[side], credential).await {
            Ok(_) => admitted += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                refused[side] = Some(status);
                if refused.iter().all(Option::is_some) {
                    break;
                }
            }
        }
    }
    (admitted, refused[0].take().expect("both replicas refuse"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_budgets_through_redis_and_count_alone_without_it() {
    let mut redis = Redis::start(free_port());
    let clock = Arc::new(ManualClock::starting_now());
    let a = replica(&clock, &redis.url()).await;
    let b = replica(&clock, &redis.url()).await;
    // Sessions verify without storage, so both replicas accept this one.
    let user = uuid::Uuid::now_v7().to_string();
    let session = a.session(&user);

    // Within the stated bound: limit - 1 + replicas × batch.
    let (admitted, refusal) = drain([&a, &b], &session).await;
    let bound = SHARED_LIMIT - 1 + 2 * SHARE_BATCH;
    assert!(
        (SHARED_LIMIT..=bound).contains(&admitted),
        "{admitted} admitted; the bound is {SHARED_LIMIT}..={bound}"
    );
    assert!(a.server().service.rate_limiter().stats().shared);
    assert_eq!(reason(&refusal), "RATE_LIMITED");

    // Retry-After honoured: the shared window has ended, both admit again.
    let wait = refusal
        .get_details_retry_info()
        .unwrap()
        .retry_delay
        .unwrap();
    assert!(wait <= Duration::from_secs(60), "{wait:?}");
    clock.advance_secs(wait.as_secs().max(1) as i64);
    authenticate(&a, &session).await.unwrap();
    authenticate(&b, &session).await.unwrap();

    // Redis stopped mid-test: calls keep being answered, each replica now
    // counting alone, exactly, by its own bucket.
    clock.advance_secs(120);
    redis.stop();
    let mut admitted = 0;
    let refused = loop {
        match authenticate(&a, &session).await {
            Ok(_) => admitted += 1,
            Err(status) => break status,
        }
        assert!(admitted <= SHARED_LIMIT, "no limit without Redis");
    };
    assert_eq!(admitted, SHARED_LIMIT);
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    let stats = a.server().service.rate_limiter().stats();
    assert!(stats.fallback && !stats.shared, "{stats:?}");
    assert_eq!(stats.fallbacks, 1);
    // And metrics say so.
    let scrape = reqwest::get(format!("http://{}/metrics", a.server().http_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "velocity_rate_limit_local_fallback 1",
        "velocity_rate_limit_shared 0",
        "velocity_rate_limit_fallbacks_total 1",
    ] {
        assert!(
            scrape.lines().any(|l| l == line),
            "no `{line}` in:\n{scrape}"
        );
    }
    assert!(
        scrape
            .lines()
            .any(|l| l.starts_with("velocity_rate_limit_refusals_total{limit=\"session\"} ")),
        "session refusals are counted:\n{scrape}"
    );
    // The other replica has its own bucket.
    authenticate(&b, &session).await.unwrap();

    // Redis back: sharing resumes.
    let restarted = Redis::start(redis.port);
    let mut shared = false;
    for _ in 0..200 {
        authenticate(&b, &a.session(&uuid::Uuid::now_v7().to_string()))
            .await
            .unwrap();
        if b.server().service.rate_limiter().stats().shared {
            shared = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(shared, "sharing resumes once Redis answers");
    drop(restarted);
    a.stop().await;
    b.stop().await;
}

/// The real binary with REDIS_URL naming a Redis that is not there: it
/// starts, answers, counts exactly on its own, and says so in its log.
#[tokio::test]
async fn the_binary_counts_alone_and_says_so_when_redis_is_down() {
    use std::io::{BufRead, BufReader};
    use std::sync::Mutex;
    use tonic::transport::Channel;
    use velocity_proto::pb::auth_service_client::AuthServiceClient;
    use velocity_testkit::{SESSION_LIFETIME_SECS, TestDatabase, sign_hs256, supabase_claims};

    let db = TestDatabase::sqlite();
    let nothing_there = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_velocity-auth"))
        .args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .env("DATABASE_URL", &db.url)
        .env("SUPABASE_JWT_SECRET", common::JWT_SECRET)
        .env("REDIS_URL", format!("redis://127.0.0.1:{nothing_there}"))
        .env("VELOCITY_RATE_LIMIT_PER_SESSION", "3")
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    struct Kill(Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stderr = child.stderr.take().unwrap();
    let _child = Kill(child);
    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    let (tx, rx) = std::sync::mpsc::channel();
    {
        let log = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("grpc_addr=").nth(1) {
                    let _ = tx.send(
                        rest.split_whitespace()
                            .next()
                            .unwrap_or_default()
                            .to_owned(),
                    );
                }
                log.lock().unwrap().push(line);
            }
        });
    }
    let addr = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(30)))
        .await
        .unwrap()
        .expect("the server starts without Redis");
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let now = velocity_domain::Clock::now(&velocity_domain::SystemClock).as_secs();
    let mut claims = supabase_claims(common::ISSUER, "user-1", now, SESSION_LIFETIME_SECS);
    claims.as_object_mut().unwrap().remove("iss");
    let session = sign_hs256(common::JWT_SECRET, &claims);
    let call = async || {
        AuthServiceClient::new(channel.clone())
            .authenticate(pb::AuthenticateRequest {
                credential: session.clone(),
                workspace_slug: String::new(),
                required_scopes: Vec::new(),
            })
            .await
    };
    for remaining in (0..3).rev() {
        let budget = call().await.unwrap().into_inner().rate_limit.unwrap();
        assert_eq!(budget.remaining, remaining);
    }
    let refused = call().await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    let said = async {
        loop {
            if log
                .lock()
                .unwrap()
                .iter()
                .any(|line| line.contains("Redis unreachable") && line.contains("WARN"))
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), said)
        .await
        .unwrap_or_else(|_| panic!("no log line: {:?}", log.lock().unwrap()));
}
