// The channel sandbox as phones: what each WhatsApp/Instagram/Messenger/Telegram person received from
// Chat4All, and a box to answer as them (the platform's webhook then carries it to Chat4All).
import { html } from 'htm/preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import { channelName, formatSize, formatTime } from '../format.js';
import { Paperclip } from '../icons.js';

const POLL_MS = 1_000;
const SENDER_HINTS = {
  whatsapp: 'E.164 number, e.g. +5511999998888',
  instagram: 'numeric Instagram-scoped id, e.g. 17841400000001',
  messenger: 'numeric page-scoped id, e.g. 24681357902468',
  telegram: 'numeric chat id, e.g. 123456789',
};

/** Messages grouped into phones: one per (channel, person), the most recently active first. */
export function phonesFrom(items) {
  const phones = new Map();
  for (const m of items) {
    const peer = m.direction === 'inbound' ? m.from : m.to;
    const key = `${m.channel}|${peer}`;
    const phone = phones.get(key) ?? { key, channel: m.channel, peer, messages: [] };
    phone.messages.push(m);
    phones.set(key, phone);
  }
  const latest = (p) => p.messages[p.messages.length - 1]?.received_at ?? '';
  return [...phones.values()].sort((a, b) => (latest(a) < latest(b) ? 1 : latest(a) > latest(b) ? -1 : 0));
}

async function sandboxCall(base, path, body) {
  const init = body === undefined ? {} : { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) };
  const response = await fetch(`${base}${path}`, init);
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(data.detail || data.title || `HTTP ${response.status}`);
  return data;
}

export function PhonesView({ ctx }) {
  const base = ctx.config.sandbox_url?.replace(/\/$/, '');
  const [channels, setChannels] = useState([]);
  const [items, setItems] = useState([]);
  const [error, setError] = useState(null);
  const timer = useRef(null);

  useEffect(() => {
    if (!base) return undefined;
    let stopped = false;
    sandboxCall(base, '/sandbox/channels').then((a) => setChannels(a.items.filter((c) => c.configured)), (e) => setError(e.message));
    const poll = async () => {
      try {
        const answer = await sandboxCall(base, '/sandbox/messages?direction=both');
        if (!stopped) {
          setItems(answer.items);
          setError(null);
        }
      } catch (e) {
        if (!stopped) setError(`The sandbox does not answer: ${e.message}`);
      }
      if (!stopped) timer.current = setTimeout(poll, POLL_MS);
    };
    poll();
    return () => {
      stopped = true;
      clearTimeout(timer.current);
    };
  }, [base]);

  if (!base) {
    return html`<section class="page" aria-labelledby="phones-title">
      <h2 id="phones-title">Phones</h2>
      <p class="muted">No channel sandbox is running. <code>chat4all up</code> starts one when no real platform is configured.</p>
    </section>`;
  }

  const send = async (channel, from, text, name) => {
    const body = { channel, from, text };
    if (name) body.name = name;
    await sandboxCall(base, '/sandbox/inbound', body);
  };

  const phones = phonesFrom(items);
  return html`
    <section class="page phones" aria-labelledby="phones-title">
      <h2 id="phones-title">Phones</h2>
      <p class="muted">The channel sandbox: what people on WhatsApp, Instagram, Messenger and Telegram received, and what they answer.</p>
      ${error ? html`<p class="error" role="alert">${error}</p>` : null}
      <${NewSender} channels=${channels} send=${send} />
      ${phones.length === 0 ? html`<p class="muted">No platform messages yet. Send one from a chat to a platform address.</p>` : null}
      <ul class="phone-grid">
        ${phones.map((p) => html`<${Phone} key=${p.key} phone=${p} send=${send} />`)}
      </ul>
    </section>
  `;
}

function Phone({ phone, send }) {
  const [text, setText] = useState('');
  const [error, setError] = useState(null);
  const list = useRef(null);
  const label = `${channelName(phone.channel)} ${phone.peer}`;

  useEffect(() => {
    if (list.current) list.current.scrollTop = list.current.scrollHeight;
  }, [phone.messages.length]);

  async function submit(event) {
    event.preventDefault();
    if (!text.trim()) return;
    setError(null);
    try {
      await send(phone.channel, phone.peer, text.trim());
      setText('');
    } catch (e) {
      setError(e.message);
    }
  }

  return html`
    <li class=${`phone ${phone.channel}`} aria-label=${label} data-phone=${`${phone.channel}:${phone.peer}`}>
      <header class="phone-head"><strong>${channelName(phone.channel)}</strong> <span>${phone.peer}</span></header>
      <ol class="phone-messages" ref=${list} tabindex="0" aria-label=${`Messages of ${label}`}>
        ${phone.messages.map(
          (m) => html`<li class=${`bubble ${m.direction === 'inbound' ? 'mine' : 'theirs'}`} key=${m.platform_message_id}>
            ${m.type === 'document' || m.file_name
              ? html`<p class="text"><${Paperclip} size=${14} /> ${m.file_name ?? 'document'} ${m.file_size ? html`<span class="muted small">${formatSize(m.file_size)}</span>` : null}</p>
                  ${m.text ? html`<p class="text">${m.text}</p>` : null}`
              : html`<p class="text">${m.text}</p>`}
            <span class="meta"><time datetime=${m.received_at}>${formatTime(m.received_at)}</time></span>
          </li>`,
        )}
      </ol>
      <form class="phone-reply" onSubmit=${submit}>
        <label class="grow"><span class="visually-hidden">Answer as ${label}</span>
          <input value=${text} onInput=${(e) => setText(e.currentTarget.value)} placeholder="Answer as this person" maxlength="4096" />
        </label>
        <button type="submit" disabled=${!text.trim()}>Send</button>
      </form>
      ${error ? html`<p class="error small" role="alert">${error}</p>` : null}
    </li>
  `;
}

function NewSender({ channels, send }) {
  const [channel, setChannel] = useState('whatsapp');
  const [error, setError] = useState(null);
  const [open, setOpen] = useState(false);

  async function submit(event) {
    event.preventDefault();
    const form = new FormData(event.currentTarget);
    setError(null);
    try {
      await send(channel, String(form.get('from')).trim(), String(form.get('text')).trim(), String(form.get('name') || '').trim());
      event.target.reset();
      setOpen(false);
    } catch (e) {
      setError(e.message);
    }
  }

  if (!open) return html`<p><button type="button" onClick=${() => setOpen(true)}>A new person writes…</button></p>`;
  return html`
    <form class="card row wrap" onSubmit=${submit} aria-label="A new person writes">
      <label>Platform
        <select value=${channel} onChange=${(e) => setChannel(e.currentTarget.value)}>
          ${channels.map((c) => html`<option value=${c.channel}>${channelName(c.channel)}</option>`)}
        </select>
      </label>
      <label>Who <input name="from" required placeholder=${SENDER_HINTS[channel]} autocomplete="off" /></label>
      ${channel === 'whatsapp' || channel === 'telegram' ? html`<label>Name <input name="name" autocomplete="off" /></label>` : null}
      <label class="grow">Message <input name="text" required maxlength="4096" autocomplete="off" /></label>
      <button type="submit">Send</button>
      <button type="button" class="secondary" onClick=${() => setOpen(false)}>Cancel</button>
      ${error ? html`<p class="error" role="alert">${error}</p>` : null}
    </form>
  `;
}
