-- Changes every replica's cache must hear about, written in the same
-- transaction as the change. Replicas poll it and LISTEN for its NOTIFY.
CREATE TABLE invalidations (
    id         BIGSERIAL PRIMARY KEY,
    payload    TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX invalidations_by_time ON invalidations (created_at);
