#!/usr/bin/env bash
# The OAuth flow of README.md, end to end with curl against a fresh service
# in the current directory. Needs: a release build, curl, openssl, python3.
set -euo pipefail
BIN=$(realpath "${VELOCITY_AUTH:-target/release/velocity-auth}")
cd "$(mktemp -d)"   # a fresh SQLite file, ports 50051 and 8080
va() { "$BIN" "$@"; }
export SUPABASE_JWT_SECRET='local-dev-secret-at-least-32-bytes-long!'
export VELOCITY_ADMIN_TOKEN='local-admin-token'
USER_ID=$(va user create --email ada@example.com --name Ada)
va workspace create --slug acme --name "Acme Inc" >/dev/null
va member add --workspace acme --user "$USER_ID" --role owner
CLIENT_ID=$(va app register --name Timetracker --redirect-uri http://127.0.0.1:9000/callback \
  --scopes issues:read,issues:write,user:read)
va > server.log 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
until curl -sf http://127.0.0.1:8080/healthz >/dev/null; do sleep 0.2; done
# A session token as Supabase Auth would issue it (HS256 with the project secret).
SESSION=$(USER_ID="$USER_ID" python3 - <<'PY'
import base64, hashlib, hmac, json, os, time
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
now = int(time.time())
head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
body = b64(json.dumps({"sub": os.environ["USER_ID"], "aud": "authenticated", "role": "authenticated",
                       "iat": now, "exp": now + 3600, "session_id": "local"}).encode())
sig = hmac.new(os.environ["SUPABASE_JWT_SECRET"].encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
print(f"{head}.{body}.{b64(sig)}")
PY
)
VERIFIER=$(openssl rand -hex 32)
CHALLENGE=$(printf %s "$VERIFIER" | openssl dgst -sha256 -binary | openssl base64 -A | tr '+/' '-_' | tr -d '=')
CONSENT="http://127.0.0.1:8080/oauth/consent?client_id=$CLIENT_ID&redirect_uri=http%3A%2F%2F127.0.0.1%3A9000%2Fcallback&response_type=code&scope=issues%3Awrite%20user%3Aread&state=xyz&code_challenge=$CHALLENGE&code_challenge_method=S256"
CSRF=$(curl -s --cookie "sb-access-token=$SESSION" "$CONSENT" | grep -o 'name="csrf_token" value="[^"]*"' | cut -d'"' -f4)
LOCATION=$(curl -s -o /dev/null -w '%{redirect_url}' --cookie "sb-access-token=$SESSION" \
  --data-urlencode "client_id=$CLIENT_ID" --data-urlencode "redirect_uri=http://127.0.0.1:9000/callback" \
  -d response_type=code --data-urlencode "scope=issues:write user:read" -d state=xyz \
  -d "code_challenge=$CHALLENGE" -d code_challenge_method=S256 -d "csrf_token=$CSRF" \
  -d workspace=acme -d decision=approve http://127.0.0.1:8080/oauth/consent)
echo "$LOCATION"
CODE=$(printf %s "$LOCATION" | sed -E 's/.*[?&]code=([^&]*).*/\1/')
TOKENS=$(curl -s http://127.0.0.1:8080/api/oauth/token -H 'content-type: application/json' \
  -d "{\"grant_type\":\"authorization_code\",\"code\":\"$CODE\",\"redirect_uri\":\"http://127.0.0.1:9000/callback\",\"client_id\":\"$CLIENT_ID\",\"code_verifier\":\"$VERIFIER\"}")
echo "$TOKENS"
ACCESS=$(printf %s "$TOKENS" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
REFRESH=$(printf %s "$TOKENS" | python3 -c 'import json,sys; print(json.load(sys.stdin)["refresh_token"])')
curl -s http://127.0.0.1:8080/api/oauth/introspect -H "authorization: Bearer $VELOCITY_ADMIN_TOKEN" -d "token=$ACCESS"; echo
curl -s http://127.0.0.1:8080/api/oauth/token -d grant_type=refresh_token -d "refresh_token=$REFRESH" -d "client_id=$CLIENT_ID"; echo
curl -s http://127.0.0.1:8080/api/oauth/token -d grant_type=refresh_token -d "refresh_token=$REFRESH" -d "client_id=$CLIENT_ID"; echo
