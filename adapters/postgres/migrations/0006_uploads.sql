-- Upload sessions (domain/uploads.py) and the chunks each has received. A chunk is a row of its
-- own, so concurrent chunk uploads of one file never overwrite each other's progress.
CREATE TABLE uploads (
    id               uuid        PRIMARY KEY,
    owner_id         uuid        NOT NULL,
    filename         text        NOT NULL,
    size             bigint      NOT NULL,
    content_type     text        NOT NULL,
    declared_sha256  text,
    chunk_size       int         NOT NULL,
    created_at       timestamptz NOT NULL,
    expires_at       timestamptz NOT NULL,
    status           text        NOT NULL CHECK (status IN ('uploading', 'completed', 'failed', 'aborted', 'expired')),
    sha256           text,
    failure          text,
    store_upload_id  text,
    blob_key         text
);
-- Identical content is stored once: a completed file's digest finds the blob to share.
CREATE INDEX uploads_completed_sha256 ON uploads (sha256, created_at) WHERE status = 'completed';
-- The janitor's expired sessions.
CREATE INDEX uploads_open_expiry ON uploads (expires_at) WHERE status = 'uploading';

CREATE TABLE upload_chunks (
    upload_id   uuid        NOT NULL REFERENCES uploads (id) ON DELETE CASCADE,
    index       int         NOT NULL,
    received_at timestamptz NOT NULL,
    PRIMARY KEY (upload_id, index)
);
