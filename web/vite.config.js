// Builds the web app into dist/, which the HTTP API serves at /. Everything is bundled: no CDN.
import { defineConfig } from 'vite';

export default defineConfig({
  base: '/',
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    target: 'es2022',
    sourcemap: true,
    assetsInlineLimit: 0, // the CSP allows no inline data for scripts; keep every asset a file
  },
  server: {
    // `npm run dev` against a running `chat4all up` (port 8000).
    proxy: {
      '/v1': { target: 'http://127.0.0.1:8000', ws: true },
      '/auth': 'http://127.0.0.1:8000',
      '/config.json': 'http://127.0.0.1:8000',
    },
  },
  test: {
    environment: 'node',
    include: ['src/**/*.test.js'],
  },
});
