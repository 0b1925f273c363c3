// The viewer side of the latency benchmarks: a WHEP or hls.js viewer that reads the 24-bit block
// code painted into each frame (Date.now() at paint time) and records Date.now() - code at every
// decoded frame (requestVideoFrameCallback). Publishers paint the code as 40x40 blocks, two rows
// of 12 from the top-left corner of a 640x360 frame.

export const BITS = 24;
export const BLOCK = 40;

/** Defines `window.probe(video, started)`: records Date.now() - code for each decoded frame of
 *  `video` into `window.samples` (latencies up to `maxMs`), and the first frame's time. */
const PROBE = ({ bits, maxMs }) => {
  const B = 40;
  window.samples = [];
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
      video.requestVideoFrameCallback(onFrame);
    };
    video.requestVideoFrameCallback(onFrame);
  };
};

/** A WHEP viewer of stream `demo` on `base`, probed. */
export async function viewWhep(page, { base, bits }) {
  await page.evaluate(PROBE, { bits, maxMs: 5000 });
  await page.evaluate(async ({ base }) => {
    const started = performance.now();
    const pc = new RTCPeerConnection();
    pc.addTransceiver('video', { direction: 'recvonly' });
    const video = document.createElement('video');
    video.muted = true; video.autoplay = true; video.playsInline = true;
    document.body.append(video);
    pc.ontrack = (e) => { video.srcObject = new MediaStream([e.track]); };
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    const r = await fetch(base + '/whep/demo', { method: 'POST', headers: { 'Content-Type': 'application/sdp' }, body: offer.sdp });
    if (r.status !== 201) throw new Error('whep ' + r.status);
    window.answerMs = performance.now() - started;
    pc.onconnectionstatechange = () => { if (pc.connectionState === 'connected') window.connectedMs = performance.now() - started; };
    await pc.setRemoteDescription({ type: 'answer', sdp: await r.text() });
    window.probe(video, started);
    window.view = pc;
  }, { base });
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

