"""The optional API key: ``Authorization: Bearer <key>`` on every route but the health
probes and the try-it page (which then asks its user for the key).

The key is read once from the environment variable ``serve.api_key_env`` names, compared
in constant time, and never logged, echoed or stored.
"""

from __future__ import annotations

import hmac
from typing import Optional

from lettucify.serve.limits import ASGIApp, Receive, RequestError, Scope, Send, send_error

# Probes that orchestrators call without credentials, and the page and its files.
OPEN_PATHS = frozenset({"/health", "/ready", "/v2/health/live", "/v2/health/ready", "/"})
OPEN_PREFIX = "/page/"


def _open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIX)


class ApiKey:
    """ASGI middleware: 401 unless the request carries the key (all pass when there is none)."""

    def __init__(self, app: ASGIApp, key: Optional[str]) -> None:
        self.app = app
        self.expected = f"Bearer {key}".encode() if key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.expected is None or scope["type"] != "http" or _open(scope["path"]):
            return await self.app(scope, receive, send)
        given = dict(scope["headers"]).get(b"authorization", b"")
        if not hmac.compare_digest(given, self.expected):
            problem = "wrong API key" if given else "this server needs an API key: Authorization: Bearer <key>"
            return await send_error(send, RequestError(401, problem, {"WWW-Authenticate": "Bearer"}))
        await self.app(scope, receive, send)
