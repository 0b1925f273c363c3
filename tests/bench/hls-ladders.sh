#!/usr/bin/env bash
# Benchmark (not a test): how many default HLS ladders (720p30 H.264 + AAC input; source copied,
# 480p and 360p encoded) glint runs at once in real time on this machine. Starts N RTMP feeders
# (`ffmpeg -re -c copy`), then reads glint's CPU and the frames its encoders dropped for being
# behind real time (glint_hls_frames_dropped_total) over the window. Run inside a loopback-only
# netns:
#   GLINT_BIN=$CARGO_TARGET_DIR/release/glint ip netns exec glint-bench tests/bench/hls-ladders.sh 2 [seconds]
set -euo pipefail
N=${1:-2}
SECONDS_TO_MEASURE=${2:-30}
GLINT_BIN=${GLINT_BIN:?set GLINT_BIN to the release glint binary}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
dropped() { curl -s http://127.0.0.1:18080/metrics | awk '/^glint_hls_frames_dropped_total /{print $2}'; }
hz=$(getconf CLK_TCK)
ffmpeg -v error -f lavfi -i testsrc2=size=1280x720:rate=30 -f lavfi -i sine=frequency=440:sample_rate=48000 \
  -t 60 -pix_fmt yuv420p -c:v libx264 -preset veryfast -tune zerolatency -b:v 3000k -g 60 -c:a aac -b:a 128k \
  "$work/in.flv"
keys=$(for i in $(seq 1 "$N"); do printf 's%d=k%d,' "$i" "$i"; done)
GLINT_HTTP=127.0.0.1:18080 GLINT_UDP=127.0.0.1:0 GLINT_RTMP=127.0.0.1:19350 GLINT_DATA_DIR="$work/glint" \
  GLINT_STREAM_KEYS="${keys%,}" GLINT_LOG=warn "$GLINT_BIN" &
glint=$!
sleep 2
for i in $(seq 1 "$N"); do
  ffmpeg -v error -re -stream_loop -1 -i "$work/in.flv" -c copy -f flv "rtmp://127.0.0.1:19350/live/k$i" &
done
sleep 15
t0=$(ticks $glint); w0=$(date +%s.%N); d0=$(dropped)
sleep "$SECONDS_TO_MEASURE"
t1=$(ticks $glint); w1=$(date +%s.%N); d1=$(dropped)
cpu=$(echo "scale=1; ($t1 - $t0) * 100 / $hz / ($w1 - $w0)" | bc)
echo "{\"ladders\":$N,\"seconds\":$SECONDS_TO_MEASURE,\"glint_cpu_pct\":$cpu,\"frames_dropped\":$((d1 - d0)),\"cores\":$(nproc)}"
