// Helpers for the browser tests: start the real glint binary on port 0, launch Debian's
// Chromium through playwright-core, and poll with deadlines (never sleep for an event).
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

export const GLINT_BIN = process.env.GLINT_BIN ?? join(process.env.CARGO_TARGET_DIR ?? '../../target', 'debug', 'glint');

export const CHROMIUM_ARGS = [
  '--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream',
  '--autoplay-policy=no-user-gesture-required', '--allow-loopback-in-peer-connection',
  '--disable-features=WebRtcHideLocalIpsWithMdns',
];

/** Start glint on 127.0.0.1 with ephemeral ports; resolves once it logs its addresses. Serves
 * the built-in pages unless `extraEnv` names a web build (GLINT_WEB_DIR). */
export async function startGlint(extraEnv = {}) {
  const dataDir = mkdtempSync(join(tmpdir(), 'glint-data-'));
  const { GLINT_WEB_DIR: _ignored, ...inherited } = process.env;
  const proc = spawn(GLINT_BIN, [], {
    env: {
      ...inherited, GLINT_HTTP: '127.0.0.1:0', GLINT_UDP: '127.0.0.1:0', GLINT_RTMP: '127.0.0.1:0', GLINT_DATA_DIR: dataDir,
      GLINT_STREAM_KEYS: 'demo=test-key', GLINT_LOG: 'info,media=debug', ...extraEnv,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let logs = '';
  const up = new Promise((resolve, reject) => {
    const onData = (d) => {
      logs += d.toString();
      const m = logs.match(/glint is up.*http=(\S+).*rtmp=(\S+)/);
      if (m) resolve({ http: m[1], rtmp: m[2] });
    };
    proc.stdout.on('data', onData);
    proc.stderr.on('data', onData);
    proc.on('exit', (code) => reject(new Error(`glint exited with ${code}:\n${logs}`)));
  });
  const { http, rtmp } = await withTimeout(up, 20000, 'glint did not start');
  return {
    base: `http://${http}`,
    rtmp: `rtmp://${rtmp}`,
    pid: proc.pid,
    logs: () => logs,
    async stop() {
      const exited = new Promise((r) => proc.on('exit', r));
      proc.kill('SIGTERM');
      await withTimeout(exited, 10000, 'glint did not stop on SIGTERM');
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

export async function launchChromium() {
  const userDataDir = mkdtempSync(join(tmpdir(), 'glint-chromium-'));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    headless: true,
    args: CHROMIUM_ARGS,
  });
  return {
    context,
    async close() {
      await context.close();
      rmSync(userDataDir, { recursive: true, force: true });
    },
  };
}

export function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`timeout: ${what}`)), ms); }),
  ]);
}

/** Poll `fn` until it returns a truthy value or the deadline passes. */
export async function waitFor(fn, ms, what) {
  const deadline = Date.now() + ms;
  let last;
  while (Date.now() < deadline) {
    last = await fn();
    if (last) return last;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timeout after ${ms} ms: ${what} (last: ${JSON.stringify(last)})`);
}

/** inbound-rtp stats of the page's window.glint.pc, by kind. */
export async function inboundStats(page) {
  return page.evaluate(async () => {
    const pc = window.glint && window.glint.pc;
    if (!pc) return null;
    const out = {};
    (await pc.getStats()).forEach((r) => {
      if (r.type === 'inbound-rtp') out[r.kind] = { packetsReceived: r.packetsReceived, framesDecoded: r.framesDecoded, framesDropped: r.framesDropped, bytesReceived: r.bytesReceived, codecId: r.codecId };
    });
    return out;
  });
}
