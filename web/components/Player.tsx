'use client';
// The player: WebRTC (WHEP) first, for sub-second latency; HLS (hls.js, or the browser's own on
// Safari) when WebRTC cannot connect or the viewer picks it. Shows which mode plays and how far
// behind live it is; custom controls for mute, volume, fullscreen, HLS quality and live edge.
import Hls, { type Level } from 'hls.js';
import { useCallback, useEffect, useRef, useState } from 'react';
import { HttpError, inboundVideo, playWhep, type Session } from '@/lib/webrtc';

export type Mode = 'webrtc' | 'hls';

/** WebRTC that has not connected after this long gives way to HLS. */
const WEBRTC_CONNECT_TIMEOUT_MS = 8000;

declare global {
  interface Window {
    /** For tests and the curious: what the player is doing. */
    __glintPlayer?: { mode: Mode | null; state: string; pc: RTCPeerConnection | null; hls: Hls | null };
  }
}

export default function Player({ stream, hlsUrl, vod = false }: { stream: string; hlsUrl?: string; vod?: boolean }) {
  const video = useRef<HTMLVideoElement>(null);
  const box = useRef<HTMLDivElement>(null);
  const [mode, setMode] = useState<Mode | null>(vod ? 'hls' : null);
  const [state, setState] = useState('connecting…');
  const [latency, setLatency] = useState<number | null>(null);
  const [muted, setMuted] = useState(true);
  const [volume, setVolume] = useState(1);
  const [levels, setLevels] = useState<Level[]>([]);
  const [level, setLevel] = useState(-1);
  const hlsRef = useRef<Hls | null>(null);
  const rtc = useRef<Session | null>(null);

  const publish = useCallback((m: Mode | null, s: string) => {
    window.__glintPlayer = { mode: m, state: s, pc: rtc.current?.pc ?? null, hls: hlsRef.current };
  }, []);

  // Which mode: WebRTC unless unavailable; the viewer's choice is remembered.
  useEffect(() => {
    if (vod) return;
    const chosen = window.localStorage.getItem('glint.mode');
    const webrtcAvailable = typeof window.RTCPeerConnection === 'function';
    setMode(!webrtcAvailable || (chosen === 'hls' && hlsUrl) ? 'hls' : 'webrtc');
  }, [vod, hlsUrl]);

  // WebRTC.
  useEffect(() => {
    if (mode !== 'webrtc' || !video.current) return;
    const el = video.current;
    let cancelled = false;
    let retry: ReturnType<typeof setTimeout> | undefined;
    const fallBack = (why: string) => {
      if (cancelled) return;
      if (hlsUrl) {
        setState(`${why}; switching to HLS`);
        setMode('hls');
      } else {
        setState(why);
      }
    };
    const start = async () => {
      setState('connecting…');
      publish('webrtc', 'connecting');
      try {
        const s = await playWhep(stream, el);
        if (cancelled) {
          await s.stop();
          return;
        }
        rtc.current = s;
        publish('webrtc', 'connecting');
        const timer = setTimeout(() => {
          if (s.pc.connectionState !== 'connected') fallBack('WebRTC could not connect');
        }, WEBRTC_CONNECT_TIMEOUT_MS);
        s.pc.onconnectionstatechange = () => {
          const st = s.pc.connectionState;
          if (st === 'connected') {
            clearTimeout(timer);
            setState('live');
            publish('webrtc', 'live');
            el.play().catch(() => undefined);
          } else if (st === 'failed') {
            clearTimeout(timer);
            fallBack('WebRTC connection failed');
          } else if (st === 'disconnected' || st === 'closed') {
            // The publisher left or the server restarted: ask again.
            clearTimeout(timer);
            if (!cancelled) retry = setTimeout(start, 1500);
          }
        };
      } catch (e) {
        if (cancelled) return;
        if (e instanceof HttpError && (e.status === 409 || e.status === 404)) {
          // 409 (+ Retry-After): nobody publishes yet (draft-ietf-wish-whep); 404: no such stream.
          setState('offline — waiting for the stream to start');
          publish('webrtc', 'offline');
          retry = setTimeout(start, 3000);
        } else {
          fallBack(`WebRTC unavailable (${(e as Error).message})`);
        }
      }
    };
    start();
    const stats = setInterval(async () => {
      const pc = rtc.current?.pc;
      if (!pc || pc.connectionState !== 'connected') return;
      const v = await inboundVideo(pc);
      setLatency(v.delayMs);
    }, 1000);
    return () => {
      cancelled = true;
      clearTimeout(retry);
      clearInterval(stats);
      rtc.current?.stop();
      rtc.current = null;
      el.srcObject = null;
    };
  }, [mode, stream, hlsUrl, publish]);

  // HLS.
  useEffect(() => {
    if (mode !== 'hls' || !video.current) return;
    const el = video.current;
    if (!hlsUrl) {
      setState('HLS is not available for this stream');
      return;
    }
    setState('loading…');
    publish('hls', 'loading');
    let hls: Hls | null = null;
    let stats: ReturnType<typeof setInterval> | undefined;
    if (Hls.isSupported()) {
      hls = new Hls({
        // glint serves Low-Latency HLS (parts, blocking reloads): the player stays its
        // PART-HOLD-BACK (~1 s) behind the live edge. From a CDN of standard playlists,
        // two segments behind.
        lowLatencyMode: true,
        // Catch up (10 % faster) when behind the target, e.g. after the start decoded from the
        // keyframe before the live edge (docs/benchmarks.md, LL-HLS).
        maxLiveSyncPlaybackRate: 1.1,
        liveSyncDurationCount: 2,
        // The master playlist appears shortly after the stream goes live (once every
        // rendition has a part): keep asking, 404s included (hls.js gives up on 4xx).
        manifestLoadPolicy: {
          default: {
            maxTimeToFirstByteMs: 10000,
            maxLoadTimeMs: 20000,
            timeoutRetry: { maxNumRetry: 5, retryDelayMs: 1000, maxRetryDelayMs: 4000 },
            errorRetry: {
              maxNumRetry: 30,
              retryDelayMs: 1000,
              maxRetryDelayMs: 2000,
              shouldRetry: (cfg, count) => !!cfg && count < cfg.maxNumRetry,
            },
          },
        },
      });
      hlsRef.current = hls;
      hls.on(Hls.Events.MANIFEST_PARSED, (_e, data) => {
        setLevels(data.levels);
        el.play().catch(() => undefined);
      });
      hls.on(Hls.Events.FRAG_BUFFERED, () => {
        setState(vod ? 'replay' : 'live');
        publish('hls', 'playing');
      });
      hls.on(Hls.Events.ERROR, (_e, data) => {
        if (data.fatal) {
          setState(`HLS error: ${data.details}`);
          if (data.type === Hls.ErrorTypes.MEDIA_ERROR) hls?.recoverMediaError();
        }
      });
      hls.loadSource(hlsUrl);
      hls.attachMedia(el);
      stats = setInterval(() => setLatency(hls && Number.isFinite(hls.latency) ? hls.latency * 1000 : null), 1000);
    } else if (el.canPlayType('application/vnd.apple.mpegurl')) {
      el.src = hlsUrl; // Safari
      el.play().catch(() => undefined);
      setState(vod ? 'replay' : 'live');
    } else {
      setState('this browser plays neither WebRTC nor HLS');
    }
    publish('hls', 'loading');
    return () => {
      clearInterval(stats);
      hls?.destroy();
      hlsRef.current = null;
      setLevels([]);
      el.removeAttribute('src');
    };
  }, [mode, hlsUrl, vod, publish]);

  useEffect(() => {
    if (video.current) {
      video.current.muted = muted;
      video.current.volume = volume;
    }
  }, [muted, volume]);

  const choose = (m: Mode) => {
    window.localStorage.setItem('glint.mode', m);
    setLatency(null);
    setMode(m);
  };
  const pickLevel = (l: number) => {
    setLevel(l);
    if (hlsRef.current) hlsRef.current.currentLevel = l;
  };
  const goLive = () => {
    const h = hlsRef.current;
    if (h && h.liveSyncPosition !== null && video.current) video.current.currentTime = h.liveSyncPosition;
  };
  const fullscreen = () => {
    if (document.fullscreenElement) document.exitFullscreen();
    else box.current?.requestFullscreen?.();
  };

  return (
    <div className="player" ref={box}>
      <video ref={video} autoPlay playsInline muted={muted} aria-label={`${stream} video`} data-testid="video" />
      <div className="player-bar">
        <span className="badge" data-testid="mode" aria-live="polite">
          {vod ? 'Replay' : mode === 'webrtc' ? 'WebRTC' : mode === 'hls' ? 'HLS' : '…'}
          {latency !== null && !vod ? ` · ${(latency / 1000).toFixed(1)} s behind` : ''}
        </span>
        <span className="player-state" data-testid="player-state">{state}</span>
        <span className="spacer" />
        <button type="button" onClick={() => setMuted(!muted)} aria-pressed={!muted}>
          {muted ? 'Unmute' : 'Mute'}
        </button>
        <label className="volume">
          <span className="sr-only">Volume</span>
          <input type="range" min={0} max={1} step={0.05} value={volume} onChange={(e) => setVolume(Number(e.target.value))} />
        </label>
        {mode === 'hls' && levels.length > 1 && (
          <label>
            <span className="sr-only">Quality</span>
            <select value={level} onChange={(e) => pickLevel(Number(e.target.value))} data-testid="quality">
              <option value={-1}>Auto</option>
              {levels.map((l, i) => (
                <option key={i} value={i}>
                  {l.height ? `${l.height}p` : `${Math.round(l.bitrate / 1000)} kbps`}
                </option>
              ))}
            </select>
          </label>
        )}
        {mode === 'hls' && !vod && (
          <button type="button" onClick={goLive}>
            Go live
          </button>
        )}
        {!vod && hlsUrl && (
          <button type="button" onClick={() => choose(mode === 'webrtc' ? 'hls' : 'webrtc')}>
            {mode === 'webrtc' ? 'Use HLS' : 'Use WebRTC'}
          </button>
        )}
        <button type="button" onClick={fullscreen}>
          Fullscreen
        </button>
      </div>
    </div>
  );
}
