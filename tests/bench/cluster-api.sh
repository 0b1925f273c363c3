#!/usr/bin/env bash
# Benchmark (not a test): `GET /api/streams` on one node of a 3-node cluster, with and without
# stream edits on another node (each edit invalidates every node's directory cache through the
# Redis bus). A SurrealDB server (tests/surreal-server, GLINT_SURREAL_SERVER to use another build)
# seeded with 10,000 users and 1,000 streams, a redis-server, three glint nodes (release), wrk,
# all on this machine (`cargo build -p api --examples` for the seeder). Run inside a loopback-only netns:
#   ip netns exec glint-bench tests/bench/cluster-api.sh [edits-per-second]
set -euo pipefail
EDITS=${1:-10}
T=${CARGO_TARGET_DIR:?set CARGO_TARGET_DIR}
SURREAL=${GLINT_SURREAL_SERVER:-$T/debug/surreal-server}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
"$SURREAL" start --bind 127.0.0.1:18000 --user root --pass root --log error memory >/dev/null 2>&1 &
redis-server --port 0 --unixsocket "$work/redis.sock" --save '' --appendonly no --loglevel warning >/dev/null &
for _ in $(seq 1 100); do curl -sf http://127.0.0.1:18000/health >/dev/null && [ -S "$work/redis.sock" ] && break; sleep 0.1; done
GLINT_DATABASE_USER=root GLINT_DATABASE_PASSWORD=root \
  "$T/debug/examples/seed" ws://127.0.0.1:18000 10000 1000 100000
for n in 1 2 3; do
  GLINT_HLS=false GLINT_HTTP=127.0.0.1:$((18080 + n)) GLINT_UDP=127.0.0.1:0 GLINT_RTMP=127.0.0.1:0 \
    GLINT_DATA_DIR="$work/node$n" GLINT_DATABASE=ws://127.0.0.1:18000 GLINT_DATABASE_USER=root \
    GLINT_DATABASE_PASSWORD=root GLINT_REDIS_URL="unix://$work/redis.sock" GLINT_NODE_ID="node$n" \
    GLINT_CLUSTER_TOKEN=bench-cluster-token-0123456789abcdef0123 \
    GLINT_JWT_SECRET=bench-jwt-secret-0123456789abcdef0123456 GLINT_LOG=error "$T/release/glint" &
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$((18080 + n))/healthz" >/dev/null && break; sleep 0.1; done
done
# The seeded live flags have no publisher anywhere: the nodes mark them offline (two looks, 5 s
# apart) and the directory settles.
sleep 15
echo "== GET /api/streams on node 1, no edits"
wrk -t2 -c32 -d10s --latency http://127.0.0.1:18081/api/streams | grep -E "Requests/sec|50%|99%"
token=$(curl -sf -H 'content-type: application/json' -d '{"username":"user1","password":"a good password"}' \
  http://127.0.0.1:18082/api/users/login | sed -E 's/.*"access_token":"([^"]+)".*/\1/')
id=$(curl -sf "http://127.0.0.1:18082/api/streams?limit=100" | grep -oE '"id":"[a-z0-9]+","owner":"[a-z0-9]+","name":"user1"' | sed -E 's/"id":"([^"]+)".*/\1/')
(
  i=0
  while true; do
    curl -sf -o /dev/null -X PUT -H "authorization: Bearer $token" -H 'content-type: application/json' \
      -d "{\"title\":\"edit $i\"}" "http://127.0.0.1:18082/api/streams/$id" || true
    i=$((i + 1))
    sleep "$(awk "BEGIN{print 1/$EDITS}")"
  done
) &
editor=$!
echo "== GET /api/streams on node 1, $EDITS edits/s on node 2 (each invalidates every node's cache)"
wrk -t2 -c32 -d10s --latency http://127.0.0.1:18081/api/streams | grep -E "Requests/sec|50%|99%"
kill $editor
