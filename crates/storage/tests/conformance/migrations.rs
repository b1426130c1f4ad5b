//! Upgrades: a database an earlier release made, opened by this one.

use velocity_domain::oauth::ClientId;
use velocity_storage::Database;
use velocity_testkit::TestDatabase;

/// PostgreSQL's 0005: tokens reference their grant instead of its app, user
/// and workspace. A family with no grant row (none should have one missing
/// since 0004) gets one from its newest token rather than the migration
/// failing; its tokens stay, and still go with their app.
pub async fn tokens_come_to_reference_their_grant() {
    let guard = TestDatabase::postgres().await;
    let pool = sqlx::PgPool::connect(&guard.url).await.unwrap();
    earlier_release(&pool, 5).await;
    sqlx::raw_sql(
        "INSERT INTO users VALUES ('u1', 'ada@example.com', 'Ada', 1); \
         INSERT INTO workspaces VALUES ('w1', 'acme', 'Acme', 1); \
         INSERT INTO oauth_apps (client_id, name, client_type, redirect_uris, allowed_scopes, created_at) \
             VALUES ('web', 'Web', 'public', '[]', 1, 1); \
         INSERT INTO oauth_tokens (id, token_hash, kind, family_id, client_id, user_id, \
                                   workspace_id, scopes, created_at, expires_at) \
             VALUES ('t1', '\\x01', 'access', 'orphan', 'web', 'u1', 'w1', 1, 10, 3600010), \
                    ('t2', '\\x02', 'refresh', 'orphan', 'web', 'u1', 'w1', 3, 20, 5184000020);",
    )
    .execute(&pool)
    .await
    .unwrap();

    let db = Database::open(&guard.url, &crate::options()).await.unwrap();
    let grant: (String, String, String, i64, i64, i64) = sqlx::query_as(
        "SELECT client_id, user_id, workspace_id, scopes, created_at, expires_at \
         FROM oauth_grants WHERE id = 'orphan'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        grant,
        ("web".into(), "u1".into(), "w1".into(), 3, 20, 5184000020),
        "from the family's newest token"
    );
    let references: Vec<String> = sqlx::query_scalar(
        "SELECT conname::text FROM pg_constraint \
         WHERE conrelid = 'oauth_tokens'::regclass AND contype = 'f' ORDER BY conname",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(references, ["oauth_tokens_grant_fkey"]);
    assert_eq!(tokens(&pool).await, 2, "the tokens stay");

    assert!(
        db.store()
            .delete_app(&ClientId("web".into()))
            .await
            .unwrap()
    );
    assert_eq!(tokens(&pool).await, 0, "and go with their app");
    db.close().await;
    pool.close().await;
}

/// Migrates `pool` as a release that had the migrations before `version`.
async fn earlier_release(pool: &sqlx::PgPool, version: i64) {
    let all = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations/postgres");
    let earlier = std::env::temp_dir().join(format!(
        "velocity-migrations-before-{version}-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&earlier).unwrap();
    for entry in std::fs::read_dir(&all).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let number: i64 = name.split('_').next().unwrap().parse().unwrap();
        if number < version {
            std::fs::copy(&path, earlier.join(&name)).unwrap();
        }
    }
    let migrator = sqlx::migrate::Migrator::new(earlier.as_path())
        .await
        .unwrap();
    migrator.run(pool).await.unwrap();
    std::fs::remove_dir_all(&earlier).unwrap();
}

async fn tokens(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM oauth_tokens")
        .fetch_one(pool)
        .await
        .unwrap()
}
