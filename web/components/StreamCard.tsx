import type { Stream } from '@/lib/api';

/** A channel in a grid: thumbnail (while live), title, streamer, category, viewers. */
export default function StreamCard({ s }: { s: Stream }) {
  return (
    <a className="card" href={`/watch/${encodeURIComponent(s.name)}/`} data-testid="stream-card">
      <div className="thumb">
        {s.live && s.thumbnail_url ? (
          // eslint-disable-next-line @next/next/no-img-element
          <img src={s.thumbnail_url} alt="" loading="lazy" onError={(e) => (e.currentTarget.style.visibility = 'hidden')} />
        ) : null}
        {s.live ? <span className="live-badge">LIVE · {s.viewers} watching</span> : <span className="offline-badge">Offline</span>}
      </div>
      <div className="card-body">
        <strong className="card-title">{s.title}</strong>
        <span className="muted">{s.name}</span>
        {s.category && <span className="tag">{s.category}</span>}
      </div>
    </a>
  );
}
