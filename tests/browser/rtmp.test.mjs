// ffmpeg publishes H.264 + AAC over RTMP; a Chromium WHEP viewer decodes the video and receives
// the audio as Opus (transcoded by glint through GStreamer). Also: a stream with B-frames plays
// smoothly (glint re-encodes it), and a publisher that drops and reconnects resumes the stream
// for a viewer that keeps its page and its connection.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { startGlint, launchChromium, waitFor, inboundStats } from './lib.mjs';

const BASELINE = ['-tune', 'zerolatency', '-profile:v', 'baseline', '-bf', '0'];
// OBS's x264 default: "high" profile, B-frames.
const HIGH_WITH_B_FRAMES = ['-profile:v', 'high', '-bf', '2'];

function ffmpeg(url, x264) {
  return spawn('ffmpeg', [
    '-hide_banner', '-loglevel', 'error', '-re',
    '-f', 'lavfi', '-i', 'testsrc2=size=640x360:rate=30',
    '-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=44100',
    '-t', '60', '-pix_fmt', 'yuv420p', '-c:v', 'libx264', '-preset', 'ultrafast', '-g', '30', ...x264,
    '-c:a', 'aac', '-f', 'flv', url,
  ], { stdio: 'ignore' });
}

/** glint, Chromium and an ffmpeg RTMP publisher; `body` gets them, all are stopped after. */
async function withRtmpViewer(x264, body) {
  const glint = await startGlint();
  const url = `${glint.rtmp}/live/test-key`;
  const publishers = [ffmpeg(url, x264)];
  const browser = await launchChromium();
  try {
    await waitFor(async () => (await (await fetch(`${glint.base}/api/live`)).json()).some((s) => s.name === 'demo' && s.live), 20000, 'RTMP stream live');
    const viewer = await browser.context.newPage();
    await viewer.goto(`${glint.base}/watch/demo`);
    await body({ glint, viewer, url, publishers });
  } catch (e) {
    console.log(glint.logs());
    throw e;
  } finally {
    for (const p of publishers) p.kill('SIGKILL');
    await browser.close();
    await glint.stop();
  }
}

test('ffmpeg RTMP publisher to Chromium WHEP viewer, with sound', { timeout: 90000 }, async () => {
  await withRtmpViewer(BASELINE, async ({ viewer }) => {
    const stats = await waitFor(async () => {
      const s = await inboundStats(viewer);
      return s && s.video && s.video.framesDecoded > 30 && s.audio && s.audio.packetsReceived > 50 ? s : null;
    }, 30000, 'viewer decodes RTMP video and receives Opus audio');
    console.log(`RTMP → WebRTC: ${stats.video.framesDecoded} frames decoded, ${stats.audio.packetsReceived} audio packets`);
    assert.ok(stats.video.framesDecoded > 30);
  });
});

test('an RTMP stream with B-frames plays smoothly in Chromium', { timeout: 90000 }, async () => {
  await withRtmpViewer(HIGH_WITH_B_FRAMES, async ({ viewer }) => {
    const first = await waitFor(async () => {
      const s = await inboundStats(viewer);
      return s && s.video && s.video.framesDecoded > 0 ? s : null;
    }, 30000, 'viewer decodes the B-frame stream');
    const t0 = Date.now();
    const later = await waitFor(async () => {
      const s = await inboundStats(viewer);
      return Date.now() - t0 >= 4000 ? s : null;
    }, 10000, 'four seconds of playback');
    const fps = ((later.video.framesDecoded - first.video.framesDecoded) * 1000) / (Date.now() - t0);
    console.log(`B-frame stream in Chromium: ${fps.toFixed(1)} frames/s decoded, ${later.video.framesDropped} dropped, audio packets ${later.audio.packetsReceived}`);
    assert.ok(fps > 24, `about 30 frames/s, not a stutter: ${fps}`);
    assert.ok(later.audio.packetsReceived > 50);
  });
});

test('an RTMP publisher that drops and reconnects resumes the stream for the viewer', { timeout: 120000 }, async () => {
  await withRtmpViewer(BASELINE, async ({ glint, viewer, url, publishers }) => {
    const before = await waitFor(async () => {
      const s = await inboundStats(viewer);
      return s && s.video && s.video.framesDecoded > 30 ? s : null;
    }, 30000, 'viewer decodes the first publisher');
    publishers[0].kill('SIGKILL'); // the connection drops: no unpublish
    await waitFor(async () => (await (await fetch(`${glint.base}/api/live`)).json()).some((s) => s.reconnecting), 10000, 'stream waits for its publisher');
    publishers.push(ffmpeg(url, BASELINE));
    const after = await waitFor(async () => {
      const s = await inboundStats(viewer);
      return s && s.video && s.video.framesDecoded > before.video.framesDecoded + 60 ? s : null;
    }, 30000, 'viewer decodes the reconnected publisher');
    const attempts = await viewer.evaluate(() => window.glint.attempts);
    console.log(`after the reconnect: ${after.video.framesDecoded - before.video.framesDecoded} more frames, page's WHEP attempts ${attempts}`);
    assert.equal(attempts, 1, 'the same WebRTC session carried on: no new offer');
  });
});
