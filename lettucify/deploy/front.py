"""The local target's front: the one port clients call, splitting requests between the blue
and green servers by the weights in ``state.json`` (the Lettucify server in router mode).

    python -m lettucify.deploy.front --state outputs/deployments/local/state.json --host 127.0.0.1 --port 8080

It reads the colours' URLs, the traffic split and mirroring from the state file, and
reads it again whenever the file changes (polled every ``POLL_S``), so weights move while
it serves. Each request goes to a colour picked by smooth weighted round robin (a 10%
weight gets exactly 1 request in 10), its body buffered (up to ``MAX_BODY_MB``), its
method, path, query and headers (Authorization too) forwarded and the answer streamed
back with ``X-Lettucify-Colour``. A colour that refuses the connection, or drops it
before answering, has the request sent once to the other colour: every route of the
server is idempotent. ``GET /-/front`` is the front's own: weights, mirroring, requests in
flight per colour and the state version it has applied (the target waits on it). SIGTERM
stops accepting, lets the requests in flight finish and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
from pathlib import Path
from typing import Any, Dict, List, Optional, Set, Tuple

import httpx
import uvicorn

from lettucify.deploy.target import COLOURS, other

log = logging.getLogger("lettucify.deploy.front")

POLL_S = 0.1
# Above the server's own serve.max_body_mb (10): the server, not the front, says what is too big.
MAX_BODY_MB = 16
# The server answers or gives up within serve.request_timeout_s (30); this only stops a hung one.
UPSTREAM_TIMEOUT = httpx.Timeout(120.0, connect=5.0)
# Hop-by-hop headers belong to one connection (RFC 9110 7.6.1); host and content-length are
# set again by the client for the upstream request; expect: the whole body is already here.
HOP_BY_HOP = {b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te", b"trailer",
              b"transfer-encoding", b"upgrade", b"host", b"content-length", b"expect"}
COLOUR_HEADER = b"x-lettucify-colour"
# The request never reached a server's application, or its connection broke before any answer.
UNANSWERED = (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)


class ClientGone(Exception):
    """The client disconnected before its request body was read: nothing to forward or answer."""


class Split:
    """The routing the state file asks for: each colour's URL, traffic weight and mirror percent."""

    def __init__(self, state: Dict[str, Any]) -> None:
        colours = state.get("colours") or {}
        self.version: int = state.get("version", 0)
        self.urls: Dict[str, str] = {c: colours[c]["url"] for c in COLOURS if (colours.get(c) or {}).get("url")}
        self.weights: Dict[str, int] = {c: int((state.get("traffic") or {}).get(c, 0)) for c in COLOURS}
        self.mirror: Dict[str, int] = {c: int((state.get("mirror") or {}).get(c, 0)) for c in COLOURS}
        self._current = {c: 0 for c in COLOURS}  # smooth weighted round robin (nginx's)
        self._mirror_credit = 0

    def pick(self) -> Optional[str]:
        total = sum(self.weights.values())
        if total == 0:
            return None
        for colour, weight in self.weights.items():
            self._current[colour] += weight
        chosen = max(COLOURS, key=lambda c: (self.weights[c] > 0, self._current[c]))
        self._current[chosen] -= total
        return chosen

    def mirror_to(self) -> Optional[str]:
        """The colour that gets a copy of this request: exactly ``mirror`` requests in 100."""
        colour = next((c for c in COLOURS if self.mirror[c] > 0), None)
        if colour is None:
            return None
        self._mirror_credit += self.mirror[colour]
        if self._mirror_credit < 100:
            return None
        self._mirror_credit -= 100
        return colour

    def continue_from(self, previous: "Split") -> None:
        """Keep the round robin's place when the weights did not change (a URL did, say)."""
        if (self.weights, self.mirror) == (previous.weights, previous.mirror):
            self._current, self._mirror_credit = previous._current, previous._mirror_credit

    def describe(self) -> str:
        colours = ", ".join(f"{c} {self.weights[c]}% ({self.urls.get(c, 'no server')})" for c in COLOURS)
        mirror = ", ".join(f"{c} {p}%" for c, p in self.mirror.items() if p) or "none"
        return f"state {self.version}: traffic {colours}; mirror {mirror}"


class Front:
    """The ASGI app: ``/-/front`` here, everything else to a colour."""

    def __init__(self, state_file: Path) -> None:
        self.state_file = state_file
        self.split = Split({})
        self.in_flight = {c: 0 for c in COLOURS}
        self._seen: Optional[Tuple[int, int, int]] = None
        self._client: Optional[httpx.AsyncClient] = None
        self._background: Set[asyncio.Task] = set()

    # ---------------------------------------------------------------- state file
    def reload(self) -> None:
        """Take the state file's split if it changed (os.replace gives it a new inode)."""
        try:
            stat = self.state_file.stat()
        except OSError:  # not written yet: no colour, no traffic
            return
        seen = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if seen == self._seen:
            return
        try:
            split = Split(json.loads(self.state_file.read_text()))
        except (OSError, ValueError, KeyError, TypeError) as err:
            log.warning("front: kept state %s, %s is unreadable: %s", self.split.version, self.state_file, err)
            return
        self._seen = seen
        if split.version != self.split.version:
            log.info("front: %s", split.describe())
        split.continue_from(self.split)
        self.split = split

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(POLL_S)
            self.reload()

    # ---------------------------------------------------------------- ASGI
    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            if scope["path"] == "/-/front":
                await self._report(scope, send)
            else:
                try:
                    await self._proxy(scope, receive, send)
                except ClientGone:
                    pass

    async def _lifespan(self, receive, send) -> None:
        watcher = None
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.reload()
                limits = httpx.Limits(max_connections=1000, max_keepalive_connections=100)
                self._client = httpx.AsyncClient(timeout=UPSTREAM_TIMEOUT, limits=limits, follow_redirects=False)
                watcher = asyncio.create_task(self._watch())
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                for task in [watcher, *self._background]:
                    if task is not None:
                        task.cancel()
                await self._client.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _report(self, scope, send) -> None:
        if scope["method"] != "GET":
            return await _json(send, 405, {"error": "GET /-/front only"})
        split = self.split
        await _json(send, 200, {"weights": split.weights, "mirror": split.mirror, "in_flight": self.in_flight,
                                "state_version": split.version, "backends": split.urls, "pid": os.getpid()})

    async def _proxy(self, scope, receive, send) -> None:
        body = await _read_body(scope, receive)
        if body is None:
            return await _json(send, 413, {"error": f"request body over {MAX_BODY_MB} MB"})
        split = self.split
        first = split.pick()
        if first is None:
            return await _json(send, 503, {"error": "no colour has live traffic"})
        request = (scope["method"], _path(scope), [(k, v) for k, v in scope["headers"] if k not in HOP_BY_HOP], body)
        mirror = split.mirror_to()
        if mirror is not None and mirror in split.urls:
            self._mirror(split.urls[mirror], mirror, request)
        failures: List[str] = []
        for colour in (first, other(first)):
            if colour not in split.urls:
                failures.append(f"{colour}: no server")
                continue
            self.in_flight[colour] += 1
            try:
                try:
                    response = await self._send(split.urls[colour], request)
                except UNANSWERED as err:
                    failures.append(f"{colour}: {type(err).__name__} {err}".rstrip())
                    continue
                except httpx.TimeoutException:
                    return await _json(send, 504, {"error": f"{colour} did not answer in time"})
                except httpx.HTTPError as err:
                    return await _json(send, 502, {"error": f"{colour}: {type(err).__name__} {err}".rstrip()})
                if failures:
                    log.warning("front: sent to %s after %s", colour, failures[0])
                await _stream(response, colour, send)
                return
            finally:
                self.in_flight[colour] -= 1
        log.warning("front: no colour answered: %s", "; ".join(failures))
        await _json(send, 502, {"error": "no colour answered: " + "; ".join(failures)})

    async def _send(self, url: str, request) -> httpx.Response:
        method, path, headers, body = request
        upstream = self._client.build_request(method, url + path, headers=headers, content=body)
        return await self._client.send(upstream, stream=True)

    def _mirror(self, url: str, colour: str, request) -> None:
        """Send a copy in the background, read its answer to the end and drop it. It counts in
        flight from now, so a drain that starts before the copy is sent still waits for it."""
        self.in_flight[colour] += 1

        async def copy() -> None:
            try:
                response = await self._send(url, request)
                await response.aread()
                await response.aclose()
            except httpx.HTTPError as err:
                log.info("front: mirror copy to %s failed: %s", colour, err)
            finally:
                self.in_flight[colour] -= 1

        task = asyncio.create_task(copy())
        self._background.add(task)  # a reference, so the task is not collected mid-flight
        task.add_done_callback(self._background.discard)


def _path(scope) -> str:
    path = scope.get("raw_path") or scope["path"].encode()
    query = scope.get("query_string") or b""
    return (path + (b"?" + query if query else b"")).decode("latin-1")


async def _read_body(scope, receive) -> Optional[bytes]:
    """The whole body, or None when it is over MAX_BODY_MB (by its Content-Length, or while reading)."""
    limit = MAX_BODY_MB << 20
    declared = dict(scope["headers"]).get(b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    chunks: List[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _stream(response: httpx.Response, colour: str, send) -> None:
    try:
        headers = [(k, v) for k, v in response.headers.raw if k.lower() not in HOP_BY_HOP - {b"content-length"}]
        await send({"type": "http.response.start", "status": response.status_code,
                    "headers": [*headers, (COLOUR_HEADER, colour.encode())]})
        async for chunk in response.aiter_raw():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    except httpx.HTTPError as err:
        # Part of the answer is already out: the client's connection is closed unfinished.
        log.warning("front: %s broke off its answer: %s", colour, err)
    finally:
        await response.aclose()


async def _json(send, status: int, payload: Dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lettucify.deploy.front", description=__doc__.split("\n\n")[0])
    parser.add_argument("--state", type=Path, required=True, help="the local target's state.json")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--graceful-s", type=float, default=30.0, help="on SIGTERM, how long requests in flight get")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request otherwise
    # uvicorn raises the signal again once it has shut down gracefully; by then it has done
    # its job, so the process exits 0 instead of dying of it.
    signal.signal(signal.SIGTERM, lambda *_: None)
    config = uvicorn.Config(
        Front(args.state), host=args.host, port=args.port, lifespan="on", log_config=None, access_log=False,
        server_header=False, date_header=False, timeout_graceful_shutdown=args.graceful_s,
    )
    uvicorn.Server(config).run()
    log.info("front: stopped")


if __name__ == "__main__":
    main()
