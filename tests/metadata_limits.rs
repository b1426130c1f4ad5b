//! Oversized request metadata costs the one call that carries it, never the
//! connection: a service that relays a hostile end user's header keeps its
//! channel, its other calls in flight, and its streams.
//!
//! This is transport behaviour (HTTP/2 framing and the listener's limits);
//! storage plays no part in it, so these tests run against SQLite only.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Backend, Harness};
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::{ServerReflectionRequest, ServerReflectionResponse};
use velocity_proto::pb;
use velocity_proto::pb::KeyKind;
use velocity_proto::pb::auth_service_client::AuthServiceClient;

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

/// Longest any single wait may take: a hung connection fails the test here
/// instead of after HTTP/2 keep-alive gives up (about 100 s).
const DEADLINE: Duration = Duration::from_secs(10);

/// Callers making normal calls throughout, each with one call in flight.
const WORKERS: usize = 8;

/// What happened around one call with `size` bytes of custom metadata.
#[derive(Debug)]
struct Outcome {
    size: usize,
    /// The oversized call's result, or `None` if it outlived `DEADLINE`.
    result: Option<Result<(), Status>>,
    elapsed: Duration,
    /// Normal calls that succeeded and failed while it was in flight.
    others_ok: usize,
    others_failed: Vec<String>,
    /// Did a bidirectional stream opened before it still answer after it?
    stream_survived: Result<(), String>,
    /// Did a call made afterwards on the same channel succeed?
    after: Result<(), String>,
}

fn authenticate(secret: &str) -> pb::AuthenticateRequest {
    pb::AuthenticateRequest {
        credential: secret.into(),
        workspace_slug: "acme".into(),
        required_scopes: vec!["issues:read".into()],
    }
}

/// A header value of `size` bytes that HPACK cannot shrink much.
fn value(size: usize) -> MetadataValue<tonic::metadata::Ascii> {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut state: u32 = 0x9e37_79b9;
    let text: String = (0..size)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            alphabet[(state % 64) as usize] as char
        })
        .collect();
    text.parse().unwrap()
}

fn list_services() -> ServerReflectionRequest {
    ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    }
}

async fn reflect(
    tx: &mpsc::Sender<ServerReflectionRequest>,
    replies: &mut tonic::Streaming<ServerReflectionResponse>,
) -> Result<(), String> {
    tx.send(list_services())
        .await
        .map_err(|_| "stream closed".to_string())?;
    match timeout(DEADLINE, replies.message()).await {
        Ok(Ok(Some(_))) => Ok(()),
        Ok(Ok(None)) => Err("stream ended".into()),
        Ok(Err(status)) => Err(format!("{:?}: {}", status.code(), status.message())),
        Err(_) => Err("no reply within the deadline".into()),
    }
}

/// Sends one Authenticate with `size` bytes of metadata (in one entry, as a
/// relayed header would be) while `WORKERS` callers keep normal calls in
/// flight and a reflection stream stays open, all on one `Channel`.
async fn oversized_among_others(size: usize) -> Outcome {
    // The workers make far more calls on one key than its rate limit
    // allows; this test is about metadata, so the limit is out of reach.
    let h = Harness::start_with(Backend::Sqlite, |c| {
        c.rate_limits.rate_limit_per_credential = u32::MAX;
    })
    .await;
    let channel: Channel = h.channel.clone();
    let auth = AuthServiceClient::new(channel.clone());
    let (secret, tx, mut replies) = timeout(DEADLINE, async {
        let owner = h.member("acme", "owner").await;
        let (_, secret) = h
            .create_key(
                &h.session(&owner),
                KeyKind::Workspace,
                "acme",
                &["issues:read"],
            )
            .await
            .unwrap();
        auth.clone()
            .authenticate(authenticate(&secret))
            .await
            .unwrap();
        let (tx, rx) = mpsc::channel(4);
        let mut replies = ServerReflectionClient::new(channel.clone())
            .server_reflection_info(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        reflect(&tx, &mut replies).await.unwrap();
        (secret, tx, replies)
    })
    .await
    .expect("setting up timed out");

    let stop = Arc::new(AtomicBool::new(false));
    let (started_tx, mut started_rx) = mpsc::channel(WORKERS);
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let (mut auth, secret, stop, started) = (
                auth.clone(),
                secret.clone(),
                stop.clone(),
                started_tx.clone(),
            );
            tokio::spawn(async move {
                let (mut ok, mut failed) = (0, Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    match timeout(DEADLINE, auth.authenticate(authenticate(&secret))).await {
                        Ok(Ok(_)) => ok += 1,
                        Ok(Err(status)) => {
                            failed.push(format!("{:?}: {}", status.code(), status.message()))
                        }
                        Err(_) => failed.push("no answer within the deadline".into()),
                    }
                    if ok == 1 {
                        let _ = started.try_send(());
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    // Every worker has a call behind it before the oversized one goes out.
    for _ in 0..WORKERS {
        timeout(DEADLINE, started_rx.recv())
            .await
            .expect("normal calls never got going");
    }

    let mut request = Request::new(authenticate(&secret));
    request
        .metadata_mut()
        .insert("x-relayed-header", value(size));
    let began = Instant::now();
    let result = timeout(DEADLINE, auth.clone().authenticate(request))
        .await
        .ok()
        .map(|r| r.map(|_| ()));
    let elapsed = began.elapsed();

    // Keep the others going a little longer: a connection torn down by the
    // oversized call fails whatever is in flight just after it too.
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut others_ok, mut others_failed) = (0, Vec::new());
    for worker in workers {
        let (ok, failed) = timeout(DEADLINE, worker)
            .await
            .expect("a worker hung")
            .unwrap();
        others_ok += ok;
        others_failed.extend(failed);
    }

    let stream_survived = reflect(&tx, &mut replies).await;
    let after = match timeout(DEADLINE, auth.clone().authenticate(authenticate(&secret))).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(status)) => Err(format!("{:?}: {}", status.code(), status.message())),
        Err(_) => Err("no answer within the deadline".into()),
    };
    drop(tx);
    h.stop().await;
    Outcome {
        size,
        result,
        elapsed,
        others_ok,
        others_failed,
        stream_survived,
        after,
    }
}

/// The oversized call failed with `code`, and nothing else did.
#[track_caller]
fn assert_refused_alone(outcome: &Outcome, code: Code) {
    let size = outcome.size;
    match &outcome.result {
        Some(Err(status)) => assert_eq!(
            status.code(),
            code,
            "{size} bytes of metadata: {outcome:#?}"
        ),
        other => panic!("{size} bytes of metadata: expected {code:?}, got {other:?}"),
    }
    assert!(
        outcome.others_failed.is_empty() && outcome.others_ok > 0,
        "{size} bytes of metadata: other calls on the channel failed: {outcome:#?}"
    );
    assert_eq!(
        outcome.stream_survived,
        Ok(()),
        "{size} bytes of metadata: the open stream died: {outcome:#?}"
    );
    assert_eq!(
        outcome.after,
        Ok(()),
        "{size} bytes of metadata: the channel is unusable afterwards: {outcome:#?}"
    );
}

#[tokio::test]
async fn metadata_within_the_limit_is_served() {
    let outcome = oversized_among_others(12 * KIB).await;
    assert!(
        matches!(outcome.result, Some(Ok(()))),
        "12 KiB of metadata must be served: {outcome:#?}"
    );
    assert!(outcome.others_failed.is_empty(), "{outcome:#?}");
}

#[tokio::test]
async fn metadata_of_20_kib_is_refused_alone() {
    assert_refused_alone(
        &oversized_among_others(20 * KIB).await,
        Code::ResourceExhausted,
    );
}

#[tokio::test]
async fn metadata_of_65_kib_is_refused_alone() {
    assert_refused_alone(
        &oversized_among_others(65 * KIB).await,
        Code::ResourceExhausted,
    );
}

#[tokio::test]
async fn metadata_of_256_kib_is_refused_alone() {
    assert_refused_alone(
        &oversized_among_others(256 * KIB).await,
        Code::ResourceExhausted,
    );
}

#[tokio::test]
async fn metadata_of_1_mib_is_refused_alone() {
    assert_refused_alone(&oversized_among_others(MIB).await, Code::ResourceExhausted);
}

/// Past the 4 MiB HTTP/2 ceiling h2 answers for itself: HTTP 431 on that
/// stream alone, which tonic reports as UNKNOWN.
#[tokio::test]
async fn metadata_just_past_the_transport_ceiling_is_still_refused_alone() {
    let outcome = oversized_among_others(4 * MIB + MIB / 2).await;
    assert_refused_alone(&outcome, Code::Unknown);
    let message = outcome
        .result
        .as_ref()
        .unwrap()
        .as_ref()
        .unwrap_err()
        .message();
    assert!(message.contains("431"), "{outcome:#?}");
}

/// Far past it h2 gives up the connection (GOAWAY ENHANCE_YOUR_CALM, its
/// CONTINUATION-flood guard); what must still hold is that this is quick and
/// the channel reconnects, rather than hanging until keep-alive gives up.
#[tokio::test]
async fn metadata_far_past_the_transport_ceiling_fails_fast() {
    let outcome = oversized_among_others(8 * MIB).await;
    assert!(
        matches!(outcome.result, Some(Err(_))),
        "expected an error within {DEADLINE:?}: {outcome:#?}"
    );
    assert_eq!(outcome.after, Ok(()), "{outcome:#?}");
}

/// What each size does, for docs/limits.md:
/// `cargo test --test metadata_limits -- --ignored --nocapture`.
#[tokio::test]
#[ignore = "a measurement, not a check"]
async fn measure() {
    for size in [
        12 * KIB,
        20 * KIB,
        65 * KIB,
        256 * KIB,
        MIB,
        4 * MIB,
        5 * MIB,
        8 * MIB,
        16 * MIB,
    ] {
        let o = oversized_among_others(size).await;
        let result = match &o.result {
            None => "no answer within the deadline".to_string(),
            Some(Ok(())) => "OK".to_string(),
            Some(Err(s)) => format!("{:?}: {}", s.code(), s.message()),
        };
        eprintln!(
            "{:>8} KiB | {:>7.1?} | {result} | others ok {} failed {} {:?} | stream {:?} | after {:?}",
            size / KIB,
            o.elapsed,
            o.others_ok,
            o.others_failed.len(),
            o.others_failed.first(),
            o.stream_survived,
            o.after,
        );
    }
}
