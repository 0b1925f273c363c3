#!/usr/bin/env bash
# OpenAPI-driven check: schemathesis generates inputs for every endpoint in
# /api/openapi.json and fails if any answer is a 5xx. Starts its own glint (mem:// database,
# loopback, ephemeral ports). Usage: scripts/api-fuzz.sh [path/to/glint]
set -euo pipefail
cd "$(dirname "$0")/.."
GLINT="${1:-${CARGO_TARGET_DIR:-target}/debug/glint}"
data=$(mktemp -d)
log="$data/glint.log"
GLINT_HTTP=127.0.0.1:0 GLINT_UDP=127.0.0.1:0 GLINT_RTMP=127.0.0.1:0 GLINT_DATA_DIR="$data" GLINT_DATABASE=mem:// \
  GLINT_STREAM_KEYS=demo=k GLINT_LOG=warn,glint=info "$GLINT" 2>"$log" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 1 100); do
  addr=$(grep -o 'glint is up.*http=[0-9.:]*' "$log" | sed 's/.*http=//' || true)
  [ -n "$addr" ] && break
  kill -0 $pid || { cat "$log"; exit 1; }
  sleep 0.1
done
[ -n "$addr" ] || { echo "glint did not start"; cat "$log"; exit 1; }
base="http://$addr"
token=$(curl -sf "$base/api/users/register" -H 'content-type: application/json' \
  -d '{"username":"fuzzer","email":"fuzzer@example.com","password":"a good password"}' \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
st run "$base/api/openapi.json" --checks not_a_server_error --max-examples 25 \
  --header "Authorization: Bearer $token" --generation-deterministic
if grep -q 'ERROR' "$log"; then echo "server logged errors:"; grep ERROR "$log"; exit 1; fi
