'use client';
// The creator dashboard: the channel's stream key (hidden, copy, rotate), ready-to-paste OBS
// settings (WHIP and RTMP), publishing from this browser's camera, title/category/tags, a live
// preview and stats, and the analytics of past broadcasts as charts.
import { useCallback, useEffect, useRef, useState } from 'react';
import LineChart from '@/components/LineChart';
import Player from '@/components/Player';
import { api, ApiError, formatDuration, streamByName, type Broadcast, type Category, type Page, type Sample, type Stream } from '@/lib/api';
import { useSession } from '@/lib/session';
import { publishWhip, type Session as RtcSession } from '@/lib/webrtc';

interface Ingest {
  rtmp_port: number;
}

function Copy({ value, label }: { value: string; label: string }) {
  const [done, setDone] = useState(false);
  return (
    <button
      type="button"
      onClick={() =>
        navigator.clipboard
          ?.writeText(value)
          .then(() => setDone(true))
          .catch(() => undefined)
      }
      aria-label={`Copy ${label}`}
    >
      {done ? 'Copied' : 'Copy'}
    </button>
  );
}

export default function Dashboard() {
  const { session, ready } = useSession();
  const [stream, setStream] = useState<Stream | null | undefined>(undefined);
  const [categories, setCategories] = useState<Category[]>([]);
  const [ingest, setIngest] = useState<Ingest | null>(null);
  const [error, setError] = useState('');

  const load = useCallback(async (username: string) => {
    try {
      const s = await streamByName(username);
      setStream(s ? await api<Stream>(`/api/streams/${s.id}`) : null);
    } catch (e) {
      setError((e as Error).message);
    }
  }, []);

  useEffect(() => {
    if (!ready) return;
    if (!session) {
      window.location.href = '/login/?next=/dashboard/';
      return;
    }
    load(session.user.username);
    api<Category[]>('/api/categories', { auth: false }).then(setCategories).catch(() => undefined);
    api<Ingest>('/api/ingest', { auth: false }).then(setIngest).catch(() => undefined);
  }, [ready, session, load]);

  if (!session || stream === undefined) return <p className="muted">{error || 'Loading…'}</p>;
  if (stream === null) return <CreateChannel categories={categories} onCreated={() => load(session.user.username)} />;
  return (
    <div className="dashboard">
      <h1>Dashboard</h1>
      {error && <p className="error">{error}</p>}
      <StreamSetup stream={stream} ingest={ingest} onKey={(k) => setStream({ ...stream, stream_key: k })} />
      <BrowserPublish stream={stream} />
      <StreamInfo stream={stream} categories={categories} onSaved={setStream} />
      <LiveStats stream={stream} onLive={() => load(session.user.username)} />
      <Analytics stream={stream} />
    </div>
  );
}

/** The title and category fields of the create and edit forms. */
function TitleAndCategory(p: {
  label: string;
  title: string;
  setTitle: (t: string) => void;
  category: string;
  setCategory: (c: string) => void;
  categories: Category[];
}) {
  return (
    <>
      <label>
        {p.label}
        <input value={p.title} onChange={(e) => p.setTitle(e.target.value)} required maxLength={140} />
      </label>
      <label>
        Category
        <select value={p.category} onChange={(e) => p.setCategory(e.target.value)}>
          <option value="">None</option>
          {p.categories.map((c) => (
            <option key={c.slug} value={c.slug}>
              {c.name}
            </option>
          ))}
        </select>
      </label>
    </>
  );
}

function CreateChannel({ categories, onCreated }: { categories: Category[]; onCreated: () => void }) {
  const [title, setTitle] = useState('');
  const [category, setCategory] = useState('');
  const [error, setError] = useState('');
  const submit = async (e: React.FormEvent) => {
    e.preventDefault();
    try {
      await api('/api/streams', { method: 'POST', body: { title, ...(category ? { category } : {}) } });
      onCreated();
    } catch (err) {
      setError((err as Error).message);
    }
  };
  return (
    <form className="auth" onSubmit={submit}>
      <h1>Create your channel</h1>
      <TitleAndCategory label="Stream title" title={title} setTitle={setTitle} category={category} setCategory={setCategory} categories={categories} />
      {error && <p className="error">{error}</p>}
      <button type="submit">Create channel</button>
    </form>
  );
}

function StreamSetup({ stream, ingest, onKey }: { stream: Stream; ingest: Ingest | null; onKey: (k: string) => void }) {
  const [shown, setShown] = useState(false);
  const [origin, setOrigin] = useState('');
  const [host, setHost] = useState('');
  useEffect(() => {
    setOrigin(window.location.origin);
    setHost(window.location.hostname);
  }, []);
  const key = stream.stream_key ?? '';
  const rotate = async () => {
    if (!window.confirm('Make a new stream key? The current one stops working at once.')) return;
    const r = await api<{ stream_key: string }>(`/api/streams/${stream.id}/key`, { method: 'POST' });
    onKey(r.stream_key);
  };
  const whip = `${origin}/whip/${stream.name}`;
  const rtmp = `rtmp://${host}:${ingest?.rtmp_port ?? 1935}/live`;
  return (
    <section className="panel" aria-labelledby="setup-h">
      <h2 id="setup-h">Stream key and OBS settings</h2>
      <div className="field">
        <span>Stream key</span>
        <code data-testid="stream-key">{shown ? key : '•'.repeat(24)}</code>
        <button type="button" onClick={() => setShown(!shown)} aria-pressed={shown}>
          {shown ? 'Hide' : 'Show'}
        </button>
        <Copy value={key} label="stream key" />
        <button type="button" onClick={rotate}>
          Rotate
        </button>
      </div>
      <h3>OBS over WHIP (WebRTC, lowest latency)</h3>
      <p className="muted small">Settings → Stream → Service: WHIP.</p>
      <div className="field">
        <span>Server</span>
        <code data-testid="whip-url">{whip}</code>
        <Copy value={whip} label="WHIP server" />
      </div>
      <div className="field">
        <span>Bearer Token</span>
        <code>{shown ? key : '•'.repeat(24)}</code>
        <Copy value={key} label="bearer token" />
      </div>
      <h3>OBS over RTMP</h3>
      <p className="muted small">Settings → Stream → Service: Custom… Keyframe interval 2 s recommended.</p>
      <div className="field">
        <span>Server</span>
        <code data-testid="rtmp-url">{rtmp}</code>
        <Copy value={rtmp} label="RTMP server" />
      </div>
      <div className="field">
        <span>Stream Key</span>
        <code>{shown ? key : '•'.repeat(24)}</code>
        <Copy value={key} label="RTMP stream key" />
      </div>
    </section>
  );
}

function BrowserPublish({ stream }: { stream: Stream }) {
  const preview = useRef<HTMLVideoElement>(null);
  const session = useRef<RtcSession | null>(null);
  const media = useRef<MediaStream | null>(null);
  const [state, setState] = useState('');
  const stop = useCallback(async () => {
    await session.current?.stop();
    media.current?.getTracks().forEach((t) => t.stop());
    session.current = null;
    media.current = null;
    setState('');
  }, []);
  useEffect(() => () => void stop(), [stop]);
  const start = async () => {
    try {
      setState('asking for the camera…');
      const m = await navigator.mediaDevices.getUserMedia({ video: { width: 1280, height: 720 }, audio: true });
      media.current = m;
      if (preview.current) preview.current.srcObject = m;
      const s = await publishWhip(stream.name, stream.stream_key ?? '', m);
      session.current = s;
      setState('connecting…');
      s.pc.onconnectionstatechange = () => setState(s.pc.connectionState === 'connected' ? 'live' : s.pc.connectionState);
    } catch (e) {
      media.current?.getTracks().forEach((t) => t.stop());
      setState(`could not publish: ${(e as Error).message}`);
    }
  };
  const publishing = state !== '' && !state.startsWith('could not');
  return (
    <section className="panel" aria-labelledby="publish-h">
      <h2 id="publish-h">Go live from this browser</h2>
      <p className="muted small">Your camera and microphone, sent over WHIP with your stream key.</p>
      <video ref={preview} className="preview" autoPlay playsInline muted hidden={!publishing} aria-label="Camera preview" />
      <div className="row">
        {publishing ? (
          <button type="button" onClick={stop} data-testid="stop-publish">
            Stop
          </button>
        ) : (
          <button type="button" onClick={start} data-testid="go-live">
            Go live with camera
          </button>
        )}
        <span data-testid="publish-state" aria-live="polite">
          {state}
        </span>
      </div>
    </section>
  );
}

function StreamInfo({ stream, categories, onSaved }: { stream: Stream; categories: Category[]; onSaved: (s: Stream) => void }) {
  const [title, setTitle] = useState(stream.title);
  const [category, setCategory] = useState(stream.category ?? '');
  const [tags, setTags] = useState(stream.tags.join(', '));
  const [msg, setMsg] = useState('');
  const save = async (e: React.FormEvent) => {
    e.preventDefault();
    try {
      const s = await api<Stream>(`/api/streams/${stream.id}`, {
        method: 'PUT',
        body: {
          title,
          category: category || null,
          tags: tags
            .split(',')
            .map((t) => t.trim())
            .filter(Boolean),
        },
      });
      onSaved({ ...s, stream_key: stream.stream_key });
      setMsg('Saved.');
    } catch (err) {
      setMsg(err instanceof ApiError ? err.message : 'Could not save');
    }
  };
  return (
    <section className="panel" aria-labelledby="info-h">
      <h2 id="info-h">Stream info</h2>
      <form onSubmit={save} className="stack">
        <TitleAndCategory label="Title" title={title} setTitle={setTitle} category={category} setCategory={setCategory} categories={categories} />
        <label>
          Tags (comma separated)
          <input value={tags} onChange={(e) => setTags(e.target.value)} />
        </label>
        <div className="row">
          <button type="submit">Save</button>
          <span aria-live="polite">{msg}</span>
        </div>
      </form>
    </section>
  );
}

function LiveStats({ stream, onLive }: { stream: Stream; onLive: () => void }) {
  const [live, setLive] = useState(stream.live);
  const [viewers, setViewers] = useState(stream.viewers);
  const [last, setLast] = useState<Sample | null>(null);
  const [since, setSince] = useState<number | null>(null);
  // The newest sample seen, so each poll fetches only what is new.
  const lastAt = useRef(0);
  const [preview, setPreview] = useState(false);
  useEffect(() => {
    let stopped = false;
    const poll = async () => {
      try {
        const s = await api<Stream>(`/api/streams/${stream.id}`);
        if (stopped) return;
        setLive((was) => {
          if (!was && s.live) onLive();
          return s.live;
        });
        setViewers(s.viewers);
        const page = await api<Page<Broadcast>>(`/api/streams/${stream.id}/analytics?limit=1`);
        const b = page.items[0];
        if (b && b.ended_at === null) {
          setSince(b.started_at);
          const d = await api<{ samples: Sample[] }>(`/api/streams/${stream.id}/analytics/${b.id}?since=${lastAt.current}`);
          const newest = d.samples[d.samples.length - 1];
          if (newest) {
            lastAt.current = newest.at;
            setLast(newest);
          }
        } else {
          setSince(null);
          setLast(null);
        }
      } catch {
        /* next round */
      }
    };
    poll();
    const t = setInterval(poll, 5000);
    return () => {
      stopped = true;
      clearInterval(t);
    };
  }, [stream.id, onLive]);
  return (
    <section className="panel" aria-labelledby="live-h">
      <h2 id="live-h">Live</h2>
      {live ? (
        <>
          <dl className="stats" data-testid="live-stats">
            <div>
              <dt>Status</dt>
              <dd>
                <span className="live-badge inline">LIVE</span>
              </dd>
            </div>
            <div>
              <dt>Viewers</dt>
              <dd>{viewers}</dd>
            </div>
            <div>
              <dt>Live for</dt>
              <dd>{since ? formatDuration(Date.now() - since) : '—'}</dd>
            </div>
            <div>
              <dt>Ingest</dt>
              <dd>{last?.ingest_kbps != null ? `${last.ingest_kbps} kbps` : '—'}</dd>
            </div>
            <div>
              <dt>Keyframe interval</dt>
              <dd>{last?.keyframe_interval_ms != null ? `${(last.keyframe_interval_ms / 1000).toFixed(1)} s` : '—'}</dd>
            </div>
          </dl>
          <label>
            <input type="checkbox" checked={preview} onChange={(e) => setPreview(e.target.checked)} /> Show what viewers see
          </label>
          {preview && <Player stream={stream.name} hlsUrl={stream.hls_url} />}
        </>
      ) : (
        <p className="muted">Offline. Start streaming from OBS or this browser.</p>
      )}
    </section>
  );
}

function Analytics({ stream }: { stream: Stream }) {
  const [broadcasts, setBroadcasts] = useState<Broadcast[] | null>(null);
  const [chosen, setChosen] = useState<string | null>(null);
  const [samples, setSamples] = useState<Sample[]>([]);
  useEffect(() => {
    api<Page<Broadcast>>(`/api/streams/${stream.id}/analytics?limit=20`)
      .then((p) => {
        setBroadcasts(p.items);
        setChosen((c) => c ?? p.items[0]?.id ?? null);
      })
      .catch(() => setBroadcasts([]));
  }, [stream.id, stream.live]);
  useEffect(() => {
    if (!chosen) return;
    api<{ samples: Sample[] }>(`/api/streams/${stream.id}/analytics/${chosen}`)
      .then((d) => setSamples(d.samples))
      .catch(() => setSamples([]));
  }, [stream.id, chosen]);
  return (
    <section className="panel" aria-labelledby="analytics-h">
      <h2 id="analytics-h">Past broadcasts</h2>
      {broadcasts === null ? (
        <p className="muted">Loading…</p>
      ) : broadcasts.length === 0 ? (
        <p className="muted">No broadcasts yet.</p>
      ) : (
        <>
          <div className="table-wrap">
            <table data-testid="broadcasts">
              <thead>
                <tr>
                  <th scope="col">Started</th>
                  <th scope="col">Duration</th>
                  <th scope="col">Peak</th>
                  <th scope="col">Average</th>
                  <th scope="col">Unique</th>
                  <th scope="col">Chat</th>
                  <th scope="col">New followers</th>
                </tr>
              </thead>
              <tbody>
                {broadcasts.map((b) => (
                  <tr key={b.id} className={b.id === chosen ? 'chosen' : ''}>
                    <td>
                      <button type="button" className="link" onClick={() => setChosen(b.id)} aria-pressed={b.id === chosen}>
                        {new Date(b.started_at).toLocaleString()}
                        {b.ended_at === null && ' (live)'}
                      </button>
                    </td>
                    <td>{formatDuration(b.duration_ms)}</td>
                    <td>{b.peak_viewers}</td>
                    <td>{b.average_viewers.toFixed(1)}</td>
                    <td>{b.unique_viewers}</td>
                    <td>{b.chat_messages}</td>
                    <td>{b.follows_gained}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
          <div className="charts">
            <LineChart label="Viewers" unit="viewers" points={samples.map((s) => ({ t: s.at, v: s.viewers }))} />
            <LineChart label="Ingest bitrate" unit="kbps" points={samples.map((s) => ({ t: s.at, v: s.ingest_kbps }))} />
            <LineChart label="Keyframe interval" unit="ms" points={samples.map((s) => ({ t: s.at, v: s.keyframe_interval_ms }))} />
          </div>
        </>
      )}
    </section>
  );
}
