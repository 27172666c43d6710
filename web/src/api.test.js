import { describe, expect, it } from 'vitest';
import { ApiError, createApi, withQuery } from './api.js';
import { memoryStorage } from './memory-storage.js';

const json = (status, body, headers = {}) => new Response(JSON.stringify(body), { status, headers: { 'Content-Type': 'application/json', ...headers } });

function server(routes) {
  const calls = [];
  const fetch = async (url, init) => {
    calls.push({ url, init });
    const handler = routes[`${init.method} ${url.split('?')[0]}`];
    if (!handler) return json(404, { title: 'Not Found', status: 404 });
    return handler(init, calls);
  };
  return { fetch, calls };
}

const tokens = (n) => ({ access_token: `access-${n}`, refresh_token: `refresh-${n}`, token_type: 'bearer', expires_in: 3600 });

describe('createApi', () => {
  it('signs in, keeps the session in storage and sends the bearer token', async () => {
    const storage = memoryStorage();
    const { fetch, calls } = server({
      'POST /auth/token': () => json(200, tokens(1)),
      'GET /v1/me': () => json(200, { user_id: 'u1', username: 'ana' }),
    });
    const api = createApi({ fetch, storage });
    const user = await api.signIn('ana', 'secret-pass');
    expect(user.username).toBe('ana');
    expect(calls[1].init.headers.Authorization).toBe('Bearer access-1');
    expect(JSON.parse(storage.getItem('chat4all.session')).user.user_id).toBe('u1');
    expect(createApi({ fetch, storage }).user.username).toBe('ana');
  });

  it('refreshes once on a 401 and retries the call; many callers share one refresh', async () => {
    const storage = memoryStorage();
    storage.setItem('chat4all.session', JSON.stringify({ access_token: 'old', refresh_token: 'r0', expires_at: Date.now() + 3_600_000, user: { user_id: 'u1' } }));
    let refreshes = 0;
    const { fetch } = server({
      'POST /auth/refresh': () => {
        refreshes += 1;
        return json(200, tokens(2));
      },
      'GET /v1/conversations': (init) => (init.headers.Authorization === 'Bearer old' ? json(401, { title: 'Unauthorized', status: 401 }) : json(200, { items: [] })),
    });
    const api = createApi({ fetch, storage });
    const answers = await Promise.all([api.get('/v1/conversations'), api.get('/v1/conversations')]);
    expect(answers).toEqual([{ items: [] }, { items: [] }]);
    expect(refreshes).toBe(1);
  });

  it('ends the session when the refresh token is refused', async () => {
    const storage = memoryStorage();
    storage.setItem('chat4all.session', JSON.stringify({ access_token: 'old', refresh_token: 'spent', expires_at: 0, user: { user_id: 'u1' } }));
    const { fetch } = server({ 'POST /auth/refresh': () => json(401, { title: 'Unauthorized', status: 401, detail: 'refresh token already used' }) });
    const api = createApi({ fetch, storage });
    let ended = false;
    api.onSession((s) => (ended = s === null));
    await expect(api.get('/v1/me')).rejects.toBeInstanceOf(ApiError);
    expect(ended).toBe(true);
    expect(storage.getItem('chat4all.session')).toBeNull();
  });

  it('turns problem+json into an ApiError with its fields and Retry-After', async () => {
    const { fetch } = server({
      'POST /v1/users': () =>
        json(429, { type: 'https://chat4all.dev/problems/rate-limited', title: 'Too Many Requests', status: 429, detail: 'slow down', errors: [{ field: 'username', message: 'taken' }] }, { 'Retry-After': '3' }),
    });
    const api = createApi({ fetch, storage: memoryStorage() });
    const error = await api.signUp('ana', 'secret-pass').catch((e) => e);
    expect(error.status).toBe(429);
    expect(error.message).toBe('slow down');
    expect(error.retryAfter).toBe(3);
    expect(error.field('username')).toBe('taken');
  });

  it('reports a network failure as status 0', async () => {
    const api = createApi({ fetch: async () => { throw new TypeError('fetch failed'); }, storage: memoryStorage() });
    const error = await api.get('/health/live').catch((e) => e);
    expect(error.status).toBe(0);
  });
});

describe('withQuery', () => {
  it('drops empty parameters', () => {
    expect(withQuery('/v1/x', { a: 1, b: null, c: undefined, d: 'y z' })).toBe('/v1/x?a=1&d=y+z');
    expect(withQuery('/v1/x', {})).toBe('/v1/x');
  });
});
