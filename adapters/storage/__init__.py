"""File storage adapters behind the ObjectStore port: a directory (``filesystem``, the embedded default) and
S3/MinIO (``s3``). Import the one you use from its module: the S3 client costs half a second to import.
"""
