// What ships: the server started exactly as scripts/run.sh starts it — no flags, no GLINT_*
// settings but the web app's build, so HTTP on 0.0.0.0:8080, RTMP on 0.0.0.0:1935, WebRTC on
// UDP 0.0.0.0:8189, data in ./data (a fresh working directory), HLS on — and the README's
// first-run flow through it: the generated key in data/stream-keys.toml, Chromium publishing
// to `demo` over WHIP, the home page listing `demo` live, and a Chromium viewer on the web
// app's channel page playing it over WebRTC (not falling back to HLS), with chat there.
//
// Fixed ports, so it runs only inside the private network namespace scripts/test.sh makes
// (GLINT_TEST_NETNS=1), where nothing else listens.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GLINT_BIN, launchChromium, waitFor, withTimeout } from './lib.mjs';

const inNamespace = process.env.GLINT_TEST_NETNS === '1';
const webBuild = process.env.GLINT_WEB_BUILD;
const BASE = 'http://127.0.0.1:8080';

/** `glint` with no arguments in `cwd`, with the environment run.sh gives it. */
function startDefault(cwd) {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('GLINT_')));
  env.GLINT_WEB_DIR = webBuild;
  const proc = spawn(GLINT_BIN, [], { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let logs = '';
  const up = new Promise((resolve, reject) => {
    const onData = (d) => {
      logs += d.toString();
      const m = logs.match(/glint is up.*http=(\S+).*udp=(\S+).*rtmp=(\S+)/);
      if (m) resolve({ http: m[1], udp: m[2], rtmp: m[3] });
    };
    proc.stdout.on('data', onData);
    proc.stderr.on('data', onData);
    proc.on('exit', (code) => reject(new Error(`glint exited with ${code}:\n${logs}`)));
  });
  return {
    up: withTimeout(up, 30000, 'glint did not start'),
    logs: () => logs,
    async stop() {
      if (proc.exitCode !== null) return;
      const exited = new Promise((r) => proc.on('exit', r));
      proc.kill('SIGTERM');
      await withTimeout(exited, 15000, 'glint did not stop on SIGTERM');
    },
  };
}

test('the shipped defaults: WHIP publish and WebRTC playback through 0.0.0.0 binds', {
  timeout: 120000,
  skip: !inNamespace ? 'needs the private network namespace of scripts/test.sh (fixed ports)' : !webBuild ? 'needs GLINT_WEB_BUILD' : false,
}, async () => {
  const cwd = mkdtempSync(join(tmpdir(), 'glint-default-'));
  let glint = startDefault(cwd);
  const browser = await launchChromium();
  try {
    const addrs = await glint.up;
    assert.deepEqual(addrs, { http: '0.0.0.0:8080', udp: '0.0.0.0:8189', rtmp: '0.0.0.0:1935' });

    // The first-run key: owner-only, shown in the log once.
    const keyFile = join(cwd, 'data', 'stream-keys.toml');
    assert.equal(statSync(keyFile).mode & 0o777, 0o600, 'stream-keys.toml is 0600');
    const key = readFileSync(keyFile, 'utf8').match(/demo\s*=\s*"([^"]+)"/)[1];
    assert.ok(glint.logs().includes(key), 'the generated key is in the first start log');
    assert.ok(statSync(join(cwd, 'data', 'db')).isDirectory(), 'embedded database in ./data/db');

    // Restarted, the key stays and is no longer printed.
    await glint.stop();
    glint = startDefault(cwd);
    await glint.up;
    assert.ok(!glint.logs().includes(key), 'a restart does not log the key again');

    // The configured stream is a channel in the directory before it goes live.
    const listed = await (await fetch(`${BASE}/api/streams?live=all`)).json();
    assert.ok(listed.items.some((s) => s.name === 'demo' && !s.live), JSON.stringify(listed));

    // Chromium publishes its fake camera to /whip/demo with the key, as OBS would.
    const pub = await browser.context.newPage();
    await pub.goto(`${BASE}/`);
    const published = await pub.evaluate(async (key) => {
      const media = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 360 }, audio: true });
      const pc = new RTCPeerConnection();
      for (const t of media.getTracks()) pc.addTransceiver(t, { direction: 'sendonly' });
      await pc.setLocalDescription(await pc.createOffer());
      const r = await fetch('/whip/demo', { method: 'POST', headers: { 'Content-Type': 'application/sdp', Authorization: `Bearer ${key}` }, body: pc.localDescription.sdp });
      if (r.status !== 201) return { status: r.status, body: await r.text() };
      const answer = await r.text();
      await pc.setRemoteDescription({ type: 'answer', sdp: answer });
      window.publisher = pc;
      return { status: 201, candidates: answer.split('\n').filter((l) => l.startsWith('a=candidate')) };
    }, key);
    assert.equal(published.status, 201, JSON.stringify(published));
    console.log(`answer candidates on the default bind: ${published.candidates.join(' | ')}`);
    await waitFor(() => pub.evaluate(() => window.publisher.connectionState === 'connected'), 20000, 'publisher connected over WebRTC');

    // The README's flow shows on the home page.
    const home = await browser.context.newPage();
    await home.goto(`${BASE}/`);
    await waitFor(async () => (await home.locator('a[href*="/watch/demo"]').count()) > 0, 20000, 'demo listed live on the home page');

    // A viewer on the channel page: WebRTC, playing, and the chat is there.
    const viewer = await browser.context.newPage();
    const joined = Date.now();
    await viewer.goto(`${BASE}/watch/demo/`);
    const played = await waitFor(() => viewer.evaluate(() => {
      const p = window.__glintPlayer;
      const v = document.querySelector('video');
      const frames = v && v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality().totalVideoFrames : 0;
      return p && p.mode === 'webrtc' && p.state === 'live' && frames > 30 ? { frames } : null;
    }), 30000, 'channel page plays WebRTC');
    console.log(`viewer: ${played.frames} frames over WebRTC ${Date.now() - joined} ms after opening the page`);
    assert.equal((await viewer.getByTestId('mode').textContent()).startsWith('WebRTC'), true);
    await waitFor(async () => (await viewer.getByTestId('chat-messages').count()) > 0, 10000, 'chat on the channel page');

    // HLS is on by default: the ladder of the same stream.
    await waitFor(async () => {
      const r = await fetch(`${BASE}/hls/demo/master.m3u8`);
      return r.ok && (await r.text()).includes('#EXT-X-STREAM-INF');
    }, 30000, 'HLS master playlist');

    const live = await (await fetch(`${BASE}/api/streams?name=demo`)).json();
    assert.ok(live.items[0].live, JSON.stringify(live));
  } catch (e) {
    console.log(glint.logs().split('\n').filter((l) => !l.includes('rtc::')).slice(-80).join('\n'));
    throw e;
  } finally {
    await browser.close();
    await glint.stop();
    rmSync(cwd, { recursive: true, force: true });
  }
});
