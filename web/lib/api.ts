// The API client: JSON in and out, the session's bearer token attached, and a quiet refresh
// (once, shared by concurrent callers) when the access token has expired.

export interface User {
  id: string;
  username: string;
  email?: string;
  created_at?: number;
}

export interface Session {
  user: User;
  access_token: string;
  refresh_token: string;
  expires_in: number;
  /** When the access token expires (ms), computed on receipt. */
  expires_at?: number;
}

export interface Stream {
  id: string;
  owner: string;
  name: string;
  title: string;
  category: string | null;
  tags: string[];
  language: string | null;
  live: boolean;
  started_at: number | null;
  viewers: number;
  stream_key?: string;
  hls_url?: string;
  thumbnail_url?: string;
}

export interface Page<T> {
  items: T[];
  page: number;
  limit: number;
  more: boolean;
}

export interface Category {
  slug: string;
  name: string;
  live_streams: number;
}

export interface Video {
  id: string;
  stream_name: string;
  title: string;
  started_at: number;
  ended_at: number;
  duration_ms: number;
  hls_url?: string;
  thumbnail_url?: string;
}

export interface Notification {
  id: string;
  kind: string;
  channel: string;
  stream: string;
  title: string;
  read: boolean;
  created_at: number;
}

export interface FollowEntry {
  id: string;
  username: string;
  live: boolean;
}

export interface Broadcast {
  id: string;
  title: string;
  started_at: number;
  ended_at: number | null;
  duration_ms: number;
  peak_viewers: number;
  average_viewers: number;
  unique_viewers: number;
  chat_messages: number;
  follows_gained: number;
}

export interface Sample {
  at: number;
  viewers: number;
  webrtc_viewers: number;
  hls_viewers: number;
  unique_viewers: number;
  ingest_kbps: number | null;
  keyframe_interval_ms: number | null;
}

export class ApiError extends Error {
  constructor(
    public status: number,
    public code: string,
    message: string,
    public field?: string,
  ) {
    super(message);
  }
}

const KEY = 'glint.session';
type Listener = (s: Session | null) => void;
const listeners = new Set<Listener>();

export function loadSession(): Session | null {
  if (typeof window === 'undefined') return null;
  try {
    const raw = window.localStorage.getItem(KEY);
    return raw ? (JSON.parse(raw) as Session) : null;
  } catch {
    return null;
  }
}

export function saveSession(s: Session | null) {
  if (s && !s.expires_at) s.expires_at = Date.now() + s.expires_in * 1000;
  if (s) window.localStorage.setItem(KEY, JSON.stringify(s));
  else window.localStorage.removeItem(KEY);
  listeners.forEach((l) => l(s));
}

export function onSession(l: Listener): () => void {
  listeners.add(l);
  const storage = (e: StorageEvent) => {
    if (e.key === KEY) l(loadSession());
  };
  window.addEventListener('storage', storage);
  return () => {
    listeners.delete(l);
    window.removeEventListener('storage', storage);
  };
}

let refreshing: Promise<Session | null> | null = null;

/** A new access token from the refresh token (each works once); null when the session is over. */
function refresh(): Promise<Session | null> {
  refreshing ??= (async () => {
    const s = loadSession();
    if (!s) return null;
    try {
      const resp = await fetch('/api/users/refresh', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ refresh_token: s.refresh_token }),
      });
      if (!resp.ok) {
        if (resp.status === 401) saveSession(null);
        return null;
      }
      const next = (await resp.json()) as Session;
      saveSession(next);
      return next;
    } catch {
      return null;
    } finally {
      refreshing = null;
    }
  })();
  return refreshing;
}

/** How long a stream the server ended at its token's expiry waits before reconnecting, at most
 * (ms): every tab's stream ends at the same moment, and a random wait lets the first tab's
 * refresh land in localStorage before the others look, instead of all of them spending the same
 * refresh token (a reuse, which ends the session). */
export const EXPIRED_RECONNECT_JITTER_MS = 1000;

/** The current access token, refreshed first when it is about to expire. */
export async function accessToken(): Promise<string | null> {
  const s = loadSession();
  if (!s) return null;
  if (s.expires_at && s.expires_at - Date.now() < 30_000) {
    return (await refresh())?.access_token ?? null;
  }
  return s.access_token;
}

async function errorOf(resp: Response): Promise<ApiError> {
  try {
    const body = await resp.json();
    return new ApiError(resp.status, body.error?.code ?? 'error', body.error?.message ?? resp.statusText, body.error?.field);
  } catch {
    return new ApiError(resp.status, 'error', resp.statusText || `HTTP ${resp.status}`);
  }
}

export async function api<T>(path: string, init: { method?: string; body?: unknown; auth?: boolean } = {}): Promise<T> {
  const send = async (token: string | null) => {
    const headers: Record<string, string> = {};
    if (init.body !== undefined) headers['Content-Type'] = 'application/json';
    if (token) headers['Authorization'] = `Bearer ${token}`;
    return fetch(path, {
      method: init.method ?? 'GET',
      headers,
      body: init.body === undefined ? undefined : JSON.stringify(init.body),
    });
  };
  const auth = init.auth ?? true;
  let resp = await send(auth ? await accessToken() : null);
  if (resp.status === 401 && auth && loadSession()) {
    const s = await refresh();
    if (s) resp = await send(s.access_token);
  }
  if (!resp.ok) throw await errorOf(resp);
  if (resp.status === 204) return undefined as T;
  return (await resp.json()) as T;
}

export async function login(username: string, password: string): Promise<Session> {
  const s = await api<Session>('/api/users/login', { method: 'POST', body: { username, password }, auth: false });
  saveSession(s);
  return s;
}

export async function register(username: string, email: string, password: string): Promise<Session> {
  const s = await api<Session>('/api/users/register', { method: 'POST', body: { username, email, password }, auth: false });
  saveSession(s);
  return s;
}

export async function logout() {
  const s = loadSession();
  saveSession(null);
  if (s) {
    await fetch('/api/users/logout', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ refresh_token: s.refresh_token }),
    }).catch(() => undefined);
  }
}

/** The stream (channel) named `name`, or null. */
export async function streamByName(name: string): Promise<Stream | null> {
  const page = await api<Page<Stream>>(`/api/streams?live=all&name=${encodeURIComponent(name)}`, { auth: false });
  return page.items[0] ?? null;
}

/** The last path segment after `prefix` (`/watch/<name>/` → name). */
export function pathParam(prefix: string): string {
  if (typeof window === 'undefined') return '';
  const rest = window.location.pathname.slice(prefix.length);
  return decodeURIComponent(rest.split('/').filter(Boolean)[0] ?? '');
}

export function formatDuration(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${String(sec).padStart(2, '0')}` : `${m}:${String(sec).padStart(2, '0')}`;
}
