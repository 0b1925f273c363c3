// Chromium publishes fake camera + microphone over WHIP; a second page plays over WHEP and
// decodes frames. Runs inside a network namespace with only `lo` (see .ci/run).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startGlint, launchChromium, waitFor, inboundStats } from './lib.mjs';

test('Chromium WHIP publisher to Chromium WHEP viewer', { timeout: 90000 }, async () => {
  const glint = await startGlint();
  const browser = await launchChromium();
  try {
    const pub = await browser.context.newPage();
    // The key is typed into the page (never put in its URL).
    await pub.goto(`${glint.base}/publish/demo`);
    await pub.fill('#key', 'test-key');
    await pub.click('#go');
    await waitFor(() => pub.evaluate(() => window.glint.state), 20000, 'publisher live').then(async () => {
      await waitFor(async () => (await pub.evaluate(() => window.glint.state)) === 'live', 20000, 'publisher connected');
    });

    const viewer = await browser.context.newPage();
    const joinedAt = Date.now();
    await viewer.goto(`${glint.base}/watch/demo`);
    const stats = await waitFor(async () => {
      const s = await inboundStats(viewer);
      return s && s.video && s.video.framesDecoded > 30 && s.audio && s.audio.packetsReceived > 50 ? s : null;
    }, 30000, 'viewer decodes video and receives audio');
    console.log(`viewer decoded ${stats.video.framesDecoded} frames, ${stats.audio.packetsReceived} audio packets, ${Date.now() - joinedAt} ms after joining`);
    assert.ok(stats.video.framesDecoded > 30);

    // The same stream as HLS: a ladder from the WebRTC publisher, whom glint asks for a
    // keyframe every segment.
    const playlist = await waitFor(async () => {
      const r = await fetch(`${glint.base}/hls/demo/source/index.m3u8`);
      const t = r.ok ? await r.text() : '';
      return (t.match(/#EXTINF/g) || []).length >= 2 ? t : null;
    }, 30000, 'HLS playlist of the WebRTC stream');
    // The master follows once every rendition has a playlist.
    const master = await waitFor(async () => {
      const r = await fetch(`${glint.base}/hls/demo/master.m3u8`);
      return r.ok ? r.text() : null;
    }, 10000, 'HLS master playlist');
    console.log(`HLS from WebRTC:\n${master}${playlist}`);
    assert.match(master, /CODECS="avc1\.[0-9a-f]{6},mp4a\.40\.2"\nsource\/index\.m3u8/);
    for (const d of [...playlist.matchAll(/#EXTINF:([0-9.]+)/g)].map((m) => Number(m[1]))) assert.ok(d <= 3, `segment of ${d} s`);

    const live = await (await fetch(`${glint.base}/api/live`)).json();
    assert.equal(live.length, 1);
    assert.equal(live[0].name, 'demo');
    assert.equal(live[0].webrtc_viewers, 1);
    assert.equal(live[0].hls_viewers, 1, 'this test, fetching the media playlist, counts as an HLS viewer');
    assert.equal(live[0].viewers, 2);

    // The publisher stops: the viewer is told (its tracks end) and the server drops both sessions.
    await pub.evaluate(() => document.getElementById('stop').click());
    const endedAt = Date.now();
    await waitFor(async () => (await viewer.evaluate(() => window.glint.state)).startsWith('offline'), 15000, 'viewer sees the stream end');
    console.log(`viewer saw the stream end ${Date.now() - endedAt} ms after the publisher stopped`);
    await waitFor(async () => {
      const m = await (await fetch(`${glint.base}/metrics`)).text();
      return /glint_publishers 0/.test(m) && /glint_viewers 0/.test(m);
    }, 15000, 'sessions cleaned up');
  } catch (e) {
    for (const p of browser.context.pages()) console.log(await p.evaluate(() => !window.glint ? null : JSON.stringify({ state: window.glint.state, cs: window.glint.pc && window.glint.pc.connectionState, ice: window.glint.pc && window.glint.pc.iceConnectionState, tracks: window.glint.pc && window.glint.pc.getReceivers().map((r) => [r.track.kind, r.track.readyState, r.track.muted]) })));
    console.log(glint.logs().split('\n').filter((l) => !l.includes('rtc::')).join('\n'));
    throw e;
  } finally {
    await browser.close();
    await glint.stop();
  }
});
