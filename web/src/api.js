// The REST client: tokens kept in storage, refreshed once on a 401, problems turned into ApiError.

const SESSION_KEY = 'chat4all.session';

/** A problem+json answer (RFC 9457), or a network failure (status 0). */
export class ApiError extends Error {
  constructor(status, problem = {}) {
    super(problem.detail || problem.title || (status ? `HTTP ${status}` : 'The server cannot be reached'));
    this.name = 'ApiError';
    this.status = status;
    this.type = problem.type || '';
    this.errors = Array.isArray(problem.errors) ? problem.errors : [];
    this.retryAfter = problem.retryAfter ?? null;
  }

  /** The message for one field (e.g. "members"), if the server named it. */
  field(name) {
    const found = this.errors.find((e) => e.field === name || e.field?.startsWith(`${name}.`));
    return found ? found.message : null;
  }
}

/**
 * ``createApi({fetch, storage})``: every call of the app goes through here.
 * ``onSignedOut`` is called when the session ends (sign-out, or a refresh token that no longer works).
 */
export function createApi({ fetch: fetchImpl = globalThis.fetch.bind(globalThis), storage = globalThis.localStorage, base = '' } = {}) {
  let session = load();
  let refreshing = null;
  const listeners = new Set();

  function load() {
    try {
      const raw = storage?.getItem(SESSION_KEY);
      return raw ? JSON.parse(raw) : null;
    } catch {
      return null;
    }
  }

  function save(next) {
    session = next;
    if (next) storage?.setItem(SESSION_KEY, JSON.stringify(next));
    else storage?.removeItem(SESSION_KEY);
    for (const listener of listeners) listener(next);
  }

  function adopt(tokens, user = session?.user ?? null) {
    save({
      access_token: tokens.access_token,
      refresh_token: tokens.refresh_token,
      expires_at: Date.now() + tokens.expires_in * 1000,
      user,
    });
  }

  async function send(method, path, { body, auth = true, headers = {} } = {}) {
    const init = { method, headers: { Accept: 'application/json', ...headers } };
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    if (auth && session) init.headers.Authorization = `Bearer ${session.access_token}`;
    try {
      return await fetchImpl(base + path, init);
    } catch {
      throw new ApiError(0);
    }
  }

  async function answer(response) {
    if (response.status === 204) return null;
    const text = await response.text();
    const data = text ? safeJson(text) : null;
    if (response.ok) return data;
    const retry = response.headers.get('Retry-After');
    throw new ApiError(response.status, { ...(data || {}), retryAfter: retry === null ? null : Number(retry) });
  }

  /** A fresh access token, refreshing it (once, however many callers ask at the same time) when it is about to expire. */
  async function token({ force = false } = {}) {
    if (!session) throw new ApiError(401, { detail: 'Please sign in' });
    if (!force && session.expires_at - Date.now() > 30_000) return session.access_token;
    refreshing ??= (async () => {
      try {
        const response = await send('POST', '/auth/refresh', { body: { refresh_token: session.refresh_token }, auth: false });
        adopt(await answer(response));
      } catch (error) {
        if (error.status === 401 || error.status === 400 || error.status === 422) save(null);
        throw error;
      } finally {
        refreshing = null;
      }
    })();
    await refreshing;
    return session.access_token;
  }

  async function request(method, path, body) {
    const options = { body };
    if (!session) return answer(await send(method, path, options));
    await token();
    let response = await send(method, path, options);
    if (response.status === 401) {
      await token({ force: true });
      response = await send(method, path, options);
    }
    return answer(response);
  }

  async function signIn(username, password) {
    const response = await send('POST', '/auth/token', { body: { username, password }, auth: false });
    adopt(await answer(response), null);
    const user = await request('GET', '/v1/me');
    save({ ...session, user });
    return user;
  }

  async function signUp(username, password, displayName) {
    const body = { username, password };
    if (displayName) body.display_name = displayName;
    await answer(await send('POST', '/v1/users', { body, auth: false }));
    return signIn(username, password);
  }

  return {
    get session() {
      return session;
    },
    get user() {
      return session?.user ?? null;
    },
    onSession(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    token,
    signIn,
    signUp,
    signOut: () => save(null),
    get: (path) => request('GET', path),
    post: (path, body) => request('POST', path, body),
    del: (path) => request('DELETE', path),
  };
}

function safeJson(text) {
  try {
    return JSON.parse(text);
  } catch {
    return { detail: text.slice(0, 200) };
  }
}

/** ``/path?a=1&b=2`` without the parameters that are null or undefined. */
export function withQuery(path, params) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== null && value !== undefined) query.set(key, String(value));
  }
  const text = query.toString();
  return text ? `${path}?${text}` : path;
}
