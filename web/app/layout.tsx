import type { Metadata, Viewport } from 'next';
import type { ReactNode } from 'react';
import Header from '@/components/Header';
import { SessionProvider } from '@/lib/session';
import './globals.css';

export const metadata: Metadata = {
  title: 'Glint',
  description: 'Live streams with sub-second latency',
};

export const viewport: Viewport = { width: 'device-width', initialScale: 1, themeColor: '#0e0e10' };

export default function RootLayout({ children }: { children: ReactNode }) {
  return (
    <html lang="en">
      <body>
        <SessionProvider>
          <a href="#main" className="skip">
            Skip to content
          </a>
          <Header />
          <main id="main">{children}</main>
        </SessionProvider>
      </body>
    </html>
  );
}
