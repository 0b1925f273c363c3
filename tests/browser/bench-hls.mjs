// Benchmark (not a test) of HLS glass-to-glass latency, with Debian's nginx + libnginx-mod-rtmp
// as the anchor in the same run. Run inside a loopback-only netns (docs/benchmarks.md):
//
//   ip netns add glint-bench && ip netns exec glint-bench ip link set lo up
//   GLINT_BIN=.../release/glint ip netns exec glint-bench node bench-hls.mjs [options]
//
// One ffmpeg encodes the barcode publisher's frames once (this script paints Date.now() into raw
// frames as the block code of latency-probe.mjs, 30 per second; x264, 2 s GOP, AAC of a sine) and
// publishes the same FLV to every server over RTMP (ffmpeg's tee muxer). Per server:
//   - a Chromium page with hls.js on its playlist (glint: /hls/demo/master.m3u8; nginx:
//     /hls/demo.m3u8) reads the code of every presented frame (requestVideoFrameCallback):
//     glass-to-glass median and p95, per rendition hls.js played; stalls ('waiting' events and
//     the time until 'playing', hls.js BUFFER_STALLED errors); hls.js's own `latency` estimate
//     (how far behind its idea of the live edge it plays) and `targetLatency`;
//   - a poller that fetches each media playlist every 100 ms; each segment (and LL-HLS part)
//     listed since the poller started is fetched at once (fMP4: with its #EXT-X-MAP init) and
//     the code of its last frame decoded with ffmpeg: its age when the playlist first listed it.
//
// Options:
//   --servers glint,nginx   which servers (default both)
//   --size 1280x720         publisher size (16:9; 640x360 gives glint's source rendition only)
//   --no-audio              no AAC track
//   --ll true|false         hls.js lowLatencyMode (default true; it is also hls.js's default)
//   --seconds 60            measurement window
//   --join 12               seconds after the publisher starts before the players load (0: as
//                           soon as every server's playlist exists, as bench-rtmp.mjs does)
//   --level NAME            glint only: play that rendition's media playlist (source, 480p,
//                           360p) instead of the master (no ABR)
//   --x264 zerolatency|obs  publisher's x264 settings (obs: veryfast, High, 2 B-frames)
//   --gop 60                keyframe interval in frames
//   --hls-config JSON       more hls.js config, merged over {lowLatencyMode}
//   --poll URL,...          only poll these playlists (master or media) for --seconds and
//                           print the segment and part ages: no servers, no publisher
//   --glint-url URL         an already running glint's RTMP publish URL and HLS master, as
//                           rtmp://host:port/live/KEY,http://host:port/hls/NAME/master.m3u8
//                           (instead of starting GLINT_BIN)
//   --part-ages             also decode every new LL-HLS part's last frame (its age when
//                           listed); CPU-heavy at 720p, so off by default
//   --compact               the JSON summary on one line
//
// Besides the figures, the summary has the machine's CPU over the window (busy, this script's
// process tree, other work) and the first and last 150 frames' medians: on 2 cores, 720p with
// AAC in two Chromium pages falls behind real time (latency grows with no stall), and then the
// figures are not the servers'. hls.js joins a one-segment playlist ~2 s behind its edge and
// stays there (see --join): the default joins a full one, as a viewer of a running stream does.
import { appendFileSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { mkdtempSync, writeFileSync, rmSync, readFileSync, readdirSync } from 'node:fs';
import { tmpdir, loadavg } from 'node:os';
import { join } from 'node:path';
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import { startGlint, launchChromium, waitFor, withTimeout } from './lib.mjs';
import { viewHls, paintCode, readCodeGray, codeAge, BITS, pct } from './latency-probe.mjs';

const args = Object.fromEntries(process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith('--') ? [...acc, [a.slice(2), all[i + 1] && !all[i + 1].startsWith('--') ? all[i + 1] : true]] : acc), []));
const servers = String(args.servers ?? 'glint,nginx').split(',');
const [W, H] = String(args.size ?? '1280x720').split('x').map(Number);
const FPS = 30;
const withAudio = !args['no-audio'];
const lowLatencyMode = String(args.ll ?? 'true') !== 'false';
const seconds = Number(args.seconds ?? 60);
// Decoding every new part's frames (from its independent part on) costs a 720p decode several
// times a second per rendition: off unless asked, so the players' figures stay the servers'.
const partAges = Boolean(args['part-ages']);
const joinAfter = Number(args.join ?? 12);
const gop = Number(args.gop ?? 60);
const x264Name = args.x264 ?? 'zerolatency';
const X264 = {
  zerolatency: ['-preset', 'ultrafast', '-tune', 'zerolatency', '-profile:v', 'baseline', '-bf', '0'],
  obs: ['-preset', 'veryfast', '-profile:v', 'high', '-bf', '2'], // OBS's x264 defaults
};
const hlsConfig = { lowLatencyMode, ...(args['hls-config'] ? JSON.parse(args['hls-config']) : {}) };
const RATE = 48000;
const STREAM = 'demo';

/** A free TCP port on 127.0.0.1 (bound to port 0, then released). */
async function freePort() {
  const srv = createServer();
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address();
  await new Promise((r) => srv.close(r));
  return port;
}

/** nginx with libnginx-mod-rtmp in a temp dir of its own (pid, logs, temp paths; not the
 *  system service): RTMP ingest `live`, HLS written to <dir>/hls and served over HTTP. */
async function startNginx() {
  const dir = mkdtempSync(join(tmpdir(), 'glint-bench-nginx-'));
  const rtmpPort = await freePort(), httpPort = await freePort();
  const conf = `load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;
daemon off;
master_process off;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 256; }
rtmp {
  server {
    listen 127.0.0.1:${rtmpPort};
    application live { live on; hls on; hls_path ${dir}/hls; hls_fragment 2s; hls_playlist_length 6s; }
  }
}
http {
  access_log off;
  client_body_temp_path ${dir}/body; proxy_temp_path ${dir}/proxy; fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi; scgi_temp_path ${dir}/scgi;
  types { application/vnd.apple.mpegurl m3u8; video/mp2t ts; video/mp4 mp4 m4s; text/html html; }
  server {
    listen 127.0.0.1:${httpPort};
    root ${dir};
    location /hls/ { add_header Access-Control-Allow-Origin * always; add_header Cache-Control no-cache always; }
  }
}
`;
  writeFileSync(join(dir, 'nginx.conf'), conf);
  writeFileSync(join(dir, 'index.html'), '<!doctype html><title>bench</title>');
  const proc = spawn('nginx', ['-p', dir, '-c', join(dir, 'nginx.conf'), '-e', join(dir, 'error.log')], { stdio: ['ignore', 'inherit', 'inherit'] });
  const base = `http://127.0.0.1:${httpPort}`;
  await waitFor(async () => (await fetch(`${base}/index.html`).catch(() => null))?.ok, 10000, 'nginx serves HTTP');
  return {
    base, rtmp: `rtmp://127.0.0.1:${rtmpPort}`, page: `${base}/index.html`,
    async stop() {
      const exited = new Promise((r) => proc.on('exit', r));
      proc.kill('SIGQUIT');
      await withTimeout(exited, 10000, 'nginx did not stop').catch(() => proc.kill('SIGKILL'));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** The publisher: raw frames (and raw audio on fd 3, every 10 ms what was "captured" since: a
 *  quiet 440 Hz sine) into one ffmpeg, which encodes once and sends FLV to every URL. */
function publish(urls) {
  const rawVideo = ['-f', 'rawvideo', '-pix_fmt', 'gray', '-s', `${W}x${H}`, '-r', String(FPS), '-i', 'pipe:0'];
  const rawAudio = ['-f', 's16le', '-ar', String(RATE), '-ac', '1', '-i', 'pipe:3'];
  const enc = ['-pix_fmt', 'yuv420p', '-c:v', 'libx264', ...X264[x264Name], '-g', String(gop)];
  const aac = ['-c:a', 'aac', '-b:a', '160k', '-ac', '2'];
  const maps = ['-map', '0:v', ...(withAudio ? ['-map', '1:a'] : [])];
  // The tee muxer has no global-header flag of its own: FLV needs the SPS/PPS out of band.
  const out = ['-flags', '+global_header', '-f', 'tee', urls.map((u) => `[f=flv:onfail=ignore]${u}`).join('|')];
  const ffmpeg = spawn('ffmpeg', ['-hide_banner', '-loglevel', 'error', ...rawVideo, ...(withAudio ? rawAudio : []), ...maps, ...enc, ...(withAudio ? aac : []), ...out],
    { stdio: ['pipe', 'ignore', 'inherit', withAudio ? 'pipe' : 'ignore'] });
  ffmpeg.stdin.on('error', () => {});
  const frame = Buffer.alloc(W * H);
  const start = Date.now();
  let n = 0, written = 0, running = true;
  const tick = () => {
    if (!running) return;
    paintCode(frame, W, H, Date.now() & ((1 << BITS) - 1));
    ffmpeg.stdin.write(frame);
    n++;
    setTimeout(tick, Math.max(0, start + (n * 1000) / FPS - Date.now()));
  };
  const audioTick = () => {
    if (!running) return;
    const due = Math.floor(((Date.now() - start) * RATE) / 1000);
    if (due > written) {
      const buf = Buffer.alloc((due - written) * 2);
      for (let s = written; s < due; s++) buf.writeInt16LE(Math.round(3000 * Math.sin((2 * Math.PI * 440 * s) / RATE)), (s - written) * 2);
      ffmpeg.stdio[3].write(buf);
      written = due;
    }
    setTimeout(audioTick, 10);
  };
  if (withAudio) ffmpeg.stdio[3].on('error', () => {});
  tick();
  if (withAudio) audioTick();
  return {
    start,
    stop() {
      running = false;
      ffmpeg.stdin.end();
      ffmpeg.kill('SIGKILL');
    },
  };
}

// --- Playlist poller ---------------------------------------------------------------------

const attr = (line, name) => {
  const m = line.match(new RegExp(`(?:^|[:,])${name}=("([^"]*)"|[^,]*)`));
  return m ? (m[2] ?? m[1]) : undefined;
};

/** A media playlist (RFC 8216bis), TS or fMP4, with LL-HLS parts: segments by media sequence
 *  number, each with its init section (#EXT-X-MAP in force), duration and URI; parts as listed
 *  (those after the last segment belong to the segment being written). */
export function parseMediaPlaylist(text, url) {
  const abs = (u) => new URL(u, url).href;
  let msn = 0, map = null, dur = null, partsOf = [];
  const out = { targetDuration: null, segments: [], parts: [], partTarget: null };
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line) continue;
    if (line.startsWith('#EXT-X-MEDIA-SEQUENCE:')) msn = Number(line.split(':')[1]);
    else if (line.startsWith('#EXT-X-TARGETDURATION:')) out.targetDuration = Number(line.split(':')[1]);
    else if (line.startsWith('#EXT-X-PART-INF:')) out.partTarget = Number(attr(line, 'PART-TARGET'));
    else if (line.startsWith('#EXT-X-MAP:')) map = abs(attr(line, 'URI'));
    else if (line.startsWith('#EXTINF:')) dur = parseFloat(line.slice(8));
    else if (line.startsWith('#EXT-X-PART:')) {
      const p = { msn, uri: abs(attr(line, 'URI')), duration: Number(attr(line, 'DURATION')), independent: attr(line, 'INDEPENDENT') === 'YES', map };
      partsOf.push(p);
      out.parts.push(p);
    } else if (!line.startsWith('#')) {
      out.segments.push({ msn, uri: abs(line), duration: dur, map, parts: partsOf });
      msn++;
      dur = null;
      partsOf = [];
    }
  }
  return out;
}

/** ffmpeg decodes `bytes` (a TS segment, or an fMP4 init + fragments) and this reads the code
 *  of its last video frame. One decode at a time: the machine is busy enough. */
export let decoding = Promise.resolve();
let scratch = null;
let scratchN = 0;
export function lastFrameCode(bytes) {
  const run = decoding.then(() => new Promise((resolve) => {
    scratch ??= mkdtempSync(join(tmpdir(), 'glint-bench-seg-'));
    const file = join(scratch, `s${scratchN++}`);
    writeFileSync(file, bytes);
    const ff = spawn('ffmpeg', ['-hide_banner', '-loglevel', 'error', '-threads', '1', '-i', file, '-an', '-vf', 'crop=iw*3/4:ih*2/9:0:0,scale=480:80,format=gray', '-f', 'rawvideo', 'pipe:1'], { stdio: ['ignore', 'pipe', 'ignore'] });
    const chunks = [];
    ff.stdout.on('data', (d) => chunks.push(d));
    ff.on('exit', () => {
      rmSync(file, { force: true });
      const all = Buffer.concat(chunks);
      const size = 480 * 80;
      resolve(all.length >= size ? { code: readCodeGray(all.subarray(all.length - size)), frames: Math.floor(all.length / size) } : null);
    });
  }));
  decoding = run.catch(() => {});
  return run;
}

/** Polls media playlist `url` every 100 ms; records for each segment and part listed after the
 *  first poll how old its last frame was when first listed (and when fetched). */
export function pollPlaylist(url, deadline) {
  const seen = new Set();
  const inits = new Map(); // init URI -> bytes
  const partBytes = new Map(); // part URI -> bytes (a dependent part decodes after its segment's earlier parts)
  const rec = { url, segments: [], parts: [], targetDuration: null, partTarget: null, listed: [], errors: 0 };
  let first = true;
  const get = async (u) => { const r = await fetch(u); if (!r.ok) throw new Error(`${u}: ${r.status}`); return Buffer.from(await r.arrayBuffer()); };
  const init = async (map) => {
    if (!map) return Buffer.alloc(0);
    if (!inits.has(map)) inits.set(map, await get(map));
    return inits.get(map);
  };
  const measure = async (kind, item, listedAt, bytesOf) => {
    try {
      const bytes = await bytesOf();
      const fetchedAt = Date.now();
      const got = await lastFrameCode(bytes);
      if (!got) { rec.errors++; return; }
      rec[kind].push({ msn: item.msn, duration: item.duration, frames: got.frames, listed_age_ms: codeAge(listedAt, got.code), fetched_age_ms: codeAge(fetchedAt, got.code) });
    } catch { rec.errors++; }
  };
  const loop = (async () => {
    while (Date.now() < deadline) {
      const next = Date.now() + 100;
      try {
        const r = await fetch(url);
        const listedAt = Date.now();
        if (r.ok) {
          const pl = parseMediaPlaylist(await r.text(), url);
          rec.targetDuration = pl.targetDuration;
          rec.partTarget = pl.partTarget;
          rec.listed.push(pl.segments.length);
          for (const p of partAges ? pl.parts : []) {
            if (seen.has(p.uri)) continue;
            seen.add(p.uri);
            if (first) continue;
            // A dependent part decodes only after the parts before it, back to an independent one.
            const chain = [];
            for (let i = pl.parts.indexOf(p); i >= 0 && pl.parts[i].msn === p.msn; i--) { chain.unshift(pl.parts[i]); if (pl.parts[i].independent) break; }
            measure('parts', p, listedAt, async () => {
              const bufs = [await init(p.map)];
              for (const c of chain) { if (!partBytes.has(c.uri)) partBytes.set(c.uri, await get(c.uri)); bufs.push(partBytes.get(c.uri)); }
              return Buffer.concat(bufs);
            });
          }
          for (const s of pl.segments) {
            const key = `seg:${s.msn}:${s.uri}`;
            if (seen.has(key)) continue;
            seen.add(key);
            if (first) continue;
            measure('segments', s, listedAt, async () => Buffer.concat([await init(s.map), await get(s.uri)]));
          }
          first = false;
        }
      } catch { rec.errors++; }
      await new Promise((res) => setTimeout(res, Math.max(0, next - Date.now())));
    }
  })();
  return { rec, done: loop };
}

/** The media playlists of `url`: its variants when it is a master playlist, else itself. */
export async function mediaPlaylists(url) {
  const text = await (await fetch(url)).text();
  if (!text.includes('#EXT-X-STREAM-INF')) return [url];
  const lines = text.split('\n').map((l) => l.trim());
  return lines.flatMap((l, i) => (l.startsWith('#EXT-X-STREAM-INF') ? [new URL(lines[i + 1], url).href] : []));
}

// --- Viewer --------------------------------------------------------------------------------

/** After `viewHls`: counts stalls and level switches, samples hls.js's latency estimate. */
const TRACK = () => {
  const v = document.querySelector('video');
  const h = window.view;
  const s = { waiting: 0, rebufferMs: 0, waitStart: null, stalledErrors: 0, levelAt: [], lat: [], levelsSeen: [] };
  window.track = s;
  v.addEventListener('waiting', () => { s.waiting++; if (s.waitStart === null) s.waitStart = performance.now(); });
  v.addEventListener('playing', () => { if (s.waitStart !== null) { s.rebufferMs += performance.now() - s.waitStart; s.waitStart = null; } });
  h.on(window.Hls.Events.ERROR, (_, d) => { if (d.details === 'bufferStalledError') s.stalledErrors++; });
  h.on(window.Hls.Events.LEVEL_SWITCHED, (_, d) => s.levelAt.push([window.samples.length, d.level]));
  setInterval(() => {
    if (!Number.isFinite(h.latency)) return;
    const b = v.buffered.length ? v.buffered.end(v.buffered.length - 1) - v.currentTime : 0;
    s.lat.push([h.latency, h.targetLatency, h.currentLevel, v.playbackRate, b]);
  }, 1000);
  window.resetTrack = () => {
    window.samples = [];
    Object.assign(s, { waiting: 0, rebufferMs: 0, stalledErrors: 0, lat: [], levelAt: [[0, h.currentLevel]] });
    if (s.waitStart !== null) s.waitStart = performance.now();
  };
  window.readTrack = () => {
    if (s.waitStart !== null) { s.rebufferMs += performance.now() - s.waitStart; s.waitStart = performance.now(); }
    return {
      samples: window.samples, waiting: s.waiting, rebufferMs: Math.round(s.rebufferMs), stalledErrors: s.stalledErrors, levelAt: s.levelAt, lat: s.lat,
      levels: h.levels.map((l) => ({ height: l.height, bitrate: l.bitrate, url: l.url[0] })), visibility: document.visibilityState,
      dropped: v.getVideoPlaybackQuality().droppedVideoFrames, total: v.getVideoPlaybackQuality().totalVideoFrames,
    };
  };
};

/** The viewer's figures: glass-to-glass over the window, per rendition played, stalls, and the
 *  medians of hls.js's estimates. */
function summarizeViewer(t) {
  const name = (i) => { const l = t.levels[i]; if (!l) return String(i); const m = l.url.match(/\/([^/]+)\/index\.m3u8/); return m ? m[1] : `${l.height}p`; };
  const perLevel = {};
  t.levelAt.forEach(([from, level], k) => {
    const to = k + 1 < t.levelAt.length ? t.levelAt[k + 1][0] : t.samples.length;
    (perLevel[name(level)] ??= []).push(...t.samples.slice(from, to));
  });
  const med = (xs) => (xs.length ? Math.round(pct(xs, 50)) : null);
  return {
    frames: t.samples.length, median_ms: med(t.samples), p95_ms: t.samples.length ? pct(t.samples, 95) : null,
    min_ms: t.samples.length ? Math.min(...t.samples) : null, max_ms: t.samples.length ? Math.max(...t.samples) : null,
    // A player that falls behind (a starved CPU presents frames late) drifts without stalling.
    first_150_frames_median_ms: med(t.samples.slice(0, 150)), last_150_frames_median_ms: med(t.samples.slice(-150)),
    waiting_events: t.waiting, rebuffer_ms: t.rebufferMs, hls_stalled_errors: t.stalledErrors,
    hls_latency_median_ms: med(t.lat.map((x) => x[0] * 1000)), hls_target_latency_ms: med(t.lat.map((x) => x[1] * 1000)),
    buffer_ahead_median_ms: med(t.lat.map((x) => x[4] * 1000)),
    levels_played: Object.fromEntries(Object.entries(perLevel).filter(([, xs]) => xs.length).map(([k, xs]) => [k, { frames: xs.length, median_ms: med(xs) }])),
    level_switches: t.levelAt.length - 1, dropped_frames: t.dropped, visibility: t.visibility,
  };
}

function summarizePoll(rec) {
  const stat = (xs, k) => (xs.length ? { n: xs.length, median_ms: Math.round(pct(xs.map((x) => x[k]), 50)), min_ms: Math.min(...xs.map((x) => x[k])), max_ms: Math.max(...xs.map((x) => x[k])) } : null);
  const name = rec.url.match(/\/([^/]+)\/index\.m3u8/)?.[1] ?? rec.url.split('/').pop();
  return [name, {
    target_duration: rec.targetDuration, segments_listed_median: rec.listed.length ? pct(rec.listed, 50) : null,
    segment_duration_median_s: rec.segments.length ? pct(rec.segments.map((s) => s.duration), 50) : null,
    newest_segment_last_frame_age_listed: stat(rec.segments, 'listed_age_ms'),
    newest_segment_last_frame_age_fetched: stat(rec.segments, 'fetched_age_ms'),
    ...(rec.parts.length ? { part_target: rec.partTarget, part_last_frame_age_listed: stat(rec.parts, 'listed_age_ms') } : {}),
    errors: rec.errors,
  }];
}

/** The machine's CPU ticks (busy and all), and those of this process and its descendants
 *  (glint, nginx, ffmpeg, Chromium; reaped children count in their parent's): the rest is other
 *  work on the machine, which moves the figures. */
function cpuBusy() {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].split(/\s+/).slice(1).map(Number);
  const procs = new Map();
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const st = readFileSync(`/proc/${d}/stat`, 'utf8').split(') ')[1].split(' ');
      procs.set(Number(d), { ppid: Number(st[1]), ticks: Number(st[11]) + Number(st[12]) + Number(st[13]) + Number(st[14]) });
    } catch { /* exited meanwhile */ }
  }
  const ours = (pid) => { for (let p = pid, n = 0; p > 1 && n < 64; p = procs.get(p)?.ppid, n++) if (p === process.pid) return true; return false; };
  let mine = 0;
  for (const [pid, p] of procs) if (ours(pid)) mine += p.ticks;
  return { idle: f[3] + f[4], total: f.reduce((a, b) => a + b, 0), mine };
}
const cpuShares = (a, b) => {
  const total = b.total - a.total;
  const busy = 1 - (b.idle - a.idle) / total;
  const mine = (b.mine - a.mine) / total;
  return { cpu_busy_pct: Math.round(busy * 100), bench_cpu_pct: Math.round(mine * 100), other_cpu_pct: Math.round((busy - mine) * 100) };
};

// --- The run -------------------------------------------------------------------------------

/** `--poll URL,...`: only the pollers, on playlists served by anything (a glint started by
 *  hand, a CDN), for `--seconds`. */
async function pollOnly(urls) {
  const deadline = Date.now() + seconds * 1000;
  const ps = [];
  for (const u of urls) for (const m of await mediaPlaylists(u)) ps.push(pollPlaylist(m, deadline));
  await Promise.all(ps.map((p) => p.done));
  await decoding;
  console.log(JSON.stringify(Object.fromEntries(ps.map((p) => summarizePoll(p.rec))), null, args.compact ? 0 : 1));
}

async function run() {
  const targets = [];
  let glint = null, nginx = null;
  if (servers.includes('glint')) {
    if (args['glint-url']) {
      const [rtmp, master] = String(args['glint-url']).split(',');
      targets.push({ name: 'glint', publish: rtmp, playlist: master, page: new URL('/healthz', master).href });
    } else {
      glint = await startGlint({ GLINT_LOG: process.env.GLINT_LOG ?? 'warn,glint=info', GLINT_STREAM_KEYS: `${STREAM}=test-key` });
      const playlist = args.level ? `${glint.base}/hls/${STREAM}/${args.level}/index.m3u8` : `${glint.base}/hls/${STREAM}/master.m3u8`;
      targets.push({ name: 'glint', publish: `${glint.rtmp}/live/test-key`, playlist, master: `${glint.base}/hls/${STREAM}/master.m3u8`, page: `${glint.base}/healthz` });
    }
  }
  if (servers.includes('nginx')) {
    nginx = await startNginx();
    targets.push({ name: 'nginx', publish: `${nginx.rtmp}/live/${STREAM}`, playlist: `${nginx.base}/hls/${STREAM}.m3u8`, page: nginx.page });
  }
  const pub = publish(targets.map((t) => t.publish));
  const browser = await launchChromium();
  const pollers = [];
  try {
    // Every server's playlist exists (glint's master once the ladder has measured the input).
    for (const t of targets) await waitFor(async () => (await fetch(t.master ?? t.playlist).catch(() => null))?.ok, 40000, `${t.name} playlist`);
    const joinAt = pub.start + joinAfter * 1000;
    while (Date.now() < joinAt) await new Promise((r) => setTimeout(r, Math.min(200, joinAt - Date.now())));
    const joinedS = ((Date.now() - pub.start) / 1000).toFixed(1);
    const hlsJs = createRequire(import.meta.url).resolve('hls.js/dist/hls.min.js');
    for (const t of targets) {
      t.view = await browser.context.newPage();
      // --console FILE: the players' console (hls.js with --hls-config '{"debug":true}').
      if (args.console) t.view.on('console', (m) => appendFileSync(String(args.console), `${t.name} ${m.text()}\n`));
      await t.view.goto(t.page);
      await t.view.addScriptTag({ path: hlsJs });
      await viewHls(t.view, { url: t.playlist, bits: BITS, config: hlsConfig });
      await waitFor(() => t.view.evaluate(() => window.view.levels && window.view.levels.length > 0), 20000, `${t.name}: hls.js levels`);
      await t.view.evaluate(TRACK);
    }
    // Warm-up: every viewer presents frames, then 5 s more before the window.
    for (const t of targets) await waitFor(() => t.view.evaluate(() => window.samples.length > 30), 60000, `${t.name}: frames presented`);
    await new Promise((r) => setTimeout(r, 5000));
    const deadline = Date.now() + seconds * 1000;
    for (const t of targets) {
      for (const u of await mediaPlaylists(t.master ?? t.playlist)) pollers.push({ server: t.name, ...pollPlaylist(u, deadline) });
      await t.view.evaluate(() => window.resetTrack());
    }
    const cpu0 = cpuBusy();
    while (Date.now() < deadline) await new Promise((r) => setTimeout(r, Math.min(1000, deadline - Date.now())));
    const cpu1 = cpuBusy();
    await Promise.all(pollers.map((p) => p.done));
    await decoding;
    const summary = {
      run: new Date().toISOString(), size: `${W}x${H}`, audio: withAudio, x264: x264Name, gop, hls_config: hlsConfig, seconds,
      joined_after_s: Number(joinedS), level: args.level ?? 'master (ABR)',
      ...cpuShares(cpu0, cpu1), load1: loadavg()[0].toFixed(2),
      servers: {},
    };
    for (const t of targets) {
      summary.servers[t.name] = {
        player: summarizeViewer(await t.view.evaluate(() => window.readTrack())),
        playlists: Object.fromEntries(pollers.filter((p) => p.server === t.name).map((p) => summarizePoll(p.rec))),
      };
    }
    console.log(JSON.stringify(summary, null, args.compact ? 0 : 1));
  } finally {
    pub.stop();
    await browser.close();
    await glint?.stop();
    await nginx?.stop();
    if (scratch) rmSync(scratch, { recursive: true, force: true });
  }
}

// Imported (a test of the playlist code), nothing runs.
if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  if (args.poll) {
    try { await pollOnly(String(args.poll).split(',')); } finally { if (scratch) rmSync(scratch, { recursive: true, force: true }); }
  } else await run();
}
