'use client';
// Home: live channels first (most viewers first), then the categories.
import { useEffect, useState } from 'react';
import StreamCard from '@/components/StreamCard';
import { api, type Category, type Page, type Stream } from '@/lib/api';

export default function Home() {
  const [live, setLive] = useState<Stream[] | null>(null);
  const [categories, setCategories] = useState<Category[]>([]);
  const [error, setError] = useState('');

  useEffect(() => {
    const load = () =>
      api<Page<Stream>>('/api/streams?limit=48', { auth: false })
        .then((p) => setLive(p.items))
        .catch((e) => setError(e.message));
    load();
    api<Category[]>('/api/categories', { auth: false }).then(setCategories).catch(() => undefined);
    const t = setInterval(load, 10000);
    return () => clearInterval(t);
  }, []);

  return (
    <>
      <h1>Live now</h1>
      {error && <p className="error">{error}</p>}
      {live === null ? (
        <p className="muted">Loading…</p>
      ) : live.length === 0 ? (
        <p className="muted">Nobody is live right now. Go live from your <a href="/dashboard/">dashboard</a>.</p>
      ) : (
        <div className="grid" data-testid="live-streams">
          {live.map((s) => (
            <StreamCard key={s.id} s={s} />
          ))}
        </div>
      )}
      <h2>Categories</h2>
      <ul className="categories">
        {categories.map((c) => (
          <li key={c.slug}>
            <a href={`/category/${c.slug}/`}>
              <strong>{c.name}</strong>
              <span className="muted">{c.live_streams} live</span>
            </a>
          </li>
        ))}
      </ul>
    </>
  );
}
