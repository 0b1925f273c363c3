'use client';
// A category (/category/<slug>/): its live channels.
import { useEffect, useState } from 'react';
import StreamCard from '@/components/StreamCard';
import { api, pathParam, type Category, type Page, type Stream } from '@/lib/api';

export default function CategoryPage() {
  const [slug, setSlug] = useState('');
  const [name, setName] = useState('');
  const [streams, setStreams] = useState<Stream[] | null>(null);
  const [error, setError] = useState('');

  useEffect(() => {
    const s = pathParam('/category/');
    setSlug(s);
    if (!s) return;
    api<Category[]>('/api/categories', { auth: false })
      .then((all) => setName(all.find((c) => c.slug === s)?.name ?? s))
      .catch(() => setName(s));
    api<Page<Stream>>(`/api/streams?category=${encodeURIComponent(s)}&limit=48`, { auth: false })
      .then((p) => setStreams(p.items))
      .catch((e) => setError(e.message));
  }, []);

  return (
    <>
      <h1>{name || slug || 'Category'}</h1>
      {error && <p className="error">{error}</p>}
      {streams === null ? (
        !error && <p className="muted">Loading…</p>
      ) : streams.length === 0 ? (
        <p className="muted">No one is live in this category.</p>
      ) : (
        <div className="grid">
          {streams.map((s) => (
            <StreamCard key={s.id} s={s} />
          ))}
        </div>
      )}
    </>
  );
}
