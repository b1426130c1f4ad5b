//! Throwaway databases for tests: a temp SQLite file, or a PostgreSQL
//! database with a unique name on the local server, dropped afterwards.

use std::path::PathBuf;

use sqlx::Connection;
use sqlx::postgres::PgConnection;

/// The local server; `VELOCITY_TEST_PG` overrides it.
pub fn postgres_admin_url() -> String {
    std::env::var("VELOCITY_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A database that exists for one test and is removed when dropped.
pub struct TestDatabase {
    pub url: String,
    cleanup: Cleanup,
}

enum Cleanup {
    File(PathBuf),
    Postgres { admin_url: String, name: String },
}

impl TestDatabase {
    pub fn sqlite() -> TestDatabase {
        let path = std::env::temp_dir().join(format!("velocity-test-{}.db", unique_suffix()));
        TestDatabase {
            url: format!("sqlite://{}", path.display()),
            cleanup: Cleanup::File(path),
        }
    }

    /// Creates a fresh PostgreSQL database. Panics if the server is not
    /// reachable: PostgreSQL tests must fail, not skip, without it.
    #[expect(
        clippy::panic,
        reason = "test support: a missing server must fail the test loudly"
    )]
    pub async fn postgres() -> TestDatabase {
        let admin_url = postgres_admin_url();
        let name = format!("velocity_test_{}", unique_suffix());
        let mut conn = PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL is required for tests at {admin_url}: {e}"));
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("cannot create test database: {e}"));
        let _ = conn.close().await;
        let base = admin_url
            .rsplit_once('/')
            .map(|(base, _)| base)
            .unwrap_or(&admin_url);
        TestDatabase {
            url: format!("{base}/{name}"),
            cleanup: Cleanup::Postgres { admin_url, name },
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        match &self.cleanup {
            Cleanup::File(path) => {
                for suffix in ["", "-wal", "-shm"] {
                    let mut p = path.clone().into_os_string();
                    p.push(suffix);
                    let _ = std::fs::remove_file(p);
                }
            }
            Cleanup::Postgres { admin_url, name } => {
                let (admin_url, name) = (admin_url.clone(), name.clone());
                // Drop may run inside a runtime; use a thread with its own.
                let _ = std::thread::spawn(move || {
                    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    else {
                        return;
                    };
                    rt.block_on(async move {
                        if let Ok(mut conn) = PgConnection::connect(&admin_url).await {
                            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                            )))
                            .execute(&mut conn)
                            .await;
                        }
                    });
                })
                .join();
            }
        }
    }
}

/// A fresh UUID in its simple (hex) form: unique across processes and
/// usable both in a file name and as a PostgreSQL identifier.
fn unique_suffix() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}
