// The viewer side of the latency benchmarks: a WHEP viewer page that reads the 24-bit block
// code painted into each frame (Date.now() at paint time) and records Date.now() - code at every
// decoded frame (requestVideoFrameCallback). Publishers paint the code as 40x40 blocks, two rows
// of 12 from the top-left corner of a 640x360 frame.

export const BITS = 24;
export const BLOCK = 40;

export const VIEW = async ({ base, bits }) => {
  const B = 40;
  const started = performance.now();
  window.samples = [];
  window.firstFrameMs = null;
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
    if (lat < 5000) window.samples.push(lat);
    video.requestVideoFrameCallback(onFrame);
  };
  video.requestVideoFrameCallback(onFrame);
  window.view = pc;
};

export const pct = (xs, p) => { const s = [...xs].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]; };

