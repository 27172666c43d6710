"""The S3 store when S3 fails: its 5xx answers and what stands in front of it are StorageUnavailable.

An S3 that cannot be reached at all is in the object store contract suite; here a small HTTP server
plays an S3 that answers, badly.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web
from miniopy_async.api import Minio
from miniopy_async.error import S3Error

from adapters.storage.s3 import S3ObjectStore, close_client
from application.ports import StorageUnavailable, StoredPart
from entrypoints.storage import s3_session

KEY = "files/0b6e"
XML = "application/xml"


def s3_error(code: str) -> str:
    return f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>no</Message></Error>'


class FailingS3:
    """Answers every request with one status, content type and body."""

    def __init__(self) -> None:
        self.answer = (503, XML, s3_error("ServiceUnavailable"))
        self.requests = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        await request.read()
        status, content_type, body = self.answer
        return web.Response(status=status, body=body.encode(), content_type=content_type.split(";")[0])


@pytest.fixture
async def s3() -> AsyncIterator[tuple[FailingS3, S3ObjectStore]]:
    failing = FailingS3()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", failing.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    client = Minio(f"127.0.0.1:{port}", access_key="k", secret_key="s", secure=False, region="us-east-1")
    try:
        yield failing, S3ObjectStore(client, "c4a-failing")
    finally:
        await close_client(client)
        await runner.cleanup()


async def one_part() -> AsyncIterator[bytes]:
    yield b"x" * 10


CALLS: dict[str, Callable[[S3ObjectStore], Awaitable[object]]] = {
    "start_upload": lambda store: store.start_upload(KEY),
    "put_part": lambda store: store.put_part(KEY, "up-1", 0, one_part(), 10),
    "list_parts": lambda store: store.list_parts(KEY, "up-1"),
    "complete_upload": lambda store: store.complete_upload(KEY, "up-1", [StoredPart(0, "tag", 10)]),
    "abort_upload": lambda store: store.abort_upload(KEY, "up-1"),
    "read": lambda store: anext(store.read(KEY)),
    "size": lambda store: store.size(KEY),
    "delete": lambda store: store.delete(KEY),
}


@pytest.mark.parametrize("call", list(CALLS))
@pytest.mark.parametrize(
    "answer",
    [
        (503, XML, s3_error("ServiceUnavailable")),
        (500, XML, s3_error("InternalError")),
        (503, XML, s3_error("SlowDown")),
        (502, "text/html", "<html>Bad Gateway</html>"),  # a proxy in front of S3
        (504, "text/plain", ""),
    ],
    ids=["503", "500", "slow-down", "502-html", "504-empty"],
)
async def test_s3_failing_is_storage_unavailable(
    s3: tuple[FailingS3, S3ObjectStore], call: str, answer: tuple[int, str, str]
) -> None:
    failing, store = s3
    failing.answer = answer

    with pytest.raises(StorageUnavailable):
        await CALLS[call](store)

    assert failing.requests >= 1


async def test_s3_refusing_the_request_stays_an_s3_error(s3: tuple[FailingS3, S3ObjectStore]) -> None:
    # Credentials or a bucket policy to fix: an operator's problem, not one to wait out.
    failing, store = s3
    failing.answer = (403, XML, s3_error("AccessDenied"))

    with pytest.raises(S3Error) as refused:
        await store.start_upload(KEY)

    assert refused.value.code == "AccessDenied"


async def test_an_s3_that_accepts_but_never_answers_is_unavailable_within_the_timeout() -> None:
    writers: list[asyncio.StreamWriter] = []

    async def silent(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)  # reads nothing, answers nothing

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = Minio(
        f"127.0.0.1:{port}", access_key="k", secret_key="s", secure=False, region="us-east-1", session=s3_session(0.3)
    )
    started = time.monotonic()
    try:
        with pytest.raises(StorageUnavailable):
            await S3ObjectStore(client, "c4a-silent").size(KEY)
    finally:
        await close_client(client)
        server.close()
        for writer in writers:
            writer.close()
            await writer.wait_closed()
        await server.wait_closed()
    assert time.monotonic() - started < 5  # miniopy-async's own session would wait 5 minutes
