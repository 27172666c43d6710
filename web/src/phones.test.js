import { describe, expect, it } from 'vitest';
import { phonesFrom } from './views/phones.js';

describe('phonesFrom', () => {
  it('groups both directions by channel and person, the most recently active phone first', () => {
    const phones = phonesFrom([
      { channel: 'whatsapp', direction: 'outbound', to: '+5511999', text: 'hi', received_at: '2026-11-22T10:00:00Z', platform_message_id: 'w1' },
      { channel: 'telegram', direction: 'outbound', to: '42', text: 'yo', received_at: '2026-11-22T10:01:00Z', platform_message_id: 't1' },
      { channel: 'whatsapp', direction: 'inbound', from: '+5511999', text: 'hello!', received_at: '2026-11-22T10:02:00Z', platform_message_id: 'w2' },
    ]);
    expect(phones.map((p) => p.key)).toEqual(['whatsapp|+5511999', 'telegram|42']);
    expect(phones[0].messages.map((m) => m.text)).toEqual(['hi', 'hello!']);
  });
});
