-- Direct uploads (api.md, Files): the client sends the chunks to the object store through presigned
-- part URLs, so the API records them only at completion, from the store's listing.
ALTER TABLE uploads ADD COLUMN direct boolean NOT NULL DEFAULT false;
