//! Several `velocity-auth` processes over one PostgreSQL: a revocation or
//! membership change made through one is refused by the other, through
//! LISTEN/NOTIFY — the cache TTL and poll interval are set to an hour and a
//! minute here, so nothing else could deliver it in time.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{ADMIN_TOKEN, JWT_SECRET, admin, reason};
use tonic::transport::Channel;
use velocity_proto::pb;
use velocity_proto::pb::auth_service_client::AuthServiceClient;
use velocity_proto::pb::directory_service_client::DirectoryServiceClient;
use velocity_testkit::{SESSION_LIFETIME_SECS, TestDatabase, bearer, sign_hs256, supabase_claims};

struct Replica {
    child: Child,
    channel: Channel,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn replica(database_url: &str) -> Replica {
    let mut child = Command::new(env!("CARGO_BIN_EXE_velocity-auth"))
        .args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .env("DATABASE_URL", database_url)
        .env("VELOCITY_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("SUPABASE_JWT_SECRET", JWT_SECRET)
        .env("VELOCITY_CACHE_TTL_MS", "3600000")
        .env("VELOCITY_INVALIDATION_POLL_MS", "60000")
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if !sent && let Some(rest) = line.split("grpc_addr=").nth(1) {
                let _ = tx.send(
                    rest.split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned(),
                );
                sent = true;
            }
        }
    });
    let addr = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(30)))
        .await
        .unwrap()
        .expect("replica did not start");
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    Replica { child, channel }
}

fn session(user: &str) -> String {
    let now = velocity_domain::Clock::now(&velocity_domain::SystemClock).as_secs();
    let mut claims = supabase_claims(common::ISSUER, user, now, SESSION_LIFETIME_SECS);
    claims.as_object_mut().unwrap().remove("iss");
    sign_hs256(JWT_SECRET, &claims)
}

async fn authenticate(
    channel: &Channel,
    credential: &str,
    slug: &str,
) -> Result<pb::Principal, tonic::Status> {
    AuthServiceClient::new(channel.clone())
        .authenticate(pb::AuthenticateRequest {
            credential: credential.into(),
            workspace_slug: slug.into(),
            required_scopes: vec![],
        })
        .await
        .map(|r| r.into_inner().principal.unwrap())
}

/// Polls `b` until `refused` holds; returns how long that took.
async fn until_refused(channel: &Channel, credential: &str, slug: &str, want: &str) -> Duration {
    let started = Instant::now();
    loop {
        match authenticate(channel, credential, slug).await {
            Err(status) if reason(&status) == want => return started.elapsed(),
            Err(status) => panic!("unexpected refusal {status:?}"),
            Ok(_) => {}
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "replica B never saw the change"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test]
async fn changes_through_one_replica_are_seen_by_another() {
    let db = TestDatabase::postgres().await;
    let a = replica(&db.url).await;
    let b = replica(&db.url).await;

    let mut dir = DirectoryServiceClient::new(a.channel.clone());
    let user = dir
        .create_user(admin(pb::CreateUserRequest {
            id: String::new(),
            email: "ada@example.com".into(),
            name: "Ada".into(),
        }))
        .await
        .unwrap()
        .into_inner()
        .id;
    dir.create_workspace(admin(pb::CreateWorkspaceRequest {
        slug: "acme".into(),
        name: "Acme".into(),
    }))
    .await
    .unwrap();
    dir.set_membership(admin(pb::SetMembershipRequest {
        workspace_slug: "acme".into(),
        user_id: user.clone(),
        role: "owner".into(),
    }))
    .await
    .unwrap();

    // Revocations: create on A, warm B's cache, revoke on A, watch B.
    let mut latencies = Vec::new();
    for _ in 0..20 {
        let created = AuthServiceClient::new(a.channel.clone())
            .create_key(bearer(
                &session(&user),
                pb::CreateKeyRequest {
                    kind: pb::KeyKind::Workspace as i32,
                    workspace_slug: "acme".into(),
                    name: "replicated".into(),
                    scopes: vec!["issues:read".into()],
                    expires_at: None,
                },
            ))
            .await
            .unwrap()
            .into_inner();
        // B learns of the new key through the log too (its filter must admit it).
        let started = Instant::now();
        while authenticate(&b.channel, &created.secret, "").await.is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "replica B never admitted the new key"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        AuthServiceClient::new(a.channel.clone())
            .revoke_key(bearer(
                &session(&user),
                pb::RevokeKeyRequest {
                    key_id: created.key.unwrap().id,
                },
            ))
            .await
            .unwrap();
        latencies.push(until_refused(&b.channel, &created.secret, "", "CREDENTIAL_REVOKED").await);
    }
    latencies.sort();
    eprintln!(
        "cross-replica revocation over 20 keys: p50 {:?}, max {:?}",
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1]
    );

    // Membership: removing the user on A cuts their personal key on B.
    let personal = AuthServiceClient::new(a.channel.clone())
        .create_key(bearer(
            &session(&user),
            pb::CreateKeyRequest {
                kind: pb::KeyKind::Personal as i32,
                name: "mine".into(),
                scopes: vec!["user:read".into()],
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .secret;
    let started = Instant::now();
    while authenticate(&b.channel, &personal, "acme").await.is_err() {
        assert!(started.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    dir.remove_membership(admin(pb::RemoveMembershipRequest {
        workspace_slug: "acme".into(),
        user_id: user.clone(),
    }))
    .await
    .unwrap();
    let took = until_refused(&b.channel, &personal, "acme", "NOT_A_MEMBER").await;
    eprintln!("cross-replica membership removal: {took:?}");
    drop((a, b));
}
