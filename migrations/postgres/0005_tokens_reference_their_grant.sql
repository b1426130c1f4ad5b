-- A token references its grant, which references the app, the user and the
-- workspace: one foreign-key check per token written instead of three
-- (each a query of its own, about a tenth of PostgreSQL's work in a
-- refresh), with the same cascades: deleting the app, the user or the
-- workspace deletes its grants, and their tokens with them.

-- Every family has had its grant since 0004 (made from its refresh
-- tokens, and by every redemption since); should one not, it gets one
-- here, from its newest token, rather than the migration failing.
INSERT INTO oauth_grants
    (id, client_id, user_id, workspace_id, scopes, created_at, last_used_at, expires_at, revoked_at)
SELECT DISTINCT ON (t.family_id)
       t.family_id, t.client_id, t.user_id, t.workspace_id, t.scopes,
       t.created_at, t.created_at, t.expires_at, t.revoked_at
FROM oauth_tokens AS t
WHERE NOT EXISTS (SELECT 1 FROM oauth_grants AS g WHERE g.id = t.family_id)
ORDER BY t.family_id, t.created_at DESC, t.id DESC;

ALTER TABLE oauth_tokens
    ADD CONSTRAINT oauth_tokens_grant_fkey
        FOREIGN KEY (family_id) REFERENCES oauth_grants (id) ON DELETE CASCADE,
    DROP CONSTRAINT oauth_tokens_client_id_fkey,
    DROP CONSTRAINT oauth_tokens_user_id_fkey,
    DROP CONSTRAINT oauth_tokens_workspace_id_fkey;
