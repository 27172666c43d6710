// Builds the web app into dist/, which the HTTP API serves at /. Everything is bundled: no CDN.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { defineConfig } from 'vite';

const SWAGGER_FILES = ['swagger-ui-bundle.js', 'swagger-ui-standalone-preset.js', 'swagger-ui.css'];

/** Swagger UI's files into dist/swagger/: the API's /docs page loads them from here, not from a CDN. */
function swaggerUi() {
  const dir = path.dirname(createRequire(import.meta.url).resolve('swagger-ui-dist/package.json'));
  return {
    name: 'chat4all-swagger-ui',
    generateBundle() {
      for (const file of SWAGGER_FILES) {
        this.emitFile({ type: 'asset', fileName: `swagger/${file}`, source: readFileSync(path.join(dir, file)) });
      }
    },
  };
}

export default defineConfig({
  base: '/',
  plugins: [swaggerUi()],
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
