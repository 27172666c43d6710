-- Receipts that outran their send's ledger entry: a platform reported a message before the
-- channel worker that sent it recorded the platform's id. Recording the id applies them; the
-- sweeper forgets those that never match (messages not sent by us).
CREATE TABLE early_receipts (
    channel             text        NOT NULL,
    platform_message_id text        NOT NULL,
    status              text        NOT NULL,
    at                  timestamptz NOT NULL,
    error               text,
    received_at         timestamptz NOT NULL,
    PRIMARY KEY (channel, platform_message_id, status)
);
CREATE INDEX early_receipts_received ON early_receipts (received_at);

-- Watermarks cover sends still in flight too (the platform may report a read before the ledger
-- has the send's answer), and only Messenger sends watermarks: the index covers every Messenger
-- claim and nothing else, so the other channels' sends pay nothing for it.
DROP INDEX channel_sends_recipient;
CREATE INDEX channel_sends_watermarks ON channel_sends (recipient_key, claimed_at) WHERE channel = 'messenger';
