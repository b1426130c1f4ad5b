#!/usr/bin/env bash
# The OAuth flow of docs/oauth.md, end to end with curl against a service of
# its own: a temporary SQLite database (./velocity-auth.db is not touched),
# the server started here and stopped when the script ends, however it ends.
# Needs: a release build (cargo build --release; or VELOCITY_AUTH=path),
# curl, openssl, python3. Exits non-zero at the first step that goes wrong.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SCRIPTS=$ROOT/scripts
BIN=${VELOCITY_AUTH:-$ROOT/target/release/velocity-auth}
[[ -x $BIN ]] || { echo "no $BIN: run cargo build --release first" >&2; exit 1; }

DIR=$(mktemp -d)
SERVER=
cleanup() {
  local status=$?
  if [[ -n $SERVER ]]; then
    kill "$SERVER" 2>/dev/null || true
    wait "$SERVER" 2>/dev/null || true
  fi
  if [[ $status -ne 0 && -s $DIR/server.log ]]; then
    echo "--- server log" >&2
    cat "$DIR/server.log" >&2
  fi
  rm -rf "$DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

export DATABASE_URL="sqlite://$DIR/velocity-auth.db"
export VELOCITY_GRPC_ADDR=127.0.0.1:50051 VELOCITY_HTTP_ADDR=127.0.0.1:8080
export SUPABASE_JWT_SECRET='local-dev-secret-at-least-32-bytes-long!'
export VELOCITY_ADMIN_TOKEN='local-admin-token'
HTTP=http://$VELOCITY_HTTP_ADDR
va() { "$BIN" "$@"; }
fail() { echo "oauth-walkthrough: $*" >&2; exit 1; }

if curl -s -o /dev/null "$HTTP/healthz"; then
  fail "something already serves $HTTP (a velocity-auth from the README?): stop it first"
fi

USER_ID=$(va user create --email ada@example.com --name Ada)
va workspace create --slug acme --name "Acme Inc" >/dev/null
va member add --workspace acme --user "$USER_ID" --role owner

# The binary itself in the background, so that $! is the server's PID.
"$BIN" >"$DIR/server.log" 2>&1 &
SERVER=$!
for _ in $(seq 100); do
  curl -sf "$HTTP/healthz" >/dev/null && break
  kill -0 "$SERVER" 2>/dev/null || fail "the server exited at start"
  sleep 0.1
done
curl -sf "$HTTP/healthz" >/dev/null || fail "the server is not ready after 10 s"

# 1. Register an app: its client id, then its secret (optional for this app).
APP=$(va app register --name Timetracker --redirect-uri http://127.0.0.1:9000/callback \
  --scopes issues:read,issues:write,user:read)
CLIENT_ID=$(sed -n 1p <<<"$APP"); CLIENT_SECRET=$(sed -n 2p <<<"$APP")
[[ $CLIENT_SECRET == vels_* ]] || fail "no client secret printed"
# 2. A signed-in user.
SESSION=$("$SCRIPTS/session-token.py" "$USER_ID")
# 3. The app's PKCE pair.
VERIFIER=$(openssl rand -hex 32)
CHALLENGE=$(printf %s "$VERIFIER" | openssl dgst -sha256 -binary | openssl base64 -A | tr '+/' '-_' | tr -d '=')
# 4. The consent page and its CSRF token.
CONSENT="$HTTP/oauth/consent?client_id=$CLIENT_ID&redirect_uri=http%3A%2F%2F127.0.0.1%3A9000%2Fcallback&response_type=code&scope=issues%3Awrite%20user%3Aread&state=xyz&code_challenge=$CHALLENGE&code_challenge_method=S256"
CSRF=$(curl -sf --cookie "sb-access-token=$SESSION" "$CONSENT" | grep -o 'name="csrf_token" value="[^"]*"' | cut -d'"' -f4)
[[ -n $CSRF ]] || fail "no CSRF token on the consent page"
# 5. Approve for workspace acme.
LOCATION=$(curl -s -o /dev/null -w '%{redirect_url}' --cookie "sb-access-token=$SESSION" \
  --data-urlencode "client_id=$CLIENT_ID" --data-urlencode "redirect_uri=http://127.0.0.1:9000/callback" \
  -d response_type=code --data-urlencode "scope=issues:write user:read" -d state=xyz \
  -d "code_challenge=$CHALLENGE" -d code_challenge_method=S256 -d "csrf_token=$CSRF" \
  -d workspace=acme -d decision=approve "$HTTP/oauth/consent")
echo "approved: $LOCATION"
[[ $LOCATION == *code=velc_*state=xyz* ]] || fail "approval did not redirect with a code"
CODE=$(printf %s "$LOCATION" | sed -E 's/.*[?&]code=([^&]*).*/\1/')
# 6. Exchange the code.
TOKENS=$(curl -sf "$HTTP/api/oauth/token" -H 'content-type: application/json' \
  -d "{\"grant_type\":\"authorization_code\",\"code\":\"$CODE\",\"redirect_uri\":\"http://127.0.0.1:9000/callback\",\"client_id\":\"$CLIENT_ID\",\"code_verifier\":\"$VERIFIER\"}")
echo "tokens: $TOKENS"
ACCESS=$(printf %s "$TOKENS" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
REFRESH=$(printf %s "$TOKENS" | python3 -c 'import json,sys; print(json.load(sys.stdin)["refresh_token"])')
# 7. Authenticate over gRPC, and introspection over HTTP.
"$SCRIPTS/authenticate.py" "$ACCESS" --scope issues:write
INTROSPECTION=$(curl -sf "$HTTP/api/oauth/introspect" -H "authorization: Bearer $VELOCITY_ADMIN_TOKEN" -d "token=$ACCESS")
echo "introspection: $INTROSPECTION"
[[ $INTROSPECTION == *'"active":true'* ]] || fail "the access token is not active"
# 8. Refresh (rotation: the old refresh token stops working), this time with the
#    secret: optional for this app, but checked when sent.
WRONG=$(curl -s "$HTTP/api/oauth/token" -d grant_type=refresh_token -d "refresh_token=$REFRESH" -d "client_id=$CLIENT_ID" -d client_secret=vels_wrong)
[[ $WRONG == *invalid_client* ]] || fail "a wrong secret was accepted: $WRONG"
ROTATED=$(curl -sf "$HTTP/api/oauth/token" -d grant_type=refresh_token -d "refresh_token=$REFRESH" -d "client_id=$CLIENT_ID" -d "client_secret=$CLIENT_SECRET")
echo "refreshed: $ROTATED"
NEW_REFRESH=$(printf %s "$ROTATED" | python3 -c 'import json,sys; print(json.load(sys.stdin)["refresh_token"])')
# 9. RFC 7009 revocation of the first refresh token: its whole family goes with it.
curl -sf "$HTTP/api/oauth/revoke" -d "token=$REFRESH" -d "client_id=$CLIENT_ID"
if "$SCRIPTS/authenticate.py" "$ACCESS"; then
  fail "the access token still works after its family was revoked"
fi
AFTER=$(curl -s "$HTTP/api/oauth/token" -d grant_type=refresh_token -d "refresh_token=$NEW_REFRESH" -d "client_id=$CLIENT_ID")
echo "refresh after revocation: $AFTER"
[[ $AFTER == *invalid_grant* ]] || fail "the rotated refresh token survived its family's revocation"
echo "oauth-walkthrough: every step behaved"
