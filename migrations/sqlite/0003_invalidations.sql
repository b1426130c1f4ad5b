-- Changes every replica's cache must hear about, written in the same
-- transaction as the change. Replicas poll it; PostgreSQL also NOTIFYs.
CREATE TABLE invalidations (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    payload    TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX invalidations_by_time ON invalidations (created_at);
