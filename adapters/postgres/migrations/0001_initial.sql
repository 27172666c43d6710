-- Chat4All's first schema: accounts, identities, conversations, messages, deliveries and the outbox.
-- Timestamps are timestamptz; participants are stored by their stable key (Participant.key):
-- 'user:<uuid>' or '<channel>:<external id>'. Foreign keys hold each aggregate together
-- (members, messages, deliveries, history); user ids are not foreign keys, so the repositories
-- accept what their in-memory twins accept.

CREATE TABLE users (
    id            uuid        PRIMARY KEY,
    username      text        NOT NULL UNIQUE,
    password_hash text        NOT NULL,
    display_name  text        NOT NULL,
    created_at    timestamptz NOT NULL
);

CREATE TABLE api_clients (
    id          uuid        PRIMARY KEY,
    owner_id    uuid        NOT NULL,
    name        text        NOT NULL,
    secret_hash text        NOT NULL,
    created_at  timestamptz NOT NULL
);
CREATE INDEX api_clients_owner ON api_clients (owner_id);

-- One user per address, one identity per channel per user.
CREATE TABLE identities (
    channel     text        NOT NULL,
    external_id text        NOT NULL,
    user_id     uuid        NOT NULL,
    linked_at   timestamptz NOT NULL,
    PRIMARY KEY (channel, external_id),
    CONSTRAINT identities_one_per_channel UNIQUE (user_id, channel)
);

CREATE TABLE conversations (
    id               uuid        PRIMARY KEY,
    type             text        NOT NULL CHECK (type IN ('private', 'group')),
    created_by       uuid        NOT NULL,
    created_at       timestamptz NOT NULL,
    metadata         jsonb       NOT NULL DEFAULT '{}',
    -- The message counter: next_seq increments it under the row lock, so positions are gap-free.
    last_seq         bigint      NOT NULL DEFAULT 0,
    last_activity_at timestamptz NOT NULL
);

CREATE TABLE conversation_members (
    conversation_id uuid NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    position        int  NOT NULL,
    member_key      text NOT NULL,
    kind            text NOT NULL CHECK (kind IN ('user', 'contact')),
    user_id         uuid,
    address         text,
    PRIMARY KEY (conversation_id, position),
    UNIQUE (conversation_id, member_key),
    CHECK ((kind = 'user') = (user_id IS NOT NULL AND address IS NULL))
);
-- "My conversations": from a member key to its conversations.
CREATE INDEX conversation_members_member ON conversation_members (member_key, conversation_id);

CREATE TABLE messages (
    id              uuid        PRIMARY KEY,
    conversation_id uuid        NOT NULL REFERENCES conversations (id),
    seq             bigint      NOT NULL,
    sender_key      text        NOT NULL,
    content         jsonb       NOT NULL,
    recipient_keys  text[]      NOT NULL,
    channels        text[],     -- NULL: every channel
    metadata        jsonb       NOT NULL DEFAULT '{}',
    fingerprint     text        NOT NULL,
    created_at      timestamptz NOT NULL,
    CONSTRAINT messages_position UNIQUE (conversation_id, seq)
);

-- One row per (message, recipient, channel). conversation_id and seq are copied from the message
-- so "this recipient's unread deliveries in this conversation up to seq" is one index range.
CREATE TABLE deliveries (
    message_id      uuid        NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    recipient_key   text        NOT NULL,
    channel         text        NOT NULL,
    position        int         NOT NULL,   -- order within the message, as planned
    conversation_id uuid        NOT NULL,
    seq             bigint      NOT NULL,
    status          text        NOT NULL CHECK (status IN ('SENT', 'FAILED', 'DELIVERED', 'READ')),
    updated_at      timestamptz NOT NULL,
    error           text,
    PRIMARY KEY (message_id, recipient_key, channel)
);
CREATE INDEX deliveries_unread
    ON deliveries (conversation_id, recipient_key, seq)
    WHERE status <> 'READ';

-- Each delivery's status history; position is the entry's index in Delivery.history, which makes
-- re-saving a history idempotent (already stored entries conflict and are skipped).
CREATE TABLE delivery_events (
    message_id    uuid        NOT NULL,
    recipient_key text        NOT NULL,
    channel       text        NOT NULL,
    position      int         NOT NULL,
    status        text        NOT NULL,
    at            timestamptz NOT NULL,
    detail        text,
    PRIMARY KEY (message_id, recipient_key, channel, position),
    FOREIGN KEY (message_id, recipient_key, channel)
        REFERENCES deliveries (message_id, recipient_key, channel) ON DELETE CASCADE
);

-- Refresh tokens are stored as SHA-256 digests and used once.
CREATE TABLE refresh_tokens (
    digest     text        PRIMARY KEY,
    user_id    uuid        NOT NULL,
    expires_at timestamptz NOT NULL,
    used_at    timestamptz
);

-- The transactional outbox: rows commit with the change they describe; the relay publishes them.
CREATE TABLE outbox (
    id           bigserial   PRIMARY KEY,
    topic        text        NOT NULL,
    key          text        NOT NULL,
    payload      jsonb       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;
