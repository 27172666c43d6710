"""The egress guard for outbound webhooks: user-registered URLs must not reach our own infrastructure.

Chat4All POSTs event notifications to URLs its users give it. Without a guard, a user could register
``http://169.254.169.254/latest/meta-data/`` or ``http://10.0.0.5:9092/`` and have our servers send
requests (and report answers) to the cloud metadata service or to internal systems (OWASP API7, the
SSRF cheat sheet; Standard Webhooks asks senders for the same). The guard works at two moments.

At registration, ``check_url`` checks the URL itself: the scheme, no user info, no fragment, a valid
host name that is not an internal one, an IP literal that is allowed. It parses the URL once (with
yarl, which aiohttp uses too) and returns a URL rebuilt from the parsed parts, so the URL that was
checked is the URL that is stored and used.

At delivery, the session from ``guarded_session`` checks each address it is about to connect to.
Names are resolved again by ``GuardedResolver`` at every connection (no DNS cache), so a name that
resolved to a public address at registration and resolves to ``127.0.0.1`` now (DNS rebinding) is
refused now. Every resolved address must be allowed: one private address among public ones refuses
the whole answer, because the connection may pick any of them. aiohttp does not ask the resolver
about IP literals (``TCPConnector._resolve_host`` returns them as they are), so the session's
connector checks literals itself.

Numeric host spellings: ``ipaddress`` parses only canonical forms, but URL libraries and the system
resolver also accept ``2130706433``, ``0x7f.1``, ``017700000001`` and ``127.1``, which all mean
``127.0.0.1``. A host whose last label is a number is therefore refused unless it is a canonical
dotted quad (the WHATWG URL standard reads such hosts as IPv4 addresses too).

Redirects are never followed: ``deliver_post`` returns a 3xx as it is. Following one would send the
request to a URL that no one registered (and that ``check_url`` never saw).

Some ranges are refused whatever the policy: link-local and the cloud metadata addresses, the
unspecified, multicast, broadcast, reserved, documentation and benchmarking ranges, and the IPv6
forms that carry an IPv4 address (IPv4-mapped and -compatible, 6to4, Teredo, NAT64), which could
reach any IPv4 address past a check that only looks at IPv6 ranges. ``EgressPolicy`` admits
loopback and private ranges for development and on-premises installs only.
"""

from __future__ import annotations

import errno
import ipaddress
import re
import socket
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Final, TypeAlias
from urllib.parse import urlsplit

import aiohttp
import attrs
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver
from aiohttp.tracing import Trace
from yarl import URL

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_URL_LENGTH: Final = 2048
MAX_BODY_BYTES: Final = 64 * 1024
"""How much of a receiver's answer ``deliver_post`` reads: enough for an error message, no more."""

_SCHEMES: Final = frozenset({"https", "http"})


class UnsafeUrl(ValueError):
    """A URL the egress policy refuses; ``reason`` says why, in words fit for the API's 422."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RefusedAddress(OSError):
    """A connection the egress policy refused at connect time (``reason`` says why).

    An ``OSError``, as aiohttp expects of resolvers: it wraps it in ``aiohttp.ClientConnectorDNSError``
    (its ``os_error``). ``refusal_of`` finds it there; ``deliver_post`` raises it unwrapped.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(errno.EACCES, reason)
        self.reason = reason

    def __str__(self) -> str:
        return self.reason


@attrs.frozen(kw_only=True)
class EgressPolicy:
    """Which otherwise refused ranges outbound requests may reach.

    ``allow_loopback`` admits 127.0.0.0/8, ::1 and the ``localhost`` names; ``allow_private`` admits
    the private ranges (RFC 1918, the shared CGNAT range 100.64.0.0/10, IPv6 unique local fc00::/7).
    Neither admits link-local addresses, cloud metadata addresses or the other ranges the module's
    docstring lists. The default admits public addresses only.
    """

    allow_loopback: bool = False
    allow_private: bool = False


# --- addresses -------------------------------------------------------------------------------------

_Network: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network


def _table(*rows: tuple[str, str]) -> tuple[tuple[_Network, str], ...]:
    return tuple((ipaddress.ip_network(cidr), reason) for cidr, reason in rows)


_METADATA: Final = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, DigitalOcean, OpenStack...
        "169.254.170.2",  # AWS ECS task metadata
        "169.254.170.23",  # AWS EKS Pod Identity
        "fd00:ec2::254",  # AWS, IPv6
        "fd00:ec2::23",  # AWS EKS Pod Identity, IPv6
        "fd20:ce::254",  # GCP, IPv6
        "100.100.100.200",  # Alibaba Cloud
        "192.0.0.192",  # Oracle Cloud
        "168.63.129.16",  # Azure WireServer (a public address, not a private one)
    )
)
_LOOPBACK: Final = _table(("127.0.0.0/8", "loopback"), ("::1/128", "loopback"))
_PRIVATE: Final = _table(
    ("10.0.0.0/8", "private (RFC 1918)"),
    ("172.16.0.0/12", "private (RFC 1918)"),
    ("192.168.0.0/16", "private (RFC 1918)"),
    ("100.64.0.0/10", "shared address space (carrier-grade NAT)"),
    ("fc00::/7", "unique local (private IPv6)"),
)
_ALWAYS_REFUSED: Final = _table(
    ("0.0.0.0/8", "unspecified ('this network')"),
    ("169.254.0.0/16", "link-local (where cloud metadata services listen)"),
    ("192.0.0.0/24", "reserved for IETF protocol assignments"),
    ("192.0.2.0/24", "reserved for documentation"),
    ("198.51.100.0/24", "reserved for documentation"),
    ("203.0.113.0/24", "reserved for documentation"),
    ("198.18.0.0/15", "reserved for benchmarking"),
    ("192.88.99.0/24", "the deprecated 6to4 relay range"),
    ("224.0.0.0/4", "multicast"),
    ("255.255.255.255/32", "broadcast"),
    ("240.0.0.0/4", "reserved"),
    ("::/128", "unspecified"),
    ("100::/64", "discard-only"),
    ("2001:db8::/32", "reserved for documentation"),
    ("3fff::/20", "reserved for documentation"),
    ("2001::/23", "reserved for IETF protocol assignments"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local (deprecated)"),
    ("ff00::/8", "multicast"),
)
_GLOBAL_UNICAST: Final = ipaddress.IPv6Network("2000::/3")
_NAT64: Final = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL: Final = ipaddress.IPv6Network("64:ff9b:1::/48")
_TRANSLATED: Final = ipaddress.IPv6Network("::ffff:0:0:0/96")
_COMPATIBLE: Final = ipaddress.IPv6Network("::/96")


def _lookup(ip: IPAddress, table: Sequence[tuple[_Network, str]]) -> str | None:
    return next((reason for network, reason in table if ip.version == network.version and ip in network), None)


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address | None] | None:
    """The IPv6 forms that carry an IPv4 address: what they are called, and the address when it is known."""
    low32 = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.ipv4_mapped is not None:
        return "an IPv4-mapped IPv6 address", ip.ipv4_mapped
    if ip in _TRANSLATED:
        return "an IPv4-translated IPv6 address", low32
    if ip in _NAT64:
        return "a NAT64 address", low32
    if ip in _NAT64_LOCAL:
        return "a local-use NAT64 address", None
    if ip.sixtofour is not None:
        return "a 6to4 address", ip.sixtofour
    if ip.teredo is not None:
        return "a Teredo address", ip.teredo[1]
    if ip in _COMPATIBLE and int(ip) > 1:  # not :: and ::1, which are addresses of their own
        return "an IPv4-compatible IPv6 address", low32
    return None


def _refusal(ip: IPAddress, policy: EgressPolicy) -> str | None:
    """Why ``policy`` refuses ``ip``, or None when it is allowed."""
    if ip in _METADATA:
        return f"{ip} is a cloud metadata address"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            return f"{ip} has a zone index (it names a local network interface)"
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            form, ipv4 = embedded
            if ipv4 is None:
                return f"{ip} is {form}"
            inner = _refusal(ipv4, EgressPolicy()) or "a public address"
            return f"{ip} is {form} of {ipv4} ({inner.removeprefix(f'{ipv4} is ')})"
    if (reason := _lookup(ip, _ALWAYS_REFUSED)) is not None:
        return f"{ip} is {reason}"
    if (reason := _lookup(ip, _LOOPBACK)) is not None:
        return None if policy.allow_loopback else f"{ip} is {reason}"
    if (reason := _lookup(ip, _PRIVATE)) is not None:
        return None if policy.allow_private else f"{ip} is {reason}"
    if isinstance(ip, ipaddress.IPv6Address) and ip not in _GLOBAL_UNICAST:
        return f"{ip} is not a global unicast address"
    if not ip.is_global:  # a safety net, for a range Python knows of and the tables above miss
        return f"{ip} is not a public address"
    return None


def address_allowed(ip: IPAddress, policy: EgressPolicy) -> bool:
    """Whether outbound requests may connect to ``ip`` under ``policy``."""
    return _refusal(ip, policy) is None


# --- hosts -----------------------------------------------------------------------------------------

_LABEL: Final = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_HEX: Final = re.compile(r"0x[0-9a-f]*")
_INTERNAL_SUFFIXES: Final = (
    "local",  # multicast DNS
    "internal",  # private use (ICANN); metadata.google.internal, *.ec2.internal
    "localdomain",
    "home.arpa",
    "lan",
    "home",
    "corp",
    "intranet",
    "private",
)


def _looks_numeric(host: str) -> bool:
    """Whether a URL parser or the system resolver would read ``host`` as an IPv4 address.

    The WHATWG URL rule: the last label (one trailing dot aside) is decimal digits or ``0x`` and hex.
    ``inet_aton`` reads such hosts in decimal, octal or hex, with 1 to 4 parts.
    """
    labels = host.lower().split(".")
    if len(labels) > 1 and not labels[-1]:
        labels.pop()
    last = labels[-1]
    return (last.isascii() and last.isdigit()) or _HEX.fullmatch(last) is not None


def _name_refusal(host: str, policy: EgressPolicy) -> str | None:
    """Why a host name (not an IP literal) is refused, or None."""
    name = host.lower().removesuffix(".")
    if not name:
        return "the URL has no host"
    if not name.isascii() or len(name) > 253:
        return f"{host!r} is not a valid host name"
    labels = name.split(".")
    for label in labels:
        if _LABEL.fullmatch(label) is None:
            return f"{host!r} is not a valid host name (letters, digits and inner hyphens only)"
        if label.startswith("xn--"):
            try:
                label.encode("ascii").decode("idna")
            except UnicodeError:
                return f"{host!r} is not a valid host name (a bad IDNA label)"
    if name == "localhost" or name.endswith(".localhost"):
        return None if policy.allow_loopback else f"{host} names this machine"
    if len(labels) == 1:
        return f"{host} is not a fully qualified name (the resolver's search domains would complete it)"
    for suffix in _INTERNAL_SUFFIXES:
        if name == suffix or name.endswith(f".{suffix}"):
            return f"{host} is an internal name (.{suffix})"
    return None


def _host_refusal(host: str, policy: EgressPolicy) -> str | None:
    """Why ``host`` (yarl's ``raw_host``: IDNA-encoded, no brackets) is refused, or None."""
    if "%" in host:
        return f"{host!r} has escaped characters or a zone index"
    if ":" in host:
        try:
            return _refusal(ipaddress.IPv6Address(host), policy)
        except ValueError:
            return f"{host!r} is not a valid IPv6 address"
    if _looks_numeric(host):
        try:
            ip = ipaddress.IPv4Address(host)
        except ValueError:
            ip = None
        if ip is None or str(ip) != host:
            return f"{host!r} is a numeric host but not a dotted-quad IPv4 address"
        return _refusal(ip, policy)
    return _name_refusal(host, policy)


def _is_literal(host: str) -> bool:
    """Whether ``host`` is to be read as an IP address, here or by aiohttp (``helpers.is_ip_address``)."""
    return ":" in host or host.replace(".", "").isdigit() or _looks_numeric(host)


# --- URLs ------------------------------------------------------------------------------------------


def _parse(url: str) -> tuple[URL, str]:
    """``url`` parsed, after the checks on the string itself, and its authority as typed (see below)."""
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeUrl(f"the URL is longer than {MAX_URL_LENGTH} characters")
    if any(c.isspace() or not c.isprintable() for c in url):
        raise UnsafeUrl("the URL has whitespace or control characters")
    if "\\" in url:  # browsers read it as "/", other parsers as part of the user info or host
        raise UnsafeUrl("the URL has a backslash")
    if "#" in url:
        raise UnsafeUrl("the URL has a fragment")
    try:
        parsed = URL(url)
        _ = parsed.raw_host, parsed.explicit_port  # yarl splits the authority on first use
        # yarl drops an empty user info ("https://@host/") and the brackets of "[v1.x]" (an IPvFuture
        # literal, which it reads as the name v1.x): check_url looks at the URL as typed for those.
        typed_authority = urlsplit(url).netloc
    except ValueError as e:  # UnicodeError (bad IDNA) is one
        raise UnsafeUrl(f"not a valid URL: {e}") from e
    return parsed, typed_authority


def _rebuilt(parsed: URL, host: str) -> str:
    """The URL from its checked parts: scheme, host, port unless the default, path, query."""
    netloc = f"[{host}]" if ":" in host else host
    if parsed.explicit_port is not None and not parsed.is_default_port():
        netloc = f"{netloc}:{parsed.explicit_port}"
    query = f"?{parsed.raw_query_string}" if parsed.raw_query_string else ""
    normalised = f"{parsed.scheme}://{netloc}{parsed.raw_path or '/'}{query}"
    if len(normalised) > MAX_URL_LENGTH:  # IDNA and percent-encoding make URLs longer
        raise UnsafeUrl(f"the URL is longer than {MAX_URL_LENGTH} characters once encoded")
    again = URL(normalised, encoded=True)
    if (again.scheme, again.raw_host, again.port) != (parsed.scheme, host, parsed.port):  # pragma: no cover
        raise UnsafeUrl("the URL does not survive normalisation")
    return normalised


def check_url(url: str, policy: EgressPolicy) -> str:
    """The webhook URL normalised, or ``UnsafeUrl`` when ``policy`` refuses it.

    No name is resolved here: a name is checked against the policy at every delivery (see the
    module's docstring). The URL returned is rebuilt from the parts that were checked: scheme,
    host (lower case, IDNA-encoded, IPv6 compressed), port unless it is the scheme's default, path and
    query. Store and use that one, not the string that came in.
    """
    parsed, typed_authority = _parse(url)
    host, port = parsed.raw_host, parsed.explicit_port
    if parsed.scheme not in _SCHEMES:
        raise UnsafeUrl("the URL's scheme must be https or http")
    if parsed.raw_user is not None or parsed.raw_password is not None or "@" in typed_authority:
        raise UnsafeUrl("the URL has user info (user:password@); put credentials in a header instead")
    if not host:
        raise UnsafeUrl("the URL has no host")
    if port is not None and not 1 <= port <= 65535:
        raise UnsafeUrl("the port must be between 1 and 65535")
    if typed_authority.startswith("[") and ":" not in host:
        raise UnsafeUrl(f"{typed_authority!r} is not an IPv6 address")
    if (reason := _host_refusal(host, policy)) is not None:
        raise UnsafeUrl(reason)
    return _rebuilt(parsed, host)


# --- resolution ------------------------------------------------------------------------------------


async def resolve_checked(
    host: str,
    port: int,
    policy: EgressPolicy,
    *,
    resolver: AbstractResolver | None = None,
    family: socket.AddressFamily = socket.AF_UNSPEC,
) -> list[ResolveResult]:
    """The addresses of ``host``, or ``UnsafeUrl`` unless every one of them is allowed.

    All or nothing: a name that resolves to a public and a private address is refused, since the
    connection could use either. An answer with no address is refused too. ``resolver`` is aiohttp's
    ``ThreadedResolver`` (the system's ``getaddrinfo``) unless given. An IP literal is checked as it
    is, without a resolver. Resolution failures (``socket.gaierror``) are left as they are.
    """
    if (reason := _host_refusal(host, policy)) is not None:
        raise UnsafeUrl(reason)
    if _is_literal(host):
        ip = ipaddress.ip_address(host)
        kind = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        flags = socket.AI_NUMERICHOST | socket.AI_NUMERICSERV
        return [ResolveResult(hostname=host, host=str(ip), port=port, family=kind, proto=0, flags=flags)]

    own = resolver is None
    active = ThreadedResolver() if resolver is None else resolver
    try:
        results = await active.resolve(host, port, family=family)
    finally:
        if own:
            await active.close()
    if not results:
        raise UnsafeUrl(f"{host} resolves to no address")
    for result in results:
        try:
            ip = ipaddress.ip_address(result["host"])
        except ValueError:
            raise UnsafeUrl(f"{host} resolves to {result['host']!r}, not an IP address") from None
        if (reason := _refusal(ip, policy)) is not None:
            raise UnsafeUrl(f"{host} resolves to a refused address: {reason}")
    return results


class GuardedResolver(AbstractResolver):
    """An aiohttp resolver that refuses names resolving to any address ``policy`` refuses.

    It asks ``resolver`` (aiohttp's ``ThreadedResolver`` by default) at every call and raises
    ``RefusedAddress`` unless all the addresses are allowed (``resolve_checked``). Use it with
    ``use_dns_cache=False``, or a cached answer from before a rebinding would be used without a check.
    aiohttp never calls a resolver for IP literals: ``guarded_session``'s connector checks those.
    """

    def __init__(self, policy: EgressPolicy, resolver: AbstractResolver | None = None) -> None:
        self._policy = policy
        self._resolver = resolver if resolver is not None else ThreadedResolver()

    @property
    def policy(self) -> EgressPolicy:
        return self._policy

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        try:
            return await resolve_checked(host, port, self._policy, resolver=self._resolver, family=family)
        except UnsafeUrl as e:
            raise RefusedAddress(e.reason) from e

    async def close(self) -> None:
        await self._resolver.close()


class _GuardedConnector(aiohttp.TCPConnector):
    """A ``TCPConnector`` that checks IP literals too.

    aiohttp's ``_resolve_host`` returns an IP literal host as it is, without asking the resolver
    (aiohttp 3.14 refuses non-canonical IPv4 spellings there, but not loopback or private
    addresses). Overriding it is the one place that sees every host before a connection is made.
    ``tests/unit/adapters/test_ssrf.py`` fails if aiohttp stops calling it.
    """

    def __init__(self, policy: EgressPolicy, resolver: AbstractResolver | None) -> None:
        super().__init__(resolver=GuardedResolver(policy, resolver), use_dns_cache=False)
        self.policy = policy

    async def _resolve_host(self, host: str, port: int, traces: Sequence[Trace] | None = None) -> list[ResolveResult]:
        if _is_literal(host) and (reason := _host_refusal(host, self.policy)) is not None:
            raise RefusedAddress(reason)
        return await super()._resolve_host(host, port, traces=traces)


_NOT_FOR_GUARDED_SESSIONS: Final = frozenset({"connector", "connector_owner", "trust_env", "proxy", "proxy_auth"})


def guarded_session(
    policy: EgressPolicy, *, timeout: float = 15.0, resolver: AbstractResolver | None = None, **kwargs: Any
) -> aiohttp.ClientSession:
    """An aiohttp session whose connections go only to addresses ``policy`` allows.

    Names are resolved at every connection through ``GuardedResolver`` (wrapping ``resolver``, the
    system resolver by default), IP literals are checked by the connector, and a refused connection
    raises ``aiohttp.ClientConnectorDNSError`` whose ``os_error`` is a ``RefusedAddress``. Requests
    time out after ``timeout`` seconds in all. Cookies are not kept.

    Proxies are not allowed (``proxy``, ``trust_env``): the connector would check the proxy's address,
    not the receiver's. Neither is another ``connector``. Send with ``deliver_post``, which never
    follows redirects; other ``kwargs`` go to ``aiohttp.ClientSession``. Call it in a running loop.
    """
    if refused := sorted(_NOT_FOR_GUARDED_SESSIONS & kwargs.keys()):
        raise TypeError(f"guarded_session does not take {', '.join(refused)}")
    kwargs.setdefault("cookie_jar", aiohttp.DummyCookieJar())
    return aiohttp.ClientSession(
        connector=_GuardedConnector(policy, resolver),
        timeout=aiohttp.ClientTimeout(total=timeout),
        **kwargs,
    )


def refusal_of(error: BaseException) -> RefusedAddress | None:
    """The egress policy's refusal behind an aiohttp connection error, or None for any other error."""
    if isinstance(error, RefusedAddress):
        return error
    if isinstance(error, aiohttp.ClientConnectorError) and isinstance(error.os_error, RefusedAddress):
        return error.os_error
    return None


# --- delivery --------------------------------------------------------------------------------------


@attrs.frozen
class Response:
    """A receiver's answer: its status, its ``Retry-After`` in seconds, the first 64 KiB of its body."""

    status: int
    retry_after: float | None
    body: bytes


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """``Retry-After`` in seconds from ``now``: delta-seconds or an HTTP-date; None when absent or invalid.

    A date in the past is 0 seconds.
    """
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000": UTC, by RFC 5322
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


async def deliver_post(
    session: aiohttp.ClientSession, url: str, *, data: bytes, headers: Mapping[str, str] | None = None
) -> Response:
    """POST ``data`` to ``url`` through a ``guarded_session`` and return the answer, redirects included.

    ``url`` is checked again with ``check_url`` under the session's policy (``UnsafeUrl``), and the
    addresses are checked at connect time (``RefusedAddress``, raised here unwrapped). A 3xx answer
    is returned as a status: the ``Location`` is never followed (see the module's docstring). Only the
    first ``MAX_BODY_BYTES`` of the body are read. Connection failures and timeouts raise as
    aiohttp raises them (``aiohttp.ClientError``, ``TimeoutError``).
    """
    connector = session.connector
    if not isinstance(connector, _GuardedConnector):
        raise TypeError("deliver_post needs a session from guarded_session")
    target = URL(check_url(url, connector.policy), encoded=True)
    try:
        async with session.post(target, data=data, headers=headers, allow_redirects=False) as response:
            body = bytearray()
            while len(body) < MAX_BODY_BYTES:
                chunk = await response.content.read(MAX_BODY_BYTES - len(body))
                if not chunk:
                    break
                body += chunk
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            return Response(status=response.status, retry_after=retry_after, body=bytes(body))
    except aiohttp.ClientConnectorError as e:
        if (refusal := refusal_of(e)) is not None:
            raise RefusedAddress(refusal.reason) from e
        raise
