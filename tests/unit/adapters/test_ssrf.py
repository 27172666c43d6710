"""The egress guard for outbound webhooks: URLs refused at registration, addresses refused at connect
time (IP literals, DNS rebinding, split answers), redirects returned and never followed."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from adapters.webhooks import (
    MAX_BODY_BYTES,
    EgressPolicy,
    GuardedResolver,
    RefusedAddress,
    UnsafeUrl,
    address_allowed,
    check_url,
    deliver_post,
    guarded_session,
    parse_retry_after,
    refusal_of,
    resolve_checked,
)

DEFAULT = EgressPolicy()
LOOPBACK = EgressPolicy(allow_loopback=True)
PRIVATE = EgressPolicy(allow_private=True)
ANYTHING = EgressPolicy(allow_loopback=True, allow_private=True)
PUBLIC_IP = "93.184.215.14"


def refused(reason: str, *urls: str) -> list[tuple[str, str]]:
    """``urls`` refused with a reason that contains ``reason``."""
    return [(url, reason) for url in urls]


REFUSED_AT_REGISTRATION = [
    *refused(
        "is loopback",
        "http://127.0.0.1/",
        "http://127.255.255.254:8080/hook",
        "http://[::1]/",
        "http://127。0。0。1/",  # ideographic full stops: IDNA maps them to dots
    ),
    # The spellings of 127.0.0.1 that ipaddress does not parse but URL parsers and resolvers read.
    *refused(
        "not a dotted-quad",
        "http://127.1/",
        "http://2130706433/",
        "http://0x7f000001/",
        "http://0x7f.1/",
        "http://0X7F.0.0.1/",
        "http://017700000001/",
        "http://0177.0.0.1/",
        "http://127.0.0.1./",
        "http://١٢٧.0.0.1/",
        "http://0/",
    ),
    *refused("unspecified", "http://0.0.0.0/", "http://[::]/"),
    # IPv6 forms that carry an IPv4 address.
    *refused(
        "of 127.0.0.1 (loopback)",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:7f00:1]/",
        "http://[::127.0.0.1]/",
        "http://[::ffff:0:127.0.0.1]/",
        "http://[2002:7f00:1::]/",
        "http://[64:ff9b::127.0.0.1]/",
    ),
    *refused("IPv4-mapped IPv6 address of 169.254.169.254", "http://[0:0:0:0:0:ffff:169.254.169.254]/"),
    *refused("IPv4-mapped IPv6 address of 8.8.8.8 (a public address)", "http://[::ffff:8.8.8.8]/"),
    *refused("local-use NAT64", "http://[64:ff9b:1::a00:1]/"),
    *refused("Teredo", "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/"),
    *refused(
        "private (RFC 1918)", "http://10.0.0.1/", "http://172.16.0.1/", "http://172.31.255.255/", "http://192.168.1.1/"
    ),
    *refused("carrier-grade NAT", "http://100.64.0.1/"),
    *refused("unique local", "http://[fc00::1]/", "http://[fd12:3456::1]/"),
    *refused(
        "cloud metadata",
        "http://169.254.169.254/latest/meta-data/",
        "http://169.254.170.2/v2/credentials",
        "http://100.100.100.200/latest/meta-data/",
        "http://192.0.0.192/opc/v2/instance/",
        "http://168.63.129.16/machine",
        "http://[fd00:ec2::254]/latest/meta-data/",
    ),
    *refused("link-local", "http://169.254.1.1/", "http://[fe80::1]/"),
    *refused("zone index", "http://[fe80::1%25eth0]/"),
    *refused("multicast", "http://224.0.0.1/", "http://239.255.255.250/", "http://[ff02::1]/"),
    *refused("broadcast", "http://255.255.255.255/"),
    *refused("reserved", "http://240.0.0.1/", "http://192.0.0.8/"),
    *refused(
        "documentation", "http://192.0.2.1/", "http://198.51.100.7/", "http://203.0.113.9/", "http://[2001:db8::1]/"
    ),
    *refused("benchmarking", "http://198.18.0.1/"),
    *refused("6to4 relay", "http://192.88.99.1/"),
    *refused("discard-only", "http://[100::1]/"),
    *refused("site-local", "http://[fec0::1]/"),
    *refused("not a global unicast address", "http://[4000::1]/"),
    *refused(
        "names this machine",
        "http://localhost/",
        "http://LOCALHOST:8080/",
        "http://localhost./",
        "http://foo.localhost/",
        "http://\uff4c\uff4f\uff43\uff41\uff4c\uff48\uff4f\uff53\uff54/",  # fullwidth: IDNA maps it to localhost
    ),
    *refused(
        "internal name",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://instance-data.ec2.internal/",
        "http://printer.local/",
        "http://router.home.arpa/",
    ),
    *refused("not a fully qualified name", "http://metadata/", "http://kafka:9092/"),
    *refused(
        "scheme must be https or http",
        "ftp://example.com/hook",
        "file:///etc/passwd",
        "gopher://example.com:70/_hello",
        "javascript:alert(1)",
        "data:text/plain,hello",
        "ws://example.com/hook",
        "//example.com/hook",
        "/hook",
        "",
    ),
    # User info, fragments and backslashes: where URL parsers disagree about the host.
    *refused(
        "user info",
        "https://evil.com@127.0.0.1/",
        "https://user:pass@example.com/",
        "https://@example.com/",
    ),
    *refused("fragment", "https://127.0.0.1#@evil.com", "https://example.com/hook#section"),
    *refused("backslash", "https://evil.com\\@127.0.0.1", "https:\\\\example.com\\hook"),
    *refused("escaped characters", "https://%2e%2e/", "https://ex%61mple.com/", "https://127%2e0%2e0%2e1/"),
    *refused(
        "not a valid host name",
        "https://a_b.example.com/",
        "https://-bad.example.com/",
        "https://a..b.example.com/",
        "https://xn--zz.example.com/",
    ),
    *refused("not an IPv6 address", "https://[v1.x]/"),
    *refused(
        "not a valid URL", "https://[::1/", "https://:80/", "https://example.com:70000/", "https://example.com:99x/"
    ),
    *refused("no host", "https:///hook", "https://"),
    *refused("port must be between 1 and 65535", "https://example.com:0/"),
    *refused("longer than 2048", "https://example.com/" + "a" * 2048),
    *refused(
        "whitespace or control characters",
        "https://exa mple.com/",
        " https://example.com/hook",
        "https://example.com/hook\n",
        "https://example.com/\r\nX-Injected: 1",
        "https://example.com\t/hook",
        "https://example.com/\x00",
        "https://example.com/\u200b",
        "https://example.com/\u00a0",
    ),
]


@pytest.mark.parametrize(
    ("url", "reason"), REFUSED_AT_REGISTRATION, ids=[repr(u)[:60] for u, _ in REFUSED_AT_REGISTRATION]
)
def test_a_url_that_could_reach_our_infrastructure_is_refused_at_registration(url: str, reason: str) -> None:
    with pytest.raises(UnsafeUrl) as refusal:
        check_url(url, DEFAULT)

    assert reason in refusal.value.reason  # the message for the API's 422
    assert str(refusal.value) == refusal.value.reason


def test_there_are_enough_refused_variants() -> None:
    urls = [url for url, _ in REFUSED_AT_REGISTRATION]
    assert len(set(urls)) == len(urls) >= 40


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (f"https://{PUBLIC_IP}/hook", f"https://{PUBLIC_IP}/hook"),
        ("https://example.com/hook", "https://example.com/hook"),
        ("http://example.com/hook", "http://example.com/hook"),
        (
            "https://hooks.example.com:8443/a%2Fb?y=a%26b%3Dc&z=%20+q",
            "https://hooks.example.com:8443/a%2Fb?y=a%26b%3Dc&z=%20+q",
        ),
        ("https://example.com/a/../b?x=%2F", "https://example.com/b?x=/"),  # yarl's normalisation, as aiohttp's
        ("HTTPS://Hooks.Example.COM:443/Case", "https://hooks.example.com/Case"),  # the path keeps its case
        ("https://example.com", "https://example.com/"),
        ("https://example.com./hook", "https://example.com./hook"),
        ("https://bücher.example/hook", "https://xn--bcher-kva.example/hook"),
        ("https://example.com/hook/ä", "https://example.com/hook/%C3%A4"),
        ("https://[2606:4700:4700:0::1111]:8443/x", "https://[2606:4700:4700::1111]:8443/x"),
        ("https://example.com/@team?a=@b", "https://example.com/@team?a=@b"),  # "@" after the host is fine
        ("https://1.2.3.4.example.com/", "https://1.2.3.4.example.com/"),  # a name, resolved and checked later
    ],
)
def test_a_public_url_is_accepted_and_normalised(url: str, expected: str) -> None:
    assert check_url(url, DEFAULT) == expected


@pytest.mark.parametrize(
    ("url", "policy"),
    [
        ("http://127.0.0.1:8080/hook", LOOPBACK),
        ("http://127.1.2.3/", LOOPBACK),
        ("http://[::1]:8080/", LOOPBACK),
        ("http://localhost:8080/", LOOPBACK),
        ("http://hooks.localhost/", LOOPBACK),
        ("http://10.0.0.1/", PRIVATE),
        ("http://172.16.0.1/", PRIVATE),
        ("http://192.168.1.1/", PRIVATE),
        ("http://100.64.0.1/", PRIVATE),
        ("http://[fc00::1]/", PRIVATE),
        ("http://[fd12:3456::1]/", PRIVATE),
    ],
)
def test_the_policy_admits_loopback_or_private_addresses(url: str, policy: EgressPolicy) -> None:
    with pytest.raises(UnsafeUrl):
        check_url(url, DEFAULT)

    assert check_url(url, policy) == url


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://169.254.1.1/",
        "http://[fe80::1]/",
        "http://[fd00:ec2::254]/",  # in fc00::/7, yet never private enough
        "http://[fd20:ce::254]/",
        "http://100.100.100.200/",  # in 100.64.0.0/10, likewise
        "http://192.0.0.192/",
        "http://0.0.0.0/",
        "http://[::]/",
        "http://[::ffff:127.0.0.1]/",  # loopback, but through an IPv6 form
        "http://[::ffff:10.0.0.1]/",
        "http://[2002:a00:1::]/",
        "http://224.0.0.1/",
        "http://255.255.255.255/",
        "http://127.1/",
        "http://metadata.google.internal/",
        "http://hooks.internal/",
        "http://printer.local/",
        "http://metadata/",
    ],
)
def test_some_addresses_and_names_are_refused_whatever_the_policy(url: str) -> None:
    for policy in (DEFAULT, LOOPBACK, PRIVATE, ANYTHING):
        with pytest.raises(UnsafeUrl):
            check_url(url, policy)


def test_each_allowance_admits_its_own_ranges_only() -> None:
    with pytest.raises(UnsafeUrl, match="private"):
        check_url("http://10.0.0.1/", LOOPBACK)
    with pytest.raises(UnsafeUrl, match="loopback"):
        check_url("http://127.0.0.1/", PRIVATE)
    with pytest.raises(UnsafeUrl, match="this machine"):
        check_url("http://localhost/", PRIVATE)


def test_reasons_name_the_address_inside_an_ipv6_form() -> None:
    with pytest.raises(UnsafeUrl, match=r"IPv4-mapped .* of 127\.0\.0\.1 \(loopback\)"):
        check_url("http://[::ffff:127.0.0.1]/", ANYTHING)
    with pytest.raises(UnsafeUrl, match=r"6to4 .* of 169\.254\.169\.254 \(a cloud metadata address\)"):
        check_url("http://[2002:a9fe:a9fe::]/", ANYTHING)
    with pytest.raises(UnsafeUrl, match=r"NAT64 .* of 8\.8\.8\.8 \(a public address\)"):
        check_url("http://[64:ff9b::8.8.8.8]/", ANYTHING)


@pytest.mark.parametrize(
    ("address", "policy", "allowed"),
    [
        (PUBLIC_IP, DEFAULT, True),
        ("2606:4700:4700::1111", DEFAULT, True),
        ("127.0.0.1", DEFAULT, False),
        ("127.0.0.1", LOOPBACK, True),
        ("::1", LOOPBACK, True),
        ("10.1.2.3", LOOPBACK, False),
        ("10.1.2.3", PRIVATE, True),
        ("fd12::1", PRIVATE, True),
        ("fd00:ec2::254", ANYTHING, False),
        ("169.254.169.254", ANYTHING, False),
        ("fe80::1", ANYTHING, False),
        ("::ffff:127.0.0.1", ANYTHING, False),
        ("::ffff:93.184.215.14", ANYTHING, False),  # refused as a form, even for a public address
        ("0.0.0.0", ANYTHING, False),
        ("::", ANYTHING, False),
        ("ff02::1", ANYTHING, False),
        ("255.255.255.255", ANYTHING, False),
    ],
)
def test_address_allowed(address: str, policy: EgressPolicy, allowed: bool) -> None:
    assert address_allowed(ipaddress.ip_address(address), policy) is allowed


# --- resolution ------------------------------------------------------------------------------------


class FakeResolver(AbstractResolver):
    """Answers with the next list of addresses each time it is asked (the last one for ever)."""

    def __init__(self, *answers: list[str]) -> None:
        self.answers = list(answers)
        self.asked: list[str] = []
        self.closed = False

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append(host)
        addresses = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        return [
            ResolveResult(
                hostname=host,
                host=a,
                port=port,
                family=socket.AF_INET6 if ":" in a else socket.AF_INET,
                proto=0,
                flags=0,
            )
            for a in addresses
        ]

    async def close(self) -> None:
        self.closed = True


async def test_a_name_resolving_to_public_addresses_only_is_allowed() -> None:
    fake = FakeResolver([PUBLIC_IP, "2606:2800:21f:cb07:6820:80da:af6b:8b2c"])

    resolved = await resolve_checked("hook.example", 443, DEFAULT, resolver=fake)

    assert [r["host"] for r in resolved] == [PUBLIC_IP, "2606:2800:21f:cb07:6820:80da:af6b:8b2c"]
    assert fake.asked == ["hook.example"]


@pytest.mark.parametrize("bad", ["10.0.0.1", "127.0.0.1", "169.254.169.254", "::1", "::ffff:127.0.0.1", "fe80::1"])
async def test_one_refused_address_in_the_answer_refuses_the_name(bad: str) -> None:
    fake = FakeResolver([PUBLIC_IP, bad, "8.8.8.8"])

    with pytest.raises(UnsafeUrl, match=r"hook\.example resolves to a refused address"):
        await resolve_checked("hook.example", 443, DEFAULT, resolver=fake)


async def test_an_empty_answer_is_refused() -> None:
    with pytest.raises(UnsafeUrl, match="no address"):
        await resolve_checked("hook.example", 443, DEFAULT, resolver=FakeResolver([]))


async def test_an_answer_that_is_not_an_address_is_refused() -> None:
    with pytest.raises(UnsafeUrl, match="not an IP address"):
        await resolve_checked("hook.example", 443, DEFAULT, resolver=FakeResolver(["localhost"]))


@pytest.mark.parametrize("host", ["0x7f.1", "2130706433", "127.1", "localhost", "metadata.google.internal", "a b.com"])
async def test_hosts_refused_by_their_spelling_are_never_resolved(host: str) -> None:
    fake = FakeResolver([PUBLIC_IP])

    with pytest.raises(UnsafeUrl):
        await resolve_checked(host, 80, DEFAULT, resolver=fake)
    assert fake.asked == []


async def test_ip_literals_are_checked_without_a_resolver() -> None:
    fake = FakeResolver([PUBLIC_IP])

    resolved = await resolve_checked("2606:4700:4700::1111", 443, DEFAULT, resolver=fake)
    with pytest.raises(UnsafeUrl, match="loopback"):
        await resolve_checked("127.0.0.1", 443, DEFAULT, resolver=fake)

    assert [(r["host"], r["port"], r["family"]) for r in resolved] == [("2606:4700:4700::1111", 443, socket.AF_INET6)]
    assert fake.asked == []


async def test_the_guarded_resolver_raises_an_os_error_aiohttp_can_carry() -> None:
    fake = FakeResolver([PUBLIC_IP], ["127.0.0.1"])
    guarded = GuardedResolver(DEFAULT, fake)

    first = await guarded.resolve("hook.example", 443)
    with pytest.raises(RefusedAddress) as refused:
        await guarded.resolve("hook.example", 443)
    await guarded.close()

    assert [r["host"] for r in first] == [PUBLIC_IP]
    assert isinstance(refused.value, OSError)
    assert "127.0.0.1 is loopback" in refused.value.reason
    assert fake.closed


# --- delivery, against a real receiver on 127.0.0.1 ------------------------------------------------


class Receiver:
    """An aiohttp server on 127.0.0.1 that records what reaches it."""

    def __init__(self) -> None:
        self.hits: list[tuple[str, bytes]] = []
        self.port = 0
        self.retry_at = datetime.now(UTC) + timedelta(seconds=120)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.hits.append((request.path, await request.read()))
        match request.path:
            case "/redirect":
                raise web.HTTPFound(f"http://127.0.0.1:{self.port}/target")
            case "/busy":
                return web.Response(status=503, headers={"Retry-After": "7"})
            case "/later":
                return web.Response(status=429, headers={"Retry-After": format_datetime(self.retry_at, usegmt=True)})
            case "/big":
                return web.Response(body=b"x" * (3 * MAX_BODY_BYTES))
            case "/close":
                response = web.Response(status=202, text="thanks")
                response.force_close()
                return response
            case _:
                return web.Response(status=202, text="thanks")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = Receiver()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server.port = runner.addresses[0][1]
    try:
        yield server
    finally:
        await runner.cleanup()


async def test_a_loopback_receiver_is_refused_by_default_and_never_reached(receiver: Receiver) -> None:
    async with guarded_session(DEFAULT) as session:
        with pytest.raises(UnsafeUrl, match="loopback"):
            await deliver_post(session, f"{receiver.url}/", data=b"{}")

    assert receiver.hits == []


async def test_a_loopback_receiver_is_reached_when_the_policy_allows_loopback(receiver: Receiver) -> None:
    async with guarded_session(LOOPBACK) as session:
        response = await deliver_post(
            session,
            f"{receiver.url}/hook",
            data=b'{"type":"message.sent"}',
            headers={"Content-Type": "application/json"},
        )

    assert response.status == 202
    assert response.body == b"thanks"
    assert response.retry_after is None
    assert receiver.hits == [("/hook", b'{"type":"message.sent"}')]


@pytest.mark.parametrize("host", ["127.0.0.1", "[::ffff:127.0.0.1]", "[::1]"])
async def test_ip_literals_are_checked_at_connect_time_too(receiver: Receiver, host: str) -> None:
    # aiohttp does not ask the resolver about IP literals: the session's connector checks them.
    # This goes around deliver_post (and check_url) on purpose, and fails if aiohttp stops
    # routing hosts through TCPConnector._resolve_host.
    async with guarded_session(DEFAULT) as session:
        with pytest.raises(aiohttp.ClientConnectorError) as refused:
            await session.post(f"http://{host}:{receiver.port}/", data=b"{}")

    refusal = refusal_of(refused.value)
    assert refusal is not None
    assert "loopback" in refusal.reason
    assert receiver.hits == []


async def test_other_connection_errors_are_not_refusals() -> None:
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    async with guarded_session(LOOPBACK) as session:
        with pytest.raises(aiohttp.ClientConnectorError) as failed:
            await deliver_post(session, f"http://127.0.0.1:{port}/", data=b"{}")

    assert refusal_of(failed.value) is None
    assert not isinstance(failed.value, RefusedAddress)


async def test_a_redirect_is_returned_and_its_target_receives_nothing(receiver: Receiver) -> None:
    async with guarded_session(LOOPBACK) as session:
        response = await deliver_post(session, f"{receiver.url}/redirect", data=b"{}")

    assert response.status == 302
    assert [path for path, _ in receiver.hits] == ["/redirect"]


async def test_a_name_that_rebinds_to_loopback_is_refused_at_delivery(receiver: Receiver) -> None:
    # Public when checked at registration, 127.0.0.1 when the delivery connects.
    rebinding = FakeResolver([PUBLIC_IP], ["127.0.0.1"])
    url = check_url(f"http://hook.example:{receiver.port}/", DEFAULT)
    assert await resolve_checked("hook.example", receiver.port, DEFAULT, resolver=rebinding)

    async with guarded_session(DEFAULT, resolver=rebinding) as session:
        with pytest.raises(RefusedAddress, match=r"127\.0\.0\.1 is loopback"):
            await deliver_post(session, url, data=b"{}")

    assert rebinding.asked == ["hook.example", "hook.example"]
    assert receiver.hits == []


async def test_a_name_is_resolved_again_at_every_connection(receiver: Receiver) -> None:
    # One session, one name: the receiver closes the first connection, and the second connection
    # asks the resolver again (no DNS cache) and gets a private address.
    resolver = FakeResolver(["127.0.0.1"], ["10.0.0.1"])
    async with guarded_session(LOOPBACK, resolver=resolver) as session:
        first = await deliver_post(session, f"http://hook.example:{receiver.port}/close", data=b"1")
        with pytest.raises(RefusedAddress, match=r"10\.0\.0\.1 is private"):
            await deliver_post(session, f"http://hook.example:{receiver.port}/again", data=b"2")

    assert first.status == 202
    assert receiver.hits == [("/close", b"1")]
    assert resolver.asked == ["hook.example", "hook.example"]


async def test_retry_after_in_seconds_and_as_an_http_date(receiver: Receiver) -> None:
    async with guarded_session(LOOPBACK) as session:
        busy = await deliver_post(session, f"{receiver.url}/busy", data=b"{}")
        later = await deliver_post(session, f"{receiver.url}/later", data=b"{}")

    assert (busy.status, busy.retry_after) == (503, 7.0)
    assert later.status == 429
    assert later.retry_after is not None
    assert 100 < later.retry_after <= 120


async def test_only_the_start_of_a_large_answer_is_read(receiver: Receiver) -> None:
    async with guarded_session(LOOPBACK) as session:
        response = await deliver_post(session, f"{receiver.url}/big", data=b"{}")

    assert response.status == 200
    assert response.body == b"x" * MAX_BODY_BYTES


async def test_deliver_post_needs_a_guarded_session(receiver: Receiver) -> None:
    async with aiohttp.ClientSession() as plain:
        with pytest.raises(TypeError, match="guarded_session"):
            await deliver_post(plain, f"{receiver.url}/", data=b"{}")

    assert receiver.hits == []


@pytest.mark.parametrize(
    "kwargs",
    [{"proxy": "http://10.0.0.1:3128"}, {"trust_env": True}, {"connector": None}, {"connector_owner": False}],
)
async def test_a_guarded_session_takes_no_proxy_and_no_other_connector(kwargs: dict[str, Any]) -> None:
    with pytest.raises(TypeError, match="does not take"):
        guarded_session(DEFAULT, **kwargs)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("7", 7.0),
        (" 120 ", 120.0),
        ("0", 0.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 60.0),
        ("Wed, 21 Oct 2015 07:26:00 GMT", 0.0),  # in the past
        ("Wednesday, 21-Oct-15 07:28:00 GMT", 60.0),  # the obsolete RFC 850 form
        ("Wed Oct 21 07:28:00 2015", 60.0),  # asctime, no zone: GMT
        ("-5", None),
        ("1.5", None),
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    now = datetime(2015, 10, 21, 7, 27, tzinfo=UTC)

    assert parse_retry_after(value, now=now) == expected
