//! Ready, not just alive: the real binary over a store seeded with many
//! keys listens at once, answers health NOT_SERVING and `/readyz` 503 while
//! its known-credential filter loads (with progress in the log), then
//! SERVING and 200. `/healthz` answers throughout.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::Backend;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use velocity_testkit::TestDatabase;

/// Enough that loading takes a while on any machine (tens of pages), yet
/// seeds in a few seconds with one INSERT … SELECT.
const SEEDED_KEYS: usize = 200_000;

/// Migrates through the storage crate, then writes one workspace and
/// `SEEDED_KEYS` keys with random hashes in a single statement: what the
/// filter load reads is only `key_hash`.
async fn seed(backend: Backend, url: &str) {
    let database = velocity_storage::Database::open(url, &Default::default())
        .await
        .unwrap();
    database.close().await;
    let workspace =
        "INSERT INTO workspaces (id, slug, name, created_at) VALUES ('ws-seed', 'seed', 'Seed', 0)";
    let keys = match backend {
        Backend::Sqlite => format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {SEEDED_KEYS})
             INSERT INTO api_keys (id, kind, key_hash, display, name, scopes, workspace_id, created_at)
             SELECT 'k' || i, 'workspace', randomblob(32), 'vel_seed', 'seed', 1, 'ws-seed', 0 FROM n"
        ),
        Backend::Postgres => format!(
            "INSERT INTO api_keys (id, kind, key_hash, display, name, scopes, workspace_id, created_at)
             SELECT 'k' || i, 'workspace', sha256(i::text::bytea), 'vel_seed', 'seed', 1, 'ws-seed', 0
             FROM generate_series(1, {SEEDED_KEYS}) AS i"
        ),
    };
    match backend {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(url).await.unwrap();
            sqlx::query(workspace).execute(&pool).await.unwrap();
            sqlx::query(sqlx::AssertSqlSafe(keys))
                .execute(&pool)
                .await
                .unwrap();
            pool.close().await;
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(url).await.unwrap();
            sqlx::query(workspace).execute(&pool).await.unwrap();
            sqlx::query(sqlx::AssertSqlSafe(keys))
                .execute(&pool)
                .await
                .unwrap();
            pool.close().await;
        }
    }
}

struct Server {
    child: Child,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
    log: Vec<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn spawn(database_url: &str) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_velocity-auth"))
            .args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
            .env("DATABASE_URL", database_url)
            .env("RUST_LOG", "info")
            .env("VELOCITY_HEALTH_INTERVAL_MS", "50")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Server {
            child,
            lines,
            log: Vec::new(),
        }
    }

    /// The value of `field=` on the first log line that has it.
    async fn field(&mut self, field: &str) -> String {
        let needle = format!("{field}=");
        loop {
            if let Some(value) = self
                .log
                .iter()
                .find_map(|l| l.split(&needle).nth(1))
                .and_then(|rest| rest.split_whitespace().next())
            {
                return value.to_owned();
            }
            let line = tokio::time::timeout(Duration::from_secs(60), self.lines.recv())
                .await
                .expect("no log line for a minute")
                .expect("the server exited");
            self.log.push(line);
        }
    }

    fn drain(&mut self) {
        while let Ok(line) = self.lines.try_recv() {
            self.log.push(line);
        }
    }
}

async fn grpc_health(channel: &tonic::transport::Channel) -> ServingStatus {
    let status = HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    ServingStatus::try_from(status).unwrap()
}

async fn not_ready_while_the_filter_loads(backend: Backend) {
    let db = match backend {
        Backend::Sqlite => TestDatabase::sqlite(),
        Backend::Postgres => TestDatabase::postgres().await,
    };
    seed(backend, &db.url).await;
    let mut server = Server::spawn(&db.url);
    let grpc_addr = server.field("grpc_addr").await;
    let http_addr = server.field("http_addr").await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{grpc_addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let http = reqwest::Client::new();

    // Both probes, polled until ready (with a deadline, never timed).
    let mut grpc_seen = Vec::new();
    let mut http_seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let grpc = grpc_health(&channel).await;
        let readyz = http
            .get(format!("http://{http_addr}/readyz"))
            .send()
            .await
            .unwrap();
        let status = readyz.status().as_u16();
        let body = readyz.text().await.unwrap();
        let healthz = http
            .get(format!("http://{http_addr}/healthz"))
            .send()
            .await
            .unwrap();
        assert_eq!(healthz.status(), 200, "liveness answers while loading");
        if grpc_seen.last() != Some(&grpc) {
            grpc_seen.push(grpc);
        }
        if http_seen.last().map(|(s, _)| *s) != Some(status) {
            http_seen.push((status, body));
        }
        if grpc == ServingStatus::Serving && status == 200 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never ready: {grpc_seen:?} {http_seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    assert_eq!(
        grpc_seen,
        [ServingStatus::NotServing, ServingStatus::Serving],
        "gRPC health goes from NOT_SERVING to SERVING, once"
    );
    let statuses: Vec<u16> = http_seen.iter().map(|(s, _)| *s).collect();
    assert_eq!(statuses, [503, 200], "/readyz goes from 503 to 200, once");
    let body: serde_json::Value = serde_json::from_str(&http_seen[0].1).unwrap();
    assert_eq!(body["error"], "temporarily_unavailable", "{body}");
    assert_eq!(body["reason"], "STORAGE_UNAVAILABLE", "{body}");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("starting"),
        "{body}"
    );

    // Progress with count and rate, then the total.
    let _ = server.field("credentials").await;
    server.drain();
    let progress: Vec<&String> = server
        .log
        .iter()
        .filter(|l| l.contains("known-credential filter loading"))
        .collect();
    assert!(
        progress.iter().any(|l| l.contains("loaded=100000")),
        "{progress:?}"
    );
    assert!(
        progress.iter().all(|l| l.contains("per_sec=")),
        "{progress:?}"
    );
    let loaded = server
        .log
        .iter()
        .find(|l| l.contains("known-credential filter loaded"))
        .unwrap();
    assert!(
        loaded.contains(&format!("credentials={SEEDED_KEYS}")),
        "{loaded}"
    );
    assert!(loaded.contains("per_sec="), "{loaded}");
}

for_each_backend!(not_ready_while_the_filter_loads);
