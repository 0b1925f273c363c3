// Benchmark (not a test): glass-to-glass latency and time to first frame,
// Chromium → WHIP → glint → WHEP → Chromium on loopback.
//
// The publisher page paints Date.now() into a canvas as a 24-bit block code and publishes the
// canvas over WHIP; each viewer page draws every decoded frame (requestVideoFrameCallback) back
// into a canvas, reads the code, and records Date.now() - painted. Pages share one browser, so
// one clock. Usage (inside a loopback-only netns, see docs/benchmarks.md):
//   node bench-latency.mjs [--viewers 1,10] [--seconds 20] [--settle 0] [--source canvas|camera]
import { spawn } from 'node:child_process';
import { startGlint, launchChromium, waitFor } from './lib.mjs';
import { viewWhep, BITS, pct } from './latency-probe.mjs';

const args = Object.fromEntries(process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith('--') ? [...acc, [a.slice(2), all[i + 1]]] : acc), []));
const viewerCounts = (args.viewers ?? '1,10').split(',').map(Number);
const seconds = Number(args.seconds ?? 20);
const codec = args.codec ?? 'VP8';
// Seconds between the viewers' first frames and the measurement window: glass-to-glass "2 s
// after joining" is `--settle 2 --seconds 2`.
const settle = Number(args.settle ?? 0);
// Joins per viewer count (a viewer's wait for a keyframe depends on where in the GOP it joins).
const rounds = Number(args.rounds ?? 1);
// canvas (WHIP, the painted block code), camera (WHIP, Chromium's fake camera) or rtmp (ffmpeg:
// testsrc2 720p30, x264 zerolatency, 2 s GOP, AAC; time to first frame only, no block code).
const source = args.source ?? 'canvas';

const PUBLISH = async ({ base, bits, codec, source }) => {
  const W = 640, H = 360, B = 40; // 24 blocks of 40x40 in two rows of 12 (a 480x80 band)
  const canvas = document.createElement('canvas');
  canvas.width = W; canvas.height = H;
  document.body.append(canvas);
  const ctx = canvas.getContext('2d');
  const paint = () => {
    const t = Date.now() & ((1 << bits) - 1);
    ctx.fillStyle = '#336'; ctx.fillRect(0, 0, W, H);
    ctx.fillStyle = '#888'; ctx.fillRect(0, 200, W, 10 + (t % 100)); // some motion
    for (let i = 0; i < bits; i++) {
      ctx.fillStyle = (t >> i) & 1 ? '#fff' : '#000';
      ctx.fillRect((i % 12) * B, Math.floor(i / 12) * B, B, B);
    }
    requestAnimationFrame(paint);
  };
  paint();
  const stream = source === 'camera' ? await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 360 } }) : canvas.captureStream(30);
  const pc = new RTCPeerConnection();
  const tr = pc.addTransceiver(stream.getVideoTracks()[0], { direction: 'sendonly' });
  const caps = RTCRtpSender.getCapabilities('video').codecs.filter((c) => c.mimeType === 'video/' + codec);
  if (caps.length) tr.setCodecPreferences(caps);
  const offer = await pc.createOffer();
  await pc.setLocalDescription(offer);
  const r = await fetch(base + '/whip/demo', { method: 'POST', headers: { 'Content-Type': 'application/sdp', Authorization: 'Bearer test-key' }, body: offer.sdp });
  if (r.status !== 201) throw new Error('whip ' + r.status);
  await pc.setRemoteDescription({ type: 'answer', sdp: await r.text() });
  window.pub = pc;
};

const glint = globalThis.glint = await startGlint({ GLINT_LOG: process.env.GLINT_LOG ?? 'warn,glint=info' });
const browser = await launchChromium();
const results = [];
try {
  const pub = await browser.context.newPage();
  await pub.goto(`${glint.base}/healthz`);
  if (source === 'rtmp') {
    const ffmpeg = spawn('ffmpeg', ['-hide_banner', '-loglevel', 'error', '-re', '-f', 'lavfi', '-i', 'testsrc2=size=1280x720:rate=30',
      '-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=48000', '-c:v', 'libx264', '-preset', 'ultrafast', '-tune', 'zerolatency',
      '-profile:v', 'baseline', '-g', '60', '-b:v', '2500k', '-c:a', 'aac', '-b:a', '128k', '-f', 'flv', `${glint.rtmp}/live/test-key`], { stdio: 'ignore' });
    globalThis.ffmpeg = ffmpeg;
    await waitFor(async () => (await (await fetch(`${glint.base}/api/live`)).json()).some((s) => s.live), 20000, 'RTMP stream live');
    await new Promise((r) => setTimeout(r, 3000)); // a few GOPs on air before viewers join
  } else {
    await pub.evaluate(PUBLISH, { base: glint.base, bits: BITS, codec, source });
    await waitFor(() => pub.evaluate(() => window.pub.connectionState === 'connected'), 20000, 'publisher connected');
    // Time to first frame is about joining a stream that is already live: let the publisher's
    // encoder ramp up (its first second runs at a low frame rate) before viewers join.
    const framesEncoded = () => pub.evaluate(async () => { let n = 0; (await window.pub.getStats()).forEach((r) => { if (r.type === 'outbound-rtp') n = r.framesEncoded; }); return n; });
    await waitFor(async () => (await framesEncoded()) > 90, 30000, 'publisher warmed up');
  }
  for (const n of viewerCounts.flatMap((n) => Array(rounds).fill(n))) {
    // Repeated joins land anywhere in the publisher's GOP.
    if (rounds > 1) await new Promise((r) => setTimeout(r, Math.random() * 2000));
    const pages = [];
    for (let i = 0; i < n; i++) {
      const p = await browser.context.newPage();
      await p.goto(`${glint.base}/healthz`);
      await viewWhep(p, { base: glint.base, bits: BITS });
      pages.push(p);
    }
    await waitFor(async () => (await Promise.all(pages.map((p) => p.evaluate(() => window.firstFrameMs)))).every((x) => x !== null), 30000, 'all viewers show a frame');
    const ttff = await Promise.all(pages.map((p) => p.evaluate(() => window.firstFrameMs)));
    const phases = await Promise.all(pages.map((p) => p.evaluate(() => ({ answer: Math.round(window.answerMs), connected: Math.round(window.connectedMs), first_frame: Math.round(window.firstFrameMs) }))));
    const pubStats = source === 'rtmp' ? [] : await pub.evaluate(async () => { const o = []; (await window.pub.getStats()).forEach((r) => { if (r.type === 'outbound-rtp') o.push({ pli: r.pliCount, fir: r.firCount, keyFramesEncoded: r.keyFramesEncoded, frames: r.framesEncoded, target: r.targetBitrate, bytes: r.bytesSent }); if (r.type === 'candidate-pair' && r.nominated) o.push({ avail: r.availableOutgoingBitrate }); }); return o; });
    if (args.verbose) console.log(JSON.stringify(pubStats));
    if (args.verbose) console.log(JSON.stringify(phases), (await (await fetch(glint.base + '/metrics')).text()).split('\n').filter((l) => /pli|keyframe/.test(l) && !l.startsWith('#')).join(' '));
    if (settle > 0) await new Promise((r) => setTimeout(r, settle * 1000));
    for (const p of pages) await p.evaluate(() => { window.samples = []; });
    await new Promise((r) => setTimeout(r, seconds * 1000)); // the measurement window itself
    const samples = (await Promise.all(pages.map((p) => p.evaluate(() => window.samples)))).flat();
    const row = { viewers: n, source, codec: source === 'rtmp' ? 'H264' : codec, samples: samples.length, median_ms: pct(samples, 50), p95_ms: pct(samples, 95), ttff_median_ms: Math.round(pct(ttff, 50)), ttff_max_ms: Math.round(Math.max(...ttff)) };
    console.log(JSON.stringify(row));
    results.push(row);
    for (const p of pages) { await p.evaluate(() => window.view.close()); await p.close(); }
  }
} finally {
  globalThis.ffmpeg?.kill('SIGKILL');
  if (args.verbose) console.log(glint.logs().split('\n').filter((l) => /PLI|keyframe|connected/.test(l)).join('\n'));
  await browser.close();
  await glint.stop();
}
