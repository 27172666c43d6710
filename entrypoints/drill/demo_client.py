"""What `chat4all drill demo` talks to, as any client would: the HTTP API, its WebSocket, the sandbox's control API.

Every failure is a ``DemoFailure`` naming the check it breaks, so that the demo can say which one failed
instead of printing a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import attrs
import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

T = TypeVar("T")

PASSWORD = "demo-password-not-secret"  # noqa: S105
"""The demo's users are throwaway accounts; their password needs no secrecy."""


class DemoFailure(Exception):
    """A check of the demo did not hold: ``check`` names it, ``detail`` says what happened instead."""

    def __init__(self, check: str, detail: str) -> None:
        super().__init__(f"{check}: {detail}")
        self.check = check
        self.detail = detail


def unique(prefix: str) -> str:
    """A username nobody has yet: the demo runs again and again against one stack."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f} ms"


@attrs.frozen
class User:
    username: str
    user_id: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


class Api:
    """The Chat4All HTTP API: JSON calls that must answer what the contract says, else a ``DemoFailure``."""

    RETRIES_ON_429 = 5

    def __init__(self, base_url: str, wait_s: float) -> None:
        self.base_url = base_url.rstrip("/")
        # trust_env=False: the stack is on this machine; a proxy from the environment must not stand in between.
        self.http = httpx.AsyncClient(base_url=self.base_url, timeout=wait_s, trust_env=False)

    async def close(self) -> None:
        await self.http.aclose()

    async def call(
        self, method: str, path: str, *, user: User | None = None, expect: tuple[int, ...] = (200,), **kwargs: Any
    ) -> Any:
        """One call; a 429 waits its ``Retry-After`` (a demo run right after another may meet the limits)."""
        headers = {**(user.headers if user else {}), **kwargs.pop("headers", {})}
        for _ in range(self.RETRIES_ON_429):
            try:
                r = await self.http.request(method, path, headers=headers, **kwargs)
            except httpx.HTTPError as e:
                raise DemoFailure(f"{method} {path}", f"{type(e).__name__}: {e}") from e
            if r.status_code != 429:
                break
            await asyncio.sleep(min(float(r.headers.get("Retry-After", "1")), 10.0))
        if r.status_code not in expect:
            raise DemoFailure(f"{method} {path}", f"answered {r.status_code}: {_detail(r)}")
        return r.json() if r.content else None

    async def register(self, prefix: str) -> User:
        """Sign up a fresh user and log in."""
        name = unique(prefix)
        created = await self.call("POST", "/v1/users", json={"username": name, "password": PASSWORD}, expect=(201,))
        token = await self.call("POST", "/auth/token", json={"username": name, "password": PASSWORD})
        return User(name, str(created["user_id"]), str(token["access_token"]))

    async def send_text(self, user: User, conversation_id: str, text: str) -> dict[str, Any]:
        body = {"conversation_id": conversation_id, "payload": {"type": "text", "text": text}}
        answer: dict[str, Any] = await self.call("POST", "/v1/messages", user=user, json=body, expect=(202,))
        return answer

    def ws_url(self, user: User) -> str:
        return f"{self.base_url.replace('http', 'ws', 1)}/v1/ws?token={user.token}"


def _detail(r: httpx.Response) -> str:
    try:
        body = r.json()
    except ValueError:
        return r.text[:200]
    return str(body.get("detail") or body)[:200] if isinstance(body, dict) else str(body)[:200]


@attrs.frozen
class Frame:
    at: float
    """``time.monotonic()`` when the frame arrived."""
    body: dict[str, Any]


class Socket:
    """One WebSocket of a user. A reader task keeps every frame with the moment it arrived, so waiting for a
    frame never misses one that came before the wait began, and latencies are measured at arrival."""

    def __init__(self, owner: str, ws: ClientConnection) -> None:
        self.owner = owner
        self._ws = ws
        self._frames: list[Frame] = []
        self._taken: set[int] = set()
        self._arrived = asyncio.Event()
        self._closed: str | None = None
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, api: Api, user: User, owner: str, wait_s: float) -> tuple[Socket, dict[str, Any]]:
        """Connect and wait for the ``connected`` frame, which is answered once the socket is subscribed."""
        try:
            ws = await asyncio.wait_for(connect(api.ws_url(user), open_timeout=wait_s), wait_s)
        except (OSError, TimeoutError, ConnectionClosed) as e:
            raise DemoFailure(f"{owner}'s WebSocket opens", f"{type(e).__name__}: {e}") from e
        socket = cls(owner, ws)
        hello = await socket.wait(f"{owner}'s socket is connected", lambda f: f["type"] == "connected", wait_s)
        return socket, hello.body

    async def _read(self) -> None:
        try:
            async for raw in self._ws:
                self._frames.append(Frame(time.monotonic(), json.loads(raw)))
                self._arrived.set()
        except ConnectionClosed as e:
            self._closed = f"the socket closed ({e.rcvd.code if e.rcvd else 'no close frame'})"
        else:
            self._closed = "the socket closed"
        self._arrived.set()

    async def send(self, frame: dict[str, Any]) -> float:
        """Send a frame; the moment it went."""
        at = time.monotonic()
        await self._ws.send(json.dumps(frame))
        return at

    async def wait(self, check: str, match: Callable[[dict[str, Any]], bool], wait_s: float) -> Frame:
        """The first frame not taken yet that ``match``es (frames that arrived earlier included)."""
        deadline = time.monotonic() + wait_s
        while True:
            for n, frame in enumerate(self._frames):
                if n not in self._taken and match(frame.body):
                    self._taken.add(n)
                    return frame
            if self._closed is not None:
                raise DemoFailure(check, self._closed)
            left = deadline - time.monotonic()
            if left <= 0:
                seen = sorted({f.body.get("type", "?") for f in self._frames})
                raise DemoFailure(check, f"no such frame within {wait_s:.0f} s (the socket got: {', '.join(seen)})")
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), left)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


async def poll(check: str, probe: Callable[[], Awaitable[T | None]], wait_s: float, interval: float = 0.05) -> T:
    """``probe()`` again and again until it returns something; ``DemoFailure`` naming ``check`` after ``wait_s``."""
    deadline = time.monotonic() + wait_s
    while True:
        found = await probe()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise DemoFailure(check, f"not within {wait_s:.0f} s")
        await asyncio.sleep(interval)


class Sandbox:
    """The channel sandbox's control API: the people on WhatsApp and Instagram, and how they react."""

    def __init__(self, base_url: str, wait_s: float) -> None:
        self.http = httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=wait_s, trust_env=False)

    async def close(self) -> None:
        await self.http.aclose()

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            r = await self.http.request(method, path, **kwargs)
        except httpx.HTTPError as e:
            raise DemoFailure(f"sandbox {method} {path}", f"{type(e).__name__}: {e}") from e
        if r.status_code != 200:
            raise DemoFailure(f"sandbox {method} {path}", f"answered {r.status_code}: {_detail(r)}")
        return r.json()

    async def settings(self, **changes: Any) -> dict[str, Any]:
        """The settings after applying ``changes`` (none: just read them)."""
        if changes:
            return dict(await self._json("POST", "/sandbox/settings", json=changes))
        return dict(await self._json("GET", "/sandbox/settings"))

    async def write(self, channel: str, sender: str, text: str, **extra: Any) -> dict[str, Any]:
        """A person writes to the business; the sandbox's answer has Chat4All's answer to the webhook."""
        body = {"channel": channel, "from": sender, "text": text, **extra}
        return dict(await self._json("POST", "/sandbox/inbound", json=body))

    async def received(self, channel: str, to: str) -> list[dict[str, Any]]:
        """What the platform accepted from Chat4All for ``to``, oldest first."""
        answer = await self._json("GET", "/sandbox/messages", params={"channel": channel, "to": to})
        return list(answer["items"])

    async def webhooks(self, channel: str) -> list[dict[str, Any]]:
        """Every webhook call the sandbox made to Chat4All for ``channel``, with Chat4All's answer."""
        return list((await self._json("GET", "/sandbox/webhooks", params={"channel": channel}))["items"])
