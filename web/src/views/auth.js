// Sign in, or create an account.
import { html } from 'htm/preact';
import { useState } from 'preact/hooks';

export function AuthView({ api }) {
  const [mode, setMode] = useState('signin');
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const signup = mode === 'signup';

  async function submit(event) {
    event.preventDefault();
    const form = new FormData(event.currentTarget);
    setBusy(true);
    setError(null);
    try {
      const username = String(form.get('username')).trim();
      const password = String(form.get('password'));
      if (signup) await api.signUp(username, password, String(form.get('display_name') || '').trim());
      else await api.signIn(username, password);
    } catch (e) {
      setError(e.status === 401 ? 'Wrong username or password' : e.message);
      setBusy(false);
    }
  }

  return html`
    <main class="auth" id="main">
      <h1>Chat4All</h1>
      <p class="lead">One inbox for Chat4All, WhatsApp, Instagram Direct, Messenger and Telegram.</p>
      <form class="card" onSubmit=${submit} aria-labelledby="auth-title">
        <h2 id="auth-title">${signup ? 'Create an account' : 'Sign in'}</h2>
        <label>Username
          <input name="username" autocomplete="username" required minlength="3" maxlength="32"
            pattern="[a-z0-9_.\\-]{3,32}" title="3-32 lower-case letters, digits, _ . -" />
        </label>
        ${signup
          ? html`<label>Display name <span class="hint">(optional)</span>
              <input name="display_name" autocomplete="name" maxlength="200" />
            </label>`
          : null}
        <label>Password
          <input name="password" type="password" required minlength=${signup ? 8 : 1}
            autocomplete=${signup ? 'new-password' : 'current-password'} />
        </label>
        ${error ? html`<p class="error" role="alert">${error}</p>` : null}
        <button type="submit" disabled=${busy}>${signup ? 'Create account' : 'Sign in'}</button>
        <p>
          ${signup ? 'Already have an account? ' : 'New here? '}
          <button type="button" class="link" onClick=${() => { setMode(signup ? 'signin' : 'signup'); setError(null); }}>
            ${signup ? 'Sign in' : 'Create an account'}
          </button>
        </p>
      </form>
    </main>
  `;
}
