-- Apps registered by a workspace's owners and admins (NULL: by the
-- operator), a secret being retired while the new one rolls out, and the
-- grants users can list and revoke.

ALTER TABLE oauth_apps ADD COLUMN workspace_id TEXT REFERENCES workspaces (id) ON DELETE CASCADE;
ALTER TABLE oauth_apps ADD COLUMN created_by TEXT REFERENCES users (id) ON DELETE SET NULL;
-- The secret replaced by the last rotation, accepted until previous_secret_until.
ALTER TABLE oauth_apps ADD COLUMN previous_secret_hash BYTEA;
ALTER TABLE oauth_apps ADD COLUMN previous_secret_until BIGINT;
CREATE INDEX oauth_apps_by_workspace ON oauth_apps (workspace_id, created_at, client_id);

-- One row per grant (a token family): made when a code is redeemed, touched
-- by every refresh, revoked with its tokens.
CREATE TABLE oauth_grants (
    id           TEXT PRIMARY KEY,
    client_id    TEXT NOT NULL REFERENCES oauth_apps (client_id) ON DELETE CASCADE,
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    workspace_id TEXT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    scopes       BIGINT NOT NULL,
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT NOT NULL,
    -- When its newest refresh token expires.
    expires_at   BIGINT NOT NULL,
    revoked_at   BIGINT
);
CREATE INDEX oauth_grants_by_user ON oauth_grants (user_id, created_at, id);
CREATE INDEX oauth_grants_by_workspace ON oauth_grants (workspace_id, created_at, id);

-- Grants made before this table: one row per family, from its newest
-- refresh token (revoked if that is), granted when its first token was.
INSERT INTO oauth_grants
    (id, client_id, user_id, workspace_id, scopes, created_at, last_used_at, expires_at, revoked_at)
SELECT t.family_id, t.client_id, t.user_id, t.workspace_id, t.scopes,
       (SELECT MIN(f.created_at) FROM oauth_tokens AS f WHERE f.family_id = t.family_id),
       t.created_at, t.expires_at, t.revoked_at
FROM oauth_tokens AS t
WHERE t.kind = 'refresh' AND NOT EXISTS (
    SELECT 1 FROM oauth_tokens AS newer
    WHERE newer.family_id = t.family_id AND newer.kind = 'refresh'
    AND (newer.created_at > t.created_at OR (newer.created_at = t.created_at AND newer.id > t.id)));
