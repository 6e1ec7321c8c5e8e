"""Server-sent events, and request lifetimes tied to the client's connection.

Starlette's ``StreamingResponse`` only notices a vanished client on some ASGI spec versions and
then leaves the body generator for the garbage collector. Here the response always races the
stream against ``http.disconnect`` and closes the generator explicitly, so the generator's
``finally`` (which aborts the engine request and frees its KV blocks) runs as soon as the client
goes away, on any server.
"""
from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, AsyncIterator, Awaitable, Callable, TypeVar

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

logger = logging.getLogger(__name__)

DONE = b"data: [DONE]\n\n"
T = TypeVar("T")


def sse_event(payload: dict[str, Any]) -> bytes:
    """One ``data:`` event (compact JSON; a JSON string never holds a raw newline)."""
    return b"data: " + json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"


async def _wait_for_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


class ClientDisconnected(Exception):
    """The client closed the connection before the answer was ready."""


async def cancel_on_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Await ``work`` unless the client disconnects first; then cancel it (its cleanup aborts the
    engine requests) and raise :class:`ClientDisconnected`. For non-streaming answers, whose
    handler Starlette would otherwise let run to the end for nobody."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_wait_for_disconnect(request.receive))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
    if task.cancelled():
        raise ClientDisconnected()
    return task.result()


class SSEResponse(Response):
    """``text/event-stream`` response over an async generator of encoded events. ``on_close`` runs
    however the response ends, even if the generator never started (a client gone before the
    first byte), which a generator's own ``finally`` cannot promise."""

    media_type = "text/event-stream"

    def __init__(self, events: AsyncIterator[bytes], on_close: Callable[[], None], status_code: int = 200) -> None:
        self.events = events
        self.on_close = on_close
        self.status_code = status_code
        self.background = None
        self.init_headers({"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        stream = asyncio.ensure_future(self._stream(send))
        watcher = asyncio.ensure_future(_wait_for_disconnect(receive))
        try:
            await asyncio.wait({stream, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if not stream.done():
                logger.info("client disconnected mid-stream; aborting its request")
                stream.cancel()
                await asyncio.gather(stream, return_exceptions=True)
            elif stream.exception() is not None and not isinstance(stream.exception(), OSError):
                raise stream.exception()
        finally:
            watcher.cancel()
            stream.cancel()
            try:
                await self.events.aclose()
            finally:
                self.on_close()

    async def _stream(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        async for chunk in self.events:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
