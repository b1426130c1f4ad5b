#!/usr/bin/env bash
# The most PostgreSQL on this machine does of the grants' durable storage
# work, with nothing else in the way: pgbench (on core 1, as the peer
# bench's wrk) runs, in the server's own schema (migrations/postgres), what
# the server's grant statements write for code exchanges (each code spent,
# two tokens, the grant) or refresh grants (the refresh token rotated, two
# tokens, the grant's use recorded), BATCH grants a statement, one round
# trip and one commit a statement, CONC clients. It leaves out the HTTP,
# client authentication, hashing, JSON and our server's own CPU. PostgreSQL
# may use both cores here (in the peer bench it shares them with our
# server). So a server on this PostgreSQL answers fewer grants a second
# than this: its ratio to another server's figure is a ceiling on ours.
#
# usage: scripts/pg-grant-floor.sh exchange|refresh
# env:   DUR (seconds, default 10), CONC (clients, 16), BATCH (grants a
#        statement, 8), PGURL (default postgres://postgres@127.0.0.1:5432)
# Prints one line: grants a second.
set -euo pipefail
cd "$(dirname "$0")/.."
GRANT=${1:?usage: scripts/pg-grant-floor.sh exchange|refresh}
DUR=${DUR:-10} CONC=${CONC:-16} BATCH=${BATCH:-8}
PGURL=${PGURL:-postgres://postgres@127.0.0.1:5432}
case $GRANT in exchange | refresh) ;; *) echo "not a grant: $GRANT" >&2; exit 2 ;; esac
NAME=velocity_floor_$$
W=$(mktemp -d)
psql() { command psql -X -q -v ON_ERROR_STOP=1 "$@" >/dev/null; }
psql "$PGURL/postgres" -c "create database $NAME"
cleanup() {
  psql "$PGURL/postgres" -c "drop database if exists $NAME with (force)" || true
  rm -rf "$W"
}
trap cleanup EXIT
DB=$PGURL/$NAME
for migration in migrations/postgres/*.sql; do psql "$DB" -f "$migration"; done

# What the whole run claims, in time order: codes (an exchange each), or
# grants each with its current refresh token (a refresh each). A real
# chain's grant takes a refresh every round trip; here each grant takes
# one, so no two clients ever wait on the same row, as with one chain a
# connection in the peer bench.
CLAIMS=$((DUR * 40000 + 100000))
NOW="(extract(epoch from clock_timestamp()) * 1000)::bigint"
EXCHANGES=$([ "$GRANT" = exchange ] && echo $((CLAIMS - 1)) || echo -1)
REFRESHES=$([ "$GRANT" = refresh ] && echo $((CLAIMS - 1)) || echo -1)
psql "$DB" <<SQL
INSERT INTO users VALUES ('floor-user', 'floor@example.com', 'Floor', 0);
INSERT INTO workspaces VALUES ('floor-ws', 'floor', 'Floor', 0);
INSERT INTO oauth_apps (client_id, name, client_type, secret_hash, redirect_uris, allowed_scopes, created_at)
  VALUES ('floor-client', 'Floor', 'confidential', '\x00', '["http://127.0.0.1:9/cb"]', 7, 0);
CREATE SEQUENCE floor_batches;
CREATE SEQUENCE floor_tokens;
INSERT INTO oauth_codes (code_hash, client_id, redirect_uri, user_id, workspace_id, scopes,
    code_challenge, family_id, created_at, expires_at)
  SELECT sha256(int8send(n)), 'floor-client', 'http://127.0.0.1:9/cb', 'floor-user', 'floor-ws', 7,
    'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM', 'fam-' || lpad(n::text, 12, '0'), $NOW, $NOW + 3600000
  FROM generate_series(0, $EXCHANGES) AS n;
INSERT INTO oauth_grants (id, client_id, user_id, workspace_id, scopes, created_at, last_used_at, expires_at)
  SELECT 'fam-' || lpad(n::text, 12, '0'), 'floor-client', 'floor-user', 'floor-ws', 7, 0, 0, $NOW + 2592000000
  FROM generate_series(0, $REFRESHES) AS n;
INSERT INTO oauth_tokens (id, token_hash, kind, family_id, client_id, user_id, workspace_id, scopes, created_at, expires_at)
  SELECT 'seed-' || substr(id, 5), sha256(convert_to(id, 'UTF8')), 'refresh', id, 'floor-client', 'floor-user', 'floor-ws', 7, 0, $NOW + 2592000000
  FROM oauth_grants;
ANALYZE oauth_codes;
ANALYZE oauth_grants;
ANALYZE oauth_tokens;
SQL

# One statement a transaction, as the server's claims: the batch's codes
# (or the client's chains) claimed, and what each winner issues.
ISSUE="tokens AS (
    INSERT INTO oauth_tokens (id, token_hash, kind, family_id, client_id, user_id, workspace_id, scopes, created_at, expires_at)
    SELECT 'tok-' || lpad(nextval('floor_tokens')::text, 20, '0'), uuid_send(gen_random_uuid()) || uuid_send(gen_random_uuid()),
        kind.k, won.family_id, 'floor-client', 'floor-user', 'floor-ws', 7, $NOW,
        $NOW + CASE kind.k WHEN 'access' THEN 3600000 ELSE 2592000000 END
    FROM won CROSS JOIN (VALUES ('access'), ('refresh')) AS kind (k)
    RETURNING id, kind, family_id)"
if [ "$GRANT" = exchange ]; then
  cat >"$W/grant.sql" <<SQL
WITH batch AS (SELECT (nextval('floor_batches') - 1) * $BATCH AS first),
codes AS (SELECT sha256(int8send(batch.first + i)) AS hash FROM batch, generate_series(0, $BATCH - 1) AS i),
won AS (
    UPDATE oauth_codes AS c SET used_at = $NOW FROM codes
    WHERE c.code_hash = codes.hash AND c.used_at IS NULL AND c.expires_at > $NOW
    RETURNING c.family_id),
grants AS (
    INSERT INTO oauth_grants (id, client_id, user_id, workspace_id, scopes, created_at, last_used_at, expires_at)
    SELECT family_id, 'floor-client', 'floor-user', 'floor-ws', 7, $NOW, $NOW, $NOW + 2592000000 FROM won),
$ISSUE
SELECT count(*) FROM won;
SQL
else
  cat >"$W/grant.sql" <<SQL
WITH batch AS (SELECT (nextval('floor_batches') - 1) * $BATCH AS first),
claims AS (SELECT 'seed-' || lpad((batch.first + i)::text, 12, '0') AS id FROM batch, generate_series(0, $BATCH - 1) AS i),
won AS (
    UPDATE oauth_tokens AS t SET rotated_at = $NOW FROM claims
    WHERE t.id = claims.id AND t.kind = 'refresh' AND t.rotated_at IS NULL AND t.revoked_at IS NULL
    RETURNING t.family_id),
grants AS (
    UPDATE oauth_grants AS g SET last_used_at = $NOW, expires_at = $NOW + 2592000000
    FROM won WHERE g.id = won.family_id),
$ISSUE
SELECT count(*) FROM won;
SQL
fi
# Tables this young have statistics that make seq scans look cheapest,
# and the foreign keys' checks keep their first plan for the connection:
# a seq scan over a table that grows all run. A production database's
# sizes make those checks index lookups; so does this.
PGOPTIONS='-c enable_seqscan=off' taskset -c 1 pgbench -n -M prepared -c "$CONC" -j 1 -T "$DUR" -f "$W/grant.sql" "$DB" >"$W/pgbench.txt" 2>&1 ||
  { cat "$W/pgbench.txt" >&2; exit 1; }
# Every transaction must have claimed its whole batch: count what was issued.
ISSUED=$(command psql -X -At "$DB" -c "select count(*) / 2 from oauth_tokens where id like 'tok-%'")
TPS=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$W/pgbench.txt")
TXS=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$W/pgbench.txt")
if [ "$ISSUED" -ne $((TXS * BATCH)) ]; then
  echo "issued $ISSUED grants in $TXS transactions of $BATCH: some claims failed" >&2
  exit 1
fi
awk -v g="$GRANT" -v tps="$TPS" -v b="$BATCH" -v c="$CONC" -v n="$ISSUED" \
  'BEGIN { printf "grant=%s batch=%d clients=%d grants=%d grants_per_s=%.0f\n", g, b, c, n, tps * b }'
