"""Runtime settings, read from CHAT4ALL_* environment variables."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

WORKER_KINDS = ("relay", "router", "channels", "status", "push", "webhooks", "sweeper", "telegram-updates")
"""The pipeline's worker processes (``python -m entrypoints.workers <kind>``). ``telegram-updates`` runs
only when Telegram updates are polled (at most one: Telegram refuses concurrent getUpdates)."""

PLATFORM_NAMES = ("whatsapp", "instagram", "messenger", "telegram")
RATE_LIMIT_NAMES = ("send", "expensive", "login", "anonymous")
WEB_DIST = Path(__file__).resolve().parents[1] / "web" / "dist"
"""Where `make web` builds the web app (``web/`` of the checkout this package runs from)."""

M = TypeVar("M", bound=Mapping[str, Any])


def _only(value: M, known: tuple[str, ...], what: str) -> M:
    """``value`` if every key of it is one of ``known``."""
    unknown = sorted(set(value) - set(known))
    if unknown:
        raise ValueError(f"unknown {what} {unknown}; known: {list(known)}")
    return value


class RateSetting(BaseModel):
    """A token bucket: ``burst`` at once, then ``per_second``."""

    per_second: float = Field(gt=0)
    burst: int = Field(ge=1)


class PaceSetting(BaseModel):
    """How fast one platform is sent to: over all and per recipient (null: no limit)."""

    overall: RateSetting | None = None
    per_recipient: RateSetting | None = None


class Settings(BaseSettings):
    """Everything a Chat4All process can be told through its environment."""

    model_config = SettingsConfigDict(env_prefix="CHAT4ALL_", extra="ignore")

    database_url: str | None = Field(default=None, description="PostgreSQL URL; unset: `up` runs an embedded one")
    data_dir: Path = Field(default=Path(".chat4all"), description="where `up` keeps the embedded database and state")
    kafka_bootstrap: str | None = Field(
        default=None, description="Kafka bootstrap servers (host:port[,host:port]); unset: `up` runs an embedded broker"
    )
    kafka_partitions: int = Field(
        default=8, ge=1, le=1024, description="partitions of each topic `up` and `chat4all topics` create"
    )
    kafka_replication_factor: int = Field(
        default=1, ge=1, le=16, description="replicas of each topic `up` and `chat4all topics` create"
    )
    kafka_min_insync_replicas: int | None = Field(
        default=None, ge=1, le=16, description="the topics' min.insync.replicas; unset: the broker's default"
    )
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 50051
    metrics_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="the gRPC API and each worker serve GET /metrics (this process's metrics) and GET /health/live "
        "on this port; unset: none (under `up` the HTTP API's /metrics shows every runtime)",
    )
    metrics_host: str | None = Field(
        default=None, description="the address the metrics port binds; unset: CHAT4ALL_HOST"
    )
    worker_stall_s: float = Field(
        default=300.0,
        gt=0,
        description="a worker whose loops have not come round (a Kafka poll, a retry, a sweep) for this long "
        "answers 503 on /health/live, so that it is restarted",
    )
    grpc_max_message_bytes: int = Field(
        default=4 * 1024 * 1024,
        ge=1024,
        description="largest gRPC message a client may send (RESOURCE_EXHAUSTED above)",
    )
    redis_url: str | None = Field(
        default=None,
        description="Redis URL for real-time fan-out and presence; unset: `up` runs an embedded one, "
        "and a lone API process keeps them in memory",
    )
    ws_max_frame_bytes: int = Field(
        default=64 * 1024, ge=1024, description="largest WebSocket frame a client may send (closed with 1009 above)"
    )
    ws_queue: int = Field(
        default=4096, ge=8, description="frames a socket may fall behind before it is closed (the client resyncs)"
    )
    ws_compression: bool = Field(
        default=False,
        description="permessage-deflate on WebSockets: less traffic, about twice the memory per socket",
    )
    presence_ttl_s: float = Field(default=60.0, gt=0, description="silence after which a user is offline")
    rate_limiting: bool = Field(default=True, description="enforce the request rate limits (429 over them)")
    rate_limits: dict[str, RateSetting | None] = Field(
        default={},
        description="overrides of the request limits (JSON), e.g. "
        '{"send": {"per_second": 50, "burst": 100}}; null turns one off. Limits: send (per sender), expensive '
        "(per user: conversations, identities, clients, webhooks, uploads), login (per account), anonymous "
        "(per client address: sign-up, log-in, refresh)",
    )
    pacing: bool = Field(default=True, description="pace each channel worker's sends to the platform's limits")
    channel_paces: dict[str, PaceSetting] = Field(
        default={},
        description="overrides of the platforms' paces (JSON), e.g. "
        '{"whatsapp": {"overall": {"per_second": 1000, "burst": 1000}, "per_recipient": null}}',
    )
    webhook_allow_loopback: bool = Field(
        default=False, description="webhook URLs may reach loopback addresses (`up` allows them, for local receivers)"
    )
    webhook_allow_private: bool = Field(
        default=False, description="webhook URLs may reach private addresses (RFC 1918, fc00::/7, 100.64.0.0/10)"
    )
    webhook_timeout_s: float = Field(default=15.0, gt=0, le=60, description="longest a webhook call may take")
    webhook_attempts: int = Field(
        default=18, ge=1, le=40, description="attempts before a webhook delivery is a dead letter (about 4 h)"
    )
    webhook_retry_base_s: float = Field(
        default=5.0,
        gt=0,
        description="bound of the first wait between webhook attempts (each wait is random up to a bound that doubles)",
    )
    webhook_retry_cap_s: float = Field(default=3600.0, gt=0, description="longest wait between webhook attempts")
    pacing_max_wait_s: float = Field(
        default=5.0, ge=0, description="longest a send waits for its slot before its job is deferred"
    )
    sandbox_port: int = 8081
    http_workers: int = Field(default=2, ge=1, le=64)
    jwt_secret: SecretStr | None = Field(default=None, description="HS256 signing key; `up` generates one if unset")
    access_token_ttl_s: int = Field(default=3600, ge=60, le=86400)
    refresh_token_ttl_s: int = Field(default=30 * 86400, ge=3600)
    db_pool_min: int = 2
    db_pool_max: int = 10
    db_acquire_timeout_s: float = Field(
        default=3.0,
        gt=0,
        description="longest a request waits to borrow a database connection before it is answered 503 with "
        "Retry-After (while PostgreSQL is down or every connection is busy)",
    )
    group_max: int = Field(default=100, ge=3, le=10_000)
    max_body_bytes: int = Field(default=1024 * 1024, description="cap on request bodies outside the file routes")
    max_file_size: int = Field(default=2 * 1024**3, ge=1, description="largest file an upload may declare (413 above)")
    forwarded_allow_ips: str | None = Field(
        default=None,
        description="the proxies the HTTP API believes about the client: comma-separated IP addresses or networks "
        "(CIDR); a request from one of them has the address its X-Forwarded-For names (and the scheme of "
        "X-Forwarded-Proto). Unset: none, every client is its peer's address",
    )
    public_url: str | None = Field(
        default=None, description="the HTTP API's URL as clients reach it (download links); unset: the listen address"
    )
    storage: str = Field(
        default="filesystem",
        pattern="^(filesystem|s3)$",
        description="where files go: `filesystem` or `s3` (MinIO, S3)",
    )
    files_dir: Path | None = Field(default=None, description="the filesystem store's root; unset: <data dir>/files")
    s3_endpoint: str | None = Field(default=None, description="S3/MinIO endpoint, host:port")
    s3_access_key: SecretStr | None = None
    s3_secret_key: SecretStr | None = None
    s3_bucket: str = "chat4all"
    s3_region: str | None = None
    s3_secure: bool = Field(default=True, description="HTTPS to the S3 endpoint")
    s3_public_endpoint: str | None = Field(
        default=None,
        description="the S3 endpoint as clients reach it, host:port: presigned links (downloads, direct-upload "
        "parts) name it and are signed for it, while the runtimes keep talking to s3_endpoint; unset: s3_endpoint",
    )
    s3_public_secure: bool | None = Field(default=None, description="HTTPS in the presigned links; unset: as s3_secure")
    s3_timeout_s: float = Field(
        default=30.0, gt=0, description="longest wait for S3 to accept a connection or send the next bytes"
    )
    argon2_profile: str = Field(default="rfc9106-low-memory", description="'rfc9106-low-memory' or 'test' (fast)")
    log_level: str = "info"
    log_format: str = Field(
        default="json",
        pattern="^(json|console)$",
        description="`json`: one JSON object per line (structlog); `console`: aligned text for a terminal",
    )

    # The event pipeline's workers.
    channels: list[str] = Field(default=list(PLATFORM_NAMES), description="platforms the channel workers serve")
    telegram_bot_token: SecretStr | None = Field(
        default=None, description="Telegram bot token; set: telegram deliveries go to the Bot API, unset: loopback"
    )
    telegram_api_base: str = Field(
        default="https://api.telegram.org", description="Bot API base URL (Telegram, a local Bot API server)"
    )
    whatsapp_access_token: SecretStr | None = Field(
        default=None, description="WhatsApp Cloud API access token; with the phone number id: real sends, else loopback"
    )
    whatsapp_phone_number_id: str | None = Field(default=None, description="the WhatsApp business number's id")
    messenger_page_token: SecretStr | None = Field(
        default=None, description="Page access token for Messenger; set: real sends, else loopback"
    )
    messenger_page_id: str = Field(default="me", description="the Page's id (`me`: the token's Page)")
    instagram_access_token: SecretStr | None = Field(
        default=None, description="access token for Instagram messaging; set: real sends, else loopback"
    )
    instagram_account_id: str = Field(default="me", description="the Instagram professional account's id")
    graph_api_base: str = Field(default="https://graph.facebook.com", description="Meta Graph API base URL")
    graph_api_version: str = Field(default="v25.0", description="Meta Graph API version")
    # Inbound: the platforms' webhooks (see docs/connectors.md). A channel without its secret refuses them all.
    whatsapp_app_secret: SecretStr | None = Field(
        default=None, description="Meta app secret: checks X-Hub-Signature-256 on /webhooks/whatsapp"
    )
    whatsapp_verify_token: SecretStr | None = Field(
        default=None, description="the hub.verify_token Meta sends in the /webhooks/whatsapp handshake"
    )
    messenger_app_secret: SecretStr | None = Field(
        default=None, description="Meta app secret: checks X-Hub-Signature-256 on /webhooks/messenger"
    )
    messenger_verify_token: SecretStr | None = Field(
        default=None, description="the hub.verify_token of the /webhooks/messenger handshake"
    )
    instagram_app_secret: SecretStr | None = Field(
        default=None, description="Meta app secret: checks X-Hub-Signature-256 on /webhooks/instagram"
    )
    instagram_verify_token: SecretStr | None = Field(
        default=None, description="the hub.verify_token of the /webhooks/instagram handshake"
    )
    telegram_webhook_secret: SecretStr | None = Field(
        default=None,
        description="setWebhook's secret_token: checks X-Telegram-Bot-Api-Secret-Token on /webhooks/telegram",
    )
    telegram_updates: str = Field(
        default="webhook",
        pattern="^(webhook|polling)$",
        description="how Telegram updates arrive: `webhook` (POST /webhooks/telegram) or `polling` (getUpdates worker)",
    )
    inbox_owner: str | None = Field(
        default=None,
        description="username who receives inbound messages that belong to no conversation yet (every channel)",
    )
    inbox_owners: dict[str, str] = Field(
        default={}, description='per-channel inbox owners (JSON, e.g. {"whatsapp": "sales"}); win over inbox_owner'
    )
    sandbox: bool | None = Field(
        default=None,
        description="`up` runs the channel sandbox and points every channel at it; unset: when no platform "
        "credentials are set",
    )
    sandbox_chat4all_url: str = Field(
        default="http://127.0.0.1:8000", description="where the channel sandbox sends its webhooks (the HTTP API)"
    )
    web_dir: Path = Field(
        default=WEB_DIST,
        description="the built web app the HTTP API serves at / (`make web` builds it); without index.html, / is 503",
    )
    web_sandbox_url: str | None = Field(
        default=None,
        description="the channel sandbox's URL as the web app reaches it (GET /config.json); `up` sets it",
    )
    relay_batch: int = Field(default=500, ge=1, le=10_000, description="outbox events the relay publishes at once")
    relay_poll_interval: float = Field(default=1.0, gt=0, description="seconds between outbox polls without a NOTIFY")
    outbox_retention_s: float = Field(default=3600.0, gt=0, description="how long published outbox events are kept")
    broker_check_interval_s: float = Field(
        default=5.0, gt=0, description="seconds between the relay's checks that the broker still has its log"
    )
    broker_loss_replay_s: float = Field(
        default=60.0,
        ge=0,
        description="when the broker lost its log, the relay publishes again what it published this long before "
        "the last check that found the log whole (covers consumers lagging up to this much)",
    )
    sweep_interval_s: float = Field(default=30.0, gt=0, description="seconds between sweeps")
    sweep_deadline_s: float = Field(default=300.0, gt=0, description="age at which the sweeper re-drives work")
    delivery_attempts: int = Field(
        default=8, ge=1, le=100, description="attempts before a job is dead-lettered (keep above breaker_threshold)"
    )
    breaker_threshold: int = Field(default=5, ge=1, description="consecutive failures that open a channel's circuit")
    breaker_reset_s: float = Field(default=10.0, gt=0, description="seconds an open circuit waits before a probe")
    echo_grace_s: float = Field(
        default=10.0,
        gt=0,
        description="seconds after a send in doubt (its worker died) was claimed that a platform echoing our sends "
        "(WhatsApp, Messenger, Instagram) has for its echo to reach the status worker; a send unconfirmed by then is "
        "sent (again). Keep it above the webhook-to-status-worker latency and well below the 60 s claim lease",
    )
    worker_processes: dict[str, int] = Field(
        default={},
        description='processes of each worker kind `up` runs (JSON, e.g. {"router": 2, "channels": 2}); default 1 each',
    )
    kafka_fetch_wait_ms: int = Field(
        default=20,
        ge=1,
        le=10_000,
        description="longest a worker's fetch waits for new records; brokers that answer only when it expires "
        "(Tansu) add up to this much latency per hop",
    )
    kafka_idle_fetch_wait_ms: int = Field(
        default=100,
        ge=1,
        le=10_000,
        description="the same, for a worker that found no records for a second: fewer fetches while idle (each "
        "costs the broker CPU), at the price of up to this much latency for the first record after a quiet spell "
        "with a broker that answers only when the wait expires (Tansu); not below kafka_fetch_wait_ms",
    )
    worker_session_timeout_ms: int = Field(
        default=10_000, ge=1_000, description="how long a dead worker keeps its partitions (Kafka session timeout)"
    )

    @field_validator("inbox_owners", "channel_paces")
    @classmethod
    def _known_channels(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _only(value, PLATFORM_NAMES, "channels")

    @field_validator("web_sandbox_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"an http:// or https:// URL, not {value!r}")
        return value.rstrip("/")

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _addresses(cls, value: str | None) -> str | None:
        """IP addresses and networks only: uvicorn takes anything else (a typo, a network with host bits set)
        for a literal that never matches, and "*" would let every client name its own address."""
        if value is None:
            return None
        items = [item.strip() for item in value.split(",") if item.strip()]
        if not items:
            raise ValueError("name at least one IP address or network")
        for item in items:
            try:
                ipaddress.ip_network(item) if "/" in item else ipaddress.ip_address(item)
            except ValueError as exc:
                raise ValueError(f"{item!r} is not an IP address or network (CIDR): {exc}") from exc
        return ",".join(items)

    @field_validator("s3_public_endpoint")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(f"//{value}")
        try:
            port_ok = parts.port != 0  # a port that is not a number from 1 to 65535 raises
        except ValueError:
            port_ok = False
        if not (parts.hostname and parts.netloc == value and "@" not in value and port_ok):
            raise ValueError(f"host or host:port, without a scheme or a path, not {value!r}")
        return value

    @field_validator("rate_limits")
    @classmethod
    def _known_limits(cls, value: dict[str, RateSetting | None]) -> dict[str, RateSetting | None]:
        return _only(value, RATE_LIMIT_NAMES, "rate limits")

    @field_validator("worker_processes")
    @classmethod
    def _known_workers(cls, value: dict[str, int]) -> dict[str, int]:
        _only(value, WORKER_KINDS, "worker kinds")
        for kind, count in value.items():
            if not 0 <= count <= 16:
                raise ValueError(f"{kind}: between 0 and 16 processes")
        return value
