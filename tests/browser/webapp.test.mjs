// The web app (web/out, Next.js static export) end to end in real Chromium against the real
// glint binary: a streamer signs up, creates the channel and goes live from the dashboard with
// the browser's camera (WHIP); the home page lists the stream; a second user's channel page plays
// it over WebRTC (frames decoded, from getStats); they follow; the streamer goes live again and
// the follower gets the toast; chat goes both ways. Then: HLS fallback with WebRTC blocked in the
// page, screenshots at desktop and phone size (artifacts/), axe-core on the main pages, and an
// offline channel's past broadcast played from its page.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startGlint, launchChromium, waitFor } from './lib.mjs';

const HERE = dirname(fileURLToPath(import.meta.url));
const WEB_DIR = process.env.GLINT_WEB_BUILD ?? join(HERE, '../../web/out');
const ARTIFACTS = process.env.GLINT_ARTIFACTS ?? join(HERE, 'artifacts');
const AXE = createRequire(import.meta.url).resolve('axe-core/axe.min.js');
const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };

/** Console errors and uncaught exceptions of a page (the app must have none). */
function watchErrors(page, into) {
  page.on('console', (m) => {
    // Resource 404s are logged by Chromium itself (e.g. a thumbnail not written yet).
    if (m.type() === 'error' && !/Failed to load resource/.test(m.text())) into.push(`${page.url()}: ${m.text()}`);
  });
  page.on('pageerror', (e) => into.push(`${page.url()}: ${e.message}`));
}

async function signUp(page, base, name) {
  await page.goto(`${base}/signup/`);
  await page.getByLabel('Username').fill(name);
  await page.getByLabel('Email').fill(`${name}@example.com`);
  await page.getByLabel('Password').fill('a good password');
  await page.getByRole('button', { name: 'Sign up' }).click();
  await page.waitForURL(/\/dashboard\/$/, { timeout: 15000 });
}

async function framesDecoded(page) {
  return page.evaluate(async () => {
    const pc = window.__glintPlayer && window.__glintPlayer.pc;
    if (!pc) return 0;
    let frames = 0;
    (await pc.getStats()).forEach((r) => {
      if (r.type === 'inbound-rtp' && r.kind === 'video') frames = r.framesDecoded ?? 0;
    });
    return frames;
  });
}

async function live(base, name) {
  const r = await fetch(`${base}/api/streams?live=all&name=${name}`);
  return (await r.json()).items[0]?.live === true;
}

/** Screenshots at desktop and phone size; nothing may be wider than a 360 px phone. */
async function screenshots(page, name) {
  mkdirSync(ARTIFACTS, { recursive: true });
  for (const [size, viewport] of [['desktop', DESKTOP], ['phone', PHONE]]) {
    await page.setViewportSize(viewport);
    await page.screenshot({ path: join(ARTIFACTS, `${name}-${size}.png`), fullPage: true });
  }
  await page.setViewportSize({ width: 360, height: 740 });
  const width = await page.evaluate(() => document.documentElement.scrollWidth);
  assert.ok(width <= 360, `${name} is ${width} px wide on a 360 px phone`);
  await page.setViewportSize(DESKTOP);
}

/** axe-core's serious and critical violations on the page. */
async function axeViolations(page) {
  await page.addScriptTag({ path: AXE });
  const result = await page.evaluate(() => window.axe.run(document, { resultTypes: ['violations'] }));
  return result.violations
    .filter((v) => v.impact === 'serious' || v.impact === 'critical')
    .map((v) => `${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(' ')).join(', ')})`);
}

test('sign up, go live from the dashboard, watch over WebRTC, follow, toast, chat', { timeout: 240000 }, async () => {
  const glint = await startGlint({ GLINT_WEB_DIR: WEB_DIR, GLINT_HLS: 'false' });
  const streamerBrowser = await launchChromium();
  const fanBrowser = await launchChromium();
  const errors = [];
  try {
    const studio = await streamerBrowser.context.newPage();
    await studio.setViewportSize(DESKTOP);
    watchErrors(studio, errors);
    await signUp(studio, glint.base, 'streamer');

    // The dashboard: create the channel, then the key (hidden) and OBS settings are there.
    await studio.getByLabel('Stream title').fill('Building Glint live');
    await studio.getByLabel('Category').selectOption('software');
    await studio.getByRole('button', { name: 'Create channel' }).click();
    await studio.getByTestId('stream-key').waitFor();
    assert.match(await studio.getByTestId('stream-key').textContent(), /^•+$/, 'key hidden by default');
    await studio.getByRole('button', { name: 'Show', exact: true }).click();
    const key = (await studio.getByTestId('stream-key').textContent()).trim();
    assert.ok(key.length >= 20, key);
    assert.equal(await studio.getByTestId('whip-url').textContent(), `${glint.base}/whip/streamer`);
    assert.match(await studio.getByTestId('rtmp-url').textContent(), new RegExp(`^rtmp://127\\.0\\.0\\.1:${new URL(glint.rtmp).port}/live$`));

    // Go live with the (fake) camera over WHIP.
    await studio.getByTestId('go-live').click();
    await waitFor(async () => (await studio.getByTestId('publish-state').textContent()) === 'live', 20000, 'browser WHIP publish live');
    await waitFor(() => live(glint.base, 'streamer'), 15000, 'stream live in the API');

    // The home page lists it.
    const fan = await fanBrowser.context.newPage();
    await fan.setViewportSize(DESKTOP);
    watchErrors(fan, errors);
    await signUp(fan, glint.base, 'fan');
    await fan.goto(`${glint.base}/`);
    const card = fan.getByTestId('stream-card').filter({ hasText: 'Building Glint live' });
    await card.waitFor({ timeout: 15000 });
    assert.match(await card.textContent(), /streamer/);
    assert.match(await card.textContent(), /software/);
    await screenshots(fan, 'home');
    assert.deepEqual(await axeViolations(fan), [], 'home page accessibility');

    // Search from the header with the keyboard alone.
    await fan.getByLabel('Search channels').focus();
    await fan.keyboard.type('glint LIVE');
    await fan.keyboard.press('Enter');
    await fan.waitForURL(/\/search\/\?q=/);
    await fan.getByTestId('stream-card').filter({ hasText: 'Building Glint live' }).waitFor({ timeout: 10000 });
    await fan.goBack();

    // Its channel page plays over WebRTC.
    await card.click();
    await fan.waitForURL(/\/watch\/streamer\/$/);
    await waitFor(async () => (await fan.getByTestId('mode').textContent()).startsWith('WebRTC'), 15000, 'WebRTC mode');
    await waitFor(async () => (await framesDecoded(fan)) > 30, 20000, 'video frames decoded over WebRTC');
    const size = await fan.evaluate(() => {
      const v = document.querySelector('video');
      return [v.videoWidth, v.videoHeight];
    });
    assert.ok(size[0] > 0 && size[1] > 0, `video size ${size}`);

    // Follow.
    await fan.getByTestId('follow').click();
    await waitFor(async () => (await fan.getByTestId('follow').textContent()) === 'Unfollow', 10000, 'followed');
    await screenshots(fan, 'watch');
    assert.deepEqual(await axeViolations(fan), [], 'channel page accessibility');

    // Chat both ways.
    await fan.getByLabel('Send a message').fill('<b>hello</b> from fan');
    await fan.getByRole('button', { name: 'Chat' }).click();
    const studioChat = await streamerBrowser.context.newPage();
    watchErrors(studioChat, errors);
    await studioChat.goto(`${glint.base}/watch/streamer/`);
    const fromFan = studioChat.getByTestId('chat-messages').getByText('<b>hello</b> from fan');
    await fromFan.waitFor({ timeout: 10000 }); // history on join, rendered as text
    await studioChat.getByLabel('Send a message').fill('welcome!');
    await studioChat.getByRole('button', { name: 'Chat' }).click();
    await fan.getByTestId('chat-messages').getByText('welcome!').waitFor({ timeout: 10000 });
    assert.equal(await fan.locator('.chat-list b').count(), 0, 'no HTML injected through chat');
    // The owner has moderation controls; the fan has none.
    assert.ok(await studioChat.getByRole('button', { name: 'Delete message from fan' }).isVisible());
    assert.equal(await fan.getByRole('button', { name: /^Delete message/ }).count(), 0);
    await studioChat.close();

    // The streamer stops and goes live again: the follower gets a toast.
    await studio.getByTestId('stop-publish').click();
    await waitFor(async () => !(await live(glint.base, 'streamer')), 15000, 'stream offline');
    await studio.getByTestId('go-live').click();
    const toast = fan.getByTestId('toast');
    await toast.waitFor({ timeout: 20000 });
    assert.match(await toast.textContent(), /streamer is live: Building Glint live/);

    // The dashboard while live: stats and the broadcasts table (the first one finished).
    await studio.reload();
    await studio.getByTestId('live-stats').waitFor({ timeout: 15000 });
    await studio.getByTestId('broadcasts').waitFor({ timeout: 15000 });
    assert.ok((await studio.locator('[data-testid=broadcasts] tbody tr').count()) >= 2);
    await screenshots(studio, 'dashboard');
    assert.deepEqual(await axeViolations(studio), [], 'dashboard accessibility');

    // Stream info saved from the dashboard shows on the channel page.
    await studio.getByLabel('Title').fill('Glint, second take');
    await studio.getByLabel('Tags (comma separated)').fill('rust, webrtc');
    await studio.getByRole('button', { name: 'Save' }).click();
    await studio.getByText('Saved.').waitFor({ timeout: 10000 });
    await fan.goto(`${glint.base}/watch/streamer/`);
    await fan.getByRole('heading', { name: 'Glint, second take' }).waitFor({ timeout: 10000 });
    assert.match(await fan.locator('.channel-info').textContent(), /rust.*webrtc/);

    // An expired access token is refreshed quietly: the following page still loads.
    const before = await fan.evaluate(() => {
      const s = JSON.parse(localStorage.getItem('glint.session'));
      const old = s.refresh_token;
      s.access_token = 'expired';
      s.expires_at = Date.now() - 1000;
      localStorage.setItem('glint.session', JSON.stringify(s));
      return old;
    });
    await fan.goto(`${glint.base}/following/`);
    await fan.locator('.follow-list').getByText('streamer').waitFor({ timeout: 10000 });
    const after = await fan.evaluate(() => JSON.parse(localStorage.getItem('glint.session')));
    assert.notEqual(after.access_token, 'expired');
    assert.notEqual(after.refresh_token, before, 'refresh tokens rotate');

    await fan.goto(`${glint.base}/login/`);
    assert.deepEqual(await axeViolations(fan), [], 'login page accessibility');
    await screenshots(fan, 'login');
    assert.deepEqual(errors, [], 'no console errors');
  } finally {
    await fanBrowser.close();
    await streamerBrowser.close();
    await glint.stop();
  }
});

test('the channel page falls back to HLS when WebRTC is blocked', { timeout: 120000 }, async () => {
  const glint = await startGlint({ GLINT_WEB_DIR: WEB_DIR });
  const browser = await launchChromium();
  const ffmpeg = spawn('ffmpeg', [
    '-hide_banner', '-loglevel', 'error', '-re',
    '-f', 'lavfi', '-i', 'testsrc2=size=1280x720:rate=30',
    '-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=48000',
    '-t', '90', '-pix_fmt', 'yuv420p', '-c:v', 'libx264', '-preset', 'ultrafast',
    '-tune', 'zerolatency', '-g', '30', '-c:a', 'aac', '-f', 'flv', `${glint.rtmp}/live/test-key`,
  ], { stdio: 'ignore' });
  try {
    const page = await browser.context.newPage();
    const errors = [];
    watchErrors(page, errors);
    // As if the browser (or a network policy) had no WebRTC.
    await page.addInitScript(() => {
      delete window.RTCPeerConnection;
      delete window.webkitRTCPeerConnection;
    });
    await page.goto(`${glint.base}/watch/demo/`);
    await waitFor(async () => (await page.getByTestId('mode').count()) && (await page.getByTestId('mode').textContent()).startsWith('HLS'), 30000, 'HLS mode');
    const playing = await waitFor(
      () => page.evaluate(() => {
        const v = document.querySelector('video');
        return v && v.currentTime > 1 && v.videoHeight > 0 ? { time: v.currentTime, height: v.videoHeight } : null;
      }),
      60000,
      'HLS playing',
    ).catch(async (e) => {
      const state = await page.evaluate(() => ({ state: window.__glintPlayer?.state, text: document.querySelector('[data-testid=player-state]')?.textContent, levels: window.__glintPlayer?.hls?.levels?.length, t: document.querySelector('video')?.currentTime, rs: document.querySelector('video')?.readyState }));
      throw new Error(`${e.message}: ${JSON.stringify(state)}`);
    });
    assert.ok(playing.height > 0);
    // The ladder's renditions can be picked; "Go live" jumps to the live edge.
    const quality = page.getByTestId('quality');
    await quality.waitFor({ timeout: 20000 });
    const options = await quality.locator('option').allTextContents();
    assert.ok(options.length >= 3 && options[0] === 'Auto', `quality options ${options}`);
    await quality.selectOption({ label: options[options.length - 1] });
    await waitFor(
      () => page.evaluate(() => window.__glintPlayer.hls.currentLevel === window.__glintPlayer.hls.levels.length - 1),
      20000,
      'the chosen rendition plays',
    );
    await page.getByRole('button', { name: 'Go live' }).click();
    assert.deepEqual(errors, []);
  } finally {
    ffmpeg.kill('SIGKILL');
    await browser.close();
    await glint.stop();
  }
});

test('an offline channel lists its past broadcasts and plays one', { timeout: 120000 }, async () => {
  const glint = await startGlint({ GLINT_WEB_DIR: WEB_DIR });
  const browser = await launchChromium();
  try {
    const post = async (path, body, token) => {
      const r = await fetch(`${glint.base}${path}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
        body: JSON.stringify(body),
      });
      return r.json();
    };
    const user = await post('/api/users/register', { username: 'vodder', email: 'vodder@example.com', password: 'a good password' });
    const stream = await post('/api/streams', { title: 'Yesterday live' }, user.access_token);
    // An 8 s broadcast over RTMP; when ffmpeg finishes, the stream ends and becomes a replay.
    const ffmpeg = spawn('ffmpeg', [
      '-hide_banner', '-loglevel', 'error', '-re',
      '-f', 'lavfi', '-i', 'testsrc2=size=640x360:rate=30',
      '-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=48000',
      '-t', '8', '-pix_fmt', 'yuv420p', '-c:v', 'libx264', '-preset', 'ultrafast',
      '-tune', 'zerolatency', '-g', '30', '-c:a', 'aac', '-f', 'flv', `${glint.rtmp}/live/${stream.stream_key}`,
    ], { stdio: 'ignore' });
    await new Promise((resolve) => ffmpeg.on('exit', resolve));
    await waitFor(async () => {
      const r = await fetch(`${glint.base}/api/streams/${stream.id}/videos`);
      return (await r.json()).items.length > 0;
    }, 30000, 'the replay is listed');

    const page = await browser.context.newPage();
    const errors = [];
    watchErrors(page, errors);
    await page.goto(`${glint.base}/watch/vodder/`);
    await page.getByTestId('offline').waitFor({ timeout: 15000 });
    const replay = page.getByRole('button', { name: /Yesterday live/ });
    await replay.click();
    await waitFor(async () => (await page.getByTestId('mode').count()) && (await page.getByTestId('mode').textContent()) === 'Replay', 10000, 'replay mode');
    await waitFor(
      () => page.evaluate(() => {
        const v = document.querySelector('video');
        return v && v.currentTime > 1 && v.videoHeight > 0;
      }),
      30000,
      'the replay plays',
    );
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
    await glint.stop();
  }
});
