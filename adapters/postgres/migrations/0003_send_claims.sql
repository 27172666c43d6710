-- Channel workers claim a delivery in the send ledger before sending it and complete the entry
-- with the platform's id afterwards. A claim with no platform id is a send whose outcome is not
-- known (its worker died in between): the next worker asks the platform, or waits out a lease,
-- instead of sending a second copy.
ALTER TABLE channel_sends
    ALTER COLUMN platform_message_id DROP NOT NULL,
    ALTER COLUMN sent_at DROP NOT NULL,
    ADD COLUMN claimed_at timestamptz NOT NULL DEFAULT now();
