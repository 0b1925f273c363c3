#!/usr/bin/env bash
# Benchmark (not a test): a scenario file against a fresh glint (release, HLS on, keys demo and
# other as in loadtest/scenarios/*.toml), harness on the same machine. Run inside a
# loopback-only netns:
#   ip netns exec glint-bench tests/bench/scenario.sh loadtest/scenarios/mixed.toml [out-dir]
set -euo pipefail
SCENARIO=${1:?scenario file}
OUT=${2:-$(mktemp -d)}
T=${CARGO_TARGET_DIR:?set CARGO_TARGET_DIR}/release
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
ulimit -n 20000
GLINT_SESSION_BURST=0 GLINT_MAX_SESSIONS_PER_ADDRESS=100000 GLINT_HTTP=127.0.0.1:8080 GLINT_UDP=127.0.0.1:0 GLINT_RTMP=127.0.0.1:0 GLINT_DATA_DIR="$work" \
  GLINT_STREAM_KEYS=demo=demo-key,other=other-key GLINT_REALTIME_PER_ADDRESS=100000 GLINT_REGISTRATIONS_PER_HOUR=0 GLINT_LOG=error "$T/glint" &
glint=$!
for _ in $(seq 1 100); do curl -sf http://127.0.0.1:8080/healthz >/dev/null && break; sleep 0.1; done
"$T/glint-loadtest" run --scenario "$SCENARIO" --server-pid "$glint" \
  --json "$OUT/report.json" --charts "$OUT"
echo "report and charts in $OUT"
