-- The event pipeline: how far each conversation is routed, what each platform accepted, and a
-- wake-up for the outbox relay.

-- The router's progress per conversation: messages up to routed_seq have had their delivery
-- jobs published. Kept apart from conversations so that routing never waits on senders (who
-- lock the conversation row to take a seq) and senders never wait on routing.
CREATE TABLE routing_progress (
    conversation_id uuid        PRIMARY KEY REFERENCES conversations (id) ON DELETE CASCADE,
    routed_seq      bigint      NOT NULL DEFAULT 0,
    updated_at      timestamptz NOT NULL
);

-- The send ledger: one row per delivery a platform accepted, with the platform's id for it.
-- Channel workers look here before sending (no second platform message for one delivery) and
-- receipts find their delivery through (channel, platform_message_id).
CREATE TABLE channel_sends (
    message_id          uuid        NOT NULL,
    recipient_key       text        NOT NULL,
    channel             text        NOT NULL,
    platform_message_id text        NOT NULL,
    sent_at             timestamptz NOT NULL,
    PRIMARY KEY (message_id, recipient_key, channel),
    FOREIGN KEY (message_id, recipient_key, channel)
        REFERENCES deliveries (message_id, recipient_key, channel) ON DELETE CASCADE
);
CREATE UNIQUE INDEX channel_sends_platform_id ON channel_sends (channel, platform_message_id);

-- Platform deliveries nobody has handed over yet: what the sweeper re-drives after a deadline.
CREATE INDEX deliveries_unsent ON deliveries (updated_at)
    WHERE status = 'SENT' AND channel <> 'internal';

-- Recent messages: where the sweeper looks for conversations the router has left behind.
-- (Not an index on conversations.last_activity_at: every accepted message updates that column,
-- and indexing it would make those updates non-HOT.)
CREATE INDEX messages_created ON messages (created_at);

-- Relays LISTEN on this channel; one notification per inserting statement (PostgreSQL folds
-- identical notifications of a transaction into one).
CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('chat4all_outbox', '');
    RETURN NULL;
END
$$;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();
