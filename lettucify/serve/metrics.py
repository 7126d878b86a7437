"""Prometheus metrics and the access log: one line and one count per request.

``Observe`` (ASGI middleware, outermost) times every request, including the ones the
API key or the body limit refuse, labels it with its route's template (``/predict``,
``/v2/models/{name}/infer``; ``unmatched`` for anything else, so a scanner cannot add
series), and logs route, status, latency and the number of images; never a body,
a header or a key. With ``serve.workers`` > 1, prometheus_client's multiprocess mode
(``PROMETHEUS_MULTIPROC_DIR``, set before the workers start) adds up all processes.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Dict, Optional, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.routing import BaseRoute, Match

from lettucify.serve.limits import ASGIApp, Receive, Scope, Send

log = logging.getLogger("lettucify.serve.access")

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    """The four metrics of the issue, in a registry of their own."""

    def __init__(self, name: str, version: Optional[str], alias: Optional[str], deployment: Optional[str]) -> None:
        self.registry = CollectorRegistry()
        self.labels = {"model_version": version or "", "deployment": deployment or ""}
        self.requests = Counter(
            "lettucify_requests", "HTTP requests answered", ["route", "status", "model_version", "deployment"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "lettucify_request_duration_seconds", "Time to answer a request", ["route"], registry=self.registry
        )
        self.batch_size = Histogram(
            "lettucify_inference_batch_size", "Images per model run", buckets=BATCH_BUCKETS, registry=self.registry
        )
        info = Gauge(
            "lettucify_model_info", "The model this server answers with", ["name", "version", "alias"],
            registry=self.registry, multiprocess_mode="max",
        )
        info.labels(name=name, version=version or "", alias=alias or "").set(1)

    def observe(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route=route, status=str(status), **self.labels).inc()
        self.duration.labels(route=route).observe(seconds)

    def exposition(self) -> bytes:
        if os.environ.get(MULTIPROCESS_DIR):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)


def route_of(routes: Sequence[BaseRoute], scope: Scope) -> str:
    for route in routes:
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return getattr(route, "path", "unmatched")
    return "unmatched"


class Observe:
    """ASGI middleware: ``metrics.observe`` and one access-log line per HTTP request.

    A route that decoded images says how many in ``scope["state"]["images"]``.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        route = route_of(self.routes, scope)
        state: Dict[str, Any] = scope.setdefault("state", {})
        status = 500

        async def send_status(message: Dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            seconds = time.perf_counter() - started
            self.metrics.observe(route, status, seconds)
            log.info(
                "%s %s %d %.1fms images=%d", scope["method"], route, status, 1000 * seconds, state.get("images", 0)
            )
