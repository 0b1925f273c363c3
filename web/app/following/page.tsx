'use client';
// The channels you follow, live ones first.
import Link from 'next/link';
import { useEffect, useState } from 'react';
import { api, type FollowEntry, type Page } from '@/lib/api';
import { useSession } from '@/lib/session';

export default function FollowingPage() {
  const { session, ready } = useSession();
  const [list, setList] = useState<FollowEntry[] | null>(null);

  useEffect(() => {
    if (!ready) return;
    if (!session) {
      window.location.href = '/login/?next=/following/';
      return;
    }
    api<Page<FollowEntry>>(`/api/users/${session.user.id}/following?limit=100`)
      .then((p) => setList([...p.items].sort((a, b) => Number(b.live) - Number(a.live) || a.username.localeCompare(b.username))))
      .catch(() => setList([]));
  }, [session, ready]);

  return (
    <>
      <h1>Following</h1>
      {list === null ? (
        <p className="muted">Loading…</p>
      ) : list.length === 0 ? (
        <p className="muted">You follow no one yet. Find someone on the <Link href="/">home page</Link>.</p>
      ) : (
        <ul className="follow-list">
          {list.map((f) => (
            <li key={f.id}>
              <a href={`/watch/${encodeURIComponent(f.username)}/`}>{f.username}</a>{' '}
              {f.live ? <span className="live-badge inline">LIVE</span> : <span className="muted">offline</span>}
            </li>
          ))}
        </ul>
      )}
    </>
  );
}
