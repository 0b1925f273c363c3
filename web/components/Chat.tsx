'use client';
// The channel's chat over its WebSocket: history on join, live messages, moderation events, and
// the viewer count. Text is rendered as text (React escapes it), never as HTML.
import { useEffect, useRef, useState } from 'react';
import { accessToken, EXPIRED_RECONNECT_JITTER_MS } from '@/lib/api';
import { useSession } from '@/lib/session';

interface Message {
  id: string;
  author_id: string;
  author: string;
  text: string;
  at: number;
}
interface Settings {
  slow_mode_secs: number;
  followers_only: boolean;
}
interface You {
  id: string;
  name: string;
  moderator: boolean;
}

const MAX_SHOWN = 200;
// Close codes the server ends a reader's socket with when its access token expired or its user
// logged out (docs/api.md): reconnect soon (with a refreshed token, or as whoever is signed in).
const CLOSE_TOKEN_EXPIRED = 4001;
const CLOSE_LOGGED_OUT = 4002;

export default function Chat({ channel, ownerId, onViewers }: { channel: string; ownerId: string; onViewers?: (n: number) => void }) {
  const { session, ready } = useSession();
  const [messages, setMessages] = useState<Message[]>([]);
  const [settings, setSettings] = useState<Settings>({ slow_mode_secs: 0, followers_only: false });
  const [you, setYou] = useState<You | null>(null);
  const [notice, setNotice] = useState('');
  const [text, setText] = useState('');
  const [connected, setConnected] = useState(false);
  const ws = useRef<WebSocket | null>(null);
  const list = useRef<HTMLOListElement>(null);
  const viewersCb = useRef(onViewers);
  viewersCb.current = onViewers;

  useEffect(() => {
    if (!ready) return;
    let closed = false;
    let retry: ReturnType<typeof setTimeout> | undefined;
    const open = async () => {
      const token = session ? await accessToken() : null;
      if (closed) return;
      const proto = window.location.protocol === 'https:' ? 'wss' : 'ws';
      const url = `${proto}://${window.location.host}/api/chat/${encodeURIComponent(channel)}${token ? `?access_token=${encodeURIComponent(token)}` : ''}`;
      const socket = new WebSocket(url);
      ws.current = socket;
      socket.onopen = () => setConnected(true);
      socket.onclose = (e) => {
        setConnected(false);
        if (closed) return;
        const wait =
          e.code === CLOSE_TOKEN_EXPIRED ? Math.random() * EXPIRED_RECONNECT_JITTER_MS : e.code === CLOSE_LOGGED_OUT ? 0 : 2000;
        retry = setTimeout(open, wait);
      };
      socket.onmessage = (e) => {
        const ev = JSON.parse(e.data);
        switch (ev.type) {
          case 'hello':
            setMessages(ev.history);
            setSettings(ev.settings);
            setYou(ev.you);
            viewersCb.current?.(ev.viewers);
            break;
          case 'message':
            setMessages((m) => [...m.slice(-(MAX_SHOWN - 1)), ev as Message]);
            break;
          case 'delete':
            setMessages((m) => m.filter((x) => x.id !== ev.id));
            break;
          case 'timeout':
          case 'ban':
            setMessages((m) => m.filter((x) => x.author_id !== ev.user_id));
            break;
          case 'settings':
            setSettings({ slow_mode_secs: ev.slow_mode_secs, followers_only: ev.followers_only });
            break;
          case 'viewers':
            viewersCb.current?.(ev.count);
            break;
          case 'error':
            setNotice(ev.message);
            break;
        }
      };
    };
    open();
    return () => {
      closed = true;
      clearTimeout(retry);
      ws.current?.close();
    };
  }, [channel, session, ready]);

  useEffect(() => {
    const el = list.current;
    if (el) el.scrollTop = el.scrollHeight;
  }, [messages]);

  const send = (cmd: object) => ws.current?.readyState === WebSocket.OPEN && ws.current.send(JSON.stringify(cmd));
  const submit = (e: React.FormEvent) => {
    e.preventDefault();
    const t = text.trim();
    if (!t) return;
    setNotice('');
    send({ type: 'send', text: t });
    setText('');
  };
  const canModerate = !!you && (you.moderator || you.id === ownerId);

  return (
    <section className="chat" aria-label="Chat">
      <h2 className="chat-title">
        Chat {!connected && <span className="muted">(connecting…)</span>}
      </h2>
      {(settings.slow_mode_secs > 0 || settings.followers_only) && (
        <p className="muted small">
          {settings.slow_mode_secs > 0 && `Slow mode: ${settings.slow_mode_secs} s. `}
          {settings.followers_only && 'Followers only.'}
        </p>
      )}
      <ol className="chat-list" ref={list} aria-live="polite" data-testid="chat-messages">
        {messages.map((m) => (
          <li key={m.id}>
            <strong>{m.author}</strong> <span className="chat-text">{m.text}</span>
            {canModerate && m.author_id !== you?.id && (
              <span className="mod-actions">
                <button type="button" onClick={() => send({ type: 'delete', id: m.id })} aria-label={`Delete message from ${m.author}`}>
                  Delete
                </button>
                <button type="button" onClick={() => send({ type: 'timeout', user_id: m.author_id, seconds: 600 })} aria-label={`Time out ${m.author} for 10 minutes`}>
                  Timeout
                </button>
                <button type="button" onClick={() => send({ type: 'ban', user_id: m.author_id })} aria-label={`Ban ${m.author}`}>
                  Ban
                </button>
              </span>
            )}
          </li>
        ))}
      </ol>
      {canModerate && (
        <div className="mod-settings">
          <label>
            <input
              type="checkbox"
              checked={settings.slow_mode_secs > 0}
              onChange={(e) => send({ type: 'settings', slow_mode_secs: e.target.checked ? 10 : 0, followers_only: settings.followers_only })}
            />{' '}
            Slow mode (10 s)
          </label>
          <label>
            <input
              type="checkbox"
              checked={settings.followers_only}
              onChange={(e) => send({ type: 'settings', slow_mode_secs: settings.slow_mode_secs, followers_only: e.target.checked })}
            />{' '}
            Followers only
          </label>
        </div>
      )}
      {notice && (
        <p className="error small" role="alert">
          {notice}
        </p>
      )}
      {you ? (
        <form onSubmit={submit} className="chat-form">
          <label htmlFor="chat-input" className="sr-only">
            Send a message
          </label>
          <input id="chat-input" value={text} onChange={(e) => setText(e.target.value)} maxLength={500} placeholder="Send a message" autoComplete="off" />
          <button type="submit">Chat</button>
        </form>
      ) : (
        <p className="muted small">
          <a href="/login/">Log in</a> to chat.
        </p>
      )}
    </section>
  );
}
