#!/usr/bin/env bash
# One scenario against a fresh glint (release, HLS off) from BIN, loadtest from LT; optional
# wrk load on /api/streams for the whole run. Run inside a loopback-only netns.
#   run.sh <glint-bin> <scenario.toml> <out-dir> [wrk args...]
set -euo pipefail
BIN=$1; SCEN=$2; OUT=$3; shift 3
LT=${LT:-${CARGO_TARGET_DIR:-target}/release/glint-loadtest}
mkdir -p "$OUT"
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
ulimit -n 20000
GLINT_HLS=false GLINT_SESSION_BURST=0 GLINT_MAX_SESSIONS_PER_ADDRESS=100000 GLINT_HTTP=127.0.0.1:8080 GLINT_UDP=127.0.0.1:0 GLINT_RTMP=127.0.0.1:0 GLINT_DATA_DIR="$work" \
  GLINT_STREAM_KEYS=demo=demo-key,other=other-key GLINT_REALTIME_PER_ADDRESS=100000 GLINT_REGISTRATIONS_PER_HOUR=0 GLINT_LOG=error "$BIN" &
glint=$!
for _ in $(seq 1 100); do curl -sf http://127.0.0.1:8080/healthz >/dev/null && break; sleep 0.1; done
wrk_pid=
if [ $# -gt 0 ]; then
  wrk "$@" --latency http://127.0.0.1:8080/api/streams > "$OUT/wrk.txt" 2>&1 &
  wrk_pid=$!
fi
"$LT" run --scenario "$SCEN" --server-pid "$glint" --json "$OUT/report.json" --charts "$OUT" > "$OUT/summary.txt" 2>&1
[ -n "$wrk_pid" ] && wait "$wrk_pid" || true
