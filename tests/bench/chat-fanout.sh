#!/usr/bin/env bash
# Benchmark (not a test): chat fan-out. Starts glint (release, HLS off) and runs
# `glint-loadtest chat`: READERS WebSocket readers in one room, 100 senders, 50 messages/s for
# SECONDS; prints delivery latency percentiles and glint's CPU. The client runs on the same
# machine. Run inside a loopback-only netns:
#   ip netns exec glint-bench tests/bench/chat-fanout.sh [readers] [seconds]
set -euo pipefail
READERS=${1:-5000}
SECS=${2:-20}
T=${CARGO_TARGET_DIR:?set CARGO_TARGET_DIR}/release
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
ulimit -n 20000
GLINT_HLS=false GLINT_HTTP=127.0.0.1:18080 GLINT_UDP=127.0.0.1:0 GLINT_RTMP=127.0.0.1:0 \
  GLINT_DATA_DIR="$work" GLINT_REALTIME_PER_ADDRESS=100000 GLINT_REGISTRATIONS_PER_HOUR=0 GLINT_LOG=error "$T/glint" &
glint=$!
for _ in $(seq 1 100); do curl -sf http://127.0.0.1:18080/healthz >/dev/null && break; sleep 0.1; done
"$T/glint-loadtest" chat --server http://127.0.0.1:18080 --readers "$READERS" --senders 100 \
  --rate 50 --duration "$SECS" --server-pid "$glint"
