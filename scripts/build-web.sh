#!/usr/bin/env bash
# Build the web app (web/out) when it is missing or older than its sources; install its npm
# packages when package-lock.json changed. Prints the build directory.
set -euo pipefail
cd "$(dirname "$0")/../web"
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --silent >&2
fi
stamp=out/index.html
if [ ! -f "$stamp" ] || [ -n "$(find app components lib package-lock.json next.config.mjs -newer "$stamp" -print -quit)" ]; then
  echo "web: building the web app (next build)" >&2
  NEXT_TELEMETRY_DISABLED=1 npm run --silent build >&2
fi
echo "$PWD/out"
