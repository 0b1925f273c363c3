// ffmpeg publishes H.264 + AAC over RTMP; a Chromium WHEP viewer decodes the video and receives
// the audio as Opus (transcoded by glint through GStreamer).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { startGlint, launchChromium, waitFor, inboundStats } from './lib.mjs';

test('ffmpeg RTMP publisher to Chromium WHEP viewer, with sound', { timeout: 90000 }, async () => {
  const glint = await startGlint();
  const ffmpeg = spawn('ffmpeg', [
    '-hide_banner', '-loglevel', 'error', '-re',
    '-f', 'lavfi', '-i', 'testsrc2=size=640x360:rate=30',
    '-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=44100',
    '-t', '60', '-c:v', 'libx264', '-preset', 'ultrafast', '-tune', 'zerolatency', '-profile:v', 'baseline',
    '-bf', '0', '-g', '30', '-c:a', 'aac', '-f', 'flv', `${glint.rtmp}/live/test-key`,
  ], { stdio: 'ignore' });
  const browser = await launchChromium();
  try {
    await waitFor(async () => (await (await fetch(`${glint.base}/api/live`)).json()).some((s) => s.name === 'demo' && s.live), 20000, 'RTMP stream live');
    const viewer = await browser.context.newPage();
    await viewer.goto(`${glint.base}/watch/demo`);
    const stats = await waitFor(async () => {
      const s = await inboundStats(viewer);
      return s && s.video && s.video.framesDecoded > 30 && s.audio && s.audio.packetsReceived > 50 ? s : null;
    }, 30000, 'viewer decodes RTMP video and receives Opus audio');
    console.log(`RTMP → WebRTC: ${stats.video.framesDecoded} frames decoded, ${stats.audio.packetsReceived} audio packets`);
    assert.ok(stats.video.framesDecoded > 30);
  } catch (e) {
    console.log(glint.logs());
    throw e;
  } finally {
    ffmpeg.kill('SIGKILL');
    await browser.close();
    await glint.stop();
  }
});
