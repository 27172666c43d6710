import { describe, expect, it } from 'vitest';
import { fromEvent, initialState, mergeMessages, reduce } from './state.js';

const me = { kind: 'user', user_id: 'me' };
const ana = { kind: 'user', user_id: 'ana', username: 'ana' };
const conv = (id, at, extra = {}) => ({ conversation_id: id, type: 'private', members: [me, ana], metadata: {}, created_at: at, last_activity_at: at, last_seq: 0, last_message: null, unread_count: 0, ...extra });
const msg = (id, seq, from = ana, extra = {}) => ({ message_id: id, conversation_id: 'c1', seq, from, payload: { type: 'text', text: id }, created_at: `2026-11-22T10:00:0${seq}Z`, status: 'SENT', ...extra });

describe('conversations', () => {
  it('orders by latest activity, and a new message moves its conversation first', () => {
    let s = reduce(initialState, { type: 'conversations', items: [conv('c1', '2026-11-22T09:00:00Z'), conv('c2', '2026-11-22T09:30:00Z')] });
    expect(s.order).toEqual(['c2', 'c1']);
    s = reduce(s, { type: 'message', message: msg('m1', 1), mine: false, unread: true });
    expect(s.order).toEqual(['c1', 'c2']);
    expect(s.conversations.c1.last_message.message_id).toBe('m1');
    expect(s.conversations.c1.unread_count).toBe(1);
  });

  it('counts an incoming message once, and not one the caller is looking at or sent', () => {
    let s = reduce(initialState, { type: 'conversations', items: [conv('c1', '2026-11-22T09:00:00Z')] });
    s = reduce(s, { type: 'message', message: msg('m1', 1), mine: false, unread: true });
    s = reduce(s, { type: 'message', message: msg('m1', 1), mine: false, unread: true });
    s = reduce(s, { type: 'message', message: msg('m2', 2), mine: false, unread: false });
    s = reduce(s, { type: 'message', message: msg('m3', 3, me), mine: true });
    expect(s.conversations.c1.unread_count).toBe(1);
  });

  it('a read leaves unread only the incoming messages after it', () => {
    let s = reduce(initialState, { type: 'conversations', items: [conv('c1', '2026-11-22T09:00:00Z', { unread_count: 3 })] });
    s = reduce(s, { type: 'history', id: 'c1', page: { items: [msg('m1', 1), msg('m2', 2), msg('m3', 3)], next_cursor: null } });
    s = reduce(s, { type: 'read', id: 'c1', seq: 2, incoming: (m) => m.from.user_id !== 'me' });
    expect(s.conversations.c1.unread_count).toBe(1);
  });
});

describe('threads', () => {
  it('merges pages and live messages by id, ordered by seq, unsent last', () => {
    const items = mergeMessages([msg('m2', 2), { ...msg('p', null, me), status: 'PENDING' }], [msg('m1', 1), msg('m2', 2, ana, { status: 'DELIVERED' })]);
    expect(items.map((m) => m.message_id)).toEqual(['m1', 'm2', 'p']);
    expect(items[1].status).toBe('DELIVERED');
  });

  it('keeps the cursor to older pages from the latest page, then from each older page', () => {
    let s = reduce(initialState, { type: 'history', id: 'c1', page: { items: [msg('m5', 5)], next_cursor: 'older-1' } });
    expect(s.threads.c1.hasOlder).toBe(true);
    s = reduce(s, { type: 'history', id: 'c1', older: true, page: { items: [msg('m4', 4)], next_cursor: null } });
    expect(s.threads.c1.items.map((m) => m.seq)).toEqual([4, 5]);
    expect(s.threads.c1.hasOlder).toBe(false);
  });

  it('turns a message.created frame into a history item', () => {
    const m = fromEvent({ type: 'message.created', message_id: 'x', conversation_id: 'c1', seq: 7, sender: ana, payload: { type: 'text', text: 'hi' }, created_at: 'now' });
    expect(m).toMatchObject({ message_id: 'x', seq: 7, from: ana, status: 'DELIVERED' });
  });
});

describe('statuses', () => {
  const base = () => {
    let s = reduce(initialState, { type: 'conversations', items: [conv('c1', '2026-11-22T09:00:00Z')] });
    return reduce(s, { type: 'message', message: msg('m1', 1, me), mine: true });
  };
  const frame = (recipient, channel, status, error) => ({ message_id: 'm1', conversation_id: 'c1', recipient, channel, status, error });

  it('waits for the whole delivery list before moving a message, then follows the frames', () => {
    let s = reduce(base(), { type: 'status', messageId: 'm1', conversationId: 'c1', events: [frame(ana, 'internal', 'READ')] });
    expect(s.threads.c1.items[0].status).toBe('SENT'); // the whatsapp delivery is not known yet
    s = reduce(s, { type: 'status', messageId: 'm1', conversationId: 'c1', known: [frame(ana, 'internal', 'DELIVERED'), frame(ana, 'whatsapp', 'SENT')] });
    expect(s.threads.c1.items[0].status).toBe('SENT'); // READ kept for internal, whatsapp still SENT
    s = reduce(s, { type: 'status', messageId: 'm1', conversationId: 'c1', events: [frame(ana, 'whatsapp', 'READ')] });
    expect(s.threads.c1.items[0].status).toBe('READ');
    expect(s.conversations.c1.last_message.status).toBe('READ');
  });

  it('a message whose every delivery failed is FAILED with the reason', () => {
    const s = reduce(base(), { type: 'status', messageId: 'm1', conversationId: 'c1', known: [frame(ana, 'whatsapp', 'FAILED', 'number not on WhatsApp')] });
    expect(s.threads.c1.items[0].status).toBe('FAILED');
    expect(Object.values(s.deliveries.m1.items)[0].error).toBe('number not on WhatsApp');
  });
});

describe('typing', () => {
  it('shows a typist until the notice expires or their message arrives', () => {
    let s = reduce(initialState, { type: 'typing', id: 'c1', userId: 'ana', until: 5_000 });
    expect(Object.keys(s.typing.c1)).toEqual(['ana']);
    expect(reduce(s, { type: 'typing-expired', now: 6_000 }).typing.c1).toBeUndefined();
    s = reduce(s, { type: 'message', message: msg('m1', 1), mine: false, unread: false });
    expect(s.typing.c1).toEqual({});
  });
});
