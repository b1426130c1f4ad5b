#!/usr/bin/env bash
# Instructions per request of grpc.health.v1 Health/Check and of warm
# Authenticate (one workspace key), counted by valgrind's callgrind: a
# figure that other load on the machine does not move, unlike req/s under
# h2load (scripts/h2load-authenticate.sh). The release server runs under
# callgrind on one worker thread; h2load sends N requests of each, and each
# batch is dumped to its own file (OUT/cg.out.1 health, OUT/cg.out.2
# Authenticate) for callgrind_annotate.
#
# Background work that runs by the clock (cache expiry and reloads, the
# invalidation poll, usage flushes) is put off for the run: under callgrind
# time passes ~50x slower per request, so it would be charged to whichever
# batch ran longer. What is measured is the request path alone.
#
# callgrind cannot run SHA-NI: the hash of the presented key takes the
# portable SHA-256 (~3,600 instructions) where the server on real hardware
# takes about a third of the time.
#
# usage: scripts/callgrind-authenticate.sh [BINARY] [OUT]
#        (default target/release/velocity-auth, a new temporary directory)
# env:   N (requests per batch, default 20000), C (connections, 16), M (streams each, 32)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$(realpath "${1:-target/release/velocity-auth}")
OUT=$(realpath -m "${2:-$(mktemp -d)}")
mkdir -p "$OUT"
N=${N:-20000}; C=${C:-16}; M=${M:-32}
PORT=${PORT:-50091}; HTTP_PORT=${HTTP_PORT:-8091}
# shellcheck source=scripts/lib/bench-key.sh
source scripts/lib/bench-key.sh

# The budget out of reach, as in h2load-authenticate.sh: every call is
# counted, none refused.
TOKIO_WORKER_THREADS=1 VELOCITY_CACHE_TTL_MS=3600000 VELOCITY_INVALIDATION_POLL_MS=3600000 \
  VELOCITY_USAGE_FLUSH_MS=3600000 \
  valgrind --tool=callgrind --callgrind-out-file="$OUT/cg.out" \
  "$BIN" --grpc-addr "127.0.0.1:$PORT" --http-addr "127.0.0.1:$HTTP_PORT" \
  --rate-limit-per-credential 4294967295 >"$OUT/server.log" 2>&1 &
SRV=$!
for _ in $(seq 1 600); do curl -fsS -o /dev/null "http://127.0.0.1:$HTTP_PORT/readyz" 2>/dev/null && break; sleep 0.2; done
python3 scripts/authenticate.py "$KEY" --addr "127.0.0.1:$PORT" >/dev/null

frame "$W/health.bin" ""
frame "$W/warm.bin" "$KEY"

run() { # path body [requests]
  h2load -n "${3:-$N}" -c "$C" -m "$M" -t 1 -H 'content-type: application/grpc' -H 'te: trailers' \
    -d "$2" "http://127.0.0.1:$PORT$1" 2>&1 | grep -E '^requests:'
}
# Warm both paths (caches, connection tables, allocator), then count.
run /grpc.health.v1.Health/Check "$W/health.bin" 2000 >/dev/null
run /velocity.auth.v1.AuthService/Authenticate "$W/warm.bin" 2000 >/dev/null
callgrind_control -z "$SRV" >/dev/null 2>&1
run /grpc.health.v1.Health/Check "$W/health.bin"
callgrind_control -d health "$SRV" >/dev/null 2>&1
run /velocity.auth.v1.AuthService/Authenticate "$W/warm.bin"
callgrind_control -d authenticate "$SRV" >/dev/null 2>&1

per_request() { awk -v n="$N" '/^summary:/ {printf "%.0f", $2 / n}' "$1"; }
HEALTH=$(per_request "$OUT/cg.out.1")
AUTH=$(per_request "$OUT/cg.out.2")
echo "instructions per request: health $HEALTH, authenticate $AUTH," \
  "difference $((AUTH - HEALTH)), ratio $(awk -v h="$HEALTH" -v a="$AUTH" 'BEGIN {printf "%.3f", h / a}')"
echo "profiles: $OUT/cg.out.1 (health), $OUT/cg.out.2 (authenticate)"
