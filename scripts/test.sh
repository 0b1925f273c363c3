#!/usr/bin/env bash
# Every test of Glint: the Rust workspace (unit, integration, str0m interop), the web app's type
# check and lint, and the real-browser tests (Chromium over WHIP/WHEP, the web app end to end;
# screenshots go to tests/browser/artifacts/). WebRTC tests run in a private network namespace that has only
# `lo`, so media cannot leave loopback (needs root; without it they run on the host network).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/glint-target}"
export CARGO_TERM_COLOR=never

cargo build --workspace --all-targets --locked
# The real SurrealDB server the cluster tests run glint nodes against (a workspace of its own).
cargo build --locked --manifest-path tests/surreal-server/Cargo.toml

echo "== Lint: rustfmt and clippy (warnings are errors)"
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== Web app: type check, lint, build"
(cd web && [ -f node_modules/.package-lock.json ] && [ ! package-lock.json -nt node_modules/.package-lock.json ] || npm ci --no-audit --no-fund --silent)
(cd web && npm run --silent typecheck && npm run --silent lint)
# The web app's build, for tests/browser/webapp.test.mjs (other tests use the built-in pages).
GLINT_WEB_BUILD=$(scripts/build-web.sh)
export GLINT_WEB_BUILD

NS=""
cleanup() { [ -n "$NS" ] && ip netns delete "$NS" 2>/dev/null || true; }
trap cleanup EXIT
in_ns() { if [ -n "$NS" ]; then ip netns exec "$NS" "$@"; else "$@"; fi; }
if [ "$(id -u)" -eq 0 ] && command -v ip >/dev/null; then
  NS="glint-test-$$"
  ip netns add "$NS"
  ip netns exec "$NS" ip link set lo up
  # Tests of the shipped defaults (fixed ports) run only in this private namespace.
  export GLINT_TEST_NETNS=1
else
  echo "test: not root, running WebRTC tests on the host network (Chromium may use non-loopback addresses)"
fi

log=$(mktemp)
echo "== Rust tests"
in_ns cargo test --workspace --locked 2>&1 | tee "$log"
rust_passed=$(grep -oE 'test result: ok\. [0-9]+ passed' "$log" | awk '{s+=$4} END {print s+0}')

echo "== API check driven by the OpenAPI document (schemathesis: no 5xx)"
in_ns scripts/api-fuzz.sh "$CARGO_TARGET_DIR/debug/glint"

echo "== Browser tests (Chromium)"
(cd tests/browser && GLINT_BIN="$CARGO_TARGET_DIR/debug/glint" in_ns node --test --test-concurrency=1) 2>&1 | tee "$log"
browser_passed=$(grep -oE '^# pass [0-9]+' "$log" | awk '{print $3}')
rm -f "$log"

# Everything above stops the script on its first failure, so reaching here means none failed.
echo "all: $((rust_passed + browser_passed)) passed, 0 failed"
