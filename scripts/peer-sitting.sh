#!/usr/bin/env bash
# One sitting of the peer bench (../shared/peer-bench, its README): the
# same wrk scripts against oidc-provider, first and last, and between
# them against each given build of velocity-auth on each backend, in
# alternating order, so that every ratio comes from one sitting. Prints
# each run's figures against oidc-provider's better run.
#
# The peer bench runs $PROJECT/target/release/velocity-auth, so each build
# gets a directory of that shape holding a link to it. The bench is copied
# to target/peer-bench (it writes its results beside itself) and
# oidc-provider's packages installed, if they are not there yet.
#
# usage: scripts/peer-sitting.sh [BINARY ...]   (default target/release/velocity-auth)
# env:   DBS (backends, default "sqlite postgres"), REPEAT (runs of each
#        build on each backend, default 2), DUR (seconds a figure, default
#        10), OUT (the logs; default a new directory under target/peer-sitting)
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH=target/peer-bench
[ -d "$BENCH" ] || cp -r ../shared/peer-bench "$BENCH"
[ -d "$BENCH/oidc/node_modules" ] || (cd "$BENCH/oidc" && npm ci --silent)
BINS=("$@")
[ ${#BINS[@]} -gt 0 ] || BINS=(target/release/velocity-auth)
OUT=$(realpath -m "${OUT:-target/peer-sitting/$(date -u +%Y%m%dT%H%M%SZ)}")
mkdir -p "$OUT"
for i in "${!BINS[@]}"; do
  [ -x "${BINS[$i]}" ] || { echo "not an executable: ${BINS[$i]}" >&2; exit 2; }
  mkdir -p "$OUT/build$i/target/release"
  ln -sf "$(realpath "${BINS[$i]}")" "$OUT/build$i/target/release/velocity-auth"
done
# Whatever ends the sitting (Ctrl-C included: the benches start their
# servers in the background, where SIGINT may be ignored), no server
# of it is left running.
stop_servers() {
  (cd "$BENCH/oidc" && ./stop.sh) >/dev/null 2>&1 || true
  pkill -f "^$OUT/build[0-9]+/" 2>/dev/null || true
}
trap stop_servers EXIT
trap 'exit 130' INT TERM
# All of wrk's load comes from one address and one client.
export VELOCITY_RATE_LIMIT_PER_ADDRESS=0 VELOCITY_RATE_LIMIT_PER_CLIENT=0

n=0
next() { # label: the next run's log
  n=$((n + 1))
  echo "$(date -u +%T) run $n: $1" >&2
  LOG="$OUT/$n-$1.log"
}
# A run that fails is said, and the sitting goes on: its figures are
# missing from the summary. oidc-provider's bench.sh ends with a grep that
# counts error lines, so it exits 1 after a clean run; its server is
# stopped whatever happened.
oidc() {
  next oidc
  (cd "$BENCH/oidc" && { ./bench.sh || true; } && ./stop.sh) >"$LOG" 2>&1
}
ours() { # build-index backend
  next "build$1-$2"
  PROJECT="$OUT/build$1" DB=$2 "$BENCH/velocity/bench.sh" >"$LOG" 2>&1 ||
    echo "run $n failed (status $?): $LOG" >&2
}

oidc
for round in $(seq "${REPEAT:-2}"); do
  # Forwards, then backwards: drift through the sitting falls on each build alike.
  order=("${!BINS[@]}")
  if [ $((round % 2)) -eq 0 ]; then
    order=()
    for ((i = ${#BINS[@]} - 1; i >= 0; i--)); do order+=("$i"); done
  fi
  for db in ${DBS:-sqlite postgres}; do
    for i in "${order[@]}"; do ours "$i" "$db"; done
  done
done
oidc

for i in "${!BINS[@]}"; do echo "build$i: $(realpath "${BINS[$i]}")"; done
python3 scripts/lib/peer_sitting.py "$OUT"
