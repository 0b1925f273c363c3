#!/usr/bin/env bash
# Benchmark (not a test): how many WebRTC viewers one glint holds on this machine. Starts glint
# (release, HLS off) and runs `glint-loadtest capacity`: one WHIP publisher of the built-in clip
# (720p, ~2.5 Mbit/s), then viewers added STEP at a time, each step held STEP_SECS, until video
# loss exceeds 1 % or glass-to-glass p95 exceeds 300 ms. Harness and server share the machine.
# Run inside a loopback-only netns:
#   ip netns exec glint-bench tests/bench/capacity.sh [step] [step_secs] [max] [out-dir]
set -euo pipefail
STEP=${1:-50}
STEP_SECS=${2:-8}
MAX=${3:-1000}
OUT=${4:-$(mktemp -d)}
T=${CARGO_TARGET_DIR:?set CARGO_TARGET_DIR}/release
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
ulimit -n 20000
GLINT_HLS=false GLINT_HTTP=127.0.0.1:18080 GLINT_UDP=127.0.0.1:0 GLINT_RTMP=127.0.0.1:0 \
  GLINT_DATA_DIR="$work" GLINT_STREAM_KEYS=demo=bench-key GLINT_LOG=error "$T/glint" &
glint=$!
for _ in $(seq 1 100); do curl -sf http://127.0.0.1:18080/healthz >/dev/null && break; sleep 0.1; done
"$T/glint-loadtest" capacity --server http://127.0.0.1:18080 --stream demo --publish bench-key \
  --step "$STEP" --step-secs "$STEP_SECS" --max-viewers "$MAX" --server-pid "$glint" \
  --json "$OUT/capacity.json" --charts "$OUT"
echo "report and charts in $OUT"
