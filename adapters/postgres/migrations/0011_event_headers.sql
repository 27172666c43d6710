-- The trace context of the request that caused an outbox event, carried to its Kafka record's headers.
ALTER TABLE outbox ADD COLUMN headers jsonb;
