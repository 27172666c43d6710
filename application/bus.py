"""The message bus: one entry point that routes each command or query to its handler."""

from __future__ import annotations

from typing import Any

from application.handlers import HANDLERS, Deps


class MessageBus:
    """Dispatches commands and queries to their handlers with the bound dependencies."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    async def handle(self, command: object) -> Any:
        """Run the handler registered for ``type(command)``."""
        handler = HANDLERS.get(type(command))
        if handler is None:
            raise TypeError(f"no handler for {type(command).__name__}")
        return await handler(command, self.deps)
