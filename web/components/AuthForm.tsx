'use client';
// Log in or sign up; on success, back to where the user came from (?next=) or the dashboard.
import { useState } from 'react';
import { ApiError, login, register } from '@/lib/api';

export default function AuthForm({ mode }: { mode: 'login' | 'signup' }) {
  const [username, setUsername] = useState('');
  const [email, setEmail] = useState('');
  const [password, setPassword] = useState('');
  const [error, setError] = useState('');
  const [busy, setBusy] = useState(false);

  const submit = async (e: React.FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setError('');
    try {
      if (mode === 'login') await login(username, password);
      else await register(username, email, password);
      const next = new URLSearchParams(window.location.search).get('next');
      window.location.href = next && next.startsWith('/') && !next.startsWith('//') ? next : mode === 'signup' ? '/dashboard/' : '/';
    } catch (err) {
      setError(err instanceof ApiError ? err.message : 'Could not reach the server');
      setBusy(false);
    }
  };

  return (
    <form className="auth" onSubmit={submit}>
      <h1>{mode === 'login' ? 'Log in' : 'Create your account'}</h1>
      <label>
        {mode === 'login' ? 'Username or email' : 'Username'}
        <input name="username" value={username} onChange={(e) => setUsername(e.target.value)} autoComplete="username" required />
      </label>
      {mode === 'signup' && (
        <label>
          Email
          <input name="email" type="email" value={email} onChange={(e) => setEmail(e.target.value)} autoComplete="email" required />
        </label>
      )}
      <label>
        Password
        <input
          name="password"
          type="password"
          value={password}
          onChange={(e) => setPassword(e.target.value)}
          autoComplete={mode === 'login' ? 'current-password' : 'new-password'}
          minLength={mode === 'signup' ? 8 : undefined}
          required
        />
      </label>
      {error && (
        <p className="error" role="alert">
          {error}
        </p>
      )}
      <button type="submit" disabled={busy}>
        {mode === 'login' ? 'Log in' : 'Sign up'}
      </button>
      <p className="muted">
        {mode === 'login' ? (
          <>
            New here? <a href="/signup/">Sign up</a>
          </>
        ) : (
          <>
            Have an account? <a href="/login/">Log in</a>
          </>
        )}
      </p>
    </form>
  );
}
