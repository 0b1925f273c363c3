#!/usr/bin/env bash
# Set up what is missing, build the web app when needed, then run Glint on its embedded defaults:
# HTTP on :8080 (API, WHIP/WHEP, web app), WebRTC media on UDP :8189, RTMP on :1935, data in
# ./data. Extra arguments go to `glint` (see `glint --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/glint-target}"
# The web app: built when missing or stale, served at / (unless GLINT_WEB_DIR says otherwise).
export GLINT_WEB_DIR="${GLINT_WEB_DIR:-$(scripts/build-web.sh)}"
exec cargo run --release --bin glint -- "$@"
