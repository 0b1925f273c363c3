// hls.js (npm) in Chromium plays glint's HLS ladder of a 720p RTMP stream as Low-Latency HLS
// (`lowLatencyMode: true`, fMP4 parts, blocking reloads): the master playlist loads with its
// three renditions, the player switches to each one and decodes it at its size, with sound,
// less than 3 s behind real time (the program date-time of what it shows against the clock);
// when the stream ends, its replay (VOD) plays from a seek to the end.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { startGlint, launchChromium, waitFor } from './lib.mjs';

const HLS_JS = createRequire(import.meta.url).resolve('hls.js/dist/hls.min.js');

function ffmpeg(url, seconds) {
  return spawn('ffmpeg', [
    '-hide_banner', '-loglevel', 'error', '-re',
    '-f', 'lavfi', '-i', 'testsrc2=size=1280x720:rate=30',
    '-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=48000',
    '-t', String(seconds), '-pix_fmt', 'yuv420p', '-c:v', 'libx264', '-preset', 'ultrafast',
    '-tune', 'zerolatency', '-g', '60', '-c:a', 'aac', '-f', 'flv', url,
  ], { stdio: 'ignore' });
}

/** A page on glint's origin with hls.js loaded and `window.play(url)` to start a player. */
async function playerPage(browser, base) {
  const page = await browser.context.newPage();
  await page.goto(`${base}/healthz`);
  await page.addScriptTag({ path: HLS_JS });
  await page.evaluate(() => {
    window.play = (url) => {
      const video = document.createElement('video');
      document.body.append(video); // not muted: Chromium may skip decoding a muted element's audio
      const hls = new window.Hls({ lowLatencyMode: true });
      window.player = { hls, video, switched: [], fatal: null, ended: false, audioAppends: 0 };
      hls.on(window.Hls.Events.BUFFER_APPENDED, (_, d) => { if (d.type === 'audio' || d.type === 'audiovideo') window.player.audioAppends++; });
      hls.on(window.Hls.Events.BUFFER_CODECS, (_, d) => { window.player.codecs = Object.fromEntries(Object.entries(d).map(([k, v]) => [k, v && v.codec])); });
      hls.on(window.Hls.Events.BUFFER_APPENDED, (_, d) => { window.player.appendTypes = [...new Set([...(window.player.appendTypes || []), d.type])]; });
      hls.on(window.Hls.Events.LEVEL_SWITCHED, (_, d) => window.player.switched.push(d.level));
      hls.on(window.Hls.Events.ERROR, (_, d) => { if (d.fatal) window.player.fatal = `${d.type}: ${d.details}`; });
      video.addEventListener('ended', () => { window.player.ended = true; });
      hls.loadSource(url);
      hls.attachMedia(video);
      video.play().catch(() => {});
    };
    window.state = () => {
      const { hls, video, fatal, ended, audioAppends } = window.player;
      return {
        fatal,
        ended,
        levels: hls.levels.map((l) => l.height),
        level: hls.currentLevel,
        height: video.videoHeight,
        time: video.currentTime,
        duration: video.duration,
        frames: video.getVideoPlaybackQuality().totalVideoFrames,
        audioAppends,
        audioBytes: video.webkitAudioDecodedByteCount,
        // What is on screen against the clock: the program date-time of the playhead.
        behindMs: hls.playingDate ? Date.now() - hls.playingDate.getTime() : null,
        parts: hls.levels[hls.currentLevel]?.details?.partList?.length ?? 0,
        canBlock: hls.levels[hls.currentLevel]?.details?.canBlockReload ?? false,
      };
    };
  });
  return page;
}

test('hls.js plays the ladder, switches renditions, then plays the replay', { timeout: 180000 }, async () => {
  const glint = await startGlint();
  const publisher = ffmpeg(`${glint.rtmp}/live/test-key`, 45);
  const browser = await launchChromium();
  try {
    const master = `${glint.base}/hls/demo/master.m3u8`;
    // The master is stored once every rendition has a playlist (so a player never finds one missing).
    await waitFor(async () => (await fetch(master)).ok, 40000, 'HLS master playlist');
    const page = await playerPage(browser, glint.base);
    await page.evaluate((url) => window.play(url), master);
    const playing = await waitFor(async () => {
      const s = await page.evaluate(() => window.state());
      if (s.fatal) throw new Error(s.fatal);
      return s.levels.length === 3 && s.time > 1 && s.frames > 30 ? s : null;
    }, 40000, 'hls.js playing the live master playlist');
    console.log(`live: renditions ${playing.levels.join('/')}, playing at ${playing.height}p`);
    assert.deepEqual([...playing.levels].sort((a, b) => a - b), [360, 480, 720]);

    // Switch to every rendition; each one plays at its own size.
    for (const height of [360, 720, 480]) {
      const index = playing.levels.indexOf(height);
      await page.evaluate((i) => { window.player.hls.currentLevel = i; }, index);
      const start = await page.evaluate(() => window.state());
      const s = await waitFor(async () => {
        const s = await page.evaluate(() => window.state());
        if (s.fatal) throw new Error(s.fatal);
        return s.height === height && s.time > start.time + 1 ? s : null;
      }, 30000, `playing the ${height}p rendition`);
      console.log(`switched to ${height}p: ${s.frames} frames so far, t=${s.time.toFixed(1)} s`);
    }
    const live = await page.evaluate(() => window.state());
    console.log(JSON.stringify({ live, codecs: await page.evaluate(() => window.player.codecs), types: await page.evaluate(() => window.player.appendTypes) }));
    assert.ok(live.audioAppends > 0, 'hls.js buffered the AAC audio');
    assert.match(JSON.stringify(await page.evaluate(() => window.player.codecs)), /mp4a\.40\.2/);
    assert.ok(live.canBlock && live.parts > 0, `hls.js reads the parts and blocking reloads: ${JSON.stringify(live)}`);
    // Low latency: after a few seconds at the live edge, the picture is < 3 s old.
    const settled = await waitFor(async () => {
      const s = await page.evaluate(() => window.state());
      return s.behindMs !== null && s.behindMs < 3000 ? s : null;
    }, 20000, 'playing less than 3 s behind real time');
    console.log(`LL-HLS: ${settled.behindMs} ms behind, hls.js latency ${await page.evaluate(() => window.player.hls.latency.toFixed(2))} s`);
    assert.ok(live.audioBytes > 0, 'Chromium decoded the AAC audio');
    assert.deepEqual(
      new Set(await page.evaluate(() => window.player.switched)),
      new Set([0, 1, 2]),
      'LEVEL_SWITCHED to each rendition',
    );

    // The stream ends (ffmpeg's 45 s are up): its replay plays as video on demand.
    const epoch = await waitFor(() => glint.logs().match(/replay stored.*epoch=(\d+)/)?.[1], 60000, 'replay stored');
    const vod = await playerPage(browser, glint.base);
    await vod.evaluate((url) => window.play(url), `${glint.base}/hls/demo/videos/${epoch}/master.m3u8`);
    const loaded = await waitFor(async () => {
      const s = await vod.evaluate(() => window.state());
      if (s.fatal) throw new Error(s.fatal);
      return s.duration > 0 && s.frames > 10 ? s : null;
    }, 30000, 'replay playing');
    console.log(`replay: ${loaded.duration.toFixed(1)} s, renditions ${loaded.levels.join('/')}`);
    assert.ok(Number.isFinite(loaded.duration) && loaded.duration > 30, `a finite VOD of ~45 s: ${loaded.duration}`);
    await vod.evaluate(() => { window.player.video.currentTime = window.player.video.duration - 3; });
    await waitFor(async () => (await vod.evaluate(() => window.state())).ended, 30000, 'replay played to its end');
  } catch (e) {
    console.log(glint.logs().slice(-4000));
    throw e;
  } finally {
    publisher.kill('SIGKILL');
    await browser.close();
    await glint.stop();
  }
});
