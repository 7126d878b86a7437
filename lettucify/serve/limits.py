"""What a request may be, and the one way a refused request is answered: ``{"error": "..."}``.

``RequestError`` carries the status and the reason; ``error_response`` is its body.
``BodyLimit`` enforces ``serve.max_body_mb`` while the body is read (a declared
Content-Length over it is refused before reading any of it). A refused body is read to
its end and dropped, within the request timeout, before the 413 goes out: a client
still sending would otherwise lose the answer to the connection's reset.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Awaitable, Callable, Dict, Mapping, Optional, TypeVar

from lettucify.data.images import (
    BadImageError,
    CorruptImageError,
    EmptyImageError,
    NotAnImageError,
    TooManyPixelsError,
)

Scope = Dict[str, Any]
Receive = Callable[[], Awaitable[Dict[str, Any]]]
Send = Callable[[Dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class RequestError(Exception):
    """A request the server refuses: HTTP ``status``, the reason, and extra headers."""

    def __init__(self, status: int, message: str, headers: Optional[Mapping[str, str]] = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


# An image the decoder refused -> the status that says why.
IMAGE_STATUS = {
    EmptyImageError: 400,
    NotAnImageError: 415,
    TooManyPixelsError: 413,
    CorruptImageError: 422,
    BadImageError: 422,
}


def image_error(err: BadImageError) -> RequestError:
    status = next(code for kind, code in IMAGE_STATUS.items() if isinstance(err, kind))
    return RequestError(status, str(err))


T = TypeVar("T")


async def within(answer: Awaitable[T], timeout_s: float) -> T:
    """``answer``, or a 504 once ``serve.request_timeout_s`` has passed (queued work it
    cancels is not run; a model run under way finishes, unanswered)."""
    try:
        return await asyncio.wait_for(answer, timeout_s)
    except asyncio.TimeoutError:
        raise RequestError(504, f"no answer within serve.request_timeout_s={timeout_s:g}s") from None


def error_body(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


async def send_error(send: Send, err: RequestError) -> None:
    """Answer ``err`` from ASGI middleware (outside FastAPI's exception handlers)."""
    body = error_body(err.message)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in err.headers.items()]
    await send({"type": "http.response.start", "status": err.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _drain(receive: Receive) -> None:
    message = {"more_body": True}
    while message.get("more_body", False):
        message = await receive()
        if message["type"] == "http.disconnect":
            return


class BodyLimit:
    """ASGI middleware: a body over ``max_bytes`` is refused with 413, never held in memory."""

    def __init__(self, app: ASGIApp, max_bytes: int, drain_timeout_s: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.drain_timeout_s = drain_timeout_s

    def _too_large(self, size: str) -> RequestError:
        return RequestError(413, f"body of {size} bytes is over serve.max_body_mb ({self.max_bytes} bytes)")

    async def _refuse(self, receive: Receive, err: RequestError) -> RequestError:
        try:
            await asyncio.wait_for(_drain(receive), self.drain_timeout_s)
        except asyncio.TimeoutError:
            pass
        return err

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"").decode()
        if declared.isdigit() and int(declared) > self.max_bytes:
            return await send_error(send, await self._refuse(receive, self._too_large(declared)))
        received = 0

        async def limited() -> Dict[str, Any]:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise await self._refuse(receive, self._too_large(f"more than {self.max_bytes}"))
            return message

        await self.app(scope, limited, send)
