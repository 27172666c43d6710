// Delivery statuses as the server orders them: they only move forward (docs/api.md, "Messages").

export const ORDER = { PENDING: -1, SENT: 0, FAILED: 1, DELIVERED: 2, READ: 3 };

/** The later of two statuses (a late or repeated event changes nothing). */
export function forward(current, next) {
  if (current === undefined || current === null) return next;
  return (ORDER[next] ?? -2) > (ORDER[current] ?? -2) ? next : current;
}

/**
 * Who a delivery is for, as one string: a user's id, or a contact's address. Status frames name the
 * recipient as "user:<id>" or "<channel>:<address>"; the status API as {kind, user_id | address}.
 */
export function recipientKey(recipient) {
  if (typeof recipient === 'string') return recipient.startsWith('user:') ? recipient.slice(5) : recipient;
  return recipient?.user_id ?? recipient?.address ?? '?';
}

/** The key of one delivery: its recipient and channel. */
export function deliveryKey(recipient, channel) {
  return `${recipientKey(recipient)}|${channel}`;
}

/** A message's status from its deliveries: the lowest, and FAILED only when every delivery failed. */
export function aggregate(deliveries) {
  const statuses = Object.values(deliveries).map((d) => d.status);
  if (statuses.length === 0) return null;
  if (statuses.every((s) => s === 'FAILED')) return 'FAILED';
  const live = statuses.filter((s) => s !== 'FAILED');
  return live.reduce((low, s) => (ORDER[s] < ORDER[low] ? s : low));
}

/** Apply a ``message.status`` event (or a status answer's delivery) to a map of deliveries. */
export function applyDelivery(deliveries, { recipient, channel, status, error }) {
  const key = deliveryKey(recipient, channel);
  const before = deliveries[key];
  const after = forward(before?.status, status);
  if (before && after === before.status && !(after === 'FAILED' && error && !before.error)) return deliveries;
  return { ...deliveries, [key]: { recipient, channel, status: after, error: after === 'FAILED' ? error ?? before?.error ?? null : null } };
}

/** What a sender sees next to a message: ticks, their words, and why it failed. */
export function tick(status, deliveries = {}) {
  switch (status) {
    case 'PENDING':
      return { icon: 'clock', label: 'Sending', tone: 'muted' };
    case 'SENT':
      return { icon: '✓', label: 'Sent', tone: 'muted' };
    case 'DELIVERED':
      return { icon: '✓✓', label: 'Delivered', tone: 'muted' };
    case 'READ':
      return { icon: '✓✓', label: 'Read', tone: 'read' };
    case 'FAILED': {
      const reasons = [...new Set(Object.values(deliveries).map((d) => d.error).filter(Boolean))];
      return { icon: '!', label: reasons.length ? `Failed: ${reasons.join('; ')}` : 'Failed', tone: 'failed' };
    }
    default:
      return { icon: '', label: '', tone: 'muted' };
  }
}
