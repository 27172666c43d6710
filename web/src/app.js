// The app: session, routes, state, the WebSocket, and the actions the views call.
import { html } from 'htm/preact';
import { useEffect, useMemo, useReducer, useRef, useState } from 'preact/hooks';
import { createApi, withQuery } from './api.js';
import { connectRealtime } from './realtime.js';
import { fromEvent, initialState, reduce } from './state.js';
import { recipientKey } from './status.js';
import { Upload, savedUploads } from './uploads.js';
import { AuthView } from './views/auth.js';
import { ChatView, EmptyChat } from './views/chat.js';
import { PhonesView } from './views/phones.js';
import { SettingsView } from './views/settings.js';
import { Sidebar } from './views/sidebar.js';

const api = createApi();
const TYPING_SHOWN_MS = 4_000;
const STATUS_FETCH_DELAY_MS = 250;

/** ``#/c/<id>`` -> {name: 'chat', id}; ``#/phones``; ``#/settings``; anything else: the list. */
export function parseRoute(hash) {
  const parts = hash.replace(/^#\/?/, '').split('/').filter(Boolean);
  if (parts[0] === 'c' && parts[1]) return { name: 'chat', id: decodeURIComponent(parts[1]) };
  if (parts[0] === 'phones') return { name: 'phones' };
  if (parts[0] === 'settings') return { name: 'settings' };
  return { name: 'home' };
}

function useRoute() {
  const [route, setRoute] = useState(() => parseRoute(location.hash));
  useEffect(() => {
    const onHash = () => setRoute(parseRoute(location.hash));
    addEventListener('hashchange', onHash);
    return () => removeEventListener('hashchange', onHash);
  }, []);
  return route;
}

export function App() {
  const [user, setUser] = useState(api.user);
  useEffect(() => api.onSession((s) => setUser(s?.user ?? null)), []);
  if (!user) return html`<${AuthView} api=${api} />`;
  return html`<${Signed} key=${user.user_id} me=${user} />`;
}

function Signed({ me }) {
  const route = useRoute();
  const [state, dispatch] = useReducer(reduce, initialState);
  const [connection, setConnection] = useState('connecting');
  const [config, setConfig] = useState({ sandbox_url: null, max_file_size: 2 * 1024 ** 3 });
  const [notice, setNotice] = useState(null);
  const [uploads, setUploads] = useState([]);
  const stateRef = useRef(state);
  stateRef.current = state;
  const routeRef = useRef(route);
  routeRef.current = route;
  const socket = useRef(null);
  const statusTimers = useRef(new Map());

  const say = (text) => {
    setNotice({ text, at: Date.now() });
  };

  const loadConversations = async () => {
    try {
      const page = await api.get(withQuery('/v1/conversations', { limit: 100 }));
      dispatch({ type: 'conversations', items: page.items });
    } catch (error) {
      say(error.message);
    }
  };

  const loadConversation = async (id) => {
    try {
      dispatch({ type: 'conversation', item: await api.get(`/v1/conversations/${id}`) });
    } catch (error) {
      if (error.status !== 404 && error.status !== 403) say(error.message);
    }
  };

  const loadHistory = async (id, older = false) => {
    const t = stateRef.current.threads[id];
    if (older && !t?.olderCursor) return;
    const path = withQuery(`/v1/conversations/${id}/messages`, { limit: 50, cursor: older ? t.olderCursor : null });
    try {
      dispatch({ type: 'history', id, older, page: await api.get(path) });
    } catch (error) {
      say(error.message);
    }
  };

  /** The whole delivery list of one of our messages, once its first status frame arrives (frames name one each). */
  const fetchStatus = (messageId, conversationId) => {
    const timers = statusTimers.current;
    if (timers.has(messageId)) return;
    timers.set(
      messageId,
      setTimeout(async () => {
        try {
          const answer = await api.get(`/v1/messages/${messageId}/status`);
          dispatch({ type: 'status', messageId, conversationId, known: answer.deliveries });
        } catch {
          /* the next frame asks again */
        } finally {
          timers.delete(messageId);
        }
      }, STATUS_FETCH_DELAY_MS),
    );
  };

  const onEvent = (event) => {
    const current = stateRef.current;
    switch (event.type) {
      case 'message.created': {
        const message = fromEvent(event);
        const viewing = routeRef.current.name === 'chat' && routeRef.current.id === event.conversation_id && document.visibilityState === 'visible';
        const mine = event.sender?.user_id === me.user_id;
        if (!current.conversations[event.conversation_id]) loadConversation(event.conversation_id);
        dispatch({ type: 'message', message, mine, unread: !viewing });
        break;
      }
      case 'message.status': {
        const mine = recipientKey(event.recipient) !== me.user_id; // else: our own read, from another of our clients
        if (mine) {
          dispatch({ type: 'status', messageId: event.message_id, conversationId: event.conversation_id, events: [event] });
          if (!current.deliveries[event.message_id]?.complete) fetchStatus(event.message_id, event.conversation_id);
        } else if (event.status === 'READ') {
          loadConversation(event.conversation_id); // read on another of our clients: the unread count changed
        }
        break;
      }
      case 'presence':
        dispatch({ type: 'presence', userId: event.user_id, status: event.status, last_seen: event.last_seen });
        break;
      case 'typing':
        if (event.user_id !== me.user_id) {
          dispatch({ type: 'typing', id: event.conversation_id, userId: event.user_id, until: Date.now() + TYPING_SHOWN_MS });
        }
        break;
      case 'resync': {
        loadConversations();
        const r = routeRef.current;
        if (r.name === 'chat') loadHistory(r.id);
        break;
      }
      case 'error':
        say(event.detail ?? 'The server refused a request');
        break;
      default:
        break;
    }
  };

  useEffect(() => {
    api.get('/config.json').then(setConfig, () => {});
    socket.current = connectRealtime(api, { onEvent: (e) => onEventRef.current(e), onState: setConnection });
    loadConversations();
    const expire = setInterval(() => dispatch({ type: 'typing-expired', now: Date.now() }), 1_000);
    const onVisibility = () => {
      const status = document.visibilityState === 'visible' ? 'online' : 'away';
      api.post('/v1/presence/heartbeat', { status }).catch(() => {});
    };
    document.addEventListener('visibilitychange', onVisibility);
    return () => {
      socket.current?.close();
      clearInterval(expire);
      document.removeEventListener('visibilitychange', onVisibility);
    };
  }, []);
  const onEventRef = useRef(onEvent);
  onEventRef.current = onEvent;

  const actions = useMemo(
    () => ({
      say,
      loadHistory,
      loadConversation,

      async send(conversationId, payload, channels, messageId = crypto.randomUUID()) {
        const optimistic = {
          message_id: messageId,
          conversation_id: conversationId,
          seq: null,
          from: { kind: 'user', user_id: me.user_id, username: me.username },
          payload,
          metadata: {},
          created_at: new Date().toISOString(),
          status: 'PENDING',
        };
        if (payload.type === 'text') dispatch({ type: 'message', message: optimistic, mine: true });
        const body = { message_id: messageId, conversation_id: conversationId, payload };
        if (channels && !channels.includes('all')) body.channels = channels;
        for (let attempt = 0; ; attempt += 1) {
          try {
            const accepted = await api.post('/v1/messages', body);
            if (payload.type === 'file') {
              const stored = await api.get(`/v1/messages/${accepted.message_id}`); // history's enriched file payload
              dispatch({ type: 'message', message: { ...stored, status: 'SENT' }, mine: true });
            } else {
              dispatch({ type: 'message', message: { ...optimistic, seq: accepted.seq, created_at: accepted.created_at, status: 'SENT' }, mine: true });
            }
            return accepted;
          } catch (error) {
            // The same message_id makes a retry safe: the server stores the message once.
            const transient = error.status === 0 || error.status === 503 || error.status === 429;
            if (transient && attempt < 4) {
              await new Promise((r) => setTimeout(r, (error.retryAfter ?? 0) * 1000 || 500 * 2 ** attempt));
              continue;
            }
            dispatch({ type: 'failed-send', conversationId, messageId, error: error.message });
            say(error.message);
            throw error;
          }
        }
      },

      markRead(conversationId, message) {
        const sent = socket.current?.send({ type: 'read', message_id: message.message_id });
        if (!sent) api.post(`/v1/messages/${message.message_id}/read`).catch(() => {});
        dispatch({ type: 'read', id: conversationId, seq: message.seq, incoming: (m) => m.from?.user_id !== me.user_id });
      },

      typing(conversationId) {
        socket.current?.send({ type: 'typing', conversation_id: conversationId });
      },

      async createConversation(type, members, name) {
        const body = { type, members };
        if (name) body.metadata = { name };
        const conversation = await api.post('/v1/conversations', body);
        dispatch({ type: 'conversation', item: { last_message: null, unread_count: 0, ...conversation } });
        location.hash = `#/c/${conversation.conversation_id}`;
        return conversation;
      },

      async presenceOf(userId) {
        try {
          const p = await api.get(`/v1/presence/${userId}`);
          dispatch({ type: 'presence', userId, status: p.status, last_seen: p.last_seen });
        } catch {
          /* not shared with us */
        }
      },

      async status(messageId, conversationId) {
        const answer = await api.get(`/v1/messages/${messageId}/status`);
        dispatch({ type: 'status', messageId, conversationId, known: answer.deliveries });
        return answer;
      },

      upload(file, conversationId, saved = null) {
        if (file.size > config.max_file_size) {
          say(`${file.name} is larger than the ${Math.floor(config.max_file_size / 1024 ** 2)} MiB limit`);
          return;
        }
        const upload = new Upload({
          api,
          file,
          conversationId,
          userId: me.user_id,
          saved,
          onChange: () => setUploads((list) => [...list]),
          onDone: (u) => actions.send(u.conversationId, { type: 'file', file_id: u.fileId }, ['all'], u.record.message_id),
        });
        setUploads((list) => [...list.filter((u) => u.key !== upload.key), upload]);
        upload.start();
      },

      dismissUpload(upload) {
        setUploads((list) => list.filter((u) => u !== upload));
      },
    }),
    [config],
  );

  const unfinished = useMemo(() => {
    const running = new Set(uploads.map((u) => u.fileId));
    return savedUploads(me.user_id).filter((u) => !running.has(u.file_id));
  }, [uploads]);

  const active = route.name === 'chat' ? state.conversations[route.id] : null;
  const ctx = { api, me, state, dispatch, actions, config, uploads, unfinished, connection };
  const main =
    route.name === 'phones'
      ? html`<${PhonesView} ctx=${ctx} />`
      : route.name === 'settings'
        ? html`<${SettingsView} ctx=${ctx} />`
        : route.name === 'chat'
          ? html`<${ChatView} key=${route.id} ctx=${ctx} id=${route.id} conversation=${active} />`
          : html`<${EmptyChat} />`;

  return html`
    <a class="skip" href="#main">Skip to content</a>
    <header class="topbar">
      <a class="brand" href="#/">Chat4All</a>
      <nav aria-label="Main">
        <a href="#/" aria-current=${route.name === 'home' || route.name === 'chat' ? 'page' : null}>Chats</a>
        <a href="#/phones" aria-current=${route.name === 'phones' ? 'page' : null}>Phones</a>
        <a href="#/settings" aria-current=${route.name === 'settings' ? 'page' : null}>Settings</a>
      </nav>
      <span class=${`connection ${connection}`} role="status" aria-live="polite">
        ${connection === 'open' ? 'Live' : connection === 'connecting' ? 'Connecting…' : 'Offline, reconnecting…'}
      </span>
      <span class="me">${me.display_name || me.username}</span>
      <button type="button" class="link" onClick=${() => api.signOut()}>Sign out</button>
    </header>
    <div class=${`layout ${route.name === 'home' ? 'show-list' : 'show-main'}`}>
      ${route.name === 'home' || route.name === 'chat' ? html`<${Sidebar} ctx=${ctx} activeId=${route.id} />` : null}
      <main id="main" tabindex="-1">${main}</main>
    </div>
    <div class="toast" role="alert" aria-live="assertive">
      ${notice ? html`<span>${notice.text}</span><button type="button" class="link" aria-label="Dismiss" onClick=${() => setNotice(null)}>×</button>` : null}
    </div>
  `;
}
