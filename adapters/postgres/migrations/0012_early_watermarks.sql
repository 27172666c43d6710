-- Watermarks ("everything sent to this reader up to this time was delivered / read", Messenger's
-- receipts) only cover sends whose answer is recorded: a claim without one may be a send the
-- platform never got (its worker died before sending it). A watermark that covered such claims
-- waits here, per channel, reader (a recipient key) and status, the one reaching furthest; recording
-- a send claimed by up_to, and before the watermark came, applies it. The sweeper forgets old ones.
CREATE TABLE early_watermarks (
    channel     text        NOT NULL,
    reader      text        NOT NULL,
    status      text        NOT NULL,
    up_to       timestamptz NOT NULL,
    at          timestamptz NOT NULL,
    received_at timestamptz NOT NULL,
    PRIMARY KEY (channel, reader, status)
);
CREATE INDEX early_watermarks_received ON early_watermarks (received_at);
