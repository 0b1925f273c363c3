#!/usr/bin/env bash
# Benchmark (not a test): chat fan-out across a cluster. Starts a SurrealDB server
# (tests/surreal-server), a redis-server and NODES glint nodes (release, HLS off), then runs
# `glint-loadtest chat`: READERS WebSocket readers in one room spread round-robin over the nodes,
# 100 senders on the first node, 50 messages/s for SECONDS. Prints delivery latency percentiles
# (all readers, readers on the senders' node, readers one Redis hop away) and the nodes' CPU.
# Everything, the load generator included, shares this machine. Run inside a loopback-only netns:
#   ip netns exec glint-bench tests/bench/cluster-chat.sh [readers] [seconds] [nodes]
set -euo pipefail
READERS=${1:-5000}
SECS=${2:-20}
NODES=${3:-3}
T=${CARGO_TARGET_DIR:?set CARGO_TARGET_DIR}
SURREAL=${GLINT_SURREAL_SERVER:-$T/debug/surreal-server}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
ulimit -n 20000
"$SURREAL" start --bind 127.0.0.1:18000 --user root --pass root --log error memory >/dev/null 2>&1 &
redis-server --port 0 --unixsocket "$work/redis.sock" --save '' --appendonly no --loglevel warning >/dev/null &
for _ in $(seq 1 100); do curl -sf http://127.0.0.1:18000/health >/dev/null && [ -S "$work/redis.sock" ] && break; sleep 0.1; done
pids=()
urls=()
for n in $(seq 1 "$NODES"); do
  port=$((18080 + n))
  GLINT_HLS=false GLINT_HTTP=127.0.0.1:$port GLINT_UDP=127.0.0.1:0 GLINT_RTMP=127.0.0.1:0 \
    GLINT_DATA_DIR="$work/node$n" GLINT_REALTIME_PER_ADDRESS=100000 GLINT_REGISTRATIONS_PER_HOUR=0 \
    GLINT_DATABASE=ws://127.0.0.1:18000 GLINT_DATABASE_USER=root GLINT_DATABASE_PASSWORD=root \
    GLINT_REDIS_URL="unix://$work/redis.sock" GLINT_NODE_ID="node$n" \
    GLINT_CLUSTER_TOKEN=bench-cluster-token-0123456789abcdef0123 \
    GLINT_JWT_SECRET=bench-jwt-secret-0123456789abcdef0123456 GLINT_LOG=error "$T/release/glint" &
  pids+=($!)
  urls+=("http://127.0.0.1:$port")
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
done
others=$(IFS=,; echo "${pids[*]:1}")
readers=$(IFS=,; echo "${urls[*]}")
"$T/release/glint-loadtest" chat --server "${urls[0]}" --reader-servers "$readers" \
  --readers "$READERS" --senders 100 --rate 50 --duration "$SECS" \
  --server-pid "${pids[0]}" ${others:+--other-pids "$others"}
