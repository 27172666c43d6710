"""Runtime settings, read from CHAT4ALL_* environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything a Chat4All process can be told through its environment."""

    model_config = SettingsConfigDict(env_prefix="CHAT4ALL_", extra="ignore")

    database_url: str | None = Field(default=None, description="PostgreSQL URL; unset: `up` runs an embedded one")
    data_dir: Path = Field(default=Path(".chat4all"), description="where `up` keeps the embedded database and state")
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 50051
    sandbox_port: int = 8081
    http_workers: int = Field(default=2, ge=1, le=64)
    jwt_secret: SecretStr | None = Field(default=None, description="HS256 signing key; `up` generates one if unset")
    access_token_ttl_s: int = Field(default=3600, ge=60, le=86400)
    refresh_token_ttl_s: int = Field(default=30 * 86400, ge=3600)
    db_pool_min: int = 2
    db_pool_max: int = 10
    group_max: int = Field(default=100, ge=3, le=10_000)
    max_body_bytes: int = Field(default=1024 * 1024, description="cap on request bodies outside the file routes")
    argon2_profile: str = Field(default="rfc9106-low-memory", description="'rfc9106-low-memory' or 'test' (fast)")
    log_level: str = "info"
