// The conversation list (last message, unread count, presence) and the form that starts a conversation.
import { html } from 'htm/preact';
import { useState } from 'preact/hooks';
import { conversationTitle, formatTime, memberName, others, preview } from '../format.js';

export function Sidebar({ ctx, activeId }) {
  const { state, me } = ctx;
  return html`
    <aside class="sidebar" aria-label="Conversations">
      <div class="sidebar-head">
        <h2>Chats</h2>
      </div>
      <${NewConversation} ctx=${ctx} />
      ${!state.listLoaded
        ? html`<p class="muted pad">Loading…</p>`
        : state.order.length === 0
          ? html`<p class="muted pad">No conversations yet. Start one above.</p>`
          : html`<ul class="conversations">
              ${state.order.map((id) => html`<${Row} key=${id} conversation=${state.conversations[id]} me=${me} state=${state} active=${id === activeId} />`)}
            </ul>`}
    </aside>
  `;
}

function Row({ conversation, me, state, active }) {
  const title = conversationTitle(conversation, me);
  const last = conversation.last_message;
  const unread = conversation.unread_count ?? 0;
  const other = conversation.type === 'private' ? others(conversation, me)[0] : null;
  const online = other?.user_id && state.presence[other.user_id]?.status === 'online';
  const who = last && last.from?.user_id === me.user_id ? 'You: ' : last && conversation.type === 'group' ? `${memberName(last.from, conversation.members)}: ` : '';
  return html`
    <li>
      <a class=${`conversation ${active ? 'active' : ''} ${unread ? 'unread' : ''}`} href=${`#/c/${conversation.conversation_id}`}
        aria-current=${active ? 'page' : null}>
        <span class="avatar" aria-hidden="true">${title.slice(0, 1).toUpperCase()}${online ? html`<span class="dot online"></span>` : null}</span>
        <span class="summary">
          <span class="line">
            <span class="title">${title}${unread ? html`<span class="visually-hidden">, ${unread} unread</span>` : null}</span>
            <span class="time">${formatTime(last?.created_at ?? conversation.last_activity_at)}</span>
          </span>
          <span class="line">
            <span class="preview">${who}${preview(last)}</span>
            ${unread ? html`<span class="badge" data-testid="unread" aria-hidden="true">${unread}</span>` : null}
          </span>
        </span>
      </a>
    </li>
  `;
}

function NewConversation({ ctx }) {
  const [open, setOpen] = useState(false);
  const [type, setType] = useState('private');
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);

  async function submit(event) {
    event.preventDefault();
    const form = new FormData(event.currentTarget);
    const members = String(form.get('members'))
      .split(/[\s,;]+/)
      .map((m) => m.trim())
      .filter(Boolean);
    setBusy(true);
    setError(null);
    try {
      await ctx.actions.createConversation(type, members, String(form.get('name') || '').trim());
      event.target.reset();
      setOpen(false);
    } catch (e) {
      setError(e.field?.('members') ?? e.message);
    } finally {
      setBusy(false);
    }
  }

  if (!open) {
    return html`<div class="pad"><button type="button" class="wide" onClick=${() => setOpen(true)}>New conversation</button></div>`;
  }
  return html`
    <form class="new-conversation pad" onSubmit=${submit} aria-label="New conversation">
      <fieldset>
        <legend>Type</legend>
        <label class="inline"><input type="radio" name="type" value="private" checked=${type === 'private'} onChange=${() => setType('private')} /> Private</label>
        <label class="inline"><input type="radio" name="type" value="group" checked=${type === 'group'} onChange=${() => setType('group')} /> Group</label>
      </fieldset>
      <label>${type === 'private' ? 'With' : 'Members'}
        <input name="members" required autocomplete="off"
          placeholder=${type === 'private' ? 'username or whatsapp:+5511…' : 'usernames or addresses, comma-separated'} />
        <span class="hint">A username, or a platform address such as whatsapp:+5511999998888, instagram:handle, telegram:12345</span>
      </label>
      ${type === 'group' ? html`<label>Group name <input name="name" maxlength="100" /></label>` : null}
      ${error ? html`<p class="error" role="alert">${error}</p>` : null}
      <div class="row">
        <button type="submit" disabled=${busy}>Start</button>
        <button type="button" class="secondary" onClick=${() => setOpen(false)}>Cancel</button>
      </div>
    </form>
  `;
}
