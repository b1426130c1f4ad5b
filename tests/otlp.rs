//! Spans over OTLP/HTTP, with the `otlp` feature only:
//! `cargo test --features otlp --test otlp`. The real binary is pointed at a
//! small OTLP/HTTP receiver by `OTEL_EXPORTER_OTLP_ENDPOINT`; a request's
//! span, with its request id, must arrive.

#![cfg(feature = "otlp")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::routing::post;

type Received = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// An OTLP/HTTP trace receiver: keeps every export's content type and body.
async fn receiver() -> (String, Received) {
    let received: Received = Arc::default();
    let keep = received.clone();
    let app = Router::new().route(
        "/v1/traces",
        post(move |headers: HeaderMap, body: Bytes| {
            let keep = keep.clone();
            async move {
                let content_type = headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                keep.lock().unwrap().push((content_type, body.to_vec()));
                // An empty ExportTraceServiceResponse.
                (
                    [("content-type", "application/x-protobuf")],
                    Vec::<u8>::new(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), received)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn a_request_span_reaches_the_collector() {
    let (endpoint, received) = receiver().await;
    let dir = std::env::temp_dir().join(format!("velocity-otlp-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_velocity-auth"))
        .args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .args(["--log-format", "json"])
        .current_dir(&dir)
        .env_remove("DATABASE_URL")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .env_remove("OTEL_SERVICE_NAME")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        // Export every 100 ms rather than every 5 s.
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let http_addr = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("server exited before serving");
        let value: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if let Some(addr) = value["http_addr"].as_str() {
            break addr.to_owned();
        }
    };
    let response = reqwest::Client::new()
        .get(format!("http://{http_addr}/healthz"))
        .header("x-request-id", "otlp-test-request-1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let mut found = false;
    for _ in 0..100 {
        found = received.lock().unwrap().iter().any(|(content_type, body)| {
            content_type == "application/x-protobuf"
                && contains(body, b"otlp-test-request-1")
                && contains(body, b"velocity-auth")
        });
        if found {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let exit = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    reader.join().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(exit.success(), "exit {exit:?}");
    assert!(
        found,
        "no span with the request id arrived; {} exports",
        received.lock().unwrap().len()
    );
}
