'use client';
// The signed-in user, shared by every page; follows logins and logouts in other tabs too.
import { createContext, useContext, useEffect, useState, type ReactNode } from 'react';
import { loadSession, onSession, type Session } from './api';

const SessionContext = createContext<{ session: Session | null; ready: boolean }>({ session: null, ready: false });

export function SessionProvider({ children }: { children: ReactNode }) {
  const [state, setState] = useState<{ session: Session | null; ready: boolean }>({ session: null, ready: false });
  useEffect(() => {
    setState({ session: loadSession(), ready: true });
    return onSession((s) => setState({ session: s, ready: true }));
  }, []);
  return <SessionContext.Provider value={state}>{children}</SessionContext.Provider>;
}

export function useSession() {
  return useContext(SessionContext);
}
