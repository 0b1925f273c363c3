// Benchmark (not a test) of RTMP ingest. Run inside a loopback-only netns (docs/benchmarks.md).
//
//   node bench-rtmp.mjs latency [--seconds 20] [--source zerolatency|bframes|obs]
//                               [--viewer webrtc|hls] [--audio]
//     Glass-to-glass: this script paints Date.now() into raw 640x360 frames as the block code of
//     latency-probe.mjs, 30 per second, and pipes them to ffmpeg, which encodes them with x264
//     (see X264 below) and publishes over RTMP; a Chromium WHEP viewer reads the code of every
//     decoded frame (or an hls.js viewer of the stream's HLS master playlist, --viewer hls).
//     One machine, one clock.
//     --audio: the script also writes 48 kHz audio to ffmpeg (a second pipe), as a capture
//     device would (every 10 ms, what was captured since), encoded as AAC; it is silent but for
//     a click at the audio time of every 30th frame. The WHEP viewer plays video and audio in
//     one MediaStream and records when each frame is shown; each click against its frame gives
//     the audio/video offset (audio − video, ms; positive: the sound comes late), with the click
//     taken as
//       played: its Opus frame's arrival in Chromium + the audio's mean jitter-buffer delay and
//               playout delay over the window (getStats: inbound-rtp jitterBufferDelay /
//               jitterBufferEmittedCount, media-playout totalPlayoutDelay / totalSamplesCount);
//       heard:  when Web Audio outputs it (an AudioWorklet; Web Audio's own path comes on top,
//               and NetEq's concealment may swallow a click, so fewer are heard).
//
//     --publisher split (with --audio): one ffmpeg per track, each writing FLV to a pipe, and
//     this script sends each tag over RTMP the moment it comes out, so video does not wait for
//     the audio encoder as one ffmpeg (or OBS) interleaving both tracks makes it wait.
//
//   node bench-rtmp.mjs publisher [--seconds 10] [--audio] [--publisher split]
//     The publisher's own share: the same ffmpeg writes FLV to a pipe instead of RTMP, and this
//     script timestamps each tag as it comes out: per track, how long after its capture (the
//     paint time of its frame, or of the frame at its audio time) ffmpeg hands it over. No glint.
//
//   node bench-rtmp.mjs cpu [--streams 4] [--seconds 20]
//     glint's CPU per RTMP stream (ffmpeg testsrc2 640x360 30 fps + 440 Hz sine): video only,
//     video + AAC (the AAC → Opus transcode), and H.264 with B-frames + AAC (the re-encode).
import { spawn, execFileSync } from 'node:child_process';
import { connect } from 'node:net';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { startGlint, launchChromium, waitFor } from './lib.mjs';
import { viewWhep, viewHls, receiverStats, delaysBetween, BITS, BLOCK, pct } from './latency-probe.mjs';

const [mode = 'latency', ...rest] = process.argv.slice(2);
const args = Object.fromEntries(rest.reduce((acc, a, i, all) => (a.startsWith('--') ? [...acc, [a.slice(2), all[i + 1] && !all[i + 1].startsWith('--') ? all[i + 1] : true]] : acc), []));
const seconds = Number(args.seconds ?? 20);
const source = args.source ?? 'zerolatency';
const W = 640, H = 360, FPS = 30;

// x264 settings of the RTMP source. B-frame sources are re-encoded by glint; `bframes` keeps
// x264's own delay small (no lookahead, sliced threads) so glint's share shows.
const X264 = {
  zerolatency: ['-preset', 'ultrafast', '-tune', 'zerolatency', '-profile:v', 'baseline', '-bf', '0'],
  bframes: ['-preset', 'ultrafast', '-profile:v', 'high', '-bf', '2', '-x264-params', 'b-adapt=0:rc-lookahead=0:sync-lookahead=0:sliced-threads=1'],
  obs: ['-preset', 'veryfast', '-profile:v', 'high', '-bf', '2'], // OBS's x264 defaults
};
const x264 = (bframes) => X264[bframes ? 'bframes' : 'zerolatency'];
const viewer = args.viewer ?? 'webrtc';
const withAudio = Boolean(args.audio);
const split = args.publisher === 'split';
if (split && !withAudio) throw new Error('--publisher split needs --audio');
const RATE = 48000;
/** Every CLICK_EVERY-th frame has a click at its audio time. */
const CLICK_EVERY = 30;
const CLICK_SAMPLES = 240; // 5 ms of a 1 kHz tone

/** One gray frame carrying `t` as the block code, with a moving bar so frames differ. */
function paint(frame, t) {
  frame.fill(0x33);
  frame.fill(0x88, 200 * W, (210 + (t % 100)) * W);
  for (let i = 0; i < BITS; i++) {
    const v = (t >> i) & 1 ? 0xff : 0x00;
    const x0 = (i % 12) * BLOCK, y0 = Math.floor(i / 12) * BLOCK;
    for (let y = y0; y < y0 + BLOCK; y++) frame.fill(v, y * W + x0, y * W + x0 + BLOCK);
  }
}

/** The publisher: raw frames (and with `withAudio` raw audio on fd 3) into ffmpeg, which sends
 *  `output` args. Returns the process, the paint time of each frame (Date.now(), by index), the
 *  frame indices that have a click, and `stop()`. */
function publish(output, stdout = 'ignore') {
  const rawVideo = ['-f', 'rawvideo', '-pix_fmt', 'gray', '-s', `${W}x${H}`, '-r', String(FPS), '-i', 'pipe:0'];
  const x264 = ['-pix_fmt', 'yuv420p', '-c:v', 'libx264', ...X264[source], '-g', '60'];
  const aac = ['-c:a', 'aac', '-b:a', '160k', '-ac', '2']; // OBS's defaults: 48 kHz stereo, 160 kbit/s
  const rawAudio = (fd) => ['-f', 's16le', '-ar', String(RATE), '-ac', '1', '-i', `pipe:${fd}`];
  const ffmpeg = (args, stdio) => spawn('ffmpeg', ['-hide_banner', '-loglevel', 'error', ...args], { stdio });
  // --publisher split: one ffmpeg per track, each writing FLV to a pipe, and this script sends
  // each tag over RTMP as it comes (see `relay`): video does not wait for the audio encoder.
  const video = split
    ? ffmpeg([...rawVideo, ...x264, '-flush_packets', '1', '-f', 'flv', 'pipe:1'], ['pipe', 'pipe', 'inherit'])
    : ffmpeg([...rawVideo, ...(withAudio ? rawAudio(3) : []), ...x264, ...(withAudio ? aac : []), ...output],
      ['pipe', stdout, 'inherit', withAudio ? 'pipe' : 'ignore']);
  const audio = split ? ffmpeg([...rawAudio(0), ...aac, '-flush_packets', '1', '-f', 'flv', 'pipe:1'], ['pipe', 'pipe', 'inherit']) : null;
  const audioIn = split ? audio.stdin : video.stdio[3];
  const frame = Buffer.alloc(W * H);
  const painted = [];
  const start = Date.now();
  let n = 0;
  let running = true;
  const tick = () => {
    if (!running) return;
    const t = Date.now();
    paint(frame, t & ((1 << BITS) - 1));
    painted.push(t);
    video.stdin.write(frame);
    n++;
    setTimeout(tick, Math.max(0, start + (n * 1000) / FPS - Date.now()));
  };
  tick();
  // Audio as a capture device delivers it: every 10 ms, the samples captured since. Sample s is
  // at ffmpeg time s / RATE, as frame n is at n / FPS: a click at sample n * RATE / FPS is heard
  // with frame n when the two are in sync.
  let written = 0;
  const audioTick = () => {
    if (!running) return;
    const due = Math.floor(((Date.now() - start) * RATE) / 1000);
    if (due > written) {
      const buf = Buffer.alloc((due - written) * 2);
      for (let s = written; s < due; s++) {
        const frameIndex = Math.floor((s * FPS) / RATE);
        const at = s - Math.round((frameIndex * RATE) / FPS);
        if (frameIndex % CLICK_EVERY === 0 && at < CLICK_SAMPLES) {
          buf.writeInt16LE(Math.round(26000 * Math.sin((2 * Math.PI * 1000 * at) / RATE)), (s - written) * 2);
        }
      }
      audioIn.write(buf);
      written = due;
    }
    setTimeout(audioTick, 10);
  };
  if (withAudio) audioTick();
  return {
    ffmpeg: video, audio, painted,
    stop() {
      running = false;
      video.stdin.end();
      if (withAudio) audioIn.end();
      video.kill('SIGKILL');
      audio?.kill('SIGKILL');
    },
  };
}

/** For clicks at `times` (Date.now() ms): each one's latency from its frame's paint, and its
 *  offset from that frame's display (audio − video, ms). */
function clickOffsets(painted, shown, times) {
  const mask = (1 << BITS) - 1;
  const shownAt = new Map(shown.map(([code, at]) => [code, at]));
  const out = { offsets: [], audio: [] };
  const clickFrames = painted.map((t, n) => [n, t]).filter(([n]) => n % CLICK_EVERY === 0);
  for (const heard of times) {
    // The latest click painted before it was heard (clicks are 1 s apart, latency well under).
    const c = clickFrames.filter(([, t]) => t < heard).pop();
    if (!c) continue;
    out.audio.push(Math.round(heard - c[1]));
    const v = shownAt.get(c[1] & mask);
    if (v !== undefined) out.offsets.push(Math.round(heard - v));
  }
  return out;
}

async function latency(glint) {
  const pub = publish(['-f', 'flv', `${glint.rtmp}/live/test-key`]);
  const relayed = split ? await relay(pub, glint.rtmp) : null;
  const browser = await launchChromium();
  try {
    await waitFor(async () => (await (await fetch(`${glint.base}/api/live`)).json()).some((s) => s.live), 20000, 'RTMP stream live');
    const page = await browser.context.newPage();
    await page.goto(`${glint.base}/healthz`);
    if (viewer === 'hls') {
      // The master playlist appears once the ladder has measured the input (~0.5-2 s after live).
      await waitFor(async () => (await fetch(`${glint.base}/hls/demo/master.m3u8`)).ok, 30000, 'HLS master playlist');
      await page.addScriptTag({ path: createRequire(import.meta.url).resolve('hls.js/dist/hls.min.js') });
      await viewHls(page, { url: `${glint.base}/hls/demo/master.m3u8`, bits: BITS, config: {} }); // hls.js defaults
    } else {
      await viewWhep(page, { base: glint.base, bits: BITS, audio: withAudio });
    }
    await waitFor(() => page.evaluate(() => window.samples.length > 30), 60000, 'viewer decodes frames').catch(async (e) => {
      console.log(JSON.stringify(await page.evaluate(() => {
        const v = document.querySelector('video');
        const h = window.view;
        return { samples: window.samples.length, first: window.firstFrameMs, t: v.currentTime, ready: v.readyState, paused: v.paused,
          buffered: [...Array(v.buffered.length).keys()].map((i) => [v.buffered.start(i), v.buffered.end(i)]),
          levels: h.levels && h.levels.length, level: h.currentLevel, q: v.getVideoPlaybackQuality().totalVideoFrames };
      })));
      throw e;
    });
    await page.evaluate(() => { window.samples = []; window.shown = []; window.clicks = []; window.clickArrivals = []; });
    const before = viewer === 'hls' ? null : await receiverStats(page);
    await new Promise((r) => setTimeout(r, seconds * 1000)); // the measurement window
    const samples = await page.evaluate(() => window.samples);
    let sync = {};
    if (viewer !== 'hls') {
      const after = await receiverStats(page);
      sync = delaysBetween(before, after);
      if (after.audio && after.video) {
        // Chromium's own view (sender reports): how far apart the two tracks' playout is.
        sync.chromium_playout_gap_ms = Math.round(after.audio.estimatedPlayoutTimestamp - after.video.estimatedPlayoutTimestamp);
        const d = (k) => after.audio[k] - before.audio[k];
        // NetEq's time-stretching and concealment over the window (samples): clicks may be cut.
        sync.audio_stretch = { concealed: d('concealedSamples'), inserted: d('insertedSamplesForDeceleration'), removed: d('removedSamplesForAcceleration'), received: d('totalSamplesReceived') };
      }
    }
    if (withAudio && viewer !== 'hls') {
      const { shown, clicks, arrivals } = await page.evaluate(() => ({ shown: window.shown, clicks: window.clicks, arrivals: window.clickArrivals }));
      const range = (xs) => `${Math.min(...xs)}..${Math.max(...xs)}`;
      // Heard: when the click leaves Web Audio's output (its own path adds to the element's).
      const heard = clickOffsets(pub.painted, shown, clicks);
      // Played: the click frame's arrival + the audio's mean jitter-buffer and playout delays.
      const played = clickOffsets(pub.painted, shown, arrivals.map((t) => t + sync.audio_jitter_buffer_ms + sync.audio_playout_delay_ms));
      const arrived = clickOffsets(pub.painted, [], arrivals);
      Object.assign(sync, {
        clicks_heard: clicks.length, heard_audio_median_ms: pct(heard.audio, 50), heard_av_offset_median_ms: pct(heard.offsets, 50), heard_av_offset_range_ms: range(heard.offsets),
        clicks_arrived: arrived.audio.length, audio_arrival_median_ms: pct(arrived.audio, 50),
        played_audio_median_ms: pct(played.audio, 50), played_av_offset_median_ms: pct(played.offsets, 50), played_av_offset_range_ms: range(played.offsets),
      });
      if (args.verbose) console.log(JSON.stringify({ painted_clicks: pub.painted.filter((_, n) => n % CLICK_EVERY === 0), clicks, arrivals }));
    }
    const path = viewer === 'hls' ? 'rtmp→hls (hls.js defaults)' : 'rtmp→webrtc';
    // hls.js: how far behind the live playlist's end it plays (the rest is the playlist's own lag).
    const player = viewer === 'hls' ? await page.evaluate(() => ({ behind_live_edge_ms: Math.round(window.view.latency * 1000), target_ms: Math.round(window.view.targetLatency * 1000) })) : {};
    console.log(JSON.stringify({ path, source, audio: withAudio, publisher: split ? 'split' : 'ffmpeg', x264: X264[source].join(' '), samples: samples.length, median_ms: pct(samples, 50), p95_ms: pct(samples, 95), ...player, ...sync }));
  } finally {
    pub.stop();
    relayed?.destroy();
    await browser.close();
  }
}

/** FLV tags as ffmpeg writes them to `stream`, each with the time it came out:
 *  `{ type, ts, at, avcPacketType }` (type 8 audio, 9 video). */
function flvTags(stream, onTag = () => {}) {
  const tags = [];
  let buf = Buffer.alloc(0);
  let pos = 13; // FLV header (9) + PreviousTagSize0 (4)
  stream.on('data', (d) => {
    const at = Date.now();
    buf = Buffer.concat([buf, d]);
    while (buf.length >= pos + 11) {
      const size = buf.readUIntBE(pos + 1, 3);
      if (buf.length < pos + 11 + size + 4) break;
      const ts = buf.readUIntBE(pos + 4, 3) | (buf[pos + 7] << 24);
      tags.push({ type: buf[pos], ts, at, packetType: buf[pos + 12] });
      onTag(buf[pos], ts, buf.subarray(pos + 11, pos + 11 + size));
      pos += 11 + size + 4;
    }
    buf = buf.subarray(pos);
    pos = 0;
  });
  return tags;
}

/** AMF0 (command values): strings, numbers, null, objects. */
function amf0(values) {
  const parts = [];
  const str = (x) => { const b = Buffer.from(x); const h = Buffer.alloc(2); h.writeUInt16BE(b.length); return [h, b]; };
  for (const v of values) {
    if (v === null) parts.push(Buffer.from([5]));
    else if (typeof v === 'number') { const b = Buffer.alloc(9); b[0] = 0; b.writeDoubleBE(v, 1); parts.push(b); }
    else if (typeof v === 'string') parts.push(Buffer.from([2]), ...str(v));
    else {
      parts.push(Buffer.from([3]));
      for (const [k, x] of Object.entries(v)) parts.push(...str(k), amf0([x]));
      parts.push(Buffer.from([0, 0, 9]));
    }
  }
  return Buffer.concat(parts);
}

/** One RTMP message as chunks (RTMP spec §5.3.1): a type-0 header, then type-3 continuations. */
function chunks(csid, type, streamId, ts, payload, size) {
  const out = [];
  const ext = ts >= 0xffffff;
  const header = Buffer.alloc(12);
  header[0] = csid;
  header.writeUIntBE(ext ? 0xffffff : ts, 1, 3);
  header.writeUIntBE(payload.length, 4, 3);
  header[7] = type;
  header.writeUInt32LE(streamId, 8);
  const extTs = () => { const b = Buffer.alloc(4); b.writeUInt32BE(ts >>> 0); return b; };
  out.push(header);
  if (ext) out.push(extTs());
  for (let i = 0; i < payload.length; i += size) {
    if (i > 0) { out.push(Buffer.from([0xc0 | csid])); if (ext) out.push(extTs()); }
    out.push(payload.subarray(i, i + size));
  }
  return Buffer.concat(out);
}

/** The split publisher's RTMP side: publishes `test-key` to `url` as OBS does (the handshake's
 *  C0, C1, C2 at once, then connect … publish), then sends each FLV tag of the two ffmpegs as
 *  soon as it comes out. Returns the socket. */
async function relay(pub, url) {
  const { hostname, port } = new URL(url);
  const sock = connect({ host: hostname, port: Number(port) });
  sock.setNoDelay(true);
  sock.on('data', () => {}); // the server's replies: not needed
  sock.on('error', () => {});
  await new Promise((r) => sock.once('connect', r));
  const size = 4096;
  const size4 = Buffer.alloc(4); size4.writeUInt32BE(size);
  sock.write(Buffer.concat([Buffer.from([3]), Buffer.alloc(1536), Buffer.alloc(1536),
    chunks(2, 1, 0, 0, size4, 128),
    chunks(3, 20, 0, 0, amf0(['connect', 1, { app: 'live', type: 'nonprivate', tcUrl: `${url}/live` }]), size),
    chunks(3, 20, 0, 0, amf0(['createStream', 2, null]), size),
    chunks(4, 20, 1, 0, amf0(['publish', 3, null, 'test-key', 'live']), size)]));
  // ffmpeg's FLV moves every time 21 ms later when there is AAC (its first frame's priming
  // starts at -1024 samples): the video-only FLV is moved the same, as one ffmpeg would.
  const AAC_PRIMING_MS = 21;
  flvTags(pub.ffmpeg.stdout, (type, ts, body) => { if (type === 9) sock.write(chunks(6, 9, 1, ts + AAC_PRIMING_MS, body, size)); });
  flvTags(pub.audio.stdout, (type, ts, body) => { if (type === 8) sock.write(chunks(5, 8, 1, ts, body, size)); });
  return sock;
}

async function publisherOnly() {
  const pub = publish(['-flush_packets', '1', '-f', 'flv', 'pipe:1'], 'pipe');
  const tags = flvTags(pub.ffmpeg.stdout);
  const audioTags = split ? flvTags(pub.audio.stdout) : tags;
  await new Promise((r) => setTimeout(r, seconds * 1000));
  pub.stop();
  // Coded frames only (AVC/AAC packet type 1), after a 2 s warm-up. Split: the video's FLV
  // time moved as `relay` moves it.
  const video = tags.filter((t) => t.type === 9 && t.packetType === 1).map((t) => ({ ...t, ts: t.ts + (split ? 21 : 0) }));
  const audio = audioTags.filter((t) => t.type === 8 && t.packetType === 1);
  // ffmpeg's clock → wall clock: frame n (FLV time ts) was painted at painted[n].
  const shift = pct(video.map((v, n) => pub.painted[n] - v.ts), 50);
  const warm = (xs) => xs.filter((t) => t.ts + shift > pub.painted[0] + 2000);
  const late = (xs, end = 0) => warm(xs).map((t) => t.at - (t.ts + shift + end));
  const row = {
    source, audio: withAudio, publisher: split ? 'split' : 'ffmpeg', video_frames: video.length,
    // A video frame leaves ffmpeg this long after it was painted.
    video_median_ms: pct(late(video), 50), video_p95_ms: pct(late(video), 95),
  };
  if (withAudio) {
    const frameMs = (1024 * 1000) / RATE;
    Object.assign(row, {
      audio_frames: audio.length,
      // An AAC frame leaves ffmpeg this long after its first sample was captured ...
      audio_first_sample_median_ms: pct(late(audio), 50),
      // ... and after its last one (the part no encoder of 1024-sample frames can avoid).
      audio_last_sample_median_ms: pct(late(audio, frameMs), 50),
    });
  }
  console.log(JSON.stringify(row));
}

const cpuTicks = (pid) => { const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' '); return Number(f[11]) + Number(f[12]); };
const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK']).toString());

async function cpu(glint, streams) {
  const conditions = [
    { name: 'H.264 only', audio: false, bframes: false },
    { name: 'H.264 + AAC→Opus', audio: true, bframes: false },
    { name: 'H.264 with B-frames (re-encoded) + AAC→Opus', audio: true, bframes: true },
  ];
  const rows = [];
  for (const c of conditions) {
    const pubs = [];
    for (let i = 0; i < streams; i++) {
      pubs.push(spawn('ffmpeg', ['-hide_banner', '-loglevel', 'error', '-re',
        '-f', 'lavfi', '-i', `testsrc2=size=${W}x${H}:rate=${FPS}`,
        ...(c.audio ? ['-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=48000'] : []),
        '-t', String(seconds + 60), '-pix_fmt', 'yuv420p', '-c:v', 'libx264', ...x264(c.bframes), '-g', '60',
        ...(c.audio ? ['-c:a', 'aac', '-b:a', '128k'] : []),
        '-f', 'flv', `${glint.rtmp}/live/key${i}`], { stdio: 'ignore' }));
    }
    await waitFor(async () => (await (await fetch(`${glint.base}/api/live`)).json()).filter((s) => s.live).length === streams, 30000, `${streams} streams live`);
    await new Promise((r) => setTimeout(r, 5000)); // warm-up, then the measurement window
    const t0 = cpuTicks(glint.pid), w0 = Date.now();
    await new Promise((r) => setTimeout(r, seconds * 1000));
    const cpuPct = ((cpuTicks(glint.pid) - t0) / CLK_TCK) / ((Date.now() - w0) / 1000) * 100;
    const row = { condition: c.name, streams, glint_cpu_pct: Number(cpuPct.toFixed(1)), per_stream_pct: Number((cpuPct / streams).toFixed(1)) };
    console.log(JSON.stringify(row));
    rows.push(row);
    for (const p of pubs) p.kill('SIGTERM');
    await waitFor(async () => (await (await fetch(`${glint.base}/api/live`)).json()).length === 0, 30000, 'streams offline');
  }
  const [v, a, b] = rows;
  console.log(JSON.stringify({ aac_to_opus_per_stream_pct: Number(((a.glint_cpu_pct - v.glint_cpu_pct) / streams).toFixed(1)), reencode_per_stream_pct: Number(((b.glint_cpu_pct - a.glint_cpu_pct) / streams).toFixed(1)) }));
}

const streams = Number(args.streams ?? 4);
const keys = mode === 'cpu' ? Array.from({ length: streams }, (_, i) => `s${i}=key${i}`).join(',') : 'demo=test-key';
if (mode === 'publisher') {
  await publisherOnly();
  process.exit(0);
}
const glint = await startGlint({ GLINT_LOG: process.env.GLINT_LOG ?? 'warn,glint=info', GLINT_STREAM_KEYS: keys });
try {
  if (mode === 'cpu') await cpu(glint, streams);
  else await latency(glint);
} finally {
  await glint.stop();
}
