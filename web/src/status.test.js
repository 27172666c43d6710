import { describe, expect, it } from 'vitest';
import { aggregate, applyDelivery, forward, tick } from './status.js';

const alice = { kind: 'user', user_id: 'a' };
const bob = { kind: 'user', user_id: 'b' };

describe('forward', () => {
  it('moves only forward: SENT < FAILED < DELIVERED < READ', () => {
    expect(forward('SENT', 'DELIVERED')).toBe('DELIVERED');
    expect(forward('READ', 'DELIVERED')).toBe('READ');
    expect(forward('DELIVERED', 'FAILED')).toBe('DELIVERED');
    expect(forward(undefined, 'SENT')).toBe('SENT');
  });
});

describe('aggregate', () => {
  it('is the lowest delivery, and FAILED only when every delivery failed', () => {
    let d = {};
    d = applyDelivery(d, { recipient: alice, channel: 'internal', status: 'READ' });
    d = applyDelivery(d, { recipient: bob, channel: 'internal', status: 'DELIVERED' });
    expect(aggregate(d)).toBe('DELIVERED');
    d = applyDelivery(d, { recipient: bob, channel: 'whatsapp', status: 'FAILED', error: 'blocked' });
    expect(aggregate(d)).toBe('DELIVERED');
    const failed = applyDelivery({}, { recipient: bob, channel: 'whatsapp', status: 'FAILED', error: 'blocked' });
    expect(aggregate(failed)).toBe('FAILED');
    expect(aggregate({})).toBeNull();
  });

  it('knows a delivery whether the recipient comes as a frame names it or as the status API does', () => {
    let d = applyDelivery({}, { recipient: { kind: 'user', user_id: 'b' }, channel: 'internal', status: 'DELIVERED' });
    d = applyDelivery(d, { recipient: 'user:b', channel: 'internal', status: 'READ' });
    d = applyDelivery(d, { recipient: { kind: 'contact', address: 'whatsapp:+55' }, channel: 'whatsapp', status: 'SENT' });
    d = applyDelivery(d, { recipient: 'whatsapp:+55', channel: 'whatsapp', status: 'READ' });
    expect(Object.keys(d)).toEqual(['b|internal', 'whatsapp:+55|whatsapp']);
    expect(aggregate(d)).toBe('READ');
  });

  it('ignores a late event that would move a delivery back', () => {
    const read = applyDelivery({}, { recipient: alice, channel: 'internal', status: 'READ' });
    expect(applyDelivery(read, { recipient: alice, channel: 'internal', status: 'DELIVERED' })).toBe(read);
  });
});

describe('tick', () => {
  it('names each status and says why a message failed', () => {
    expect(tick('SENT').label).toBe('Sent');
    expect(tick('DELIVERED').icon).toBe('✓✓');
    expect(tick('READ').tone).toBe('read');
    const d = applyDelivery({}, { recipient: bob, channel: 'whatsapp', status: 'FAILED', error: 'recipient blocked us' });
    expect(tick('FAILED', d.items ?? d).label).toBe('Failed: recipient blocked us');
  });
});
