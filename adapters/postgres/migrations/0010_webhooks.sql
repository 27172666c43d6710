-- Outbound webhooks: each user's subscriptions, and the log of every event's delivery to each one
-- (attempts, answers, when the next attempt is due). A delivery's id is derived from its webhook and
-- its event, so re-reading an event records nothing new; position orders a conversation's deliveries.
CREATE TABLE webhooks (
    id              uuid        PRIMARY KEY,
    owner_id        uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    url             text        NOT NULL,
    events          text[]      NOT NULL,
    secret          text        NOT NULL,
    created_at      timestamptz NOT NULL,
    disabled_at     timestamptz,
    disabled_reason text
);
CREATE INDEX webhooks_owner ON webhooks (owner_id, created_at);

CREATE TABLE webhook_deliveries (
    id              uuid        PRIMARY KEY,
    position        bigint      GENERATED ALWAYS AS IDENTITY UNIQUE,
    webhook_id      uuid        NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event           text        NOT NULL,
    ordering_key    text        NOT NULL,
    body            bytea       NOT NULL,
    created_at      timestamptz NOT NULL,
    state           text        NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    leased_until    timestamptz,
    last_status     integer,
    last_error      text,
    delivered_at    timestamptz
);
-- What is due, and the first pending delivery of each (webhook, conversation).
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_queue ON webhook_deliveries (webhook_id, ordering_key, position)
    WHERE state = 'pending';
CREATE INDEX webhook_deliveries_listing ON webhook_deliveries (webhook_id, state, position);
