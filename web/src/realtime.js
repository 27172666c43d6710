// The WebSocket at /v1/ws: reconnects with backoff and catches up through GET /v1/sync (docs/realtime.md).
import { withQuery } from './api.js';

const PING_MS = 25_000;
const MAX_SYNC_PAGES = 50;

/** The delay before reconnect attempt ``n`` (0-based): exponential with full jitter, capped at 10 s. */
export function backoff(n, random = Math.random) {
  return Math.round(random() * Math.min(10_000, 500 * 2 ** n));
}

/**
 * ``connectRealtime(api, {onEvent, onState})``: ``onEvent(frame)`` gets every server event, live or
 * caught up after a disconnect; ``onState('connecting'|'open'|'closed')`` follows the socket.
 * Returns ``{send(frame) -> bool, close()}``.
 */
export function connectRealtime(api, { onEvent, onState = () => {}, WebSocketImpl = globalThis.WebSocket, location = globalThis.location }) {
  let socket = null;
  let cursor = null;
  let attempts = 0;
  let stopped = false;
  let timer = null;
  let pinger = null;

  async function open() {
    if (stopped) return;
    onState('connecting');
    let token;
    try {
      token = await api.token();
    } catch (error) {
      if (error.status === 401) return stop();
      return retry();
    }
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    socket = new WebSocketImpl(`${scheme}://${location.host}${withQuery('/v1/ws', { token })}`);
    socket.onmessage = (e) => receive(e.data);
    socket.onclose = (e) => {
      clearInterval(pinger);
      socket = null;
      if (stopped) return;
      onState('closed');
      // 1008: the token was refused (expired while we were away): refresh it before the next try.
      if (e.code === 1008) api.token({ force: true }).then(retry, (error) => (error.status === 401 ? stop() : retry()));
      else retry();
    };
  }

  async function receive(data) {
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    if (frame.type === 'connected') {
      attempts = 0;
      onState('open');
      pinger = setInterval(() => send({ type: 'ping' }), PING_MS);
      const since = cursor;
      cursor = frame.cursor;
      if (since) await catchUp(since);
      return;
    }
    if (frame.type === 'pong') return;
    onEvent(frame);
  }

  /** What happened while the socket was down: every event after ``since`` (idempotent, so overlap is harmless). */
  async function catchUp(since) {
    let at = since;
    for (let page = 0; page < MAX_SYNC_PAGES; page += 1) {
      let answer;
      try {
        answer = await api.get(withQuery('/v1/sync', { cursor: at, limit: 200 }));
      } catch {
        onEvent({ type: 'resync' }); // too far behind or the cursor is refused: reload what is on screen
        return;
      }
      for (const event of answer.events) onEvent(event);
      at = answer.cursor;
      if (!answer.has_more) return;
    }
    onEvent({ type: 'resync' });
  }

  function retry() {
    if (stopped) return;
    clearTimeout(timer);
    timer = setTimeout(open, backoff(attempts));
    attempts += 1;
  }

  function stop() {
    stopped = true;
    clearTimeout(timer);
    clearInterval(pinger);
    socket?.close(1000);
    socket = null;
    onState('closed');
  }

  function send(frame) {
    if (socket?.readyState !== 1) return false;
    socket.send(JSON.stringify(frame));
    return true;
  }

  open();
  return { send, close: stop };
}
