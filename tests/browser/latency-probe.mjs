// The viewer side of the latency benchmarks: a WHEP or hls.js viewer that reads the 24-bit block
// code painted into each frame (Date.now() at paint time) and records Date.now() - code at every
// decoded frame (requestVideoFrameCallback). Publishers paint the code as 40x40 blocks, two rows
// of 12 from the top-left corner of a 640x360 frame.
//
// With `audio: true` the WHEP viewer also receives and plays the stream's audio, in the same
// MediaStream as the video (so Chromium plays them in sync), and an AudioWorklet records when
// each click (|sample| > 0.1 after 0.5 s of quiet) comes out, as Date.now() time; with the frames'
// display times (`window.shown`) that gives the audio/video offset a viewer hears and sees. It
// also decodes each Opus frame as it arrives (an RTCRtpScriptTransform and WebCodecs in a worker)
// and records in `window.clickArrivals` when the frame of each click arrived.

export const BITS = 24;
export const BLOCK = 40;

/** Defines `window.probe(video, started)`: records Date.now() - code for each decoded frame of
 *  `video` into `window.samples` (latencies up to `maxMs`), and the first frame's time. */
const PROBE = ({ bits, maxMs }) => {
  const B = 40;
  window.samples = [];
  /** [code, Date.now()] of every decoded frame, to match a frame with an audio click. */
  window.shown = [];
  window.firstFrameMs = null;
  window.probe = (video, started) => {
    const canvas = document.createElement('canvas');
    canvas.width = 640; canvas.height = 360;
    const ctx = canvas.getContext('2d', { willReadFrequently: true });
    const onFrame = () => {
      const now = Date.now();
      if (window.firstFrameMs === null) window.firstFrameMs = performance.now() - started;
      ctx.drawImage(video, 0, 0, 640, 360);
      const px = ctx.getImageData(0, 0, 480, 80).data;
      let t = 0;
      for (let i = 0; i < bits; i++) {
        const x = (i % 12) * B + B / 2, y = Math.floor(i / 12) * B + B / 2;
        if (px[(y * 480 + x) * 4] > 128) t |= 1 << i;
      }
      const mask = (1 << bits) - 1;
      const lat = ((now & mask) - t + (1 << bits)) & mask;
      if (lat < maxMs) window.samples.push(lat);
      if (window.shown.length < 100000) window.shown.push([t, now]);
      video.requestVideoFrameCallback(onFrame);
    };
    video.requestVideoFrameCallback(onFrame);
  };
};

/** Defines `window.listen(stream)`: plays `stream`'s audio through Web Audio and records in
 *  `window.clicks` the Date.now() time at which each click is output (the worklet sees the
 *  sample at `currentTime + i / sampleRate`; `getOutputTimestamp` maps that to when it leaves the
 *  output device). */
const AUDIO_PROBE = async () => {
  window.clicks = [];
  const ctx = new AudioContext({ latencyHint: 'interactive' });
  const worklet = `registerProcessor('clicks', class extends AudioWorkletProcessor {
    constructor() { super(); this.quietUntil = 0; }
    process(inputs) {
      const ch = inputs[0] && inputs[0][0];
      if (ch) for (let i = 0; i < ch.length; i++) {
        const t = (currentFrame + i) / sampleRate;
        if (Math.abs(ch[i]) > 0.1 && t >= this.quietUntil) { this.port.postMessage(t); this.quietUntil = t + 0.5; }
      }
      return true;
    }
  });`;
  await ctx.audioWorklet.addModule(URL.createObjectURL(new Blob([worklet], { type: 'application/javascript' })));
  const node = new AudioWorkletNode(ctx, 'clicks');
  node.port.onmessage = (e) => {
    const ts = ctx.getOutputTimestamp();
    window.clicks.push(Date.now() + (ts.performanceTime - performance.now()) + (e.data - ts.contextTime) * 1000);
  };
  const silent = ctx.createGain();
  silent.gain.value = 0;
  node.connect(silent).connect(ctx.destination);
  window.listen = (stream) => { ctx.createMediaStreamSource(stream).connect(node); ctx.resume(); };
  window.audioContext = ctx;
};

/** A WHEP viewer of stream `demo` on `base`, probed; with `audio`, its audio too (see above). */
export async function viewWhep(page, { base, bits, audio = false }) {
  await page.evaluate(PROBE, { bits, maxMs: 5000 });
  if (audio) await page.evaluate(AUDIO_PROBE);
  await page.evaluate(async ({ base, audio }) => {
    const started = performance.now();
    const pc = new RTCPeerConnection();
    pc.addTransceiver('video', { direction: 'recvonly' });
    if (audio) {
      // Each Opus frame as it arrives, decoded in a worker (WebCodecs), off the audio's path:
      // the arrival time of every frame in which a click starts.
      const worker = new Worker(URL.createObjectURL(new Blob([`
        const arrived = new Map();
        let quietUntil = -Infinity;
        const decoder = new AudioDecoder({
          output(data) {
            // The decoder may move timestamps (pre-skip): the nearest input's arrival.
            let at = null, best = Infinity;
            for (const [ts, a] of arrived) if (Math.abs(ts - data.timestamp) < best) { best = Math.abs(ts - data.timestamp); at = a; }
            for (const ts of arrived.keys()) if (ts <= data.timestamp) arrived.delete(ts);
            const pcm = new Float32Array(data.numberOfFrames);
            data.copyTo(pcm, { planeIndex: 0, format: 'f32-planar' });
            const t = data.timestamp / 1e6;
            const i = pcm.findIndex((x) => Math.abs(x) > 0.1);
            if (i >= 0 && t >= quietUntil) postMessage(at);
            if (i >= 0) quietUntil = t + 0.5;
            data.close();
          },
          error() {}, // a frame it cannot decode: no click from it
        });
        decoder.configure({ codec: 'opus', sampleRate: 48000, numberOfChannels: 2 });
        let n = 0;
        onrtctransform = (e) => {
          const { readable, writable } = e.transformer;
          readable.pipeThrough(new TransformStream({ transform(frame, c) {
            const timestamp = n++ * 10000; // µs; only to pair an output with its arrival
            arrived.set(timestamp, Date.now());
            decoder.decode(new EncodedAudioChunk({ type: 'key', timestamp, data: frame.data.slice(0) }));
            c.enqueue(frame);
          } })).pipeTo(writable);
        };`], { type: 'application/javascript' })));
      window.clickArrivals = [];
      worker.onmessage = (e) => { if (window.clickArrivals.length < 10000) window.clickArrivals.push(e.data); };
      pc.addTransceiver('audio', { direction: 'recvonly' }).receiver.transform = new RTCRtpScriptTransform(worker, {});
    }
    const video = document.createElement('video');
    // Chromium renders a remote audio track only while an element plays it (Web Audio alone
    // hears silence), so with audio the element is not muted.
    video.muted = !audio; video.autoplay = true; video.playsInline = true;
    document.body.append(video);
    pc.ontrack = (e) => {
      if (!audio) { video.srcObject = new MediaStream([e.track]); return; }
      // Both tracks in one MediaStream: the SFU gives them one stream id, Chromium syncs them.
      if (!video.srcObject) video.srcObject = new MediaStream();
      video.srcObject.addTrack(e.track);
      if (e.track.kind === 'audio') window.listen(new MediaStream([e.track]));
    };
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    const r = await fetch(base + '/whep/demo', { method: 'POST', headers: { 'Content-Type': 'application/sdp' }, body: offer.sdp });
    if (r.status !== 201) throw new Error('whep ' + r.status);
    window.answerMs = performance.now() - started;
    pc.onconnectionstatechange = () => { if (pc.connectionState === 'connected') window.connectedMs = performance.now() - started; };
    await pc.setRemoteDescription({ type: 'answer', sdp: await r.text() });
    window.probe(video, started);
    window.view = pc;
  }, { base, audio });
}

/** Cumulative receiver statistics of the WHEP viewer on `page` (Chromium's `getStats`), by kind:
 *  jitter-buffer delay and emitted count (frames for video, samples for audio), the jitter
 *  buffer's target and minimum delay, and `estimatedPlayoutTimestamp` (NTP ms on the sender's
 *  clock, from its sender reports) with the local time it was read. */
export async function receiverStats(page) {
  return page.evaluate(async () => {
    const out = { at: Date.now() };
    (await window.view.getStats()).forEach((r) => {
      if (r.type === 'inbound-rtp') {
        out[r.kind] = {
          jitterBufferDelay: r.jitterBufferDelay, jitterBufferEmittedCount: r.jitterBufferEmittedCount,
          jitterBufferTargetDelay: r.jitterBufferTargetDelay, jitterBufferMinimumDelay: r.jitterBufferMinimumDelay,
          estimatedPlayoutTimestamp: r.estimatedPlayoutTimestamp, packetsReceived: r.packetsReceived,
          framesDecoded: r.framesDecoded, totalDecodeTime: r.totalDecodeTime, concealedSamples: r.concealedSamples,
          totalSamplesReceived: r.totalSamplesReceived, playoutId: r.playoutId,
          insertedSamplesForDeceleration: r.insertedSamplesForDeceleration, removedSamplesForAcceleration: r.removedSamplesForAcceleration,
        };
      }
      if (r.type === 'media-playout') out.playout = { totalPlayoutDelay: r.totalPlayoutDelay, totalSamplesCount: r.totalSamplesCount };
    });
    return out;
  });
}

/** Average delays (ms) between two `receiverStats` snapshots: time in each jitter buffer, the
 *  audio jitter buffer's target, and the audio output's playout delay. */
export function delaysBetween(a, b) {
  const avg = (k, f, n) => (b[k] && a[k] && b[k][n] > a[k][n] ? Math.round(((b[k][f] - a[k][f]) / (b[k][n] - a[k][n])) * 1000) : null);
  return {
    video_jitter_buffer_ms: avg('video', 'jitterBufferDelay', 'jitterBufferEmittedCount'),
    audio_jitter_buffer_ms: avg('audio', 'jitterBufferDelay', 'jitterBufferEmittedCount'),
    audio_jitter_buffer_target_ms: avg('audio', 'jitterBufferTargetDelay', 'jitterBufferEmittedCount'),
    audio_playout_delay_ms: avg('playout', 'totalPlayoutDelay', 'totalSamplesCount'),
    video_decode_ms: avg('video', 'totalDecodeTime', 'framesDecoded'),
  };
}

/** An hls.js viewer of `url` (hls.js already on the page), probed; `config` goes to hls.js. */
export async function viewHls(page, { url, bits, config }) {
  await page.evaluate(PROBE, { bits, maxMs: 120000 });
  await page.evaluate(({ url, config }) => {
    const started = performance.now();
    const video = document.createElement('video');
    video.muted = true;
    document.body.append(video);
    const hls = new window.Hls(config);
    hls.loadSource(url);
    hls.attachMedia(video);
    video.play().catch(() => {});
    window.probe(video, started);
    window.view = hls;
  }, { url, config });
}

export const pct = (xs, p) => { const s = [...xs].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]; };

/** Paints `t` as the block code into a `w`x`h` gray frame (one byte a pixel), with a moving bar
 *  so frames differ. Blocks scale with the width (40 px at 640), so the probe, which draws every
 *  frame at 640x360, reads any 16:9 size. */
export function paintCode(frame, w, h, t, bits = BITS) {
  const block = Math.round((BLOCK * w) / 640);
  frame.fill(0x33);
  const bar = Math.round((200 * h) / 360);
  frame.fill(0x88, bar * w, (bar + 10 + (t % 100)) * w);
  for (let i = 0; i < bits; i++) {
    const v = (t >> i) & 1 ? 0xff : 0x00;
    const x0 = (i % 12) * block, y0 = Math.floor(i / 12) * block;
    for (let y = y0; y < y0 + block; y++) frame.fill(v, y * w + x0, y * w + x0 + block);
  }
}

/** The code of a 480x80 gray picture: the top-left corner of a frame scaled to 640x360 (what
 *  the probe reads), e.g. ffmpeg's `crop=iw*3/4:ih*2/9:0:0,scale=480:80,format=gray`. */
export function readCodeGray(px, bits = BITS) {
  let t = 0;
  for (let i = 0; i < bits; i++) {
    const x = (i % 12) * BLOCK + BLOCK / 2, y = Math.floor(i / 12) * BLOCK + BLOCK / 2;
    if (px[y * 480 + x] > 128) t |= 1 << i;
  }
  return t;
}

/** How long ago (ms, modulo 2^bits) code `t` was painted, at Date.now() time `now`. */
export const codeAge = (now, t, bits = BITS) => {
  const mask = (1 << bits) - 1;
  return ((now & mask) - t + (1 << bits)) & mask;
};
