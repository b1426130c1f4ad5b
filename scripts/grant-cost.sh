#!/usr/bin/env bash
# What a grant costs the server, in CPU: the peer bench's refresh chains
# and code exchanges (../shared/peer-bench, the same wrk scripts, server
# on core 0, wrk on core 1), with the server's CPU time (user + system,
# every thread, from /proc) over each phase divided by the grants it
# answered, and, on SQLite, the writes each commit carried (the group-
# commit writer's counters in /metrics); on PostgreSQL, the database's
# CPU a grant too (every process of the cluster, so keep it otherwise
# idle). Throughput on these shared
# machines moves with their load; CPU a grant moves far less, so two
# builds compare by it within a sitting where their rates do not.
#
# usage: scripts/grant-cost.sh [BINARY]   (default target/release/velocity-auth)
# env:   DB (sqlite or postgres, default sqlite), DUR (seconds of refresh
#        chains; exchanges run half of it, default 10), CONC (16)
# Prints a line a phase: grants, grants a second, CPU µs a grant (ours,
# and PostgreSQL's), writes a commit (SQLite).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$(realpath "${1:-target/release/velocity-auth}")
DB=${DB:-sqlite} DUR=${DUR:-10} CONC=${CONC:-16}
BENCH=$(realpath target/peer-bench)
[ -d "$BENCH" ] || cp -r ../shared/peer-bench "$BENCH"
L=$BENCH/oidc/lua V=$BENCH/velocity
PORT=${PORT_HTTP:-8093} URL=http://127.0.0.1:${PORT_HTTP:-8093}
NAME=velocity_grant_cost_$$
W=$(mktemp -d)
SRV=
cleanup() {
  [ -n "$SRV" ] && kill "$SRV" 2>/dev/null && wait "$SRV" 2>/dev/null
  [ "$DB" = postgres ] && psql -h 127.0.0.1 -U postgres -qc "drop database if exists $NAME with (force)" >/dev/null
  rm -rf "$W"
}
trap cleanup EXIT
export SUPABASE_JWT_SECRET='peer-bench-secret-at-least-32-bytes-long!!' VELOCITY_ADMIN_TOKEN=grant-cost
export VELOCITY_HTTP_ADDR=127.0.0.1:$PORT VELOCITY_GRPC_ADDR=127.0.0.1:${PORT_GRPC:-50063}
# All of wrk's load comes from one address and one client.
export VELOCITY_RATE_LIMIT_PER_ADDRESS=0 VELOCITY_RATE_LIMIT_PER_CLIENT=0
case $DB in
  sqlite) export DATABASE_URL=sqlite://$W/velocity-auth.db ;;
  postgres)
    psql -h 127.0.0.1 -U postgres -qc "create database $NAME" >/dev/null
    export DATABASE_URL=postgres://postgres@127.0.0.1:5432/$NAME ;;
  *) echo "DB is sqlite or postgres, not $DB" >&2; exit 2 ;;
esac
export VERIFIER=peerbenchverifier0123456789abcdefghijklmnopqrstuv
CHALLENGE=$(printf %s "$VERIFIER" | openssl dgst -sha256 -binary | base64 -w0 | tr '+/' '-_' | tr -d '=')
export CHALLENGE
va() { "$BIN" "$@" 2>>"$W/cli.log"; }
USER_ID=$(va user create --email cost@example.com --name Cost)
va workspace create --slug acme --name Acme >/dev/null
va member add --workspace acme --user "$USER_ID" --role owner
APP=$(va app register --confidential --name Cost --redirect-uri http://127.0.0.1:9/cb --scopes issues:read,issues:write,user:read)
CID=$(echo "$APP" | sed -n 1p) SECRET=$(echo "$APP" | sed -n 2p)
export BASIC=$(printf '%s:%s' "$CID" "$SECRET" | base64 -w0) TOKEN_PATH=/api/oauth/token
(cd "$W" && exec taskset -c 0 "$BIN" >"$W/server.log" 2>&1) &
SRV=$!
for _ in $(seq 1 100); do curl -fsS -o /dev/null "$URL/healthz" 2>/dev/null && break; sleep 0.1; done
python3 "$V/mint.py" "$URL" "$USER_ID" "$CID" "$SECRET" "$W" "$CONC" >/dev/null

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$SRV/stat"; }
# PostgreSQL's CPU: every process of the cluster (its backends, and the
# WAL writer and checkpointer that work for them).
db_ticks() {
  [ "$DB" = postgres ] || { echo 0; return; }
  pgrep -x postgres | while read -r pid; do awk '{ print $14 + $15 }' "/proc/$pid/stat" 2>/dev/null; done |
    awk '{ s += $1 } END { print s + 0 }'
}
counter() { curl -fsS "$URL/metrics" | awk -v n="$1" '$1 == n { v = $2 } END { print v + 0 }'; }
measure() { # phase seconds wrk-args...: runs wrk, prints the phase's line
  local phase=$1 secs=$2
  shift 2
  local c0 d0 b0 o0 c1 d1 b1 o1 grants
  c0=$(cpu_ticks) d0=$(db_ticks) b0=$(counter velocity_storage_write_batches_total) o0=$(counter velocity_storage_batched_writes_total)
  taskset -c 1 wrk -t"$CONC" -c"$CONC" -d"${secs}s" "$@" >"$W/$phase.txt" 2>&1
  c1=$(cpu_ticks) d1=$(db_ticks) b1=$(counter velocity_storage_write_batches_total) o1=$(counter velocity_storage_batched_writes_total)
  grants=$(sed -n 's/^CHECK .*\(successful_grants\|exchanges_ok\)=\([0-9]*\) failed=0.*/\2/p' "$W/$phase.txt")
  [ -n "$grants" ] || { echo "$phase: a grant failed or wrk did not run:" >&2; cat "$W/$phase.txt" >&2; exit 1; }
  awk -v p="$phase" -v n="$grants" -v s="$secs" -v t=$((c1 - c0)) -v hz="$(getconf CLK_TCK)" \
    -v d=$((d1 - d0)) -v b=$((b1 - b0)) -v o=$((o1 - o0)) 'BEGIN {
      printf "%-9s grants=%d per_s=%.0f cpu_us_per_grant=%.1f", p, n, n / s, t * 1e6 / hz / n
      if (d > 0) printf " postgres_cpu_us_per_grant=%.1f", d * 1e6 / hz / n
      if (b > 0) printf " writes_per_commit=%.2f", o / b
      printf "\n" }'
}
# A warm-up, as the peer bench's introspection phase is for its grants.
taskset -c 1 wrk -t1 -c"$CONC" -d2s "$URL/healthz" >/dev/null 2>&1
RT_FILE=$W/rts.txt measure refresh "$DUR" -s "$L/refresh_chain.lua" "$URL/"
# Codes to exchange, minted through the consent page as in the peer bench.
COOKIE_FILE=$W/cookie.txt BODY_FILE=$W/consent_body.txt CODES_OUT=$W/codes \
  taskset -c 1 wrk -t"$CONC" -c"$CONC" -d"${DUR}s" -s "$V/consent_mint.lua" "$URL" >/dev/null 2>&1
cat "$W"/codes.[0-9]* >"$W/codes.all"
CODES_IN=$W/codes.all NTHREADS=$CONC measure exchange "$((DUR / 2))" -s "$L/code_exchange.lua" "$URL"
