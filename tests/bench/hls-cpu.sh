#!/usr/bin/env bash
# Benchmark (not a test): CPU of the default HLS ladder for a 720p30 H.264 + AAC input, glint
# against ffmpeg producing the same ladder (source copied, 480p and 360p x264 veryfast, AAC) from
# the same input, and glint without HLS (its RTMP ingest alone). All get the input in real time from `ffmpeg -re -c copy` (negligible CPU);
# CPU time is read from /proc over the same window. Run inside a loopback-only netns:
#   GLINT_BIN=$CARGO_TARGET_DIR/release/glint ip netns exec glint-bench tests/bench/hls-cpu.sh [seconds]
set -euo pipefail
SECONDS_TO_MEASURE=${1:-30}
GLINT_BIN=${GLINT_BIN:?set GLINT_BIN to the release glint binary}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

# The input: 720p30 H.264 (2 s GOP, what OBS is told to send) + AAC, 60 s, looped.
ffmpeg -v error -f lavfi -i testsrc2=size=1280x720:rate=30 -f lavfi -i sine=frequency=440:sample_rate=48000 \
  -t 60 -pix_fmt yuv420p -c:v libx264 -preset veryfast -tune zerolatency -b:v 3000k -g 60 -c:a aac -b:a 128k \
  "$work/in.flv"

measure() { # pid → CPU % of one core over the window, after 10 s of warm-up
  sleep 10
  local t0; t0=$(ticks "$1"); local w0; w0=$(date +%s.%N)
  sleep "$SECONDS_TO_MEASURE"
  local t1; t1=$(ticks "$1"); local w1; w1=$(date +%s.%N)
  echo "scale=1; ($t1 - $t0) * 100 / $hz / ($w1 - $w0)" | bc
}

# glint: RTMP in, HLS ladder out (its WebRTC side idle: no viewers); $1 = GLINT_HLS.
run_glint() {
  rm -rf "$work/glint"
  GLINT_HLS=$1 GLINT_HTTP=127.0.0.1:0 GLINT_UDP=127.0.0.1:0 GLINT_RTMP=127.0.0.1:19350 GLINT_DATA_DIR="$work/glint" \
    GLINT_STREAM_KEYS=demo=k GLINT_LOG=error "$GLINT_BIN" &
  local glint=$!
  sleep 2
  ffmpeg -v error -re -stream_loop -1 -i "$work/in.flv" -c copy -f flv rtmp://127.0.0.1:19350/live/k 2>/dev/null &
  local feeder=$!
  measure $glint
  kill $feeder $glint; wait $feeder $glint 2>/dev/null || true
}
glint_cpu=$(run_glint true)
# The same without HLS: what RTMP ingest and AAC -> Opus (for WebRTC viewers) cost on their own.
glint_base_cpu=$(run_glint false)

# ffmpeg: the same ladder from the same input.
ffmpeg -v error -re -stream_loop -1 -i "$work/in.flv" \
  -filter_complex "[0:v]split=2[a][b];[a]scale=854:480[v480];[b]scale=640:360[v360]" \
  -map 0:v -map 0:a -map "[v480]" -map 0:a -map "[v360]" -map 0:a \
  -c:v:0 copy -c:v:1 libx264 -b:v:1 1500k -c:v:2 libx264 -b:v:2 800k \
  -preset veryfast -tune zerolatency -g 60 -keyint_min 60 -sc_threshold 0 -c:a aac -b:a 128k \
  -f hls -hls_time 2 -hls_list_size 6 -hls_flags delete_segments \
  -var_stream_map "v:0,a:0 v:1,a:1 v:2,a:2" -master_pl_name master.m3u8 "$work/ff_%v.m3u8" &
ff=$!
ff_cpu=$(measure $ff)
kill $ff; wait $ff 2>/dev/null || true

echo "{\"input\":\"720p30 H.264 3 Mbit/s + AAC\",\"ladder\":\"source (copied) + 480p 1.5 Mbit/s + 360p 0.8 Mbit/s, AAC 128k\",\"seconds\":$SECONDS_TO_MEASURE,\"glint_cpu_pct\":$glint_cpu,\"glint_without_hls_cpu_pct\":$glint_base_cpu,\"ffmpeg_cpu_pct\":$ff_cpu}"
