"""The settings of a deployment behind a proxy and a public S3 endpoint: what they accept, what they refuse."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from entrypoints.settings import Settings
from entrypoints.storage import s3_public_url


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("172.30.0.10", "172.30.0.10"),
        (" 10.244.0.0/16 , 172.30.0.10 ", "10.244.0.0/16,172.30.0.10"),
        ("fd00::/8,::1", "fd00::/8,::1"),
    ],
)
def test_trusted_proxies_are_ip_addresses_and_networks(given: str, kept: str) -> None:
    assert Settings(forwarded_allow_ips=given).forwarded_allow_ips == kept


@pytest.mark.parametrize("given", ["*", "nginx", "10.0.0.1/16", "10.0.0.300", ",", ""])
def test_trusted_proxies_refuse_anything_uvicorn_would_take_for_a_literal(given: str) -> None:
    # uvicorn compares what it cannot parse as text, so a typo would trust no one, and "*" everyone.
    with pytest.raises(ValidationError):
        Settings(forwarded_allow_ips=given)


def test_no_proxy_is_trusted_by_default() -> None:
    assert Settings().forwarded_allow_ips is None


@pytest.mark.parametrize("given", ["minio:9000", "files.example.com", "127.0.0.1:9000", "[::1]:9000"])
def test_the_public_s3_endpoint_is_a_host_and_port(given: str) -> None:
    assert Settings(s3_public_endpoint=given).s3_public_endpoint == given


@pytest.mark.parametrize("given", ["https://files.example.com", "files.example.com/bucket", "a:x", "a:0", "u@a:1", ""])
def test_the_public_s3_endpoint_refuses_urls_and_bad_ports(given: str) -> None:
    with pytest.raises(ValidationError):
        Settings(s3_public_endpoint=given)


@pytest.mark.parametrize(
    ("settings", "url"),
    [
        ({}, None),
        ({"s3_public_endpoint": "files.example.com"}, "https://files.example.com"),
        ({"s3_public_endpoint": "localhost:9000", "s3_secure": False}, "http://localhost:9000"),
        (
            {"s3_public_endpoint": "files.example.com", "s3_secure": False, "s3_public_secure": True},
            "https://files.example.com",
        ),
        ({"s3_public_endpoint": "localhost:9000", "s3_public_secure": False}, "http://localhost:9000"),
    ],
)
def test_the_public_url_takes_its_scheme_from_the_public_flag_else_from_the_endpoints(
    settings: dict[str, object], url: str | None
) -> None:
    assert s3_public_url(Settings(s3_endpoint="minio:9000", **settings)) == url  # type: ignore[arg-type]
