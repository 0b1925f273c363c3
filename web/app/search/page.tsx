'use client';
// Search channels by name or title (/search/?q=...); live ones first.
import { useEffect, useState } from 'react';
import StreamCard from '@/components/StreamCard';
import { api, type Page, type Stream } from '@/lib/api';

export default function SearchPage() {
  const [q, setQ] = useState('');
  const [found, setFound] = useState<Stream[] | null>(null);
  const [error, setError] = useState('');

  useEffect(() => {
    const query = new URLSearchParams(window.location.search).get('q')?.trim() ?? '';
    setQ(query);
    if (!query) {
      setFound([]);
      return;
    }
    api<Page<Stream>>(`/api/streams?live=all&q=${encodeURIComponent(query)}&limit=48`, { auth: false })
      .then((p) => setFound(p.items))
      .catch((e) => setError(e.message));
  }, []);

  return (
    <>
      <h1>{q ? `Channels matching “${q}”` : 'Search'}</h1>
      {error && <p className="error">{error}</p>}
      {found === null ? (
        !error && <p className="muted">Searching…</p>
      ) : found.length === 0 ? (
        <p className="muted">No channels found.</p>
      ) : (
        <div className="grid">
          {found.map((s) => (
            <StreamCard key={s.id} s={s} />
          ))}
        </div>
      )}
    </>
  );
}
