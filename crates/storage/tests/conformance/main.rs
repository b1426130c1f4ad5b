//! One behavioural story per area of the store, each run against every
//! backend: SQLite on a temp file and PostgreSQL on a fresh database.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod directory;
mod fixtures;
mod grants;
mod invalidations;
mod listing;
mod migrations;
mod oauth;

use std::sync::Arc;

use velocity_domain::Store;
use velocity_storage::{Database, PostgresStore, SqliteStore, StorageOptions};
use velocity_testkit::TestDatabase;

#[derive(Clone, Copy, Debug)]
enum Backend {
    Sqlite,
    Postgres,
}

/// A throwaway database of `backend`, opened (and so migrated).
async fn open(backend: Backend) -> (TestDatabase, Database) {
    let guard = match backend {
        Backend::Sqlite => TestDatabase::sqlite(),
        Backend::Postgres => TestDatabase::postgres().await,
    };
    let db = Database::open(&guard.url, &options()).await.unwrap();
    (guard, db)
}

/// SQLite's connections never wait for each other (one writer; WAL
/// readers take no lock it needs), so every story runs with no busy
/// timeout at all: a wait would surface as an error.
fn options() -> StorageOptions {
    StorageOptions {
        sqlite_busy_timeout: std::time::Duration::ZERO,
        ..StorageOptions::default()
    }
}

/// Runs `story` against a fresh database of `backend`.
async fn run(backend: Backend, story: impl AsyncFnOnce(Arc<dyn Store>)) {
    let (_guard, db) = open(backend).await;
    story(db.store()).await;
    db.close().await;
}

/// Runs a SQLite-only `story` that also drives the group-commit writer.
async fn run_sqlite(story: impl AsyncFnOnce(Arc<dyn Store>, Arc<SqliteStore>)) {
    let (_guard, db) = open(Backend::Sqlite).await;
    let Database::Sqlite(sqlite) = &db else {
        panic!("a SQLite database opened as {}", db.backend());
    };
    story(db.store(), sqlite.clone()).await;
    db.close().await;
}

/// Runs a PostgreSQL-only `story` that also drives the claim batcher.
async fn run_postgres(story: impl AsyncFnOnce(Arc<dyn Store>, Arc<PostgresStore>)) {
    let (_guard, db) = open(Backend::Postgres).await;
    let Database::Postgres(pg) = &db else {
        panic!("a PostgreSQL database opened as {}", db.backend());
    };
    story(db.store(), pg.clone()).await;
    db.close().await;
}

// Every story, once per backend. Concurrency stories get worker threads so
// their attempts really overlap.

mod sqlite {
    use super::*;

    const BACKEND: Backend = Backend::Sqlite;

    #[tokio::test]
    async fn directory() {
        run(BACKEND, directory::directory_story).await;
    }

    #[tokio::test]
    async fn keys() {
        run(BACKEND, directory::key_story).await;
    }

    #[tokio::test]
    async fn listings_page_by_sort_key() {
        run(BACKEND, listing::listing_story).await;
    }

    #[tokio::test]
    async fn reopening_keeps_data_and_migrations_are_idempotent() {
        directory::reopening_keeps_data(BACKEND).await;
    }

    #[tokio::test]
    async fn oauth() {
        run(BACKEND, oauth::oauth_story).await;
    }

    #[tokio::test]
    async fn workspace_apps() {
        run(BACKEND, grants::workspace_apps_story).await;
    }

    #[tokio::test]
    async fn grants() {
        run(BACKEND, grants::grant_story).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_redeems_have_one_winner() {
        run(BACKEND, oauth::concurrent_redeem_story).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_presented_codes_have_one_winner() {
        run(BACKEND, oauth::concurrent_presented_story).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_rotations_have_one_winner() {
        run(BACKEND, oauth::concurrent_rotation_story).await;
    }

    #[tokio::test]
    async fn codes_spent_as_presented() {
        run(BACKEND, oauth::presented_code_story).await;
    }

    #[tokio::test]
    async fn refresh_reuse_interval() {
        run(BACKEND, oauth::refresh_reuse_story).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_refreshes_in_the_reuse_interval_all_win() {
        run(BACKEND, oauth::concurrent_reuse_story).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn redeems_in_one_batch_have_one_winner() {
        run_sqlite(oauth::redeem_in_one_batch_story).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn presented_codes_in_one_batch_have_one_winner() {
        run_sqlite(oauth::presented_in_one_batch_story).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn rotations_in_one_batch_have_one_winner() {
        run_sqlite(oauth::rotation_in_one_batch_story).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn refreshes_in_the_reuse_interval_in_one_batch_all_win() {
        run_sqlite(oauth::reuse_in_one_batch_story).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_failed_write_in_a_batch_fails_alone() {
        run_sqlite(oauth::failure_in_one_batch_story).await;
    }

    #[tokio::test]
    async fn changes_are_logged_as_invalidations() {
        run(BACKEND, invalidations::logging_story).await;
    }

    #[tokio::test]
    async fn invalidation_log_pages_and_prunes() {
        run(BACKEND, invalidations::paging_story).await;
    }

    #[tokio::test]
    async fn known_hashes_page_in_order() {
        run(BACKEND, invalidations::hash_paging_story).await;
    }
}

mod postgres {
    use super::*;

    const BACKEND: Backend = Backend::Postgres;

    #[tokio::test]
    async fn tokens_come_to_reference_their_grant() {
        migrations::tokens_come_to_reference_their_grant().await;
    }

    #[tokio::test]
    async fn directory() {
        run(BACKEND, directory::directory_story).await;
    }

    #[tokio::test]
    async fn keys() {
        run(BACKEND, directory::key_story).await;
    }

    #[tokio::test]
    async fn listings_page_by_sort_key() {
        run(BACKEND, listing::listing_story).await;
    }

    #[tokio::test]
    async fn reopening_keeps_data_and_migrations_are_idempotent() {
        directory::reopening_keeps_data(BACKEND).await;
    }

    #[tokio::test]
    async fn oauth() {
        run(BACKEND, oauth::oauth_story).await;
    }

    #[tokio::test]
    async fn workspace_apps() {
        run(BACKEND, grants::workspace_apps_story).await;
    }

    #[tokio::test]
    async fn grants() {
        run(BACKEND, grants::grant_story).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_redeems_have_one_winner() {
        run(BACKEND, oauth::concurrent_redeem_story).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_presented_codes_have_one_winner() {
        run(BACKEND, oauth::concurrent_presented_story).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_rotations_have_one_winner() {
        run(BACKEND, oauth::concurrent_rotation_story).await;
    }

    #[tokio::test]
    async fn codes_spent_as_presented() {
        run(BACKEND, oauth::presented_code_story).await;
    }

    #[tokio::test]
    async fn refresh_reuse_interval() {
        run(BACKEND, oauth::refresh_reuse_story).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_refreshes_in_the_reuse_interval_all_win() {
        run(BACKEND, oauth::concurrent_reuse_story).await;
    }

    #[tokio::test]
    async fn changes_are_logged_as_invalidations() {
        run(BACKEND, invalidations::logging_story).await;
    }

    #[tokio::test]
    async fn invalidation_log_pages_and_prunes() {
        run(BACKEND, invalidations::paging_story).await;
    }

    #[tokio::test]
    async fn known_hashes_page_in_order() {
        run(BACKEND, invalidations::hash_paging_story).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn claims_share_a_statement_and_keep_their_answers() {
        run_postgres(oauth::claims_in_one_statement_story).await;
    }

    /// PostgreSQL only: its sequences hand out ids before commit, so a later
    /// id can commit first. SQLite has one writer at a time, so its ids
    /// always commit in order and there is nothing to test.
    #[tokio::test]
    async fn ids_committed_out_of_order_are_found_again() {
        invalidations::out_of_order_story().await;
    }

    #[tokio::test]
    async fn logged_invalidations_wake_listeners() {
        invalidations::notify_story().await;
    }
}

#[tokio::test]
async fn unreachable_postgres_is_unavailable_not_a_crash() {
    let err = Database::open(
        "postgres://postgres@127.0.0.1:1/none",
        &StorageOptions {
            max_connections: 1,
            acquire_timeout: std::time::Duration::from_millis(500),
            ..StorageOptions::default()
        },
    )
    .await;
    assert!(err.is_err());
}
