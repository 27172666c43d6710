-- GET /v1/sync: what changed in a viewer's conversations after a point in time. Both walks go
-- conversation by conversation (the viewer's memberships), then by time.
CREATE INDEX messages_conversation_created ON messages (conversation_id, created_at);
CREATE INDEX deliveries_conversation_updated ON deliveries (conversation_id, updated_at);
