// A static export: `npm run build` writes out/, which the glint binary serves at / (GLINT_WEB_DIR).
// Every page is a client component that talks to the same origin's /api, /whep, /whip and /hls.
/** @type {import('next').NextConfig} */
const nextConfig = {
  output: 'export',
  trailingSlash: true,
  images: { unoptimized: true },
  reactStrictMode: true,
};

export default nextConfig;
