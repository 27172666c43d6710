-- Inbound from the platforms: where each platform address's messages go, and what watermark
-- receipts ("everything sent before this time was read") cover.

-- The conversation each address is bound to: the one that last sent to it, or that it last
-- wrote in. An inbound message from the address without a reply context goes there.
CREATE TABLE address_bindings (
    address         text        PRIMARY KEY,
    conversation_id uuid        NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    bound_at        timestamptz NOT NULL
);
CREATE INDEX address_bindings_conversation ON address_bindings (conversation_id);

-- A watermark names a channel, a reader and a time: the reader's deliveries handed over by then.
-- Their claim time is the bound (a claim precedes the platform's acceptance, which precedes its
-- watermark; the time we record the answer comes after both).
CREATE INDEX channel_sends_recipient ON channel_sends (channel, recipient_key, claimed_at)
    WHERE platform_message_id IS NOT NULL;
