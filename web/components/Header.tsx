'use client';
// The site header: home, search, following, the notifications menu (fed by the SSE stream, with
// a toast when a followed channel goes live), and the account links.
import Link from 'next/link';
import { useEffect, useState } from 'react';
import { accessToken, api, EXPIRED_RECONNECT_JITTER_MS, logout, type Notification } from '@/lib/api';
import { useSession } from '@/lib/session';

interface Toast {
  id: string;
  text: string;
  href: string;
}

export default function Header() {
  const { session, ready } = useSession();
  const [notes, setNotes] = useState<Notification[]>([]);
  const [open, setOpen] = useState(false);
  const [toasts, setToasts] = useState<Toast[]>([]);
  const [q, setQ] = useState('');

  useEffect(() => {
    if (!session) {
      setNotes([]);
      return;
    }
    let source: EventSource | null = null;
    let closed = false;
    let retry: ReturnType<typeof setTimeout> | undefined;
    api<Notification[]>('/api/notifications?limit=20')
      .then((items) => !closed && setNotes(items))
      .catch(() => undefined);
    const connect = async () => {
      const token = await accessToken();
      if (!token || closed) return;
      source = new EventSource(`/api/notifications/stream?access_token=${encodeURIComponent(token)}`);
      source.addEventListener('notification', (e) => {
        const n = JSON.parse((e as MessageEvent).data) as Notification;
        setNotes((all) => [n, ...all.filter((x) => x.id !== n.id)].slice(0, 50));
        const toast = { id: n.id, text: `${n.stream} is live: ${n.title}`, href: `/watch/${encodeURIComponent(n.stream)}/` };
        setToasts((t) => [...t, toast]);
        setTimeout(() => setToasts((t) => t.filter((x) => x.id !== toast.id)), 8000);
      });
      // The server ends the stream when the token expires (or the user logged out somewhere):
      // reconnect soon (accessToken() refreshes the expiring token).
      source.addEventListener('end', (e) => {
        source?.close();
        const expired = (e as MessageEvent).data === 'access token expired';
        if (!closed) retry = setTimeout(connect, expired ? Math.random() * EXPIRED_RECONNECT_JITTER_MS : 0);
      });
      // Anything else (a refused or dropped connection): retry shortly with a current token.
      source.onerror = () => {
        source?.close();
        if (!closed) retry = setTimeout(connect, 3000);
      };
    };
    connect();
    return () => {
      closed = true;
      clearTimeout(retry);
      source?.close();
    };
  }, [session]);

  const unread = notes.filter((n) => !n.read).length;
  const markAllRead = async () => {
    await api('/api/notifications/read', { method: 'POST' }).catch(() => undefined);
    setNotes((all) => all.map((n) => ({ ...n, read: true })));
  };

  return (
    <header className="site-header">
      <Link href="/" className="logo">
        Glint
      </Link>
      <form action="/search/" className="search" role="search">
        <label htmlFor="search-q" className="sr-only">
          Search channels
        </label>
        <input id="search-q" name="q" value={q} onChange={(e) => setQ(e.target.value)} placeholder="Search channels" />
      </form>
      <nav className="nav">
        {ready && session ? (
          <>
            <a href="/following/">Following</a>
            <div className="menu">
              <button type="button" aria-expanded={open} aria-haspopup="true" onClick={() => setOpen(!open)} data-testid="notifications">
                Notifications{unread > 0 && <span className="count">{unread}</span>}
              </button>
              {open && (
                <div className="menu-panel" role="region" aria-label="Notifications">
                  {notes.length === 0 && <p className="muted">Nothing yet.</p>}
                  <ul>
                    {notes.map((n) => (
                      <li key={n.id} className={n.read ? 'muted' : ''}>
                        <a href={`/watch/${encodeURIComponent(n.stream)}/`}>
                          {n.stream} went live: {n.title}
                        </a>
                      </li>
                    ))}
                  </ul>
                  {unread > 0 && (
                    <button type="button" onClick={markAllRead}>
                      Mark all read
                    </button>
                  )}
                </div>
              )}
            </div>
            <a href="/dashboard/">Dashboard</a>
            <button type="button" className="link" onClick={() => logout().then(() => (window.location.href = '/'))}>
              Log out ({session.user.username})
            </button>
          </>
        ) : ready ? (
          <>
            <a href="/login/">Log in</a>
            <a href="/signup/" className="button">
              Sign up
            </a>
          </>
        ) : null}
      </nav>
      <div className="toasts" aria-live="assertive">
        {toasts.map((t) => (
          <a key={t.id} className="toast" href={t.href} data-testid="toast">
            {t.text}
          </a>
        ))}
      </div>
    </header>
  );
}
