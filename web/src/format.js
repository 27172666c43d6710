// How people, conversations, times and sizes are shown.

export const CHANNELS = [
  { id: 'internal', name: 'Chat4All' },
  { id: 'whatsapp', name: 'WhatsApp' },
  { id: 'instagram', name: 'Instagram' },
  { id: 'messenger', name: 'Messenger' },
  { id: 'telegram', name: 'Telegram' },
];

export const channelName = (id) => CHANNELS.find((c) => c.id === id)?.name ?? id;

/** "whatsapp:+5511..." -> "+5511... (WhatsApp)". */
export function addressName(address) {
  const [channel, ...rest] = String(address).split(':');
  return `${rest.join(':')} (${channelName(channel)})`;
}

/** A member or sender as people read it: the username, or the contact's address. */
export function memberName(member, members = []) {
  if (!member) return 'someone';
  if (member.user_id) {
    const known = member.username ?? members.find((m) => m.user_id === member.user_id)?.username;
    return known ?? 'a user';
  }
  return member.address ? addressName(member.address) : 'someone';
}

/** The other members of a conversation, as seen by ``me``. */
export function others(conversation, me) {
  return (conversation?.members ?? []).filter((m) => m.user_id !== me?.user_id);
}

export function conversationTitle(conversation, me) {
  const name = conversation?.metadata?.name ?? conversation?.metadata?.title;
  if (typeof name === 'string' && name.trim()) return name.trim();
  const names = others(conversation, me).map((m) => memberName(m));
  return names.length ? names.join(', ') : 'Just you';
}

/** One line for a message in the conversation list. */
export function preview(message) {
  if (!message) return 'No messages yet';
  const p = message.payload ?? {};
  if (p.type === 'text') return p.text;
  if (p.type === 'file') return `File: ${p.filename ?? 'file'}${p.caption ? ` — ${p.caption}` : ''}`;
  return 'Message';
}

export function formatSize(bytes) {
  if (!Number.isFinite(bytes)) return '';
  const units = ['B', 'KiB', 'MiB', 'GiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${unit === 0 ? value : value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

/** "14:05" today, else "3 Nov 14:05". */
export function formatTime(iso, now = new Date()) {
  if (!iso) return '';
  const at = new Date(iso);
  const time = at.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  if (at.toDateString() === now.toDateString()) return time;
  return `${at.toLocaleDateString([], { day: 'numeric', month: 'short' })} ${time}`;
}

export function presenceText(presence) {
  if (!presence) return '';
  if (presence.status === 'online') return 'online';
  if (presence.status === 'away') return 'away';
  return presence.last_seen ? `last seen ${formatTime(presence.last_seen)}` : 'offline';
}
