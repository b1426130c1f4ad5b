//! The server as operators and callers see it: health, reflection, storage
//! outages, and the real binary with its subcommands.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Backend, Harness, assert_refused};
use tokio_stream::StreamExt;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use velocity_proto::pb;

async fn health(channel: tonic::transport::Channel, service: &str) -> i32 {
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .map(|r| r.into_inner().status)
        .unwrap_or(-1)
}

async fn wait_for_health(channel: &tonic::transport::Channel, service: &str, want: ServingStatus) {
    for _ in 0..200 {
        if health(channel.clone(), service).await == want as i32 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("health of {service:?} never became {want:?}");
}

async fn health_and_reflection(backend: Backend) {
    let h = Harness::start(backend).await;
    wait_for_health(&h.channel, "", ServingStatus::Serving).await;
    wait_for_health(
        &h.channel,
        "velocity.auth.v1.AuthService",
        ServingStatus::Serving,
    )
    .await;

    // What `grpcurl -plaintext … list` asks.
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = ServerReflectionClient::new(h.channel.clone())
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let Some(Ok(reply)) = stream.next().await else {
        panic!("no reflection reply")
    };
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("{reply:?}")
    };
    let mut names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    for wanted in [
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
        "velocity.auth.v1.AuthService",
        "velocity.auth.v1.DirectoryService",
    ] {
        assert!(
            names.iter().any(|n| n == wanted),
            "{wanted} missing from {names:?}"
        );
    }

    // The v1alpha protocol answers too (older grpcurl and Postman use it).
    use tonic_reflection::pb::v1alpha as alpha;
    let request = alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
                "velocity.auth.v1.AuthService".into(),
            ),
        ),
    };
    let mut stream =
        alpha::server_reflection_client::ServerReflectionClient::new(h.channel.clone())
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .unwrap()
            .into_inner();
    let Some(Ok(reply)) = stream.next().await else {
        panic!("no v1alpha reply")
    };
    assert!(matches!(
        reply.message_response,
        Some(alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(_))
    ));
    h.stop().await;
}

/// A storage outage is UNAVAILABLE (retry), never UNAUTHENTICATED, for a
/// credential the cache does not hold; one it holds keeps working. Health
/// follows storage down and back up.
#[tokio::test]
async fn postgres_outage_is_unavailable_and_not_serving() {
    let h = Harness::start_with(Backend::Postgres, |c| c.database.db_max_connections = 2).await;
    let owner = h.member("acme", "owner").await;
    let (_, secret) = h
        .create_key(
            &h.session(&owner),
            pb::KeyKind::Workspace,
            "acme",
            &["issues:read"],
        )
        .await
        .unwrap();
    let (_, cold) = h
        .create_key(
            &h.session(&owner),
            pb::KeyKind::Workspace,
            "acme",
            &["issues:read"],
        )
        .await
        .unwrap();
    h.authenticate(&secret, "", &[]).await.unwrap();
    wait_for_health(&h.channel, "", ServingStatus::Serving).await;

    let name = h.db.url.rsplit('/').next().unwrap().to_owned();
    let admin_url = velocity_testkit::postgres_admin_url();
    let admin = sqlx::PgPool::connect(&admin_url).await.unwrap();
    let block = |allow: bool| format!("ALTER DATABASE {name} WITH ALLOW_CONNECTIONS {allow}");
    sqlx::query(sqlx::AssertSqlSafe(block(false)))
        .execute(&admin)
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
    )))
    .execute(&admin)
    .await
    .unwrap();

    let mut outcome = None;
    for _ in 0..5 {
        outcome = Some(h.authenticate(&cold, "", &[]).await);
        if outcome.as_ref().is_some_and(|r| r.is_err()) {
            break;
        }
    }
    assert_refused(outcome.unwrap(), Code::Unavailable, "STORAGE_UNAVAILABLE");
    wait_for_health(&h.channel, "", ServingStatus::NotServing).await;
    // Readiness follows storage; liveness does not touch it.
    let http = reqwest::Client::new();
    let readyz = http.get(format!("{}/readyz", h.http)).send().await.unwrap();
    assert_eq!(readyz.status(), 503);
    let body: serde_json::Value = readyz.json().await.unwrap();
    assert_eq!(body["reason"], "STORAGE_UNAVAILABLE", "{body}");
    assert_eq!(body["error"], "temporarily_unavailable", "{body}");
    let healthz = http
        .get(format!("{}/healthz", h.http))
        .send()
        .await
        .unwrap();
    assert_eq!(healthz.status(), 200, "liveness does not ping storage");
    assert!(
        h.authenticate(&secret, "", &[]).await.is_ok(),
        "a cached key rides out the outage"
    );

    sqlx::query(sqlx::AssertSqlSafe(block(true)))
        .execute(&admin)
        .await
        .unwrap();
    wait_for_health(&h.channel, "", ServingStatus::Serving).await;
    let readyz = http.get(format!("{}/readyz", h.http)).send().await.unwrap();
    assert_eq!(readyz.status(), 200);
    h.authenticate(&cold, "", &[]).await.unwrap();
    admin.close().await;
    h.stop().await;
}

/// The real binary, configured by nothing but flags: the CLI bootstraps a
/// workspace and a key on SQLite, the server starts on that file, answers,
/// and exits cleanly on SIGTERM.
#[tokio::test]
async fn binary_bootstraps_serves_and_stops_on_sigterm() {
    let bin = env!("CARGO_BIN_EXE_velocity-auth");
    let dir = std::env::temp_dir().join(format!("velocity-bin-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(bin)
            .args(args)
            .current_dir(&dir)
            .env_remove("DATABASE_URL")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let version = run(&["--version"]);
    assert!(version.contains("commit "), "{version}");
    let user = run(&[
        "user",
        "create",
        "--email",
        "ada@example.com",
        "--name",
        "Ada",
    ]);
    run(&["workspace", "create", "--slug", "acme", "--name", "Acme"]);
    run(&[
        "member",
        "add",
        "--workspace",
        "acme",
        "--user",
        &user,
        "--role",
        "owner",
    ]);
    let secret = run(&[
        "key",
        "create",
        "--workspace",
        "acme",
        "--scopes",
        "issues:read,issues:write",
        "--name",
        "ci",
    ]);
    assert!(secret.starts_with("vel_"));
    assert!(
        !run(&["key", "list", "--workspace", "acme"]).contains(&secret[8..]),
        "listing shows no secret"
    );
    assert!(
        dir.join("velocity-auth.db").exists(),
        "the default SQLite file is created in the working directory"
    );

    let mut child = Command::new(bin)
        .args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .current_dir(&dir)
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read the log on its own thread: blocking reads must not stall the
    // runtime that drives our client connection.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let grpc_addr = loop {
        let line = rx.recv().await.expect("server exited before serving");
        assert!(!line.contains(&secret[4..]), "a secret reached the log");
        if let Some(rest) = line.split("grpc_addr=").nth(1) {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };
    let channel = tonic::transport::Channel::from_shared(format!("http://{grpc_addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    wait_for_health(&channel, "", ServingStatus::Serving).await;
    let principal = pb::auth_service_client::AuthServiceClient::new(channel)
        .authenticate(pb::AuthenticateRequest {
            credential: secret.clone(),
            workspace_slug: "acme".into(),
            required_scopes: vec!["issues:write".into()],
        })
        .await
        .unwrap()
        .into_inner()
        .principal
        .unwrap();
    assert_eq!(principal.workspace_slug, "acme");

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    reader.join().unwrap();
    let mut rest = Vec::new();
    while let Ok(line) = rx.try_recv() {
        rest.push(line);
    }
    assert!(exit.success(), "exit {exit:?}; log: {rest:?}");
    assert!(rest.iter().any(|l| l.contains("shutting down")), "{rest:?}");
    assert!(
        rest.iter().all(|l| !l.contains(&secret[4..])),
        "a secret reached the log"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

for_each_backend!(health_and_reflection);
