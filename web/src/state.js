// The app's state and every change to it, as one pure reducer (tested in state.test.js).
import { aggregate, applyDelivery, forward } from './status.js';

export const initialState = {
  conversations: {}, // id -> conversation as the API gives it (last_message, unread_count) plus `loaded`
  order: [], // conversation ids, most recent activity first
  listLoaded: false,
  threads: {}, // conversation id -> { items: [message], olderCursor, hasOlder, loaded }
  deliveries: {}, // message id -> { complete, items: { key: delivery } }, for the caller's own messages
  presence: {}, // user id -> { status, last_seen }
  typing: {}, // conversation id -> { user id: until (ms) }
};

const activity = (c) => c.last_message?.created_at ?? c.last_activity_at ?? c.created_at ?? '';

function sortOrder(conversations) {
  return Object.values(conversations)
    .sort((a, b) => (activity(a) < activity(b) ? 1 : activity(a) > activity(b) ? -1 : 0))
    .map((c) => c.conversation_id);
}

function withConversations(state, conversations) {
  return { ...state, conversations, order: sortOrder(conversations) };
}

/** Insert or replace messages by id, keeping the thread ordered by seq (unsent ones last). */
export function mergeMessages(items, incoming) {
  const byId = new Map(items.map((m) => [m.message_id, m]));
  for (const m of incoming) {
    const before = byId.get(m.message_id);
    byId.set(m.message_id, before ? { ...before, ...m, status: forward(before.status, m.status) } : m);
  }
  const seq = (m) => (m.seq ?? Number.MAX_SAFE_INTEGER);
  return [...byId.values()].sort((a, b) => seq(a) - seq(b));
}

function thread(state, id) {
  return state.threads[id] ?? { items: [], olderCursor: null, hasOlder: false, loaded: false };
}

function withThread(state, id, next) {
  return { ...state, threads: { ...state.threads, [id]: next } };
}

/** A message as history shows it, from a ``message.created`` frame. */
export function fromEvent(event) {
  return {
    message_id: event.message_id,
    conversation_id: event.conversation_id,
    seq: event.seq,
    from: event.sender,
    payload: event.payload,
    metadata: event.metadata ?? {},
    created_at: event.created_at,
    status: 'DELIVERED',
  };
}

export function reduce(state, action) {
  switch (action.type) {
    case 'reset':
      return initialState;

    case 'conversations': {
      const conversations = { ...state.conversations };
      for (const c of action.items) conversations[c.conversation_id] = { ...conversations[c.conversation_id], ...c };
      return { ...withConversations(state, conversations), listLoaded: true };
    }

    case 'conversation':
      return withConversations(state, {
        ...state.conversations,
        [action.item.conversation_id]: { ...state.conversations[action.item.conversation_id], ...action.item },
      });

    case 'history': {
      // A page of GET /v1/conversations/{id}/messages: the latest page, or an older one (``older``).
      const before = thread(state, action.id);
      const items = mergeMessages(before.items, action.page.items);
      const olderCursor = action.older || !before.loaded ? action.page.next_cursor : before.olderCursor;
      return withThread(state, action.id, { items, olderCursor, hasOlder: Boolean(olderCursor), loaded: true });
    }

    case 'message': {
      // A message: one the caller sent (optimistic, then accepted) or a ``message.created`` frame.
      const { message, mine } = action;
      const id = message.conversation_id;
      const t = thread(state, id);
      let next = withThread(state, id, { ...t, items: mergeMessages(t.items, [message]) });
      const conv = state.conversations[id];
      if (conv) {
        const newer = !conv.last_message || (message.seq ?? Infinity) >= (conv.last_message.seq ?? 0);
        const unseen = !mine && action.unread && !t.items.some((m) => m.message_id === message.message_id);
        next = withConversations(next, {
          ...next.conversations,
          [id]: {
            ...conv,
            last_message: newer ? { ...conv.last_message, ...message } : conv.last_message,
            unread_count: (conv.unread_count ?? 0) + (unseen ? 1 : 0),
          },
        });
      }
      const typing = state.typing[id];
      const who = message.from?.user_id;
      if (typing && who && typing[who]) {
        const { [who]: _, ...rest } = typing;
        next = { ...next, typing: { ...next.typing, [id]: rest } };
      }
      return next;
    }

    case 'failed-send': {
      const t = thread(state, action.conversationId);
      const items = t.items.map((m) => (m.message_id === action.messageId ? { ...m, status: 'FAILED', sendError: action.error } : m));
      return withThread(state, action.conversationId, { ...t, items });
    }

    case 'status': {
      // ``message.status`` frames (``events``), or the deliveries of GET /v1/messages/{id}/status (``known``).
      // The message's status can be told only once every delivery is known: the frames name one each.
      const { messageId, conversationId } = action;
      const before = state.deliveries[messageId] ?? { complete: false, items: {} };
      let items = {};
      for (const d of [...(action.known ?? []), ...Object.values(before.items), ...(action.events ?? [])]) {
        items = applyDelivery(items, d);
      }
      const complete = Boolean(action.known) || before.complete;
      let next = { ...state, deliveries: { ...state.deliveries, [messageId]: { complete, items } } };
      const status = complete ? aggregate(items) : null;
      if (!status) return next;
      const t = thread(next, conversationId);
      if (t.items.some((m) => m.message_id === messageId)) {
        const moved = (m) => ({ ...m, status: forward(m.status === 'PENDING' ? 'SENT' : m.status, status) });
        next = withThread(next, conversationId, { ...t, items: t.items.map((m) => (m.message_id === messageId ? moved(m) : m)) });
      }
      const conv = next.conversations[conversationId];
      if (conv?.last_message?.message_id === messageId) {
        const last = { ...conv.last_message, status: forward(conv.last_message.status, status) };
        next = withConversations(next, { ...next.conversations, [conversationId]: { ...conv, last_message: last } });
      }
      return next;
    }

    case 'read': {
      // The caller read everything up to ``seq`` in a conversation (here or on another of its clients).
      const conv = state.conversations[action.id];
      if (!conv) return state;
      const t = thread(state, action.id);
      const left = t.loaded ? t.items.filter((m) => m.seq > action.seq && action.incoming(m)).length : 0;
      return withConversations(state, { ...state.conversations, [action.id]: { ...conv, unread_count: Math.min(conv.unread_count ?? 0, left) } });
    }

    case 'presence':
      return { ...state, presence: { ...state.presence, [action.userId]: { status: action.status, last_seen: action.last_seen } } };

    case 'typing': {
      const current = state.typing[action.id] ?? {};
      return { ...state, typing: { ...state.typing, [action.id]: { ...current, [action.userId]: action.until } } };
    }

    case 'typing-expired': {
      const typing = {};
      for (const [id, users] of Object.entries(state.typing)) {
        const live = Object.fromEntries(Object.entries(users).filter(([, until]) => until > action.now));
        if (Object.keys(live).length) typing[id] = live;
      }
      return { ...state, typing };
    }

    default:
      throw new Error(`unknown action ${action.type}`);
  }
}
