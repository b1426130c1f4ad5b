use std::sync::atomic::{AtomicU64, Ordering};

use velocity_domain::StoreError;

/// Failures opening or migrating a database.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("DATABASE_URL must start with sqlite: or postgres://")]
    UnsupportedUrl,
    #[error("cannot connect to the database: {0}")]
    Connect(#[source] sqlx::Error),
    #[error("cannot apply migrations: {0}")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    #[error("cannot open the SQLite grants' connection: {0}")]
    Native(#[source] velocity_domain::StoreError),
}

/// Storage errors by class since the process started, for the metrics:
/// `classify` (and rusqlite's, `crate::sqlite::native::classify`) is the
/// one door every database error goes through, so it counts there. Process-wide (a process serves one database), not per store.
static ERRORS: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];

/// The classes [`error_counts`] reports, as metric labels.
pub const ERROR_CLASSES: [&str; 4] = ["unavailable", "conflict", "missing_reference", "other"];

/// Errors per class of [`ERROR_CLASSES`], in that order.
pub fn error_counts() -> [u64; 4] {
    std::array::from_fn(|i| ERRORS[i].load(Ordering::Relaxed))
}

/// Classifies a sqlx error for the domain. `what` names the thing a unique
/// or foreign-key violation is about, as the caller will see it.
pub(crate) fn classify(err: sqlx::Error, what: &'static str) -> StoreError {
    let classified = classify_uncounted(err, what);
    count(&classified);
    classified
}

/// Counts `classified` under its class, for [`error_counts`].
pub(crate) fn count(classified: &StoreError) {
    let class = match classified {
        StoreError::Unavailable(_) => 0,
        StoreError::Conflict(_) => 1,
        StoreError::MissingReference(_) => 2,
        StoreError::Other(_) => 3,
    };
    ERRORS[class].fetch_add(1, Ordering::Relaxed);
}

fn classify_uncounted(err: sqlx::Error, what: &'static str) -> StoreError {
    match &err {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => StoreError::Unavailable(err.to_string()),
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(what),
        sqlx::Error::Database(db) if db.is_foreign_key_violation() => {
            StoreError::MissingReference(what)
        }
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            // PostgreSQL: connection exceptions (08…), shutdowns (57P…),
            // insufficient resources (53…), and what a reconnect meets while
            // the database is closed or gone (55000, 3D000). SQLite: busy (5)
            // and locked (6).
            let unavailable = code.starts_with("08")
                || code.starts_with("57P")
                || code.starts_with("53")
                || code == "55000"
                || code == "3D000"
                || code == "5"
                || code == "6";
            if unavailable {
                StoreError::Unavailable(err.to_string())
            } else {
                StoreError::Other(err.to_string())
            }
        }
        _ => StoreError::Other(err.to_string()),
    }
}
