// One conversation: history with infinite scroll back, live messages, ticks, typing, presence,
// read receipts, the composer with its channel choice, and file uploads with progress.
import { html } from 'htm/preact';
import { useEffect, useLayoutEffect, useRef, useState } from 'preact/hooks';
import { CHANNELS, channelName, conversationTitle, formatSize, formatTime, memberName, others, presenceText } from '../format.js';
import { Clock, Paperclip } from '../icons.js';
import { tick } from '../status.js';
import { sameFile } from '../uploads.js';

const TYPING_EVERY_MS = 2_000;
const NEAR_BOTTOM_PX = 120;

export function EmptyChat() {
  return html`<section class="empty" aria-label="No conversation open">
    <h2>Welcome to Chat4All</h2>
    <p class="muted">Pick a conversation, or start a new one. Link your WhatsApp, Instagram, Messenger and Telegram accounts in Settings.</p>
  </section>`;
}

export function ChatView({ ctx, id, conversation }) {
  const { state, actions, me } = ctx;
  const thread = state.threads[id];
  const [dragging, setDragging] = useState(false);

  useEffect(() => {
    if (!thread?.loaded) actions.loadHistory(id);
    if (!conversation) actions.loadConversation(id);
  }, [id]);

  const other = conversation?.type === 'private' ? others(conversation, me)[0] : null;
  useEffect(() => {
    if (other?.user_id) actions.presenceOf(other.user_id);
  }, [other?.user_id]);

  if (!conversation) return html`<section class="chat"><p class="muted pad">Loading…</p></section>`;

  const title = conversationTitle(conversation, me);
  const typers = Object.keys(state.typing[id] ?? {}).map((userId) => memberName({ user_id: userId }, conversation.members));
  const status = other?.user_id
    ? presenceText(state.presence[other.user_id])
    : other?.address
      ? `${channelName(other.address.split(':')[0])} contact`
      : `${conversation.members.length} members`;

  const onDrop = (event) => {
    event.preventDefault();
    setDragging(false);
    for (const file of event.dataTransfer?.files ?? []) actions.upload(file, id);
  };

  return html`
    <section class=${`chat ${dragging ? 'dragging' : ''}`} aria-labelledby="chat-title"
      onDragOver=${(e) => { e.preventDefault(); setDragging(true); }}
      onDragLeave=${(e) => { if (e.currentTarget === e.target) setDragging(false); }}
      onDrop=${onDrop}>
      <header class="chat-head">
        <a class="back" href="#/" aria-label="Back to conversations">‹</a>
        <div>
          <h2 id="chat-title">${title}</h2>
          <p class="muted small" data-testid="presence">${status}</p>
        </div>
      </header>
      <${Messages} ctx=${ctx} id=${id} conversation=${conversation} thread=${thread} />
      <p class="typing small" aria-live="polite" data-testid="typing">
        ${typers.length ? `${typers.join(', ')} ${typers.length > 1 ? 'are' : 'is'} typing…` : ''}
      </p>
      <${Uploads} ctx=${ctx} id=${id} />
      <${Composer} ctx=${ctx} id=${id} />
      ${dragging ? html`<div class="drop-hint" aria-hidden="true">Drop files to send them</div>` : null}
    </section>
  `;
}

function Messages({ ctx, id, conversation, thread }) {
  const { actions, me } = ctx;
  const list = useRef(null);
  const sentinel = useRef(null);
  const anchor = useRef(null);
  const readSeq = useRef(0);
  const readTimer = useRef(null);
  const items = thread?.items ?? [];
  const first = items[0]?.message_id;
  const last = items[items.length - 1]?.message_id;
  const incoming = (m) => m.from?.user_id !== me.user_id;

  // Older pages come in above: keep what the reader was looking at where it was.
  useLayoutEffect(() => {
    const el = list.current;
    if (!el) return;
    if (anchor.current) {
      el.scrollTop = el.scrollHeight - anchor.current.height + anchor.current.top;
      anchor.current = null;
    }
  }, [first]);

  // New messages at the bottom: follow them when the reader is at the bottom (or sent it).
  const wasNearBottom = useRef(true);
  useLayoutEffect(() => {
    const el = list.current;
    if (!el) return;
    const lastItem = items[items.length - 1];
    if (wasNearBottom.current || (lastItem && !incoming(lastItem))) el.scrollTop = el.scrollHeight;
  }, [last, thread?.loaded]);

  useEffect(() => {
    const el = list.current;
    const top = sentinel.current;
    if (!el || !top) return undefined;
    const observer = new IntersectionObserver(
      (entries) => {
        if (entries.some((e) => e.isIntersecting) && thread?.hasOlder) loadOlder();
      },
      { root: el, rootMargin: '200px 0px 0px 0px' },
    );
    observer.observe(top);
    return () => observer.disconnect();
  }, [thread?.hasOlder, thread?.olderCursor]);

  // Read receipts: the latest incoming message that has been on screen while the page was visible.
  useEffect(() => {
    const el = list.current;
    if (!el) return undefined;
    const observer = new IntersectionObserver(
      (entries) => {
        for (const entry of entries) {
          if (!entry.isIntersecting) continue;
          const seq = Number(entry.target.dataset.seq);
          if (seq > readSeq.current && document.visibilityState === 'visible') {
            readSeq.current = seq;
            clearTimeout(readTimer.current);
            readTimer.current = setTimeout(() => {
              const message = items.find((m) => m.seq === readSeq.current);
              if (message) actions.markRead(id, message);
            }, 300);
          }
        }
      },
      { root: el, threshold: 0.6 },
    );
    for (const node of el.querySelectorAll('[data-incoming="true"]')) observer.observe(node);
    return () => observer.disconnect();
  }, [last, items.length]);

  function loadOlder() {
    const el = list.current;
    if (el && !anchor.current) {
      anchor.current = { height: el.scrollHeight, top: el.scrollTop };
      actions.loadHistory(id, true);
    }
  }

  const onScroll = (e) => {
    const el = e.currentTarget;
    wasNearBottom.current = el.scrollHeight - el.scrollTop - el.clientHeight < NEAR_BOTTOM_PX;
  };

  return html`
    <div class="messages" ref=${list} onScroll=${onScroll} tabindex="0" aria-label="Message history">
      <div ref=${sentinel} class="sentinel"></div>
      ${thread?.hasOlder
        ? html`<p class="center"><button type="button" class="secondary small" onClick=${loadOlder}>Load older messages</button></p>`
        : thread?.loaded && items.length
          ? html`<p class="center muted small">Beginning of the conversation</p>`
          : null}
      ${thread?.loaded && !items.length ? html`<p class="center muted">No messages yet. Say hello!</p>` : null}
      <div role="log" aria-live="polite" aria-relevant="additions" aria-label="Messages">
        <ol>
          ${items.map((m) => html`<${Bubble} key=${m.message_id} ctx=${ctx} message=${m} conversation=${conversation} mine=${!incoming(m)} />`)}
        </ol>
      </div>
    </div>
  `;
}

function Bubble({ ctx, message, conversation, mine }) {
  const p = message.payload ?? {};
  const sender = mine ? 'You' : memberName(message.from, conversation.members);
  return html`
    <li class=${`bubble ${mine ? 'mine' : 'theirs'}`} data-seq=${message.seq ?? ''} data-incoming=${mine ? 'false' : 'true'}
      data-message-id=${message.message_id}>
      ${!mine && conversation.type === 'group' ? html`<span class="sender">${sender}</span>` : null}
      ${!mine && conversation.type !== 'group' ? html`<span class="visually-hidden">${sender}: </span>` : null}
      ${p.type === 'file' ? html`<${FileCard} ctx=${ctx} payload=${p} />` : html`<p class="text">${p.text}</p>`}
      <span class="meta">
        <time datetime=${message.created_at}>${formatTime(message.created_at)}</time>
        ${mine ? html`<${Ticks} ctx=${ctx} message=${message} />` : null}
      </span>
    </li>
  `;
}

function Ticks({ ctx, message }) {
  const [open, setOpen] = useState(false);
  const [detail, setDetail] = useState(null);
  const known = ctx.state.deliveries[message.message_id]?.items ?? {};
  const t = tick(message.status, known);

  // A failed message says why: the reasons live in its deliveries.
  useEffect(() => {
    if (message.status === 'FAILED' && !message.sendError && !Object.keys(known).length) {
      ctx.actions.status(message.message_id, message.conversation_id).catch(() => {});
    }
  }, [message.status]);

  async function toggle() {
    const next = !open;
    setOpen(next);
    if (next && message.seq !== null) {
      try {
        setDetail(await ctx.actions.status(message.message_id, message.conversation_id));
      } catch (e) {
        setDetail({ error: e.message });
      }
    }
  }

  const label = message.sendError ? `Not sent: ${message.sendError}` : t.label;
  return html`
    <span class="ticks-wrap">
      <button type="button" class=${`ticks ${t.tone}`} aria-label=${`Status: ${label}`} aria-expanded=${open}
        title=${label} data-status=${message.status} onClick=${toggle}>
        ${t.icon === 'clock' ? html`<${Clock} />` : html`<span aria-hidden="true">${t.icon}</span>`}
      </button>
      ${message.status === 'FAILED' ? html`<span class="failed-reason small">${label}</span>` : null}
      ${open
        ? html`<div class="status-detail" role="region" aria-label="Delivery details">
            ${detail?.error ? html`<p class="error">${detail.error}</p>` : null}
            ${detail?.deliveries
              ? html`<ul>${detail.deliveries.map((d) => html`<li>${memberName(d.recipient)} · ${channelName(d.channel)} · ${tick(d.status, { x: d }).label}</li>`)}</ul>`
              : !detail ? html`<p class="muted small">Loading…</p>` : null}
          </div>`
        : null}
    </span>
  `;
}

function FileCard({ ctx, payload }) {
  const [error, setError] = useState(null);
  async function download() {
    setError(null);
    try {
      const link = await ctx.api.get(`/v1/files/${payload.file_id}/download`);
      const a = document.createElement('a');
      a.href = link.download_url;
      a.download = link.filename ?? payload.filename ?? '';
      a.rel = 'noopener';
      document.body.append(a);
      a.click();
      a.remove();
    } catch (e) {
      setError(e.message);
    }
  }
  return html`
    <div class="file-card">
      <span class="file-icon"><${Paperclip} size=${22} /></span>
      <span class="file-info">
        <span class="file-name">${payload.filename ?? 'file'}</span>
        <span class="muted small">${formatSize(payload.size)}${payload.content_type ? ` · ${payload.content_type}` : ''}</span>
      </span>
      <button type="button" class="secondary small" onClick=${download} aria-label=${`Download ${payload.filename ?? 'file'}`}>Download</button>
      ${payload.caption ? html`<p class="text">${payload.caption}</p>` : null}
      ${error ? html`<p class="error small" role="alert">${error}</p>` : null}
    </div>
  `;
}

function Uploads({ ctx, id }) {
  const { actions } = ctx;
  const mine = ctx.uploads.filter((u) => u.conversationId === id && u.state.phase !== 'cancelled');
  const waiting = ctx.unfinished.filter((u) => u.conversation_id === id);
  if (!mine.length && !waiting.length) return null;

  function resumeWith(saved, event) {
    const file = event.currentTarget.files?.[0];
    event.currentTarget.value = '';
    if (!file) return;
    if (!sameFile(saved, file)) {
      actions.say(`That is not ${saved.name} (${formatSize(saved.size)}); pick the same file to resume`);
      return;
    }
    actions.upload(file, id, saved);
  }

  return html`
    <ul class="uploads" aria-label="Uploads">
      ${mine.map((u) => html`<${UploadRow} key=${u.key} upload=${u} actions=${actions} />`)}
      ${waiting.map(
        (saved) => html`<li class="upload" key=${saved.file_id}>
          <span class="file-name">${saved.name}</span>
          <span class="muted small">${formatSize(saved.size)} · interrupted. Pick the same file to resume.</span>
          <label class="button secondary small">Resume…
            <input type="file" class="visually-hidden" aria-label=${`Pick ${saved.name} to resume its upload`} onChange=${(e) => resumeWith(saved, e)} />
          </label>
        </li>`,
      )}
    </ul>
  `;
}

const PHASES = {
  starting: 'Starting…',
  uploading: 'Uploading',
  paused: 'Paused',
  completing: 'Checking…',
  sending: 'Sending…',
  done: 'Sent',
  failed: 'Failed',
};

function UploadRow({ upload, actions }) {
  const { phase, sent, size, error } = upload.state;
  const percent = size ? Math.floor((sent / size) * 100) : 100;
  const name = upload.file.name;
  return html`
    <li class="upload" data-phase=${phase}>
      <span class="file-name">${name}</span>
      <progress max="100" value=${percent} aria-label=${`Upload of ${name}`}></progress>
      <span class="small" aria-live="polite">${PHASES[phase] ?? phase} ${phase === 'uploading' || phase === 'paused' ? `${percent}% of ${formatSize(size)}` : ''}</span>
      ${error ? html`<span class="error small">${error}</span>` : null}
      <span class="row">
        ${phase === 'uploading' || phase === 'starting' ? html`<button type="button" class="secondary small" onClick=${() => upload.pause()}>Pause</button>` : null}
        ${phase === 'paused' || phase === 'failed' ? html`<button type="button" class="small" onClick=${() => upload.resume()}>Resume</button>` : null}
        ${phase !== 'done' && phase !== 'sending' && phase !== 'completing' ? html`<button type="button" class="secondary small" onClick=${() => upload.cancel()}>Cancel</button>` : null}
        ${phase === 'done' ? html`<button type="button" class="link small" aria-label=${`Dismiss ${name}`} onClick=${() => actions.dismissUpload(upload)}>Dismiss</button>` : null}
      </span>
    </li>
  `;
}

function Composer({ ctx, id }) {
  const { actions } = ctx;
  const [text, setText] = useState('');
  const [channels, setChannels] = useState(['all']);
  const lastTyping = useRef(0);

  function onInput(event) {
    setText(event.currentTarget.value);
    const now = Date.now();
    if (now - lastTyping.current > TYPING_EVERY_MS) {
      lastTyping.current = now;
      actions.typing(id);
    }
  }

  function submit(event) {
    event.preventDefault();
    const body = text.trim();
    if (!body) return;
    setText('');
    lastTyping.current = 0;
    actions.send(id, { type: 'text', text: body }, channels).catch(() => {});
  }

  function onKeyDown(event) {
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) submit(event);
  }

  function toggle(channel, on) {
    if (channel === 'all') return setChannels(['all']);
    const rest = channels.filter((c) => c !== 'all' && c !== channel);
    const next = on ? [...rest, channel] : rest;
    setChannels(next.length ? next : ['all']);
  }

  return html`
    <form class="composer" onSubmit=${submit} aria-label="Send a message">
      <details class="channels">
        <summary>Send via: ${channels.includes('all') ? 'every channel' : channels.map(channelName).join(', ')}</summary>
        <fieldset>
          <legend class="visually-hidden">Channels</legend>
          <label class="inline"><input type="checkbox" checked=${channels.includes('all')} onChange=${(e) => toggle('all', e.currentTarget.checked)} /> Every channel</label>
          ${CHANNELS.map(
            (c) => html`<label class="inline"><input type="checkbox" name="channel" value=${c.id} checked=${channels.includes(c.id)}
              onChange=${(e) => toggle(c.id, e.currentTarget.checked)} /> ${c.name}</label>`,
          )}
        </fieldset>
      </details>
      <div class="compose-row">
        <label class="button secondary attach" title="Attach files">
          <${Paperclip} /><span class="visually-hidden">Attach files</span>
          <input type="file" multiple class="visually-hidden" data-testid="attach"
            onChange=${(e) => { for (const f of e.currentTarget.files ?? []) actions.upload(f, id); e.currentTarget.value = ''; }} />
        </label>
        <label class="grow"><span class="visually-hidden">Message</span>
          <textarea rows="1" value=${text} onInput=${onInput} onKeyDown=${onKeyDown} placeholder="Write a message" maxlength="4096"></textarea>
        </label>
        <button type="submit" disabled=${!text.trim()}>Send</button>
      </div>
    </form>
  `;
}
