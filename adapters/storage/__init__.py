"""File storage adapters behind the ObjectStore port: a directory (the embedded default) and S3."""

from adapters.storage.filesystem import BLOB_ROUTE, FilesystemObjectStore, blob_key, blob_token, check_key
from adapters.storage.s3 import S3_MIN_PART_SIZE, S3ObjectStore, close_client, content_disposition, ensure_bucket

__all__ = [
    "BLOB_ROUTE",
    "S3_MIN_PART_SIZE",
    "FilesystemObjectStore",
    "S3ObjectStore",
    "blob_key",
    "blob_token",
    "check_key",
    "close_client",
    "content_disposition",
    "ensure_bucket",
]
