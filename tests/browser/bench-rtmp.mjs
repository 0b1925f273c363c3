// Benchmark (not a test) of RTMP ingest. Run inside a loopback-only netns (docs/benchmarks.md).
//
//   node bench-rtmp.mjs latency [--seconds 20] [--source zerolatency|bframes|obs]
//                               [--viewer webrtc|hls]
//     Glass-to-glass: this script paints Date.now() into raw 640x360 frames as the block code of
//     latency-probe.mjs, 30 per second, and pipes them to ffmpeg, which encodes them with x264
//     (see X264 below) and publishes over RTMP; a Chromium WHEP viewer reads the code of every
//     decoded frame (or an hls.js viewer of the stream's HLS master playlist, --viewer hls).
//     One machine, one clock.
//
//   node bench-rtmp.mjs cpu [--streams 4] [--seconds 20]
//     glint's CPU per RTMP stream (ffmpeg testsrc2 640x360 30 fps + 440 Hz sine): video only,
//     video + AAC (the AAC → Opus transcode), and H.264 with B-frames + AAC (the re-encode).
import { spawn, execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { startGlint, launchChromium, waitFor } from './lib.mjs';
import { viewWhep, viewHls, BITS, BLOCK, pct } from './latency-probe.mjs';

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

async function latency(glint) {
  const ffmpeg = spawn('ffmpeg', ['-hide_banner', '-loglevel', 'error',
    '-f', 'rawvideo', '-pix_fmt', 'gray', '-s', `${W}x${H}`, '-r', String(FPS), '-i', '-',
    '-pix_fmt', 'yuv420p', '-c:v', 'libx264', ...X264[source], '-g', '60',
    '-f', 'flv', `${glint.rtmp}/live/test-key`], { stdio: ['pipe', 'ignore', 'inherit'] });
  const frame = Buffer.alloc(W * H);
  const start = Date.now();
  let n = 0;
  let running = true;
  const tick = () => {
    if (!running) return;
    paint(frame, Date.now() & ((1 << BITS) - 1));
    ffmpeg.stdin.write(frame);
    n++;
    setTimeout(tick, Math.max(0, start + (n * 1000) / FPS - Date.now()));
  };
  tick();
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
      await viewWhep(page, { base: glint.base, bits: BITS });
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
    await page.evaluate(() => { window.samples = []; });
    await new Promise((r) => setTimeout(r, seconds * 1000)); // the measurement window
    const samples = await page.evaluate(() => window.samples);
    const path = viewer === 'hls' ? 'rtmp→hls (hls.js defaults)' : 'rtmp→webrtc';
    // hls.js: how far behind the live playlist's end it plays (the rest is the playlist's own lag).
    const player = viewer === 'hls' ? await page.evaluate(() => ({ behind_live_edge_ms: Math.round(window.view.latency * 1000), target_ms: Math.round(window.view.targetLatency * 1000) })) : {};
    console.log(JSON.stringify({ path, source, x264: X264[source].join(' '), samples: samples.length, median_ms: pct(samples, 50), p95_ms: pct(samples, 95), ...player }));
  } finally {
    running = false;
    ffmpeg.stdin.end();
    ffmpeg.kill('SIGKILL');
    await browser.close();
  }
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
const glint = await startGlint({ GLINT_LOG: process.env.GLINT_LOG ?? 'warn,glint=info', GLINT_STREAM_KEYS: keys });
try {
  if (mode === 'cpu') await cpu(glint, streams);
  else await latency(glint);
} finally {
  await glint.stop();
}
