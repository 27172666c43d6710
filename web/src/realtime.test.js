import { describe, expect, it } from 'vitest';
import { backoff, connectRealtime } from './realtime.js';

class FakeSocket {
  static all = [];
  constructor(url) {
    this.url = url;
    this.readyState = 1;
    this.sent = [];
    FakeSocket.all.push(this);
  }
  send(data) {
    this.sent.push(JSON.parse(data));
  }
  close() {
    this.readyState = 3;
  }
  frame(f) {
    this.onmessage({ data: JSON.stringify(f) });
  }
}

const tick = () => new Promise((r) => setTimeout(r, 0));

describe('backoff', () => {
  it('grows exponentially with jitter, capped at 10 s', () => {
    expect(backoff(0, () => 1)).toBe(500);
    expect(backoff(3, () => 1)).toBe(4000);
    expect(backoff(20, () => 1)).toBe(10_000);
    expect(backoff(5, () => 0)).toBe(0);
  });
});

describe('connectRealtime', () => {
  it('passes events on and, after a reconnect, catches up from the last cursor through /v1/sync', async () => {
    FakeSocket.all = [];
    const synced = [];
    const api = {
      token: async () => 'tok',
      get: async (path) => {
        synced.push(path);
        return path.includes('cursor=c1&')
          ? { events: [{ type: 'message.created', message_id: 'missed' }], cursor: 'c1b', has_more: true }
          : { events: [{ type: 'message.status', message_id: 'missed', status: 'READ' }], cursor: 'c1c', has_more: false };
      },
    };
    const events = [];
    const states = [];
    const rt = connectRealtime(api, { onEvent: (e) => events.push(e), onState: (s) => states.push(s), WebSocketImpl: FakeSocket, location: { protocol: 'http:', host: 'h:1' } });
    await tick();
    const first = FakeSocket.all[0];
    expect(first.url).toBe('ws://h:1/v1/ws?token=tok');
    first.frame({ type: 'connected', cursor: 'c1' });
    first.frame({ type: 'message.created', message_id: 'live' });
    expect(rt.send({ type: 'typing', conversation_id: 'x' })).toBe(true);
    expect(first.sent).toEqual([{ type: 'typing', conversation_id: 'x' }]);

    first.onclose({ code: 1006 });
    await new Promise((r) => setTimeout(r, 600));
    const second = FakeSocket.all[1];
    second.frame({ type: 'connected', cursor: 'c2' });
    await tick();
    await tick();
    expect(synced).toEqual(['/v1/sync?cursor=c1&limit=200', '/v1/sync?cursor=c1b&limit=200']);
    expect(events.map((e) => e.message_id)).toEqual(['live', 'missed', 'missed']);
    expect(states).toContain('closed');
    rt.close();
  });
});
