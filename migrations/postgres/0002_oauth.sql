-- OAuth 2.0: registered apps, authorization codes and token families.
-- Codes and tokens are stored as SHA-256 hashes only.

CREATE TABLE oauth_apps (
    client_id      TEXT PRIMARY KEY,
    name           TEXT NOT NULL,
    client_type    TEXT NOT NULL CHECK (client_type IN ('public', 'confidential')),
    secret_hash    BYTEA,
    redirect_uris  TEXT NOT NULL,
    allowed_scopes BIGINT NOT NULL,
    created_at     BIGINT NOT NULL
);

CREATE TABLE oauth_codes (
    code_hash      BYTEA PRIMARY KEY,
    client_id      TEXT NOT NULL REFERENCES oauth_apps (client_id) ON DELETE CASCADE,
    redirect_uri   TEXT NOT NULL,
    user_id        TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    workspace_id   TEXT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    scopes         BIGINT NOT NULL,
    code_challenge TEXT NOT NULL,
    family_id      TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL,
    used_at        BIGINT
);
CREATE INDEX oauth_codes_by_expiry ON oauth_codes (expires_at);

CREATE TABLE oauth_tokens (
    id           TEXT PRIMARY KEY,
    token_hash   BYTEA NOT NULL UNIQUE,
    kind         TEXT NOT NULL CHECK (kind IN ('access', 'refresh')),
    family_id    TEXT NOT NULL,
    client_id    TEXT NOT NULL REFERENCES oauth_apps (client_id) ON DELETE CASCADE,
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    workspace_id TEXT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    scopes       BIGINT NOT NULL,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    revoked_at   BIGINT,
    rotated_at   BIGINT
);
CREATE INDEX oauth_tokens_by_family ON oauth_tokens (family_id);
CREATE INDEX oauth_tokens_by_expiry ON oauth_tokens (expires_at);

-- Keys the replicas share, made once by whichever starts first (the CSRF
-- key of the consent page).
CREATE TABLE server_secrets (
    name  TEXT PRIMARY KEY,
    value BYTEA NOT NULL
);
