'use client';
// A channel (/watch/<name>/): the player (WebRTC, HLS fallback) and chat while live; past
// broadcasts while offline; viewer count and follow button.
import { useCallback, useEffect, useState } from 'react';
import Chat from '@/components/Chat';
import Player from '@/components/Player';
import { api, ApiError, formatDuration, pathParam, streamByName, type FollowEntry, type Page, type Stream, type Video } from '@/lib/api';
import { useSession } from '@/lib/session';

interface LiveEntry {
  name: string;
  viewers: number;
  hls_url?: string;
}

export default function WatchPage() {
  const { session } = useSession();
  const [name, setName] = useState('');
  const [stream, setStream] = useState<Stream | null | undefined>(undefined);
  /** A stream configured by key (no channel record), live in the media core. */
  const [keyed, setKeyed] = useState<LiveEntry | null>(null);
  const [viewers, setViewers] = useState<number | null>(null);
  const [videos, setVideos] = useState<Video[]>([]);
  const [replay, setReplay] = useState<Video | null>(null);
  const [following, setFollowing] = useState<boolean | null>(null);
  const [error, setError] = useState('');

  const refresh = useCallback(async (n: string) => {
    try {
      const s = await streamByName(n);
      setStream(s);
      if (s) {
        setViewers(s.live ? s.viewers : null);
      } else {
        const live = await api<LiveEntry[]>('/api/live', { auth: false });
        setKeyed(live.find((l) => l.name === n) ?? null);
      }
    } catch (e) {
      setError((e as Error).message);
    }
  }, []);

  useEffect(() => {
    const n = pathParam('/watch/');
    setName(n);
    if (!n) return;
    document.title = `${n} — Glint`;
    refresh(n);
    const t = setInterval(() => refresh(n), 5000);
    return () => clearInterval(t);
  }, [refresh]);

  const streamId = stream?.id;
  const live = stream?.live ?? false;
  useEffect(() => {
    if (!streamId || live) return;
    api<Page<Video>>(`/api/streams/${streamId}/videos?limit=12`, { auth: false })
      .then((p) => setVideos(p.items))
      .catch(() => setVideos([]));
  }, [streamId, live]);

  // Channels the operator configured by key have no account behind them: nothing to follow.
  const owner = stream?.owner?.startsWith('operator:') ? undefined : stream?.owner;
  useEffect(() => {
    if (!session || !owner) return setFollowing(null);
    api<Page<FollowEntry>>(`/api/users/${session.user.id}/following?limit=100`)
      .then((p) => setFollowing(p.items.some((f) => f.id === owner)))
      .catch(() => setFollowing(null));
  }, [session, owner]);

  const toggleFollow = async () => {
    if (!owner) return;
    try {
      if (following) await api(`/api/follows/${owner}`, { method: 'DELETE' });
      else await api('/api/follows', { method: 'POST', body: { channel_id: owner } });
      setFollowing(!following);
    } catch (e) {
      if (e instanceof ApiError && e.status === 409) setFollowing(true);
      else setError((e as Error).message);
    }
  };

  if (stream === undefined && !error) return <p className="muted">Loading…</p>;
  if (stream === null && !keyed) {
    return (
      <>
        <h1>{name}</h1>
        <p className="muted">This channel does not exist or is not live.</p>
      </>
    );
  }
  const isLive = live || !!keyed;
  const hlsUrl = stream?.hls_url ?? keyed?.hls_url;
  const shownViewers = viewers ?? keyed?.viewers ?? null;

  return (
    <div className="watch">
      <div className="watch-main">
        {isLive ? (
          <Player key={name} stream={name} hlsUrl={hlsUrl} />
        ) : replay?.hls_url ? (
          <Player key={replay.id} stream={name} hlsUrl={replay.hls_url} vod />
        ) : (
          <div className="offline-box" data-testid="offline">
            <p>{name} is offline.</p>
          </div>
        )}
        <div className="channel-info">
          <div>
            <h1 className="stream-title">{stream?.title ?? name}</h1>
            <p className="muted">
              {name}
              {stream?.category && (
                <>
                  {' · '}
                  <a href={`/category/${stream.category}/`}>{stream.category}</a>
                </>
              )}
              {isLive && shownViewers !== null && (
                <>
                  {' · '}
                  <span data-testid="viewers">{shownViewers} watching</span>
                </>
              )}
              {stream?.tags?.map((t) => (
                <span key={t} className="tag">
                  {t}
                </span>
              ))}
            </p>
          </div>
          {session && owner && owner !== session.user.id && following !== null && (
            <button type="button" onClick={toggleFollow} aria-pressed={following} data-testid="follow">
              {following ? 'Unfollow' : 'Follow'}
            </button>
          )}
          {!session && owner && (
            <a className="button" href={`/login/?next=/watch/${encodeURIComponent(name)}/`}>
              Log in to follow
            </a>
          )}
        </div>
        {error && <p className="error">{error}</p>}
        {!isLive && videos.length > 0 && (
          <section aria-label="Past broadcasts">
            <h2>Past broadcasts</h2>
            <ul className="videos">
              {videos.map((v) => (
                <li key={v.id}>
                  <button type="button" className="link" onClick={() => setReplay(v)} aria-pressed={replay?.id === v.id}>
                    {v.title} — {new Date(v.started_at).toLocaleString()} ({formatDuration(v.duration_ms)})
                  </button>
                </li>
              ))}
            </ul>
          </section>
        )}
      </div>
      {stream && <Chat channel={name} ownerId={stream.owner} onViewers={(n) => live && setViewers(n)} />}
    </div>
  );
}
