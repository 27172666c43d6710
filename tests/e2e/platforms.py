"""For e2e tests of the connectors: a stand-in platform API on this machine (JSON in, JSON out, every call
recorded), and users with a linked identity."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Answer = Callable[[str, dict[str, str], dict[str, Any]], tuple[int, dict[str, Any]]]
"""(path, headers, JSON body) -> (HTTP status, JSON answer)."""


class FakePlatform(ThreadingHTTPServer):
    def __init__(self, answer: Answer) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.answer = answer
        self.calls: list[tuple[str, dict[str, str], dict[str, Any]]] = []
        self.raw: list[bytes] = []
        """Each call's body as it came, in the order of ``calls`` (what a signature covers)."""
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def bodies(self, path: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            return [body for p, _, body in self.calls if path is None or p == path]


class _Handler(BaseHTTPRequestHandler):
    server: FakePlatform

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers["Content-Length"]))
        body = json.loads(raw)
        headers = {k.lower(): v for k, v in self.headers.items()}
        with self.server.lock:
            self.server.calls.append((self.path, headers, body))
            self.server.raw.append(raw)
            status, answer = self.server.answer(self.path, headers, body)
        encoded = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(encoded)))
        self.end_headers()
        self.wfile.write(encoded)

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def running(answer: Answer) -> Iterator[FakePlatform]:
    server = FakePlatform(answer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def a_user(http: Any, prefix: str, **identity: str) -> dict[str, Any]:
    """A new user (``username``, auth ``headers``), with ``identity`` (channel, external_id) linked if given."""
    name = f"{prefix}{uuid.uuid4().hex[:8]}"
    assert http.post("/v1/users", json={"username": name, "password": "platform-pw"}).status_code == 201
    token = http.post("/auth/token", json={"username": name, "password": "platform-pw"}).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    if identity:
        linked = http.post("/v1/users/me/identities", json=identity, headers=headers)
        assert linked.status_code == 201, linked.text
    return {"username": name, "headers": headers}
