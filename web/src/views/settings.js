// The caller's account and linked platform identities.
import { html } from 'htm/preact';
import { useEffect, useState } from 'preact/hooks';
import { CHANNELS, channelName, formatTime } from '../format.js';

const PLATFORMS = CHANNELS.filter((c) => c.id !== 'internal');
const EXAMPLES = { whatsapp: '+5511999998888', instagram: 'joao.santos', messenger: '1234567890', telegram: '123456789' };

export function SettingsView({ ctx }) {
  const { api, me } = ctx;
  const [identities, setIdentities] = useState(null);
  const [channel, setChannel] = useState('whatsapp');
  const [error, setError] = useState(null);

  const load = () => api.get('/v1/users/me/identities').then((a) => setIdentities(a.items), (e) => setError(e.message));
  useEffect(() => {
    load();
  }, []);

  async function link(event) {
    event.preventDefault();
    const form = new FormData(event.currentTarget);
    setError(null);
    try {
      await api.post('/v1/users/me/identities', { channel, external_id: String(form.get('external_id')).trim() });
      event.target.reset();
      await load();
    } catch (e) {
      setError(e.field?.('external_id') ?? e.message);
    }
  }

  async function unlink(which) {
    setError(null);
    try {
      await api.del(`/v1/users/me/identities/${which}`);
      await load();
    } catch (e) {
      setError(e.message);
    }
  }

  return html`
    <section class="page" aria-labelledby="settings-title">
      <h2 id="settings-title">Settings</h2>
      <div class="card">
        <h3>Account</h3>
        <p><strong>${me.display_name || me.username}</strong> <span class="muted">@${me.username}</span></p>
      </div>
      <div class="card">
        <h3>Linked accounts</h3>
        <p class="muted">Messages reach you on every account you link, and people there can write to you.</p>
        ${identities === null
          ? html`<p class="muted">Loading…</p>`
          : identities.length === 0
            ? html`<p class="muted">None yet.</p>`
            : html`<ul class="identities">
                ${identities.map(
                  (i) => html`<li>
                    <span><strong>${channelName(i.channel)}</strong> ${i.external_id} <span class="muted small">since ${formatTime(i.linked_at)}</span></span>
                    <button type="button" class="secondary small" onClick=${() => unlink(i.channel)} aria-label=${`Unlink ${channelName(i.channel)}`}>Unlink</button>
                  </li>`,
                )}
              </ul>`}
        <form class="row wrap" onSubmit=${link} aria-label="Link an account">
          <label>Platform
            <select value=${channel} onChange=${(e) => setChannel(e.currentTarget.value)}>
              ${PLATFORMS.map((p) => html`<option value=${p.id}>${p.name}</option>`)}
            </select>
          </label>
          <label class="grow">Your ${channelName(channel)} id
            <input name="external_id" required placeholder=${EXAMPLES[channel]} autocomplete="off" />
          </label>
          <button type="submit">Link</button>
        </form>
        ${error ? html`<p class="error" role="alert">${error}</p>` : null}
      </div>
    </section>
  `;
}
