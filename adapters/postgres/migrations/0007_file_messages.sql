-- File messages: who may download a file is whoever sees a message carrying it (api.md, Files),
-- so "the messages that carry this file" is one index look-up.

CREATE INDEX messages_file ON messages ((content->>'file_id')) WHERE content->>'type' = 'file';
