#!/usr/bin/env bash
# Warm Authenticate against the transport's ceiling, under an independent
# load generator: h2load (Debian's nghttp2-client) on core 1, the release
# server on core 0, embedded SQLite. Prints req/s of grpc.health.v1
# Health/Check, of Authenticate with one warm workspace key, and of
# Authenticate with unknown keys, each as a ratio to Health/Check.
#
# h2load cannot read grpc-status, so every scenario's answer is checked once
# with scripts/authenticate.py before it is measured.
#
# usage: scripts/h2load-authenticate.sh [BINARY]   (default target/release/velocity-auth)
# env:   N (requests per figure, default 400000), C (connections, 16), M (streams each, 32),
#        ROUNDS (default 5; each round measures the three back to back, and the
#        ratio is taken within the round, so drift between rounds cancels), EXTRA (server flags),
#        LIMITS (rate-limit flags; default: the per-credential budget out of reach)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$(realpath "${1:-target/release/velocity-auth}")
N=${N:-400000}; C=${C:-16}; M=${M:-32}; ROUNDS=${ROUNDS:-5}
PORT=${PORT:-50071}; HTTP_PORT=${HTTP_PORT:-8071}
# shellcheck source=scripts/lib/bench-key.sh
source scripts/lib/bench-key.sh

# The warm key's budget is set out of reach: every call is counted (what is
# measured) and none refused. At the default of 300 a minute all but the
# first few hundred calls would be RESOURCE_EXHAUSTED answers, which h2load
# counts as successes (HTTP 200), so "warm" would measure refusals.
LIMITS=${LIMITS:---rate-limit-per-credential 4294967295}
# shellcheck disable=SC2086
taskset -c 0 "$BIN" --grpc-addr "127.0.0.1:$PORT" --http-addr "127.0.0.1:$HTTP_PORT" $LIMITS ${EXTRA:-} >"$W/server.log" 2>&1 &
SRV=$!
for _ in $(seq 1 100); do curl -fsS -o /dev/null "http://127.0.0.1:$HTTP_PORT/readyz" 2>/dev/null && break; sleep 0.1; done

python3 scripts/authenticate.py "$KEY" --addr "127.0.0.1:$PORT" >/dev/null
if python3 scripts/authenticate.py "vel_unknownunknownunknownunknownunknown0000" --addr "127.0.0.1:$PORT" 2>/dev/null; then
  echo "an unknown key was accepted" >&2; exit 1
fi

frame "$W/health.bin" ""
frame "$W/warm.bin" "$KEY"
frame "$W/unknown.bin" "vel_unknownunknownunknownunknownunknown0000"

run() { # name path body
  taskset -c 1 h2load -n "$N" -c "$C" -m "$M" -t 1 \
    -H 'content-type: application/grpc' -H 'te: trailers' -d "$3" \
    "http://127.0.0.1:$PORT$2" 2>&1 | awk -v n="$1" '/^finished in/ {gsub(",", "", $4); print n, $4}'
}
for round in $(seq 1 "$ROUNDS"); do
  run health /grpc.health.v1.Health/Check "$W/health.bin" | sed "s/^/$round /"
  run warm /velocity.auth.v1.AuthService/Authenticate "$W/warm.bin" | sed "s/^/$round /"
  run unknown /velocity.auth.v1.AuthService/Authenticate "$W/unknown.bin" | sed "s/^/$round /"
done | python3 -c '
import statistics, sys
rounds = {}
for line in sys.stdin:
    r, name, rate = line.split()
    rounds.setdefault(r, {})[name] = float(rate)
print("%-10s %15s %30s %7s" % ("figure", "req/s (median)", "x health, per round", "median"))
for name in ("health", "warm", "unknown"):
    rates = [v[name] for v in rounds.values()]
    ratios = [v[name] / v["health"] for v in rounds.values()]
    shown = " ".join(f"{x:.2f}" for x in ratios)
    print(f"{name:<10} {statistics.median(rates):>15.0f} {shown:>30} {statistics.median(ratios):>7.2f}")
'
