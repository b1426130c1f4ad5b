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
    let (owner, _, secret) = h.owner_and_workspace_key("acme", &["issues:read"]).await;
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

    let outage = common::PostgresOutage::begin(&h).await;

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

    outage.end().await;
    wait_for_health(&h.channel, "", ServingStatus::Serving).await;
    let readyz = http.get(format!("{}/readyz", h.http)).send().await.unwrap();
    assert_eq!(readyz.status(), 200);
    h.authenticate(&cold, "", &[]).await.unwrap();
    h.stop().await;
}

/// The real binary, configured by nothing but flags: the CLI bootstraps a
/// workspace and a key on SQLite, the server starts on that file, answers,
/// and exits cleanly on SIGTERM; no secret reaches its log, in text or JSON.
#[tokio::test]
async fn binary_bootstraps_serves_and_stops_on_sigterm() {
    binary_story(LogFormat::Text).await;
}

/// The same with `--log-format json` at `RUST_LOG=trace`: every line is one
/// JSON object, each line of a call carries its request id (the caller's,
/// or one made), the id comes back in the response, and no secret is in
/// any dependency's lines either.
#[tokio::test]
async fn binary_logs_json_with_request_ids_and_no_secrets() {
    binary_story(LogFormat::Json).await;
}

#[derive(Clone, Copy, PartialEq)]
enum LogFormat {
    Text,
    Json,
}

/// `field`'s value on a log line: `field=value` in text, `"field":"value"`
/// in JSON.
fn log_field(line: &str, field: &str, format: LogFormat) -> Option<String> {
    match format {
        LogFormat::Text => line
            .split(&format!("{field}="))
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .map(str::to_owned),
        LogFormat::Json => serde_json::from_str::<serde_json::Value>(line)
            .ok()?
            .get(field)?
            .as_str()
            .map(str::to_owned),
    }
}

async fn binary_story(format: LogFormat) {
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
        .args(match format {
            LogFormat::Text => ["--log-format", "text"],
            LogFormat::Json => ["--log-format", "json"],
        })
        .current_dir(&dir)
        .env_remove("DATABASE_URL")
        .env_remove("VELOCITY_LOG_FORMAT")
        // Our adapters' per-request lines too: they are what carries ids.
        // JSON runs at trace, every crate's every line, so no dependency
        // (hyper, h2, tonic, sqlx) logs a secret either.
        .env(
            "RUST_LOG",
            match format {
                LogFormat::Text => "info,velocity_server=debug,velocity_http=debug",
                LogFormat::Json => "trace",
            },
        )
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
    let mut log = Vec::new();
    let (grpc_addr, http_addr) = loop {
        let line = rx.recv().await.expect("server exited before serving");
        log.push(line.clone());
        if let (Some(grpc), Some(http)) = (
            log_field(&line, "grpc_addr", format),
            log_field(&line, "http_addr", format),
        ) {
            break (grpc, http);
        }
    };
    let channel = tonic::transport::Channel::from_shared(format!("http://{grpc_addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    wait_for_health(&channel, "", ServingStatus::Serving).await;
    let mut auth = pb::auth_service_client::AuthServiceClient::new(channel);
    let mut request = tonic::Request::new(pb::AuthenticateRequest {
        credential: secret.clone(),
        workspace_slug: "acme".into(),
        required_scopes: vec!["issues:write".into()],
    });
    request
        .metadata_mut()
        .insert("x-request-id", "ops-test-grpc-1".parse().unwrap());
    let reply = auth.authenticate(request).await.unwrap();
    assert_eq!(
        reply.metadata().get("x-request-id").unwrap(),
        "ops-test-grpc-1",
        "the caller's id comes back"
    );
    let principal = reply.into_inner().principal.unwrap();
    assert_eq!(principal.workspace_slug, "acme");
    // A refusal (another workspace's slug) gets an id made for it.
    let refused = auth
        .authenticate(pb::AuthenticateRequest {
            credential: secret.clone(),
            workspace_slug: "elsewhere".into(),
            required_scopes: vec![],
        })
        .await
        .unwrap_err();
    let made = refused.metadata().get("x-request-id").unwrap();
    let made = made.to_str().unwrap().to_owned();
    assert_eq!(
        uuid::Uuid::parse_str(&made).unwrap().get_version_num(),
        7,
        "{made}"
    );
    // HTTP echoes too; an id it cannot log safely is replaced.
    let http = reqwest::Client::new();
    let readyz = http
        .get(format!("http://{http_addr}/readyz"))
        .header("x-request-id", "ops-test-http-1")
        .send()
        .await
        .unwrap();
    assert_eq!(readyz.status(), 200);
    assert_eq!(readyz.headers()["x-request-id"], "ops-test-http-1");
    // The key in an HTTP header too (forward-auth).
    let verified = http
        .get(format!("http://{http_addr}/api/auth/verify"))
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap();
    assert_eq!(verified.status(), 200);
    let unsafe_id = http
        .get(format!("http://{http_addr}/nowhere"))
        .header("x-request-id", "two words")
        .send()
        .await
        .unwrap();
    assert_eq!(unsafe_id.status(), 404);
    let replaced = unsafe_id.headers()["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(replaced).is_ok(), "{replaced}");

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    reader.join().unwrap();
    while let Ok(line) = rx.try_recv() {
        log.push(line);
    }
    assert!(exit.success(), "exit {exit:?}; log: {log:?}");
    assert!(log.iter().any(|l| l.contains("shutting down")), "{log:?}");
    // Neither the secret nor its 32 random characters, anywhere.
    for line in &log {
        assert!(
            !line.contains(&secret[4..36]),
            "a secret reached the log: {line}"
        );
    }
    // Each request's lines carry its id: the caller's, or the one made.
    for (id, answered) in [
        ("ops-test-grpc-1", "grpc call answered"),
        (made.as_str(), "grpc call answered"),
        ("ops-test-http-1", "http request answered"),
    ] {
        let lines: Vec<&String> = log.iter().filter(|l| l.contains(id)).collect();
        assert!(
            lines.iter().any(|l| l.contains(answered)),
            "no {answered:?} line for {id}: {log:?}"
        );
    }
    if format == LogFormat::Json {
        for line in &log {
            let value: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not one JSON object ({e}): {line}"));
            // A line inside a request's span names its id.
            if let Some(spans) = value.get("spans").and_then(|s| s.as_array()) {
                let request = spans
                    .iter()
                    .find(|s| s["name"] == "grpc" || s["name"] == "http");
                if let Some(request) = request {
                    assert!(
                        request["request_id"]
                            .as_str()
                            .is_some_and(|id| !id.is_empty()),
                        "{line}"
                    );
                    // And at the top level, for collectors to index.
                    assert_eq!(value["request_id"], request["request_id"], "{line}");
                }
            }
        }
        let answered = log
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| {
                v["message"] == "grpc call answered" && v["span"]["request_id"] == "ops-test-grpc-1"
            })
            .expect("the call's line names its id in its span");
        assert_eq!(answered["grpc_status"], "0", "{answered}");
        assert_eq!(answered["request_id"], "ops-test-grpc-1", "{answered}");
        // Lines of no request (start-up, shutdown) have no id.
        let listening = log
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v.get("grpc_addr").is_some())
            .unwrap();
        assert!(listening.get("request_id").is_none(), "{listening}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

for_each_backend!(health_and_reflection);
