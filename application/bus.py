"""The message bus: one entry point that routes each command or query to its handler."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from application import commands as c
from application.batching import GroupCommit
from application.handlers import HANDLERS, Deps, handle_send_messages
from application.limits import RateLimits, charges_of
from application.webhooks import WEBHOOK_HANDLERS

ALL_HANDLERS: Mapping[type, Callable[[Any, Deps], Any]] = {**HANDLERS, **WEBHOOK_HANDLERS}
"""Every command's handler."""

BATCH_HANDLERS: Mapping[type, Callable[[Sequence[Any], Deps], Awaitable[Sequence[Any]]]] = {
    c.SendMessage: handle_send_messages,
}
"""Commands written in batches: their handler takes many commands and answers each one."""


def _bound(
    handler: Callable[[Sequence[Any], Deps], Awaitable[Sequence[Any]]], deps: Deps, limits: RateLimits | None
) -> Callable[[Sequence[Any]], Awaitable[Sequence[Any]]]:
    """The batch handler behind the rate limits.

    A batch's commands are checked in one round trip; the refused ones are answered without running.
    """

    async def run(commands: Sequence[Any]) -> Sequence[Any]:
        if limits is None:
            return await handler(commands, deps)
        refusals = await limits.admit([charges_of(cmd) for cmd in commands])
        admitted = [cmd for cmd, refused in zip(commands, refusals, strict=True) if refused is None]
        results = iter(await handler(admitted, deps) if admitted else ())
        return [refused if refused is not None else next(results) for refused in refusals]

    return run


class MessageBus:
    """Dispatches commands and queries to their handlers with the bound dependencies.

    Commands with a batch handler (sending messages) go through a ``GroupCommit``: concurrent
    senders share transactions, each still gets its own answer. With ``limits``, every command is
    checked against the caller's rate limits first (``RateLimited`` when over).
    """

    def __init__(
        self, deps: Deps, *, limits: RateLimits | None = None, max_batch: int = 256, batch_slots: int = 1
    ) -> None:
        self.deps = deps
        self.limits = limits
        self._batched: dict[type, GroupCommit[Any, Any]] = {
            kind: GroupCommit(_bound(handler, deps, limits), max_batch=max_batch, slots=batch_slots)
            for kind, handler in BATCH_HANDLERS.items()
        }

    async def handle(self, command: object, *, client: str | None = None) -> Any:
        """Run the handler registered for ``type(command)``.

        ``client`` is the caller's address: the limits of calls made without a token count by it.
        """
        batched = self._batched.get(type(command))
        if batched is not None:
            return await batched.submit(command)
        handler = ALL_HANDLERS.get(type(command))
        if handler is None:
            raise TypeError(f"no handler for {type(command).__name__}")
        if self.limits is not None:
            charges = charges_of(command, client)
            if charges:
                await self.limits.check(charges)
        return await handler(command, self.deps)
