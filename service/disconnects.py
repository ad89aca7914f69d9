"""Watching for a client that closes its connection while its images wait in the batching queue: its images still
queued are not run, and it is answered 499 (``client_closed``) in the log and metrics, not 200 to no one. A backlog
of images no one awaits would keep the next requests waiting.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Awaitable, Callable

import anyio
from starlette.types import Message

from .contract import Rejection

if TYPE_CHECKING:
    from .request_bodies import InferItem


async def _client_gone(receive: Callable[[], Awaitable[Message]]) -> None:
    """Returns once the client has closed its connection. Awaited only once the request's body has been read whole,
    when the server's next message is the disconnect, or the end of its own answer."""
    while (await receive())["type"] != "http.disconnect":
        pass


def has_left(watcher: "asyncio.Future[None] | None") -> bool:
    """Whether the client of a request that ``watcher`` (``abandon_when_gone``) watches has closed its connection."""
    return watcher is not None and watcher.done() and not watcher.cancelled() and watcher.exception() is None


async def abandon_when_gone(receive: Callable[[], Awaitable[Message]], items: list["InferItem"]) -> None:
    await _client_gone(receive)
    for item in items:
        item.abandon()


async def cancel_when_gone(receive: Callable[[], Awaitable[Message]], scope: anyio.CancelScope) -> None:
    await _client_gone(receive)
    scope.cancel()


def client_left() -> Rejection:
    return Rejection("client_closed", "the client closed the connection before its answer was ready")
