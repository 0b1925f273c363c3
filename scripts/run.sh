#!/usr/bin/env bash
# Set up what is missing, then run Glint on its embedded defaults: HTTP on :8080, WebRTC media
# on UDP :8189, data in ./data. Extra arguments go to `glint` (see `glint --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/glint-target}"
exec cargo run --release --bin glint -- "$@"
